//! Raw access to the stored records, for tests of damaged files, and the store's
//! counters, for tests of what a write cost (the `test-support` feature only).

use super::*;

impl LogStore {
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

    /// Reads of entries that the tail cache could not serve and went to disk.
    pub fn disk_read_count(&self) -> u64 {
        self.inner.disk_reads.load(Ordering::Relaxed)
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
