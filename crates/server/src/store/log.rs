//! The Raft log and vote, durable in redb (`<data_dir>/raft-log.redb`).
//!
//! - Entries are postcard-encoded under their `u64` index in the `log` table; the vote,
//!   the committed log id and the last purged log id live in the `meta` table.
//! - Group commit: each `append()` is one write transaction with
//!   [`Durability::Immediate`] however many entries it carries, committed before the flush
//!   callback runs. `save_vote`, `truncate` and `purge` are one durable transaction each
//!   (the last two as range deletes). `save_committed` is written without forcing an
//!   fsync: the next durable commit, or closing the database, makes it durable.
//! - Reads of recent entries (the replication path) are served from a bounded in-memory
//!   cache of the log's tail; older entries are read from redb.

use super::StoreError;
use crate::raft::{LogId, NodeId, TypeConfig};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, LogState, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The log's file name inside the data directory.
pub const LOG_FILE_NAME: &str = "raft-log.redb";

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged_log_id";

type Ent = Entry<TypeConfig>;

/// Tuning of the log store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogStoreOptions {
    /// At most this many of the newest entries are kept in memory for readers (0 turns the
    /// cache off).
    pub cache_entries_max: usize,
    /// The cached entries' encoded sizes add up to at most this many bytes.
    pub cache_bytes_max: usize,
}

impl Default for LogStoreOptions {
    fn default() -> Self {
        LogStoreOptions {
            cache_entries_max: 4096,
            cache_bytes_max: 64 << 20,
        }
    }
}

/// The durable Raft log and vote. Cheap to clone: clones share the database and the
/// cache, and serve as openraft's log readers.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    path: PathBuf,
    options: LogStoreOptions,
    tail: Mutex<Tail>,
    write_transactions: AtomicU64,
    entries_appended: AtomicU64,
    disk_reads: AtomicU64,
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
    /// Open (or create) the log in `dir`/[`LOG_FILE_NAME`], recovering the vote, the
    /// entries, the committed and the last purged log id of an existing file.
    ///
    /// # Errors
    /// The directory cannot be created, the file cannot be opened (e.g. another process
    /// has it open), or its contents cannot be decoded.
    pub fn open(dir: &Path, options: LogStoreOptions) -> Result<LogStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
        let path = dir.join(LOG_FILE_NAME);
        let database_error = |e: redb::Error| StoreError::Database {
            path: path.clone(),
            source: e,
        };
        let db = Database::create(&path).map_err(|e| database_error(e.into()))?;
        let txn = db.begin_write().map_err(|e| database_error(e.into()))?;
        txn.open_table(LOG).map_err(|e| database_error(e.into()))?;
        txn.open_table(META).map_err(|e| database_error(e.into()))?;
        txn.commit().map_err(|e| database_error(e.into()))?;

        let store = LogStore {
            inner: Arc::new(Inner {
                db,
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
            }),
        };
        let last_purged: Option<LogId> = store.read_meta(KEY_LAST_PURGED)?;
        let last_entry = {
            let txn = store.inner.db.begin_read().map_err(|e| store.db_error(e))?;
            let table = txn.open_table(LOG).map_err(|e| store.db_error(e))?;
            match table.last().map_err(|e| store.db_error(e))? {
                Some((index, bytes)) => Some(store.decode_entry(index.value(), bytes.value())?),
                None => None,
            }
        };
        {
            let mut tail = store.tail();
            tail.last_purged = last_purged;
            tail.last_log_id = last_entry.map(|e| e.log_id).or(last_purged);
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
        let entry: Ent = postcard::from_bytes(bytes).map_err(|source| StoreError::CorruptLog {
            path: self.inner.path.clone(),
            what: format!("log entry {index}"),
            source,
        })?;
        if entry.log_id.index != index {
            return Err(StoreError::CorruptLog {
                path: self.inner.path.clone(),
                what: format!("log entry {index}: it carries index {}", entry.log_id.index),
                source: postcard::Error::DeserializeBadEncoding,
            });
        }
        Ok(entry)
    }

    fn begin_write(&self, durability: Durability) -> Result<redb::WriteTransaction, StoreError> {
        let mut txn = self.inner.db.begin_write().map_err(|e| self.db_error(e))?;
        txn.set_durability(durability)
            .map_err(|e| self.db_error(e))?;
        Ok(txn)
    }

    fn commit(&self, txn: redb::WriteTransaction) -> Result<(), StoreError> {
        txn.commit().map_err(|e| self.db_error(e))?;
        self.inner
            .write_transactions
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &'static str) -> Result<Option<T>, StoreError> {
        let txn = self.inner.db.begin_read().map_err(|e| self.db_error(e))?;
        let table = txn.open_table(META).map_err(|e| self.db_error(e))?;
        let Some(bytes) = table.get(key).map_err(|e| self.db_error(e))? else {
            return Ok(None);
        };
        postcard::from_bytes(bytes.value())
            .map(Some)
            .map_err(|source| StoreError::CorruptLog {
                path: self.inner.path.clone(),
                what: key.to_owned(),
                source,
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
                    let bytes = postcard::to_allocvec(value)
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
                buffer.clear();
                buffer =
                    postcard::to_extend(&entry, buffer).map_err(|source| StoreError::Encode {
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
            let bytes = postcard::to_allocvec(&log_id).map_err(|source| StoreError::Encode {
                what: KEY_LAST_PURGED,
                source,
            })?;
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
        let txn = self.inner.db.begin_read().map_err(|e| self.db_error(e))?;
        let table = txn.open_table(LOG).map_err(|e| self.db_error(e))?;
        let mut entries = Vec::new();
        for item in table.range(start..end).map_err(|e| self.db_error(e))? {
            let (index, bytes) = item.map_err(|e| self.db_error(e))?;
            entries.push(self.decode_entry(index.value(), bytes.value())?);
        }
        Ok(entries)
    }
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
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
        // No fsync of its own: losing the newest committed id in a crash only means
        // re-learning it from the leader.
        self.write_meta(KEY_COMMITTED, committed.as_ref(), Durability::None)
            .map_err(write_logs_error)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        self.read_meta(KEY_COMMITTED).map_err(read_logs_error)
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
        self.append_entries(entries).map_err(write_logs_error)?;
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        self.truncate_from(log_id).map_err(write_logs_error)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        self.purge_upto(log_id).map_err(write_logs_error)
    }
}
