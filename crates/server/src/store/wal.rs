//! The write-ahead file in front of the redb log (`<data_dir>/raft-log.wal`).
//!
//! A redb commit writes its header and several B-tree pages and syncs them all; writing
//! the same entries into a preallocated file and syncing its data is about half the time
//! (and half the kernel CPU) on the disks measured here, and a leader's and a follower's
//! flush lie in series on every commit's path. So appends go here, and a checkpoint
//! ([`super::log`]) moves them into redb in one transaction when this file fills, and
//! before a truncate, a purge, or at start-up.
//!
//! # Layout (little endian)
//!
//! - A header of [`RECORDS_START`] bytes, written once at creation: [`MAGIC`].
//! - Records from [`RECORDS_START`]: `body length (4) | CRC-32 (4) | body`. The CRC covers
//!   the [`Generation`] (number and salt), the length and the body. A body is a kind
//!   byte and the number of the append that wrote it (8), then for [`KIND_ENTRY`] the
//!   entry's index (8) and its checksummed record (`record.rs`, the same bytes redb
//!   stores), for [`KIND_COMMITTED`] the committed log id's record. The kind byte's high
//!   bit marks an append's last record.
//! - Every append begins at a multiple of [`APPEND_ALIGN`] (512 bytes, a disk sector), so
//!   a reader can find the appends after a damaged record, and no sector holds bytes of
//!   two appends: rewriting the page an earlier append shares (a sync writes whole pages)
//!   rewrites its sectors with the same bytes, so a torn write there cannot harm it.
//! - The file is created zero-filled at its full size (written, not sparse, and synced
//!   with its directory): a later data sync then writes data blocks only, no file-system
//!   metadata.
//! - Appends are written with direct, synchronous I/O where the file system allows it
//!   (Linux `O_DIRECT | O_DSYNC`): one system call writes the append's own sectors to the
//!   disk, without a page-cache copy and a separate `fdatasync` (zeros pad the last
//!   sector). Where it is refused (tmpfs, a disk whose sectors are larger than
//!   [`APPEND_ALIGN`]) appends are written through the page cache and synced with
//!   `fdatasync`, as before.
//!
//! # Generations
//!
//! The current generation lives in the log database, not here: the redb transaction
//! that moves the file's entries into the database also sets the next generation (a
//! new number and a fresh random salt), atomically. Records of an earlier generation
//! then no longer verify, so the file needs no write of its own to be emptied, and
//! there is no moment at which the file and the database disagree about what the file
//! holds. New records overwrite old ones from [`RECORDS_START`] on.
//!
//! # Where the records end
//!
//! The records of the current generation end at the first that does not verify: zeros,
//! a record of an earlier generation, or a torn write. The salt is random, so bytes that
//! came from outside (a lock name inside an old entry, which a new record may not fully
//! overwrite) cannot be crafted to verify under a later generation. Past the first bad
//! record, the reader looks at every later 512-byte boundary: a record that verifies there
//! and was written by a later append than any the bad record can belong to proves the
//! bad one was synced before (appends are synced one at a time, in order), so it is
//! damage in the middle of the file, not a torn tail, and start-up refuses
//! ([`RecordsEnd::damage_in_the_middle`]). An append the full disk refused
//! is written again later, the same bytes at the same place; after any other failed
//! write or sync, what reached the disk is unknown and the node stops
//! ([`crate::space`]).

use super::StoreError;
use super::disk::{Disk, DiskFile, read_all};
use crate::space;
use std::path::{Path, PathBuf};

/// The file's name inside the data directory.
pub const WAL_FILE_NAME: &str = "raft-log.wal";

/// Where the records begin (after the header).
pub const RECORDS_START: u64 = 4096;

/// The smallest file: the header and room for one 4 KiB page of records.
pub const MIN_WAL_BYTES: u64 = RECORDS_START + 4096;

/// The file's first bytes.
pub const MAGIC: [u8; 8] = *b"FLWAL\0\0\x01";
const FRAME_BYTES: usize = 4 + 4;
/// Kind byte and append number.
const BODY_HEADER_BYTES: usize = 1 + 8;
/// Every append begins at a multiple of this (see the module docs).
pub const APPEND_ALIGN: u64 = 512;
/// How much of the file one read takes when entries are read back.
const READ_WINDOW_BYTES: u64 = 256 * 1024;
/// Set in the kind byte of an append's last record.
const LAST_IN_APPEND: u8 = 0x80;

fn align_up(offset: u64) -> u64 {
    offset.div_ceil(APPEND_ALIGN) * APPEND_ALIGN
}

/// A log entry: index, then its record.
pub const KIND_ENTRY: u8 = 1;
/// The committed log id's record.
pub const KIND_COMMITTED: u8 = 2;

/// Which generation the records belong to (kept in the log database).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Generation {
    /// Counts checkpoints (and start-ups) of this log.
    pub number: u64,
    /// Random, new with every number.
    pub salt: u64,
}

impl Generation {
    /// The generation before any was recorded: nothing in a file verifies under it
    /// unless it was written under it, and nothing is.
    pub const NONE: Generation = Generation { number: 0, salt: 0 };

    /// The next generation, with a fresh random salt.
    pub fn next(self) -> Generation {
        Generation {
            number: self.number + 1,
            salt: fresh_salt(),
        }
    }

    fn checksum(self, body: &[u8]) -> u32 {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&self.number.to_le_bytes());
        hasher.update(&self.salt.to_le_bytes());
        hasher.update(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
        hasher.update(body);
        hasher.finalize()
    }
}

fn fresh_salt() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

/// One record that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalRecord {
    /// A log entry's index and its checksummed record.
    Entry {
        /// The entry's log index.
        index: u64,
        /// Where its frame begins in the file.
        offset: u64,
        /// The entry record (`record.rs`).
        bytes: Vec<u8>,
    },
    /// The committed log id's record (`record.rs`, key `committed`).
    Committed(Vec<u8>),
}

/// Where and why the records of the current generation end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordsEnd {
    /// The offset just past the last record that verified.
    pub offset: u64,
    /// Why the record there does not count; `None` at the end of the file.
    pub reason: Option<String>,
    /// A record further on that verified and was written by a later append than the
    /// first bad record can belong to: `(its offset, its append number)`. The bad record
    /// was then synced before, and is damage in the middle of the file.
    pub damage_in_the_middle: Option<(u64, u64)>,
}

/// A frame that verified under a generation, parsed.
struct Frame {
    append: u64,
    record: Option<WalRecord>,
    len: usize,
    last_in_append: bool,
}

/// What is at the start of `bytes` (file offset `offset`).
enum Parsed {
    /// A frame that verified (`record` is `None` for an unknown kind).
    Good(Frame),
    /// Zeros, or too few bytes for a frame: nothing was written here.
    Nothing,
    /// A frame that does not verify.
    Bad(String),
}

fn parse_one(bytes: &[u8], offset: u64, generation: Generation) -> Parsed {
    let Some(frame) = bytes.get(..FRAME_BYTES) else {
        return if bytes.iter().all(|&b| b == 0) {
            Parsed::Nothing
        } else {
            Parsed::Bad("a partial record frame".to_owned())
        };
    };
    let len = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
    let stored = u32::from_le_bytes(frame[4..].try_into().expect("4 bytes"));
    if len == 0 && stored == 0 {
        return Parsed::Nothing;
    }
    let Some(body) = bytes.get(FRAME_BYTES..FRAME_BYTES + len) else {
        return Parsed::Bad(format!("a record of {len} bytes runs past the file's end"));
    };
    if len < BODY_HEADER_BYTES || generation.checksum(body) != stored {
        return Parsed::Bad(
            "a record that does not verify under the current generation (written before \
             the last checkpoint, torn, or damaged)"
                .to_owned(),
        );
    }
    let append = u64::from_le_bytes(body[1..9].try_into().expect("8 bytes"));
    let rest = &body[BODY_HEADER_BYTES..];
    let record = match body[0] & !LAST_IN_APPEND {
        KIND_ENTRY if rest.len() >= 8 => Some(WalRecord::Entry {
            index: u64::from_le_bytes(rest[..8].try_into().expect("8 bytes")),
            offset,
            bytes: rest[8..].to_vec(),
        }),
        KIND_COMMITTED => Some(WalRecord::Committed(rest.to_vec())),
        _ => None,
    };
    Parsed::Good(Frame {
        append,
        record,
        len: FRAME_BYTES + len,
        last_in_append: body[0] & LAST_IN_APPEND != 0,
    })
}

/// Parse the records in `bytes` (the file's contents from [`RECORDS_START`] on) under
/// `generation`: every record that verifies, up to the first that does not, and a look
/// past that one for damage in the middle (see the module docs).
pub fn parse_records(bytes: &[u8], generation: Generation) -> (Vec<WalRecord>, RecordsEnd) {
    let base = RECORDS_START;
    let mut records = Vec::new();
    let mut at = 0usize;
    // The latest append the record at `at` can belong to: the previous record's, unless
    // that one ended its append.
    let mut latest_append_here = 0u64;
    loop {
        let offset = base + at as u64;
        let end = |reason: Option<String>, damage_in_the_middle| RecordsEnd {
            offset,
            reason,
            damage_in_the_middle,
        };
        match parse_one(&bytes[at..], offset, generation) {
            Parsed::Good(Frame {
                append,
                record: Some(record),
                len,
                last_in_append,
            }) => {
                records.push(record);
                latest_append_here = if last_in_append { append + 1 } else { append };
                at += len;
                if last_in_append {
                    let next = align_up(base + at as u64) - base;
                    at = usize::try_from(next).unwrap_or(usize::MAX).min(bytes.len());
                }
            }
            Parsed::Good(Frame { record: None, .. }) => {
                let reason = Some("a verified record of an unknown kind".to_owned());
                return (records, end(reason, None));
            }
            Parsed::Nothing => {
                let reason = (at < bytes.len()).then(|| "zeros (nothing written here)".to_owned());
                let damage = later_append_after(bytes, at, base, generation, latest_append_here);
                return (records, end(reason, damage));
            }
            Parsed::Bad(reason) => {
                let damage = later_append_after(bytes, at, base, generation, latest_append_here);
                return (records, end(Some(reason), damage));
            }
        }
    }
}

/// Past the end of the records (at `at`, where a record of append `latest_possible` at
/// the latest was due), the first record at an append boundary that verifies and was
/// written by a later append: `(offset, append)`.
fn later_append_after(
    bytes: &[u8],
    at: usize,
    base: u64,
    generation: Generation,
    latest_possible: u64,
) -> Option<(u64, u64)> {
    let mut boundary = align_up(base + at as u64 + 1);
    while let Some(rest) = usize::try_from(boundary - base)
        .ok()
        .and_then(|at| bytes.get(at..))
        .filter(|rest| !rest.is_empty())
    {
        if let Parsed::Good(frame) = parse_one(rest, boundary, generation)
            && frame.append > latest_possible
        {
            return Some((boundary, frame.append));
        }
        boundary += APPEND_ALIGN;
    }
    None
}

/// Whether any record of `generation` verifies at an append boundary of `bytes` (the
/// file's contents from [`RECORDS_START`] on): when none does, appends may go on under
/// `generation` from the start (no later page can be read as theirs).
pub fn any_record_at_boundaries(bytes: &[u8], generation: Generation) -> bool {
    (0..bytes.len()).step_by(APPEND_ALIGN as usize).any(|at| {
        matches!(
            parse_one(&bytes[at..], RECORDS_START + at as u64, generation),
            Parsed::Good(_)
        )
    })
}

/// Records to write in one append, framed in one buffer.
#[derive(Debug)]
pub struct WalBatch {
    generation: Generation,
    /// The append number the records carry.
    append: u64,
    buffer: Vec<u8>,
    /// `(index, offset of the frame within the buffer, frame length)` of every entry.
    entries: Vec<(u64, usize, u32)>,
    /// Where the last frame begins.
    last_frame: Option<usize>,
}

impl WalBatch {
    /// Add a log entry's record.
    pub fn push_entry(&mut self, index: u64, record: &[u8]) {
        let offset = self.push_frame(KIND_ENTRY, &[&index.to_le_bytes(), record]);
        let len = u32::try_from(self.buffer.len() - offset).expect("a record is far below 4 GiB");
        self.entries.push((index, offset, len));
    }

    /// Add the committed log id's record.
    pub fn push_committed(&mut self, record: &[u8]) {
        self.push_frame(KIND_COMMITTED, &[record]);
    }

    /// Write a frame of `kind` whose body ends with `parts`, marked as the append's last
    /// (the previous frame loses that mark); returns where it begins.
    fn push_frame(&mut self, kind: u8, parts: &[&[u8]]) -> usize {
        if let Some(previous) = self.last_frame {
            let body_at = previous + FRAME_BYTES;
            self.buffer[body_at] &= !LAST_IN_APPEND;
            self.seal(previous, self.generation);
        }
        let frame = self.buffer.len();
        self.buffer.extend_from_slice(&[0; FRAME_BYTES]);
        self.buffer.push(kind | LAST_IN_APPEND);
        self.buffer.extend_from_slice(&self.append.to_le_bytes());
        for part in parts {
            self.buffer.extend_from_slice(part);
        }
        let len = u32::try_from(self.buffer.len() - frame - FRAME_BYTES)
            .expect("a record is far below 4 GiB");
        self.buffer[frame..frame + 4].copy_from_slice(&len.to_le_bytes());
        self.seal(frame, self.generation);
        self.last_frame = Some(frame);
        frame
    }

    /// Write the CRC of the frame at `frame` under `generation`; returns where the next
    /// frame begins.
    fn seal(&mut self, frame: usize, generation: Generation) -> usize {
        let len =
            u32::from_le_bytes(self.buffer[frame..frame + 4].try_into().expect("4 bytes")) as usize;
        let body_at = frame + FRAME_BYTES;
        let crc = generation.checksum(&self.buffer[body_at..body_at + len]);
        self.buffer[frame + 4..body_at].copy_from_slice(&crc.to_le_bytes());
        body_at + len
    }

    /// Frame the records again for `generation` and append number `append` (after a
    /// checkpoint made the batch's stale).
    pub fn reframe(&mut self, generation: Generation, append: u64) {
        let mut at = 0usize;
        while at < self.buffer.len() {
            let body_at = at + FRAME_BYTES;
            self.buffer[body_at + 1..body_at + BODY_HEADER_BYTES]
                .copy_from_slice(&append.to_le_bytes());
            at = self.seal(at, generation);
        }
        self.generation = generation;
        self.append = append;
    }

    /// Bytes the batch takes in the file.
    pub fn len(&self) -> u64 {
        self.buffer.len() as u64
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }
}

/// Why an append did not reach the disk.
enum WriteFailure {
    /// The disk (or the quota) is full: the write was refused.
    NoSpace(std::io::Error),
    /// `what` failed: whether the data reached the disk is unknown.
    Unknown {
        what: &'static str,
        error: std::io::Error,
    },
}

/// Where an entry's frame is in the file.
#[derive(Clone, Copy, Debug)]
struct EntryAt {
    index: u64,
    offset: u64,
    /// The whole frame's length.
    len: u32,
}

/// The open write-ahead file.
#[derive(Debug)]
pub struct Wal {
    file: Box<dyn DiskFile>,
    /// The same file opened for direct, synchronous writes, while the file system takes
    /// them (see the module docs).
    direct: Option<DirectWriter>,
    path: PathBuf,
    capacity: u64,
    generation: Generation,
    /// Appends in this generation so far (the next one's number).
    appends: u64,
    /// Where the next record goes.
    end: u64,
    entries: Vec<EntryAt>,
    /// Set by a failed write: the file then takes no more.
    failed: bool,
}

/// What [`Wal::open`] found in the file.
#[derive(Debug)]
pub struct WalFound {
    /// The records of the generation that verified.
    pub records: Vec<WalRecord>,
    /// Where they end, and why.
    pub end: RecordsEnd,
    /// Whether any record of the generation is in the file (at the start or at a later
    /// append boundary): if not, appends may go on under it without a new generation.
    pub in_use: bool,
}

/// Read and verify the file at `path` under `generation` without changing it (start-up
/// and `check-data`): every record that verifies, and where they end.
///
/// # Errors
/// The file cannot be read, or is not a write-ahead file of this format.
pub fn read_file(
    path: &Path,
    generation: Generation,
) -> Result<(Vec<WalRecord>, RecordsEnd), StoreError> {
    let bytes = std::fs::read(path).map_err(StoreError::io(path))?;
    check_header(path, &bytes)?;
    Ok(parse_records(&bytes[RECORDS_START as usize..], generation))
}

fn check_header(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    if (bytes.len() as u64) < MIN_WAL_BYTES {
        return Err(StoreError::OpenDatabase {
            path: path.to_owned(),
            reason: format!(
                "the write-ahead file has {} bytes, fewer than the {MIN_WAL_BYTES} it is \
                 created with: it was truncated. Its entries may have been acknowledged, so \
                 the node refuses to start (restore it from a healthy replica)",
                bytes.len()
            ),
        });
    }
    if bytes[..MAGIC.len()] != MAGIC {
        return Err(StoreError::OpenDatabase {
            path: path.to_owned(),
            reason: "the write-ahead file does not begin with its magic bytes: it is damaged \
                     or not a fencelock write-ahead file of this format. Its entries may have \
                     been acknowledged, so the node refuses to start (restore it from a \
                     healthy replica)"
                .to_owned(),
        });
    }
    Ok(())
}

impl Wal {
    /// Open `dir`/[`WAL_FILE_NAME`], or create it zero-filled with `capacity` bytes (at
    /// least [`MIN_WAL_BYTES`]; an existing file keeps its size). Returns the records of
    /// `generation` in it; the caller moves them into redb with the next generation (or,
    /// when the generation is not in use, keeps it) and then calls
    /// [`Wal::start_generation`].
    ///
    /// # Errors
    /// The file cannot be created, read or opened for writing, or its header is damaged.
    pub fn open(
        dir: &Path,
        capacity: u64,
        generation: Generation,
    ) -> Result<(Wal, WalFound), StoreError> {
        Self::open_on(&Disk::real(), dir, capacity, generation)
    }

    /// [`Wal::open`] on `disk`.
    ///
    /// # Errors
    /// As [`Wal::open`].
    pub fn open_on(
        disk: &Disk,
        dir: &Path,
        capacity: u64,
        generation: Generation,
    ) -> Result<(Wal, WalFound), StoreError> {
        let path = dir.join(WAL_FILE_NAME);
        if !disk.exists(&path) {
            create_zero_filled(disk, dir, &path, capacity.max(MIN_WAL_BYTES))?;
        }
        let file = disk.open(&path)?;
        let bytes = read_all(file.as_ref()).map_err(StoreError::io(&path))?;
        check_header(&path, &bytes)?;
        let region = &bytes[RECORDS_START as usize..];
        let (records, end) = parse_records(region, generation);
        let in_use = !records.is_empty() || any_record_at_boundaries(region, generation);
        let wal = Wal {
            file,
            direct: DirectWriter::open(disk, &path),
            path,
            capacity: bytes.len() as u64,
            generation,
            appends: 0,
            end: RECORDS_START,
            entries: Vec::new(),
            // No writes until the caller starts a generation the database records.
            failed: true,
        };
        Ok((
            wal,
            WalFound {
                records,
                end,
                in_use,
            },
        ))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current generation.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// Write from the start again under `generation`, which the log database now
    /// records (what the file held is in the database).
    pub fn start_generation(&mut self, generation: Generation) {
        self.generation = generation;
        self.appends = 0;
        self.end = RECORDS_START;
        self.entries.clear();
        self.failed = false;
    }

    /// A batch of records for the current generation's next append.
    pub fn batch(&self) -> WalBatch {
        WalBatch {
            generation: self.generation,
            append: self.appends,
            buffer: Vec::new(),
            entries: Vec::new(),
            last_frame: None,
        }
    }

    /// Frame `batch` again for the current generation's next append.
    pub fn reframe(&self, batch: &mut WalBatch) {
        batch.reframe(self.generation, self.appends);
    }

    /// Whether `batch` fits after the records written so far.
    pub fn fits(&self, batch: &WalBatch) -> bool {
        self.end + align_up(batch.len()) <= self.capacity
    }

    /// Whether `batch` would fit into the file right after a checkpoint.
    pub fn fits_when_empty(&self, batch: &WalBatch) -> bool {
        RECORDS_START + align_up(batch.len()) <= self.capacity
    }

    /// Entries written in this generation.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Bytes the records of this generation take.
    pub fn used_bytes(&self) -> u64 {
        self.end - RECORDS_START
    }

    /// Whether nothing was written in this generation.
    pub fn is_empty(&self) -> bool {
        self.end == RECORDS_START
    }

    /// The first entry's index in the file, if any.
    pub fn first_index(&self) -> Option<u64> {
        self.entries.first().map(|e| e.index)
    }

    /// Write `batch` after the records so far and sync the file's data. The caller
    /// checked [`Wal::fits`]; entries must follow the last one written without a gap.
    ///
    /// # Errors
    /// The write or the sync failed (the file then takes no more writes).
    pub fn append(&mut self, batch: &WalBatch) -> Result<(), StoreError> {
        if self.failed {
            return Err(StoreError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(
                    "an earlier write to the write-ahead file failed; it takes no more",
                ),
            });
        }
        assert_eq!(
            (batch.generation, batch.append),
            (self.generation, self.appends),
            "a batch framed for another append"
        );
        assert!(self.fits(batch), "the caller checks that a batch fits");
        debug_assert!(
            batch.entries.windows(2).all(|w| w[1].0 == w[0].0 + 1)
                && match (self.entries.last(), batch.entries.first()) {
                    (Some(last), Some(first)) => first.0 == last.index + 1,
                    _ => true,
                },
            "entries are appended without gaps"
        );
        if batch.is_empty() {
            return Ok(());
        }
        let written = match self
            .direct
            .as_mut()
            .map(|d| d.write(&batch.buffer, self.end))
        {
            Some(Ok(())) => Ok(()),
            Some(Err(error)) if error.raw_os_error() == Some(libc::EINVAL) => {
                // Refused before any I/O (alignment the disk does not take): write through
                // the page cache from now on.
                tracing::info!(path = %self.path.display(), %error, "direct writes refused; using buffered writes and fdatasync");
                self.direct = None;
                self.write_buffered(&batch.buffer)
            }
            Some(Err(error)) if space::io_is_no_space(&error) => Err(WriteFailure::NoSpace(error)),
            Some(Err(error)) => Err(WriteFailure::Unknown {
                what: "a synchronous (O_DIRECT | O_DSYNC) write",
                error,
            }),
            None => self.write_buffered(&batch.buffer),
        };
        #[cfg(test)]
        let written = match tests::injected_sync_failure() {
            Some(error) => Err(WriteFailure::Unknown {
                what: "fdatasync",
                error,
            }),
            None => written,
        };
        match written {
            Ok(()) => {}
            // The disk refused the write before the data reached the file: the caller
            // may write the same batch at the same place again, once there is space.
            Err(WriteFailure::NoSpace(source)) => {
                return Err(StoreError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
            // Whether the data is on the disk is unknown, and a retried sync cannot
            // tell: the node stops (see `crate::space`).
            Err(WriteFailure::Unknown { what, error }) => {
                self.failed = true;
                let source = space::stop_on_unknown_durability(&self.path, what, error);
                return Err(StoreError::Sync {
                    path: self.path.clone(),
                    source,
                });
            }
        }
        let base = self.end;
        self.entries
            .extend(batch.entries.iter().map(|&(index, offset, len)| EntryAt {
                index,
                offset: base + offset as u64,
                len,
            }));
        self.end += align_up(batch.len());
        self.appends += 1;
        Ok(())
    }

    /// Write `bytes` at the end of the records through the page cache and sync the data.
    fn write_buffered(&self, bytes: &[u8]) -> Result<(), WriteFailure> {
        match self.file.write_all_at(bytes, self.end) {
            Ok(()) => {}
            Err(error) if space::io_is_no_space(&error) => {
                return Err(WriteFailure::NoSpace(error));
            }
            Err(error) => {
                return Err(WriteFailure::Unknown {
                    what: "a write",
                    error,
                });
            }
        }
        if cfg!(feature = "mutant-skip-wal-sync") {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(|error| WriteFailure::Unknown {
                what: "fdatasync",
                error,
            })
    }

    /// Whether appends are written with direct, synchronous I/O.
    pub fn writes_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// The records of entries `[start, end)` that are in the file, read back and verified.
    ///
    /// # Errors
    /// Reading failed, or a record no longer verifies.
    pub fn read_entries(&self, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        self.for_each_entry(start, end, |index, bytes| {
            out.push((index, bytes.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }

    /// Read back and verify the records of entries `[start, end)` that are in the file,
    /// one at a time (a checkpoint streams them into redb without holding them all).
    ///
    /// # Errors
    /// Reading failed, a record no longer verifies, or `visit` failed.
    pub fn for_each_entry(
        &self,
        start: u64,
        end: u64,
        mut visit: impl FnMut(u64, &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let Some(first) = self.first_index() else {
            return Ok(());
        };
        let from = start.max(first);
        let to = end.min(first + self.entries.len() as u64);
        if from >= to {
            return Ok(());
        }
        // The entries lie in the file in order: read it in windows of many entries, not
        // one read per entry (appends are written around the page cache, so each read
        // may go to the disk).
        let mut window = Vec::new();
        let mut window_start = 0u64;
        for at in &self.entries[(from - first) as usize..(to - first) as usize] {
            let len = at.len as usize;
            let in_window = at.offset >= window_start
                && at.offset + len as u64 <= window_start + window.len() as u64;
            if !in_window {
                let size = (self.end - at.offset)
                    .min(READ_WINDOW_BYTES)
                    .max(len as u64);
                window.resize(size as usize, 0);
                window_start = at.offset;
                self.file
                    .read_exact_at(&mut window, window_start)
                    .map_err(StoreError::io(&self.path))?;
            }
            let skip = (at.offset - window_start) as usize;
            let frame = &window[skip..skip + len];
            match parse_one(frame, at.offset, self.generation) {
                Parsed::Good(Frame {
                    record: Some(WalRecord::Entry { index, bytes, .. }),
                    len: parsed_len,
                    ..
                }) if index == at.index && parsed_len == len => visit(index, &bytes)?,
                _ => {
                    return Err(self.changed(at.offset, "an entry record no longer verifies"));
                }
            }
        }
        Ok(())
    }

    fn changed(&self, offset: u64, what: &str) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(format!(
                "write-ahead file changed under the running node at offset {offset}: {what}"
            )),
        }
    }
}

/// The write-ahead file opened with `O_DIRECT | O_DSYNC`, and a buffer aligned for it.
#[derive(Debug)]
struct DirectWriter {
    file: Box<dyn DiskFile>,
    /// Holds an append copied to an [`APPEND_ALIGN`]-aligned address, padded with zeros
    /// to a whole number of sectors.
    staging: Vec<u8>,
    /// Tests: hand the kernel a length that is not whole sectors, which it refuses as a
    /// disk with sectors larger than [`APPEND_ALIGN`] refuses our appends.
    #[cfg(test)]
    misalign: bool,
}

impl DirectWriter {
    /// `None` where the platform or the file system does not take direct I/O.
    fn open(disk: &Disk, path: &Path) -> Option<DirectWriter> {
        if cfg!(feature = "mutant-skip-wal-sync") {
            return None;
        }
        Some(DirectWriter {
            file: disk.open_direct(path)?,
            staging: Vec::new(),
            #[cfg(test)]
            misalign: false,
        })
    }

    /// Write `bytes` at `offset` (a multiple of [`APPEND_ALIGN`]), padded with zeros to
    /// whole sectors, durably when the call returns.
    fn write(&mut self, bytes: &[u8], offset: u64) -> std::io::Result<()> {
        debug_assert_eq!(
            offset % APPEND_ALIGN,
            0,
            "appends start on sector boundaries"
        );
        let align = APPEND_ALIGN as usize;
        let len = align_up(bytes.len() as u64) as usize;
        self.staging.clear();
        self.staging.resize(len + align, 0);
        let start = self.staging.as_ptr().align_offset(align);
        let sectors = &mut self.staging[start..start + len];
        sectors[..bytes.len()].copy_from_slice(bytes);
        #[cfg(test)]
        if self.misalign {
            return self.file.write_all_at(&sectors[..len - 1], offset);
        }
        self.file.write_all_at(sectors, offset)
    }
}

/// Write a zero-filled file of `capacity` bytes that begins with [`MAGIC`] at `path`
/// (through a temporary file, synced, renamed, and the directory synced).
fn create_zero_filled(
    disk: &Disk,
    dir: &Path,
    path: &Path,
    capacity: u64,
) -> Result<(), StoreError> {
    let tmp = path.with_extension("wal.tmp");
    let file = disk.create(&tmp)?;
    let zeros = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < capacity {
        let n = (capacity - at).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], at)
            .map_err(StoreError::io(&tmp))?;
        at += n as u64;
    }
    file.write_all_at(&MAGIC, 0).map_err(StoreError::io(&tmp))?;
    file.sync_data().map_err(StoreError::sync(&tmp))?;
    disk.rename(&tmp, path)?;
    disk.sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set in the child process of `a_failed_sync_stops_the_process_naming_the_file`:
    /// every append's sync fails there.
    const FAIL_SYNC_ENV: &str = "FENCELOCK_TEST_FAIL_WAL_SYNC";

    /// The sync failure injected into appends, in that child process only.
    pub(super) fn injected_sync_failure() -> Option<std::io::Error> {
        std::env::var_os(FAIL_SYNC_ENV).map(|_| std::io::Error::from_raw_os_error(libc::EIO))
    }

    #[test]
    fn a_failed_sync_stops_the_process_naming_the_file() {
        const NAME: &str = "store::wal::tests::a_failed_sync_stops_the_process_naming_the_file";
        if std::env::var_os(FAIL_SYNC_ENV).is_some() {
            // The child: one append, whose sync fails. Going on (or retrying the sync
            // until it "succeeds") would treat data of unknown durability as safe.
            let dir = tempfile::tempdir().expect("temporary directory");
            let (mut wal, _) =
                Wal::open(dir.path(), MIN_WAL_BYTES, Generation::NONE).expect("create");
            wal.start_generation(generation(1));
            let mut b = wal.batch();
            b.push_entry(1, b"one");
            let result = wal.append(&b);
            println!("the append returned: {result:?}");
            std::process::exit(0);
        }
        let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env(FAIL_SYNC_ENV, "1")
            .output()
            .expect("run the child");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(crate::space::EXIT_STORAGE_FAILED),
            "the node must stop on a failed sync; stdout: {stdout}; stderr: {stderr}"
        );
        assert!(
            stderr.contains("fatal storage error: fdatasync of ")
                && stderr.contains(WAL_FILE_NAME)
                && stderr.contains("the node stops"),
            "the message names what failed and the file: {stderr}"
        );
    }

    fn generation(number: u64) -> Generation {
        Generation { number, salt: 7 }
    }

    fn batch(generation: Generation, append: u64, entries: &[(u64, &[u8])]) -> WalBatch {
        let mut batch = WalBatch {
            generation,
            append,
            buffer: Vec::new(),
            entries: Vec::new(),
            last_frame: None,
        };
        for (index, bytes) in entries {
            batch.push_entry(*index, bytes);
        }
        batch
    }

    /// The records region of a file holding `batches` as appends write them (each at a
    /// boundary), then a page of zeros; and where each batch begins in it.
    fn layout(batches: &[&WalBatch]) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        for batch in batches {
            starts.push(bytes.len());
            bytes.extend_from_slice(&batch.buffer);
            bytes.resize(align_up(bytes.len() as u64) as usize, 0);
        }
        bytes.resize(bytes.len() + APPEND_ALIGN as usize, 0);
        (bytes, starts)
    }

    #[test]
    fn records_of_the_current_generation_parse_and_end_at_zeros() {
        let g = generation(3);
        let mut first = batch(g, 0, &[(10, b"ten"), (11, b"eleven")]);
        first.push_committed(b"c");
        let second = batch(g, 1, &[(12, b"twelve")]);
        let (bytes, _) = layout(&[&first, &second]);
        let (records, end) = parse_records(&bytes, g);
        assert_eq!(records.len(), 4);
        assert!(
            matches!(&records[1], WalRecord::Entry { index: 11, bytes, .. } if bytes == b"eleven")
        );
        assert_eq!(records[2], WalRecord::Committed(b"c".to_vec()));
        assert!(
            matches!(&records[3], WalRecord::Entry { index: 12, offset, .. }
            if *offset == RECORDS_START + APPEND_ALIGN)
        );
        assert_eq!(end.offset, RECORDS_START + 2 * APPEND_ALIGN);
        assert_eq!(end.damage_in_the_middle, None);
    }

    #[test]
    fn records_of_another_generation_or_salt_do_not_verify() {
        let old = batch(generation(3), 0, &[(10, b"ten")]);
        let (bytes, _) = layout(&[&old, &old]);
        for other in [
            generation(4),
            Generation { number: 3, salt: 8 },
            Generation::NONE,
        ] {
            let (records, end) = parse_records(&bytes, other);
            assert!(records.is_empty());
            assert_eq!(end.offset, RECORDS_START);
            assert_eq!(end.damage_in_the_middle, None);
        }
    }

    #[test]
    fn a_new_generation_written_over_an_old_one_ends_where_it_ends() {
        let old: Vec<WalBatch> = (0..4)
            .map(|a| batch(generation(3), a, &[(10 + a, b"a much longer old entry")]))
            .collect();
        let (mut bytes, _) = layout(&old.iter().collect::<Vec<_>>());
        let new = batch(generation(4), 0, &[(20, b"short")]);
        bytes[..new.buffer.len()].copy_from_slice(&new.buffer);
        let (records, end) = parse_records(&bytes, generation(4));
        assert_eq!(records.len(), 1);
        assert_eq!(end.offset, RECORDS_START + APPEND_ALIGN);
        assert_eq!(end.damage_in_the_middle, None);
    }

    #[test]
    fn a_torn_last_append_ends_the_records_at_every_cut() {
        let g = generation(1);
        let first = batch(g, 0, &[(1, b"first")]);
        let last = batch(g, 1, &[(2, b"second entry"), (3, b"third")]);
        let (whole, starts) = layout(&[&first, &last]);
        for cut in starts[1]..starts[1] + last.buffer.len() {
            let mut bytes = whole[..cut].to_vec();
            bytes.resize(whole.len(), 0);
            let (records, end) = parse_records(&bytes, g);
            assert!((1..=2).contains(&records.len()), "cut at {cut}");
            assert!(end.damage_in_the_middle.is_none(), "cut at {cut}");
        }
    }

    #[test]
    fn a_lost_sector_inside_the_last_append_is_a_torn_tail() {
        // The last append spans two pages; its first page never reached the disk.
        let g = generation(1);
        let first = batch(g, 0, &[(1, b"first")]);
        let last = batch(g, 1, &[(2, &[2u8; 5000]), (3, b"third")]);
        let (mut bytes, starts) = layout(&[&first, &last]);
        bytes[starts[1]..starts[1] + APPEND_ALIGN as usize].fill(0);
        let (records, end) = parse_records(&bytes, g);
        assert_eq!(records.len(), 1);
        assert_eq!(end.damage_in_the_middle, None, "it may be a torn write");
    }

    #[test]
    fn a_damaged_record_followed_by_a_later_append_is_damage_in_the_middle() {
        let g = generation(1);
        let appends = [
            batch(g, 0, &[(1, b"first")]),
            batch(g, 1, &[(2, b"second")]),
            batch(g, 2, &[(3, b"third")]),
        ];
        let (bytes, starts) = layout(&appends.iter().collect::<Vec<_>>());
        for damaged in [starts[1], starts[1] + 1, starts[1] + FRAME_BYTES + 12] {
            let mut bytes = bytes.clone();
            bytes[damaged] ^= 0x01;
            let (records, end) = parse_records(&bytes, g);
            assert_eq!(records.len(), 1, "byte {damaged}");
            let third_at = RECORDS_START + starts[2] as u64;
            assert_eq!(
                end.damage_in_the_middle,
                Some((third_at, 2)),
                "byte {damaged}"
            );
        }
        // Damage to a record in the middle of an append, with a later append after it.
        let appends = [
            batch(g, 0, &[(1, b"first")]),
            batch(g, 1, &[(2, b"second"), (3, b"third")]),
            batch(g, 2, &[(4, b"fourth")]),
        ];
        let (mut mid, starts) = layout(&appends.iter().collect::<Vec<_>>());
        let third_at = starts[1] + batch(g, 1, &[(2, b"second")]).buffer.len();
        mid[third_at + FRAME_BYTES + 12] ^= 0x01;
        let (records, end) = parse_records(&mid, g);
        assert_eq!(records.len(), 2);
        assert_eq!(
            end.damage_in_the_middle,
            Some((RECORDS_START + starts[2] as u64, 2))
        );
        // A whole page of the second append zeroed: the same.
        let mut zeroed = bytes.clone();
        zeroed[starts[1]..starts[2]].fill(0);
        let (_, end) = parse_records(&zeroed, g);
        assert!(end.damage_in_the_middle.is_some());
    }

    #[test]
    fn a_flipped_bit_in_any_record_ends_the_records_before_it() {
        let g = generation(1);
        let b = batch(g, 0, &[(1, b"first"), (2, b"second")]);
        let first_len = batch(g, 0, &[(1, b"first")]).len() as usize;
        let (good, _) = layout(&[&b]);
        for byte in 0..b.buffer.len() {
            let mut bytes = good.clone();
            bytes[byte] ^= 0x10;
            let (records, _) = parse_records(&bytes, g);
            let expected = usize::from(byte >= first_len);
            assert_eq!(records.len(), expected, "flipped byte {byte}");
        }
    }

    #[test]
    fn reframing_gives_what_a_new_batch_gives() {
        let mut b = batch(generation(1), 4, &[(1, b"one"), (2, b"two")]);
        b.push_committed(b"c");
        b.reframe(generation(2), 0);
        let mut fresh = batch(generation(2), 0, &[(1, b"one"), (2, b"two")]);
        fresh.push_committed(b"c");
        assert_eq!(b.buffer, fresh.buffer);
    }

    #[test]
    fn writes_reads_and_new_generations_through_the_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let capacity = MIN_WAL_BYTES;
        let (mut wal, found) = Wal::open(dir.path(), capacity, Generation::NONE).expect("create");
        assert!(found.records.is_empty() && !found.in_use);
        let g1 = Generation::NONE.next();
        wal.start_generation(g1);
        let mut b = wal.batch();
        b.push_committed(b"c1");
        b.push_entry(1, b"one");
        b.push_entry(2, b"two");
        assert!(wal.fits(&b));
        wal.append(&b).expect("append");
        let mut b = wal.batch();
        b.push_committed(b"c2");
        b.push_entry(3, b"three");
        wal.append(&b).expect("append");
        assert_eq!(
            wal.read_entries(2, 10).expect("read"),
            vec![(2, b"two".to_vec()), (3, b"three".to_vec())]
        );
        assert_eq!(wal.read_entries(0, u64::MAX).expect("read").len(), 3);
        drop(wal);

        let (mut wal, found) = Wal::open(dir.path(), 1 << 30, g1).expect("reopen");
        assert_eq!(found.records.len(), 5);
        assert!(found.in_use);
        assert_eq!(wal.capacity, capacity, "an existing file keeps its size");
        let g2 = g1.next();
        wal.start_generation(g2);
        let mut b = wal.batch();
        b.push_entry(4, b"4");
        wal.append(&b).expect("append");
        drop(wal);

        let path = dir.path().join(WAL_FILE_NAME);
        assert_eq!(read_file(&path, g2).expect("read").0.len(), 1);
        assert_eq!(read_file(&path, g1).expect("read").0.len(), 0);
    }

    /// Appends `batches` (entry records) to a new file in `dir`; `misalign` makes the
    /// direct writer's buffer unacceptable to the kernel. Returns the file's bytes and
    /// whether appends were still direct at the end.
    fn write_file(dir: &Path, misalign: bool, batches: &[&[(u64, &[u8])]]) -> (Vec<u8>, bool) {
        let (mut wal, _) = Wal::open(dir, MIN_WAL_BYTES, Generation::NONE).expect("create");
        if let Some(direct) = wal.direct.as_mut() {
            direct.misalign = misalign;
        }
        wal.start_generation(generation(1));
        for entries in batches {
            let mut b = wal.batch();
            for (index, record) in *entries {
                b.push_entry(*index, record);
            }
            wal.append(&b).expect("append");
        }
        let direct = wal.writes_direct();
        drop(wal);
        (
            std::fs::read(dir.join(WAL_FILE_NAME)).expect("read"),
            direct,
        )
    }

    #[test]
    fn direct_and_buffered_appends_leave_the_same_file() {
        let long = vec![7u8; 700];
        let batches: &[&[(u64, &[u8])]] = &[&[(1, b"one"), (2, &long)], &[(3, b"three")]];
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (direct_bytes, direct) = write_file(a.path(), false, batches);
        // A refused direct write (EINVAL before any I/O) falls back to buffered writes,
        // and the append still succeeds.
        let (buffered_bytes, still_direct) = write_file(b.path(), true, batches);
        assert!(
            !still_direct,
            "a refused direct write switches to buffered writes"
        );
        if !direct {
            eprintln!("this file system does not take O_DIRECT: compared buffered with buffered");
        }
        assert_eq!(direct_bytes, buffered_bytes);
        let (records, _) = parse_records(&direct_bytes[RECORDS_START as usize..], generation(1));
        assert_eq!(records.len(), 3);
    }

    #[test]
    fn entries_read_back_across_read_windows() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 1 << 20, Generation::NONE).unwrap();
        wal.start_generation(generation(1));
        // ~700 KiB of entries of varied sizes, some appends of several: several windows,
        // with entries that straddle a window's end.
        let record = |index: u64| vec![index as u8; 100 + (index as usize * 37) % 3_000];
        let mut index = 1;
        while index < 400 {
            let mut b = wal.batch();
            for _ in 0..(index % 3 + 1) {
                b.push_entry(index, &record(index));
                index += 1;
            }
            assert!(wal.fits(&b));
            wal.append(&b).unwrap();
        }
        let read = wal.read_entries(0, u64::MAX).unwrap();
        assert!(wal.end - RECORDS_START > 2 * READ_WINDOW_BYTES);
        assert_eq!(read.len() as u64, index - 1);
        for (i, (at, bytes)) in read.iter().enumerate() {
            assert_eq!(*at, i as u64 + 1);
            assert_eq!(*bytes, record(*at));
        }
        // A range that starts mid-file.
        let tail = wal.read_entries(250, 260).unwrap();
        assert_eq!(
            tail.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            (250..260).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_file_without_its_magic_or_cut_short_is_refused() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join(WAL_FILE_NAME);
        std::fs::write(&path, vec![0u8; MIN_WAL_BYTES as usize]).expect("write");
        assert!(Wal::open(dir.path(), MIN_WAL_BYTES, Generation::NONE).is_err());
        let mut bytes = MAGIC.to_vec();
        bytes.resize(100, 0);
        std::fs::write(&path, bytes).expect("write");
        assert!(read_file(&path, Generation::NONE).is_err());
    }

    #[test]
    fn a_batch_larger_than_the_file_does_not_fit() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (wal, _) = Wal::open(dir.path(), MIN_WAL_BYTES, Generation::NONE).expect("create");
        let mut b = wal.batch();
        b.push_entry(1, &[1u8; 5000]);
        assert!(!wal.fits(&b));
        assert!(!wal.fits_when_empty(&b));
    }
}
