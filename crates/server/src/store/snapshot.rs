//! Snapshot files: their byte format, and the directory that keeps the newest one.
//!
//! A snapshot is `{meta, state}` postcard-encoded behind a fixed header:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `FLSN` |
//! | 1 | format version ([`FORMAT_VERSION`]) |
//! | 4 | CRC-32 (IEEE) of the payload, little endian |
//! | 8 | payload length in bytes, little endian |
//! | n | payload: postcard of `{meta: SnapshotMeta, state: State}` |
//!
//! The same bytes are the file on disk and the data openraft sends to followers, so a
//! follower checks what it received exactly as start-up checks a file: header, length,
//! checksum, decoding, no trailing bytes, and [`State::check_invariants`] on the decoded
//! state. Any failure is a [`DecodeError`] with the byte offset of the bad field; a node
//! never loads or installs a snapshot that fails.
//!
//! Files are named `snapshot-<term>-<index>.bin` after the last log id they include. They
//! are written as `<name>.tmp`, fsynced, renamed, and the directory fsynced; then every
//! other snapshot file is deleted.

use super::StoreError;
use super::disk::Disk;
use crate::raft::{NodeId, PeerNode};
use fencelock_core::State;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Snapshot metadata with fencelock's node types.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, PeerNode>;

/// The version byte written in every snapshot header. Bump it when the payload changes
/// shape; older versions are refused rather than misread, except those listed in
/// [`decode`]. Version 2 added the auth revision and the remembered answers of
/// session-less requests at the end of the state; version 3 the newer primitives
/// (semaphore limits, per-grant times, weights, hold counts and lock-delays, multi-lock
/// waits, lock-delays in force, the replicated wall clock); version 4 the cluster
/// version; versions 1 to 3 are still read.
///
/// Version 3 is still *written* while the cluster version is 1 ([`format_for`]): the
/// builds before version 4 read at most 3, and they may be members (and receive this
/// node's snapshots) until the cluster version rises.
pub const FORMAT_VERSION: u8 = 4;

/// The newest format version before the cluster version was recorded.
const FORMAT_VERSION_V3: u8 = 3;

/// The format version [`encode`] writes `state` in: the newest, unless the cluster
/// version says members of an older build may still read it.
pub fn format_for(state: &State) -> u8 {
    if state.cluster_version() <= fencelock_core::version::INITIAL_CLUSTER_VERSION {
        FORMAT_VERSION_V3
    } else {
        FORMAT_VERSION
    }
}

const MAGIC: [u8; 4] = *b"FLSN";
const HEADER_BYTES: usize = MAGIC.len() + 1 + 4 + 8;
const FILE_PREFIX: &str = "snapshot-";
const FILE_SUFFIX: &str = ".bin";
pub(crate) const TMP_SUFFIX: &str = ".tmp";

#[derive(Serialize)]
struct ContentRef<'a> {
    meta: &'a SnapshotMeta,
    state: &'a State,
}

/// [`ContentRef`] in format version 3.
#[derive(Serialize)]
struct ContentRefV3<'a> {
    meta: &'a SnapshotMeta,
    state: fencelock_core::StateV3Ref<'a>,
}

/// A decoded snapshot.
#[derive(Debug, Deserialize)]
pub struct SnapshotContent {
    /// The last log id and membership it includes, and its id.
    pub meta: SnapshotMeta,
    /// The state machine as of `meta.last_log_id`.
    pub state: State,
}

/// A snapshot of an older format version (see [`FORMAT_VERSION`]): `S` decodes that
/// version's state (`StateV1`, `StateV2`, `StateV3`).
#[derive(Deserialize)]
struct OlderContent<S> {
    meta: SnapshotMeta,
    state: S,
}

/// Decode the payload of an older format version with `S`, then take its state.
fn decode_older<'a, S: Deserialize<'a>>(
    payload: &'a [u8],
    state_of: fn(S) -> State,
) -> postcard::Result<(SnapshotContent, &'a [u8])> {
    postcard::take_from_bytes::<OlderContent<S>>(payload).map(|(old, rest)| {
        let content = SnapshotContent {
            meta: old.meta,
            state: state_of(old.state),
        };
        (content, rest)
    })
}

/// Encode a snapshot of `state` described by `meta`, header and checksum included, in
/// the format [`format_for`] picks.
///
/// # Errors
/// Only if postcard cannot encode the state (a bug).
pub fn encode(meta: &SnapshotMeta, state: &State) -> Result<Vec<u8>, StoreError> {
    let version = format_for(state);
    let header = vec![0; HEADER_BYTES];
    let encoded = if version == FORMAT_VERSION_V3 {
        let state = fencelock_core::StateV3Ref(state);
        postcard::to_extend(&ContentRefV3 { meta, state }, header)
    } else {
        postcard::to_extend(&ContentRef { meta, state }, header)
    };
    let mut bytes = encoded.map_err(|source| StoreError::Encode {
        what: "snapshot",
        source,
    })?;
    let payload_len = (bytes.len() - HEADER_BYTES) as u64;
    let checksum = crc32fast::hash(&bytes[HEADER_BYTES..]);
    let header = &mut bytes[..HEADER_BYTES];
    header[..4].copy_from_slice(&MAGIC);
    header[4] = version;
    header[5..9].copy_from_slice(&checksum.to_le_bytes());
    header[9..17].copy_from_slice(&payload_len.to_le_bytes());
    Ok(bytes)
}

/// Why snapshot bytes were refused, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason} (at byte {offset})")]
pub struct DecodeError {
    /// Offset in the bytes of the field found wrong (the payload's start for checksum,
    /// decoding and invariant failures).
    pub offset: u64,
    /// What is wrong.
    pub reason: String,
}

/// Where the payload starts.
pub const PAYLOAD_OFFSET: u64 = HEADER_BYTES as u64;

/// Check and decode snapshot bytes made by [`encode`], and check the decoded state's
/// invariants.
///
/// # Errors
/// What is wrong and where: truncated, bad magic, unknown version, wrong length,
/// checksum mismatch, an undecodable payload, trailing bytes, or a state that breaks its
/// invariants.
pub fn decode(bytes: &[u8]) -> Result<SnapshotContent, DecodeError> {
    let fail = |offset: u64, reason: String| Err(DecodeError { offset, reason });
    if bytes.len() < HEADER_BYTES {
        return fail(
            bytes.len() as u64,
            format!(
                "{} bytes, shorter than the {HEADER_BYTES}-byte header",
                bytes.len()
            ),
        );
    }
    let (header, payload) = bytes.split_at(HEADER_BYTES);
    if header[..4] != MAGIC {
        return fail(0, "not a fencelock snapshot (bad magic)".to_owned());
    }
    if !(1..=FORMAT_VERSION).contains(&header[4]) {
        return fail(
            4,
            format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                header[4]
            ),
        );
    }
    let checksum = u32::from_le_bytes(header[5..9].try_into().expect("4 bytes"));
    let payload_len = u64::from_le_bytes(header[9..17].try_into().expect("8 bytes"));
    if payload_len != payload.len() as u64 {
        return fail(
            9,
            format!(
                "header says {payload_len} payload bytes, found {} (truncated or extended)",
                payload.len()
            ),
        );
    }
    let actual = crc32fast::hash(payload);
    if actual != checksum {
        return fail(
            PAYLOAD_OFFSET,
            format!("checksum mismatch (header {checksum:08x}, payload {actual:08x})"),
        );
    }
    let decoded = match header[4] {
        1 => decode_older(payload, |old: fencelock_core::StateV1| old.0),
        2 => decode_older(payload, |old: fencelock_core::StateV2| old.0),
        3 => decode_older(payload, |old: fencelock_core::StateV3| old.0),
        _ => postcard::take_from_bytes::<SnapshotContent>(payload),
    };
    let (content, rest) = match decoded {
        Ok(decoded) => decoded,
        Err(e) => return fail(PAYLOAD_OFFSET, format!("payload does not decode: {e}")),
    };
    if !rest.is_empty() {
        return fail(
            (bytes.len() - rest.len()) as u64,
            format!("{} trailing bytes after the payload", rest.len()),
        );
    }
    if let Err(violation) = content.state.check_invariants() {
        return fail(
            PAYLOAD_OFFSET,
            format!("the decoded state breaks an invariant: {violation}"),
        );
    }
    Ok(content)
}

/// The snapshot directory's name inside a data directory.
pub const SNAPSHOT_DIR_NAME: &str = "snapshots";

/// The last log index of the newest snapshot file in `dir`, judged by the file names
/// only (the state machine verifies the newest file's contents at start-up).
pub(crate) fn newest_index_by_name(disk: &Disk, dir: &Path) -> Option<u64> {
    disk.read_dir(dir)
        .ok()?
        .iter()
        .filter_map(|name| parse_file_name(name))
        .max()
        .map(|(_, index)| index)
}

/// `(term, index)` from a snapshot file's name, if it is one.
pub(crate) fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let (term, index) = name
        .strip_prefix(FILE_PREFIX)?
        .strip_suffix(FILE_SUFFIX)?
        .split_once('-')?;
    Some((term.parse().ok()?, index.parse().ok()?))
}

/// The directory holding the newest snapshot file.
#[derive(Debug)]
pub(crate) struct SnapshotDir {
    disk: Disk,
    dir: PathBuf,
}

impl SnapshotDir {
    /// Create `dir` if needed (durably: its parent is synced) and delete temporary files
    /// left by an interrupted write.
    pub(crate) fn open(disk: &Disk, dir: &Path) -> Result<SnapshotDir, StoreError> {
        disk.create_dir_all(dir)?;
        let snapshot_dir = SnapshotDir {
            disk: disk.clone(),
            dir: dir.to_owned(),
        };
        for name in snapshot_dir.file_names()? {
            if name.ends_with(TMP_SUFFIX) {
                disk.remove_file(&dir.join(&name))?;
            }
        }
        Ok(snapshot_dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.dir
    }

    /// The file name for the snapshot described by `meta`.
    pub(crate) fn file_path(&self, meta: &SnapshotMeta) -> PathBuf {
        let (term, index) = meta
            .last_log_id
            .map_or((0, 0), |id| (id.leader_id.term, id.index));
        self.dir
            .join(format!("{FILE_PREFIX}{term}-{index}{FILE_SUFFIX}"))
    }

    /// Durably replace the directory's snapshot with `bytes`, described by `meta`.
    pub(crate) fn write(&self, meta: &SnapshotMeta, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.file_path(meta);
        let mut tmp_name = path.clone().into_os_string();
        tmp_name.push(TMP_SUFFIX);
        let tmp = PathBuf::from(tmp_name);
        let written = self.disk.create(&tmp).and_then(|file| {
            file.write_all_at(bytes, 0).map_err(StoreError::io(&tmp))?;
            file.sync_data().map_err(StoreError::sync(&tmp))
        });
        if let Err(e) = written {
            // A partial file would hold on to space a full disk needs back.
            let _ = self.disk.remove_file(&tmp);
            return Err(e);
        }
        self.disk.rename(&tmp, &path)?;
        self.disk.sync_dir(&self.dir)?;
        for (_, _, other) in self.snapshot_files()? {
            if other != path {
                self.disk.remove_file(&other)?;
            }
        }
        Ok(())
    }

    /// Read the file of the snapshot described by `meta`.
    pub(crate) fn read(&self, meta: &SnapshotMeta) -> Result<Vec<u8>, StoreError> {
        self.disk.read(&self.file_path(meta))
    }

    /// Load and check the newest snapshot file, if there is one.
    ///
    /// # Errors
    /// The newest file is damaged ([`StoreError::CorruptSnapshotFile`] names it); an older
    /// file is never used in its place.
    pub(crate) fn load_newest(&self) -> Result<Option<SnapshotContent>, StoreError> {
        let Some((term, index, path)) = self.snapshot_files()?.into_iter().max() else {
            return Ok(None);
        };
        let bytes = self.disk.read(&path)?;
        let corrupt = |reason: String| StoreError::CorruptSnapshotFile {
            path: path.clone(),
            reason,
        };
        let content = decode(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let named = content
            .meta
            .last_log_id
            .map_or((0, 0), |id| (id.leader_id.term, id.index));
        if named != (term, index) {
            return Err(corrupt(format!(
                "it holds last log id {:?}, its name says term {term} index {index}",
                content.meta.last_log_id
            )));
        }
        Ok(Some(content))
    }

    pub(crate) fn file_names(&self) -> Result<Vec<String>, StoreError> {
        self.disk.read_dir(&self.dir)
    }

    /// `(term, index, path)` of every complete snapshot file.
    pub(crate) fn snapshot_files(&self) -> Result<Vec<(u64, u64, PathBuf)>, StoreError> {
        Ok(self
            .file_names()?
            .into_iter()
            .filter_map(|name| {
                let (term, index) = parse_file_name(&name)?;
                Some((term, index, self.dir.join(name)))
            })
            .collect())
    }
}
