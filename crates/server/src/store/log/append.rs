//! The append paths: to the write-ahead file (inline or on the blocking pool), or
//! to redb directly.

use super::*;

/// Entries encoded for one append to the write-ahead file.
pub(super) struct EncodedBatch {
    batch: WalBatch,
    /// The entries, for the tail cache once the batch is written.
    cached: Vec<CachedEntry>,
    /// The commit id the batch records first, taken from `unsaved_committed`.
    committed: Option<LogId>,
}

impl LogStore {
    /// Write `entries` and call `callback` once they are durable: on the calling task
    /// when that takes one small write-ahead write (see
    /// [`LogStoreOptions::inline_append_max_bytes`]), otherwise on tokio's blocking pool.
    /// The one place that chooses between the two.
    pub(super) fn append_then_call_back(
        &self,
        entries: Vec<Ent>,
        callback: LogFlushed<TypeConfig>,
    ) {
        let last = entries.last().map_or(0, |entry| entry.log_id.index);
        let trace = &self.inner.options.commit_trace;
        trace.mark(Point::AppendCalled, last);
        let max_inline = self.inner.options.inline_append_max_bytes;
        let entries = if max_inline > 0 {
            // One small write-ahead write and its sync, here: a commit's path then has
            // no hand-over to the blocking pool and back (docs/performance.md).
            match self.append_with_one_write(entries, max_inline, last) {
                Ok(Some(entries)) => entries,
                Ok(None) => {
                    trace.mark(Point::AppendFlushed, last);
                    callback.log_io_completed(Ok(()));
                    return;
                }
                Err(e) => {
                    tracing::error!("appending to the Raft log failed: {e}");
                    callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                    return;
                }
            }
        } else {
            entries
        };
        // Anything bigger runs on tokio's blocking pool so the runtime's worker keeps
        // serving the network while a checkpoint or a large write goes to the disk.
        let store = self.clone();
        let trace = trace.clone();
        tokio::task::spawn_blocking(move || {
            trace.mark(Point::AppendStarted, last);
            let written = store
                .append_entries(entries)
                .map_err(|e| std::io::Error::other(e.to_string()));
            if let Err(e) = &written {
                tracing::error!("appending to the Raft log failed: {e}");
            }
            // Let go of the database before reporting: whoever waits for the flush may
            // drop the store and reopen the file at once.
            drop(store);
            trace.mark(Point::AppendFlushed, last);
            callback.log_io_completed(written);
        });
    }

    /// Append `entries` to the write-ahead file and sync it, checkpointing first when
    /// they do not fit; to redb directly when there is no file or they would not fit
    /// into an empty one.
    pub(super) fn append_entries(&self, entries: Vec<Ent>) -> Result<(), StoreError> {
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
    pub(super) fn append_with_one_write(
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
        self.inner
            .options
            .commit_trace
            .mark(Point::AppendStarted, last);
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
    pub(super) fn encode_batch(
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
    pub(super) fn write_batch(
        &self,
        state: &mut WalState,
        encoded: EncodedBatch,
    ) -> Result<(), StoreError> {
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
    pub(super) fn batch_written(&self, state: &mut WalState, encoded: EncodedBatch) {
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
    pub(super) fn append_to_database(
        &self,
        entries: impl IntoIterator<Item = Ent>,
    ) -> Result<(), StoreError> {
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
}

pub(super) fn encode_committed(committed: &LogId) -> Result<Vec<u8>, StoreError> {
    record::encode(KEY_COMMITTED.as_bytes(), committed, Vec::new()).map_err(|source| {
        StoreError::Encode {
            what: KEY_COMMITTED,
            source,
        }
    })
}
