//! Plain data the client hands out: ids, tokens, lock descriptions, cluster status.

use fencelock_proto::v1 as pb;
use std::fmt;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// A fencing token: strictly increasing per lock and unique across the cluster. Pass it
/// to the protected resource with every write; the resource refuses tokens older than
/// the newest it has seen. The same type as `fencelock_fence::FencingToken`.
pub use fencelock_token::FencingToken;

/// A session (lease) id, assigned by the cluster; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How a lock is held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LockMode {
    /// One holder and no one else.
    #[default]
    Exclusive,
    /// Many shared holders may coexist; an exclusive request waits for all of them.
    Shared,
}

impl LockMode {
    pub(crate) fn to_pb(self) -> i32 {
        match self {
            LockMode::Exclusive => pb::LockMode::Exclusive as i32,
            LockMode::Shared => pb::LockMode::Shared as i32,
        }
    }

    pub(crate) fn from_pb(mode: i32) -> LockMode {
        match pb::LockMode::try_from(mode) {
            Ok(pb::LockMode::Shared) => LockMode::Shared,
            _ => LockMode::Exclusive,
        }
    }
}

/// What an acquire does when the lock is taken.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Wait {
    /// Answer at once ([`Acquisition::WouldBlock`](crate::Acquisition::WouldBlock)).
    NoWait,
    /// Queue for at most this long; then the cluster cancels the wait
    /// ([`Acquisition::TimedOut`](crate::Acquisition::TimedOut)).
    Timeout(Duration),
    /// Queue until granted (or the session ends).
    #[default]
    Forever,
}

/// Options of [`crate::Session::acquire`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AcquireOptions {
    /// Exclusive or shared.
    pub mode: LockMode,
    /// Whether and how long to wait.
    pub wait: Wait,
    /// An opaque holder value shown by `describe` and `watch` (e.g. the holder's
    /// address); bounded by the server's `max_value_bytes`.
    pub value: Vec<u8>,
}

/// Why a session is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LostReason {
    /// No keepalive was answered in time: the client's lease ran out (before the
    /// server's, by the safety margin).
    LeaseExpired,
    /// The server answered that the session does not exist (it expired or was closed).
    SessionNotFound,
    /// The application closed the session.
    Closed,
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LostReason::LeaseExpired => "lease expired on the client",
            LostReason::SessionNotFound => "the server no longer knows the session",
            LostReason::Closed => "closed",
        })
    }
}

/// One holder of a lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The holding session.
    pub session_id: SessionId,
    /// Its grant's token.
    pub token: FencingToken,
    /// Exclusive or shared.
    pub mode: LockMode,
    /// The holder value given when acquiring.
    pub value: Vec<u8>,
    /// The session's client id, when it is a valid UUID.
    pub client_id: Option<Uuid>,
}

/// One queued waiter of a lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiter {
    /// The waiting session.
    pub session_id: SessionId,
    /// The mode it asked for.
    pub mode: LockMode,
}

/// A lock's holders and waiters (a lock exists while someone holds or waits for it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    /// The lock's name.
    pub name: String,
    /// Current grants, in token order.
    pub holders: Vec<Holder>,
    /// The FIFO queue.
    pub waiters: Vec<Waiter>,
}

impl LockInfo {
    pub(crate) fn from_pb(info: pb::LockInfo) -> LockInfo {
        LockInfo {
            name: info.name,
            holders: info
                .holders
                .into_iter()
                .map(|h| Holder {
                    session_id: SessionId(h.session_id),
                    token: FencingToken(h.token),
                    mode: LockMode::from_pb(h.mode),
                    value: h.value,
                    client_id: Uuid::from_slice(&h.client_id).ok(),
                })
                .collect(),
            waiters: info
                .waiters
                .into_iter()
                .map(|w| Waiter {
                    session_id: SessionId(w.session_id),
                    mode: LockMode::from_pb(w.mode),
                })
                .collect(),
        }
    }
}

/// The answer of [`crate::Client::describe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Description {
    /// `None` when no one holds or waits for the lock.
    pub lock: Option<LockInfo>,
    /// The applied log index the answer reflects.
    pub revision: u64,
}

/// One page of [`crate::Client::list_page`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage {
    /// Locks in name order.
    pub locks: Vec<LockInfo>,
    /// Pass as `start_after` for the next page; `None` on the last page.
    pub next_start_after: Option<String>,
    /// The applied log index the page reflects.
    pub revision: u64,
}

/// A live session, as [`crate::Client::list_sessions`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    /// The session's id.
    pub session_id: SessionId,
    /// The id its client chose (`None` if the server sent something that is not a UUID).
    pub client_id: Option<Uuid>,
    /// Its lease's time to live.
    pub ttl: Duration,
    /// The locks it holds with each grant's token, in lock-name order.
    pub held: Vec<(String, FencingToken)>,
    /// The locks it waits for, in lock-name order.
    pub waiting: Vec<String>,
}

impl SessionInfo {
    pub(crate) fn from_pb(info: pb::SessionInfo) -> SessionInfo {
        SessionInfo {
            session_id: SessionId(info.session_id),
            client_id: Uuid::from_slice(&info.client_id).ok(),
            ttl: Duration::from_millis(info.ttl_ms),
            held: info
                .held
                .into_iter()
                .map(|h| (h.name, FencingToken(h.token)))
                .collect(),
            waiting: info.waiting,
        }
    }
}

/// One page of [`crate::Client::list_sessions_page`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionPage {
    /// Sessions in id order.
    pub sessions: Vec<SessionInfo>,
    /// Pass as `start_after` for the next page; `None` on the last page.
    pub next_start_after: Option<SessionId>,
    /// The applied log index the page reflects.
    pub revision: u64,
}

/// The answer of [`crate::Client::verify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verification {
    /// Whether the token is a current grant of the lock.
    pub current: bool,
    /// The largest token among the current holders (`None` when free).
    pub current_token: Option<FencingToken>,
}

/// A cluster member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Node id.
    pub id: u64,
    /// Raft (peer) address.
    pub peer_addr: String,
    /// Client (gRPC) address, when known.
    pub client_addr: Option<String>,
    /// Voter, or learner.
    pub voter: bool,
}

impl Member {
    pub(crate) fn from_pb(member: pb::Member) -> Member {
        Member {
            id: member.id,
            peer_addr: member.peer_addr,
            client_addr: (!member.client_addr.is_empty()).then_some(member.client_addr),
            voter: member.voter,
        }
    }
}

/// One node's view of the cluster ([`crate::Client::status`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStatus {
    /// The answering node.
    pub node_id: u64,
    /// The leader it knows, if any.
    pub leader_id: Option<u64>,
    /// The leader's client address, if known.
    pub leader_addr: Option<String>,
    /// Raft term.
    pub term: u64,
    /// Commit index.
    pub commit_index: u64,
    /// Applied index.
    pub applied_index: u64,
    /// Members.
    pub members: Vec<Member>,
    /// Raft state ("Leader", "Follower", ...).
    pub state: String,
    /// Live sessions.
    pub sessions: u64,
    /// Known locks.
    pub locks: u64,
    /// The last token minted.
    pub last_token: u64,
}

impl ClusterStatus {
    pub(crate) fn from_pb(status: pb::StatusResponse) -> ClusterStatus {
        ClusterStatus {
            node_id: status.node_id,
            leader_id: (status.leader_id != 0).then_some(status.leader_id),
            leader_addr: (!status.leader_addr.is_empty()).then_some(status.leader_addr),
            term: status.term,
            commit_index: status.commit_index,
            applied_index: status.applied_index,
            members: status.members.into_iter().map(Member::from_pb).collect(),
            state: status.state,
            sessions: status.sessions,
            locks: status.locks,
            last_token: status.last_token,
        }
    }
}

/// A lock taken with [`crate::Client::acquire_with_lease`]: it lives as long as a
/// one-lock session the server opened for it, which is not kept alive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseLock {
    /// The lock's name.
    pub name: String,
    /// The grant's token.
    pub token: FencingToken,
    /// The one-lock session; release with [`crate::Client::close_session`].
    pub session_id: SessionId,
    /// The session's TTL, which the server counts from when it took the request in
    /// (a wait for the lock uses it up): see [`LeaseLock::remaining`] for what is left.
    pub ttl: Duration,
    /// The client id the session was opened with.
    pub client_id: Uuid,
    /// How long the lock is still held, at least, when the answer arrived: the TTL
    /// counted on the client's lease clock from the first send of the request, less the
    /// safety margin ([`crate::ClientBuilder::keepalive_safety_margin`]), as a session's
    /// lease is. After a wait of `W` it is at most `ttl - W`.
    pub remaining: Duration,
    /// When [`LeaseLock::remaining`] runs out, as an `Instant` (which, unlike the lease
    /// clock, stops while the machine is suspended).
    pub deadline: Instant,
}
