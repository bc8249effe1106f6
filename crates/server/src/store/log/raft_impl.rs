//! openraft's `RaftLogReader` and `RaftLogStorage` on [`LogStore`].

use super::*;

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
        self.append_then_call_back(entries.into_iter().collect(), callback);
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
