//! The replicated state itself: sessions, locks, wait queues, the token counter and the
//! limits, plus the record types and small helpers that every command shares.
//!
//! The fields are `pub(crate)` so that the sibling modules (`apply`, `invariants`,
//! `view`) can each own one concern; nothing outside the crate sees them.
//!
//! # Layout
//!
//! The state is sized for millions of held locks, most of them held by one session with
//! no one waiting, so a held lock costs about 200 bytes (benches/memory.rs measures it):
//!
//! - a lock's name is one [`Name`] (`Arc<str>`) allocation, shared by the lock's key in
//!   [`State::locks`] and the `held`/`waiting` entries of the sessions that hold or wait
//!   for it (deserializing re-establishes the sharing);
//! - a lock's holders and wait queue ([`crate::compact`]) keep a single grant inline and
//!   allocate nothing for an empty queue;
//! - values are `Box<[u8]>`: no spare capacity, no allocation when empty.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};

use crate::compact::{Holders, WaitQueue};
use crate::grant_index::GrantIndex;
use crate::types::{
    ClientId, Error, FencingToken, Limits, LockMode, PrimitiveLimits, RequestId, Response,
    SessionId,
};
use crate::validate::widen;

/// A lock's name, allocated once per known lock and shared by reference count between
/// [`State::locks`] and the sessions' `held` and `waiting` (see the module docs). Ordered
/// and compared by its text, and serialized as a plain string.
pub(crate) type Name = Arc<str>;

/// The whole replicated lock state: what every replica holds in memory and snapshots.
///
/// It changes only through [`State::apply`], which is pure and deterministic: the same
/// commands applied to equal states give equal states, results and events on every
/// replica. Every collection is ordered (`BTreeMap`, `VecDeque`), so iteration order, and
/// therefore event order and the serialized form, never depends on hashing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct State {
    /// The limits in force for new admissions.
    pub(crate) limits: Limits,
    /// The widest limits ever in force (largest maxima, smallest `min_ttl_ms`). Lowering a
    /// limit leaves existing state alone, so the invariants check counts against this.
    pub(crate) limits_envelope: Limits,
    /// The id the next new session gets; ids are never reused.
    pub(crate) next_session_id: u64,
    /// The last fencing token minted (0: none yet). Never goes down.
    pub(crate) last_token: u64,
    /// Live sessions.
    pub(crate) sessions: BTreeMap<SessionId, SessionRecord>,
    /// Live sessions by their client's id (one live session per client id).
    pub(crate) sessions_by_client: BTreeMap<ClientId, SessionId>,
    /// Locks that are held or waited for; a lock with neither is forgotten at once.
    pub(crate) locks: BTreeMap<Name, LockRecord>,
    /// Grants in force, over all locks.
    pub(crate) held_grants: u64,
    /// Queued waits, over all locks.
    pub(crate) waiters: u64,
    /// Grants ever made by this state.
    pub(crate) total_grants: u64,
    /// Sessions ever ended by `ExpireSessions`.
    pub(crate) total_expired_sessions: u64,
    /// Users, roles, tokens, session owners (see [`crate::auth`]).
    pub(crate) auth: crate::auth::AuthState,
    /// Auth commands that took effect (see [`State::auth_revision`]). Since snapshot
    /// format 2.
    pub(crate) auth_revision: u64,
    /// Answers of the last session-less requests ([`crate::Command::Once`]). Since
    /// snapshot format 2.
    pub(crate) recent_requests: crate::auth::RecentRequests,
    /// The largest wall clock seen in a [`crate::Command::WallClock`] (ms since the
    /// epoch; 0: none yet). Since snapshot format 3.
    pub(crate) clock_ms: u64,
    /// The limits of the newer primitives. Since snapshot format 3.
    pub(crate) primitive_limits: PrimitiveLimits,
    /// Lock-delays in force, by lock name; each such lock is kept in [`State::locks`]
    /// (even with no holder or waiter) until its delay ends. Since snapshot format 3.
    pub(crate) lock_delays: BTreeMap<Name, LockDelay>,
    /// The grants in force by grant time ([`crate::grant_index`]): derived from
    /// [`State::locks`], not serialized, rebuilt when a state is decoded.
    #[serde(skip)]
    pub(crate) grant_index: GrantIndex,
    /// The cluster version in force ([`crate::version`]); never goes down. Since
    /// snapshot format 4, which is written only once it is above 1, so that nodes of
    /// the builds before it can read a snapshot while they may still be members.
    pub(crate) cluster_version: u32,
}

/// A lock-delay in force on one lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LockDelay {
    /// Its id: the token of the lost grant that started it.
    pub(crate) token: FencingToken,
    /// How long it lasts.
    pub(crate) delay_ms: u32,
    /// [`State::clock_ms`] when it started.
    pub(crate) started_at_ms: u64,
    /// The last token minted when it started: every holder of the lock has a token at
    /// most this (no grant during a delay).
    pub(crate) last_token_at_start: u64,
}

/// One live session (lease).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    /// The id its client chose.
    pub(crate) client_id: ClientId,
    /// Its lease's time to live, as granted.
    pub(crate) ttl_ms: u64,
    /// Locks it holds, with the token of each grant. Each name is the lock's key in
    /// [`State::locks`] (the same allocation).
    pub(crate) held: BTreeMap<Name, FencingToken>,
    /// Locks it waits for, each name the lock's key in [`State::locks`].
    pub(crate) waiting: BTreeSet<Name>,
    /// Remembered answers of `Acquire` and `Release`, by request sequence number.
    pub(crate) answers: BTreeMap<u64, Result<Response, Error>>,
    /// Answers below this sequence number were forgotten (the client acknowledged them).
    pub(crate) forgotten_below: u64,
}

/// One known lock: its holders and its FIFO wait queue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LockRecord {
    /// Grants in force, by token; so iteration is in grant order.
    pub(crate) holders: Holders,
    /// Waits, oldest first.
    pub(crate) waiters: WaitQueue,
    /// `Some(n)`: a counting semaphore of `n` permits, fixed by the acquire that made
    /// the lock known. Since snapshot format 3.
    pub(crate) permits: Option<u32>,
}

/// A grant in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Holder {
    /// The holding session.
    pub(crate) session: SessionId,
    /// Exclusive or shared.
    pub(crate) mode: LockMode,
    /// The opaque holder value.
    pub(crate) value: Box<[u8]>,
    /// [`State::clock_ms`] when granted. Since snapshot format 3.
    pub(crate) granted_at_ms: u64,
    /// Permits taken (1 but for semaphores). Since snapshot format 3.
    pub(crate) weight: u32,
    /// Reentrant holds (at least 1). Since snapshot format 3.
    pub(crate) hold_count: u32,
    /// The lock-delay that losing this grant by expiry or revocation starts (0: none).
    /// Since snapshot format 3.
    pub(crate) lock_delay_ms: u32,
}

/// A queued wait.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Waiter {
    /// The waiting session.
    pub(crate) session: SessionId,
    /// The mode it asked for.
    pub(crate) mode: LockMode,
    /// The value its grant will carry.
    pub(crate) value: Box<[u8]>,
    /// The sequence number of the `Acquire` that queued it, whose remembered answer is
    /// kept current (granted or cancelled).
    pub(crate) seq: u64,
    /// [`State::clock_ms`] when queued. Since snapshot format 3.
    pub(crate) queued_at_ms: u64,
    /// Permits it asks for (1 but for semaphores). Since snapshot format 3.
    pub(crate) weight: u32,
    /// The lock-delay its grant will carry. Since snapshot format 3.
    pub(crate) lock_delay_ms: u32,
    /// `Some`: queued by an `AcquireLocks`, whose names these are (sorted, distinct, at
    /// least one): the request waits in each of their queues with the same `seq`, and
    /// is granted all of them at once. Since snapshot format 3.
    pub(crate) group: Option<Box<[Name]>>,
}

/// What the request-id check decided for an `Acquire` or `Release`.
pub(crate) enum Dedup {
    /// Already answered: return this answer and change nothing.
    Replay(Result<Response, Error>),
    /// Not seen before: act, then remember the answer.
    Fresh,
}

impl SessionRecord {
    /// A session with nothing held, waited for or remembered.
    pub(crate) fn new(client_id: ClientId, ttl_ms: u64) -> SessionRecord {
        SessionRecord {
            client_id,
            ttl_ms,
            held: BTreeMap::new(),
            waiting: BTreeSet::new(),
            answers: BTreeMap::new(),
            forgotten_below: 1,
        }
    }

    /// Locks held or waited for.
    pub(crate) fn lock_count(&self) -> u64 {
        count(self.held.len()) + count(self.waiting.len())
    }

    /// The exactly-once check of Raft dissertation §6.3. First records the client's
    /// acknowledgement (`first_unanswered_seq`) by forgetting the answers below it; then a
    /// remembered request is replayed, a forgotten one refused, and a new one admitted if
    /// there is room to remember its answer.
    pub(crate) fn begin_request(
        &mut self,
        request: RequestId,
        max_pending: u64,
    ) -> Result<Dedup, Error> {
        if request.first_unanswered_seq > self.forgotten_below {
            self.forgotten_below = request.first_unanswered_seq;
            // In place: `split_off` would build a new tree on every request.
            while self
                .answers
                .first_key_value()
                .is_some_and(|(&seq, _)| seq < self.forgotten_below)
            {
                self.answers.pop_first();
            }
        }
        if let Some(answer) = self.answers.get(&request.seq) {
            return Ok(Dedup::Replay(answer.clone()));
        }
        if request.seq < self.forgotten_below {
            return Err(Error::RequestTooOld {
                seq: request.seq,
                first_remembered: self.forgotten_below,
            });
        }
        if count(self.answers.len()) >= max_pending {
            return Err(Error::LimitReached(
                crate::types::LimitKind::PendingRequestsPerSession,
            ));
        }
        Ok(Dedup::Fresh)
    }
}

impl LockRecord {
    /// Whether an exclusive grant is in force. An exclusive holder is the only holder
    /// (invariant 1), so looking at one holder is enough.
    pub(crate) fn has_exclusive_holder(&self) -> bool {
        self.holders
            .first()
            .is_some_and(|holder| holder.mode == LockMode::Exclusive)
    }

    /// Whether the current holders leave room for a grant in `mode` (ignoring the queue
    /// and any lock-delay), of `weight` permits on a semaphore.
    pub(crate) fn admits(&self, mode: LockMode, weight: u32) -> bool {
        if let Some(permits) = self.permits {
            #[cfg(feature = "model-mutants")]
            if crate::mutants::active(crate::mutants::Mutant::SemaphoreCountsHolders) {
                return 1 <= u64::from(permits).saturating_sub(count(self.holders.len()));
            }
            return u64::from(weight) <= u64::from(permits).saturating_sub(self.permits_used());
        }
        match mode {
            LockMode::Exclusive => self.holders.is_empty(),
            LockMode::Shared => !self.has_exclusive_holder(),
        }
    }

    /// Permits out: the sum of the holders' weights.
    pub(crate) fn permits_used(&self) -> u64 {
        self.holders
            .iter()
            .map(|(_, holder)| u64::from(holder.weight))
            .sum()
    }

    /// No holders and no waiters: the lock is forgotten.
    pub(crate) fn is_idle(&self) -> bool {
        self.holders.is_empty() && self.waiters.is_empty()
    }
}

/// A collection length as a `u64`, the unit of every limit. Lossless: `usize` is at most
/// 64 bits on every target Rust supports.
pub(crate) fn count(len: usize) -> u64 {
    len as u64
}

/// The token after `last_token`, or [`Error::TokenOverflow`].
pub(crate) fn next_token(last_token: u64) -> Result<FencingToken, Error> {
    last_token
        .checked_add(1)
        .map(FencingToken)
        .ok_or(Error::TokenOverflow)
}

/// [`State`]'s fields as serde derives their decoding (`remote`: it builds a `State`),
/// for [`State`]'s `Deserialize` to complete. A field missing here, or of another type,
/// does not compile. Kept private, unlike `remote = "Self"`, which would add a public
/// inherent `State::deserialize` that skips [`State::share_names`].
#[derive(Deserialize)]
#[serde(remote = "State")]
struct StateFields {
    limits: Limits,
    limits_envelope: Limits,
    next_session_id: u64,
    last_token: u64,
    sessions: BTreeMap<SessionId, SessionRecord>,
    sessions_by_client: BTreeMap<ClientId, SessionId>,
    locks: BTreeMap<Name, LockRecord>,
    held_grants: u64,
    waiters: u64,
    total_grants: u64,
    total_expired_sessions: u64,
    auth: crate::auth::AuthState,
    auth_revision: u64,
    recent_requests: crate::auth::RecentRequests,
    clock_ms: u64,
    primitive_limits: PrimitiveLimits,
    lock_delays: BTreeMap<Name, LockDelay>,
    #[serde(skip)]
    grant_index: GrantIndex,
    cluster_version: u32,
}

/// [`State`]'s fields as snapshot format 3 had them: all but the cluster version, which
/// was 1 then. Both ways: a state whose cluster version is 1 is written in this form
/// (see [`StateV3Ref`]).
#[derive(Deserialize, Serialize)]
#[serde(remote = "State")]
struct StateFieldsV3 {
    limits: Limits,
    limits_envelope: Limits,
    next_session_id: u64,
    last_token: u64,
    sessions: BTreeMap<SessionId, SessionRecord>,
    sessions_by_client: BTreeMap<ClientId, SessionId>,
    locks: BTreeMap<Name, LockRecord>,
    held_grants: u64,
    waiters: u64,
    total_grants: u64,
    total_expired_sessions: u64,
    auth: crate::auth::AuthState,
    auth_revision: u64,
    recent_requests: crate::auth::RecentRequests,
    clock_ms: u64,
    primitive_limits: PrimitiveLimits,
    lock_delays: BTreeMap<Name, LockDelay>,
    #[serde(skip)]
    grant_index: GrantIndex,
    #[serde(skip, default = "initial_cluster_version")]
    cluster_version: u32,
}

/// The cluster version of the formats before it was recorded.
fn initial_cluster_version() -> u32 {
    crate::version::INITIAL_CLUSTER_VERSION
}

/// [`State`]'s fields as snapshot format 2 had them: the locks' records in their older
/// shape, and the fields added since not in the encoding (they start empty).
#[derive(Deserialize)]
#[serde(remote = "State")]
struct StateFieldsV2 {
    limits: Limits,
    limits_envelope: Limits,
    next_session_id: u64,
    last_token: u64,
    sessions: BTreeMap<SessionId, SessionRecord>,
    sessions_by_client: BTreeMap<ClientId, SessionId>,
    #[serde(deserialize_with = "locks_v2")]
    locks: BTreeMap<Name, LockRecord>,
    held_grants: u64,
    waiters: u64,
    total_grants: u64,
    total_expired_sessions: u64,
    auth: crate::auth::AuthState,
    auth_revision: u64,
    recent_requests: crate::auth::RecentRequests,
    #[serde(skip)]
    clock_ms: u64,
    #[serde(skip)]
    primitive_limits: PrimitiveLimits,
    #[serde(skip)]
    lock_delays: BTreeMap<Name, LockDelay>,
    #[serde(skip)]
    grant_index: GrantIndex,
    #[serde(skip, default = "initial_cluster_version")]
    cluster_version: u32,
}

/// A grant as snapshot formats 1 and 2 encode it.
#[derive(Deserialize)]
struct HolderV2 {
    session: SessionId,
    mode: LockMode,
    value: Box<[u8]>,
}

/// A wait as snapshot formats 1 and 2 encode it.
#[derive(Deserialize)]
struct WaiterV2 {
    session: SessionId,
    mode: LockMode,
    value: Box<[u8]>,
    seq: u64,
}

/// A lock as snapshot formats 1 and 2 encode it.
#[derive(Deserialize)]
struct LockRecordV2 {
    holders: BTreeMap<FencingToken, HolderV2>,
    waiters: std::collections::VecDeque<WaiterV2>,
}

/// Decodes the locks of snapshot formats 1 and 2: plain locks, granted and queued before
/// any wall clock was known.
fn locks_v2<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<Name, LockRecord>, D::Error> {
    let old = BTreeMap::<Name, LockRecordV2>::deserialize(deserializer)?;
    Ok(old
        .into_iter()
        .map(|(name, lock)| {
            let mut record = LockRecord::default();
            for (token, holder) in lock.holders {
                record.holders.insert(
                    token,
                    Holder {
                        session: holder.session,
                        mode: holder.mode,
                        value: holder.value,
                        granted_at_ms: 0,
                        weight: 1,
                        hold_count: 1,
                        lock_delay_ms: 0,
                    },
                );
            }
            for waiter in lock.waiters {
                record.waiters.push_back(Waiter {
                    session: waiter.session,
                    mode: waiter.mode,
                    value: waiter.value,
                    seq: waiter.seq,
                    queued_at_ms: 0,
                    weight: 1,
                    lock_delay_ms: 0,
                    group: None,
                });
            }
            (name, record)
        })
        .collect())
}

/// [`State`]'s fields as snapshot format 1 had them: the fields added since are not in
/// the encoding and start empty.
#[derive(Deserialize)]
#[serde(remote = "State")]
struct StateFieldsV1 {
    limits: Limits,
    limits_envelope: Limits,
    next_session_id: u64,
    last_token: u64,
    sessions: BTreeMap<SessionId, SessionRecord>,
    sessions_by_client: BTreeMap<ClientId, SessionId>,
    #[serde(deserialize_with = "locks_v2")]
    locks: BTreeMap<Name, LockRecord>,
    held_grants: u64,
    waiters: u64,
    total_grants: u64,
    total_expired_sessions: u64,
    auth: crate::auth::AuthState,
    #[serde(skip)]
    auth_revision: u64,
    #[serde(skip)]
    recent_requests: crate::auth::RecentRequests,
    #[serde(skip)]
    clock_ms: u64,
    #[serde(skip)]
    primitive_limits: PrimitiveLimits,
    #[serde(skip)]
    lock_delays: BTreeMap<Name, LockDelay>,
    #[serde(skip)]
    grant_index: GrantIndex,
    #[serde(skip, default = "initial_cluster_version")]
    cluster_version: u32,
}

/// A [`State`] decoded from the encoding of snapshot format 1 (before the auth revision
/// and the remembered session-less answers): `postcard::from_bytes::<StateV1>(old)`,
/// then `.0`. Session owners whose user no longer exists are dropped, as removing the
/// user does now.
#[derive(Debug)]
pub struct StateV1(pub State);

impl<'de> Deserialize<'de> for StateV1 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StateV1, D::Error> {
        let mut state = StateFieldsV1::deserialize(deserializer)?;
        state.share_names();
        let crate::auth::AuthState {
            users,
            session_owners,
            ..
        } = &mut state.auth;
        session_owners.retain(|_, owner| users.contains_key(owner));
        Ok(StateV1(state))
    }
}

/// A [`State`] decoded from the encoding of snapshot format 2 (before semaphores,
/// reentrancy, lock-delays, multi-locks and the wall clock): `postcard::from_bytes::<StateV2>(old)`,
/// then `.0`. Its locks become plain locks, granted and queued at time 0.
#[derive(Debug)]
pub struct StateV2(pub State);

impl<'de> Deserialize<'de> for StateV2 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StateV2, D::Error> {
        let mut state = StateFieldsV2::deserialize(deserializer)?;
        state.share_names();
        Ok(StateV2(state))
    }
}

/// A [`State`] decoded from the encoding of snapshot format 3 (before the cluster
/// version): `postcard::from_bytes::<StateV3>(old)`, then `.0`. Its cluster version is 1.
#[derive(Debug)]
pub struct StateV3(pub State);

impl<'de> Deserialize<'de> for StateV3 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StateV3, D::Error> {
        let mut state = StateFieldsV3::deserialize(deserializer)?;
        state.share_names();
        Ok(StateV3(state))
    }
}

/// Encodes a [`State`] in the form of snapshot format 3, which builds that do not know
/// the cluster version read: every field but the cluster version. Only sound while the
/// cluster version is 1 (what a format-3 reader takes it to be).
#[derive(Debug)]
pub struct StateV3Ref<'a>(pub &'a State);

impl Serialize for StateV3Ref<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StateFieldsV3::serialize(self.0, serializer)
    }
}

/// Decodes the fields, then makes every session's lock names share the lock's own name
/// allocation again (each was decoded as a separate string): the snapshot format names
/// each lock once per session that holds or waits for it.
impl<'de> Deserialize<'de> for State {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<State, D::Error> {
        let mut state = StateFields::deserialize(deserializer)?;
        state.share_names();
        Ok(state)
    }
}

impl State {
    /// Replaces every name in the sessions' `held` and `waiting` by the lock's key with
    /// the same text. A name with no such lock (only in a corrupted snapshot, which
    /// `check_invariants` refuses) is left as it is. Also rebuilds the grant index, which
    /// is not in the encoding: every decoded state passes through here.
    fn share_names(&mut self) {
        self.rebuild_grant_index();
        let State {
            sessions, locks, ..
        } = self;
        let shared = |name: Name| match locks.get_key_value(&name) {
            Some((key, _)) => Arc::clone(key),
            None => name,
        };
        for record in sessions.values_mut() {
            record.held = std::mem::take(&mut record.held)
                .into_iter()
                .map(|(name, token)| (shared(name), token))
                .collect();
            record.waiting = std::mem::take(&mut record.waiting)
                .into_iter()
                .map(shared)
                .collect();
        }
    }
}

impl Default for State {
    /// An empty state with [`Limits::default`].
    fn default() -> Self {
        State::new(Limits::default())
    }
}

impl State {
    /// An empty state: no sessions, no locks, no token minted yet (the first grant gets
    /// token 1), session ids from 1.
    ///
    /// # Panics
    ///
    /// If `limits` are invalid (see [`Limits::validate`]): configuration must be checked
    /// before it reaches the state machine.
    pub fn new(limits: Limits) -> State {
        State::starting_after(limits, FencingToken(0))
    }

    /// An empty state whose first grant gets the token after `last_token`.
    ///
    /// For a cluster rebuilt from scratch in front of resources that have already seen
    /// tokens up to `last_token`: tokens must never go back, whatever happened to the
    /// cluster's data.
    ///
    /// # Panics
    ///
    /// If `limits` are invalid (see [`Limits::validate`]).
    pub fn starting_after(limits: Limits, last_token: FencingToken) -> State {
        if let Err(error) = limits.validate() {
            panic!("State created with invalid limits: {error}");
        }
        State {
            limits_envelope: widen(&limits, &limits),
            limits,
            next_session_id: 1,
            last_token: last_token.0,
            sessions: BTreeMap::new(),
            sessions_by_client: BTreeMap::new(),
            locks: BTreeMap::new(),
            held_grants: 0,
            waiters: 0,
            total_grants: 0,
            total_expired_sessions: 0,
            auth: crate::auth::AuthState::default(),
            auth_revision: 0,
            recent_requests: crate::auth::RecentRequests::default(),
            clock_ms: 0,
            primitive_limits: PrimitiveLimits::default(),
            lock_delays: BTreeMap::new(),
            grant_index: GrantIndex::default(),
            cluster_version: crate::version::INITIAL_CLUSTER_VERSION,
        }
    }
}
