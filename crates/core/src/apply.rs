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

use crate::state::{Dedup, Name, SessionRecord, State, Waiter, count};
use crate::types::{
    ClientId, Command, EndReason, Error, Event, FencingToken, LimitKind, ReleaseReason, RequestId,
    Response, SessionId,
};
use crate::validate::{validate_name, validate_ttl, widen};
use acquire::LockRequest;

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
                let lock_request = LockRequest::single(name, mode, wait, value);
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
                let lock_request = LockRequest::single(name, mode, wait, value);
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
            Command::AcquireLocks {
                session,
                request,
                locks,
                wait,
                value,
            } => {
                let lock_request = LockRequest::locks(locks, wait, value);
                self.acquire(session, request, lock_request, events)
            }
            Command::AcquireLocksWithLease {
                client_id,
                ttl_ms,
                locks,
                wait,
                value,
            } => {
                let lock_request = LockRequest::locks(locks, wait, value);
                self.acquire_with_lease(client_id, ttl_ms, lock_request, events)
            }
            Command::WallClock { unix_ms } => {
                self.clock_ms = self.clock_ms.max(unix_ms);
                Ok(Response::ClockSet {
                    unix_ms: self.clock_ms,
                })
            }
            Command::EndLockDelay { name, token } => self.end_lock_delay(name, token, events),
            Command::SetValue {
                session,
                request,
                name,
                token,
                value,
            } => self.set_value(session, request, name, token, value, events),
            Command::SetPrimitiveLimits(limits) => {
                limits.validate()?;
                self.primitive_limits = limits;
                Ok(Response::PrimitiveLimitsSet)
            }
            Command::SetClusterVersion { version } => self.set_cluster_version(version),
        };
        assert!(
            result.is_ok() || events.len() == events_before,
            "a refused command emitted events"
        );
        #[cfg(feature = "model-mutants")]
        let checked = !crate::mutants::any();
        #[cfg(not(feature = "model-mutants"))]
        let checked = true;
        #[cfg(debug_assertions)]
        if checked && let Err(violation) = self.check_invariants() {
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
            self.grant_index.remove(token);
            self.held_grants -= 1;
            events.push(Event::Released {
                name: name.to_string(),
                session,
                token,
                reason: release_reason,
            });
            if reason != EndReason::Closed && holder.lock_delay_ms > 0 {
                self.start_lock_delay(name, token, holder.lock_delay_ms, events);
            }
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
        let current = self.check_held_token(session, &name, token)?;
        let record = self.sessions.get_mut(&session).expect("live session");
        let lock = self
            .locks
            .get_mut(name.as_str())
            .expect("a held lock is known");
        let held = lock.holders.get_mut(current).expect("the session's grant");
        #[cfg(feature = "model-mutants")]
        let reentrant = held.hold_count > 1
            && !crate::mutants::active(crate::mutants::Mutant::ReleaseIgnoresHoldCount);
        #[cfg(not(feature = "model-mutants"))]
        let reentrant = held.hold_count > 1;
        if reentrant {
            held.hold_count -= 1;
            let hold_count = held.hold_count;
            events.push(Event::HoldCountChanged {
                name,
                session,
                token,
                hold_count,
            });
            return Ok(Response::StillHeld { hold_count });
        }
        let holder = lock.holders.remove(current).expect("the session's grant");
        record.held.remove(name.as_str());
        assert_eq!(holder.session, session);
        self.grant_index.remove(current);
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
            let waiter = state.withdraw_wait(session, &name, events);
            // A multi-lock waits in the queue of each of its names: it leaves them all.
            let group: Vec<Name> = waiter.group.iter().flatten().cloned().collect();
            for other in &group {
                if **other != *name {
                    state.withdraw_wait(session, other, events);
                }
            }
            let record = state.sessions.get_mut(&session).expect("live session");
            if let Some(answer) = record.answers.get_mut(&waiter.seq) {
                *answer = Ok(Response::WaitCancelled);
            }
            state.settle_lock(&name, events)?;
            for other in &group {
                state.settle_lock(other, events)?;
            }
            Ok(Response::WaitCancelled)
        })
    }

    /// Takes `session`'s wait out of lock `name`'s queue and the session's waits.
    fn withdraw_wait(&mut self, session: SessionId, name: &str, events: &mut Vec<Event>) -> Waiter {
        let lock = self
            .locks
            .get_mut(name)
            .expect("a waited-for lock is known");
        let waiter = lock
            .waiters
            .remove_session(session)
            .expect("the session's wait");
        self.waiters -= 1;
        let record = self.sessions.get_mut(&session).expect("live session");
        record.waiting.remove(name);
        events.push(Event::WaitCancelled {
            name: name.to_owned(),
            session,
        });
        waiter
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
                state.grant_index.remove(token);
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

mod acquire;
mod settle;

#[cfg(test)]
mod tests;
