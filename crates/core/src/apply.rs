//! [`State::apply`]: what each [`Command`] does to the state, which [`Response`] or
//! [`Error`] it answers and which [`Event`]s it emits.
//!
//! Every handler checks everything that can refuse the command before it changes
//! anything, so a refused command leaves the state as it was and emits nothing. The one
//! deliberate exception is the request-id bookkeeping of `Acquire` and `Release`: the
//! client's acknowledgement is recorded, and an answer, even an error, is remembered so
//! that a retry gets the same answer.
//!
//! Running out of fencing tokens is the one refusal that is not known before acting
//! (a release can hand the lock down a queue). [`State::transact`] handles it: when the
//! counter is far from `u64::MAX` (always, in practice) it cannot happen and the command
//! runs in place; near the end it runs on a copy that is kept only if it succeeds.

use std::collections::BTreeSet;
use std::collections::btree_map::Entry;
use std::ops::Bound;

use crate::state::{
    Dedup, Holder, LockRecord, Name, SessionRecord, State, Waiter, count, next_token,
};
use crate::types::{
    ClientId, Command, EndReason, Error, Event, FencingToken, LimitKind, LockMode, ReleaseReason,
    RequestId, Response, SessionId, WaitPolicy,
};
use crate::validate::{validate_name, validate_ttl, validate_value, widen};

/// The lock-specific part of an `Acquire` or `AcquireWithLease`.
struct LockRequest {
    name: String,
    mode: LockMode,
    wait: WaitPolicy,
    value: Vec<u8>,
}

/// What an admissible acquire will do, decided before anything changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Grant at once.
    Grant,
    /// Answer `WouldBlock`, leave no trace.
    WouldBlock,
    /// Join the wait queue.
    Queue,
}

impl State {
    /// Applies one command: the state machine's only way to change.
    ///
    /// Pure and deterministic: no clock, no I/O, no randomness. Events describing what
    /// changed are appended to `events`, in the order things happened.
    ///
    /// # Errors
    ///
    /// The command is refused with an [`Error`]. Then nothing changed and no event was
    /// pushed, except for the request-id bookkeeping of `Acquire` and `Release`: the
    /// client's acknowledgement (`first_unanswered_seq`) is recorded, and an error found
    /// while acting on a new request is remembered as that request's answer (not
    /// [`Error::SessionNotFound`], [`Error::RequestTooOld`], or
    /// [`Error::LimitReached`]`(PendingRequestsPerSession)`, which have nowhere to go).
    ///
    /// # Panics
    ///
    /// In debug builds, if the state breaks an invariant afterwards (see
    /// [`State::check_invariants`]): that is a bug in this crate.
    pub fn apply(&mut self, command: Command, events: &mut Vec<Event>) -> Result<Response, Error> {
        let events_before = events.len();
        let result = match command {
            Command::OpenSession { client_id, ttl_ms } => {
                self.open_session(client_id, ttl_ms, events)
            }
            Command::CloseSession { session } => self.close_session(session, events),
            Command::Acquire {
                session,
                request,
                name,
                mode,
                wait,
                value,
            } => {
                let lock_request = LockRequest {
                    name,
                    mode,
                    wait,
                    value,
                };
                self.acquire(session, request, lock_request, events)
            }
            Command::AcquireWithLease {
                client_id,
                ttl_ms,
                name,
                mode,
                wait,
                value,
            } => {
                let lock_request = LockRequest {
                    name,
                    mode,
                    wait,
                    value,
                };
                self.acquire_with_lease(client_id, ttl_ms, lock_request, events)
            }
            Command::Release {
                session,
                request,
                name,
                token,
            } => self.release(session, request, name, token, events),
            Command::CancelWait { session, name } => self.cancel_wait(session, name, events),
            Command::ExpireSessions { sessions } => self.expire_sessions(&sessions, events),
            Command::ForceRelease { name } => self.force_release(name, events),
            Command::RevokeSession { session } => self.revoke_session(session, events),
            Command::SetLimits(limits) => {
                limits.validate()?;
                self.limits_envelope = widen(&self.limits_envelope, &limits);
                self.limits = limits;
                Ok(Response::LimitsSet)
            }
            Command::Auth(auth) => self.apply_auth(auth, events),
            Command::Owned { owner, command } => self.apply_owned(owner, *command, events),
            Command::Authorized { caller, command } => {
                self.apply_authorized(caller, *command, events)
            }
            Command::Once {
                request,
                remember,
                command,
            } => self.apply_once(request, remember, *command, events),
        };
        assert!(
            result.is_ok() || events.len() == events_before,
            "a refused command emitted events"
        );
        #[cfg(debug_assertions)]
        if let Err(violation) = self.check_invariants() {
            panic!("state machine invariant violated: {violation}");
        }
        result
    }

    // ----- sessions -------------------------------------------------------------------

    fn open_session(
        &mut self,
        client_id: ClientId,
        ttl_ms: u64,
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        validate_ttl(&self.limits, ttl_ms)?;
        if let Some(&session) = self.sessions_by_client.get(&client_id) {
            let ttl_ms = self.sessions[&session].ttl_ms;
            return Ok(Response::SessionOpened { session, ttl_ms });
        }
        self.check_session_admission()?;
        let session = self.create_session(client_id, ttl_ms, events);
        Ok(Response::SessionOpened { session, ttl_ms })
    }

    /// Room for one more session: under `max_sessions`, and an id left to give.
    fn check_session_admission(&self) -> Result<(), Error> {
        if count(self.sessions.len()) >= self.limits.max_sessions
            || self.next_session_id == u64::MAX
        {
            return Err(Error::LimitReached(LimitKind::Sessions));
        }
        Ok(())
    }

    /// Creates a session; [`State::check_session_admission`] must have passed.
    fn create_session(
        &mut self,
        client_id: ClientId,
        ttl_ms: u64,
        events: &mut Vec<Event>,
    ) -> SessionId {
        let session = SessionId(self.next_session_id);
        self.next_session_id += 1;
        self.sessions
            .insert(session, SessionRecord::new(client_id, ttl_ms));
        let previous = self.sessions_by_client.insert(client_id, session);
        assert!(
            previous.is_none(),
            "client id {client_id:?} had a live session"
        );
        events.push(Event::SessionOpened {
            session,
            client_id,
            ttl_ms,
        });
        session
    }

    fn close_session(
        &mut self,
        session: SessionId,
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        if !self.sessions.contains_key(&session) {
            return Err(Error::SessionNotFound(session));
        }
        self.transact(events, |state, events| {
            state.end_session(session, EndReason::Closed, events)?;
            Ok(Response::SessionClosed)
        })
    }

    fn expire_sessions(
        &mut self,
        sessions: &[SessionId],
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        if count(sessions.len()) > self.limits.max_expire_batch {
            return Err(Error::LimitReached(LimitKind::ExpireBatch));
        }
        self.transact(events, |state, events| {
            let mut ended = 0;
            for &session in sessions {
                if state.sessions.contains_key(&session) {
                    state.end_session(session, EndReason::Expired, events)?;
                    ended += 1;
                }
            }
            state.total_expired_sessions += ended;
            Ok(Response::SessionsExpired { count: ended })
        })
    }

    /// An admin ends a live session as expiry would, recorded as revoked.
    fn revoke_session(
        &mut self,
        session: SessionId,
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        let Some(record) = self.sessions.get(&session) else {
            return Err(Error::SessionNotFound(session));
        };
        let released = count(record.held.len());
        self.transact(events, |state, events| {
            state.end_session(session, EndReason::Revoked, events)?;
            Ok(Response::SessionRevoked { released })
        })
    }

    /// Ends a live session in one step: releases what it holds, drops what it waits for,
    /// hands the affected locks to their next waiters, forgets idle locks, and forgets
    /// the session with its remembered answers.
    ///
    /// Events: every `Released` (in lock-name order), every `WaitCancelled` (in lock-name
    /// order), the `Acquired` of the grants this made possible (lock by lock in name
    /// order, each in queue order), then `SessionEnded`.
    fn end_session(
        &mut self,
        session: SessionId,
        reason: EndReason,
        events: &mut Vec<Event>,
    ) -> Result<(), Error> {
        let record = self
            .sessions
            .remove(&session)
            .expect("end_session is called for live sessions only");
        self.sessions_by_client.remove(&record.client_id);
        self.forget_session_owner(session);
        let release_reason = match reason {
            EndReason::Closed => ReleaseReason::SessionClosed,
            EndReason::Expired => ReleaseReason::SessionExpired,
            EndReason::Revoked => ReleaseReason::Revoked,
        };
        for (name, &token) in &record.held {
            let lock = self.locks.get_mut(name).expect("a held lock is known");
            let holder = lock.holders.remove(token).expect("the session's grant");
            assert_eq!(holder.session, session);
            self.held_grants -= 1;
            events.push(Event::Released {
                name: name.to_string(),
                session,
                token,
                reason: release_reason,
            });
        }
        for name in &record.waiting {
            let lock = self
                .locks
                .get_mut(name)
                .expect("a waited-for lock is known");
            lock.waiters
                .remove_session(session)
                .expect("the session's wait");
            self.waiters -= 1;
            events.push(Event::WaitCancelled {
                name: name.to_string(),
                session,
            });
        }
        let affected: BTreeSet<&Name> = record.held.keys().chain(&record.waiting).collect();
        for name in affected {
            self.settle_lock(name, events)?;
        }
        events.push(Event::SessionEnded { session, reason });
        Ok(())
    }

    // ----- acquiring ------------------------------------------------------------------

    fn acquire(
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

    /// An `Acquire` by a live session, past the request-id check.
    fn acquire_fresh(
        &mut self,
        session: SessionId,
        seq: u64,
        lock_request: LockRequest,
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        validate_name(self.limits.max_name_bytes, &lock_request.name)?;
        validate_value(self.limits.max_value_bytes, &lock_request.value)?;
        let record = &self.sessions[&session];
        if record.held.contains_key(lock_request.name.as_str())
            || record.waiting.contains(lock_request.name.as_str())
        {
            return Err(Error::AlreadyHeldOrQueued(lock_request.name));
        }
        let plan = self.plan_acquire(record.lock_count(), &lock_request)?;
        Ok(self.execute_acquire(session, seq, lock_request, plan, events))
    }

    /// Decides what an acquire would do, checking every limit first. Grantable at once
    /// iff the queue is empty (a shared request does not jump a queued writer) and the
    /// holders admit the mode.
    ///
    /// Checked in this order: locks per session, then (grant) the lock table and the
    /// token counter, or (queue) the waiters on the lock. `WouldBlock` leaves no trace,
    /// so no limit applies to it.
    fn plan_acquire(&self, session_locks: u64, request: &LockRequest) -> Result<Plan, Error> {
        let lock = self.locks.get(request.name.as_str());
        let grantable =
            lock.is_none_or(|lock| lock.waiters.is_empty() && lock.admits(request.mode));
        if grantable {
            if session_locks >= self.limits.max_locks_per_session {
                return Err(Error::LimitReached(LimitKind::LocksPerSession));
            }
            if lock.is_none() && count(self.locks.len()) >= self.limits.max_locks {
                return Err(Error::LimitReached(LimitKind::Locks));
            }
            next_token(self.last_token)?;
            Ok(Plan::Grant)
        } else if request.wait == WaitPolicy::NoWait {
            Ok(Plan::WouldBlock)
        } else {
            if session_locks >= self.limits.max_locks_per_session {
                return Err(Error::LimitReached(LimitKind::LocksPerSession));
            }
            let lock = lock.expect("a lock that is not grantable exists");
            if count(lock.waiters.len()) >= self.limits.max_waiters_per_lock {
                return Err(Error::LimitReached(LimitKind::WaitersPerLock));
            }
            Ok(Plan::Queue)
        }
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
        let LockRequest {
            name, mode, value, ..
        } = request;
        match plan {
            Plan::Grant => {
                let token = next_token(self.last_token).expect("checked by plan_acquire");
                self.last_token = token.0;
                self.total_grants += 1;
                self.held_grants += 1;
                // One search of the locks: a new name is allocated before the lock is
                // known to be new (in vain only for a second shared holder).
                let (key, lock) = match self.locks.entry(Name::from(name.as_str())) {
                    Entry::Vacant(vacant) => {
                        let key = Name::clone(vacant.key());
                        (key, vacant.insert(LockRecord::default()))
                    }
                    Entry::Occupied(occupied) => (Name::clone(occupied.key()), occupied.into_mut()),
                };
                let record = self.sessions.get_mut(&session).expect("live session");
                record.held.insert(key, token);
                lock.holders.insert(
                    token,
                    Holder {
                        session,
                        mode,
                        value: value.as_slice().into(),
                    },
                );
                events.push(Event::Acquired {
                    name,
                    session,
                    token,
                    mode,
                    value,
                });
                Response::Granted { session, token }
            }
            Plan::WouldBlock => Response::WouldBlock { session },
            Plan::Queue => {
                // One search of the locks for both the lock and its shared name.
                let (key, lock) = self
                    .locks
                    .range_mut::<str, _>((
                        Bound::Included(name.as_str()),
                        Bound::Included(name.as_str()),
                    ))
                    .next()
                    .expect("planned to queue");
                let record = self.sessions.get_mut(&session).expect("live session");
                record.waiting.insert(Name::clone(key));
                self.waiters += 1;
                lock.waiters.push_back(Waiter {
                    session,
                    mode,
                    value: value.into_boxed_slice(),
                    seq,
                });
                Response::Queued { session }
            }
        }
    }

    /// `OpenSession` then `Acquire` with request `{seq: 1, first_unanswered_seq: 1}`.
    ///
    /// With a live session for `client_id`, this is that session's `Acquire` seq 1, so a
    /// retry returns the first (kept current) answer. Without one, the acquire is
    /// checked before the session is created, so a refused command, or one answered
    /// `WouldBlock`, leaves no session behind; `WouldBlock` then names `SessionId(0)`.
    fn acquire_with_lease(
        &mut self,
        client_id: ClientId,
        ttl_ms: u64,
        lock_request: LockRequest,
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
        validate_name(self.limits.max_name_bytes, &lock_request.name)?;
        validate_value(self.limits.max_value_bytes, &lock_request.value)?;
        self.check_session_admission()?;
        let plan = self.plan_acquire(0, &lock_request)?;
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
    fn remember(&mut self, session: SessionId, seq: u64, answer: &Result<Response, Error>) {
        let record = self.sessions.get_mut(&session).expect("live session");
        let previous = record.answers.insert(seq, answer.clone());
        assert!(previous.is_none(), "request {seq} answered twice");
    }

    // ----- releasing ------------------------------------------------------------------

    fn release(
        &mut self,
        session: SessionId,
        request: RequestId,
        name: String,
        token: FencingToken,
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
        let result = self.transact(events, |state, events| {
            state.release_fresh(session, name, token, events)
        });
        self.remember(session, request.seq, &result);
        result
    }

    /// A `Release` by a live session, past the request-id check. A name the session does
    /// not hold is checked for validity, so that the remembered error is bounded.
    fn release_fresh(
        &mut self,
        session: SessionId,
        name: String,
        token: FencingToken,
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        let record = self.sessions.get_mut(&session).expect("live session");
        let Some(&current) = record.held.get(name.as_str()) else {
            validate_name(self.limits.max_name_bytes, &name)?;
            return Err(Error::NotHeld(name));
        };
        if current != token {
            return Err(Error::StaleToken {
                name,
                given: token,
                current,
            });
        }
        record.held.remove(name.as_str());
        let lock = self
            .locks
            .get_mut(name.as_str())
            .expect("a held lock is known");
        let holder = lock.holders.remove(current).expect("the session's grant");
        assert_eq!(holder.session, session);
        self.held_grants -= 1;
        events.push(Event::Released {
            name: name.clone(),
            session,
            token,
            reason: ReleaseReason::Released,
        });
        self.settle_lock(&name, events)?;
        Ok(Response::Released)
    }

    fn cancel_wait(
        &mut self,
        session: SessionId,
        name: String,
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        let record = self
            .sessions
            .get(&session)
            .ok_or(Error::SessionNotFound(session))?;
        if let Some(&token) = record.held.get(name.as_str()) {
            return Ok(Response::Granted { session, token });
        }
        if !record.waiting.contains(name.as_str()) {
            validate_name(self.limits.max_name_bytes, &name)?;
            return Err(Error::NotWaiting(name));
        }
        self.transact(events, |state, events| {
            let lock = state
                .locks
                .get_mut(name.as_str())
                .expect("a waited-for lock is known");
            let waiter = lock
                .waiters
                .remove_session(session)
                .expect("the session's wait");
            state.waiters -= 1;
            let record = state.sessions.get_mut(&session).expect("live session");
            record.waiting.remove(name.as_str());
            if let Some(answer) = record.answers.get_mut(&waiter.seq) {
                *answer = Ok(Response::WaitCancelled);
            }
            events.push(Event::WaitCancelled {
                name: name.clone(),
                session,
            });
            state.settle_lock(&name, events)?;
            Ok(Response::WaitCancelled)
        })
    }

    /// Releases every grant of a lock (events in grant order), then hands it on. An
    /// unknown name must be valid and releases nothing.
    fn force_release(&mut self, name: String, events: &mut Vec<Event>) -> Result<Response, Error> {
        if !self.locks.contains_key(name.as_str()) {
            validate_name(self.limits.max_name_bytes, &name)?;
            return Ok(Response::ForceReleased { count: 0 });
        }
        self.transact(events, |state, events| {
            let lock = state.locks.get_mut(name.as_str()).expect("checked above");
            let holders = std::mem::take(&mut lock.holders);
            let released = count(holders.len());
            for (token, holder) in holders.into_entries() {
                let record = state
                    .sessions
                    .get_mut(&holder.session)
                    .expect("holders are live sessions");
                record.held.remove(name.as_str());
                state.held_grants -= 1;
                events.push(Event::Released {
                    name: name.clone(),
                    session: holder.session,
                    token,
                    reason: ReleaseReason::Forced,
                });
            }
            state.settle_lock(&name, events)?;
            Ok(Response::ForceReleased { count: released })
        })
    }

    // ----- shared machinery -----------------------------------------------------------

    /// Grants the queue head of lock `name` while the holders admit it (consecutive
    /// shared waiters together; stop at the first head that must wait), then forgets the
    /// lock if it is idle. A waiter's remembered `Queued` answer becomes `Granted`.
    ///
    /// # Errors
    ///
    /// [`Error::TokenOverflow`], possibly after changing things: call inside
    /// [`State::transact`] only.
    fn settle_lock(&mut self, name: &str, events: &mut Vec<Event>) -> Result<(), Error> {
        let State {
            locks,
            sessions,
            last_token,
            total_grants,
            held_grants,
            waiters,
            ..
        } = self;
        let Some(lock) = locks.get_mut(name) else {
            return Ok(());
        };
        while let Some(head) = lock.waiters.front() {
            if !lock.admits(head.mode) {
                break;
            }
            let token = next_token(*last_token)?;
            *last_token = token.0;
            *total_grants += 1;
            *held_grants += 1;
            *waiters -= 1;
            let waiter = lock.waiters.pop_front().expect("head exists");
            let record = sessions
                .get_mut(&waiter.session)
                .expect("invariant 7: only live sessions wait");
            // The session's entry for its wait holds the lock's shared name.
            let key = record
                .waiting
                .take(name)
                .expect("invariant: waits match the locks");
            record.held.insert(key, token);
            if let Some(answer) = record.answers.get_mut(&waiter.seq) {
                *answer = Ok(Response::Granted {
                    session: waiter.session,
                    token,
                });
            }
            events.push(Event::Acquired {
                name: name.to_owned(),
                session: waiter.session,
                token,
                mode: waiter.mode,
                value: waiter.value.to_vec(),
            });
            lock.holders.insert(
                token,
                Holder {
                    session: waiter.session,
                    mode: waiter.mode,
                    value: waiter.value,
                },
            );
        }
        if lock.is_idle() {
            locks.remove(name);
        }
        Ok(())
    }

    /// Runs `act`, which may mint tokens for queued waiters, so that running out of
    /// tokens refuses the whole command.
    ///
    /// `act` must refuse for any other reason before changing anything. One command
    /// mints at most one token per waiter queued when it starts, plus one; while that
    /// many tokens are left, `act` runs in place and cannot run out. Otherwise (only in
    /// the last few tokens of `u64`) it runs on a copy of the state that replaces this
    /// one only if `act` succeeds.
    fn transact<F>(&mut self, events: &mut Vec<Event>, act: F) -> Result<Response, Error>
    where
        F: FnOnce(&mut State, &mut Vec<Event>) -> Result<Response, Error>,
    {
        let most_tokens_minted = self.waiters.saturating_add(1);
        if self.last_token.checked_add(most_tokens_minted).is_some() {
            let result = act(self, events);
            assert!(
                result != Err(Error::TokenOverflow),
                "ran out of tokens with headroom"
            );
            return result;
        }
        let mut scratch = self.clone();
        let mut scratch_events = Vec::new();
        let response = act(&mut scratch, &mut scratch_events)?;
        *self = scratch;
        events.append(&mut scratch_events);
        Ok(response)
    }
}

#[cfg(test)]
mod tests;
