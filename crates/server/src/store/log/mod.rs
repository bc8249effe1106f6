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
//! - **Closing**: [`LogStore::close`] (the node's shutdown calls it once Raft has stopped)
//!   moves the write-ahead file into redb and writes the unsaved committed log id, so a
//!   copy of a cleanly stopped node's data dir is whole in redb. Dropping the store only
//!   releases its files: a store dropped without `close` loses nothing acknowledged (the
//!   write-ahead file is recovered at the next open), only that newest committed id.
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
//!
//! # Layout
//!
//! `tail` (the cache of the newest entries, and reads), `append` (the append paths),
//! `recovery` (opening, the start-up scan, and the write-ahead file's recovery),
//! `raft_impl` (openraft's traits), `test_support` (raw access to the stored records and
//! the counters tests read,
//! `test-support` feature only); this file: the store, its options, checkpoints,
//! truncate, purge, and the retry of writes the full disk refused.

use super::StoreError;
use super::disk::Disk;
use super::record;
use super::wal::{self, Generation, RecordsEnd, Wal, WalBatch, WalRecord};
use crate::commit_trace::{CommitTrace, Point};
use crate::limits::{
    DEFAULT_INLINE_APPEND_MAX_BYTES, DEFAULT_LOG_CACHE_BYTES, DEFAULT_LOG_CACHE_ENTRIES,
    DEFAULT_LOG_PAGE_CACHE_BYTES, DEFAULT_WAL_BYTES, LISTED_PROBLEMS_MAX, LOG_ROOM_MARGIN_BYTES,
};
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

mod append;
mod raft_impl;
mod recovery;
mod tail;
#[cfg(feature = "test-support")]
mod test_support;

pub(crate) use recovery::{EntryTrouble, Scan, guarded, missing_wal, open_and_scan, plan_wal};
use tail::{CachedEntry, Tail};

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
    /// Where the append paths mark their points (off by default).
    pub commit_trace: CommitTrace,
}

impl Default for LogStoreOptions {
    fn default() -> Self {
        LogStoreOptions {
            cache_entries_max: DEFAULT_LOG_CACHE_ENTRIES,
            cache_bytes_max: DEFAULT_LOG_CACHE_BYTES,
            page_cache_bytes: DEFAULT_LOG_PAGE_CACHE_BYTES,
            wal_bytes: DEFAULT_WAL_BYTES,
            inline_append_max_bytes: DEFAULT_INLINE_APPEND_MAX_BYTES,
            commit_trace: CommitTrace::off(),
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
/// and may be opened again (an in-process restart waits for this). It holds a handle of
/// its own until [`close_store`](Self::close_store), so the store can still be closed
/// cleanly once Raft has dropped its handles.
#[derive(Debug)]
pub struct LogStoreCloseWatch {
    closed: Arc<std::sync::atomic::AtomicBool>,
    store: Mutex<Option<LogStore>>,
}

impl LogStoreCloseWatch {
    /// True once the store and all its handles (this watch's too) are dropped and the
    /// database file is closed (set at the end of the close, not when the last handle
    /// goes away).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// [`LogStore::close`] on the blocking pool, then let go of the watch's handle; a
    /// failure is logged (nothing acknowledged depends on it). Call it once Raft has
    /// stopped.
    pub async fn close_store(&self) {
        let Some(store) = self.store.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let closed = tokio::task::spawn_blocking(move || store.close()).await;
        match closed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("closing the Raft log cleanly failed: {e}"),
            Err(e) => tracing::warn!("closing the Raft log cleanly failed: {e}"),
        }
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
    /// A watch that tells when this store's database is closed, and closes it.
    pub fn close_watch(&self) -> LogStoreCloseWatch {
        LogStoreCloseWatch {
            closed: self.inner.closed.clone(),
            store: Mutex::new(Some(self.clone())),
        }
    }

    /// Close the log cleanly: move what the write-ahead file holds into redb and save the
    /// committed log id no write carried yet, so copies, backups and the next start-up
    /// find the log database whole. Call it once Raft has stopped (later writes still go
    /// to the write-ahead file). The file itself is released when the last handle is
    /// dropped. A store dropped without `close` loses nothing acknowledged: the
    /// write-ahead file is the durable record, recovered at the next open; only the
    /// newest committed log id may be older, which start-up treats as a lower bound.
    ///
    /// # Errors
    /// Writing redb failed (or redb panicked on a damaged file); the write-ahead file
    /// then still holds its entries.
    pub fn close(&self) -> Result<(), StoreError> {
        let mut wal = self.wal();
        let mut unsaved = self.take_unsaved_committed();
        let path = &self.inner.path;
        let closed = guarded(path, "closing", || {
            let db = self.inner.db()?;
            if let Some(state) = wal.as_mut()
                && !state.wal.is_empty()
            {
                // redb's committed id never points past redb's entries: it goes with them.
                move_wal_into(&db, path, state, unsaved.take())?;
            }
            match unsaved.take() {
                Some(committed) => save_committed(&db, &committed).map_err(|e| self.db_error(e)),
                None => Ok(()),
            }
        });
        if closed.is_err() {
            self.restore_unsaved_committed(unsaved);
        }
        closed
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
    /// Releases the database file only: what a clean close writes, [`LogStore::close`]
    /// writes.
    fn drop(&mut self) {
        // Closing writes redb's allocator state, which panics on some damaged files: a
        // node must still shut down, so report it instead.
        if let Some(db) = self.db.get_mut().unwrap_or_else(|e| e.into_inner()).take()
            && let Err(message) = close_quietly(db)
        {
            tracing::error!(
                file = %self.path.display(),
                "closing the log database failed (the file may be damaged): {message}"
            );
        }
        self.closed.store(true, Ordering::Release);
    }
}

impl LogStore {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
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
        if free < bytes.saturating_add(LOG_ROOM_MARGIN_BYTES) {
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
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

/// Write `committed` (the committed log id no transaction carried yet) in a durable
/// transaction of its own.
fn save_committed(db: &Database, committed: &LogId) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    put_committed(&txn, committed)?;
    txn.commit()?;
    Ok(())
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
