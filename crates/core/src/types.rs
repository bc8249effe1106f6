//! The vocabulary of the state machine: identifiers, commands, responses, events, errors
//! and limits. Everything here is plain data that is replicated through the Raft log, so
//! every type is `serde`-serializable and has no behaviour that depends on the node.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A session (lease) id, assigned by the state machine from a counter; never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionId(pub u64);

/// A fencing token: one counter for the whole state, incremented on every grant.
/// Strictly increasing per lock and unique across the cluster. The one type the client
/// and the fence use too.
pub use fencelock_token::FencingToken;

/// The id a client picks for a session (a UUID as 128 bits). Opening a session twice with
/// the same client id returns the same live session, so `OpenSession` can be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientId(pub u128);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How a lock is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LockMode {
    /// One holder, no shared holders alongside.
    Exclusive,
    /// Many shared holders may coexist; an exclusive request waits for all of them.
    Shared,
}

/// What an `Acquire` does when the lock cannot be granted at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WaitPolicy {
    /// Answer `WouldBlock` and leave no trace.
    NoWait,
    /// Join the FIFO wait queue. Deadlines are the leader's business: when one passes, the
    /// leader proposes [`Command::CancelWait`].
    Queue,
}

/// Identifies one mutating request of a session, for exactly-once application
/// (Raft dissertation §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestId {
    /// The request's sequence number within its session, starting at 1.
    pub seq: u64,
    /// The client has received the responses of every request below this sequence number,
    /// so the state machine may forget them. A request whose `seq` is below the lowest
    /// sequence number ever announced this way is rejected as
    /// [`Error::RequestTooOld`].
    pub first_unanswered_seq: u64,
}

/// A replicated command. A Raft entry carries a batch of them, applied in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Open a session (a lease) for `client_id`. If a live session with that client id
    /// exists, it is returned again (a retried open acts once).
    OpenSession {
        /// The client's chosen id.
        client_id: ClientId,
        /// The lease's time to live, checked against [`Limits`].
        ttl_ms: u64,
    },
    /// End a session: release every lock it holds and drop every wait it queued, granting
    /// the next waiters in the same entry.
    CloseSession {
        /// The session to end.
        session: SessionId,
    },
    /// Take a lock, or queue for it.
    Acquire {
        /// The session that will hold the lock.
        session: SessionId,
        /// For exactly-once application.
        request: RequestId,
        /// The lock's name (validated against [`Limits`]).
        name: String,
        /// Exclusive or shared.
        mode: LockMode,
        /// Queue, or answer `WouldBlock`.
        wait: WaitPolicy,
        /// An opaque value shown to `Describe` and `Watch` (e.g. the holder's address).
        value: Vec<u8>,
    },
    /// The convenience form: open a one-lock session and acquire in one entry. Retried
    /// with the same client id, it acts once and returns the first answer.
    AcquireWithLease {
        /// The client's chosen id for the new session.
        client_id: ClientId,
        /// The new session's TTL.
        ttl_ms: u64,
        /// The lock's name.
        name: String,
        /// Exclusive or shared.
        mode: LockMode,
        /// Queue, or answer `WouldBlock`.
        wait: WaitPolicy,
        /// An opaque holder value.
        value: Vec<u8>,
    },
    /// Release a held lock. Only the holding session, with the matching token, may.
    Release {
        /// The holding session.
        session: SessionId,
        /// For exactly-once application.
        request: RequestId,
        /// The lock's name.
        name: String,
        /// The token of the grant being released.
        token: FencingToken,
    },
    /// Withdraw a queued wait (deadline passed or the caller gave up). The response says
    /// what the state machine decided: cancelled, or already granted.
    CancelWait {
        /// The waiting session.
        session: SessionId,
        /// The lock waited for.
        name: String,
    },
    /// The leader decided these sessions' leases ran out. Sessions already gone are
    /// skipped.
    ExpireSessions {
        /// Sessions to end, in one entry (the leader bounds the batch size).
        sessions: Vec<SessionId>,
    },
    /// Admin: release every holder of a lock, whatever session holds it.
    ForceRelease {
        /// The lock's name.
        name: String,
    },
    /// Replace the limits. The leader proposes this when its configured limits differ
    /// from the replicated ones, so every replica decides with the same limits.
    SetLimits(Limits),
    /// Authentication and permission administration (see [`crate::auth`]).
    Auth(crate::auth::AuthCommand),
    /// `OpenSession` or `AcquireWithLease` on behalf of an authenticated user, who
    /// becomes the owner of the session it opens. Written by earlier versions and still
    /// applied as they applied it; new entries use [`Command::Authorized`].
    Owned {
        /// The user.
        owner: String,
        /// The wrapped command.
        command: Box<Command>,
    },
    /// Admin: end a live session as expiry would (release what it holds, drop its waits,
    /// hand the locks to their next waiters), recorded as [`EndReason::Revoked`] and
    /// [`ReleaseReason::Revoked`].
    RevokeSession {
        /// The session to end.
        session: SessionId,
    },
    /// A client's command with the caller the API authenticated. `apply` decides, against
    /// the state of this entry, whether that caller may do it (see
    /// [`State::authorize_command`](crate::State::authorize_command)): a credential revoked,
    /// a user removed or a right taken away in an earlier entry refuses it here, whatever
    /// the proposing node had applied when it checked. A session it opens becomes the
    /// caller's. Wraps any command but the leader's own (`ExpireSessions`, `SetLimits`)
    /// and the wrappers `Owned` and `Authorized`.
    Authorized {
        /// Who asked, and the credential the API verified.
        caller: crate::auth::Caller,
        /// The wrapped command.
        command: Box<Command>,
    },
    /// A session-less mutation (`ForceRelease`, `RevokeSession`, `Auth`) with the id its
    /// client chose: the first answer is remembered, and a retry with the same id returns
    /// it without acting again. The state keeps the answers of the last `remember` such
    /// requests (the oldest is forgotten first).
    Once {
        /// The client's id for this request (a UUID).
        request: u128,
        /// How many answers the state keeps (the proposing node's configured bound,
        /// 1..=[`Once::MAX_REMEMBER`](crate::Once::MAX_REMEMBER)).
        remember: u64,
        /// The wrapped command.
        command: Box<Command>,
    },
    /// Take one or more locks at once, all or nothing: the general acquire behind
    /// counting semaphores, reentrancy, lock-delay and atomic multi-locks (`Acquire`
    /// stays as it was).
    ///
    /// With several specs, every name is granted in the same entry, each with its own
    /// token, or none is: a multi-lock that cannot have all its names at once holds
    /// nothing and, with [`WaitPolicy::Queue`], takes a place in the FIFO queue of every
    /// one of its names; it is granted when it is at the head of all of them and every
    /// name admits it (docs/design.md, "Atomic multi-lock"). Answers
    /// [`Response::GrantedLocks`], [`Response::Queued`] (the remembered answer becomes
    /// `GrantedLocks` when granted) or [`Response::WouldBlock`].
    AcquireLocks {
        /// The session that will hold the locks.
        session: SessionId,
        /// For exactly-once application.
        request: RequestId,
        /// The locks: 1..=[`PrimitiveLimits::max_locks_per_request`] specs, names
        /// distinct.
        locks: Vec<LockSpec>,
        /// Queue, or answer `WouldBlock`.
        wait: WaitPolicy,
        /// The holder value every grant of this request carries.
        value: Vec<u8>,
    },
    /// The convenience form of [`Command::AcquireLocks`]: open a one-request session and
    /// acquire in one entry, as [`Command::AcquireWithLease`] does for `Acquire`.
    AcquireLocksWithLease {
        /// The client's chosen id for the new session.
        client_id: ClientId,
        /// The new session's TTL.
        ttl_ms: u64,
        /// The locks, as in `AcquireLocks`.
        locks: Vec<LockSpec>,
        /// Queue, or answer `WouldBlock`.
        wait: WaitPolicy,
        /// The holder value.
        value: Vec<u8>,
    },
    /// The leader's wall clock, as data: the leader's proposer puts one first in each
    /// entry. The state keeps the largest value seen ([`State::clock_ms`]) and stamps
    /// grants (`granted_at_ms`) and waits (`queued_at_ms`) with it; it never reads a
    /// clock itself.
    ///
    /// [`State::clock_ms`]: crate::State::clock_ms
    WallClock {
        /// Milliseconds since the Unix epoch, on the proposing leader's clock.
        unix_ms: u64,
    },
    /// The leader decided a lock-delay has run its course: the name may be granted
    /// again (its waiters are granted in this entry). Ends the delay only if the delay
    /// in force on `name` is the one started by the loss of grant `token` (so a late
    /// proposal cannot cut a newer delay short); otherwise does nothing.
    EndLockDelay {
        /// The lock.
        name: String,
        /// The delay's id: the token of the grant whose loss started it
        /// ([`Event::LockDelayStarted`]).
        token: FencingToken,
    },
    /// The holder replaces its grant's value without releasing (an election leader's
    /// "proclaim"). Answers [`Response::ValueSet`] and emits [`Event::ValueChanged`].
    SetValue {
        /// The holding session.
        session: SessionId,
        /// For exactly-once application.
        request: RequestId,
        /// The lock's name.
        name: String,
        /// The token of the grant whose value changes.
        token: FencingToken,
        /// The new value (checked against `max_value_bytes`).
        value: Vec<u8>,
    },
    /// Replace the limits of the primitives added after [`Limits`] (proposed by the
    /// leader when its configured ones differ, as `SetLimits` is).
    SetPrimitiveLimits(PrimitiveLimits),
    /// Raise the cluster version (see [`crate::version`]): the leader proposes it once
    /// every member says it speaks `version`. A lower version than the one in force is
    /// refused with [`Error::ClusterVersionDowngrade`]; the same one changes nothing.
    SetClusterVersion {
        /// The new cluster version.
        version: u32,
    },
}

/// One lock of a [`Command::AcquireLocks`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockSpec {
    /// The lock's name.
    pub name: String,
    /// Exclusive or shared. A semaphore (`permits` given) is taken in `Shared` mode:
    /// its holders coexist up to the limit.
    pub mode: LockMode,
    /// `Some(n)`: the name is a counting semaphore of `n` permits
    /// (1..=[`PrimitiveLimits::max_permits`]). The first acquire fixes `n` while the name
    /// is in use (held, waited for or in a lock-delay); an acquire with another limit,
    /// or a plain acquire of a semaphore (and the reverse), is refused with
    /// [`Error::PermitsMismatch`].
    pub permits: Option<u32>,
    /// Permits this grant takes: 1..=`n` for a semaphore, exactly 1 otherwise.
    pub weight: u32,
    /// Exclusive only: if this session already holds the lock exclusively, take it again
    /// (same token, hold count + 1) instead of refusing with
    /// [`Error::AlreadyHeldOrQueued`]. Only in a request of one spec.
    pub reentrant: bool,
    /// If this grant is lost by session expiry or revocation (not by release, close or
    /// force-release), nobody is granted the name for this long
    /// (0..=[`PrimitiveLimits::max_lock_delay_ms`]; 0: no delay).
    pub lock_delay_ms: u64,
}

impl LockSpec {
    /// A plain lock of `name` in `mode`: weight 1, not a semaphore, not reentrant, no
    /// delay (what `Acquire` takes).
    pub fn new(name: impl Into<String>, mode: LockMode) -> LockSpec {
        LockSpec {
            name: name.into(),
            mode,
            permits: None,
            weight: 1,
            reentrant: false,
            lock_delay_ms: 0,
        }
    }

    /// A permit of the semaphore `name` of `permits` permits, of weight 1.
    pub fn semaphore(name: impl Into<String>, permits: u32) -> LockSpec {
        LockSpec {
            permits: Some(permits),
            ..LockSpec::new(name, LockMode::Shared)
        }
    }
}

/// One grant of a [`Response::GrantedLocks`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The lock's name.
    pub name: String,
    /// The grant's fencing token (the same token again for a reentrant acquire).
    pub token: FencingToken,
    /// How many times the session holds it (1 but for reentrant acquires).
    pub hold_count: u32,
}

/// The limits of the primitives added after [`Limits`], replicated with
/// [`Command::SetPrimitiveLimits`] (a separate command, so that logs holding the older
/// `SetLimits` still decode).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimitiveLimits {
    /// The longest lock-delay an acquire may ask for (at most
    /// [`PrimitiveLimits::LOCK_DELAY_CEILING_MS`]).
    pub max_lock_delay_ms: u64,
    /// The largest semaphore limit.
    pub max_permits: u32,
    /// Specs in one `AcquireLocks`.
    pub max_locks_per_request: u64,
    /// How many times one session may hold a lock reentrantly.
    pub max_hold_count: u32,
}

impl PrimitiveLimits {
    /// The hard ceiling for `max_lock_delay_ms`: one hour.
    pub const LOCK_DELAY_CEILING_MS: u64 = 3_600_000;
}

impl Default for PrimitiveLimits {
    fn default() -> Self {
        PrimitiveLimits {
            max_lock_delay_ms: 60_000,
            max_permits: 1_000_000,
            max_locks_per_request: 64,
            max_hold_count: 1_000_000,
        }
    }
}

/// A lock-delay in force, as [`State::lock_delay`](crate::State::lock_delay) shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockDelayView {
    /// The delay's id: the token of the grant whose loss started it (what
    /// [`Command::EndLockDelay`] names).
    pub token: FencingToken,
    /// How long the delay lasts, from when the (current) leader learns of it.
    pub delay_ms: u64,
    /// [`State::clock_ms`](crate::State::clock_ms) when it started (0: no wall clock
    /// seen yet).
    pub started_at_ms: u64,
}

/// Bounds of [`Command::Once`].
#[derive(Clone, Copy, Debug)]
pub struct Once;

impl Once {
    /// The ceiling for `remember`: the remembered-answers table never grows past it.
    pub const MAX_REMEMBER: u64 = 1_000_000;
}

/// The successful result of applying a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// A session is open (new, or the live one for this client id).
    SessionOpened {
        /// Its id.
        session: SessionId,
        /// Its TTL.
        ttl_ms: u64,
    },
    /// The session ended.
    SessionClosed,
    /// The lock is held by `session` with `token`.
    Granted {
        /// The holding session (useful for `AcquireWithLease`).
        session: SessionId,
        /// The fencing token of this grant.
        token: FencingToken,
    },
    /// Queued behind other holders or waiters. A later entry grants it (see
    /// [`Event::Acquired`]) or cancels it. For `AcquireWithLease`, `session` is the new
    /// session.
    Queued {
        /// The waiting session.
        session: SessionId,
    },
    /// Not granted and not queued (`WaitPolicy::NoWait`).
    WouldBlock {
        /// The session that asked. For an `AcquireWithLease` that found no live session
        /// for its client id, no session is created and this is `SessionId(0)`.
        session: SessionId,
    },
    /// The wait was withdrawn; nothing is held.
    WaitCancelled,
    /// The lock was released.
    Released,
    /// `ExpireSessions` ended this many sessions.
    SessionsExpired {
        /// How many of the named sessions were live and are now ended.
        count: u64,
    },
    /// `ForceRelease` released this many grants.
    ForceReleased {
        /// How many grants were released.
        count: u64,
    },
    /// New limits are in force.
    LimitsSet,
    /// An [`Command::Auth`] command took effect.
    AuthDone,
    /// `RevokeSession` ended the session.
    SessionRevoked {
        /// How many grants the session held and gave up.
        released: u64,
    },
    /// Every lock of an `AcquireLocks` is held, in name order.
    GrantedLocks {
        /// The holding session (useful for `AcquireLocksWithLease`).
        session: SessionId,
        /// One grant per lock, in name order.
        grants: Vec<Grant>,
    },
    /// A `Release` of a lock held reentrantly: the hold count went down and the session
    /// still holds the lock (same token).
    StillHeld {
        /// The holds left (at least 1).
        hold_count: u32,
    },
    /// `WallClock` was applied; the state's clock is now `unix_ms` (never earlier than
    /// before).
    ClockSet {
        /// The clock in force.
        unix_ms: u64,
    },
    /// `EndLockDelay` was applied.
    LockDelayEnded {
        /// Whether it ended the delay in force (false: no delay with that id).
        ended: bool,
    },
    /// `SetValue` replaced the holder value.
    ValueSet,
    /// New primitive limits are in force.
    PrimitiveLimitsSet,
    /// `SetClusterVersion` was applied; this cluster version is in force.
    ClusterVersionSet {
        /// The cluster version in force.
        version: u32,
    },
}

/// Why the state machine refused a command. Deterministic: every replica refuses alike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Error {
    /// The session does not exist: never opened, closed or expired.
    #[error("session {0} not found (never opened, closed, or expired)")]
    SessionNotFound(SessionId),
    /// Lock names are 1..=max bytes of UTF-8 without control characters.
    #[error("invalid lock name: {0}")]
    InvalidName(String),
    /// The TTL is outside `[min_ttl_ms, max_ttl_ms]`.
    #[error("TTL {ttl_ms} ms is outside {min_ttl_ms}..={max_ttl_ms} ms")]
    InvalidTtl {
        /// Asked for.
        ttl_ms: u64,
        /// Smallest allowed.
        min_ttl_ms: u64,
        /// Largest allowed.
        max_ttl_ms: u64,
    },
    /// The holder value is longer than allowed.
    #[error("holder value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The lock is not held by this session.
    #[error("lock {0:?} is not held by this session")]
    NotHeld(String),
    /// The session holds the lock, but under another token (a stale or wrong token).
    #[error("stale token {given} for lock {name:?} (current grant has {current})")]
    StaleToken {
        /// The lock.
        name: String,
        /// The token given.
        given: FencingToken,
        /// The session's current token.
        current: FencingToken,
    },
    /// The session already holds or waits for this lock.
    #[error("session already holds or waits for lock {0:?}")]
    AlreadyHeldOrQueued(String),
    /// The lock is not being waited for by this session.
    #[error("session is not waiting for lock {0:?}")]
    NotWaiting(String),
    /// A configured limit was reached.
    #[error("limit reached: {0}")]
    LimitReached(LimitKind),
    /// A retried request whose answer was already forgotten.
    #[error("request {seq} is older than the oldest remembered answer ({first_remembered})")]
    RequestTooOld {
        /// The request's sequence number.
        seq: u64,
        /// The lowest sequence number whose answer is still remembered.
        first_remembered: u64,
    },
    /// The token counter would overflow `u64`.
    #[error("fencing token counter exhausted")]
    TokenOverflow,
    /// Invalid limits in `SetLimits`.
    #[error("invalid limits: {0}")]
    InvalidLimits(String),
    /// An auth command was refused.
    #[error("{0}")]
    Auth(crate::auth::AuthError),
    /// A wrapper command (`Authorized`, `Once`) around a command it may not wrap, or a
    /// `Once` with an invalid bound.
    #[error("malformed command: {0}")]
    BadWrapper(String),
    /// The name is a semaphore of another limit, or a semaphore asked for as a plain
    /// lock, or a plain lock asked for as a semaphore (`None`: a plain lock).
    #[error("lock {name:?} is in use as {}, asked for as {}", permits_text(*.limit), permits_text(*.asked))]
    PermitsMismatch {
        /// The lock.
        name: String,
        /// The limit fixed by the acquire that put the name in use.
        limit: Option<u32>,
        /// The limit this acquire asked for.
        asked: Option<u32>,
    },
    /// A [`LockSpec`] or a set of them that cannot be honoured (weight 0 or over the
    /// limit, a reentrant shared lock, a name twice, no locks, ...).
    #[error("invalid lock request: {0}")]
    InvalidLockSpec(String),
    /// A lock-delay longer than [`PrimitiveLimits::max_lock_delay_ms`].
    #[error("lock-delay of {asked_ms} ms exceeds the limit of {max_ms} ms")]
    LockDelayTooLong {
        /// Asked for.
        asked_ms: u64,
        /// The limit.
        max_ms: u64,
    },
    /// A `SetClusterVersion` below the cluster version in force: it never goes down.
    #[error("cluster version {proposed} is below the one in force ({current})")]
    ClusterVersionDowngrade {
        /// In force.
        current: u32,
        /// Proposed.
        proposed: u32,
    },
}

/// How [`Error::PermitsMismatch`] names a limit.
fn permits_text(permits: Option<u32>) -> String {
    match permits {
        Some(1) => "a semaphore of 1 permit".to_owned(),
        Some(n) => format!("a semaphore of {n} permits"),
        None => "a plain lock".to_owned(),
    }
}

/// Which limit was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LimitKind {
    /// Live sessions.
    Sessions,
    /// Locks known (held or waited for).
    Locks,
    /// Waiters on one lock.
    WaitersPerLock,
    /// Locks held or waited for by one session.
    LocksPerSession,
    /// Remembered request answers per session.
    PendingRequestsPerSession,
    /// Sessions named in one `ExpireSessions`.
    ExpireBatch,
    /// Locks in one `AcquireLocks`.
    LocksPerRequest,
    /// Reentrant holds of one lock by one session.
    HoldCount,
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            LimitKind::Sessions => "sessions",
            LimitKind::Locks => "locks",
            LimitKind::WaitersPerLock => "waiters per lock",
            LimitKind::LocksPerSession => "locks per session",
            LimitKind::PendingRequestsPerSession => "pending requests per session",
            LimitKind::ExpireBatch => "sessions per expiry batch",
            LimitKind::LocksPerRequest => "locks per request",
            LimitKind::HoldCount => "reentrant holds of one lock",
        };
        f.write_str(name)
    }
}

/// Every bound the state machine enforces. Replicated (see [`Command::SetLimits`]) so
/// that all replicas decide alike.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Live sessions at once.
    pub max_sessions: u64,
    /// Locks known at once (held or waited for).
    pub max_locks: u64,
    /// Waiters queued on one lock.
    pub max_waiters_per_lock: u64,
    /// Locks one session holds or waits for.
    pub max_locks_per_session: u64,
    /// Remembered answers per session (requests in flight).
    pub max_pending_requests_per_session: u64,
    /// Bytes in a lock name (at most [`Limits::NAME_BYTES_CEILING`]).
    pub max_name_bytes: u64,
    /// Bytes in a holder value.
    pub max_value_bytes: u64,
    /// Smallest session TTL.
    pub min_ttl_ms: u64,
    /// Largest session TTL.
    pub max_ttl_ms: u64,
    /// Sessions one `ExpireSessions` may name.
    pub max_expire_batch: u64,
}

impl Limits {
    /// The hard ceiling for `max_name_bytes`.
    pub const NAME_BYTES_CEILING: u64 = 4096;
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sessions: 1_000_000,
            max_locks: 2_000_000,
            max_waiters_per_lock: 10_000,
            max_locks_per_session: 10_000,
            max_pending_requests_per_session: 1_024,
            max_name_bytes: 512,
            max_value_bytes: 1_024,
            min_ttl_ms: 1_000,
            max_ttl_ms: 3_600_000,
            max_expire_batch: 4_096,
        }
    }
}

/// A change of lock or session state, emitted by `apply` for watchers and for the server's
/// waiting `Acquire` calls. Events are emitted in the order they happened inside the entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A session opened.
    SessionOpened {
        /// The session.
        session: SessionId,
        /// The client's id for it.
        client_id: ClientId,
        /// Its TTL.
        ttl_ms: u64,
    },
    /// A session ended.
    SessionEnded {
        /// The session.
        session: SessionId,
        /// Closed by its client, or expired by the leader.
        reason: EndReason,
    },
    /// A lock was granted (at once, or to a waiter on release/expiry/cancel).
    Acquired {
        /// The lock.
        name: String,
        /// The new holder.
        session: SessionId,
        /// The grant's token.
        token: FencingToken,
        /// Exclusive or shared.
        mode: LockMode,
        /// The holder value.
        value: Vec<u8>,
    },
    /// A grant ended.
    Released {
        /// The lock.
        name: String,
        /// The holder it was.
        session: SessionId,
        /// The grant's token.
        token: FencingToken,
        /// Why it ended.
        reason: ReleaseReason,
    },
    /// A queued wait ended without a grant.
    WaitCancelled {
        /// The lock.
        name: String,
        /// The waiting session.
        session: SessionId,
    },
    /// An auth command took effect (users, roles, tokens or the switch changed): callers
    /// checked before it are checked again.
    AuthChanged {
        /// The new [`State::auth_revision`](crate::State::auth_revision).
        revision: u64,
    },
    /// A holder that asked for a lock-delay lost its grant by expiry or revocation:
    /// nobody is granted `name` until [`Command::EndLockDelay`] ends this delay.
    LockDelayStarted {
        /// The lock.
        name: String,
        /// The delay's id: the token of the lost grant.
        token: FencingToken,
        /// How long the delay lasts.
        delay_ms: u64,
    },
    /// A lock-delay ended; the name may be granted again (grants to waiters follow as
    /// `Acquired` events).
    LockDelayEnded {
        /// The lock.
        name: String,
        /// The delay's id.
        token: FencingToken,
    },
    /// A reentrant acquire or a release changed how many times a session holds a lock;
    /// the grant (and token) stays.
    HoldCountChanged {
        /// The lock.
        name: String,
        /// The holder.
        session: SessionId,
        /// The grant's token.
        token: FencingToken,
        /// The holds now (at least 1).
        hold_count: u32,
    },
    /// A holder replaced its value (`SetValue`).
    ValueChanged {
        /// The lock.
        name: String,
        /// The holder.
        session: SessionId,
        /// The grant's token.
        token: FencingToken,
        /// The new value.
        value: Vec<u8>,
    },
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndReason {
    /// `CloseSession`.
    Closed,
    /// `ExpireSessions`.
    Expired,
    /// An admin's `RevokeSession`.
    Revoked,
}

/// Why a grant ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleaseReason {
    /// `Release` by the holder.
    Released,
    /// The holder's session was closed.
    SessionClosed,
    /// The holder's session expired.
    SessionExpired,
    /// An admin's `ForceRelease`.
    Forced,
    /// The holder's session was revoked by an admin (`RevokeSession`).
    Revoked,
}
