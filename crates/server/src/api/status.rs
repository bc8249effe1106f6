//! The one place where server-side errors become gRPC statuses: a code plus an
//! `ErrorDetail` (machine-readable reason, leader address for redirects) in the details.

use crate::auth::AuthError;
use crate::barrier::BarrierError;
use crate::node::Node;
use crate::proposer::ProposeError;
use crate::raft::NodeId;
use fencelock_core::Error as CoreError;
use fencelock_proto::v1::{ErrorDetail, ErrorReason};
use prost::Message;
use tonic::{Code, Status};

/// A status carrying `detail`.
pub fn status(code: Code, detail: ErrorDetail) -> Status {
    let message = detail.message.clone();
    Status::with_details(code, message, detail.encode_to_vec().into())
}

/// A status with a reason and message.
pub fn reason(code: Code, reason: ErrorReason, message: impl Into<String>) -> Status {
    status(
        code,
        ErrorDetail {
            reason: reason as i32,
            message: message.into(),
            ..Default::default()
        },
    )
}

/// A bad argument.
pub fn invalid_argument(message: impl Into<String>) -> Status {
    reason(Code::InvalidArgument, ErrorReason::InvalidArgument, message)
}

/// "Not the leader", naming the leader when known (a client redirects there). A leader
/// whose client address this node has not learned yet is asked for it first, so a
/// client is never left to guess.
pub async fn not_leader(node: &Node, leader: Option<NodeId>) -> Status {
    let leader = leader.filter(|leader| *leader != node.id());
    match leader {
        Some(leader) => {
            let leader_addr = match node.client_addr_of(leader) {
                Some(addr) => addr,
                None => node.learn_client_addr(leader).await.unwrap_or_default(),
            };
            status(
                Code::Unavailable,
                ErrorDetail {
                    reason: ErrorReason::NotLeader as i32,
                    message: format!(
                        "node {} is not the leader; the leader is node {leader} at {}",
                        node.id(),
                        if leader_addr.is_empty() {
                            "an address not yet known"
                        } else {
                            &leader_addr
                        }
                    ),
                    leader_id: leader,
                    leader_addr,
                    ..Default::default()
                },
            )
        }
        None => reason(
            Code::Unavailable,
            ErrorReason::NoLeader,
            format!(
                "node {} knows no leader with a quorum right now; retry",
                node.id()
            ),
        ),
    }
}

/// Map a proposer error.
pub async fn from_propose(node: &Node, error: ProposeError) -> Status {
    match error {
        ProposeError::NotLeader { leader } => not_leader(node, leader).await,
        ProposeError::Unavailable(message) => reason(
            Code::Unavailable,
            ErrorReason::Unavailable,
            format!("outcome unknown ({message}); retry with the same request id"),
        ),
        ProposeError::Overloaded => status(
            Code::ResourceExhausted,
            ErrorDetail {
                reason: ErrorReason::LimitReached as i32,
                message: "too many commands queued on this node; retry later".into(),
                limit: "queued commands".into(),
                ..Default::default()
            },
        ),
        ProposeError::ShuttingDown => reason(
            Code::Unavailable,
            ErrorReason::Unavailable,
            "node is shutting down",
        ),
        ProposeError::NoSpace(why) => reason(
            Code::ResourceExhausted,
            ErrorReason::NoSpace,
            format!(
                "NO_SPACE: node {} refuses writes: {why}; nothing was applied. Reads, \
                 keepalives and releases still work; retry once space is freed",
                node.id()
            ),
        ),
    }
}

/// Map a read-barrier error.
pub async fn from_barrier(node: &Node, error: BarrierError) -> Status {
    match error {
        BarrierError::NotLeader { leader } => not_leader(node, leader).await,
        BarrierError::ShuttingDown => reason(
            Code::Unavailable,
            ErrorReason::Unavailable,
            "node is shutting down",
        ),
    }
}

/// Map a state-machine refusal.
pub fn from_core(error: &CoreError) -> Status {
    let message = error.to_string();
    let (code, why) = match error {
        CoreError::SessionNotFound(_) => (Code::NotFound, ErrorReason::SessionNotFound),
        CoreError::InvalidName(_) => (Code::InvalidArgument, ErrorReason::InvalidName),
        CoreError::InvalidTtl { .. } => (Code::InvalidArgument, ErrorReason::InvalidTtl),
        CoreError::ValueTooLarge { .. } => (Code::InvalidArgument, ErrorReason::ValueTooLarge),
        CoreError::NotHeld(_) => (Code::FailedPrecondition, ErrorReason::NotHeld),
        CoreError::StaleToken { .. } => (Code::FailedPrecondition, ErrorReason::StaleToken),
        CoreError::AlreadyHeldOrQueued(_) => {
            (Code::AlreadyExists, ErrorReason::AlreadyHeldOrQueued)
        }
        CoreError::NotWaiting(_) => (Code::FailedPrecondition, ErrorReason::NotWaiting),
        CoreError::LimitReached(kind) => {
            return status(
                Code::ResourceExhausted,
                ErrorDetail {
                    reason: ErrorReason::LimitReached as i32,
                    message,
                    limit: kind.to_string(),
                    ..Default::default()
                },
            );
        }
        CoreError::RequestTooOld { .. } => (Code::FailedPrecondition, ErrorReason::RequestTooOld),
        CoreError::TokenOverflow => (Code::OutOfRange, ErrorReason::TokenOverflow),
        CoreError::InvalidLimits(_) => (Code::InvalidArgument, ErrorReason::InvalidArgument),
        CoreError::Auth(auth) if auth.is_unauthenticated() => {
            (Code::Unauthenticated, ErrorReason::Unauthenticated)
        }
        CoreError::Auth(auth) if auth.is_permission_denied() => {
            (Code::PermissionDenied, ErrorReason::PermissionDenied)
        }
        CoreError::Auth(_) => (Code::FailedPrecondition, ErrorReason::Auth),
        CoreError::BadWrapper(_) => (Code::InvalidArgument, ErrorReason::InvalidArgument),
    };
    reason(code, why, message)
}

/// Map a refusal of the authenticator.
pub fn from_auth(error: &AuthError) -> Status {
    match error {
        AuthError::Unauthenticated(message) => reason(
            Code::Unauthenticated,
            ErrorReason::Unauthenticated,
            message.clone(),
        ),
        AuthError::Refused(error) => from_core(error),
        AuthError::InvalidRequestId => invalid_argument(error.to_string()),
        AuthError::Hashing(message) => {
            reason(Code::Internal, ErrorReason::Internal, message.clone())
        }
    }
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        from_auth(&error)
    }
}

/// Decode the `ErrorDetail` of a status, if it carries one.
pub fn detail_of(status: &Status) -> Option<ErrorDetail> {
    ErrorDetail::decode(status.details()).ok()
}
