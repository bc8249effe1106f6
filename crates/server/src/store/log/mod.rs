//! The Raft log and vote, durable in redb (`<data_dir>/raft-log.redb`), with appends
//! going first to a write-ahead file (`<data_dir>/raft-log.wal`, see [`super::wal`]).
//!
//! - **Appends** are written to the write-ahead file and synced (its data only: the file
//!   is preallocated), which is about half the work of a redb commit, on every node and
//!   every commit. A **checkpoint** moves what the file holds into redb in one durable
//!   transaction, then starts the file's next generation. It runs when an append does
//!   not fit, before a truncate or a purge, and at start-up; an append too large for
//!   the empty file goes to redb directly. With `wal_bytes = 0` every append is a redb
//!   transaction (a file left by an earlier run is still recovered at start-up).
//! - Entries are stored under their `u64` index in the `log` table; the vote, the
//!   committed log id, the last purged log id and a format marker live in the `meta`
//!   table. Every value is a checksummed record (see [`super::record`]): a version byte,
//!   a CRC-32 of the key and payload, then the postcard payload.
//! - Group commit: each `append()` is one write (and one sync) however many entries it
//!   carries, finished before the flush callback runs. `save_vote`, `truncate` and
//!   `purge` are one durable transaction each (the last two as range deletes).
//!   `save_committed` only records the committed log id in memory: the next append
//!   (which follows within a heartbeat under load), the next checkpoint, or closing the
//!   store writes it. A commit is then one durable write per node instead of two. While
//!   the write-ahead file holds entries the id is never written to redb alone, so redb's
//!   committed id never points past redb's entries. Losing the newest committed id in a crash
//!   only means re-learning it from the leader (openraft persists it as an optimization;
//!   start-up treats it as a lower bound).
//! - Reads of recent entries (the replication path) are served from a bounded in-memory
//!   cache of the log's tail (entries this process wrote and verified); older entries
//!   are read from redb and verified on every read. A record that fails verification is
//!   a [`StoreError::CorruptLog`] naming the file and the index.
//!
//! # Verification at start-up
//!
//! [`LogStore::open`] reads and verifies the whole file before it serves anything, then
//! the write-ahead file:
//!
//! - **The file itself**: redb keeps its own crash recovery (commits are atomic). A file
//!   redb cannot open (truncated, overwritten, not a redb file) refuses start-up with
//!   [`StoreError::OpenDatabase`] naming the file; a panic inside redb on a damaged file is
//!   caught and reported the same way.
//! - **Meta records**: the vote, the committed log id, the last purged log id and the
//!   format marker must pass their checksums. Any failure refuses start-up
//!   ([`StoreError::CorruptRecord`]): a node must never forget its vote, and without the
//!   committed log id it cannot tell which entries it may drop.
//! - **Entries** must be contiguous from `last_purged + 1` to the last index (no entry at
//!   or below `last_purged`, no gaps) and each must pass its checksum, decode, and carry
//!   its own index. A missing entry refuses start-up.
//! - **A damaged tail** (one or more entries at the end, with no verified entry after the
//!   first bad one) is what a torn or partial write would leave. If the first bad entry
//!   is **above** the persisted committed log id, Raft allows dropping it: those entries
//!   were never known committed, the leader still has them and re-sends them. The store
//!   deletes them in one durable transaction and logs a warning naming the file and the
//!   indexes. If it is **at or below** the committed log id, the entry may have been
//!   acknowledged and applied: start-up refuses ([`StoreError::CorruptLog`] naming the
//!   file and index); the operator restores the node from a healthy replica (wipe its
//!   data dir and re-add it).
//! - **Damage in the middle** (a bad entry followed by verified ones) is not a torn
//!   write: start-up refuses.
//!
//! - **The write-ahead file**: see [`super::wal`] for why a record that verifies is one
//!   this node wrote in the generation redb names (redb records the generation in the
//!   same transaction that moves the file's entries in, so the file never holds entries
//!   redb already has). Its entries must continue the redb log without a gap. Its
//!   records end at the first that does not verify; a record of a later append that
//!   verifies past it is damage in the middle and start-up refuses; otherwise the entries
//!   lost there (a torn write) are dropped like a torn tail, and if the newest committed
//!   log id (from redb or the file) then lies beyond the log and the newest snapshot,
//!   committed entries are lost and start-up refuses. What verified is moved into redb
//!   with the next generation before the node serves (no write at all when the file
//!   holds nothing of its generation).
//!   When redb records a generation but the file is missing, start-up refuses naming
//!   the file: it was in use (it is created, and its directory synced, before a
//!   generation is first recorded), and acknowledged entries may have been in it.
//! - **A new log** is created under a temporary name (tables and format marker
//!   committed) and renamed into place, and the data directory is synced at every
//!   start-up, so a power cut during a node's first start leaves either no file or a
//!   whole one. Every file and directory operation goes through a [`Disk`] (the tests
//!   run it on a simulated disk that loses power; `docs/durability.md`).
//! - **The vote** must not be missing or older than a log entry's term (a node saves the
//!   vote of a term before it appends entries of that term): a damaged B-tree that no
//!   longer finds the record would otherwise let a node forget its vote.
//!
//! Dropping an unacknowledged tail is the same thing Raft does for entries a crash lost
//! before their fsync. One residual risk is shared with every Raft log: an entry above
//! the persisted committed id may already have been acknowledged to the leader; if the
//! damage happens on a majority at once, a committed entry could be lost. `fencelock
//! check-data` reports everything this scan finds without changing the file.

use super::StoreError;
use super::disk::Disk;
use super::record;
use super::wal::{self, Generation, RecordsEnd, Wal, WalBatch, WalRecord};
use crate::commit_trace::{self, Point};
use crate::raft::{LogId, NodeId, TypeConfig};
use crate::space::{self, DiskSpace};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, LogState, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    TableError,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::fmt::Debug;
use std::mem::ManuallyDrop;
use std::ops::{Bound, RangeBounds};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard};

/// The log's file name inside the data directory.
pub const LOG_FILE_NAME: &str = "raft-log.redb";

/// The value of the format marker record: bumped when the layout of the file changes.
/// Format 2: the log may continue in the write-ahead file (a build that reads only
/// format 1 would miss those entries, so it must refuse the file).
pub const LOG_FORMAT: u32 = 2;

/// Formats this build reads (a format-1 file is marked 2 when the write-ahead file is
/// first used with it).
const LOG_FORMATS_READ: std::ops::RangeInclusive<u32> = 1..=LOG_FORMAT;

pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const KEY_VOTE: &str = "vote";
pub(crate) const KEY_COMMITTED: &str = "committed";
pub(crate) const KEY_LAST_PURGED: &str = "last_purged_log_id";
pub(crate) const KEY_FORMAT: &str = "format";
pub(crate) const KEY_WAL_GENERATION: &str = "wal_generation";

type Ent = Entry<TypeConfig>;

/// Tuning of the log store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogStoreOptions {
    /// At most this many of the newest entries are kept in memory for readers (0 turns the
    /// cache off). Followers are normally an entry or two behind, so a few hundred
    /// entries serve replication; a larger cache is memory held per lock taken recently
    /// (4,096 entries of packed acquires were ~180 bytes per held lock at 100,000 locks).
    pub cache_entries_max: usize,
    /// The cached entries' encoded sizes add up to at most this many bytes.
    pub cache_bytes_max: usize,
    /// redb's own page cache for the log file, in bytes (redb's default is 1 GiB, which a
    /// log that is appended to and purged fills with pages it never reads again).
    pub page_cache_bytes: usize,
    /// Size of the write-ahead file, in bytes (0: no write-ahead file; every append is a
    /// redb transaction). Created at this size; an existing file keeps its size.
    pub wal_bytes: u64,
    /// An append that is one write-ahead write of at most this many bytes is written
    /// and synced by the task that asks for it (openraft's core, which waits for the
    /// sync anyway) instead of on tokio's blocking pool, saving two thread wake-ups on
    /// every commit's path; its worker thread is busy for that one sync. Anything
    /// bigger, a checkpoint, or a redb transaction still goes to the blocking pool.
    /// 0: every append goes to the blocking pool.
    pub inline_append_max_bytes: u64,
}

/// The default of [`LogStoreOptions::inline_append_max_bytes`].
pub const DEFAULT_INLINE_APPEND_MAX_BYTES: u64 = 64 << 10;

/// The default of [`LogStoreOptions::wal_bytes`].
pub const DEFAULT_WAL_BYTES: u64 = 4 << 20;

/// The default of [`LogStoreOptions::page_cache_bytes`].
pub const DEFAULT_LOG_PAGE_CACHE_BYTES: usize = 16 << 20;

impl Default for LogStoreOptions {
    fn default() -> Self {
        LogStoreOptions {
            cache_entries_max: 256,
            cache_bytes_max: 4 << 20,
            page_cache_bytes: DEFAULT_LOG_PAGE_CACHE_BYTES,
            wal_bytes: DEFAULT_WAL_BYTES,
            inline_append_max_bytes: DEFAULT_INLINE_APPEND_MAX_BYTES,
        }
    }
}

/// The durable Raft log and vote. Cheap to clone: clones share the database and the
/// cache, and serve as openraft's log readers.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

/// Tells when every handle of a [`LogStore`] is gone, i.e. its database file is closed
/// and may be opened again (an in-process restart waits for this).
#[derive(Clone, Debug)]
pub struct LogStoreCloseWatch(Arc<std::sync::atomic::AtomicBool>);

impl LogStoreCloseWatch {
    /// True once the store and all its readers are dropped and the database file is
    /// closed (set at the end of the close, not when the last handle goes away).
    pub fn is_closed(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl LogStore {
    /// A watch that tells when this store's database is closed.
    pub fn close_watch(&self) -> LogStoreCloseWatch {
        LogStoreCloseWatch(self.inner.closed.clone())
    }
}

struct Inner {
    /// `Some` until dropped (see `Drop for Inner`), except for the moment it is reopened
    /// after a write the full disk refused (redb fails every later call after an I/O
    /// error).
    db: RwLock<Option<Database>>,
    /// Where the files are.
    disk: Disk,
    /// Free space on the data disk: writes the full disk refused wait here.
    space: Arc<DiskSpace>,
    path: PathBuf,
    options: LogStoreOptions,
    tail: Mutex<Tail>,
    write_transactions: AtomicU64,
    entries_appended: AtomicU64,
    inline_appends: AtomicU64,
    disk_reads: AtomicU64,
    /// Set once the database is closed (see [`LogStoreCloseWatch`]).
    closed: Arc<std::sync::atomic::AtomicBool>,
    /// The newest committed log id when it is newer than the file's, written by the next
    /// append or checkpoint, or at close.
    unsaved_committed: Mutex<Option<LogId>>,
    /// The write-ahead file, when in use. Appends, checkpoints, truncates and purges hold
    /// this lock throughout, so they never interleave.
    wal: Mutex<Option<WalState>>,
    checkpoints: AtomicU64,
}

/// The write-ahead file and what it holds beyond redb.
struct WalState {
    wal: Wal,
    /// The newest committed log id written to the file since its last reset.
    committed: Option<LogId>,
}

/// Entries encoded for one append to the write-ahead file.
struct EncodedBatch {
    batch: WalBatch,
    /// The entries, for the tail cache once the batch is written.
    cached: Vec<CachedEntry>,
    /// The commit id the batch records first, taken from `unsaved_committed`.
    committed: Option<LogId>,
}

impl Inner {
    /// The open database.
    ///
    /// # Errors
    /// It is being reopened after the disk filled (a retryable error, see
    /// [`StoreError::is_retryable_write`]).
    fn db(&self) -> Result<DbRef<'_>, StoreError> {
        let guard = self.db.read().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            return Err(StoreError::Io {
                path: self.path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    "the log database is being reopened after the disk filled",
                ),
            });
        }
        Ok(DbRef(guard))
    }
}

/// The open log database, borrowed.
struct DbRef<'a>(RwLockReadGuard<'a, Option<Database>>);

impl std::ops::Deref for DbRef<'_> {
    type Target = Database;

    fn deref(&self) -> &Database {
        self.0.as_ref().expect("checked when borrowed")
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let mut unsaved = self
            .unsaved_committed
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let wal = self.wal.get_mut().unwrap_or_else(|e| e.into_inner());
        let db = self.db.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = wal.as_mut()
            && let Some(db) = db.as_ref()
            && !state.wal.is_empty()
        {
            // A clean close leaves the log database whole (copies, backups and start-up
            // then find nothing in the write-ahead file).
            let committed = unsaved.take();
            let moved = catch_unwind(AssertUnwindSafe(|| {
                move_wal_into(db, &self.path, state, committed)
            }));
            match moved {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("the checkpoint at close failed: {e}"),
                Err(panic) => {
                    tracing::warn!("the checkpoint at close failed: {}", panic_message(&*panic))
                }
            }
        }
        // Closing writes redb's allocator state, which panics on some damaged files: a
        // node must still shut down, so report it instead.
        if let Some(db) = db.take()
            && let Err(message) = save_committed_and_close(db, &mut unsaved)
        {
            tracing::error!(
                file = %self.path.display(),
                "closing the log database failed (the file may be damaged): {message}"
            );
        }
        self.closed.store(true, Ordering::Release);
    }
}

/// What the log holds at its ends, and the cache of its newest entries.
///
/// Invariants: the cache is contiguous, and when it is not empty its last entry is
/// `last_log_id` (the cache always reaches the end of the log).
struct Tail {
    cache: VecDeque<CachedEntry>,
    cache_bytes: usize,
    /// The last entry present, or `last_purged` when there is none.
    last_log_id: Option<LogId>,
    last_purged: Option<LogId>,
}

struct CachedEntry {
    entry: Ent,
    encoded_bytes: usize,
}

impl Tail {
    fn first_cached_index(&self) -> Option<u64> {
        self.cache.front().map(|c| c.entry.log_id.index)
    }

    fn check(&self) {
        debug_assert_eq!(
            self.cache.back().map(|c| c.entry.log_id),
            self.cache.back().and(self.last_log_id),
            "the cache must end at the log's last entry"
        );
    }

    /// Record entries just committed after the current last one.
    fn appended(&mut self, entries: Vec<CachedEntry>, options: &LogStoreOptions) {
        let Some(last) = entries.last().map(|c| c.entry.log_id) else {
            return;
        };
        let first_index = entries[0].entry.log_id.index;
        // openraft truncates before it overwrites; drop overwritten entries all the same.
        self.drop_cached_from(first_index);
        if self.cache.back().map(|c| c.entry.log_id.index + 1) != Some(first_index) {
            // Not contiguous with the cache (first append, or after a purge past the end).
            self.cache.clear();
            self.cache_bytes = 0;
        }
        for cached in entries {
            self.cache_bytes += cached.encoded_bytes;
            self.cache.push_back(cached);
        }
        while self.cache.len() > options.cache_entries_max
            || self.cache_bytes > options.cache_bytes_max
        {
            let Some(evicted) = self.cache.pop_front() else {
                break;
            };
            self.cache_bytes -= evicted.encoded_bytes;
        }
        self.last_log_id = Some(last);
        self.check();
    }

    /// Entries from `index` on were deleted; `last_log_id` is what now ends the log.
    fn truncated(&mut self, index: u64, last_log_id: Option<LogId>) {
        self.drop_cached_from(index);
        self.last_log_id = last_log_id;
        self.check();
    }

    /// Entries up to and including `log_id` were deleted.
    fn purged(&mut self, log_id: LogId) {
        while self
            .cache
            .front()
            .is_some_and(|c| c.entry.log_id.index <= log_id.index)
        {
            let evicted = self.cache.pop_front().expect("front exists");
            self.cache_bytes -= evicted.encoded_bytes;
        }
        self.last_purged = Some(log_id);
        if self
            .last_log_id
            .is_none_or(|last| last.index <= log_id.index)
        {
            // No entry is left: the log ends where it was purged.
            self.last_log_id = Some(log_id);
        }
        self.check();
    }

    fn drop_cached_from(&mut self, index: u64) {
        while self
            .cache
            .back()
            .is_some_and(|c| c.entry.log_id.index >= index)
        {
            let evicted = self.cache.pop_back().expect("back exists");
            self.cache_bytes -= evicted.encoded_bytes;
        }
    }
}

impl LogStore {
    /// Open (or create) the log in `dir`/[`LOG_FILE_NAME`], verify all of it (see the
    /// module docs), drop a damaged uncommitted tail, and recover the vote, the entries,
    /// the committed and the last purged log id.
    ///
    /// # Errors
    /// The directory cannot be created; the file cannot be opened (damaged, or another
    /// process has it open: [`StoreError::OpenDatabase`]); a meta record is damaged
    /// ([`StoreError::CorruptRecord`]); an entry is missing, damaged in the middle of the
    /// log or at or below the committed log id ([`StoreError::CorruptLog`]).
    pub fn open(dir: &Path, options: LogStoreOptions) -> Result<LogStore, StoreError> {
        Self::open_on(&Disk::for_dir(dir), dir, options)
    }

    /// [`LogStore::open`] with the files on `disk`.
    ///
    /// # Errors
    /// As [`LogStore::open`].
    pub fn open_on(
        disk: &Disk,
        dir: &Path,
        options: LogStoreOptions,
    ) -> Result<LogStore, StoreError> {
        disk.create_dir_all(dir)?;
        let path = dir.join(LOG_FILE_NAME);
        if !disk.exists(&path) {
            create_database(disk, dir, &path, options.page_cache_bytes)?;
        }
        let snapshot_index = super::snapshot::newest_index_by_name(
            disk,
            &dir.join(super::snapshot::SNAPSHOT_DIR_NAME),
        );
        let (db, scan) =
            open_and_scan(disk, &path, &path, snapshot_index, options.page_cache_bytes)?;
        // The file may have just been created (or created by a run that lost power before
        // it synced the directory): its directory entry must be durable before the node
        // writes a vote into it.
        let truncate_from = match disk.sync_dir(dir).and_then(|()| scan.verdict(&path)) {
            Ok(truncate_from) => truncate_from,
            Err(e) => {
                let _ = close_quietly(db);
                return Err(e);
            }
        };

        let store = LogStore {
            inner: Arc::new(Inner {
                db: RwLock::new(Some(db)),
                disk: disk.clone(),
                space: Arc::new(DiskSpace::default()),
                path,
                options,
                tail: Mutex::new(Tail {
                    cache: VecDeque::new(),
                    cache_bytes: 0,
                    last_log_id: None,
                    last_purged: None,
                }),
                write_transactions: AtomicU64::new(0),
                entries_appended: AtomicU64::new(0),
                inline_appends: AtomicU64::new(0),
                disk_reads: AtomicU64::new(0),
                closed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
                unsaved_committed: Mutex::new(None),
                wal: Mutex::new(None),
                checkpoints: AtomicU64::new(0),
            }),
        };
        let last_entry = match truncate_from {
            None => scan.last_log_id,
            Some(index) => {
                tracing::warn!(
                    file = %store.inner.path.display(),
                    from_index = index,
                    to_index = scan.last_index,
                    committed = ?scan.committed,
                    "the log ends in damaged entries that were never committed (a torn \
                     write); deleting them: the leader sends them again"
                );
                let txn = store.begin_write(Durability::Immediate)?;
                {
                    let mut table = txn.open_table(LOG).map_err(|e| store.db_error(e))?;
                    table
                        .retain_in(index.., |_, _| false)
                        .map_err(|e| store.db_error(e))?;
                }
                store.commit(txn, true)?;
                scan.last_good_before_bad
            }
        };
        {
            let mut tail = store.tail();
            tail.last_purged = scan.last_purged;
            tail.last_log_id = last_entry.or(scan.last_purged);
        }
        // Writes to a file redb could read may still panic inside redb.
        let path = store.inner.path.clone();
        guarded(&path, "writing", || {
            store.recover_wal(dir, &scan, snapshot_index)
        })?;
        Ok(store)
    }

    /// Open the write-ahead file (creating it when in use and missing), move what it
    /// holds into redb with the file's next generation in one transaction (see the
    /// module docs), and keep it for appends when in use.
    fn recover_wal(
        &self,
        dir: &Path,
        scan: &Scan,
        snapshot_index: Option<u64>,
    ) -> Result<(), StoreError> {
        let in_use = self.inner.options.wal_bytes > 0;
        let disk = &self.inner.disk;
        let wal_path = dir.join(wal::WAL_FILE_NAME);
        let exists = disk.exists(&wal_path);
        if let Some(generation) = scan.wal_generation
            && !exists
        {
            return Err(missing_wal(&wal_path, &self.inner.path, generation));
        }
        if !in_use && !exists {
            return Ok(());
        }
        let generation = scan.wal_generation.unwrap_or(Generation::NONE);
        let (mut wal, found) = Wal::open_on(disk, dir, self.inner.options.wal_bytes, generation)?;
        let log_end = self.tail().last_log_id;
        let plan = plan_wal(
            &found.records,
            &found.end,
            wal.path(),
            log_end,
            scan.committed,
            snapshot_index,
        )?;
        let upgrade_format = in_use && scan.format.is_some_and(|f| f < LOG_FORMAT);
        // A file whose generation holds nothing (after a clean close, or a checkpoint)
        // goes on under it with no write at all; otherwise what it holds moves into the
        // database with the next generation, in one transaction.
        let next = if found.in_use || scan.wal_generation.is_none() {
            generation.next()
        } else {
            generation
        };
        if next != generation || upgrade_format {
            let txn = self.begin_write(Durability::Immediate)?;
            {
                let mut table = txn.open_table(LOG).map_err(|e| self.db_error(e))?;
                for (entry, bytes) in &plan.entries {
                    table
                        .insert(entry.log_id.index, bytes.as_slice())
                        .map_err(|e| self.db_error(e))?;
                }
                if let Some(committed) = plan.committed.filter(|_| plan.committed > scan.committed)
                {
                    put_committed(&txn, &committed).map_err(|e| self.db_error(e))?;
                }
                put_meta(&txn, KEY_WAL_GENERATION, &next).map_err(|e| self.db_error(e))?;
                if upgrade_format {
                    put_meta(&txn, KEY_FORMAT, &LOG_FORMAT).map_err(|e| self.db_error(e))?;
                }
            }
            self.commit(txn, true)?;
        }
        if let Some((entry, _)) = plan.entries.last() {
            self.tail().last_log_id = Some(entry.log_id);
        }
        if !found.records.is_empty() {
            tracing::info!(
                file = %wal.path().display(),
                records = found.records.len(),
                entries_moved = plan.entries.len(),
                end_offset = plan.end.offset,
                end = plan.end.reason.as_deref().unwrap_or("the end of the file"),
                "recovered the write-ahead file into the log database"
            );
        }
        if in_use {
            wal.start_generation(next);
            *self.wal() = Some(WalState {
                wal,
                committed: None,
            });
        }
        Ok(())
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Write transactions committed since open (appends, votes, committed, truncates,
    /// purges). An `append()` of any number of entries counts one.
    pub fn commit_count(&self) -> u64 {
        self.inner.write_transactions.load(Ordering::Relaxed)
    }

    /// Entries appended since open.
    pub fn entries_appended(&self) -> u64 {
        self.inner.entries_appended.load(Ordering::Relaxed)
    }

    /// Appends since open written by the asking task itself, as one write-ahead write
    /// (see [`LogStoreOptions::inline_append_max_bytes`]).
    pub fn inline_appends(&self) -> u64 {
        self.inner.inline_appends.load(Ordering::Relaxed)
    }

    /// Checkpoints since open: moves of the write-ahead file's entries into redb.
    pub fn checkpoint_count(&self) -> u64 {
        self.inner.checkpoints.load(Ordering::Relaxed)
    }

    /// Move what the write-ahead file holds into redb now (tests and tools; the store
    /// does it by itself when needed).
    ///
    /// # Errors
    /// Reading the file or writing redb failed.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        let mut wal = self.wal();
        match wal.as_mut() {
            Some(state) => self.checkpoint_locked(state),
            None => Ok(()),
        }
    }

    fn checkpoint_locked(&self, state: &mut WalState) -> Result<(), StoreError> {
        if state.wal.is_empty() {
            return Ok(());
        }
        // Carries a newer unsaved committed id too: redb then holds every entry.
        let unsaved = self.take_unsaved_committed();
        let moved = self.retry_write(
            "moving the write-ahead file into the log database",
            |store, retry| {
                if retry {
                    // The failed try may have committed after all (redb failed afterwards):
                    // then the database names the next generation, and holds the entries.
                    let recorded = store.read_meta::<Generation>(KEY_WAL_GENERATION)?;
                    if let Some(recorded) = recorded.filter(|g| *g != state.wal.generation()) {
                        state.wal.start_generation(recorded);
                        state.committed = None;
                        return Ok(());
                    }
                }
                // Room for the entries as B-tree pages, checked first: a transaction the full
                // disk refuses halfway poisons the database until it is reopened.
                store.ensure_room(state.wal.used_bytes().saturating_mul(2))?;
                move_wal_into(&*store.inner.db()?, &store.inner.path, state, unsaved)
            },
        );
        if let Err(e) = moved {
            self.restore_unsaved_committed(unsaved);
            return Err(e);
        }
        self.inner
            .write_transactions
            .fetch_add(1, Ordering::Relaxed);
        self.inner.checkpoints.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Free space on the data disk, as the store sees it (the node's monitor records
    /// into the same accounting, and raises its alarm while a write waits for space).
    pub fn disk_space(&self) -> Arc<DiskSpace> {
        Arc::clone(&self.inner.space)
    }

    /// Run a write (`attempt`; its second argument says whether an earlier try failed)
    /// until it goes through, waiting for space while the disk is full (see
    /// [`crate::space`]); the database is reopened before a try that follows a failure
    /// of its own. Any other I/O error stops the process: a sync of the log may have
    /// failed, and what the disk holds is then unknown ("fsyncgate").
    ///
    /// Blocks while the disk is full: never call it from openraft's core task.
    fn retry_write<T>(
        &self,
        what: &str,
        mut attempt: impl FnMut(&LogStore, bool) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut failed_in_database = None;
        let result = self.inner.space.until_space(
            what,
            &self.inner.path,
            StoreError::is_retryable_write,
            || {
                if failed_in_database == Some(true) {
                    self.reopen_database()?;
                }
                let result = attempt(self, failed_in_database.is_some());
                if let Err(e) = &result {
                    failed_in_database = Some(matches!(e, StoreError::Database { .. }));
                }
                result
            },
        );
        match result {
            Err(e) if e.is_os_failure() => {
                Err(space::stop_on_unknown_durability(&self.inner.path, what, e))
            }
            other => other,
        }
    }

    /// Close the database and open it again (redb fails every call after an I/O error,
    /// until it is reopened).
    fn reopen_database(&self) -> Result<(), StoreError> {
        let mut slot = self.inner.db.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = slot.take()
            && let Err(message) = close_quietly(old)
        {
            tracing::warn!(file = %self.inner.path.display(), "closing the log database after a failed write: {message}");
        }
        let path = &self.inner.path;
        let opened = guarded(path, "reopening", || {
            let mut builder = redb::Builder::new();
            builder.set_cache_size(self.inner.options.page_cache_bytes);
            self.inner
                .disk
                .create_database(path, &builder)
                .map_err(|e| match e {
                    redb::DatabaseError::Storage(redb::StorageError::Io(source)) => {
                        StoreError::Io {
                            path: path.clone(),
                            source,
                        }
                    }
                    // Another handle (a reader's transaction) still holds the file.
                    redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Io {
                        path: path.clone(),
                        source: std::io::Error::new(std::io::ErrorKind::WouldBlock, e.to_string()),
                    },
                    other => StoreError::OpenDatabase {
                        path: path.clone(),
                        reason: other.to_string(),
                    },
                })
        })?;
        *slot = Some(opened);
        tracing::warn!(file = %path.display(), "reopened the log database after a write the full disk refused");
        Ok(())
    }

    /// Fail with a lack of space, without touching the database, when fewer than
    /// `bytes` (plus a margin for the database's own pages) are free on the data disk.
    fn ensure_room(&self, bytes: u64) -> Result<(), StoreError> {
        const MARGIN_BYTES: u64 = 1 << 20;
        #[cfg(test)]
        if tests::SKIP_ROOM_CHECK.load(Ordering::Relaxed) {
            return Ok(());
        }
        let dir = self.inner.path.parent().unwrap_or(Path::new("."));
        let free = match rustix::fs::statvfs(dir) {
            Ok(stat) => stat.f_bavail.saturating_mul(stat.f_frsize),
            // Unknown: let the write itself tell.
            Err(_) => return Ok(()),
        };
        if free < bytes.saturating_add(MARGIN_BYTES) {
            return Err(StoreError::Io {
                path: self.inner.path.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!("{free} bytes free on the data disk, the write needs about {bytes}"),
                ),
            });
        }
        Ok(())
    }

    fn wal(&self) -> MutexGuard<'_, Option<WalState>> {
        self.inner.wal.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take_unsaved_committed(&self) -> Option<LogId> {
        self.inner
            .unsaved_committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Put back a committed id taken for a write that did not happen, unless a newer one
    /// was saved meanwhile.
    fn restore_unsaved_committed(&self, committed: Option<LogId>) {
        let mut unsaved = self
            .inner
            .unsaved_committed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *unsaved = (*unsaved).max(committed);
    }

    /// Reads of entries that the tail cache could not serve and went to disk.
    pub fn disk_read_count(&self) -> u64 {
        self.inner.disk_reads.load(Ordering::Relaxed)
    }

    fn tail(&self) -> MutexGuard<'_, Tail> {
        self.inner.tail.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn db_error(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Database {
            path: self.inner.path.clone(),
            source: e.into(),
        }
    }

    fn decode_entry(&self, index: u64, bytes: &[u8]) -> Result<Ent, StoreError> {
        record::decode_entry(index, bytes).map_err(|e| StoreError::CorruptLog {
            path: self.inner.path.clone(),
            index,
            reason: e.to_string(),
        })
    }

    fn begin_write(&self, durability: Durability) -> Result<redb::WriteTransaction, StoreError> {
        let mut txn = self
            .inner
            .db()?
            .begin_write()
            .map_err(|e| self.db_error(e))?;
        txn.set_durability(durability)
            .map_err(|e| self.db_error(e))?;
        Ok(txn)
    }

    /// Commit `txn`; with `carry_committed`, it also writes the unsaved committed log id
    /// (only when redb holds every entry up to it: never while the write-ahead file
    /// holds entries).
    fn commit(&self, txn: redb::WriteTransaction, carry_committed: bool) -> Result<(), StoreError> {
        let unsaved = if carry_committed {
            self.take_unsaved_committed()
        } else {
            None
        };
        let committed = unsaved
            .map_or(Ok(()), |committed| put_committed(&txn, &committed))
            .and_then(|()| txn.commit().map_err(redb::Error::from));
        if let Err(e) = committed {
            self.restore_unsaved_committed(unsaved);
            return Err(self.db_error(e));
        }
        self.inner
            .write_transactions
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &'static str) -> Result<Option<T>, StoreError> {
        let txn = self
            .inner
            .db()?
            .begin_read()
            .map_err(|e| self.db_error(e))?;
        let table = txn.open_table(META).map_err(|e| self.db_error(e))?;
        let Some(bytes) = table.get(key).map_err(|e| self.db_error(e))? else {
            return Ok(None);
        };
        record::decode(key.as_bytes(), bytes.value())
            .map(Some)
            .map_err(|e| StoreError::CorruptRecord {
                path: self.inner.path.clone(),
                record: key.to_owned(),
                reason: e.to_string(),
            })
    }

    /// Set (or with `None` remove) one meta value in its own transaction.
    fn write_meta<T: Serialize>(
        &self,
        key: &'static str,
        value: Option<&T>,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let bytes = value
            .map(|value| record::encode(key.as_bytes(), value, Vec::new()))
            .transpose()
            .map_err(|source| StoreError::Encode { what: key, source })?;
        self.retry_write(&format!("writing the `{key}` record"), |store, _| {
            store.ensure_room(0)?;
            let txn = store.begin_write(durability)?;
            {
                let mut table = txn.open_table(META).map_err(|e| store.db_error(e))?;
                match &bytes {
                    Some(bytes) => {
                        table
                            .insert(key, bytes.as_slice())
                            .map_err(|e| store.db_error(e))?;
                    }
                    None => {
                        table.remove(key).map_err(|e| store.db_error(e))?;
                    }
                }
            }
            store.commit(txn, !store.wal_in_use())
        })
    }

    /// Whether appends go to the write-ahead file.
    fn wal_in_use(&self) -> bool {
        self.inner.options.wal_bytes > 0
    }

    /// Append `entries` to the write-ahead file and sync it, checkpointing first when
    /// they do not fit; to redb directly when there is no file or they would not fit
    /// into an empty one.
    fn append_entries(&self, entries: Vec<Ent>) -> Result<(), StoreError> {
        let mut wal = self.wal();
        let Some(state) = wal.as_mut() else {
            drop(wal);
            return self.append_to_database(entries);
        };
        if entries.is_empty() {
            return Ok(());
        }
        let mut encoded = self.encode_batch(state, entries)?;
        if !state.wal.fits(&encoded.batch) {
            self.restore_unsaved_committed(encoded.committed);
            self.checkpoint_locked(state)?;
            if !state.wal.fits_when_empty(&encoded.batch) {
                return self.append_to_database(encoded.cached.into_iter().map(|c| c.entry));
            }
            state.wal.reframe(&mut encoded.batch);
        }
        self.write_batch(state, encoded)
    }

    /// Append `entries` (the last one's index is `last`, for the commit trace) if that
    /// takes one write of at most `max_bytes` to the write-ahead file (and its sync) and
    /// nothing more: no checkpoint, no redb transaction. Otherwise they are handed back,
    /// unwritten, for [`append_entries`](Self::append_entries).
    fn append_with_one_write(
        &self,
        entries: Vec<Ent>,
        max_bytes: u64,
        last: u64,
    ) -> Result<Option<Vec<Ent>>, StoreError> {
        let mut wal = self.wal();
        let Some(state) = wal.as_mut() else {
            return Ok(Some(entries));
        };
        if entries.is_empty() {
            return Ok(None);
        }
        let encoded = self.encode_batch(state, entries)?;
        if encoded.batch.len() > max_bytes || !state.wal.fits(&encoded.batch) {
            self.restore_unsaved_committed(encoded.committed);
            return Ok(Some(encoded.cached.into_iter().map(|c| c.entry).collect()));
        }
        commit_trace::mark(Point::AppendStarted, last);
        if let Err(e) = state.wal.append(&encoded.batch) {
            self.restore_unsaved_committed(encoded.committed);
            if e.is_retryable_write() {
                // The disk is full: the blocking pool waits for space, not openraft's
                // core task.
                return Ok(Some(encoded.cached.into_iter().map(|c| c.entry).collect()));
            }
            return Err(e);
        }
        self.batch_written(state, encoded);
        self.inner.inline_appends.fetch_add(1, Ordering::Relaxed);
        Ok(None)
    }

    /// `entries` as one write-ahead batch, led by the commit id not yet saved (taken
    /// from `unsaved_committed`: put it back if the batch is not written).
    fn encode_batch(
        &self,
        state: &WalState,
        entries: Vec<Ent>,
    ) -> Result<EncodedBatch, StoreError> {
        let committed = self.take_unsaved_committed();
        let mut batch = state.wal.batch();
        if let Some(committed) = committed {
            batch.push_committed(&encode_committed(&committed)?);
        }
        let mut cached = Vec::with_capacity(entries.len());
        let mut buffer = Vec::new();
        for entry in entries {
            buffer = record::encode_entry(&entry, buffer).map_err(|source| StoreError::Encode {
                what: "log entry",
                source,
            })?;
            batch.push_entry(entry.log_id.index, &buffer);
            cached.push(CachedEntry {
                encoded_bytes: buffer.len(),
                entry,
            });
        }
        Ok(EncodedBatch {
            batch,
            cached,
            committed,
        })
    }

    /// Write and sync a batch that fits into the write-ahead file, then cache its entries.
    fn write_batch(&self, state: &mut WalState, encoded: EncodedBatch) -> Result<(), StoreError> {
        // A full disk refused the write before it reached the file: the same bytes at
        // the same place are the same write.
        let written = self.retry_write("appending to the write-ahead file", |_, _| {
            state.wal.append(&encoded.batch)
        });
        if let Err(e) = written {
            self.restore_unsaved_committed(encoded.committed);
            return Err(e);
        }
        self.batch_written(state, encoded);
        Ok(())
    }

    /// Account for a batch just written and cache its entries.
    fn batch_written(&self, state: &mut WalState, encoded: EncodedBatch) {
        state.committed = state.committed.max(encoded.committed);
        self.inner
            .write_transactions
            .fetch_add(1, Ordering::Relaxed);
        self.inner
            .entries_appended
            .fetch_add(encoded.cached.len() as u64, Ordering::Relaxed);
        self.tail().appended(encoded.cached, &self.inner.options);
    }

    /// One durable redb transaction for all of `entries` (the write-ahead file is not in
    /// use, or is empty).
    fn append_to_database(&self, entries: impl IntoIterator<Item = Ent>) -> Result<(), StoreError> {
        let mut cached = Vec::new();
        let mut records = Vec::new();
        for entry in entries {
            let record =
                record::encode_entry(&entry, Vec::new()).map_err(|source| StoreError::Encode {
                    what: "log entry",
                    source,
                })?;
            cached.push(CachedEntry {
                encoded_bytes: record.len(),
                entry,
            });
            records.push(record);
        }
        if cached.is_empty() {
            return Ok(());
        }
        let bytes: usize = records.iter().map(Vec::len).sum();
        self.retry_write("appending to the log database", |store, _| {
            store.ensure_room((bytes as u64).saturating_mul(2))?;
            let txn = store.begin_write(Durability::Immediate)?;
            {
                let mut table = txn.open_table(LOG).map_err(|e| store.db_error(e))?;
                for (cached, record) in cached.iter().zip(&records) {
                    table
                        .insert(cached.entry.log_id.index, record.as_slice())
                        .map_err(|e| store.db_error(e))?;
                }
            }
            store.commit(txn, true)
        })?;
        self.inner
            .entries_appended
            .fetch_add(cached.len() as u64, Ordering::Relaxed);
        self.tail().appended(cached, &self.inner.options);
        Ok(())
    }

    /// Delete the entries from `log_id.index` on, in one durable transaction.
    fn truncate_from(&self, log_id: LogId) -> Result<(), StoreError> {
        let mut wal = self.wal();
        if let Some(state) = wal.as_mut() {
            self.checkpoint_locked(state)?;
        }
        let last_remaining = self.retry_write("truncating the log", |store, _| {
            store.ensure_room(0)?;
            let txn = store.begin_write(Durability::Immediate)?;
            let last_remaining = {
                let mut table = txn.open_table(LOG).map_err(|e| store.db_error(e))?;
                table
                    .retain_in(log_id.index.., |_, _| false)
                    .map_err(|e| store.db_error(e))?;
                match table.last().map_err(|e| store.db_error(e))? {
                    Some((index, bytes)) => {
                        Some(store.decode_entry(index.value(), bytes.value())?.log_id)
                    }
                    None => None,
                }
            };
            store.commit(txn, true)?;
            Ok(last_remaining)
        })?;
        let mut tail = self.tail();
        let last_log_id = last_remaining.or(tail.last_purged);
        tail.truncated(log_id.index, last_log_id);
        Ok(())
    }

    /// Delete the entries up to and including `log_id.index` and record `log_id` as the
    /// last purged, in one durable transaction.
    ///
    /// While the disk is too full for it, the purge is put off (openraft's core waits
    /// for it, and must not wait for space): the entries stay, nothing records them
    /// purged, and the next purge deletes them too.
    fn purge_upto(&self, log_id: LogId) -> Result<(), StoreError> {
        let mut wal = self.wal();
        let pending = wal.as_ref().map_or(0, |state| state.wal.used_bytes());
        if let Err(e) = self.ensure_room(pending.saturating_mul(2)) {
            tracing::warn!(file = %self.inner.path.display(), up_to = %log_id, "purge of the log put off until space returns: {e}");
            return Ok(());
        }
        if let Some(state) = wal.as_mut() {
            self.checkpoint_locked(state)?;
        }
        let bytes =
            record::encode(KEY_LAST_PURGED.as_bytes(), &log_id, Vec::new()).map_err(|source| {
                StoreError::Encode {
                    what: KEY_LAST_PURGED,
                    source,
                }
            })?;
        self.retry_write("purging the log", |store, _| {
            let txn = store.begin_write(Durability::Immediate)?;
            {
                let mut table = txn.open_table(LOG).map_err(|e| store.db_error(e))?;
                table
                    .retain_in(..=log_id.index, |_, _| false)
                    .map_err(|e| store.db_error(e))?;
                let mut meta = txn.open_table(META).map_err(|e| store.db_error(e))?;
                meta.insert(KEY_LAST_PURGED, bytes.as_slice())
                    .map_err(|e| store.db_error(e))?;
            }
            store.commit(txn, true)
        })?;
        self.tail().purged(log_id);
        Ok(())
    }

    /// Entries `[start, end)` that exist, from the cache when it covers `start`.
    fn read_entries(&self, start: u64, end: u64) -> Result<Vec<Ent>, StoreError> {
        let end = {
            let tail = self.tail();
            let end = end.min(tail.last_log_id.map_or(0, |id| id.index + 1));
            if start >= end {
                return Ok(Vec::new());
            }
            if let Some(first) = tail.first_cached_index()
                && start >= first
            {
                // The cache reaches the end of the log, so it holds all of [start, end).
                let from = usize::try_from(start - first).expect("cache index fits usize");
                let to = usize::try_from(end - first).expect("cache index fits usize");
                return Ok(tail
                    .cache
                    .range(from..to)
                    .map(|c| c.entry.clone())
                    .collect());
            }
            end
        };
        self.inner.disk_reads.fetch_add(1, Ordering::Relaxed);
        // Entries from the write-ahead file's first on are there, the ones before it in
        // redb (a checkpoint moves them under the same lock).
        let (from_wal, wal_first) = match self.wal().as_ref() {
            Some(state) => (state.wal.read_entries(start, end)?, state.wal.first_index()),
            None => (Vec::new(), None),
        };
        let db_end = wal_first.map_or(end, |first| first.min(end));
        let mut entries = Vec::new();
        if start < db_end {
            let txn = self
                .inner
                .db()?
                .begin_read()
                .map_err(|e| self.db_error(e))?;
            let table = txn.open_table(LOG).map_err(|e| self.db_error(e))?;
            for item in table.range(start..db_end).map_err(|e| self.db_error(e))? {
                let (index, bytes) = item.map_err(|e| self.db_error(e))?;
                entries.push(self.decode_entry(index.value(), bytes.value())?);
            }
        }
        for (index, bytes) in from_wal {
            entries.push(self.decode_entry(index, &bytes)?);
        }
        Ok(entries)
    }

    /// The stored bytes of entry `index`, unverified (tests and tools).
    ///
    /// # Errors
    /// redb failed.
    #[doc(hidden)]
    pub fn raw_entry_for_test(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.checkpoint()?;
        let txn = self
            .inner
            .db()?
            .begin_read()
            .map_err(|e| self.db_error(e))?;
        let table = txn.open_table(LOG).map_err(|e| self.db_error(e))?;
        Ok(table
            .get(index)
            .map_err(|e| self.db_error(e))?
            .map(|bytes| bytes.value().to_vec()))
    }

    /// Store `bytes` as entry `index` as they are (or remove it with `None`), in one
    /// durable transaction, bypassing the encoder and the cache (tests of damaged files
    /// only).
    ///
    /// # Errors
    /// redb failed.
    #[doc(hidden)]
    pub fn put_raw_entry_for_test(
        &self,
        index: u64,
        bytes: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        self.checkpoint()?;
        let txn = self.begin_write(Durability::Immediate)?;
        {
            let mut table = txn.open_table(LOG).map_err(|e| self.db_error(e))?;
            match bytes {
                Some(bytes) => table.insert(index, bytes).map(drop),
                None => table.remove(index).map(drop),
            }
            .map_err(|e| self.db_error(e))?;
        }
        self.commit(txn, !self.wal_in_use())
    }

    /// Store `bytes` as the meta record `key` as they are (or remove it with `None`), in
    /// one durable transaction (tests of damaged files only).
    ///
    /// # Errors
    /// redb failed.
    #[doc(hidden)]
    pub fn put_raw_record_for_test(
        &self,
        key: &str,
        bytes: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let txn = self.begin_write(Durability::Immediate)?;
        {
            let mut table = txn.open_table(META).map_err(|e| self.db_error(e))?;
            match bytes {
                Some(bytes) => table.insert(key, bytes).map(drop),
                None => table.remove(key).map(drop),
            }
            .map_err(|e| self.db_error(e))?;
        }
        self.commit(txn, !self.wal_in_use())
    }

    /// The stored bytes of meta record `key`, unverified (tests and tools).
    ///
    /// # Errors
    /// redb failed.
    #[doc(hidden)]
    pub fn raw_record_for_test(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self
            .inner
            .db()?
            .begin_read()
            .map_err(|e| self.db_error(e))?;
        let table = txn.open_table(META).map_err(|e| self.db_error(e))?;
        Ok(table
            .get(key)
            .map_err(|e| self.db_error(e))?
            .map(|bytes| bytes.value().to_vec()))
    }

    /// Flip every bit of the last byte of entry `index` on disk, in one durable
    /// transaction: the entry then fails its checksum (tests of damaged files only; the
    /// tail cache still holds the good copy).
    ///
    /// # Errors
    /// redb failed, or there is no entry `index`.
    #[doc(hidden)]
    pub fn corrupt_entry_for_test(&self, index: u64) -> Result<(), StoreError> {
        let mut bytes = self
            .raw_entry_for_test(index)?
            .ok_or_else(|| StoreError::CorruptLog {
                path: self.inner.path.clone(),
                index,
                reason: "no such entry to corrupt".to_owned(),
            })?;
        *bytes.last_mut().expect("records are never empty") ^= 0xff;
        self.put_raw_entry_for_test(index, Some(&bytes))
    }

    /// Flip every bit of the last byte of meta record `key` (`vote`, `committed`,
    /// `last_purged_log_id`, `format`), like [`LogStore::corrupt_entry_for_test`].
    ///
    /// # Errors
    /// redb failed, or there is no such record.
    #[doc(hidden)]
    pub fn corrupt_record_for_test(&self, key: &str) -> Result<(), StoreError> {
        let mut bytes =
            self.raw_record_for_test(key)?
                .ok_or_else(|| StoreError::CorruptRecord {
                    path: self.inner.path.clone(),
                    record: key.to_owned(),
                    reason: "no such record to corrupt".to_owned(),
                })?;
        *bytes.last_mut().expect("records are never empty") ^= 0xff;
        self.put_raw_record_for_test(key, Some(&bytes))
    }
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// Run `work` on a possibly damaged file, turning a panic inside redb into a refusal that
/// names the file.
pub(crate) fn guarded<T>(
    path: &Path,
    doing: &str,
    work: impl FnOnce() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|panic| {
        let message = panic_message(&*panic);
        Err(StoreError::OpenDatabase {
            path: path.to_owned(),
            reason: format!("the file is damaged: redb panicked while {doing} it: {message}"),
        })
    })
}

/// Open (creating if needed) the log database at `file` for writing and verify all of it,
/// naming it `name` in errors. The scan's verdict is left to the caller. `check-data`
/// runs this on a copy, so it judges a file exactly as start-up does. `snapshot_index` is
/// the last index the newest snapshot covers.
pub(crate) fn open_and_scan(
    disk: &Disk,
    file: &Path,
    name: &Path,
    snapshot_index: Option<u64>,
    page_cache_bytes: usize,
) -> Result<(Database, Scan), StoreError> {
    refuse_empty_file(disk, file).map_err(|e| rename(e, name))?;
    let db = guarded(name, "opening", || {
        let mut builder = redb::Builder::new();
        builder.set_cache_size(page_cache_bytes);
        disk.create_database(file, &builder)
            .map_err(|e| StoreError::OpenDatabase {
                path: name.to_owned(),
                reason: e.to_string(),
            })
    })?;
    // Not dropped while a panic unwinds: closing a damaged file can panic again.
    let db = ManuallyDrop::new(db);
    let checked = guarded(name, "verifying", || {
        prepare(&db).map_err(|e| StoreError::Database {
            path: name.to_owned(),
            source: e,
        })?;
        Scan::run(&*db, name, snapshot_index)
    });
    let db = ManuallyDrop::into_inner(db);
    match checked {
        Ok(scan) => Ok((db, scan)),
        Err(e) => {
            let _ = close_quietly(db);
            Err(e)
        }
    }
}

/// Write `committed` (the committed log id no transaction carried yet), then close `db`;
/// a failure is reported, not raised (see `Drop for Inner`).
fn save_committed_and_close(db: Database, committed: &mut Option<LogId>) -> Result<(), String> {
    if let Some(committed) = committed.take() {
        let saved = catch_unwind(AssertUnwindSafe(|| -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            put_committed(&txn, &committed)?;
            txn.commit()?;
            Ok(())
        }));
        match saved {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("saving the committed log id at close failed: {e}"),
            Err(panic) => tracing::warn!(
                "saving the committed log id at close failed: {}",
                panic_message(&*panic)
            ),
        }
    }
    close_quietly(db)
}

/// Put the committed log id's record into `txn`'s meta table.
fn put_committed(txn: &redb::WriteTransaction, committed: &LogId) -> Result<(), redb::Error> {
    let bytes = record::encode(KEY_COMMITTED.as_bytes(), committed, Vec::new())
        .map_err(|e| redb::Error::Corrupted(format!("encoding the committed log id: {e}")))?;
    let mut meta = txn.open_table(META)?;
    meta.insert(KEY_COMMITTED, bytes.as_slice())?;
    Ok(())
}

/// Move the write-ahead file's entries into redb (the database `db` at `path`) in one
/// durable transaction with the newest committed log id (the file's, or `unsaved` when
/// newer) and the file's next generation, under which it then starts again.
fn move_wal_into(
    db: &Database,
    path: &Path,
    state: &mut WalState,
    unsaved: Option<LogId>,
) -> Result<(), StoreError> {
    let db_error = |e: redb::Error| StoreError::Database {
        path: path.to_owned(),
        source: e,
    };
    let next = state.wal.generation().next();
    let mut txn = db.begin_write().map_err(|e| db_error(e.into()))?;
    txn.set_durability(Durability::Immediate)
        .map_err(|e| db_error(e.into()))?;
    {
        let mut table = txn.open_table(LOG).map_err(|e| db_error(e.into()))?;
        state.wal.for_each_entry(0, u64::MAX, |index, bytes| {
            table.insert(index, bytes).map_err(|e| db_error(e.into()))?;
            Ok(())
        })?;
    }
    if let Some(committed) = state.committed.max(unsaved) {
        put_committed(&txn, &committed).map_err(db_error)?;
    }
    put_meta(&txn, KEY_WAL_GENERATION, &next).map_err(db_error)?;
    txn.commit().map_err(|e| db_error(e.into()))?;
    state.wal.start_generation(next);
    state.committed = None;
    Ok(())
}

/// Put the meta record `key` into `txn`.
fn put_meta<T: Serialize>(
    txn: &redb::WriteTransaction,
    key: &'static str,
    value: &T,
) -> Result<(), redb::Error> {
    let bytes = record::encode(key.as_bytes(), value, Vec::new())
        .map_err(|e| redb::Error::Corrupted(format!("encoding {key}: {e}")))?;
    let mut meta = txn.open_table(META)?;
    meta.insert(key, bytes.as_slice())?;
    Ok(())
}

fn encode_committed(committed: &LogId) -> Result<Vec<u8>, StoreError> {
    record::encode(KEY_COMMITTED.as_bytes(), committed, Vec::new()).map_err(|source| {
        StoreError::Encode {
            what: KEY_COMMITTED,
            source,
        }
    })
}

/// What start-up does with the write-ahead file's records (shared with `check-data`).
#[derive(Debug)]
pub(crate) struct WalPlan {
    /// Entries after the redb log's end, verified and contiguous with it: decoded, and
    /// as stored.
    pub(crate) entries: Vec<(Ent, Vec<u8>)>,
    /// The newest committed log id in the file.
    pub(crate) committed: Option<LogId>,
    /// Where the file's records end, and why.
    pub(crate) end: RecordsEnd,
}

/// Check the write-ahead file's `records` (of the current generation, ending at `end`)
/// against the redb log, which ends at `log_end` (its last entry, or the last purged
/// id) after start-up's own verdict, holds `db_committed`, and is covered by a snapshot
/// up to `snapshot_index`.
///
/// # Errors
/// A record verified but its entry or committed id does not decode; the entries have a
/// gap or do not continue the log (the database and the file disagree); the records end
/// in damage in the middle of the file; the newest committed id (the database's or the
/// file's) lies beyond everything the two hold. Start-up refuses.
pub(crate) fn plan_wal(
    records: &[WalRecord],
    end: &RecordsEnd,
    path: &Path,
    log_end: Option<LogId>,
    db_committed: Option<LogId>,
    snapshot_index: Option<u64>,
) -> Result<WalPlan, StoreError> {
    let refuse = |index: u64, what: String| StoreError::CorruptLog {
        path: path.to_owned(),
        index,
        reason: format!("{what}; refusing to start"),
    };
    let mut plan = WalPlan {
        entries: Vec::new(),
        committed: None,
        end: end.clone(),
    };
    let mut next = log_end.map(|id| id.index + 1);
    for record in records {
        match record {
            WalRecord::Committed(bytes) => {
                let committed: LogId =
                    record::decode(KEY_COMMITTED.as_bytes(), bytes).map_err(|e| {
                        StoreError::CorruptRecord {
                            path: path.to_owned(),
                            record: KEY_COMMITTED.to_owned(),
                            reason: format!("in the write-ahead file: {e}; refusing to start"),
                        }
                    })?;
                plan.committed = plan.committed.max(Some(committed));
            }
            WalRecord::Entry {
                index,
                offset,
                bytes,
            } => {
                let entry = record::decode_entry(*index, bytes).map_err(|e| {
                    refuse(
                        *index,
                        format!("the record at byte {offset} does not verify: {e}"),
                    )
                })?;
                if let Some(next) = next
                    && *index != next
                {
                    return Err(refuse(
                        *index,
                        format!(
                            "the record at byte {offset} holds entry {index}, but the log \
                             continues at {next}: the file and the log database disagree"
                        ),
                    ));
                }
                next = Some(index + 1);
                plan.entries.push((entry, bytes.clone()));
            }
        }
    }
    if let Some((offset, append)) = end.damage_in_the_middle {
        return Err(refuse(
            next.unwrap_or(0),
            format!(
                "the write-ahead file's records stop at byte {} ({}), but a record of a \
                 later append (number {append}) verifies at byte {offset}: the bad record \
                 was synced before it, so this is damage in the middle of the file, not a \
                 torn write",
                end.offset,
                end.reason.as_deref().unwrap_or("the end of the file"),
            ),
        ));
    }
    let last_index = plan
        .entries
        .last()
        .map(|(entry, _)| entry.log_id.index)
        .or(log_end.map(|id| id.index));
    refuse_lost_committed(
        path,
        db_committed.max(plan.committed),
        last_index,
        snapshot_index,
        end,
    )?;
    Ok(plan)
}

/// Refuse start-up when the newest committed log id lies beyond both the log (ending at
/// `last_index` once the write-ahead file's entries are counted) and the newest
/// snapshot: committed entries were lost (from the write-ahead file, whose records end
/// at `end`).
fn refuse_lost_committed(
    path: &Path,
    committed: Option<LogId>,
    last_index: Option<u64>,
    snapshot_index: Option<u64>,
    end: &RecordsEnd,
) -> Result<(), StoreError> {
    let Some(committed) = committed else {
        return Ok(());
    };
    let covered = last_index.max(snapshot_index);
    if covered.is_some_and(|covered| committed.index <= covered) {
        return Ok(());
    }
    Err(StoreError::CorruptLog {
        path: path.to_owned(),
        index: covered.map_or(0, |c| c + 1),
        reason: format!(
            "the committed log id {committed} is beyond the end of the log ({}) and of the \
             newest snapshot ({}): committed entries are lost (the write-ahead file's \
             records end at byte {}: {}); refusing to start (restore this node from a \
             healthy replica)",
            last_index.map_or_else(|| "empty".to_owned(), |i| format!("index {i}")),
            snapshot_index.map_or_else(|| "none".to_owned(), |i| format!("index {i}")),
            end.offset,
            end.reason.as_deref().unwrap_or("the end of the file"),
        ),
    })
}

/// The refusal to start when the log database at `db_path` records a `generation` of the
/// write-ahead file at `wal_path` and the file is gone. The file is created (and its
/// directory synced) before a generation is first recorded, so it was in use: entries
/// acknowledged but not yet moved into the database may have been in it.
pub(crate) fn missing_wal(wal_path: &Path, db_path: &Path, generation: Generation) -> StoreError {
    StoreError::OpenDatabase {
        path: wal_path.to_owned(),
        reason: format!(
            "the write-ahead file is missing, but the log database {} records its \
             generation {}: it was in use, and entries acknowledged but not yet moved into \
             the database may have been in it. The node refuses to start (restore it from \
             a healthy replica)",
            db_path.display(),
            generation.number
        ),
    }
}

/// Close `db`, catching a panic inside redb (closing writes to a possibly damaged file).
pub(crate) fn close_quietly(db: Database) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(move || drop(db))).map_err(|panic| panic_message(&*panic))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unknown panic".to_owned())
}

fn rename(error: StoreError, name: &Path) -> StoreError {
    match error {
        StoreError::OpenDatabase { reason, .. } => StoreError::OpenDatabase {
            path: name.to_owned(),
            reason,
        },
        other => other,
    }
}

/// redb turns an existing empty file into a new database, which would make a node whose
/// log file was truncated to nothing forget its vote: refuse instead.
pub(crate) fn refuse_empty_file(disk: &Disk, path: &Path) -> Result<(), StoreError> {
    if !disk.exists(path) {
        return Ok(());
    }
    match disk
        .open(path)
        .and_then(|file| file.len().map_err(StoreError::io(path)))
    {
        Ok(0) => Err(StoreError::OpenDatabase {
            path: path.to_owned(),
            reason: "the file is empty: it was truncated, or its creation was \
                         interrupted. A node that may have voted must not start with a new \
                         log; delete the file only if this node never joined a cluster"
                .to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Create a new, empty log database at `path` in one step a power cut cannot split: made
/// under a temporary name (its tables and format marker committed durably), then renamed
/// and the directory synced. Otherwise a cut during a node's very first start could leave
/// a file redb cannot open, or an empty one, and the node would refuse to start.
fn create_database(
    disk: &Disk,
    dir: &Path,
    path: &Path,
    page_cache_bytes: usize,
) -> Result<(), StoreError> {
    let tmp = path.with_extension("redb.tmp");
    if disk.exists(&tmp) {
        disk.remove_file(&tmp)?;
    }
    let mut builder = redb::Builder::new();
    builder.set_cache_size(page_cache_bytes);
    let db = disk
        .create_database(&tmp, &builder)
        .map_err(|e| StoreError::OpenDatabase {
            path: tmp.clone(),
            reason: e.to_string(),
        })?;
    let prepared = prepare(&db).map_err(|source| StoreError::Database {
        path: tmp.clone(),
        source,
    });
    let closed = close_quietly(db).map_err(|reason| StoreError::OpenDatabase {
        path: tmp.clone(),
        reason,
    });
    prepared.and(closed)?;
    disk.rename(&tmp, path)?;
    disk.sync_dir(dir)
}

/// Create the tables of a new file, and its format marker. An existing file is not
/// written to before it is verified.
fn prepare(db: &Database) -> Result<(), redb::Error> {
    let fresh = |log_empty: bool, meta_empty: bool| log_empty && meta_empty;
    let needs_write = {
        let txn = db.begin_read()?;
        match (txn.open_table(LOG), txn.open_table(META)) {
            (Ok(log), Ok(meta)) => fresh(log.is_empty()?, meta.is_empty()?),
            (Err(TableError::TableDoesNotExist(_)), _)
            | (_, Err(TableError::TableDoesNotExist(_))) => true,
            (Err(e), _) | (_, Err(e)) => return Err(e.into()),
        }
    };
    if !needs_write {
        return Ok(());
    }
    let txn = db.begin_write()?;
    {
        let log = txn.open_table(LOG)?;
        let mut meta = txn.open_table(META)?;
        if fresh(log.is_empty()?, meta.is_empty()?) {
            let marker = record::encode(KEY_FORMAT.as_bytes(), &LOG_FORMAT, Vec::new())
                .map_err(|e| redb::Error::Corrupted(format!("encoding the format marker: {e}")))?;
            meta.insert(KEY_FORMAT, marker.as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// How many problems a [`Scan`] lists (it counts them all).
pub(crate) const LISTED_PROBLEMS_MAX: usize = 100;

/// What kind of trouble an entry is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryTrouble {
    /// Fails verification.
    Corrupt,
    /// Absent between `last_purged + 1` and the last index.
    Missing,
    /// Present at or below the last purged index.
    Stale,
}

/// One entry that failed verification, or a run of missing ones.
#[derive(Clone, Debug)]
pub(crate) struct EntryProblem {
    pub(crate) index: u64,
    pub(crate) trouble: EntryTrouble,
    pub(crate) reason: String,
}

/// What reading and verifying a whole log database found. Shared by start-up and
/// `check-data`, so both judge a file the same way.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub(crate) format: Option<u32>,
    pub(crate) vote: Option<Vote<NodeId>>,
    pub(crate) committed: Option<LogId>,
    pub(crate) last_purged: Option<LogId>,
    /// The write-ahead file's current generation (none before the file was first used).
    pub(crate) wal_generation: Option<Generation>,
    /// Meta records that failed verification: `(key, reason)`.
    pub(crate) record_problems: Vec<(String, String)>,
    /// Entries read (good or bad).
    pub(crate) entries_checked: u64,
    pub(crate) first_index: Option<u64>,
    pub(crate) last_index: Option<u64>,
    /// The last entry's log id, when it verified.
    pub(crate) last_log_id: Option<LogId>,
    /// The first [`LISTED_PROBLEMS_MAX`] entry problems, in index order.
    pub(crate) entry_problems: Vec<EntryProblem>,
    pub(crate) entry_problem_count: u64,
    /// The first bad (corrupt, missing or stale) index.
    pub(crate) first_bad: Option<u64>,
    /// The last verified entry before `first_bad`.
    pub(crate) last_good_before_bad: Option<LogId>,
    /// The first verified entry after `first_bad`.
    pub(crate) good_after_bad: Option<u64>,
}

impl Scan {
    /// Read and verify every record of `db` (the file at `path`); `snapshot_index` is the
    /// last index the newest snapshot covers.
    pub(crate) fn run(
        db: &impl ReadableDatabase,
        path: &Path,
        snapshot_index: Option<u64>,
    ) -> Result<Scan, StoreError> {
        let db_error = |e: redb::Error| StoreError::Database {
            path: path.to_owned(),
            source: e,
        };
        let txn = db.begin_read().map_err(|e| db_error(e.into()))?;
        let mut scan = Scan::default();
        {
            let meta = txn.open_table(META).map_err(|e| db_error(e.into()))?;
            let meta_empty = meta.is_empty().map_err(|e| db_error(e.into()))?;
            let read = |key: &'static str| -> Result<Option<Vec<u8>>, StoreError> {
                Ok(meta
                    .get(key)
                    .map_err(|e| db_error(e.into()))?
                    .map(|bytes| bytes.value().to_vec()))
            };
            let format = read(KEY_FORMAT)?;
            let vote = read(KEY_VOTE)?;
            let committed = read(KEY_COMMITTED)?;
            let last_purged = read(KEY_LAST_PURGED)?;
            let wal_generation = read(KEY_WAL_GENERATION)?;
            scan.format = scan.meta(KEY_FORMAT, format.as_deref());
            scan.vote = scan.meta(KEY_VOTE, vote.as_deref());
            scan.committed = scan.meta(KEY_COMMITTED, committed.as_deref());
            scan.last_purged = scan.meta(KEY_LAST_PURGED, last_purged.as_deref());
            scan.wal_generation = scan.meta(KEY_WAL_GENERATION, wal_generation.as_deref());
            match (scan.format, format.is_some()) {
                (Some(f), _) if LOG_FORMATS_READ.contains(&f) => {}
                (None, true) => {}
                (Some(other), _) => scan.record_problems.insert(
                    0,
                    (
                        KEY_FORMAT.to_owned(),
                        format!("file format {other} (this build reads {LOG_FORMAT})"),
                    ),
                ),
                (None, false) if !meta_empty => scan.record_problems.insert(
                    0,
                    (
                        KEY_FORMAT.to_owned(),
                        "missing: the file was written by a build without checksummed records"
                            .to_owned(),
                    ),
                ),
                (None, false) => {}
            }
        }
        let log = txn.open_table(LOG).map_err(|e| db_error(e.into()))?;
        if scan.format.is_none()
            && scan.record_problems.is_empty()
            && !log.is_empty().map_err(|e| db_error(e.into()))?
        {
            scan.record_problems.push((
                KEY_FORMAT.to_owned(),
                "missing: the file was written by a build without checksummed records".to_owned(),
            ));
        }
        let purged_index = scan.last_purged.map(|id| id.index);
        let mut expected = purged_index.map(|p| p + 1);
        for item in log.iter().map_err(|e| db_error(e.into()))? {
            let (key, value) = item.map_err(|e| db_error(e.into()))?;
            let index = key.value();
            scan.entries_checked += 1;
            scan.first_index.get_or_insert(index);
            scan.last_index = Some(index);
            if purged_index.is_some_and(|p| index <= p) {
                scan.problem(
                    index,
                    EntryTrouble::Stale,
                    format!(
                        "present although the log was purged up to index {}",
                        purged_index.unwrap_or_default()
                    ),
                );
            } else if let Some(expected) = expected
                && index > expected
            {
                let reason = if index == expected + 1 {
                    format!("missing (the next entry present is {index})")
                } else {
                    format!(
                        "missing, with the {} entries up to {} (the next present is {index})",
                        index - expected,
                        index - 1
                    )
                };
                scan.problem(expected, EntryTrouble::Missing, reason);
            }
            expected = Some(expected.map_or(index + 1, |e| e.max(index + 1)));
            match record::decode_entry(index, value.value()) {
                Ok(entry) => {
                    if scan.first_bad.is_some() {
                        scan.good_after_bad.get_or_insert(index);
                    } else {
                        scan.last_good_before_bad = Some(entry.log_id);
                    }
                    scan.last_log_id = Some(entry.log_id);
                }
                Err(e) => {
                    scan.problem(index, EntryTrouble::Corrupt, e.to_string());
                    scan.last_log_id = None;
                }
            }
        }
        // A node's vote is never older than an entry it holds (it saves the vote of a
        // term before it appends that term's entries): a vote missing or older than the
        // log is a damaged file (a B-tree that no longer finds the record, say), and the
        // node must not start having forgotten it. Term 0 is the initial membership entry,
        // which may precede the first vote.
        let newest_term = [scan.last_good_before_bad, scan.committed, scan.last_purged]
            .into_iter()
            .flatten()
            .map(|id| id.leader_id.term)
            .max()
            .unwrap_or(0);
        let vote_term = scan.vote.map(|vote| vote.leader_id.term);
        if newest_term > 0
            && vote_term.is_none_or(|term| term < newest_term)
            && !scan.record_problems.iter().any(|(key, _)| key == KEY_VOTE)
        {
            scan.record_problems.push((
                KEY_VOTE.to_owned(),
                match vote_term {
                    None => format!("missing, while the log holds entries of term {newest_term}"),
                    Some(term) => format!(
                        "of term {term}, older than the log's entries of term {newest_term}"
                    ),
                },
            ));
        }
        // The committed log id is never beyond the log's end, or the snapshot's when one
        // was installed past it. Beyond both, committed entries are gone (e.g. a damaged
        // B-tree that redb reads as shorter).
        if let Some(committed) = scan.committed {
            let end = scan.last_index.max(purged_index).max(snapshot_index);
            if end.is_none_or(|end| committed.index > end) {
                let first_missing = end.map_or(0, |end| end + 1);
                scan.problem(
                    first_missing,
                    EntryTrouble::Missing,
                    format!(
                        "missing: the committed log id {committed} is beyond the end of the \
                         log ({}) and of the newest snapshot ({}): committed entries are lost",
                        scan.last_index
                            .max(purged_index)
                            .map_or_else(|| "empty".to_owned(), |i| format!("index {i}")),
                        snapshot_index.map_or_else(|| "none".to_owned(), |i| format!("index {i}"))
                    ),
                );
            }
        }
        Ok(scan)
    }

    /// Verify one meta record, noting a problem.
    fn meta<T: DeserializeOwned>(&mut self, key: &'static str, bytes: Option<&[u8]>) -> Option<T> {
        let bytes = bytes?;
        match record::decode::<T>(key.as_bytes(), bytes) {
            Ok(value) => Some(value),
            Err(e) => {
                self.record_problems.push((key.to_owned(), e.to_string()));
                None
            }
        }
    }

    fn problem(&mut self, index: u64, trouble: EntryTrouble, reason: String) {
        self.entry_problem_count += 1;
        if self.entry_problems.len() < LISTED_PROBLEMS_MAX {
            self.entry_problems.push(EntryProblem {
                index,
                trouble,
                reason,
            });
        }
        if self.first_bad.is_none() {
            self.first_bad = Some(index);
        } else if trouble != EntryTrouble::Corrupt {
            // A missing or stale entry is a gap in what follows the first bad one: the
            // damage is not confined to the tail.
            self.good_after_bad.get_or_insert(index);
        }
    }

    /// What start-up does about what the scan found: `Ok(None)` to start as is,
    /// `Ok(Some(index))` to delete the damaged uncommitted tail from `index` on first, or
    /// the error that refuses start-up.
    pub(crate) fn verdict(&self, path: &Path) -> Result<Option<u64>, StoreError> {
        if let Some((record, reason)) = self.record_problems.first() {
            let why = match record.as_str() {
                KEY_VOTE => "a node must never forget its vote",
                KEY_COMMITTED => "without it the node cannot tell which entries it may drop",
                KEY_LAST_PURGED => "without it the node cannot tell where its log begins",
                KEY_WAL_GENERATION => {
                    "without it the node cannot read the entries in the write-ahead file"
                }
                _ => "the file cannot be read safely",
            };
            return Err(StoreError::CorruptRecord {
                path: path.to_owned(),
                record: record.clone(),
                reason: format!("{reason}; refusing to start ({why})"),
            });
        }
        let Some(first) = self.entry_problems.first() else {
            return Ok(None);
        };
        let refuse = |reason: String| {
            Err(StoreError::CorruptLog {
                path: path.to_owned(),
                index: first.index,
                reason,
            })
        };
        match first.trouble {
            EntryTrouble::Missing | EntryTrouble::Stale => {
                return refuse(format!("{}; refusing to start", first.reason));
            }
            EntryTrouble::Corrupt => {}
        }
        if let Some(good) = self.good_after_bad {
            return refuse(format!(
                "{}; the log goes on after it (index {good}), so this is damage in the \
                 middle of the log, not a torn tail: refusing to start",
                first.reason
            ));
        }
        if let Some(committed) = self.committed
            && committed.index >= first.index
        {
            return refuse(format!(
                "{}; it is at or below the committed log id {committed}, so it may have \
                 been acknowledged: refusing to start (restore this node from a healthy \
                 replica)",
                first.reason
            ));
        }
        Ok(Some(first.index))
    }

    /// What [`Scan::verdict`] means, in words, for reports.
    pub(crate) fn verdict_text(&self, path: &Path) -> String {
        match self.verdict(path) {
            Ok(None) => "starts normally".to_owned(),
            Ok(Some(index)) => format!(
                "deletes the damaged uncommitted tail (entries {index}..={}) with a warning, \
                 then starts",
                self.last_index.unwrap_or(index)
            ),
            Err(e) => format!("refuses to start: {e}"),
        }
    }
}

/// `[start, end)` of a range of indexes.
fn index_bounds(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl LogStore {
    /// Run a blocking write (redb transaction and fsync) on tokio's blocking pool, so the
    /// runtime's few workers keep serving the network while the disk flushes.
    async fn off_the_runtime(
        &self,
        write: impl FnOnce(&LogStore) -> Result<(), StoreError> + Send + 'static,
    ) -> Result<(), StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || write(&store))
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Io {
                    path: self.inner.path.clone(),
                    source: std::io::Error::other(format!("the log write task failed: {e}")),
                })
            })
    }
}

fn read_logs_error(e: StoreError) -> StorageError<NodeId> {
    StorageIOError::read_logs(&e).into()
}

fn write_logs_error(e: StoreError) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Ent>, StorageError<NodeId>> {
        let (start, end) = index_bounds(&range);
        self.read_entries(start, end).map_err(read_logs_error)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let tail = self.tail();
        Ok(LogState {
            last_purged_log_id: tail.last_purged,
            last_log_id: tail.last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        // On the blocking pool: on a full disk it waits there for space.
        let vote = *vote;
        self.off_the_runtime(move |store| {
            store.write_meta(KEY_VOTE, Some(&vote), Durability::Immediate)
        })
        .await
        .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.read_meta(KEY_VOTE)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId>,
    ) -> Result<(), StorageError<NodeId>> {
        // No transaction of its own (see the module docs): the next one carries it.
        match committed {
            Some(committed) => {
                *self
                    .inner
                    .unsaved_committed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(committed);
                Ok(())
            }
            None => {
                // Move the write-ahead file's ids into redb, then forget any newer id, or
                // the transaction would write it back. On the blocking pool: on a full
                // disk it waits there for space.
                self.off_the_runtime(|store| {
                    store.checkpoint()?;
                    *store
                        .inner
                        .unsaved_committed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = None;
                    store.write_meta(KEY_COMMITTED, None::<&LogId>, Durability::None)
                })
                .await
                .map_err(write_logs_error)
            }
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        let unsaved = *self
            .inner
            .unsaved_committed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let in_wal = self.wal().as_ref().and_then(|state| state.committed);
        match unsaved.or(in_wal) {
            Some(committed) => Ok(Some(committed)),
            None => self.read_meta(KEY_COMMITTED).map_err(read_logs_error),
        }
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Ent> + Send,
        I::IntoIter: Send,
    {
        // openraft 0.9 awaits this callback before it does anything else with the log
        // (`RaftCore::append_to_log`), so the writes stay in order and no reader is
        // pointed at these entries before they are in the tail cache (which the write
        // fills before calling back).
        let entries: Vec<Ent> = entries.into_iter().collect();
        let last = entries.last().map_or(0, |entry| entry.log_id.index);
        commit_trace::mark(Point::AppendCalled, last);
        let max_inline = self.inner.options.inline_append_max_bytes;
        let entries = if max_inline > 0 {
            // One small write-ahead write and its sync, here: a commit's path then has
            // no hand-over to the blocking pool and back (docs/performance.md).
            match self.append_with_one_write(entries, max_inline, last) {
                Ok(Some(entries)) => entries,
                Ok(None) => {
                    commit_trace::mark(Point::AppendFlushed, last);
                    callback.log_io_completed(Ok(()));
                    return Ok(());
                }
                Err(e) => {
                    tracing::error!("appending to the Raft log failed: {e}");
                    callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                    return Ok(());
                }
            }
        } else {
            entries
        };
        // Anything bigger runs on tokio's blocking pool so the runtime's worker keeps
        // serving the network while a checkpoint or a large write goes to the disk.
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            commit_trace::mark(Point::AppendStarted, last);
            let written = store
                .append_entries(entries)
                .map_err(|e| std::io::Error::other(e.to_string()));
            if let Err(e) = &written {
                tracing::error!("appending to the Raft log failed: {e}");
            }
            // Let go of the database before reporting: whoever waits for the flush may
            // drop the store and reopen the file at once.
            drop(store);
            commit_trace::mark(Point::AppendFlushed, last);
            callback.log_io_completed(written);
        });
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        self.off_the_runtime(move |store| store.truncate_from(log_id))
            .await
            .map_err(write_logs_error)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        self.off_the_runtime(move |store| store.purge_upto(log_id))
            .await
            .map_err(write_logs_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::CommandBatch;
    use openraft::{CommittedLeaderId, EntryPayload};
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    use std::time::{Duration, Instant};

    /// Lets a write reach redb on a full disk (the check before it would refuse it
    /// first), so that redb itself meets the full disk.
    pub(super) static SKIP_ROOM_CHECK: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);

    fn entry(index: u64) -> Ent {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(CommandBatch(vec![fencelock_core::Command::SetLimits(
                fencelock_core::Limits::default(),
            )])),
        }
    }

    /// redb fails every call after the full disk refused one of its writes: the store
    /// waits with the alarm up, reopens the database, and writes it again once space is
    /// back, instead of handing openraft an error that would stop it.
    #[test]
    fn a_database_write_the_full_disk_refused_goes_through_after_a_reopen() {
        if !std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
            eprintln!("SKIPPED: this test mounts a tmpfs, which needs root (CI runs as root)");
            return;
        }
        let mount = tempfile::tempdir().expect("mount point");
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m", "fencelock-log-test"])
            .arg(mount.path())
            .status()
            .expect("run mount");
        assert!(mounted.success());
        struct Unmount<'a>(&'a Path);
        impl Drop for Unmount<'_> {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(self.0)
                    .status();
            }
        }
        let _unmount = Unmount(mount.path());
        let dir = mount.path().join("data");
        let options = LogStoreOptions {
            wal_bytes: 0,
            ..LogStoreOptions::default()
        };
        let store = LogStore::open(&dir, options.clone()).expect("open");
        store
            .write_meta(KEY_VOTE, Some(&Vote::new(1, 1)), Durability::Immediate)
            .expect("vote");
        store
            .append_to_database((1..=10).map(entry))
            .expect("append");

        SKIP_ROOM_CHECK.store(true, Ordering::Relaxed);
        let filler = mount.path().join("filler");
        let mut file = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![1u8; 4096];
        while file.write(&chunk).is_ok_and(|n| n > 0) {}
        drop(file);

        let writer = store.clone();
        let append = std::thread::spawn(move || writer.append_to_database((11..=3000).map(entry)));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !store.disk_space().alarm() {
            assert!(
                !append.is_finished(),
                "the append did not meet the full disk: {:?}",
                append.join()
            );
            assert!(
                Instant::now() < deadline,
                "the append never waited for space"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200));
        assert!(!append.is_finished(), "it waits while the disk is full");
        std::fs::remove_file(&filler).expect("free the disk");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !append.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the append never went through after space returned"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        append
            .join()
            .expect("no panic")
            .expect("the append goes through");
        SKIP_ROOM_CHECK.store(false, Ordering::Relaxed);
        assert!(!store.disk_space().alarm());
        assert_eq!(
            store.disk_space().status().writes_refused_for_space_total,
            1
        );
        assert_eq!(store.read_entries(1, 3001).expect("read").len(), 3000);
        drop(store);

        let store = LogStore::open(&dir, options).expect("reopen");
        assert_eq!(store.tail().last_log_id.map(|id| id.index), Some(3000));
        assert_eq!(store.read_entries(1, 3001).expect("read").len(), 3000);
    }
}
