//! The `Fence` trait every backend implements.

use std::convert::Infallible;

use crate::error::{FenceError, StorageError};
use crate::table::ResourceTable;
use crate::token::{Admitted, FenceRecord, FencingToken};

/// A resource-side fence: admits an operation only if its fencing token is not stale,
/// and records the token in the same atomic step as the operation.
///
/// Implemented by [`MemoryFence`](crate::MemoryFence) and
/// [`DurableFence`](crate::DurableFence). Both are `Send + Sync`; share one with an `Arc`.
pub trait Fence {
    /// Runs `operation` if `token` is at least the highest token seen for `resource`,
    /// and records `token` as the highest seen, atomically with the operation's writes.
    ///
    /// - The first token presented for a resource is admitted, and binds the resource to
    ///   `lock`.
    /// - A token equal to the highest seen is admitted (the same holder writing again).
    /// - A lower token is refused with [`FenceError::Refused`]; the operation does not run.
    /// - A token presented under another lock than the one the resource is bound to is
    ///   refused with [`FenceError::WrongLock`]; the operation does not run.
    ///
    /// Decisions for one fence are serialised: `operation` runs while the fence is held
    /// (the memory backend's mutex, the durable backend's write transaction), so keep it
    /// short, and do not call the same fence from inside it (that deadlocks).
    ///
    /// The operation writes the resource's own data through the `&mut dyn ResourceTable`
    /// it is given. Those writes and the recorded token take effect together when it
    /// returns `Ok`; when it returns `Err` (or panics), neither does.
    ///
    /// # Errors
    /// [`FenceError::Refused`] and [`FenceError::WrongLock`] as above;
    /// [`FenceError::Operation`] when `operation` failed; [`FenceError::Storage`] when the
    /// durable backend's database failed. Nothing is recorded in any of these cases.
    fn admit<T, E, F>(
        &self,
        resource: &str,
        lock: &str,
        token: FencingToken,
        operation: F,
    ) -> Result<Admitted<T>, FenceError<E>>
    where
        F: FnOnce(&mut dyn ResourceTable) -> Result<T, E>;

    /// Admits and records `token` without an operation: for a resource whose write
    /// happens elsewhere, after this check, which is only safe if no other writer can
    /// slip in between (prefer [`Fence::admit`]).
    ///
    /// # Errors
    /// As [`Fence::admit`], without the operation error.
    fn admit_token(
        &self,
        resource: &str,
        lock: &str,
        token: FencingToken,
    ) -> Result<Admitted<()>, FenceError<Infallible>> {
        self.admit(resource, lock, token, |_| Ok(()))
    }

    /// The lock `resource` is bound to and the highest token admitted for it, or `None`
    /// if no token was ever presented for it.
    ///
    /// # Errors
    /// [`StorageError`] when the durable backend's database failed.
    fn record(&self, resource: &str) -> Result<Option<FenceRecord>, StorageError>;

    /// Binds `resource` to `lock`, keeping its highest token seen (zero for a new
    /// resource), and returns the previous record.
    ///
    /// Use it to bind a resource before its first write, so that tokens of other locks
    /// are refused from the start, or to move a resource to another lock. Keeping the
    /// highest token is safe with fencelock because its token counter is cluster-wide:
    /// every token granted after the rebind, under any lock, is greater than every token
    /// granted before it. A holder of the old lock is refused with
    /// [`FenceError::WrongLock`].
    ///
    /// # Errors
    /// [`StorageError`] when the durable backend's database failed.
    fn bind(&self, resource: &str, lock: &str) -> Result<Option<FenceRecord>, StorageError>;

    /// Reads `key` from the resource table, as committed.
    ///
    /// # Errors
    /// [`StorageError`] when the durable backend's database failed.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
}
