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
    ClientId, Command, EndReason, Error, Event, FencingToken, HolderView, LimitKind, Limits,
    LockMode, LockView, ReleaseReason, RequestId, Response, SessionId, SessionView, State, Stats,
    WaitPolicy, WaiterView,
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
}

#[derive(Clone, Debug)]
struct ModelWaiter {
    name: String,
    session: SessionId,
    mode: LockMode,
    value: Vec<u8>,
    seq: u64,
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
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn lock_exists(&self, name: &str) -> bool {
        self.holders.iter().any(|h| h.name == name) || self.waiters.iter().any(|w| w.name == name)
    }

    fn holders_admit(&self, name: &str, mode: LockMode) -> bool {
        let mut holders = self.holders.iter().filter(|h| h.name == name);
        match mode {
            LockMode::Exclusive => holders.next().is_none(),
            LockMode::Shared => holders.all(|h| h.mode == LockMode::Shared),
        }
    }

    fn mint(&mut self) -> Result<u64, Error> {
        self.last_token = self.last_token.checked_add(1).ok_or(Error::TokenOverflow)?;
        self.total_grants += 1;
        Ok(self.last_token)
    }

    /// Grants the head of `name`'s queue while it fits.
    fn settle(&mut self, name: &str, events: &mut Vec<Event>) -> Result<(), Error> {
        while let Some(index) = self.waiters.iter().position(|w| w.name == name) {
            if !self.holders_admit(name, self.waiters[index].mode) {
                break;
            }
            let waiter = self.waiters.remove(index);
            let token = self.mint()?;
            if let Some(session) = self.session_mut(waiter.session) {
                for (seq, answer) in &mut session.answers {
                    if *seq == waiter.seq {
                        *answer = Ok(Response::Granted {
                            session: waiter.session,
                            token: FencingToken(token),
                        });
                    }
                }
            }
            events.push(Event::Acquired {
                name: name.to_owned(),
                session: waiter.session,
                token: FencingToken(token),
                mode: waiter.mode,
                value: waiter.value.clone(),
            });
            self.holders.push(ModelHolder {
                name: name.to_owned(),
                session: waiter.session,
                token,
                mode: waiter.mode,
                value: waiter.value,
            });
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
            } => self.with_request(session, request, |m, events| {
                m.acquire_act(session, request.seq, name, mode, wait, value, events)
            }),
            Command::Release {
                session,
                request,
                name,
                token,
            } => self.with_request(session, request, |m, events| {
                m.release_act(session, name, token, events)
            }),
            Command::AcquireWithLease {
                client_id,
                ttl_ms,
                name,
                mode,
                wait,
                value,
            } => {
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
                        m.acquire_act(id, 1, name, mode, wait, value, events)
                    });
                }
                let (result, events) = self.atomically(|m, events| {
                    model_name_check(&m.limits, &name)?;
                    if value.len() as u64 > m.limits.max_value_bytes {
                        return Err(Error::ValueTooLarge {
                            len: value.len(),
                            max: m.limits.max_value_bytes as usize,
                        });
                    }
                    let id = m.open_new(client_id, ttl_ms, events)?;
                    let result = m.acquire_act(id, 1, name, mode, wait, value, events)?;
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
            other => self.atomically(|m, events| m.step(other, events)),
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
        name: String,
        mode: LockMode,
        wait: WaitPolicy,
        value: Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        model_name_check(&self.limits, &name)?;
        if value.len() as u64 > self.limits.max_value_bytes {
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max: self.limits.max_value_bytes as usize,
            });
        }
        let mine = |s: SessionId| s == session;
        if self
            .holders
            .iter()
            .any(|h| h.name == name && mine(h.session))
            || self
                .waiters
                .iter()
                .any(|w| w.name == name && mine(w.session))
        {
            return Err(Error::AlreadyHeldOrQueued(name));
        }
        let session_locks = self.holders.iter().filter(|h| mine(h.session)).count()
            + self.waiters.iter().filter(|w| mine(w.session)).count();
        let queue_len = self.waiters.iter().filter(|w| w.name == name).count();
        if queue_len == 0 && self.holders_admit(&name, mode) {
            if session_locks as u64 >= self.limits.max_locks_per_session {
                return Err(Error::LimitReached(LimitKind::LocksPerSession));
            }
            if !self.lock_exists(&name) && self.lock_names().len() as u64 >= self.limits.max_locks {
                return Err(Error::LimitReached(LimitKind::Locks));
            }
            let token = self.mint()?;
            events.push(Event::Acquired {
                name: name.clone(),
                session,
                token: FencingToken(token),
                mode,
                value: value.clone(),
            });
            self.holders.push(ModelHolder {
                name,
                session,
                token,
                mode,
                value,
            });
            return Ok(Response::Granted {
                session,
                token: FencingToken(token),
            });
        }
        if wait == WaitPolicy::NoWait {
            return Ok(Response::WouldBlock { session });
        }
        if session_locks as u64 >= self.limits.max_locks_per_session {
            return Err(Error::LimitReached(LimitKind::LocksPerSession));
        }
        if queue_len as u64 >= self.limits.max_waiters_per_lock {
            return Err(Error::LimitReached(LimitKind::WaitersPerLock));
        }
        self.waiters.push(ModelWaiter {
            name,
            session,
            mode,
            value,
            seq,
        });
        Ok(Response::Queued { session })
    }

    fn release_act(
        &mut self,
        session: SessionId,
        name: String,
        token: FencingToken,
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        let Some(index) = self
            .holders
            .iter()
            .position(|h| h.name == name && h.session == session)
        else {
            model_name_check(&self.limits, &name)?;
            return Err(Error::NotHeld(name));
        };
        let current = FencingToken(self.holders[index].token);
        if current != token {
            return Err(Error::StaleToken {
                name,
                given: token,
                current,
            });
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
            Command::AcquireLocks { .. }
            | Command::AcquireLocksWithLease { .. }
            | Command::WallClock { .. }
            | Command::EndLockDelay { .. }
            | Command::SetValue { .. }
            | Command::SetPrimitiveLimits(_) => {
                unreachable!("not generated yet")
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
                let record = self.session_mut(session).unwrap();
                for (seq, answer) in &mut record.answers {
                    if *seq == waiter.seq {
                        *answer = Ok(Response::WaitCancelled);
                    }
                }
                events.push(Event::WaitCancelled {
                    name: name.clone(),
                    session,
                });
                self.settle(&name, events)?;
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
            | Command::AcquireWithLease { .. } => {
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
                granted_at_ms: 0,
                weight: 1,
                hold_count: 1,
                lock_delay_ms: 0,
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
                queued_at_ms: 0,
                weight: 1,
                names: Vec::new(),
            })
            .collect();
        let permits_used = holders.len() as u64;
        Some(LockView {
            name: name.to_owned(),
            holders,
            waiters,
            permits: None,
            permits_used,
            delay: None,
        })
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
    }
}

// ----- comparing ------------------------------------------------------------------------

/// Reasons in `InvalidName` and `InvalidLimits` are prose for humans; the model does not
/// reproduce them.
fn normalize(result: &Result<Response, Error>) -> Result<Response, Error> {
    match result {
        Err(Error::InvalidName(_)) => Err(Error::InvalidName(String::new())),
        Err(Error::InvalidLimits(_)) => Err(Error::InvalidLimits(String::new())),
        other => other.clone(),
    }
}

/// Everything a reader of the state can see, for equality checks.
#[derive(Debug, PartialEq)]
struct Observed {
    stats: Stats,
    limits: Limits,
    sessions: Vec<(SessionId, u64)>,
    session_views: Vec<Option<SessionView>>,
    lock_views: Vec<Option<LockView>>,
}

fn observe(state: &State) -> Observed {
    Observed {
        stats: state.stats(),
        limits: state.limits().clone(),
        sessions: state.sessions().collect(),
        session_views: (0..16).map(|id| state.session(SessionId(id))).collect(),
        lock_views: NAMES.iter().map(|name| state.lock(name)).collect(),
    }
}

fn observe_model(model: &Model) -> Observed {
    Observed {
        stats: model.stats(),
        limits: model.limits.clone(),
        sessions: model.sessions.iter().map(|s| (s.id, s.ttl_ms)).collect(),
        session_views: (0..16)
            .map(|id| model.session_view(SessionId(id)))
            .collect(),
        lock_views: NAMES.iter().map(|name| model.lock_view(name)).collect(),
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
    (
        State::starting_after(small_limits(), FencingToken(last_token)),
        Model::new(small_limits(), last_token),
    )
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
    let (Some((would_queue, was_waiting)), Command::Acquire { session, name, .. }) =
        (hint, command)
    else {
        return Ok(());
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
