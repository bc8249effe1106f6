//! Plain data the client hands out: ids, tokens, lock descriptions, cluster status.

use fencelock_proto::v1 as pb;
use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
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

/// Options of [`crate::Session::acquire`]. Built with [`AcquireOptions::exclusive`] or
/// [`AcquireOptions::semaphore`] and the setters (it may grow fields: no struct
/// literals outside this crate).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AcquireOptions {
    /// Exclusive or shared.
    pub mode: LockMode,
    /// Whether and how long to wait.
    pub wait: Wait,
    /// An opaque holder value shown by `describe` and `watch` (e.g. the holder's
    /// address); bounded by the server's `max_value_bytes`.
    pub value: Vec<u8>,
    /// A counting semaphore of this many permits (`None`: an ordinary lock). At most
    /// `permits` permits are out at once; waiters are served in FIFO order and each
    /// grant has its own token. The first acquire of a name not in use fixes the limit;
    /// a different one while it is in use is [`crate::Error::PermitsMismatch`].
    pub permits: Option<u32>,
    /// Permits this acquire takes (semaphores only; 0 counts as 1).
    pub weight: u32,
    /// Exclusive locks only: when this session already holds the lock, the acquire
    /// counts one more hold and returns a guard with the same token (each guard's
    /// release gives one hold back; the lock passes on when the last one is released or
    /// the session ends). Without it, a second acquire is
    /// [`crate::Error::AlreadyHeldOrQueued`].
    pub reentrant: bool,
    /// Lock-delay: when this grant ends because the session expired or was revoked
    /// (not on a release or close), the cluster grants the lock to nobody for this long,
    /// so a resource that cannot check tokens is not written by two holders. Bounded by
    /// the cluster's `max_lock_delay_ms`; zero for none. Whole milliseconds.
    pub lock_delay: Duration,
}

impl AcquireOptions {
    /// An exclusive lock that waits as long as it takes (the default).
    pub fn exclusive() -> AcquireOptions {
        AcquireOptions::default()
    }

    /// A counting semaphore of `permits` permits, taking one (see
    /// [`AcquireOptions::permits`]).
    pub fn semaphore(permits: u32) -> AcquireOptions {
        AcquireOptions {
            permits: Some(permits),
            ..AcquireOptions::default()
        }
    }

    /// A counting semaphore of `permits` permits, or an ordinary lock for `None` (see
    /// [`AcquireOptions::permits`]).
    pub fn permits(mut self, permits: Option<u32>) -> Self {
        self.permits = permits;
        self
    }

    /// Take `weight` permits (semaphores).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// How to wait.
    pub fn wait(mut self, wait: Wait) -> Self {
        self.wait = wait;
        self
    }

    /// Shared or exclusive.
    pub fn mode(mut self, mode: LockMode) -> Self {
        self.mode = mode;
        self
    }

    /// The holder value.
    pub fn value(mut self, value: impl Into<Vec<u8>>) -> Self {
        self.value = value.into();
        self
    }

    /// Reentrant (see [`AcquireOptions::reentrant`]).
    pub fn reentrant(mut self, reentrant: bool) -> Self {
        self.reentrant = reentrant;
        self
    }

    /// A lock-delay (see [`AcquireOptions::lock_delay`]).
    pub fn lock_delay(mut self, delay: Duration) -> Self {
        self.lock_delay = delay;
        self
    }

    /// The wire form of the lock part (everything but the wait) for `name`.
    pub(crate) fn spec(&self, name: &str) -> pb::LockSpec {
        pb::LockSpec {
            name: name.to_string(),
            mode: self.mode.to_pb(),
            permits: self.permits.unwrap_or(0),
            weight: self.weight,
            reentrant: self.reentrant,
            lock_delay_ms: u64::try_from(self.lock_delay.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Why a session is lost (more reasons may come: match with a wildcard arm).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
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
    /// How many times the session holds this grant (above 1 after reentrant acquires).
    pub hold_count: u32,
    /// Permits the grant takes (semaphores; 1 otherwise).
    pub weight: u32,
    /// When it was granted, by the leader's wall clock as recorded in the log (`None`
    /// when the cluster did not record it).
    pub granted_at: Option<SystemTime>,
    /// How long it has been held, by the answering node's clock.
    pub held_for: Option<Duration>,
    /// The lock-delay this grant asked for (zero: none).
    pub lock_delay: Duration,
}

/// One queued waiter of a lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiter {
    /// The waiting session.
    pub session_id: SessionId,
    /// The mode it asked for.
    pub mode: LockMode,
    /// Permits asked for (semaphores; 1 otherwise).
    pub weight: u32,
    /// When it queued, by the leader's wall clock (`None` when not recorded).
    pub queued_at: Option<SystemTime>,
    /// How long it has waited, by the answering node's clock.
    pub waited_for: Option<Duration>,
    /// For a multi-lock wait: every name it waits for together (this one included);
    /// empty for a single-name wait.
    pub names: Vec<String>,
}

/// A lock-delay in force: the lock is granted to nobody until the leader ends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockDelay {
    /// Its length.
    pub delay: Duration,
    /// When it started, by the leader's wall clock (`None` when not recorded).
    pub started_at: Option<SystemTime>,
    /// About how much is left, by the answering node's clock (the leader times it, and
    /// a new leader restarts it in full, so it may last longer).
    pub remaining: Duration,
    /// The token of the grant whose loss started it.
    pub token: FencingToken,
    /// The session whose grant's loss (expiry or revocation) started it: whose lapse
    /// the delay is (`None` when the answering node did not see the delay start).
    pub session_id: Option<SessionId>,
}

/// A wall-clock time in ms since the Unix epoch; 0 is "not recorded".
fn wall_time(unix_ms: u64) -> Option<SystemTime> {
    (unix_ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(unix_ms))
}

/// A duration the server computed; 0 with an unrecorded start is "unknown".
fn elapsed(ms: u64, start_ms: u64) -> Option<Duration> {
    (start_ms != 0).then(|| Duration::from_millis(ms))
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
    /// A semaphore's permit limit (`None`: not a semaphore).
    pub permits: Option<u32>,
    /// Permits out (the sum of the holders' weights) for a semaphore.
    pub permits_used: u32,
    /// The lock-delay in force, if any.
    pub lock_delay: Option<LockDelay>,
}

impl LockInfo {
    /// Free permits of a semaphore (`None`: not a semaphore).
    pub fn permits_free(&self) -> Option<u32> {
        self.permits
            .map(|permits| permits.saturating_sub(self.permits_used))
    }
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
                    hold_count: h.hold_count.max(1),
                    weight: h.weight.max(1),
                    granted_at: wall_time(h.granted_at_ms),
                    held_for: elapsed(h.held_for_ms, h.granted_at_ms),
                    lock_delay: Duration::from_millis(h.lock_delay_ms),
                })
                .collect(),
            waiters: info
                .waiters
                .into_iter()
                .map(|w| Waiter {
                    session_id: SessionId(w.session_id),
                    mode: LockMode::from_pb(w.mode),
                    weight: w.weight.max(1),
                    queued_at: wall_time(w.queued_at_ms),
                    waited_for: elapsed(w.waited_for_ms, w.queued_at_ms),
                    names: w.names,
                })
                .collect(),
            permits: (info.permits != 0).then_some(info.permits),
            permits_used: info.permits_used,
            lock_delay: info.lock_delay.map(|d| LockDelay {
                delay: Duration::from_millis(d.delay_ms),
                started_at: wall_time(d.started_at_ms),
                remaining: Duration::from_millis(d.remaining_ms),
                token: FencingToken(d.token),
                session_id: (d.session_id != 0).then_some(SessionId(d.session_id)),
            }),
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
    /// The cluster version in force in the answering node's applied state; `None`
    /// from a node that predates reporting it.
    pub cluster_version: Option<u32>,
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
            cluster_version: (status.cluster_version != 0).then_some(status.cluster_version),
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
