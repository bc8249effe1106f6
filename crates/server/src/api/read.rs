//! The one rule every read of the applied state for a client follows: check the caller's
//! right on this node's applied state (an early refusal), wait for a read barrier, and
//! check again on the state the barrier waited for, so that a revocation committed before
//! the read counts; only then read.

use super::leader::barrier_error;
use crate::auth::AuthError;
use crate::node::Node;
use crate::store::Applied;
use tonic::Status;

/// Refuse unless `check` passes before and after a read barrier (see the module docs).
///
/// # Errors
/// `check`'s refusal, or the barrier's (not the leader, naming it; shutting down).
pub(crate) async fn checked_barrier(
    node: &Node,
    check: impl Fn() -> Result<(), AuthError>,
) -> Result<(), Status> {
    check()?;
    if let Err(error) = node.barrier().confirm().await {
        return Err(barrier_error(node, error).await);
    }
    check()?;
    Ok(())
}

/// [`checked_barrier`], then `read` the applied state.
///
/// # Errors
/// As [`checked_barrier`].
pub(crate) async fn checked_read<T>(
    node: &Node,
    check: impl Fn() -> Result<(), AuthError>,
    read: impl FnOnce(&Applied) -> T,
) -> Result<T, Status> {
    checked_barrier(node, check).await?;
    Ok(node.shared().read(read))
}
