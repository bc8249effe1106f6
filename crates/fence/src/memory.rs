//! The in-memory backend.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use crate::error::{FenceError, StorageError};
use crate::fence::Fence;
use crate::table::{ResourceTable, StagedTable};
use crate::token::{Admitted, FenceRecord, FencingToken, decide};

/// A fence kept in memory, behind one mutex: for tests, and for resources that live in
/// the same process and are lost with it anyway.
///
/// The resource table is an ordered map in the same mutex; an operation's writes to it
/// are staged and applied with the token only if the operation succeeds.
///
/// A panic inside an operation leaves the fence usable: the state is only changed after
/// the operation returned `Ok`, so the poisoned mutex is safely taken over.
#[derive(Debug, Default)]
pub struct MemoryFence {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    records: BTreeMap<String, FenceRecord>,
    data: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemoryFence {
    /// An empty fence: no resource bound, an empty resource table.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Every resource's record, in resource order.
    #[must_use]
    pub fn records(&self) -> BTreeMap<String, FenceRecord> {
        self.lock_state().records.clone()
    }

    fn lock_state(&self) -> MutexGuard<'_, MemoryState> {
        // The state is only written after an operation succeeded, so a panic while the
        // mutex was held left it consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Fence for MemoryFence {
    fn admit<T, E, F>(
        &self,
        resource: &str,
        lock: &str,
        token: FencingToken,
        operation: F,
    ) -> Result<Admitted<T>, FenceError<E>>
    where
        F: FnOnce(&mut dyn ResourceTable) -> Result<T, E>,
    {
        let mut state = self.lock_state();
        let previous = decide(resource, state.records.get(resource), lock, token)?;

        let mut table = StagedTable::new(&state.data);
        let output = operation(&mut table).map_err(FenceError::Operation)?;
        let writes = table.into_writes();

        for (key, value) in writes {
            match value {
                Some(value) => state.data.insert(key, value),
                None => state.data.remove(&key),
            };
        }
        let record = FenceRecord {
            lock: lock.to_owned(),
            highest_seen: token,
        };
        state.records.insert(resource.to_owned(), record);
        debug_assert!(previous.is_none_or(|previous| previous <= token));
        Ok(Admitted {
            token,
            previous,
            output,
        })
    }

    fn record(&self, resource: &str) -> Result<Option<FenceRecord>, StorageError> {
        Ok(self.lock_state().records.get(resource).cloned())
    }

    fn bind(&self, resource: &str, lock: &str) -> Result<Option<FenceRecord>, StorageError> {
        let mut state = self.lock_state();
        let previous = state.records.get(resource).cloned();
        let highest_seen = previous
            .as_ref()
            .map_or(FencingToken(0), |record| record.highest_seen);
        let record = FenceRecord {
            lock: lock.to_owned(),
            highest_seen,
        };
        state.records.insert(resource.to_owned(), record);
        Ok(previous)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock_state().data.get(key).cloned())
    }
}
