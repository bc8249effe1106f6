//! Property tests of the state machine against a reference model.
//!
//! Random command sequences over a small universe (a few client ids and lock names, small
//! limits, so that every limit is reached) are applied both to [`State`] and to [`Model`],
//! a deliberately naive model written separately: flat `Vec`s of sessions, holders and
//! waiters, everything recomputed by scanning, and every command run on a copy that is
//! kept only if it succeeds. After every step the two must agree on the result, the
//! events and everything observable, and `check_invariants` must pass.
//!
//! Other properties: fencing tokens in `Acquired` events strictly increase over the whole
//! run and per lock; a refused command changes nothing observable; a state restored from
//! a postcard snapshot midway behaves exactly like the original (snapshot equivalence).

use std::collections::BTreeMap;

use fencelock_core::{
    ClientId, Command, EndReason, Error, Event, FencingToken, Grant, HolderView, LimitKind, Limits,
    LockDelayView, LockMode, LockSpec, LockView, PrimitiveLimits, ReleaseReason, RequestId,
    Response, SessionId, SessionView, State, Stats, WaitPolicy, WaiterView,
};
use proptest::prelude::*;

// ----- the universe ---------------------------------------------------------------------

const CLIENTS: u8 = 5;
/// Five valid names (two sharing a prefix) and three invalid ones, by index.
const NAMES: [&str; 8] = ["a", "a/1", "a/2", "b", "c", "", "bad\u{1}", "much-too-long"];
const TTLS: [u64; 5] = [5, 10, 50, 100, 101];
const PREFIXES: [&str; 4] = ["", "a", "a/", "z"];

fn small_limits() -> Limits {
    Limits {
        max_sessions: 4,
        max_locks: 4,
        max_waiters_per_lock: 2,
        max_locks_per_session: 3,
        max_pending_requests_per_session: 4,
        max_name_bytes: 8,
        max_value_bytes: 4,
        min_ttl_ms: 10,
        max_ttl_ms: 100,
        max_expire_batch: 3,
    }
}

/// Small enough that every primitive limit is reached.
fn small_primitive_limits() -> PrimitiveLimits {
    PrimitiveLimits {
        max_lock_delay_ms: 3_000,
        max_permits: 3,
        max_locks_per_request: 3,
        max_hold_count: 3,
    }
}

fn primitive_limits_preset(preset: u8) -> PrimitiveLimits {
    match preset % 4 {
        0 => small_primitive_limits(),
        1 => PrimitiveLimits {
            max_lock_delay_ms: 0,
            max_permits: 1,
            max_locks_per_request: 1,
            max_hold_count: 1,
        },
        2 => PrimitiveLimits::default(),
        _ => PrimitiveLimits {
            max_hold_count: 0,
            ..small_primitive_limits()
        },
    }
}

fn limits_preset(preset: u8) -> Limits {
    let base = small_limits();
    match preset % 5 {
        0 => base,
        1 => Limits {
            max_sessions: 5,
            max_locks: 6,
            max_waiters_per_lock: 3,
            max_locks_per_session: 5,
            max_pending_requests_per_session: 6,
            max_name_bytes: 16,
            max_value_bytes: 8,
            min_ttl_ms: 5,
            max_ttl_ms: 200,
            max_expire_batch: 4,
        },
        2 => Limits {
            max_sessions: 1,
            max_locks: 2,
            max_waiters_per_lock: 1,
            max_locks_per_session: 1,
            max_pending_requests_per_session: 2,
            max_name_bytes: 3,
            max_value_bytes: 1,
            min_ttl_ms: 50,
            max_ttl_ms: 60,
            max_expire_batch: 1,
        },
        3 => Limits {
            max_locks: 0,
            ..base
        },
        _ => Limits {
            min_ttl_ms: 101,
            ..base
        },
    }
}

// ----- the reference model --------------------------------------------------------------

#[derive(Clone, Debug)]
struct ModelSession {
    id: SessionId,
    client_id: ClientId,
    ttl_ms: u64,
    answers: Vec<(u64, Result<Response, Error>)>,
    forgotten_below: u64,
}

#[derive(Clone, Debug)]
struct ModelHolder {
    name: String,
    session: SessionId,
    token: u64,
    mode: LockMode,
    value: Vec<u8>,
    weight: u32,
    hold_count: u32,
    lock_delay_ms: u64,
    granted_at_ms: u64,
}

#[derive(Clone, Debug)]
struct ModelWaiter {
    name: String,
    session: SessionId,
    mode: LockMode,
    value: Vec<u8>,
    seq: u64,
    weight: u32,
    lock_delay_ms: u64,
    queued_at_ms: u64,
    /// The names of its `AcquireLocks` (sorted); `None` for an `Acquire`.
    group: Option<Vec<String>>,
}

/// A lock-delay in force.
#[derive(Clone, Debug)]
struct ModelDelay {
    name: String,
    token: u64,
    delay_ms: u64,
    started_at_ms: u64,
}

/// Everything in flat lists; a lock exists exactly when some holder or waiter names it.
#[derive(Clone, Debug)]
struct Model {
    limits: Limits,
    next_session_id: u64,
    last_token: u64,
    total_grants: u64,
    total_expired_sessions: u64,
    sessions: Vec<ModelSession>,
    /// In grant order.
    holders: Vec<ModelHolder>,
    /// In arrival order; a lock's queue is its waiters in this order.
    waiters: Vec<ModelWaiter>,
    clock_ms: u64,
    primitive_limits: PrimitiveLimits,
    /// The semaphore limit each name got when it became known (stale for forgotten
    /// names: read only for known ones).
    permits: BTreeMap<String, Option<u32>>,
    delays: Vec<ModelDelay>,
}

fn model_name_check(limits: &Limits, name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() as u64 <= limits.max_name_bytes
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(String::new()))
    }
}

impl Model {
    fn new(limits: Limits, last_token: u64) -> Model {
        Model {
            limits,
            next_session_id: 1,
            last_token,
            total_grants: 0,
            total_expired_sessions: 0,
            sessions: Vec::new(),
            holders: Vec::new(),
            waiters: Vec::new(),
            clock_ms: 0,
            primitive_limits: small_primitive_limits(),
            permits: BTreeMap::new(),
            delays: Vec::new(),
        }
    }

    fn session_mut(&mut self, id: SessionId) -> Option<&mut ModelSession> {
        self.sessions.iter_mut().find(|s| s.id == id)
    }

    fn lock_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .holders
            .iter()
            .map(|h| h.name.clone())
            .chain(self.waiters.iter().map(|w| w.name.clone()))
            .chain(self.delays.iter().map(|d| d.name.clone()))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn lock_exists(&self, name: &str) -> bool {
        self.holders.iter().any(|h| h.name == name)
            || self.waiters.iter().any(|w| w.name == name)
            || self.delayed(name)
    }

    fn delayed(&self, name: &str) -> bool {
        self.delays.iter().any(|d| d.name == name)
    }

    /// The semaphore limit of a known lock.
    fn permits_of(&self, name: &str) -> Option<Option<u32>> {
        self.lock_exists(name)
            .then(|| self.permits.get(name).copied().flatten())
    }

    fn holders_admit(&self, name: &str, mode: LockMode, weight: u32) -> bool {
        let mut holders = self.holders.iter().filter(|h| h.name == name);
        if let Some(Some(permits)) = self.permits_of(name) {
            let used: u64 = holders.map(|h| u64::from(h.weight)).sum();
            return used + u64::from(weight) <= u64::from(permits);
        }
        match mode {
            LockMode::Exclusive => holders.next().is_none(),
            LockMode::Shared => holders.all(|h| h.mode == LockMode::Shared),
        }
    }

    /// The names to grant together if the head of `name`'s queue can be granted.
    fn grantable_head(&self, name: &str) -> Option<Vec<String>> {
        let head = self.waiters.iter().find(|w| w.name == name)?;
        let names = head.group.clone().unwrap_or_else(|| vec![name.to_owned()]);
        for other in &names {
            let front = self.waiters.iter().find(|w| w.name == *other)?;
            if self.delayed(other)
                || front.session != head.session
                || front.seq != head.seq
                || !self.holders_admit(other, front.mode, front.weight)
            {
                return None;
            }
        }
        Some(names)
    }

    fn mint(&mut self) -> Result<u64, Error> {
        self.last_token = self.last_token.checked_add(1).ok_or(Error::TokenOverflow)?;
        self.total_grants += 1;
        Ok(self.last_token)
    }

    /// Grants the head of `name`'s queue while it can be granted, and the queues of the
    /// names a multi-lock granted on the way shares.
    fn settle(&mut self, name: &str, events: &mut Vec<Event>) -> Result<(), Error> {
        let mut pending = std::collections::BTreeSet::from([name.to_owned()]);
        while let Some(name) = pending.pop_first() {
            while let Some(names) = self.grantable_head(&name) {
                let mut grants = Vec::new();
                let mut request = None;
                for other in &names {
                    let index = self.waiters.iter().position(|w| w.name == *other).unwrap();
                    let waiter = self.waiters.remove(index);
                    let token = self.mint()?;
                    events.push(Event::Acquired {
                        name: other.clone(),
                        session: waiter.session,
                        token: FencingToken(token),
                        mode: waiter.mode,
                        value: waiter.value.clone(),
                    });
                    grants.push(Grant {
                        name: other.clone(),
                        token: FencingToken(token),
                        hold_count: 1,
                    });
                    request = Some((waiter.session, waiter.seq, waiter.group.is_some()));
                    self.holders.push(ModelHolder {
                        name: other.clone(),
                        session: waiter.session,
                        token,
                        mode: waiter.mode,
                        value: waiter.value,
                        weight: waiter.weight,
                        hold_count: 1,
                        lock_delay_ms: waiter.lock_delay_ms,
                        granted_at_ms: self.clock_ms,
                    });
                }
                let (session, seq, locks_form) = request.unwrap();
                let answer = if locks_form {
                    Response::GrantedLocks { session, grants }
                } else {
                    Response::Granted {
                        session,
                        token: grants[0].token,
                    }
                };
                if let Some(record) = self.session_mut(session) {
                    for (s, a) in &mut record.answers {
                        if *s == seq {
                            *a = Ok(answer.clone());
                        }
                    }
                }
                pending.extend(names.into_iter().filter(|other| *other != name));
            }
        }
        Ok(())
    }

    /// Runs `step` on a copy; keeps it and its events only on success.
    fn atomically(
        &mut self,
        step: impl FnOnce(&mut Model, &mut Vec<Event>) -> Result<Response, Error>,
    ) -> (Result<Response, Error>, Vec<Event>) {
        let mut copy = self.clone();
        let mut events = Vec::new();
        let result = step(&mut copy, &mut events);
        if result.is_ok() {
            *self = copy;
            (result, events)
        } else {
            (result, Vec::new())
        }
    }

    fn apply(&mut self, command: Command) -> (Result<Response, Error>, Vec<Event>) {
        match command {
            Command::Acquire {
                session,
                request,
                name,
                mode,
                wait,
                value,
            } => {
                let specs = vec![LockSpec::new(name, mode)];
                self.with_request(session, request, |m, events| {
                    m.acquire_act(session, request.seq, specs, wait, value, false, events)
                })
            }
            Command::AcquireLocks {
                session,
                request,
                locks,
                wait,
                value,
            } => self.with_request(session, request, |m, events| {
                m.acquire_act(session, request.seq, locks, wait, value, true, events)
            }),
            Command::Release {
                session,
                request,
                name,
                token,
            } => self.with_request(session, request, |m, events| {
                m.release_act(session, name, token, events)
            }),
            Command::SetValue {
                session,
                request,
                name,
                token,
                value,
            } => self.with_request(session, request, |m, events| {
                m.set_value_act(session, name, token, value, events)
            }),
            Command::AcquireWithLease {
                client_id,
                ttl_ms,
                name,
                mode,
                wait,
                value,
            } => self.lease(
                client_id,
                ttl_ms,
                vec![LockSpec::new(name, mode)],
                wait,
                value,
                false,
            ),
            Command::AcquireLocksWithLease {
                client_id,
                ttl_ms,
                locks,
                wait,
                value,
            } => self.lease(client_id, ttl_ms, locks, wait, value, true),
            other => self.atomically(|m, events| m.step(other, events)),
        }
    }

    fn lease(
        &mut self,
        client_id: ClientId,
        ttl_ms: u64,
        specs: Vec<LockSpec>,
        wait: WaitPolicy,
        value: Vec<u8>,
        locks_form: bool,
    ) -> (Result<Response, Error>, Vec<Event>) {
        if ttl_ms < self.limits.min_ttl_ms || ttl_ms > self.limits.max_ttl_ms {
            return (Err(self.ttl_error(ttl_ms)), Vec::new());
        }
        if let Some(session) = self.sessions.iter().find(|s| s.client_id == client_id) {
            let id = session.id;
            let first = RequestId {
                seq: 1,
                first_unanswered_seq: 1,
            };
            return self.with_request(id, first, |m, events| {
                m.acquire_act(id, 1, specs, wait, value, locks_form, events)
            });
        }
        let (result, events) = self.atomically(|m, events| {
            let specs = m.check_request(specs, &value)?;
            let id = m.open_new(client_id, ttl_ms, events)?;
            let result = m.acquire_checked(id, 1, specs, wait, value, locks_form, events)?;
            if let Response::WouldBlock { .. } = result {
                // Reported as a refusal to drop the copy; turned back below.
                return Err(Error::NotWaiting("would block".to_owned()));
            }
            m.session_mut(id)
                .unwrap()
                .answers
                .push((1, Ok(result.clone())));
            Ok(result)
        });
        match result {
            Err(Error::NotWaiting(reason)) if reason == "would block" => (
                Ok(Response::WouldBlock {
                    session: SessionId(0),
                }),
                Vec::new(),
            ),
            other => (other, events),
        }
    }

    fn ttl_error(&self, ttl_ms: u64) -> Error {
        Error::InvalidTtl {
            ttl_ms,
            min_ttl_ms: self.limits.min_ttl_ms,
            max_ttl_ms: self.limits.max_ttl_ms,
        }
    }

    fn open_new(
        &mut self,
        client_id: ClientId,
        ttl_ms: u64,
        events: &mut Vec<Event>,
    ) -> Result<SessionId, Error> {
        if self.sessions.len() as u64 >= self.limits.max_sessions {
            return Err(Error::LimitReached(LimitKind::Sessions));
        }
        let id = SessionId(self.next_session_id);
        self.next_session_id += 1;
        self.sessions.push(ModelSession {
            id,
            client_id,
            ttl_ms,
            answers: Vec::new(),
            forgotten_below: 1,
        });
        events.push(Event::SessionOpened {
            session: id,
            client_id,
            ttl_ms,
        });
        Ok(id)
    }

    /// Request-id handling, then `act` on a copy; the answer is remembered either way.
    fn with_request(
        &mut self,
        session: SessionId,
        request: RequestId,
        act: impl FnOnce(&mut Model, &mut Vec<Event>) -> Result<Response, Error>,
    ) -> (Result<Response, Error>, Vec<Event>) {
        let max_pending = self.limits.max_pending_requests_per_session;
        let Some(record) = self.session_mut(session) else {
            return (Err(Error::SessionNotFound(session)), Vec::new());
        };
        if request.first_unanswered_seq > record.forgotten_below {
            record.forgotten_below = request.first_unanswered_seq;
            record
                .answers
                .retain(|(seq, _)| *seq >= request.first_unanswered_seq);
        }
        if let Some((_, answer)) = record.answers.iter().find(|(seq, _)| *seq == request.seq) {
            return (answer.clone(), Vec::new());
        }
        if request.seq < record.forgotten_below {
            let error = Error::RequestTooOld {
                seq: request.seq,
                first_remembered: record.forgotten_below,
            };
            return (Err(error), Vec::new());
        }
        if record.answers.len() as u64 >= max_pending {
            let error = Error::LimitReached(LimitKind::PendingRequestsPerSession);
            return (Err(error), Vec::new());
        }
        let (result, events) = self.atomically(act);
        self.session_mut(session)
            .unwrap()
            .answers
            .push((request.seq, result.clone()));
        (result, events)
    }

    #[allow(clippy::too_many_arguments)]
    fn acquire_act(
        &mut self,
        session: SessionId,
        seq: u64,
        specs: Vec<LockSpec>,
        wait: WaitPolicy,
        value: Vec<u8>,
        locks_form: bool,
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        let specs = self.check_request(specs, &value)?;
        self.acquire_checked(session, seq, specs, wait, value, locks_form, events)
    }

    /// The checks of a request on its own; its specs in name order.
    fn check_request(
        &self,
        mut specs: Vec<LockSpec>,
        value: &[u8],
    ) -> Result<Vec<LockSpec>, Error> {
        let limits = &self.primitive_limits;
        let invalid = || Err(Error::InvalidLockSpec(String::new()));
        if specs.is_empty() {
            return invalid();
        }
        if specs.len() as u64 > limits.max_locks_per_request {
            return Err(Error::LimitReached(LimitKind::LocksPerRequest));
        }
        for spec in &specs {
            model_name_check(&self.limits, &spec.name)?;
        }
        if value.len() as u64 > self.limits.max_value_bytes {
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max: self.limits.max_value_bytes as usize,
            });
        }
        specs.sort_by(|a, b| a.name.cmp(&b.name));
        for i in 1..specs.len() {
            if specs[i].name == specs[i - 1].name {
                return invalid();
            }
        }
        for spec in &specs {
            let ok_weight = match spec.permits {
                Some(n) => {
                    n >= 1
                        && n <= limits.max_permits
                        && spec.mode == LockMode::Shared
                        && spec.weight >= 1
                        && spec.weight <= n
                }
                None => spec.weight == 1,
            };
            let ok_reentrant = !spec.reentrant
                || (spec.mode == LockMode::Exclusive && spec.permits.is_none() && specs.len() == 1);
            if !ok_weight || !ok_reentrant {
                return invalid();
            }
            if spec.lock_delay_ms > limits.max_lock_delay_ms {
                return Err(Error::LockDelayTooLong {
                    asked_ms: spec.lock_delay_ms,
                    max_ms: limits.max_lock_delay_ms,
                });
            }
        }
        Ok(specs)
    }

    #[allow(clippy::too_many_arguments)]
    fn acquire_checked(
        &mut self,
        session: SessionId,
        seq: u64,
        specs: Vec<LockSpec>,
        wait: WaitPolicy,
        value: Vec<u8>,
        locks_form: bool,
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        let mine = |s: SessionId| s == session;
        for spec in &specs {
            if let Some(index) = self
                .holders
                .iter()
                .position(|h| h.name == spec.name && mine(h.session))
            {
                if !spec.reentrant {
                    return Err(Error::AlreadyHeldOrQueued(spec.name.clone()));
                }
                if self.holders[index].mode != LockMode::Exclusive {
                    return Err(Error::InvalidLockSpec(String::new()));
                }
                if self.holders[index].hold_count >= self.primitive_limits.max_hold_count {
                    return Err(Error::LimitReached(LimitKind::HoldCount));
                }
                let holder = &mut self.holders[index];
                holder.hold_count += 1;
                events.push(Event::HoldCountChanged {
                    name: spec.name.clone(),
                    session,
                    token: FencingToken(holder.token),
                    hold_count: holder.hold_count,
                });
                return Ok(Response::GrantedLocks {
                    session,
                    grants: vec![Grant {
                        name: spec.name.clone(),
                        token: FencingToken(holder.token),
                        hold_count: holder.hold_count,
                    }],
                });
            }
            if self
                .waiters
                .iter()
                .any(|w| w.name == spec.name && mine(w.session))
            {
                return Err(Error::AlreadyHeldOrQueued(spec.name.clone()));
            }
        }
        for spec in &specs {
            if let Some(limit) = self.permits_of(&spec.name)
                && limit != spec.permits
            {
                return Err(Error::PermitsMismatch {
                    name: spec.name.clone(),
                    limit,
                    asked: spec.permits,
                });
            }
        }
        let grantable = specs.iter().all(|spec| {
            !self.delayed(&spec.name)
                && !self.waiters.iter().any(|w| w.name == spec.name)
                && self.holders_admit(&spec.name, spec.mode, spec.weight)
        });
        if !grantable && wait == WaitPolicy::NoWait {
            return Ok(Response::WouldBlock { session });
        }
        let session_locks = self.holders.iter().filter(|h| mine(h.session)).count()
            + self.waiters.iter().filter(|w| mine(w.session)).count();
        if (session_locks + specs.len()) as u64 > self.limits.max_locks_per_session {
            return Err(Error::LimitReached(LimitKind::LocksPerSession));
        }
        let new_locks = specs.iter().filter(|s| !self.lock_exists(&s.name)).count();
        if new_locks > 0 && (self.lock_names().len() + new_locks) as u64 > self.limits.max_locks {
            return Err(Error::LimitReached(LimitKind::Locks));
        }
        for spec in &specs {
            if !self.lock_exists(&spec.name) {
                self.permits.insert(spec.name.clone(), spec.permits);
            }
        }
        if grantable {
            let mut grants = Vec::new();
            for spec in specs {
                let token = self.mint()?;
                events.push(Event::Acquired {
                    name: spec.name.clone(),
                    session,
                    token: FencingToken(token),
                    mode: spec.mode,
                    value: value.clone(),
                });
                grants.push(Grant {
                    name: spec.name.clone(),
                    token: FencingToken(token),
                    hold_count: 1,
                });
                self.holders.push(ModelHolder {
                    name: spec.name,
                    session,
                    token,
                    mode: spec.mode,
                    value: value.clone(),
                    weight: spec.weight,
                    hold_count: 1,
                    lock_delay_ms: spec.lock_delay_ms,
                    granted_at_ms: self.clock_ms,
                });
            }
            return Ok(if locks_form {
                Response::GrantedLocks { session, grants }
            } else {
                Response::Granted {
                    session,
                    token: grants[0].token,
                }
            });
        }
        for spec in &specs {
            let queue_len = self.waiters.iter().filter(|w| w.name == spec.name).count();
            if queue_len as u64 >= self.limits.max_waiters_per_lock {
                return Err(Error::LimitReached(LimitKind::WaitersPerLock));
            }
        }
        let group: Option<Vec<String>> =
            locks_form.then(|| specs.iter().map(|s| s.name.clone()).collect());
        for spec in specs {
            self.waiters.push(ModelWaiter {
                name: spec.name,
                session,
                mode: spec.mode,
                value: value.clone(),
                seq,
                weight: spec.weight,
                lock_delay_ms: spec.lock_delay_ms,
                queued_at_ms: self.clock_ms,
                group: group.clone(),
            });
        }
        Ok(Response::Queued { session })
    }

    fn set_value_act(
        &mut self,
        session: SessionId,
        name: String,
        token: FencingToken,
        value: Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        let index = self.held_index(session, &name, token)?;
        if value.len() as u64 > self.limits.max_value_bytes {
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max: self.limits.max_value_bytes as usize,
            });
        }
        self.holders[index].value = value.clone();
        events.push(Event::ValueChanged {
            name,
            session,
            token,
            value,
        });
        Ok(Response::ValueSet)
    }

    fn held_index(
        &self,
        session: SessionId,
        name: &str,
        token: FencingToken,
    ) -> Result<usize, Error> {
        let Some(index) = self
            .holders
            .iter()
            .position(|h| h.name == name && h.session == session)
        else {
            model_name_check(&self.limits, name)?;
            return Err(Error::NotHeld(name.to_owned()));
        };
        let current = FencingToken(self.holders[index].token);
        if current != token {
            return Err(Error::StaleToken {
                name: name.to_owned(),
                given: token,
                current,
            });
        }
        Ok(index)
    }

    fn release_act(
        &mut self,
        session: SessionId,
        name: String,
        token: FencingToken,
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        let index = self.held_index(session, &name, token)?;
        if self.holders[index].hold_count > 1 {
            self.holders[index].hold_count -= 1;
            let hold_count = self.holders[index].hold_count;
            events.push(Event::HoldCountChanged {
                name,
                session,
                token,
                hold_count,
            });
            return Ok(Response::StillHeld { hold_count });
        }
        self.holders.remove(index);
        events.push(Event::Released {
            name: name.clone(),
            session,
            token,
            reason: ReleaseReason::Released,
        });
        self.settle(&name, events)?;
        Ok(Response::Released)
    }

    fn end_session(
        &mut self,
        id: SessionId,
        reason: EndReason,
        events: &mut Vec<Event>,
    ) -> Result<(), Error> {
        let release_reason = match reason {
            EndReason::Closed => ReleaseReason::SessionClosed,
            EndReason::Expired => ReleaseReason::SessionExpired,
            EndReason::Revoked => ReleaseReason::Revoked,
        };
        let mut held: Vec<ModelHolder> = self
            .holders
            .iter()
            .filter(|h| h.session == id)
            .cloned()
            .collect();
        held.sort_by(|a, b| a.name.cmp(&b.name));
        self.holders.retain(|h| h.session != id);
        let mut waits: Vec<String> = self
            .waiters
            .iter()
            .filter(|w| w.session == id)
            .map(|w| w.name.clone())
            .collect();
        waits.sort();
        self.waiters.retain(|w| w.session != id);
        self.sessions.retain(|s| s.id != id);
        for holder in &held {
            events.push(Event::Released {
                name: holder.name.clone(),
                session: id,
                token: FencingToken(holder.token),
                reason: release_reason,
            });
            if reason != EndReason::Closed && holder.lock_delay_ms > 0 {
                self.delays.retain(|d| d.name != holder.name);
                self.delays.push(ModelDelay {
                    name: holder.name.clone(),
                    token: holder.token,
                    delay_ms: holder.lock_delay_ms,
                    started_at_ms: self.clock_ms,
                });
                events.push(Event::LockDelayStarted {
                    name: holder.name.clone(),
                    token: FencingToken(holder.token),
                    delay_ms: holder.lock_delay_ms,
                });
            }
        }
        for name in &waits {
            events.push(Event::WaitCancelled {
                name: name.clone(),
                session: id,
            });
        }
        let mut affected: Vec<String> = held.into_iter().map(|h| h.name).chain(waits).collect();
        affected.sort();
        for name in affected {
            self.settle(&name, events)?;
        }
        events.push(Event::SessionEnded {
            session: id,
            reason,
        });
        Ok(())
    }

    fn step(&mut self, command: Command, events: &mut Vec<Event>) -> Result<Response, Error> {
        match command {
            // Auth is not modelled here: the generators never produce these commands (the
            // auth part of the state has its own reference model, in `tests/auth_model.rs`,
            // and unit tests in `auth`).
            Command::Auth(_)
            | Command::Owned { .. }
            | Command::Authorized { .. }
            | Command::Once { .. } => {
                unreachable!("the model does not generate auth commands")
            }
            // The cluster version decides nothing about locks (unit tests in `version`).
            Command::SetClusterVersion { .. } => {
                unreachable!("the model does not generate cluster versions")
            }
            Command::WallClock { unix_ms } => {
                self.clock_ms = self.clock_ms.max(unix_ms);
                Ok(Response::ClockSet {
                    unix_ms: self.clock_ms,
                })
            }
            Command::EndLockDelay { name, token } => {
                if !self
                    .delays
                    .iter()
                    .any(|d| d.name == name && FencingToken(d.token) == token)
                {
                    model_name_check(&self.limits, &name)?;
                    return Ok(Response::LockDelayEnded { ended: false });
                }
                self.delays.retain(|d| d.name != name);
                events.push(Event::LockDelayEnded {
                    name: name.clone(),
                    token,
                });
                self.settle(&name, events)?;
                Ok(Response::LockDelayEnded { ended: true })
            }
            Command::SetPrimitiveLimits(limits) => {
                if limits.max_permits == 0
                    || limits.max_locks_per_request == 0
                    || limits.max_hold_count == 0
                    || limits.max_lock_delay_ms > PrimitiveLimits::LOCK_DELAY_CEILING_MS
                {
                    return Err(Error::InvalidLimits(String::new()));
                }
                self.primitive_limits = limits;
                Ok(Response::PrimitiveLimitsSet)
            }
            Command::OpenSession { client_id, ttl_ms } => {
                if ttl_ms < self.limits.min_ttl_ms || ttl_ms > self.limits.max_ttl_ms {
                    return Err(self.ttl_error(ttl_ms));
                }
                if let Some(session) = self.sessions.iter().find(|s| s.client_id == client_id) {
                    return Ok(Response::SessionOpened {
                        session: session.id,
                        ttl_ms: session.ttl_ms,
                    });
                }
                let session = self.open_new(client_id, ttl_ms, events)?;
                Ok(Response::SessionOpened { session, ttl_ms })
            }
            Command::CloseSession { session } => {
                if !self.sessions.iter().any(|s| s.id == session) {
                    return Err(Error::SessionNotFound(session));
                }
                self.end_session(session, EndReason::Closed, events)?;
                Ok(Response::SessionClosed)
            }
            Command::ExpireSessions { sessions } => {
                if sessions.len() as u64 > self.limits.max_expire_batch {
                    return Err(Error::LimitReached(LimitKind::ExpireBatch));
                }
                let mut ended = 0;
                for id in sessions {
                    if self.sessions.iter().any(|s| s.id == id) {
                        self.end_session(id, EndReason::Expired, events)?;
                        ended += 1;
                    }
                }
                self.total_expired_sessions += ended;
                Ok(Response::SessionsExpired { count: ended })
            }
            Command::CancelWait { session, name } => {
                if !self.sessions.iter().any(|s| s.id == session) {
                    return Err(Error::SessionNotFound(session));
                }
                if let Some(holder) = self
                    .holders
                    .iter()
                    .find(|h| h.name == name && h.session == session)
                {
                    return Ok(Response::Granted {
                        session,
                        token: FencingToken(holder.token),
                    });
                }
                let Some(index) = self
                    .waiters
                    .iter()
                    .position(|w| w.name == name && w.session == session)
                else {
                    model_name_check(&self.limits, &name)?;
                    return Err(Error::NotWaiting(name));
                };
                let waiter = self.waiters.remove(index);
                events.push(Event::WaitCancelled {
                    name: name.clone(),
                    session,
                });
                let group = waiter.group.clone().unwrap_or_default();
                for other in &group {
                    if *other != name {
                        self.waiters
                            .retain(|w| !(w.name == *other && w.session == session));
                        events.push(Event::WaitCancelled {
                            name: other.clone(),
                            session,
                        });
                    }
                }
                let record = self.session_mut(session).unwrap();
                for (seq, answer) in &mut record.answers {
                    if *seq == waiter.seq {
                        *answer = Ok(Response::WaitCancelled);
                    }
                }
                self.settle(&name, events)?;
                for other in &group {
                    self.settle(other, events)?;
                }
                Ok(Response::WaitCancelled)
            }
            Command::RevokeSession { session } => {
                if !self.sessions.iter().any(|s| s.id == session) {
                    return Err(Error::SessionNotFound(session));
                }
                let released = self.holders.iter().filter(|h| h.session == session).count();
                self.end_session(session, EndReason::Revoked, events)?;
                Ok(Response::SessionRevoked {
                    released: released as u64,
                })
            }
            Command::ForceRelease { name } => {
                if !self.lock_exists(&name) {
                    model_name_check(&self.limits, &name)?;
                    return Ok(Response::ForceReleased { count: 0 });
                }
                let mut released: Vec<ModelHolder> = self
                    .holders
                    .iter()
                    .filter(|h| h.name == name)
                    .cloned()
                    .collect();
                released.sort_by_key(|h| h.token);
                self.holders.retain(|h| h.name != name);
                for holder in &released {
                    events.push(Event::Released {
                        name: name.clone(),
                        session: holder.session,
                        token: FencingToken(holder.token),
                        reason: ReleaseReason::Forced,
                    });
                }
                self.settle(&name, events)?;
                Ok(Response::ForceReleased {
                    count: released.len() as u64,
                })
            }
            Command::SetLimits(limits) => {
                let maxima = [
                    limits.max_sessions,
                    limits.max_locks,
                    limits.max_waiters_per_lock,
                    limits.max_locks_per_session,
                    limits.max_pending_requests_per_session,
                    limits.max_name_bytes,
                    limits.max_value_bytes,
                    limits.min_ttl_ms,
                    limits.max_ttl_ms,
                    limits.max_expire_batch,
                ];
                if maxima.contains(&0)
                    || limits.max_name_bytes > Limits::NAME_BYTES_CEILING
                    || limits.min_ttl_ms > limits.max_ttl_ms
                {
                    return Err(Error::InvalidLimits(String::new()));
                }
                self.limits = limits;
                Ok(Response::LimitsSet)
            }
            Command::Acquire { .. }
            | Command::Release { .. }
            | Command::AcquireWithLease { .. }
            | Command::AcquireLocks { .. }
            | Command::AcquireLocksWithLease { .. }
            | Command::SetValue { .. } => {
                unreachable!("handled in apply")
            }
        }
    }

    // ----- what the model says is observable -----

    fn stats(&self) -> Stats {
        Stats {
            sessions: self.sessions.len() as u64,
            locks: self.lock_names().len() as u64,
            held_grants: self.holders.len() as u64,
            waiters: self.waiters.len() as u64,
            last_token: self.last_token,
            total_grants: self.total_grants,
            total_expired_sessions: self.total_expired_sessions,
        }
    }

    fn session_view(&self, id: SessionId) -> Option<SessionView> {
        let session = self.sessions.iter().find(|s| s.id == id)?;
        let mut held: Vec<(String, FencingToken)> = self
            .holders
            .iter()
            .filter(|h| h.session == id)
            .map(|h| (h.name.clone(), FencingToken(h.token)))
            .collect();
        held.sort();
        let mut waiting: Vec<String> = self
            .waiters
            .iter()
            .filter(|w| w.session == id)
            .map(|w| w.name.clone())
            .collect();
        waiting.sort();
        Some(SessionView {
            session: id,
            client_id: session.client_id,
            ttl_ms: session.ttl_ms,
            held,
            waiting,
        })
    }

    fn lock_view(&self, name: &str) -> Option<LockView> {
        if !self.lock_exists(name) {
            return None;
        }
        let mut holders: Vec<HolderView> = self
            .holders
            .iter()
            .filter(|h| h.name == name)
            .map(|h| HolderView {
                session: h.session,
                token: FencingToken(h.token),
                mode: h.mode,
                value: h.value.clone(),
                client_id: self
                    .sessions
                    .iter()
                    .find(|s| s.id == h.session)
                    .unwrap()
                    .client_id,
                granted_at_ms: h.granted_at_ms,
                weight: h.weight,
                hold_count: h.hold_count,
                lock_delay_ms: h.lock_delay_ms,
            })
            .collect();
        holders.sort_by_key(|h| h.token);
        let waiters = self
            .waiters
            .iter()
            .filter(|w| w.name == name)
            .map(|w| WaiterView {
                session: w.session,
                mode: w.mode,
                queued_at_ms: w.queued_at_ms,
                weight: w.weight,
                names: w.group.clone().unwrap_or_default(),
            })
            .collect();
        let permits_used = holders.iter().map(|h| u64::from(h.weight)).sum();
        Some(LockView {
            name: name.to_owned(),
            holders,
            waiters,
            permits: self.permits_of(name).flatten(),
            permits_used,
            delay: self
                .delays
                .iter()
                .find(|d| d.name == name)
                .map(|d| LockDelayView {
                    token: FencingToken(d.token),
                    delay_ms: d.delay_ms,
                    started_at_ms: d.started_at_ms,
                }),
        })
    }

    /// Every grant in force by grant time, then token: a sort of the flat list.
    fn grants_by_age(&self) -> Vec<(u64, u64, String)> {
        let mut grants: Vec<(u64, u64, String)> = self
            .holders
            .iter()
            .map(|h| (h.granted_at_ms, h.token, h.name.clone()))
            .collect();
        grants.sort();
        grants
    }

    /// The `limit` locks whose oldest grant is oldest.
    fn longest_held(&self, limit: usize) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for (_, _, name) in self.grants_by_age() {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names.truncate(limit);
        names
    }

    fn token_of(&self, session: SessionId, name: &str) -> Option<u64> {
        self.holders
            .iter()
            .find(|h| h.session == session && h.name == name)
            .map(|h| h.token)
    }
}

// ----- abstract operations, resolved against the model ----------------------------------

/// Which session a command names.
#[derive(Clone, Debug)]
enum Who {
    /// One of the live sessions (`SessionId(0)` if there are none).
    Live(u8),
    /// Any id, live, ended or never opened.
    Any(u8),
}

/// How a request id is chosen for a session.
#[derive(Clone, Debug)]
enum Req {
    /// The next sequence number; `ack` acknowledges every earlier answer.
    Next { ack: bool },
    /// A retry of a recent request.
    Retry { back: u8 },
    /// Anything.
    Raw { seq: u8, first: u8 },
}

/// Which token a `Release` gives.
#[derive(Clone, Debug)]
enum TokenPick {
    Current,
    Off(i8),
    Raw(u8),
}

#[derive(Clone, Debug)]
enum Op {
    Open {
        client: u8,
        ttl: u8,
    },
    Close {
        who: Who,
    },
    Acquire {
        who: Who,
        req: Req,
        name: u8,
        shared: bool,
        queue: bool,
        value_len: u8,
    },
    Lease {
        client: u8,
        ttl: u8,
        name: u8,
        shared: bool,
        queue: bool,
        value_len: u8,
    },
    Release {
        who: Who,
        req: Req,
        name: u8,
        token: TokenPick,
    },
    Cancel {
        who: Who,
        name: u8,
    },
    Expire {
        whos: Vec<Who>,
    },
    Force {
        name: u8,
    },
    Revoke {
        who: Who,
    },
    SetLimits {
        preset: u8,
    },
    Locks {
        who: Who,
        req: Req,
        specs: Vec<(u8, u8)>,
        queue: bool,
        value_len: u8,
    },
    LocksLease {
        client: u8,
        ttl: u8,
        specs: Vec<(u8, u8)>,
        queue: bool,
    },
    Clock {
        seconds: u8,
    },
    EndDelay {
        name: u8,
        exact: bool,
    },
    SetValue {
        who: Who,
        req: Req,
        name: u8,
        token: TokenPick,
        value_len: u8,
    },
    SetPrimitiveLimits {
        preset: u8,
    },
}

/// The spec of kind `kind` on `name`: mostly valid ones (plain, semaphores of 2 and 3
/// permits and weights, reentrant, with a lock-delay), some invalid.
fn spec_of(name: String, kind: u8) -> LockSpec {
    let plain = |mode| LockSpec::new(name.clone(), mode);
    let sem = |permits, weight| LockSpec {
        weight,
        ..LockSpec::semaphore(name.clone(), permits)
    };
    match kind % 12 {
        0 => plain(LockMode::Exclusive),
        1 => plain(LockMode::Shared),
        2 => sem(2, 1),
        3 => sem(2, 2),
        4 => sem(3, 1),
        5 => LockSpec {
            reentrant: true,
            ..plain(LockMode::Exclusive)
        },
        6 => LockSpec {
            lock_delay_ms: 1_000,
            ..plain(LockMode::Exclusive)
        },
        7 => LockSpec {
            lock_delay_ms: 2_000,
            ..sem(2, 1)
        },
        8 => sem(2, 0),
        9 => LockSpec {
            lock_delay_ms: 5_000,
            ..plain(LockMode::Exclusive)
        },
        10 => sem(4, 1),
        _ => LockSpec {
            reentrant: true,
            ..plain(LockMode::Shared)
        },
    }
}

fn specs() -> impl Strategy<Value = Vec<(u8, u8)>> {
    let kind = prop_oneof![20 => 0u8..8, 8 => Just(5u8), 1 => 8u8..12];
    prop_oneof![
        6 => prop::collection::vec((name(), kind.clone()), 1..=1),
        4 => prop::collection::vec((name(), kind.clone()), 2..=3),
        1 => prop::collection::vec((name(), kind), 0..=4),
    ]
}

fn who() -> impl Strategy<Value = Who> {
    prop_oneof![6 => any::<u8>().prop_map(Who::Live), 1 => (0u8..10).prop_map(Who::Any)]
}

fn req() -> impl Strategy<Value = Req> {
    prop_oneof![
        8 => prop::bool::weighted(0.8).prop_map(|ack| Req::Next { ack }),
        2 => (0u8..3).prop_map(|back| Req::Retry { back }),
        1 => (0u8..8, 0u8..8).prop_map(|(seq, first)| Req::Raw { seq, first }),
    ]
}

fn name() -> impl Strategy<Value = u8> {
    // "a" is contended most, so that queues grow long enough to reach their limit.
    prop_oneof![6 => Just(0u8), 6 => 1u8..5, 1 => 5u8..8]
}

fn token_pick() -> impl Strategy<Value = TokenPick> {
    prop_oneof![
        6 => Just(TokenPick::Current),
        1 => (-2i8..=2).prop_map(TokenPick::Off),
        1 => any::<u8>().prop_map(TokenPick::Raw),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..CLIENTS, 0u8..5).prop_map(|(client, ttl)| Op::Open { client, ttl }),
        1 => who().prop_map(|who| Op::Close { who }),
        10 => (who(), req(), name(), any::<bool>(), prop::bool::weighted(0.7), 0u8..6).prop_map(
            |(who, req, name, shared, queue, value_len)| Op::Acquire {
                who, req, name, shared, queue, value_len
            }
        ),
        2 => (0..CLIENTS, 0u8..5, name(), any::<bool>(), any::<bool>(), 0u8..6).prop_map(
            |(client, ttl, name, shared, queue, value_len)| Op::Lease {
                client, ttl, name, shared, queue, value_len
            }
        ),
        7 => (who(), req(), name(), token_pick())
            .prop_map(|(who, req, name, token)| Op::Release { who, req, name, token }),
        2 => (who(), name()).prop_map(|(who, name)| Op::Cancel { who, name }),
        1 => prop::collection::vec(who(), 0..=4).prop_map(|whos| Op::Expire { whos }),
        1 => name().prop_map(|name| Op::Force { name }),
        1 => who().prop_map(|who| Op::Revoke { who }),
        1 => any::<u8>().prop_map(|preset| Op::SetLimits { preset }),
        8 => (who(), req(), specs(), prop::bool::weighted(0.7), 0u8..6).prop_map(
            |(who, req, specs, queue, value_len)| Op::Locks { who, req, specs, queue, value_len }
        ),
        2 => (0..CLIENTS, 0u8..5, specs(), any::<bool>()).prop_map(
            |(client, ttl, specs, queue)| Op::LocksLease { client, ttl, specs, queue }
        ),
        2 => any::<u8>().prop_map(|seconds| Op::Clock { seconds }),
        2 => (name(), prop::bool::weighted(0.8)).prop_map(|(name, exact)| Op::EndDelay { name, exact }),
        2 => (who(), req(), name(), token_pick(), 0u8..6).prop_map(
            |(who, req, name, token, value_len)| Op::SetValue { who, req, name, token, value_len }
        ),
        1 => any::<u8>().prop_map(|preset| Op::SetPrimitiveLimits { preset }),
    ]
}

/// Per-session request counters of the simulated clients.
#[derive(Default)]
struct Clients {
    /// (next sequence number, lowest unacknowledged) per session.
    counters: BTreeMap<SessionId, (u64, u64)>,
}

impl Clients {
    fn request(&mut self, session: SessionId, req: &Req) -> RequestId {
        let (next, low) = self.counters.entry(session).or_insert((1, 1));
        match *req {
            Req::Next { ack } => {
                let seq = *next;
                *next += 1;
                if ack {
                    *low = seq;
                }
                RequestId {
                    seq,
                    first_unanswered_seq: *low,
                }
            }
            Req::Retry { back } => RequestId {
                seq: next.saturating_sub(1 + u64::from(back)),
                first_unanswered_seq: *low,
            },
            Req::Raw { seq, first } => RequestId {
                seq: u64::from(seq),
                first_unanswered_seq: u64::from(first),
            },
        }
    }
}

fn resolve_who(model: &Model, who: &Who) -> SessionId {
    match *who {
        Who::Live(index) => {
            if model.sessions.is_empty() {
                SessionId(0)
            } else {
                model.sessions[usize::from(index) % model.sessions.len()].id
            }
        }
        Who::Any(id) => SessionId(u64::from(id)),
    }
}

fn to_command(op: &Op, model: &Model, clients: &mut Clients) -> Command {
    let name_of = |index: u8| NAMES[usize::from(index) % NAMES.len()].to_owned();
    let mode_of = |shared: bool| {
        if shared {
            LockMode::Shared
        } else {
            LockMode::Exclusive
        }
    };
    let wait_of = |queue: bool| {
        if queue {
            WaitPolicy::Queue
        } else {
            WaitPolicy::NoWait
        }
    };
    match op {
        Op::Open { client, ttl } => Command::OpenSession {
            client_id: ClientId(u128::from(*client)),
            ttl_ms: TTLS[usize::from(*ttl)],
        },
        Op::Close { who } => Command::CloseSession {
            session: resolve_who(model, who),
        },
        Op::Acquire {
            who,
            req,
            name,
            shared,
            queue,
            value_len,
        } => {
            let session = resolve_who(model, who);
            Command::Acquire {
                session,
                request: clients.request(session, req),
                name: name_of(*name),
                mode: mode_of(*shared),
                wait: wait_of(*queue),
                value: vec![*value_len; usize::from(*value_len)],
            }
        }
        Op::Lease {
            client,
            ttl,
            name,
            shared,
            queue,
            value_len,
        } => Command::AcquireWithLease {
            client_id: ClientId(u128::from(*client)),
            ttl_ms: TTLS[usize::from(*ttl)],
            name: name_of(*name),
            mode: mode_of(*shared),
            wait: wait_of(*queue),
            value: vec![*value_len; usize::from(*value_len)],
        },
        Op::Release {
            who,
            req,
            name,
            token,
        } => {
            let session = resolve_who(model, who);
            let name = name_of(*name);
            let current = model.token_of(session, &name).unwrap_or(model.last_token);
            let token = match *token {
                TokenPick::Current => current,
                TokenPick::Off(delta) => current.wrapping_add_signed(i64::from(delta)),
                TokenPick::Raw(raw) => u64::from(raw),
            };
            Command::Release {
                session,
                request: clients.request(session, req),
                name,
                token: FencingToken(token),
            }
        }
        Op::Cancel { who, name } => Command::CancelWait {
            session: resolve_who(model, who),
            name: name_of(*name),
        },
        Op::Expire { whos } => Command::ExpireSessions {
            sessions: whos.iter().map(|who| resolve_who(model, who)).collect(),
        },
        Op::Force { name } => Command::ForceRelease {
            name: name_of(*name),
        },
        Op::Revoke { who } => Command::RevokeSession {
            session: resolve_who(model, who),
        },
        Op::SetLimits { preset } => Command::SetLimits(limits_preset(*preset)),
        Op::Locks {
            who,
            req,
            specs,
            queue,
            value_len,
        } => {
            let session = resolve_who(model, who);
            Command::AcquireLocks {
                session,
                request: clients.request(session, req),
                locks: specs
                    .iter()
                    .map(|&(name, kind)| spec_of(name_of(name), kind))
                    .collect(),
                wait: wait_of(*queue),
                value: vec![*value_len; usize::from(*value_len)],
            }
        }
        Op::LocksLease {
            client,
            ttl,
            specs,
            queue,
        } => Command::AcquireLocksWithLease {
            client_id: ClientId(u128::from(*client)),
            ttl_ms: TTLS[usize::from(*ttl)],
            locks: specs
                .iter()
                .map(|&(name, kind)| spec_of(name_of(name), kind))
                .collect(),
            wait: wait_of(*queue),
            value: Vec::new(),
        },
        Op::Clock { seconds } => Command::WallClock {
            unix_ms: 1_000 * u64::from(*seconds),
        },
        Op::EndDelay { name, exact } => {
            let name = name_of(*name);
            let delay = model.delays.iter().find(|d| d.name == name);
            let token = match delay {
                Some(delay) if *exact => delay.token,
                _ => model.last_token,
            };
            Command::EndLockDelay {
                name,
                token: FencingToken(token),
            }
        }
        Op::SetValue {
            who,
            req,
            name,
            token,
            value_len,
        } => {
            let session = resolve_who(model, who);
            let name = name_of(*name);
            let current = model.token_of(session, &name).unwrap_or(model.last_token);
            let token = match *token {
                TokenPick::Current => current,
                TokenPick::Off(delta) => current.wrapping_add_signed(i64::from(delta)),
                TokenPick::Raw(raw) => u64::from(raw),
            };
            Command::SetValue {
                session,
                request: clients.request(session, req),
                name,
                token: FencingToken(token),
                value: vec![*value_len; usize::from(*value_len)],
            }
        }
        Op::SetPrimitiveLimits { preset } => {
            Command::SetPrimitiveLimits(primitive_limits_preset(*preset))
        }
    }
}

// ----- comparing ------------------------------------------------------------------------

/// Reasons in `InvalidName` and `InvalidLimits` are prose for humans; the model does not
/// reproduce them.
fn normalize(result: &Result<Response, Error>) -> Result<Response, Error> {
    match result {
        Err(Error::InvalidName(_)) => Err(Error::InvalidName(String::new())),
        Err(Error::InvalidLimits(_)) => Err(Error::InvalidLimits(String::new())),
        Err(Error::InvalidLockSpec(_)) => Err(Error::InvalidLockSpec(String::new())),
        other => other.clone(),
    }
}

/// Everything a reader of the state can see, for equality checks.
#[derive(Debug, PartialEq)]
struct Observed {
    stats: Stats,
    limits: Limits,
    primitive_limits: PrimitiveLimits,
    clock_ms: u64,
    sessions: Vec<(SessionId, u64)>,
    session_views: Vec<Option<SessionView>>,
    lock_views: Vec<Option<LockView>>,
    /// The grants in force, oldest first: `(granted_at_ms, token, name)`.
    grants_by_age: Vec<(u64, u64, String)>,
    oldest_stamped_grant_ms: Option<u64>,
    longest_held: Vec<String>,
}

fn observe(state: &State) -> Observed {
    Observed {
        stats: state.stats(),
        limits: state.limits().clone(),
        primitive_limits: state.primitive_limits().clone(),
        clock_ms: state.clock_ms(),
        sessions: state.sessions().collect(),
        session_views: (0..16).map(|id| state.session(SessionId(id))).collect(),
        lock_views: NAMES.iter().map(|name| state.lock(name)).collect(),
        grants_by_age: state
            .grants_by_age()
            .map(|grant| (grant.granted_at_ms, grant.token.0, grant.name.to_owned()))
            .collect(),
        oldest_stamped_grant_ms: state.oldest_stamped_grant_ms(),
        longest_held: state
            .longest_held_locks(3)
            .into_iter()
            .map(|lock| lock.name)
            .collect(),
    }
}

fn observe_model(model: &Model) -> Observed {
    Observed {
        stats: model.stats(),
        limits: model.limits.clone(),
        primitive_limits: model.primitive_limits.clone(),
        clock_ms: model.clock_ms,
        sessions: model.sessions.iter().map(|s| (s.id, s.ttl_ms)).collect(),
        session_views: (0..16)
            .map(|id| model.session_view(SessionId(id)))
            .collect(),
        lock_views: NAMES.iter().map(|name| model.lock_view(name)).collect(),
        grants_by_age: model.grants_by_age(),
        oldest_stamped_grant_ms: model
            .holders
            .iter()
            .map(|h| h.granted_at_ms)
            .filter(|&at| at > 0)
            .min(),
        longest_held: model.longest_held(3),
    }
}

/// The request path's cheap session reads agree with the full session view.
fn check_session_shortcuts(state: &State) -> Result<(), TestCaseError> {
    for id in 0..16 {
        let session = SessionId(id);
        let view = state.session(session);
        prop_assert_eq!(
            state.session_ttl_ms(session),
            view.as_ref().map(|v| v.ttl_ms)
        );
        prop_assert_eq!(
            state.session_lock_counts(session),
            view.as_ref().map(|v| (v.held.len(), v.waiting.len()))
        );
        for name in NAMES {
            let held = view
                .as_ref()
                .and_then(|v| v.held.iter().find(|(n, _)| n == name).map(|(_, t)| *t));
            prop_assert_eq!(state.held_token(session, name), held);
        }
    }
    Ok(())
}

/// Checks the listing against a naive filter of the model's lock names.
fn check_listing(state: &State, model: &Model, step: usize) -> Result<(), TestCaseError> {
    let names = model.lock_names();
    for (p, prefix) in PREFIXES.iter().enumerate() {
        let after = ["", "a", "a/1", "b"][(step + p) % 4];
        let start_after = if after.is_empty() { None } else { Some(after) };
        let limit = (step + p) % 4;
        let matching: Vec<&String> = names
            .iter()
            .filter(|n| n.starts_with(prefix) && start_after.is_none_or(|a| n.as_str() > a))
            .collect();
        let expected: Vec<String> = matching.iter().take(limit).map(|n| (*n).clone()).collect();
        let (views, more) = state.locks_with_prefix(prefix, start_after, limit);
        let got: Vec<String> = views.into_iter().map(|v| v.name).collect();
        prop_assert_eq!(
            &got,
            &expected,
            "listing {:?} after {:?}",
            prefix,
            start_after
        );
        prop_assert_eq!(more, matching.len() > limit);
    }
    Ok(())
}

fn initial(near_exhaustion: Option<u8>) -> (State, Model) {
    let last_token = near_exhaustion.map_or(0, |left| u64::MAX - u64::from(left));
    let mut state = State::starting_after(small_limits(), FencingToken(last_token));
    state
        .apply(
            Command::SetPrimitiveLimits(small_primitive_limits()),
            &mut Vec::new(),
        )
        .unwrap();
    (state, Model::new(small_limits(), last_token))
}

/// A short name for what a step did, to check that the generator reaches everything.
fn outcome(result: &Result<Response, Error>) -> String {
    let text = match result {
        Ok(response) => format!("Ok::{response:?}"),
        Err(Error::LimitReached(kind)) => format!("Err::LimitReached::{kind:?}"),
        Err(error) => format!("Err::{error:?}"),
    };
    text.split([' ', '(', '{'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn run_against_model(
    near_exhaustion: Option<u8>,
    ops: &[Op],
    outcomes: &mut std::collections::BTreeSet<String>,
) -> Result<(), TestCaseError> {
    let (mut state, mut model) = initial(near_exhaustion);
    let mut clients = Clients::default();
    let mut last_acquired: Option<FencingToken> = None;
    let mut last_per_lock: BTreeMap<String, FencingToken> = BTreeMap::new();
    for (step, op) in ops.iter().enumerate() {
        let command = to_command(op, &model, &mut clients);
        let bytes = postcard::to_allocvec(&command).unwrap();
        prop_assert_eq!(&postcard::from_bytes::<Command>(&bytes).unwrap(), &command);

        let before = observe(&state);
        let queue_hint = queue_hint(&state, &command);
        let mut events = Vec::new();
        let result = state.apply(command.clone(), &mut events);
        let (expected, expected_events) = model.apply(command.clone());
        outcomes.insert(outcome(&result));
        for event in &events {
            outcomes.insert(
                format!("{event:?}")
                    .split([' ', '{'])
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        let handed_on: Vec<SessionId> = events
            .iter()
            .filter_map(|event| match event {
                Event::Acquired { session, .. } => Some(*session),
                _ => None,
            })
            .collect();
        let is_acquire = matches!(
            command,
            Command::AcquireLocks { .. } | Command::AcquireLocksWithLease { .. }
        );
        if !is_acquire && handed_on.windows(2).any(|pair| pair[0] == pair[1]) {
            outcomes.insert("multi-lock granted from its queues".to_owned());
        }
        check_queue_hint(queue_hint, &state, &command, &result, &events)?;

        prop_assert_eq!(
            normalize(&result),
            normalize(&expected),
            "step {}: {:?}",
            step,
            command
        );
        prop_assert_eq!(&events, &expected_events, "step {}: {:?}", step, command);
        if let Err(violation) = state.check_invariants() {
            return Err(TestCaseError::fail(format!(
                "step {step}: {command:?}: {violation}"
            )));
        }
        let after = observe(&state);
        if result.is_err() {
            prop_assert!(events.is_empty());
            prop_assert_eq!(&after, &before, "a refusal changed the state");
        }
        prop_assert_eq!(
            &after,
            &observe_model(&model),
            "step {}: {:?}",
            step,
            command
        );
        check_listing(&state, &model, step)?;
        check_session_shortcuts(&state)?;

        for event in &events {
            if let Event::Acquired { name, token, .. } = event {
                prop_assert!(last_acquired.is_none_or(|last| *token > last));
                last_acquired = Some(*token);
                let previous = last_per_lock.insert(name.clone(), *token);
                prop_assert!(previous.is_none_or(|last| *token > last));
            }
        }
        if let Ok(Response::Granted { token, .. }) = &result {
            prop_assert!(token.0 <= state.last_token().0);
        }
    }
    Ok(())
}

/// For an acquire that may queue: `State::would_queue` before it, and whether the
/// session already waited for the lock.
fn queue_hint(state: &State, command: &Command) -> Option<(bool, bool)> {
    match command {
        Command::Acquire {
            session,
            name,
            mode,
            wait: WaitPolicy::Queue,
            ..
        } => {
            let waiting = state
                .session(*session)
                .is_some_and(|view| view.waiting.contains(name));
            Some((state.would_queue(name, *mode), waiting))
        }
        Command::AcquireLocks {
            session,
            locks,
            wait: WaitPolicy::Queue,
            ..
        } if !locks.is_empty() => {
            let waiting = state
                .session(*session)
                .is_some_and(|view| locks.iter().any(|spec| view.waiting.contains(&spec.name)));
            Some((state.would_queue_locks(locks), waiting))
        }
        _ => None,
    }
}

/// The proposer's hint agrees with what the acquire did: a fresh grant was not
/// predicted to queue, a fresh wait was (replays and refusals say nothing).
fn check_queue_hint(
    hint: Option<(bool, bool)>,
    state: &State,
    command: &Command,
    result: &Result<Response, Error>,
    events: &[Event],
) -> Result<(), TestCaseError> {
    let Some((would_queue, was_waiting)) = hint else {
        return Ok(());
    };
    let (session, name) = match command {
        Command::Acquire { session, name, .. } => (session, name),
        Command::AcquireLocks { session, locks, .. } => (session, &locks[0].name),
        _ => return Ok(()),
    };
    let granted = events.iter().any(|event| {
        matches!(event, Event::Acquired { session: s, name: n, .. } if s == session && n == name)
    });
    let queued = matches!(result, Ok(Response::Queued { .. }))
        && !was_waiting
        && state
            .session(*session)
            .is_some_and(|view| view.waiting.contains(name));
    prop_assert!(
        !(granted && would_queue),
        "granted at once, hinted to queue: {command:?}"
    );
    prop_assert!(
        !queued || would_queue,
        "queued, hinted to be granted: {command:?}"
    );
    Ok(())
}

fn run_snapshot_replay(ops: &[Op], snapshot_at: usize) -> Result<(), TestCaseError> {
    let (mut state, mut model) = initial(None);
    let mut clients = Clients::default();
    let snapshot_at = snapshot_at % (ops.len() + 1);
    let mut copy: Option<State> = None;
    for (step, op) in ops.iter().enumerate() {
        if step == snapshot_at {
            let bytes = postcard::to_allocvec(&state).unwrap();
            let restored: State = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(&restored, &state);
            restored.check_invariants().map_err(TestCaseError::fail)?;
            copy = Some(restored);
        }
        let command = to_command(op, &model, &mut clients);
        let _ = model.apply(command.clone());
        let mut events = Vec::new();
        let result = state.apply(command.clone(), &mut events);
        if let Some(copy) = copy.as_mut() {
            let mut copy_events = Vec::new();
            let copy_result = copy.apply(command, &mut copy_events);
            prop_assert_eq!(&copy_result, &result);
            prop_assert_eq!(&copy_events, &events);
        }
    }
    if let Some(copy) = copy {
        prop_assert_eq!(&copy, &state);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Every step agrees with the reference model; invariants hold throughout; tokens
    /// in `Acquired` events strictly increase overall and per lock.
    #[test]
    fn state_machine_matches_the_reference_model(
        ops in prop::collection::vec(op(), 100..=200),
    ) {
        run_against_model(None, &ops, &mut Default::default())?;
    }

    /// The same, a few tokens before `u64::MAX`: running out refuses whole commands.
    #[test]
    fn state_machine_matches_the_model_near_token_exhaustion(
        left in 0u8..12,
        ops in prop::collection::vec(op(), 50..=120),
    ) {
        run_against_model(Some(left), &ops, &mut Default::default())?;
    }

    /// A snapshot restored midway applies the rest of the log exactly like the original.
    #[test]
    fn a_restored_snapshot_replays_identically(
        ops in prop::collection::vec(op(), 50..=150),
        snapshot_at in any::<usize>(),
    ) {
        run_snapshot_replay(&ops, snapshot_at)?;
    }
}

#[test]
fn model_and_state_start_equal() {
    let (state, model) = initial(None);
    assert_eq!(observe(&state), observe_model(&model));
}

/// Guards the generator: over a fixed set of runs, every response and every refusal
/// (each limit separately) happens at least once, so the model comparison is not
/// vacuous for any of them.
#[test]
fn the_generator_reaches_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let sequences = prop::collection::vec(op(), 150);
    let mut outcomes = std::collections::BTreeSet::new();
    for run in 0..128u8 {
        let ops = sequences.new_tree(&mut runner).unwrap().current();
        let near_exhaustion = (run % 3 == 0).then_some(run % 4);
        run_against_model(near_exhaustion, &ops, &mut outcomes).unwrap();
    }
    let expected = [
        "Ok::SessionOpened",
        "Ok::SessionClosed",
        "Ok::Granted",
        "Ok::Queued",
        "Ok::WouldBlock",
        "Ok::WaitCancelled",
        "Ok::Released",
        "Ok::SessionsExpired",
        "Ok::ForceReleased",
        "Ok::SessionRevoked",
        "Ok::LimitsSet",
        "Err::SessionNotFound",
        "Err::InvalidName",
        "Err::InvalidTtl",
        "Err::ValueTooLarge",
        "Err::NotHeld",
        "Err::StaleToken",
        "Err::AlreadyHeldOrQueued",
        "Err::NotWaiting",
        "Err::LimitReached::Sessions",
        "Err::LimitReached::Locks",
        "Err::LimitReached::WaitersPerLock",
        "Err::LimitReached::LocksPerSession",
        "Err::LimitReached::PendingRequestsPerSession",
        "Err::LimitReached::ExpireBatch",
        "Err::RequestTooOld",
        "Err::TokenOverflow",
        "Err::InvalidLimits",
        "Ok::GrantedLocks",
        "Ok::StillHeld",
        "Ok::ClockSet",
        "Ok::LockDelayEnded",
        "Ok::ValueSet",
        "Ok::PrimitiveLimitsSet",
        "Err::PermitsMismatch",
        "Err::InvalidLockSpec",
        "Err::LockDelayTooLong",
        "Err::LimitReached::LocksPerRequest",
        "Err::LimitReached::HoldCount",
        "LockDelayStarted",
        "LockDelayEnded",
        "HoldCountChanged",
        "ValueChanged",
        "multi-lock granted from its queues",
    ];
    let missing: Vec<&str> = expected
        .into_iter()
        .filter(|outcome| !outcomes.contains(*outcome))
        .collect();
    assert!(
        missing.is_empty(),
        "never reached: {missing:?}; reached: {outcomes:?}"
    );
}
