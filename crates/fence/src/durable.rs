//! The durable backend, on redb.

use std::path::Path;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

use crate::error::{FenceError, StorageError};
use crate::fence::Fence;
use crate::table::{RedbTable, ResourceTable};
use crate::token::{Admitted, FenceRecord, FencingToken, decide};

/// resource → (highest token seen, lock the resource is bound to).
const TOKENS: TableDefinition<&str, (u64, &str)> = TableDefinition::new("fencelock_fence_tokens");

/// The resource table handed to operations by [`Fence::admit`].
const DATA: TableDefinition<&[u8], &[u8]> = TableDefinition::new("fencelock_fence_data");

/// A fence in a redb database file: the recorded token and the operation's writes commit
/// in one write transaction with [`Durability::Immediate`], so they survive a crash or a
/// restart together, or not at all.
///
/// The database holds two tables, `fencelock_fence_tokens` (the fence) and
/// `fencelock_fence_data` (the resource table of [`Fence::admit`]). A resource that needs
/// tables of its own uses [`DurableFence::admit_in_transaction`] and opens them in the
/// fence's transaction.
///
/// redb runs one write transaction at a time, which serialises the fence's decisions;
/// readers ([`Fence::record`], [`Fence::get`]) do not wait for writers.
#[derive(Debug)]
pub struct DurableFence {
    database: Database,
}

impl DurableFence {
    /// Opens the fence database at `path`, creating it if it does not exist.
    ///
    /// # Errors
    /// [`StorageError`] if the file cannot be created, opened or initialised (for
    /// example, another process has it open).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        let database = Database::create(path).map_err(StorageError::from_redb)?;
        let fence = Self { database };
        // Create both tables so that readers never see a missing table.
        let transaction = fence.begin_write()?;
        transaction
            .open_table(TOKENS)
            .map_err(StorageError::from_redb)?;
        transaction
            .open_table(DATA)
            .map_err(StorageError::from_redb)?;
        transaction.commit().map_err(StorageError::from_redb)?;
        Ok(fence)
    }

    /// The underlying database, to read the resource's own tables.
    #[must_use]
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Like [`Fence::admit`], but gives the operation the fence's whole redb write
    /// transaction instead of the resource table, so that it can write any tables of its
    /// own in the same commit as the token.
    ///
    /// The fence's token table stays open while the operation runs, so the operation
    /// cannot open it (redb refuses a table that is already open); the resource table of
    /// [`Fence::admit`] (`fencelock_fence_data`) is free to use.
    ///
    /// # Errors
    /// As [`Fence::admit`]. When the operation returns `Err`, the transaction is aborted:
    /// none of its writes and no token are recorded.
    pub fn admit_in_transaction<T, E, F>(
        &self,
        resource: &str,
        lock: &str,
        token: FencingToken,
        operation: F,
    ) -> Result<Admitted<T>, FenceError<E>>
    where
        F: FnOnce(&WriteTransaction) -> Result<T, E>,
    {
        let transaction = self.begin_write()?;
        let (previous, output) = {
            let mut tokens = transaction
                .open_table(TOKENS)
                .map_err(StorageError::from_redb)?;
            let record = read_record(&tokens, resource)?;
            let previous = decide(resource, record.as_ref(), lock, token)?;
            let output = match operation(&transaction) {
                Ok(output) => output,
                Err(error) => {
                    drop(tokens);
                    // Dropping the transaction would abort it as well; nothing was
                    // committed either way, so the operation's error is the one to report.
                    let _aborted = transaction.abort();
                    return Err(FenceError::Operation(error));
                }
            };
            tokens
                .insert(resource, (token.get(), lock))
                .map_err(StorageError::from_redb)?;
            (previous, output)
        };
        transaction.commit().map_err(StorageError::from_redb)?;
        debug_assert!(previous.is_none_or(|previous| previous <= token));
        Ok(Admitted {
            token,
            previous,
            output,
        })
    }

    fn begin_write(&self) -> Result<WriteTransaction, StorageError> {
        let mut transaction = self
            .database
            .begin_write()
            .map_err(StorageError::from_redb)?;
        transaction
            .set_durability(Durability::Immediate)
            .map_err(StorageError::from_redb)?;
        Ok(transaction)
    }
}

fn read_record(
    tokens: &impl ReadableTable<&'static str, (u64, &'static str)>,
    resource: &str,
) -> Result<Option<FenceRecord>, StorageError> {
    let value = tokens.get(resource).map_err(StorageError::from_redb)?;
    Ok(value.map(|guard| {
        let (highest_seen, lock) = guard.value();
        FenceRecord {
            lock: lock.to_owned(),
            highest_seen: FencingToken(highest_seen),
        }
    }))
}

impl Fence for DurableFence {
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
        /// Why the inner operation failed: either way the transaction is aborted.
        enum Failure<E> {
            Operation(E),
            OpenTable(StorageError),
        }
        let admitted = self.admit_in_transaction(resource, lock, token, |transaction| {
            let table = transaction
                .open_table(DATA)
                .map_err(|error| Failure::OpenTable(StorageError::from_redb(error)))?;
            operation(&mut RedbTable { table }).map_err(Failure::Operation)
        });
        admitted.map_err(|error| match error {
            FenceError::Operation(Failure::OpenTable(error)) => FenceError::Storage(error),
            error => error.map_operation(|failure| match failure {
                Failure::Operation(error) => error,
                Failure::OpenTable(_) => unreachable!("matched by the arm above"),
            }),
        })
    }

    fn record(&self, resource: &str) -> Result<Option<FenceRecord>, StorageError> {
        let transaction = self
            .database
            .begin_read()
            .map_err(StorageError::from_redb)?;
        let tokens = transaction
            .open_table(TOKENS)
            .map_err(StorageError::from_redb)?;
        read_record(&tokens, resource)
    }

    fn bind(&self, resource: &str, lock: &str) -> Result<Option<FenceRecord>, StorageError> {
        let transaction = self.begin_write()?;
        let previous = {
            let mut tokens = transaction
                .open_table(TOKENS)
                .map_err(StorageError::from_redb)?;
            let previous = read_record(&tokens, resource)?;
            let highest_seen = previous
                .as_ref()
                .map_or(FencingToken(0), |record| record.highest_seen);
            tokens
                .insert(resource, (highest_seen.get(), lock))
                .map_err(StorageError::from_redb)?;
            previous
        };
        transaction.commit().map_err(StorageError::from_redb)?;
        Ok(previous)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let transaction = self
            .database
            .begin_read()
            .map_err(StorageError::from_redb)?;
        let table = transaction
            .open_table(DATA)
            .map_err(StorageError::from_redb)?;
        let value = table.get(key).map_err(StorageError::from_redb)?;
        Ok(value.map(|guard| guard.value().to_vec()))
    }
}
