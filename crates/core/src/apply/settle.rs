//! Handing locks on: granting queue heads when a lock frees up (including a multi-lock
//! waiting at the head of several queues), lock-delays, and the holder's `SetValue`.
//!
//! # The fairness rule of multi-locks
//!
//! A queued `AcquireLocks` of several names takes its place at the tail of every one of
//! its names' FIFO queues in one apply, and is granted, in one apply, when it is at the
//! head of all of them and every one admits it. Single-name waiters and multi-locks are
//! one queue per name: nobody overtakes anybody on any name. Since every request joins
//! all its queues at once, the queues all agree with one order, that of the log: the
//! oldest waiter of all is at the head of each of its queues, so it waits for holders
//! only, and holders do not wait (a multi-lock holds nothing until it holds everything).
//! No cycle of waits can form, and each waiter is granted after finitely many grants
//! before it (as long as holders release or expire).

use std::collections::BTreeSet;

#[cfg(feature = "model-mutants")]
pub(super) use crate::mutants::{Mutant, active as mutant};
use crate::state::Dedup;
use crate::state::{Holder, LockDelay, Name, State};
use crate::types::{Error, Event, FencingToken, Grant, RequestId, Response, SessionId};
use crate::validate::{validate_name, validate_value};

/// The faults of `crate::mutants`, none without the feature.
#[cfg(not(feature = "model-mutants"))]
#[derive(Clone, Copy)]
pub(super) enum Mutant {
    GrantDuringDelay,
    MultiLockTakesWhatIsFree,
    BargePastQueue,
}

/// Whether a fault is on: never, without the feature.
#[cfg(not(feature = "model-mutants"))]
pub(super) fn mutant(_: Mutant) -> bool {
    false
}

impl State {
    /// Grants the queue heads of lock `name` while they can be granted (consecutive
    /// shared waiters together; stop at the first head that must wait), and of every lock
    /// a multi-lock granted on the way shares, then forgets the locks left idle and out
    /// of any lock-delay. A waiter's remembered `Queued` answer becomes `Granted` (or
    /// `GrantedLocks`).
    ///
    /// # Errors
    ///
    /// [`Error::TokenOverflow`], possibly after changing things: call inside
    /// [`State::transact`] only.
    pub(super) fn settle_lock(&mut self, name: &str, events: &mut Vec<Event>) -> Result<(), Error> {
        let Some((key, lock)) = self.locks.get_key_value(name) else {
            return Ok(());
        };
        // The common case, a release with nobody waiting: no work list.
        if lock.waiters.is_empty() {
            if lock.is_idle() && !self.lock_delays.contains_key(name) {
                self.locks.remove(name);
            }
            return Ok(());
        }
        let mut pending = BTreeSet::from([Name::clone(key)]);
        while let Some(name) = pending.pop_first() {
            while let Some(names) = self.grantable_head(&name) {
                self.grant_head(&name, &names, events)?;
                pending.extend(names.into_iter().filter(|other| *other != name));
            }
            let idle = self.locks.get(&name).is_some_and(|lock| lock.is_idle());
            if idle && !self.lock_delays.contains_key(&name) {
                self.locks.remove(&name);
            }
        }
        Ok(())
    }

    /// The names to grant together if the head of lock `name`'s queue can be granted
    /// now: its own name, or every name of its multi-lock. A head can be granted when no
    /// lock-delay holds any of its names, and for each name it is the head of that
    /// queue and the holders admit it.
    pub(crate) fn grantable_head(&self, name: &str) -> Option<Vec<Name>> {
        let (key, lock) = self.locks.get_key_value(name)?;
        let head = lock.waiters.front()?;
        let names: Vec<Name> = match &head.group {
            Some(group) => group.to_vec(),
            None => vec![Name::clone(key)],
        };
        for other in &names {
            if self.lock_delays.contains_key(other) && !mutant(Mutant::GrantDuringDelay) {
                return None;
            }
            let lock = self.locks.get(other)?;
            let front = lock.waiters.front()?;
            if front.session != head.session
                || front.seq != head.seq
                || !lock.admits(front.mode, front.weight)
            {
                return None;
            }
        }
        Some(names)
    }

    /// Grants the head waits of `names` (from [`State::grantable_head`] of `name`): a
    /// token each, in name order, and one answer for the request.
    fn grant_head(
        &mut self,
        name: &str,
        names: &[Name],
        events: &mut Vec<Event>,
    ) -> Result<(), Error> {
        let mut grants = Vec::with_capacity(names.len());
        let mut request = None;
        for other in names {
            let token = self.mint_token()?;
            self.held_grants += 1;
            self.waiters -= 1;
            let lock = self.locks.get_mut(other).expect("a grantable lock");
            let waiter = lock.waiters.pop_front().expect("head exists");
            let record = self
                .sessions
                .get_mut(&waiter.session)
                .expect("invariant 7: only live sessions wait");
            // The session's entry for its wait holds the lock's shared name.
            let key = record
                .waiting
                .take(&**other)
                .expect("invariant: waits match the locks");
            self.grant_index.insert(token, &key);
            record.held.insert(key, token);
            events.push(Event::Acquired {
                name: other.to_string(),
                session: waiter.session,
                token,
                mode: waiter.mode,
                value: waiter.value.to_vec(),
            });
            grants.push(Grant {
                name: other.to_string(),
                token,
                hold_count: 1,
            });
            request = Some((waiter.session, waiter.seq, waiter.group.is_some()));
            lock.holders.insert(
                token,
                Holder {
                    session: waiter.session,
                    mode: waiter.mode,
                    value: waiter.value,
                    granted_at_ms: self.clock_ms,
                    weight: waiter.weight,
                    hold_count: 1,
                    lock_delay_ms: waiter.lock_delay_ms,
                },
            );
        }
        let (session, seq, locks_form) = request.expect("at least one name");
        debug_assert!(names.iter().any(|other| **other == *name));
        let record = self.sessions.get_mut(&session).expect("live session");
        if let Some(answer) = record.answers.get_mut(&seq) {
            *answer = Ok(if locks_form {
                Response::GrantedLocks { session, grants }
            } else {
                Response::Granted {
                    session,
                    token: grants[0].token,
                }
            });
        }
        Ok(())
    }

    /// The grant `token` of lock `name`, whose holder asked for a delay, was lost by
    /// expiry or revocation: nobody is granted the lock until the delay ends. A delay
    /// already in force is replaced (the newest loss restarts it).
    pub(super) fn start_lock_delay(
        &mut self,
        name: &Name,
        token: FencingToken,
        delay_ms: u32,
        events: &mut Vec<Event>,
    ) {
        self.lock_delays.insert(
            Name::clone(name),
            LockDelay {
                token,
                delay_ms,
                started_at_ms: self.clock_ms,
                last_token_at_start: self.last_token,
            },
        );
        events.push(Event::LockDelayStarted {
            name: name.to_string(),
            token,
            delay_ms: u64::from(delay_ms),
        });
    }

    /// `EndLockDelay`: ends the delay on `name` if it is the one `token` started, and
    /// hands the lock to its waiters.
    pub(super) fn end_lock_delay(
        &mut self,
        name: String,
        token: FencingToken,
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        if self
            .lock_delays
            .get(name.as_str())
            .is_none_or(|delay| delay.token != token)
        {
            validate_name(self.limits.max_name_bytes, &name)?;
            return Ok(Response::LockDelayEnded { ended: false });
        }
        self.transact(events, |state, events| {
            state.lock_delays.remove(name.as_str());
            events.push(Event::LockDelayEnded {
                name: name.clone(),
                token,
            });
            state.settle_lock(&name, events)?;
            Ok(Response::LockDelayEnded { ended: true })
        })
    }

    /// `SetValue`: the holder of grant `token` replaces its value.
    pub(super) fn set_value(
        &mut self,
        session: SessionId,
        request: RequestId,
        name: String,
        token: FencingToken,
        value: Vec<u8>,
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
        let result = self.set_value_fresh(session, name, token, value, events);
        self.remember(session, request.seq, &result);
        result
    }

    fn set_value_fresh(
        &mut self,
        session: SessionId,
        name: String,
        token: FencingToken,
        value: Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<Response, Error> {
        let current = self.check_held_token(session, &name, token)?;
        validate_value(self.limits.max_value_bytes, &value)?;
        let lock = self
            .locks
            .get_mut(name.as_str())
            .expect("a held lock is known");
        let holder = lock.holders.get_mut(current).expect("the session's grant");
        holder.value = value.as_slice().into();
        events.push(Event::ValueChanged {
            name,
            session,
            token,
            value,
        });
        Ok(Response::ValueSet)
    }

    /// The token of `session`'s grant of `name`, if it is `token`: [`Error::NotHeld`]
    /// (for a valid name) or [`Error::StaleToken`] otherwise.
    pub(super) fn check_held_token(
        &self,
        session: SessionId,
        name: &str,
        token: FencingToken,
    ) -> Result<FencingToken, Error> {
        let record = &self.sessions[&session];
        let Some(&current) = record.held.get(name) else {
            validate_name(self.limits.max_name_bytes, name)?;
            return Err(Error::NotHeld(name.to_owned()));
        };
        if current != token {
            return Err(Error::StaleToken {
                name: name.to_owned(),
                given: token,
                current,
            });
        }
        Ok(current)
    }
}
