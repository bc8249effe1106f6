//! Acquiring: `Acquire`, `AcquireWithLease`, `AcquireLocks` and `AcquireLocksWithLease`
//! share one path. A request names one or more locks ([`LockSpec`]s); it is checked
//! whole, then granted whole, queued whole (a place in every name's FIFO queue), answered
//! `WouldBlock`, or (one reentrant spec the session already holds) re-entered.
//!
//! `Acquire` is the request of one plain spec whose answer has the older form
//! (`Granted`, not `GrantedLocks`), so it behaves exactly as before the newer
//! primitives.

use std::collections::btree_map::Entry;

use crate::state::{Dedup, Holder, LockRecord, Name, SessionRecord, State, Waiter, count};
use crate::types::{
    ClientId, Error, Event, FencingToken, Grant, LimitKind, LockMode, LockSpec, RequestId,
    Response, SessionId, WaitPolicy,
};
use crate::validate::{validate_name, validate_ttl, validate_value};

use super::settle::{Mutant, mutant};

/// Which command asked, which decides the form of the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Form {
    /// `Acquire` / `AcquireWithLease`: answered `Granted`; its wait has no group.
    Acquire,
    /// `AcquireLocks` / `AcquireLocksWithLease`: answered `GrantedLocks`; its waits
    /// carry the request's names.
    Locks,
}

/// An acquire request, its specs in name order once checked.
pub(super) struct LockRequest {
    pub(super) specs: Vec<LockSpec>,
    pub(super) wait: WaitPolicy,
    pub(super) value: Vec<u8>,
    pub(super) form: Form,
}

impl LockRequest {
    /// The request an `Acquire` of `name` makes.
    pub(super) fn single(name: String, mode: LockMode, wait: WaitPolicy, value: Vec<u8>) -> Self {
        LockRequest {
            specs: vec![LockSpec::new(name, mode)],
            wait,
            value,
            form: Form::Acquire,
        }
    }

    /// The request an `AcquireLocks` makes.
    pub(super) fn locks(specs: Vec<LockSpec>, wait: WaitPolicy, value: Vec<u8>) -> Self {
        LockRequest {
            specs,
            wait,
            value,
            form: Form::Locks,
        }
    }
}

/// What an admissible acquire will do, decided before anything changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Grant every spec at once.
    Grant,
    /// The session holds the one (reentrant) spec's lock: one hold more.
    Reenter,
    /// Answer `WouldBlock`, leave no trace.
    WouldBlock,
    /// Queue on every spec's lock.
    Queue,
}

impl State {
    pub(super) fn acquire(
        &mut self,
        session: SessionId,
        request: RequestId,
        lock_request: LockRequest,
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        let max_pending = self.limits.max_pending_requests_per_session;
        let record = self
            .sessions
            .get_mut(&session)
            .ok_or(Error::SessionNotFound(session))?;
        if let Dedup::Replay(answer) = record.begin_request(request, max_pending)? {
            return answer;
        }
        let result = self.acquire_fresh(session, request.seq, lock_request, events);
        self.remember(session, request.seq, &result);
        result
    }

    /// An acquire by a live session, past the request-id check.
    fn acquire_fresh(
        &mut self,
        session: SessionId,
        seq: u64,
        mut lock_request: LockRequest,
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        self.check_request(&mut lock_request)?;
        let plan = self.plan_acquire(Some(&self.sessions[&session]), &lock_request)?;
        Ok(self.execute_acquire(session, seq, lock_request, plan, events))
    }

    /// Checks a request on its own (names, value, each spec against the limits), and
    /// puts its specs in name order. For an `Acquire`: the name, then the value, as
    /// before the newer primitives.
    fn check_request(&self, request: &mut LockRequest) -> Result<(), Error> {
        let limits = &self.primitive_limits;
        if request.specs.is_empty() {
            return Err(Error::InvalidLockSpec("no lock named".to_owned()));
        }
        if count(request.specs.len()) > limits.max_locks_per_request {
            return Err(Error::LimitReached(LimitKind::LocksPerRequest));
        }
        for spec in &request.specs {
            validate_name(self.limits.max_name_bytes, &spec.name)?;
        }
        validate_value(self.limits.max_value_bytes, &request.value)?;
        request.specs.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(pair) = request
            .specs
            .windows(2)
            .find(|pair| pair[0].name == pair[1].name)
        {
            return Err(Error::InvalidLockSpec(format!(
                "lock {:?} is named twice",
                pair[0].name
            )));
        }
        let several = request.specs.len() > 1;
        for spec in &request.specs {
            check_spec(spec, several, limits)?;
        }
        Ok(())
    }

    /// Decides what a checked request would do, checking every limit first. Grantable at
    /// once iff every name is in no lock-delay, has an empty queue (no barging past a
    /// waiter) and holders that admit the spec.
    ///
    /// Checked in this order: the session's own holds and waits, the semaphore limits
    /// in force; then locks per session and (grant) the lock table and the token
    /// counter, or (queue) the lock table and the waiters on each lock. `WouldBlock`
    /// leaves no trace, so no limit applies to it.
    fn plan_acquire(
        &self,
        record: Option<&SessionRecord>,
        request: &LockRequest,
    ) -> Result<Plan, Error> {
        if let Some(record) = record {
            for spec in &request.specs {
                if let Some(&token) = record.held.get(spec.name.as_str()) {
                    return self.plan_reentry(spec, token);
                }
                if record.waiting.contains(spec.name.as_str()) {
                    return Err(Error::AlreadyHeldOrQueued(spec.name.clone()));
                }
            }
        }
        for spec in &request.specs {
            if let Some(lock) = self.locks.get(spec.name.as_str())
                && lock.permits != spec.permits
            {
                return Err(Error::PermitsMismatch {
                    name: spec.name.clone(),
                    limit: lock.permits,
                    asked: spec.permits,
                });
            }
        }
        let grantable = request.specs.iter().all(|spec| self.grantable_now(spec));
        if !grantable && request.wait == WaitPolicy::NoWait {
            return Ok(Plan::WouldBlock);
        }
        let asked = count(request.specs.len());
        let session_locks = record.map_or(0, SessionRecord::lock_count);
        if session_locks.saturating_add(asked) > self.limits.max_locks_per_session {
            return Err(Error::LimitReached(LimitKind::LocksPerSession));
        }
        let new_locks = count(
            request
                .specs
                .iter()
                .filter(|spec| !self.locks.contains_key(spec.name.as_str()))
                .count(),
        );
        if new_locks > 0 && count(self.locks.len()) + new_locks > self.limits.max_locks {
            return Err(Error::LimitReached(LimitKind::Locks));
        }
        if grantable {
            self.last_token
                .checked_add(asked)
                .ok_or(Error::TokenOverflow)?;
            return Ok(Plan::Grant);
        }
        for spec in &request.specs {
            if let Some(lock) = self.locks.get(spec.name.as_str())
                && count(lock.waiters.len()) >= self.limits.max_waiters_per_lock
            {
                return Err(Error::LimitReached(LimitKind::WaitersPerLock));
            }
        }
        Ok(Plan::Queue)
    }

    /// Whether `spec` alone could be granted now: its name is in no lock-delay, has an
    /// empty queue, and holders that admit it.
    fn grantable_now(&self, spec: &LockSpec) -> bool {
        (!self.lock_delays.contains_key(spec.name.as_str()) || mutant(Mutant::GrantDuringDelay))
            && self.locks.get(spec.name.as_str()).is_none_or(|lock| {
                (lock.waiters.is_empty() || mutant(Mutant::BargePastQueue))
                    && lock.admits(spec.mode, spec.weight)
            })
    }

    /// A spec of a lock the session holds (with `token`): one hold more if it is
    /// reentrant and the grant exclusive, refused otherwise.
    fn plan_reentry(&self, spec: &LockSpec, token: FencingToken) -> Result<Plan, Error> {
        if !spec.reentrant {
            return Err(Error::AlreadyHeldOrQueued(spec.name.clone()));
        }
        let holder = self.locks[spec.name.as_str()]
            .holders
            .get(token)
            .expect("a held lock has the session's grant");
        if holder.mode != LockMode::Exclusive {
            return Err(Error::InvalidLockSpec(format!(
                "lock {:?} is held in shared mode, which is not reentrant",
                spec.name
            )));
        }
        if holder.hold_count >= self.primitive_limits.max_hold_count {
            return Err(Error::LimitReached(LimitKind::HoldCount));
        }
        Ok(Plan::Reenter)
    }

    /// Carries out a plan from [`State::plan_acquire`]; cannot fail.
    fn execute_acquire(
        &mut self,
        session: SessionId,
        seq: u64,
        request: LockRequest,
        plan: Plan,
        events: &mut Vec<Event>,
    ) -> Response {
        match plan {
            Plan::Grant => self.grant_request(session, request, events),
            Plan::Reenter => self.reenter(session, &request.specs[0], events),
            Plan::WouldBlock => Response::WouldBlock { session },
            Plan::Queue if request.specs.len() > 1 && mutant(Mutant::MultiLockTakesWhatIsFree) => {
                let (free, rest): (Vec<LockSpec>, Vec<LockSpec>) = request
                    .specs
                    .into_iter()
                    .partition(|spec| self.grantable_now(spec));
                let part = |specs| LockRequest {
                    specs,
                    wait: request.wait,
                    value: request.value.clone(),
                    form: request.form,
                };
                self.grant_request(session, part(free), events);
                self.queue_request(session, seq, part(rest))
            }
            Plan::Queue => self.queue_request(session, seq, request),
        }
    }

    fn grant_request(
        &mut self,
        session: SessionId,
        request: LockRequest,
        events: &mut Vec<Event>,
    ) -> Response {
        let LockRequest {
            specs, value, form, ..
        } = request;
        let mut grants = Vec::with_capacity(specs.len());
        for spec in specs {
            let token = self.mint_token().expect("checked by plan_acquire");
            // One search of the locks: a new name is allocated before the lock is known
            // to be new (in vain only for a second shared holder).
            let (key, lock) = lock_entry(&mut self.locks, &spec);
            let record = self.sessions.get_mut(&session).expect("live session");
            self.grant_index.insert(token, &key);
            record.held.insert(key, token);
            self.held_grants += 1;
            lock.holders.insert(
                token,
                Holder {
                    session,
                    mode: spec.mode,
                    value: value.as_slice().into(),
                    granted_at_ms: self.clock_ms,
                    weight: spec.weight,
                    hold_count: 1,
                    lock_delay_ms: delay_u32(spec.lock_delay_ms),
                },
            );
            events.push(Event::Acquired {
                name: spec.name.clone(),
                session,
                token,
                mode: spec.mode,
                value: value.clone(),
            });
            grants.push(Grant {
                name: spec.name,
                token,
                hold_count: 1,
            });
        }
        match form {
            Form::Acquire => Response::Granted {
                session,
                token: grants[0].token,
            },
            Form::Locks => Response::GrantedLocks { session, grants },
        }
    }

    fn reenter(
        &mut self,
        session: SessionId,
        spec: &LockSpec,
        events: &mut Vec<Event>,
    ) -> Response {
        let token = self.sessions[&session].held[spec.name.as_str()];
        let lock = self
            .locks
            .get_mut(spec.name.as_str())
            .expect("a held lock is known");
        let holder = lock.holders.get_mut(token).expect("the session's grant");
        holder.hold_count += 1;
        let hold_count = holder.hold_count;
        events.push(Event::HoldCountChanged {
            name: spec.name.clone(),
            session,
            token,
            hold_count,
        });
        Response::GrantedLocks {
            session,
            grants: vec![Grant {
                name: spec.name.clone(),
                token,
                hold_count,
            }],
        }
    }

    /// Queues the request on each of its locks (making the unknown ones known). A
    /// request of several names cannot be granted now, so nothing is settled.
    fn queue_request(&mut self, session: SessionId, seq: u64, request: LockRequest) -> Response {
        let keys: Vec<Name> = request
            .specs
            .iter()
            .map(|spec| lock_entry(&mut self.locks, spec).0)
            .collect();
        let group: Option<Box<[Name]>> =
            (request.form == Form::Locks).then(|| keys.clone().into_boxed_slice());
        let record = self.sessions.get_mut(&session).expect("live session");
        for (spec, key) in request.specs.iter().zip(keys) {
            let lock = self.locks.get_mut(&key).expect("made known above");
            lock.waiters.push_back(Waiter {
                session,
                mode: spec.mode,
                value: request.value.as_slice().into(),
                seq,
                queued_at_ms: self.clock_ms,
                weight: spec.weight,
                lock_delay_ms: delay_u32(spec.lock_delay_ms),
                group: group.clone(),
            });
            record.waiting.insert(key);
            self.waiters += 1;
        }
        Response::Queued { session }
    }

    /// `OpenSession` then the acquire as request `{seq: 1, first_unanswered_seq: 1}`.
    ///
    /// With a live session for `client_id`, this is that session's request seq 1, so a
    /// retry returns the first (kept current) answer. Without one, the acquire is
    /// checked before the session is created, so a refused command, or one answered
    /// `WouldBlock`, leaves no session behind; `WouldBlock` then names `SessionId(0)`.
    pub(super) fn acquire_with_lease(
        &mut self,
        client_id: ClientId,
        ttl_ms: u64,
        mut lock_request: LockRequest,
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        validate_ttl(&self.limits, ttl_ms)?;
        let first = RequestId {
            seq: 1,
            first_unanswered_seq: 1,
        };
        if let Some(&session) = self.sessions_by_client.get(&client_id) {
            return self.acquire(session, first, lock_request, events);
        }
        self.check_request(&mut lock_request)?;
        self.check_session_admission()?;
        let plan = self.plan_acquire(None, &lock_request)?;
        if plan == Plan::WouldBlock {
            return Ok(Response::WouldBlock {
                session: SessionId(0),
            });
        }
        let session = self.create_session(client_id, ttl_ms, events);
        let response = self.execute_acquire(session, first.seq, lock_request, plan, events);
        self.remember(session, first.seq, &Ok(response.clone()));
        Ok(response)
    }

    /// Stores the answer to request `seq` of a live session.
    pub(super) fn remember(
        &mut self,
        session: SessionId,
        seq: u64,
        answer: &Result<Response, Error>,
    ) {
        let record = self.sessions.get_mut(&session).expect("live session");
        let previous = record.answers.insert(seq, answer.clone());
        assert!(previous.is_none(), "request {seq} answered twice");
    }

    /// Takes the next fencing token.
    pub(super) fn mint_token(&mut self) -> Result<FencingToken, Error> {
        let token = crate::state::next_token(self.last_token)?;
        self.last_token = token.0;
        self.total_grants += 1;
        Ok(token)
    }
}

/// A spec on its own, against the limits: a semaphore of 1..=`max_permits` permits taken
/// in shared mode with a weight within the limit, a plain lock with weight 1; reentrant
/// only for an exclusive plain lock alone in its request; a delay within its limit.
fn check_spec(
    spec: &LockSpec,
    several: bool,
    limits: &crate::types::PrimitiveLimits,
) -> Result<(), Error> {
    let invalid = |why: String| Err(Error::InvalidLockSpec(why));
    match spec.permits {
        Some(permits) => {
            if permits == 0 || permits > limits.max_permits {
                return invalid(format!(
                    "a semaphore has 1..={} permits, {permits} asked",
                    limits.max_permits
                ));
            }
            if spec.mode != LockMode::Shared {
                return invalid("a semaphore's permits are taken in shared mode".to_owned());
            }
            if spec.weight == 0 || spec.weight > permits {
                return invalid(format!(
                    "weight {} of a semaphore of {permits} permits",
                    spec.weight
                ));
            }
        }
        None if spec.weight != 1 => {
            return invalid(format!("weight {} of a plain lock (only 1)", spec.weight));
        }
        None => {}
    }
    if spec.reentrant && (spec.mode != LockMode::Exclusive || spec.permits.is_some()) {
        return invalid("only an exclusive plain lock is reentrant".to_owned());
    }
    if spec.reentrant && several {
        return invalid("a reentrant acquire names one lock".to_owned());
    }
    if spec.lock_delay_ms > limits.max_lock_delay_ms {
        return Err(Error::LockDelayTooLong {
            asked_ms: spec.lock_delay_ms,
            max_ms: limits.max_lock_delay_ms,
        });
    }
    Ok(())
}

/// A lock-delay as stored: checked against a limit whose ceiling fits in `u32`.
fn delay_u32(lock_delay_ms: u64) -> u32 {
    u32::try_from(lock_delay_ms).expect("checked against max_lock_delay_ms")
}

/// The lock of `spec`, made known (with the spec's semaphore limit) if it was not, and
/// its key (the one allocation of its name).
fn lock_entry<'a>(
    locks: &'a mut std::collections::BTreeMap<Name, LockRecord>,
    spec: &LockSpec,
) -> (Name, &'a mut LockRecord) {
    match locks.entry(Name::from(spec.name.as_str())) {
        Entry::Vacant(vacant) => {
            let key = Name::clone(vacant.key());
            let lock = vacant.insert(LockRecord {
                permits: spec.permits,
                ..LockRecord::default()
            });
            (key, lock)
        }
        Entry::Occupied(occupied) => (Name::clone(occupied.key()), occupied.into_mut()),
    }
}
