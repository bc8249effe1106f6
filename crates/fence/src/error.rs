//! The crate's error type.

use crate::token::{Decision, FencingToken};

/// Why [`Fence::admit`](crate::Fence::admit) did not admit an operation.
///
/// `E` is the error type of the caller's operation. In every case the token was not
/// recorded and (with the durable backend, and the memory backend's table) none of the
/// operation's writes took effect.
#[derive(Debug, thiserror::Error)]
pub enum FenceError<E> {
    /// The token is below the highest token seen for the resource: the holder's lock was
    /// granted to someone else since. The holder must stop writing.
    #[error(
        "fencing token {token} refused for resource {resource:?}: highest seen is {highest_seen}"
    )]
    Refused {
        /// The resource written to.
        resource: String,
        /// The token presented.
        token: FencingToken,
        /// The highest token admitted for the resource, greater than `token`.
        highest_seen: FencingToken,
    },
    /// The token was presented under a different lock than the one the resource is bound
    /// to. Tokens are only ordered within one lock, so the fence does not compare them.
    /// Use [`Fence::bind`](crate::Fence::bind) to move a resource to another lock.
    #[error(
        "resource {resource:?} is fenced by lock {bound_lock:?}, \
         not by lock {presented_lock:?}"
    )]
    WrongLock {
        /// The resource written to.
        resource: String,
        /// The lock the resource is bound to.
        bound_lock: String,
        /// The lock the token was presented under.
        presented_lock: String,
    },
    /// The token was admissible, but the operation returned an error; nothing was recorded.
    #[error("the fenced operation failed")]
    Operation(#[source] E),
    /// The fence's storage failed; nothing was recorded.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl<E> FenceError<E> {
    /// The decision, when the error is a refusal by token.
    #[must_use]
    pub fn decision(&self) -> Option<Decision> {
        match self {
            Self::Refused {
                token,
                highest_seen,
                ..
            } => Some(Decision::Refused {
                token: *token,
                highest_seen: *highest_seen,
            }),
            Self::WrongLock { .. } | Self::Operation(_) | Self::Storage(_) => None,
        }
    }

    /// Maps the operation's error, leaving the other variants as they are.
    pub fn map_operation<F>(self, map: impl FnOnce(E) -> F) -> FenceError<F> {
        match self {
            Self::Refused {
                resource,
                token,
                highest_seen,
            } => FenceError::Refused {
                resource,
                token,
                highest_seen,
            },
            Self::WrongLock {
                resource,
                bound_lock,
                presented_lock,
            } => FenceError::WrongLock {
                resource,
                bound_lock,
                presented_lock,
            },
            Self::Operation(error) => FenceError::Operation(map(error)),
            Self::Storage(error) => FenceError::Storage(error),
        }
    }

    /// Whether the fence refused the token (stale token or wrong lock), as opposed to an
    /// operation or storage failure.
    #[must_use]
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Refused { .. } | Self::WrongLock { .. })
    }
}

/// A failure of the durable backend's storage (the redb database).
///
/// The in-memory backend never returns it.
#[derive(Debug, thiserror::Error)]
#[error("fence storage failed: {source}")]
pub struct StorageError {
    #[from]
    source: redb::Error,
}

impl StorageError {
    pub(crate) fn from_redb(error: impl Into<redb::Error>) -> Self {
        Self {
            source: error.into(),
        }
    }
}
