//! The cache of the log's newest entries, and reads served from it or from disk.

use super::*;

/// What the log holds at its ends, and the cache of its newest entries.
///
/// Invariants: the cache is contiguous, and when it is not empty its last entry is
/// `last_log_id` (the cache always reaches the end of the log).
pub(super) struct Tail {
    pub(super) cache: VecDeque<CachedEntry>,
    pub(super) cache_bytes: usize,
    /// The last entry present, or `last_purged` when there is none.
    pub(super) last_log_id: Option<LogId>,
    pub(super) last_purged: Option<LogId>,
}

pub(super) struct CachedEntry {
    pub(super) entry: Ent,
    pub(super) encoded_bytes: usize,
}

impl Tail {
    pub(super) fn first_cached_index(&self) -> Option<u64> {
        self.cache.front().map(|c| c.entry.log_id.index)
    }

    pub(super) fn check(&self) {
        debug_assert_eq!(
            self.cache.back().map(|c| c.entry.log_id),
            self.cache.back().and(self.last_log_id),
            "the cache must end at the log's last entry"
        );
    }

    /// Record entries just committed after the current last one.
    pub(super) fn appended(&mut self, entries: Vec<CachedEntry>, options: &LogStoreOptions) {
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
    pub(super) fn truncated(&mut self, index: u64, last_log_id: Option<LogId>) {
        self.drop_cached_from(index);
        self.last_log_id = last_log_id;
        self.check();
    }

    /// Entries up to and including `log_id` were deleted.
    pub(super) fn purged(&mut self, log_id: LogId) {
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

    pub(super) fn drop_cached_from(&mut self, index: u64) {
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
    /// Entries `[start, end)` that exist, from the cache when it covers `start`.
    pub(super) fn read_entries(&self, start: u64, end: u64) -> Result<Vec<Ent>, StoreError> {
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
}
