//! The one place where server-side errors become gRPC statuses: a code plus an
//! `ErrorDetail` (machine-readable reason, leader address for redirects) in the details.

use super::leader::Leader;
use crate::auth::AuthError;
use crate::barrier::BarrierError;
use crate::proposer::ProposeError;
use crate::raft::NodeId;
use crate::raft::membership::MembershipError;
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

/// A watch's start position is older than the node's watch history (etcd answers a
/// compacted revision with OUT_OF_RANGE too).
pub fn compacted(oldest_revision: u64, message: impl Into<String>) -> Status {
    status(
        Code::OutOfRange,
        ErrorDetail {
            reason: ErrorReason::Compacted as i32,
            message: message.into(),
            oldest_revision,
            ..Default::default()
        },
    )
}

/// "Not the leader", naming the leader when known (a client redirects there); `node` is
/// this node. The leader was resolved before (`api/leader.rs`): no I/O here.
pub fn not_leader(node: NodeId, leader: Option<Leader>) -> Status {
    match leader {
        Some(Leader {
            id: leader,
            client_addr: leader_addr,
        }) => status(
            Code::Unavailable,
            ErrorDetail {
                reason: ErrorReason::NotLeader as i32,
                message: format!(
                    "node {node} is not the leader; the leader is node {leader} at {}",
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
        ),
        None => reason(
            Code::Unavailable,
            ErrorReason::NoLeader,
            format!("node {node} knows no leader with a quorum right now; retry"),
        ),
    }
}

/// Map a proposer error of this `node`; `leader` is the resolved leader of a
/// [`ProposeError::NotLeader`].
pub fn from_propose(node: NodeId, error: ProposeError, leader: Option<Leader>) -> Status {
    match error {
        ProposeError::NotLeader { .. } => not_leader(node, leader),
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
                "NO_SPACE: node {node} refuses writes: {why}; nothing was applied. Reads, \
                 keepalives and releases still work; retry once space is freed"
            ),
        ),
        ProposeError::UnsupportedByCluster { needs, cluster } => reason(
            Code::FailedPrecondition,
            ErrorReason::UnsupportedByCluster,
            format!(
                "UNSUPPORTED_BY_CLUSTER: this needs cluster version {needs}, the cluster is \
                 at {cluster} (a member runs an older build); nothing was applied"
            ),
        ),
    }
}

/// Map a read-barrier error of this `node`; `leader` as for [`from_propose`].
pub fn from_barrier(node: NodeId, error: BarrierError, leader: Option<Leader>) -> Status {
    match error {
        BarrierError::NotLeader { .. } => not_leader(node, leader),
        BarrierError::ShuttingDown => reason(
            Code::Unavailable,
            ErrorReason::Unavailable,
            "node is shutting down",
        ),
    }
}

/// Map a membership-change error of this `node`; `leader` as for [`from_propose`].
pub fn from_membership(node: NodeId, error: &MembershipError, leader: Option<Leader>) -> Status {
    match error {
        MembershipError::NotLeader { .. } => not_leader(node, leader),
        MembershipError::Refused(message) => reason(
            Code::FailedPrecondition,
            ErrorReason::Membership,
            message.clone(),
        ),
        MembershipError::Fatal(message) => {
            reason(Code::Unavailable, ErrorReason::Unavailable, message.clone())
        }
        MembershipError::LastVoter => invalid_argument(error.to_string()),
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
        CoreError::PermitsMismatch { .. } => {
            (Code::FailedPrecondition, ErrorReason::PermitsMismatch)
        }
        CoreError::InvalidLockSpec(_) | CoreError::LockDelayTooLong { .. } => {
            (Code::InvalidArgument, ErrorReason::InvalidArgument)
        }
        CoreError::ClusterVersionDowngrade { .. } => {
            (Code::FailedPrecondition, ErrorReason::UnsupportedByCluster)
        }
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
