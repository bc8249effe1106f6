//! [`State::check_invariants`]: the properties every reachable state has, written down
//! as code (docs/design.md, "Invariants"). `apply` runs it after every command in debug
//! builds, and every test runs it after every step.
//!
//! It recomputes everything from the locks (the source of truth) and compares with the
//! indexes and counters kept for speed, so it costs time linear in the state's size.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::state::{LockRecord, Name, State, count};
use crate::types::{FencingToken, LockMode, Response, SessionId};
use crate::validate::{validate_name, validate_value};

/// Returns early with a formatted violation when `condition` is false.
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+));
        }
    };
}

impl State {
    /// Checks the state's invariants and returns the first violation found, described.
    ///
    /// Checked: at most one exclusive holder per lock and never exclusive with shared
    /// (invariant 1); every grant's token is at most the last token minted, and tokens
    /// in force are unique (2); holders and waiters are live sessions (3, 7); the head
    /// of every wait queue cannot be granted given the holders, no session waits twice
    /// or both holds and waits (4); no lock has neither holders nor waiters; each
    /// session's held and waited-for locks match the locks exactly, and share each lock's
    /// name (one allocation) with the lock; a lock's holders and queue are in their
    /// compact canonical form (inline single holder, no buffer for an empty queue); the
    /// client-id index
    /// matches the sessions; counters match what they count; sizes are within the
    /// widest limits ever in force (a lowered limit refuses new admissions only); a
    /// queued wait's remembered answer is `Queued`; the grant index by grant time
    /// holds exactly the grants in force.
    ///
    /// # Errors
    ///
    /// A description of the first violation. A violation is a bug in this crate (or a
    /// corrupted snapshot), never a consequence of bad input.
    pub fn check_invariants(&self) -> Result<(), String> {
        let envelope = &self.limits_envelope;
        ensure!(
            self.limits.validate().is_ok(),
            "limits in force are invalid"
        );
        ensure!(self.next_session_id >= 1, "session ids start at 1");
        ensure!(
            self.cluster_version >= crate::version::INITIAL_CLUSTER_VERSION,
            "cluster version {} is below the first one",
            self.cluster_version
        );
        self.check_auth_invariants()?;
        self.check_grant_index()?;
        ensure!(
            count(self.sessions.len()) <= envelope.max_sessions,
            "{} sessions exceed every limit in force",
            self.sessions.len()
        );
        ensure!(
            count(self.locks.len()) <= envelope.max_locks,
            "{} locks exceed every limit in force",
            self.locks.len()
        );

        // Sessions and the client-id index.
        ensure!(
            self.sessions_by_client.len() == self.sessions.len(),
            "client index has {} entries for {} sessions",
            self.sessions_by_client.len(),
            self.sessions.len()
        );
        for (&session, record) in &self.sessions {
            ensure!(
                session.0 >= 1 && session.0 < self.next_session_id,
                "session {session} was never assigned"
            );
            ensure!(
                self.sessions_by_client.get(&record.client_id) == Some(&session),
                "client index does not map {:?} to session {session}",
                record.client_id
            );
            ensure!(
                (envelope.min_ttl_ms..=envelope.max_ttl_ms).contains(&record.ttl_ms),
                "session {session} has TTL {} ms outside every limit in force",
                record.ttl_ms
            );
            ensure!(
                record.lock_count() <= envelope.max_locks_per_session,
                "session {session} holds or waits for too many locks"
            );
            ensure!(
                record.forgotten_below >= 1,
                "session {session} forgot below 0"
            );
            ensure!(
                count(record.answers.len()) <= envelope.max_pending_requests_per_session,
                "session {session} remembers too many answers"
            );
            ensure!(
                record
                    .answers
                    .keys()
                    .next()
                    .is_none_or(|&seq| seq >= record.forgotten_below),
                "session {session} remembers an answer it forgot"
            );
        }

        // Locks, recomputing what each session holds and waits for.
        let mut tokens_in_force = BTreeSet::new();
        let mut held: BTreeMap<SessionId, BTreeMap<&Name, FencingToken>> = BTreeMap::new();
        let mut waiting: BTreeMap<SessionId, BTreeSet<&Name>> = BTreeMap::new();
        let mut held_grants = 0;
        let mut waiters = 0;
        for (name, lock) in &self.locks {
            ensure!(
                validate_name(envelope.max_name_bytes, name).is_ok(),
                "lock {name:?} has an invalid name"
            );
            ensure!(
                !lock.is_idle() || self.lock_delays.contains_key(name),
                "idle lock {name:?} is not forgotten"
            );
            self.check_primitives(name, lock)?;
            ensure!(
                lock.holders.is_canonical() && lock.waiters.is_canonical(),
                "lock {name:?} keeps a holder map for one holder or a buffer for no waiters"
            );
            let exclusive = lock
                .holders
                .iter()
                .filter(|(_, holder)| holder.mode == LockMode::Exclusive)
                .count();
            ensure!(
                exclusive == 0 || lock.holders.len() == 1,
                "lock {name:?} has an exclusive holder and {} holders (invariant 1)",
                lock.holders.len()
            );
            for (token, holder) in lock.holders.iter() {
                ensure!(
                    token.0 >= 1 && token.0 <= self.last_token,
                    "lock {name:?} has token {token}, last minted is {} (invariant 2)",
                    self.last_token
                );
                ensure!(
                    tokens_in_force.insert(token),
                    "token {token} is in force twice (invariant 2)"
                );
                ensure!(
                    self.sessions.contains_key(&holder.session),
                    "lock {name:?} is held by ended session {} (invariant 3)",
                    holder.session
                );
                ensure!(
                    validate_value(envelope.max_value_bytes, &holder.value).is_ok(),
                    "lock {name:?} has an oversized holder value"
                );
                ensure!(
                    held.entry(holder.session)
                        .or_default()
                        .insert(name, token)
                        .is_none(),
                    "session {} holds lock {name:?} twice",
                    holder.session
                );
                held_grants += 1;
            }
            ensure!(
                count(lock.waiters.len()) <= envelope.max_waiters_per_lock,
                "lock {name:?} has too many waiters"
            );
            ensure!(
                self.grantable_head(name).is_none(),
                "the head of lock {name:?}'s queue could be granted (invariant 4)"
            );
            for waiter in lock.waiters.iter() {
                let session = waiter.session;
                let Some(record) = self.sessions.get(&session) else {
                    return Err(format!(
                        "lock {name:?} is waited for by ended session {session} (invariants 3, 7)"
                    ));
                };
                ensure!(
                    !record.held.contains_key(name),
                    "session {session} both holds and waits for lock {name:?}"
                );
                ensure!(
                    waiting.entry(session).or_default().insert(name),
                    "session {session} waits for lock {name:?} twice"
                );
                ensure!(
                    validate_value(envelope.max_value_bytes, &waiter.value).is_ok(),
                    "lock {name:?} has an oversized waiter value"
                );
                if let Some(answer) = record.answers.get(&waiter.seq) {
                    ensure!(
                        *answer == Ok(Response::Queued { session }),
                        "session {session}'s queued request {} remembers {answer:?}",
                        waiter.seq
                    );
                }
                waiters += 1;
            }
        }
        for (&session, record) in &self.sessions {
            let expected_held = held.remove(&session).unwrap_or_default();
            ensure!(
                record
                    .held
                    .iter()
                    .eq(expected_held.iter().map(|(&name, token)| (name, token))),
                "session {session}'s held locks do not match the locks"
            );
            let expected_waiting = waiting.remove(&session).unwrap_or_default();
            ensure!(
                record.waiting.iter().eq(expected_waiting.iter().copied()),
                "session {session}'s waits do not match the locks"
            );
            // Same texts in the same order (checked above); now the same allocations.
            let names = record.held.keys().chain(&record.waiting);
            let keys = expected_held.keys().chain(&expected_waiting);
            for (name, key) in names.zip(keys) {
                ensure!(
                    Arc::ptr_eq(name, key),
                    "session {session} keeps its own copy of lock name {name:?}"
                );
            }
        }
        ensure!(
            held.is_empty() && waiting.is_empty(),
            "a lock refers to an unknown session"
        );

        for name in self.lock_delays.keys() {
            ensure!(
                self.locks.contains_key(name),
                "lock {name:?} is in a lock-delay but not known"
            );
        }

        // Counters.
        ensure!(
            self.held_grants == held_grants,
            "held_grants is {}, counted {held_grants}",
            self.held_grants
        );
        ensure!(
            self.waiters == waiters,
            "waiters is {}, counted {waiters}",
            self.waiters
        );
        ensure!(
            self.held_grants <= self.total_grants && self.total_grants <= self.last_token,
            "grant counters are inconsistent: {} held, {} ever, last token {}",
            self.held_grants,
            self.total_grants,
            self.last_token
        );
        Ok(())
    }

    /// The invariants of the newer primitives on one lock: never more permits out than
    /// the semaphore's limit, weights within it (1 on a plain lock); hold counts at
    /// least 1, above 1 only on an exclusive plain lock; no grant during a lock-delay;
    /// times no later than the replicated clock; a multi-lock waits in the queue of each
    /// of its names and holds none of them (granted together or not at all).
    fn check_primitives(&self, name: &Name, lock: &LockRecord) -> Result<(), String> {
        let max_weight = lock.permits.unwrap_or(1);
        ensure!(max_weight >= 1, "lock {name:?} is a semaphore of 0 permits");
        if let Some(permits) = lock.permits {
            ensure!(
                lock.permits_used() <= u64::from(permits),
                "lock {name:?} has {} permits out of {permits}",
                lock.permits_used()
            );
        }
        let delay = self.lock_delays.get(name);
        if let Some(delay) = delay {
            ensure!(
                delay.token.0 <= delay.last_token_at_start
                    && delay.last_token_at_start <= self.last_token
                    && delay.started_at_ms <= self.clock_ms,
                "lock {name:?}'s lock-delay is from the future"
            );
        }
        for (token, holder) in lock.holders.iter() {
            ensure!(
                (1..=max_weight).contains(&holder.weight)
                    && (lock.permits.is_none() || holder.mode == LockMode::Shared),
                "lock {name:?} has a grant of weight {} in mode {:?}",
                holder.weight,
                holder.mode
            );
            ensure!(
                holder.hold_count == 1
                    || (holder.hold_count > 1
                        && holder.mode == LockMode::Exclusive
                        && lock.permits.is_none()),
                "lock {name:?} is held {} times by a grant that is not reentrant",
                holder.hold_count
            );
            ensure!(
                holder.granted_at_ms <= self.clock_ms,
                "lock {name:?} was granted after the clock"
            );
            ensure!(
                delay.is_none_or(|delay| token.0 <= delay.last_token_at_start),
                "lock {name:?} was granted during its lock-delay"
            );
        }
        for waiter in lock.waiters.iter() {
            ensure!(
                (1..=max_weight).contains(&waiter.weight)
                    && (lock.permits.is_none() || waiter.mode == LockMode::Shared)
                    && waiter.queued_at_ms <= self.clock_ms,
                "lock {name:?} has a wait of weight {} in mode {:?}, or from the future",
                waiter.weight,
                waiter.mode
            );
            let Some(group) = &waiter.group else {
                continue;
            };
            ensure!(
                !group.is_empty()
                    && group.windows(2).all(|pair| pair[0] < pair[1])
                    && group.contains(name),
                "lock {name:?} has a multi-lock wait with names {group:?}"
            );
            let holds_any = self
                .sessions
                .get(&waiter.session)
                .is_some_and(|record| group.iter().any(|other| record.held.contains_key(other)));
            ensure!(
                !holds_any,
                "session {} holds part of the multi-lock it waits for",
                waiter.session
            );
            for other in group.iter() {
                let in_queue = self.locks.get(other).is_some_and(|lock| {
                    lock.waiters.iter().any(|mate| {
                        mate.session == waiter.session
                            && mate.seq == waiter.seq
                            && mate.group == waiter.group
                    })
                });
                ensure!(
                    in_queue,
                    "session {}'s multi-lock waits for {name:?} but not for {other:?}",
                    waiter.session
                );
            }
        }
        Ok(())
    }
}
