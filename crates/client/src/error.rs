//! The crate's one error type and the one place where a `tonic::Status` becomes it.

use fencelock_proto::v1::{ErrorDetail, ErrorReason};
use prost::Message;
use std::time::Duration;
use tonic::{Code, Status};

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a call failed.
///
/// Every `ErrorReason` the server can answer has a variant; redirects (`NotLeader`) and
/// transient failures (`NoLeader`, `Unavailable`, transport errors) are retried by the
/// client and only surface once the retry budget or deadline is spent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The node answered "not the leader" and the retries ran out before the leader was
    /// reached.
    #[error("not the leader (leader: {leader_addr:?}): {message}")]
    NotLeader {
        /// The leader's client address, when the node knew it.
        leader_addr: Option<String>,
        /// The server's message.
        message: String,
    },
    /// No node knew a leader with a quorum before the retries ran out.
    #[error("no leader: {0}")]
    NoLeader(String),
    /// The session does not exist on the server (closed or expired). It never comes back.
    #[error("session not found: {0}")]
    SessionNotFound(String),
    /// The session's lease ran out on the client's clock (see [`crate::Session::lost`]);
    /// the client refuses to act for it.
    #[error("the session is lost ({0})")]
    SessionLost(crate::LostReason),
    /// The lock name is empty, too long or has control characters.
    #[error("invalid lock name: {0}")]
    InvalidName(String),
    /// The TTL is outside the server's allowed range.
    #[error("invalid TTL: {0}")]
    InvalidTtl(String),
    /// The holder value is larger than the server allows.
    #[error("holder value too large: {0}")]
    ValueTooLarge(String),
    /// The session does not hold the lock.
    #[error("lock not held: {0}")]
    NotHeld(String),
    /// The token is not the session's current grant of the lock.
    #[error("stale token: {0}")]
    StaleToken(String),
    /// The session already holds or waits for the lock.
    #[error("already held or queued: {0}")]
    AlreadyHeldOrQueued(String),
    /// A configured server limit was reached.
    #[error("limit reached ({limit}): {message}")]
    LimitReached {
        /// Which limit: "sessions", "locks", "waiters per lock", ...
        limit: String,
        /// The server's message.
        message: String,
    },
    /// The request id was already forgotten by the server (a retry came too late).
    #[error("request too old: {0}")]
    RequestTooOld(String),
    /// The fencing-token counter would overflow.
    #[error("token overflow: {0}")]
    TokenOverflow(String),
    /// The session was not waiting for the lock.
    #[error("not waiting: {0}")]
    NotWaiting(String),
    /// A malformed argument (bad mode, wait timeout, client id, endpoint, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A membership change was refused.
    #[error("membership change refused: {0}")]
    Membership(String),
    /// The server reported an internal error.
    #[error("internal server error: {0}")]
    Internal(String),
    /// Auth is on and the call carried no credentials, an unknown user, a wrong
    /// password or an unknown bearer token.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The user lacks the right needed on this lock-name prefix, or acted on another
    /// user's session.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// An auth administration command was refused (unknown user or role, no root, ...).
    #[error("auth: {0}")]
    Auth(String),
    /// The leader's data disk is full (its NO_SPACE alarm is up): it refuses writes that
    /// add state. Nothing was applied; reads, keepalives and releases still work, and
    /// the same call succeeds once the operator frees space.
    #[error("no space on the leader's disk: {0}")]
    NoSpace(String),
    /// A semaphore acquire asked for a permit limit other than the one the name is in use
    /// with (the first acquire of a name fixes its limit until nobody holds or waits for
    /// it); the message names both limits.
    #[error("permit limit mismatch: {0}")]
    PermitsMismatch(String),
    /// The cluster could not be reached, or answered "unavailable", until the retries ran
    /// out.
    ///
    /// `outcome_unknown` is true when a mutation may have been applied: some attempt
    /// reached a server and its answer was lost. Such a mutation was sent with a request
    /// id, so retrying it (with a new call) never acts twice *for the same request*, but
    /// the first attempt may have acted.
    #[error("unavailable (outcome unknown: {outcome_unknown}): {message}")]
    Unavailable {
        /// Whether a mutation may have been applied.
        outcome_unknown: bool,
        /// The last failure seen.
        message: String,
    },
    /// The call's deadline passed without an answer.
    #[error("timed out after {elapsed:?} (outcome unknown: {outcome_unknown})")]
    Timeout {
        /// How long the call ran.
        elapsed: Duration,
        /// Whether a mutation may have been applied.
        outcome_unknown: bool,
    },
    /// The client was configured wrongly (no endpoints, a bad URI).
    #[error("configuration: {0}")]
    Config(String),
    /// Any other status the server or the transport answered.
    #[error("gRPC status {code:?}: {message}")]
    Status {
        /// The gRPC code.
        code: Code,
        /// The message.
        message: String,
    },
    /// A watch asked to start (or resume) at a revision whose events no node it tried
    /// still holds: re-read the state (`describe` / `list`) and watch from its revision.
    #[error("watch position compacted (oldest revision held: {oldest_revision}): {message}")]
    Compacted {
        /// The oldest revision a watch may start at on the node that answered.
        oldest_revision: u64,
        /// The server's message.
        message: String,
    },
}

impl Error {
    /// Whether retrying the same call later may succeed (the cluster was unreachable or
    /// leaderless).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::NotLeader { .. }
                | Error::NoLeader(_)
                | Error::Unavailable { .. }
                | Error::Timeout { .. }
        )
    }
}

/// How the retry loop should treat a failed attempt.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Follow the redirect to this leader address.
    Redirect(String),
    /// Try again. `maybe_acted` is true when the attempt may have reached the state
    /// machine. `next_node` is true when the failure belongs to the node tried (it is
    /// down or unreachable, the connection broke, or it knows no leader): another node
    /// may answer at once, so the retry loop moves on without a pause until a whole round
    /// over the nodes failed. Otherwise (the leader answered that it is overloaded or
    /// timed out) the loop pauses first.
    Retry {
        error: Error,
        maybe_acted: bool,
        next_node: bool,
    },
    /// Give up with this error.
    Fatal(Error),
}

/// The error detail a status carries, if any.
pub(crate) fn detail_of(status: &Status) -> Option<ErrorDetail> {
    if status.details().is_empty() {
        return None;
    }
    ErrorDetail::decode(status.details()).ok()
}

/// Classify a failed attempt. The only place a `Status` becomes an [`Error`].
pub(crate) fn classify(status: &Status) -> Failure {
    let message = status.message().to_string();
    let Some(detail) = detail_of(status) else {
        // No detail: the transport (connection refused or reset, h2 error, GOAWAY) or a
        // status from a proxy. All of these may be transient.
        return match status.code() {
            Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Aborted => Failure::Retry {
                // A refused connection never sent anything, but a reset one may have:
                // the transport does not say which, so assume the worst.
                maybe_acted: true,
                next_node: true,
                error: Error::Unavailable {
                    outcome_unknown: true,
                    message: format!("{:?}: {message}", status.code()),
                },
            },
            code => Failure::Fatal(Error::Status { code, message }),
        };
    };
    let message = if detail.message.is_empty() {
        message
    } else {
        detail.message.clone()
    };
    let reason = ErrorReason::try_from(detail.reason).unwrap_or(ErrorReason::Unspecified);
    let fatal = |error| Failure::Fatal(error);
    match reason {
        ErrorReason::NotLeader if !detail.leader_addr.is_empty() => {
            Failure::Redirect(detail.leader_addr)
        }
        ErrorReason::NotLeader => Failure::Retry {
            error: Error::NotLeader {
                leader_addr: None,
                message,
            },
            maybe_acted: false,
            next_node: true,
        },
        // An election is running, or this node is cut off: another may know more.
        ErrorReason::NoLeader => Failure::Retry {
            error: Error::NoLeader(message),
            maybe_acted: false,
            next_node: true,
        },
        // The leader took longer than its request timeout: give it a moment.
        ErrorReason::Unavailable => Failure::Retry {
            error: Error::Unavailable {
                outcome_unknown: true,
                message,
            },
            maybe_acted: true,
            next_node: false,
        },
        // The leader's proposal queue is full: back off and retry; nothing acted.
        ErrorReason::LimitReached if detail.limit == "queued commands" => Failure::Retry {
            error: Error::LimitReached {
                limit: detail.limit,
                message,
            },
            maybe_acted: false,
            next_node: false,
        },
        ErrorReason::LimitReached => fatal(Error::LimitReached {
            limit: detail.limit,
            message,
        }),
        ErrorReason::SessionNotFound => fatal(Error::SessionNotFound(message)),
        ErrorReason::InvalidName => fatal(Error::InvalidName(message)),
        ErrorReason::InvalidTtl => fatal(Error::InvalidTtl(message)),
        ErrorReason::ValueTooLarge => fatal(Error::ValueTooLarge(message)),
        ErrorReason::NotHeld => fatal(Error::NotHeld(message)),
        ErrorReason::StaleToken => fatal(Error::StaleToken(message)),
        ErrorReason::AlreadyHeldOrQueued => fatal(Error::AlreadyHeldOrQueued(message)),
        ErrorReason::RequestTooOld => fatal(Error::RequestTooOld(message)),
        ErrorReason::TokenOverflow => fatal(Error::TokenOverflow(message)),
        ErrorReason::InvalidArgument => fatal(Error::InvalidArgument(message)),
        ErrorReason::Membership => fatal(Error::Membership(message)),
        ErrorReason::Internal => fatal(Error::Internal(message)),
        ErrorReason::NotWaiting => fatal(Error::NotWaiting(message)),
        ErrorReason::Unauthenticated => fatal(Error::Unauthenticated(message)),
        ErrorReason::PermissionDenied => fatal(Error::PermissionDenied(message)),
        ErrorReason::Auth => fatal(Error::Auth(message)),
        ErrorReason::NoSpace => fatal(Error::NoSpace(message)),
        ErrorReason::Compacted => fatal(Error::Compacted {
            oldest_revision: detail.oldest_revision,
            message,
        }),
        ErrorReason::PermitsMismatch => fatal(Error::PermitsMismatch(message)),
        // A rolling upgrade is under way: the command waits for every member's new build.
        ErrorReason::UnsupportedByCluster | ErrorReason::Unspecified => fatal(Error::Status {
            code: status.code(),
            message,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_detail(code: Code, detail: ErrorDetail) -> Status {
        Status::with_details(code, "m", detail.encode_to_vec().into())
    }

    #[test]
    fn not_leader_with_address_redirects() {
        let status = with_detail(
            Code::Unavailable,
            ErrorDetail {
                reason: ErrorReason::NotLeader as i32,
                leader_addr: "127.0.0.1:7000".into(),
                leader_id: 2,
                ..Default::default()
            },
        );
        assert!(matches!(classify(&status), Failure::Redirect(a) if a == "127.0.0.1:7000"));
    }

    #[test]
    fn reasons_map_to_typed_errors() {
        let limit = with_detail(
            Code::ResourceExhausted,
            ErrorDetail {
                reason: ErrorReason::LimitReached as i32,
                limit: "locks".into(),
                message: "too many".into(),
                ..Default::default()
            },
        );
        assert!(matches!(
            classify(&limit),
            Failure::Fatal(Error::LimitReached { limit, .. }) if limit == "locks"
        ));
        let stale = with_detail(
            Code::FailedPrecondition,
            ErrorDetail {
                reason: ErrorReason::StaleToken as i32,
                ..Default::default()
            },
        );
        assert!(matches!(
            classify(&stale),
            Failure::Fatal(Error::StaleToken(_))
        ));
        let unavailable = with_detail(
            Code::Unavailable,
            ErrorDetail {
                reason: ErrorReason::Unavailable as i32,
                ..Default::default()
            },
        );
        assert!(matches!(
            classify(&unavailable),
            Failure::Retry {
                maybe_acted: true,
                ..
            }
        ));
        let no_space = with_detail(
            Code::ResourceExhausted,
            ErrorDetail {
                reason: ErrorReason::NoSpace as i32,
                message: "NO_SPACE: disk full".into(),
                ..Default::default()
            },
        );
        assert!(matches!(
            classify(&no_space),
            Failure::Fatal(Error::NoSpace(message)) if message.contains("NO_SPACE")
        ));
    }

    #[test]
    fn retries_say_whether_another_node_may_answer_at_once() {
        // reason, limit → (maybe_acted, next_node)
        for (reason, limit, expected) in [
            (ErrorReason::Unavailable, "", (true, false)),
            (ErrorReason::LimitReached, "queued commands", (false, false)),
            (ErrorReason::NoLeader, "", (false, true)),
            (ErrorReason::NotLeader, "", (false, true)),
        ] {
            let detail = ErrorDetail {
                reason: reason as i32,
                limit: limit.into(),
                ..Default::default()
            };
            match classify(&with_detail(Code::Unavailable, detail)) {
                Failure::Retry {
                    maybe_acted,
                    next_node,
                    ..
                } => assert_eq!((maybe_acted, next_node), expected, "{reason:?}"),
                other => panic!("{reason:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn bare_transport_errors_are_retried() {
        let refused = Status::unavailable("connection refused");
        assert!(matches!(
            classify(&refused),
            Failure::Retry {
                next_node: true,
                ..
            }
        ));
        let reset = Status::unknown("h2 reset");
        assert!(matches!(
            classify(&reset),
            Failure::Retry {
                maybe_acted: true,
                ..
            }
        ));
        assert!(matches!(
            classify(&Status::permission_denied("no")),
            Failure::Fatal(Error::Status { .. })
        ));
    }
}
