//! The Raft log and vote, durable in redb (`<data_dir>/raft-log.redb`).
//!
//! - Entries are stored under their `u64` index in the `log` table; the vote, the
//!   committed log id, the last purged log id and a format marker live in the `meta`
//!   table. Every value is a checksummed record (see [`super::record`]): a version byte,
//!   a CRC-32 of the key and payload, then the postcard payload.
//! - Group commit: each `append()` is one write transaction with
//!   [`Durability::Immediate`] however many entries it carries, committed before the flush
//!   callback runs. `save_vote`, `truncate` and `purge` are one durable transaction each
//!   (the last two as range deletes). `save_committed` only records the committed log
//!   id in memory: the next write transaction (normally the next append, which follows
//!   within a heartbeat under load) or closing the store writes it. A commit is then one
//!   redb transaction per node instead of two. Losing the newest committed id in a crash
//!   only means re-learning it from the leader (openraft persists it as an optimization;
//!   start-up treats it as a lower bound).
//! - Reads of recent entries (the replication path) are served from a bounded in-memory
//!   cache of the log's tail (entries this process wrote and verified); older entries
//!   are read from redb and verified on every read. A record that fails verification is
//!   a [`StoreError::CorruptLog`] naming the file and the index.
//!
//! # Verification at start-up
//!
//! [`LogStore::open`] reads and verifies the whole file before it serves anything:
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
//! Dropping an unacknowledged tail is the same thing Raft does for entries a crash lost
//! before their fsync. One residual risk is shared with every Raft log: an entry above
//! the persisted committed id may already have been acknowledged to the leader; if the
//! damage happens on a majority at once, a committed entry could be lost. `fencelock
//! check-data` reports everything this scan finds without changing the file.

use super::StoreError;
use super::record;
use crate::raft::{LogId, NodeId, TypeConfig};
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
use std::sync::{Arc, Mutex, MutexGuard};

/// The log's file name inside the data directory.
pub const LOG_FILE_NAME: &str = "raft-log.redb";

/// The value of the format marker record: bumped when the layout of the file changes.
pub const LOG_FORMAT: u32 = 1;

pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const KEY_VOTE: &str = "vote";
pub(crate) const KEY_COMMITTED: &str = "committed";
pub(crate) const KEY_LAST_PURGED: &str = "last_purged_log_id";
pub(crate) const KEY_FORMAT: &str = "format";

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
}

/// The default of [`LogStoreOptions::page_cache_bytes`].
pub const DEFAULT_LOG_PAGE_CACHE_BYTES: usize = 16 << 20;

impl Default for LogStoreOptions {
    fn default() -> Self {
        LogStoreOptions {
            cache_entries_max: 256,
            cache_bytes_max: 4 << 20,
            page_cache_bytes: DEFAULT_LOG_PAGE_CACHE_BYTES,
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
    /// Always `Some` until dropped (see `Drop for Inner`).
    db: Option<Database>,
    path: PathBuf,
    options: LogStoreOptions,
    tail: Mutex<Tail>,
    write_transactions: AtomicU64,
    entries_appended: AtomicU64,
    disk_reads: AtomicU64,
    /// Set once the database is closed (see [`LogStoreCloseWatch`]).
    closed: Arc<std::sync::atomic::AtomicBool>,
    /// The newest committed log id when it is newer than the file's, written by the next
    /// write transaction or at close.
    unsaved_committed: Mutex<Option<LogId>>,
}

impl Inner {
    fn db(&self) -> &Database {
        self.db
            .as_ref()
            .expect("the database is open until dropped")
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing writes redb's allocator state, which panics on some damaged files: a
        // node must still shut down, so report it instead.
        if let Some(db) = self.db.take()
            && let Err(message) = save_committed_and_close(
                db,
                self.unsaved_committed
                    .get_mut()
                    .unwrap_or_else(|e| e.into_inner()),
            )
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
        std::fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
        let path = dir.join(LOG_FILE_NAME);
        let snapshot_index =
            super::snapshot::newest_index_by_name(&dir.join(super::snapshot::SNAPSHOT_DIR_NAME));
        let (db, scan) = open_and_scan(&path, &path, snapshot_index, options.page_cache_bytes)?;
        let truncate_from = match scan.verdict(&path) {
            Ok(truncate_from) => truncate_from,
            Err(e) => {
                let _ = close_quietly(db);
                return Err(e);
            }
        };

        let store = LogStore {
            inner: Arc::new(Inner {
                db: Some(db),
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
                disk_reads: AtomicU64::new(0),
                closed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
                unsaved_committed: Mutex::new(None),
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
                store.commit(txn)?;
                scan.last_good_before_bad
            }
        };
        {
            let mut tail = store.tail();
            tail.last_purged = scan.last_purged;
            tail.last_log_id = last_entry.or(scan.last_purged);
        }
        Ok(store)
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

    /// Reads of entries that the tail cache could not serve and went to redb.
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
            .db()
            .begin_write()
            .map_err(|e| self.db_error(e))?;
        txn.set_durability(durability)
            .map_err(|e| self.db_error(e))?;
        Ok(txn)
    }

    fn commit(&self, txn: redb::WriteTransaction) -> Result<(), StoreError> {
        let unsaved = self
            .inner
            .unsaved_committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(committed) = unsaved {
            put_committed(&txn, &committed).map_err(|e| self.db_error(e))?;
        }
        txn.commit().map_err(|e| self.db_error(e))?;
        self.inner
            .write_transactions
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &'static str) -> Result<Option<T>, StoreError> {
        let txn = self.inner.db().begin_read().map_err(|e| self.db_error(e))?;
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
        let txn = self.begin_write(durability)?;
        {
            let mut table = txn.open_table(META).map_err(|e| self.db_error(e))?;
            match value {
                Some(value) => {
                    let bytes = record::encode(key.as_bytes(), value, Vec::new())
                        .map_err(|source| StoreError::Encode { what: key, source })?;
                    table
                        .insert(key, bytes.as_slice())
                        .map_err(|e| self.db_error(e))?;
                }
                None => {
                    table.remove(key).map_err(|e| self.db_error(e))?;
                }
            }
        }
        self.commit(txn)
    }

    /// One durable write transaction for all of `entries`.
    fn append_entries(&self, entries: impl IntoIterator<Item = Ent>) -> Result<(), StoreError> {
        let mut entries = entries.into_iter().peekable();
        if entries.peek().is_none() {
            return Ok(());
        }
        let txn = self.begin_write(Durability::Immediate)?;
        let mut cached = Vec::with_capacity(entries.size_hint().0);
        {
            let mut table = txn.open_table(LOG).map_err(|e| self.db_error(e))?;
            let mut buffer = Vec::new();
            for entry in entries {
                buffer =
                    record::encode_entry(&entry, buffer).map_err(|source| StoreError::Encode {
                        what: "log entry",
                        source,
                    })?;
                table
                    .insert(entry.log_id.index, buffer.as_slice())
                    .map_err(|e| self.db_error(e))?;
                cached.push(CachedEntry {
                    encoded_bytes: buffer.len(),
                    entry,
                });
            }
        }
        self.commit(txn)?;
        self.inner
            .entries_appended
            .fetch_add(cached.len() as u64, Ordering::Relaxed);
        self.tail().appended(cached, &self.inner.options);
        Ok(())
    }

    /// Delete the entries from `log_id.index` on, in one durable transaction.
    fn truncate_from(&self, log_id: LogId) -> Result<(), StoreError> {
        let txn = self.begin_write(Durability::Immediate)?;
        let last_remaining = {
            let mut table = txn.open_table(LOG).map_err(|e| self.db_error(e))?;
            table
                .retain_in(log_id.index.., |_, _| false)
                .map_err(|e| self.db_error(e))?;
            match table.last().map_err(|e| self.db_error(e))? {
                Some((index, bytes)) => {
                    Some(self.decode_entry(index.value(), bytes.value())?.log_id)
                }
                None => None,
            }
        };
        self.commit(txn)?;
        let mut tail = self.tail();
        let last_log_id = last_remaining.or(tail.last_purged);
        tail.truncated(log_id.index, last_log_id);
        Ok(())
    }

    /// Delete the entries up to and including `log_id.index` and record `log_id` as the
    /// last purged, in one durable transaction.
    fn purge_upto(&self, log_id: LogId) -> Result<(), StoreError> {
        let txn = self.begin_write(Durability::Immediate)?;
        {
            let mut table = txn.open_table(LOG).map_err(|e| self.db_error(e))?;
            table
                .retain_in(..=log_id.index, |_, _| false)
                .map_err(|e| self.db_error(e))?;
            let bytes = record::encode(KEY_LAST_PURGED.as_bytes(), &log_id, Vec::new()).map_err(
                |source| StoreError::Encode {
                    what: KEY_LAST_PURGED,
                    source,
                },
            )?;
            let mut meta = txn.open_table(META).map_err(|e| self.db_error(e))?;
            meta.insert(KEY_LAST_PURGED, bytes.as_slice())
                .map_err(|e| self.db_error(e))?;
        }
        self.commit(txn)?;
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
        let txn = self.inner.db().begin_read().map_err(|e| self.db_error(e))?;
        let table = txn.open_table(LOG).map_err(|e| self.db_error(e))?;
        let mut entries = Vec::new();
        for item in table.range(start..end).map_err(|e| self.db_error(e))? {
            let (index, bytes) = item.map_err(|e| self.db_error(e))?;
            entries.push(self.decode_entry(index.value(), bytes.value())?);
        }
        Ok(entries)
    }

    /// The stored bytes of entry `index`, unverified (tests and tools).
    ///
    /// # Errors
    /// redb failed.
    #[doc(hidden)]
    pub fn raw_entry_for_test(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.inner.db().begin_read().map_err(|e| self.db_error(e))?;
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
        let txn = self.begin_write(Durability::Immediate)?;
        {
            let mut table = txn.open_table(LOG).map_err(|e| self.db_error(e))?;
            match bytes {
                Some(bytes) => table.insert(index, bytes).map(drop),
                None => table.remove(index).map(drop),
            }
            .map_err(|e| self.db_error(e))?;
        }
        self.commit(txn)
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
        self.commit(txn)
    }

    /// The stored bytes of meta record `key`, unverified (tests and tools).
    ///
    /// # Errors
    /// redb failed.
    #[doc(hidden)]
    pub fn raw_record_for_test(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.inner.db().begin_read().map_err(|e| self.db_error(e))?;
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
    file: &Path,
    name: &Path,
    snapshot_index: Option<u64>,
    page_cache_bytes: usize,
) -> Result<(Database, Scan), StoreError> {
    refuse_empty_file(file).map_err(|e| rename(e, name))?;
    let db = guarded(name, "opening", || {
        redb::Builder::new()
            .set_cache_size(page_cache_bytes)
            .create(file)
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
pub(crate) fn refuse_empty_file(path: &Path) -> Result<(), StoreError> {
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_file() && metadata.len() == 0 => {
            Err(StoreError::OpenDatabase {
                path: path.to_owned(),
                reason: "the file is empty: it was truncated, or its creation was \
                         interrupted. A node that may have voted must not start with a new \
                         log; delete the file only if this node never joined a cluster"
                    .to_owned(),
            })
        }
        _ => Ok(()),
    }
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
            scan.format = scan.meta(KEY_FORMAT, format.as_deref());
            scan.vote = scan.meta(KEY_VOTE, vote.as_deref());
            scan.committed = scan.meta(KEY_COMMITTED, committed.as_deref());
            scan.last_purged = scan.meta(KEY_LAST_PURGED, last_purged.as_deref());
            match (scan.format, format.is_some()) {
                (Some(LOG_FORMAT), _) | (None, true) => {}
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
        self.write_meta(KEY_VOTE, Some(vote), Durability::Immediate)
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
                // Forget any newer id first, or the transaction would write it back.
                *self
                    .inner
                    .unsaved_committed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = None;
                self.write_meta(KEY_COMMITTED, None::<&LogId>, Durability::None)
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
        match unsaved {
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
        // The write runs on tokio's blocking pool so the runtime's worker keeps serving the
        // network while the disk flushes (measured: with the fsync on the worker, a node
        // with one worker thread was twice as slow). openraft 0.9 awaits this callback
        // before it does anything else with the log (`RaftCore::append_to_log`), so the
        // writes stay in order and no reader is pointed at these entries before they are
        // in the tail cache (which the write fills before calling back).
        let entries: Vec<Ent> = entries.into_iter().collect();
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let written = store
                .append_entries(entries)
                .map_err(|e| std::io::Error::other(e.to_string()));
            if let Err(e) = &written {
                tracing::error!("appending to the Raft log failed: {e}");
            }
            // Let go of the database before reporting: whoever waits for the flush may
            // drop the store and reopen the file at once.
            drop(store);
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
