//! The key-value table an operation writes the resource's own data to.

use std::collections::BTreeMap;

use redb::ReadableTable;

use crate::error::StorageError;

/// A key-value table that lives beside the fence and commits together with it.
///
/// [`Fence::admit`](crate::Fence::admit) hands the operation a `&mut dyn ResourceTable`.
/// Its writes take effect together with the recorded token when the operation returns
/// `Ok`, and not at all when it returns `Err` (or panics).
pub trait ResourceTable {
    /// The value stored under `key`, as of this operation (its own writes included).
    ///
    /// # Errors
    /// [`StorageError`] if the durable backend cannot read.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Stores `value` under `key` and returns the value it replaced.
    ///
    /// # Errors
    /// [`StorageError`] if the durable backend cannot write.
    fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    /// Removes `key` and returns the value it had.
    ///
    /// # Errors
    /// [`StorageError`] if the durable backend cannot write.
    fn remove(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
}

/// The in-memory backend's table as seen by one operation: the committed map and the
/// writes staged by the operation, applied only if it succeeds.
pub(crate) struct StagedTable<'a> {
    committed: &'a BTreeMap<Vec<u8>, Vec<u8>>,
    /// `None` marks a removal.
    staged: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl<'a> StagedTable<'a> {
    pub(crate) fn new(committed: &'a BTreeMap<Vec<u8>, Vec<u8>>) -> Self {
        Self {
            committed,
            staged: BTreeMap::new(),
        }
    }

    fn current(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.staged.get(key) {
            Some(staged) => staged.clone(),
            None => self.committed.get(key).cloned(),
        }
    }

    /// The staged writes, to apply to the committed map.
    pub(crate) fn into_writes(self) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        self.staged
    }
}

impl ResourceTable for StagedTable<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.current(key))
    }

    fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let previous = self.current(key);
        self.staged.insert(key.to_vec(), Some(value.to_vec()));
        Ok(previous)
    }

    fn remove(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let previous = self.current(key);
        self.staged.insert(key.to_vec(), None);
        Ok(previous)
    }
}

/// The durable backend's table: a redb table opened in the fence's write transaction.
pub(crate) struct RedbTable<'txn> {
    pub(crate) table: redb::Table<'txn, &'static [u8], &'static [u8]>,
}

impl ResourceTable for RedbTable<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let value = self.table.get(key).map_err(StorageError::from_redb)?;
        Ok(value.map(|guard| guard.value().to_vec()))
    }

    fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let previous = self
            .table
            .insert(key, value)
            .map_err(StorageError::from_redb)?;
        Ok(previous.map(|guard| guard.value().to_vec()))
    }

    fn remove(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let previous = self.table.remove(key).map_err(StorageError::from_redb)?;
        Ok(previous.map(|guard| guard.value().to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_writes_shadow_committed_data_and_are_returned() {
        let committed = BTreeMap::from([
            (b"a".to_vec(), b"1".to_vec()),
            (b"b".to_vec(), b"2".to_vec()),
        ]);
        let mut table = StagedTable::new(&committed);
        assert_eq!(table.insert(b"a", b"10").unwrap(), Some(b"1".to_vec()));
        assert_eq!(table.remove(b"b").unwrap(), Some(b"2".to_vec()));
        assert_eq!(table.remove(b"b").unwrap(), None);
        assert_eq!(table.insert(b"c", b"3").unwrap(), None);
        assert_eq!(table.get(b"a").unwrap(), Some(b"10".to_vec()));
        assert_eq!(table.get(b"b").unwrap(), None);
        let writes = table.into_writes();
        assert_eq!(
            writes,
            BTreeMap::from([
                (b"a".to_vec(), Some(b"10".to_vec())),
                (b"b".to_vec(), None),
                (b"c".to_vec(), Some(b"3".to_vec())),
            ])
        );
        // The committed map is untouched until the writes are applied.
        assert_eq!(committed.get(b"a".as_slice()), Some(&b"1".to_vec()));
    }
}
