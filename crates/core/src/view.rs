//! Read access for the server: owned snapshots ("views") of one session or lock, bounded
//! listings, linearizable-read helpers (`is_current_grant`) and O(1) statistics. Nothing
//! here changes the state.

use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::state::{LockRecord, Name, State, count};
use crate::types::{
    ClientId, Error, FencingToken, Limits, LockDelayView, LockMode, LockSpec, PrimitiveLimits,
    Response, SessionId,
};

/// A live session, as [`State::session`] shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// The session's id.
    pub session: SessionId,
    /// The id its client chose.
    pub client_id: ClientId,
    /// Its lease's time to live.
    pub ttl_ms: u64,
    /// The locks it holds with each grant's token, in lock-name order.
    pub held: Vec<(String, FencingToken)>,
    /// The locks it waits for, in lock-name order.
    pub waiting: Vec<String>,
}

/// One grant in force, as [`LockView`] shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderView {
    /// The holding session.
    pub session: SessionId,
    /// The grant's fencing token.
    pub token: FencingToken,
    /// Exclusive or shared.
    pub mode: LockMode,
    /// The opaque holder value.
    pub value: Vec<u8>,
    /// The holding session's client id.
    pub client_id: ClientId,
    /// [`State::clock_ms`] when granted: the leader's wall clock in ms since the epoch
    /// (0: granted before any wall clock was replicated).
    pub granted_at_ms: u64,
    /// Permits this grant takes (1 but for semaphores).
    pub weight: u32,
    /// How many times the session holds it (1 but for reentrant acquires).
    pub hold_count: u32,
    /// The lock-delay that losing this grant by expiry or revocation starts (0: none).
    pub lock_delay_ms: u64,
}

/// One queued wait, as [`LockView`] shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaiterView {
    /// The waiting session.
    pub session: SessionId,
    /// The mode it asked for.
    pub mode: LockMode,
    /// [`State::clock_ms`] when it queued (0: before any wall clock was replicated).
    pub queued_at_ms: u64,
    /// Permits it asks for (1 but for semaphores).
    pub weight: u32,
    /// For a wait of an `AcquireLocks`, every name it asked for (in name order; this
    /// lock among them), granted all at once; empty for an `Acquire`.
    pub names: Vec<String>,
}

/// A known lock (held or waited for), as [`State::lock`] shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockView {
    /// The lock's name.
    pub name: String,
    /// Grants in force, in grant (token) order. Never empty: a queue only forms behind
    /// a holder.
    pub holders: Vec<HolderView>,
    /// Waits, in queue order (the next to be granted first).
    pub waiters: Vec<WaiterView>,
    /// `Some(n)`: a counting semaphore of `n` permits.
    pub permits: Option<u32>,
    /// Permits out (the holders' weights summed; for a plain lock, its holders).
    pub permits_used: u64,
    /// The lock-delay in force, if any: nobody is granted the lock until it ends.
    pub delay: Option<LockDelayView>,
}

impl LockView {
    /// Permits free on a semaphore (`None` for a plain lock).
    pub fn permits_free(&self) -> Option<u64> {
        self.permits
            .map(|permits| u64::from(permits).saturating_sub(self.permits_used))
    }
}

/// A lock with its queue length, for the status page's busiest locks
/// ([`State::busiest_locks`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockSummary {
    /// The lock's name.
    pub name: String,
    /// Grants in force: (holding session, token), in token order.
    pub holders: Vec<(SessionId, FencingToken)>,
    /// How many sessions wait for it.
    pub waiters: u64,
    /// The earliest `granted_at_ms` of its grants in force (`None`: no holder).
    pub held_since_ms: Option<u64>,
}

/// Counts of the state, each read in O(1), for metrics and the status page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Live sessions.
    pub sessions: u64,
    /// Known locks (held or waited for).
    pub locks: u64,
    /// Grants in force.
    pub held_grants: u64,
    /// Queued waits.
    pub waiters: u64,
    /// The last fencing token minted (0: none yet); see [`State::last_token`].
    pub last_token: u64,
    /// Grants ever made by this state.
    pub total_grants: u64,
    /// Sessions ever ended by expiry.
    pub total_expired_sessions: u64,
}

impl State {
    /// The limits in force for new admissions.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The last fencing token minted; `FencingToken(0)` before the first grant. The next
    /// grant gets a larger one.
    pub fn last_token(&self) -> FencingToken {
        FencingToken(self.last_token)
    }

    /// A live session, or `None` if it never existed or has ended.
    pub fn session(&self, session: SessionId) -> Option<SessionView> {
        let record = self.sessions.get(&session)?;
        Some(SessionView {
            session,
            client_id: record.client_id,
            ttl_ms: record.ttl_ms,
            held: record
                .held
                .iter()
                .map(|(name, &token)| (name.to_string(), token))
                .collect(),
            waiting: record.waiting.iter().map(|name| name.to_string()).collect(),
        })
    }

    /// A live session's TTL, without building its whole view (which lists every lock
    /// it holds: the request path must not pay for that on every call).
    pub fn session_ttl_ms(&self, session: SessionId) -> Option<u64> {
        self.sessions.get(&session).map(|record| record.ttl_ms)
    }

    /// How many locks a live session holds and how many it waits for.
    pub fn session_lock_counts(&self, session: SessionId) -> Option<(usize, usize)> {
        self.sessions
            .get(&session)
            .map(|record| (record.held.len(), record.waiting.len()))
    }

    /// The token of `session`'s grant of `name`, if the session lives and holds it.
    pub fn held_token(&self, session: SessionId, name: &str) -> Option<FencingToken> {
        self.sessions.get(&session)?.held.get(name).copied()
    }

    /// The live session opened by `client_id`, if any.
    pub fn session_for_client(&self, client_id: ClientId) -> Option<SessionId> {
        self.sessions_by_client.get(&client_id).copied()
    }

    /// Every live session with its TTL, in id order (for the leader's lease clock).
    pub fn sessions(&self) -> impl Iterator<Item = (SessionId, u64)> + '_ {
        self.sessions
            .iter()
            .map(|(&session, record)| (session, record.ttl_ms))
    }

    /// Whether an acquire of `name` in `mode` would queue if it were applied now: the
    /// lock is in a lock-delay, has waiters, or holders that do not admit `mode`. A hint for scheduling the
    /// write, never a decision (entries applied before it may change the answer).
    pub fn would_queue(&self, name: &str, mode: LockMode) -> bool {
        self.lock_delays.contains_key(name)
            || self
                .locks
                .get(name)
                .is_some_and(|lock| !(lock.waiters.is_empty() && lock.admits(mode, 1)))
    }

    /// Whether an `AcquireLocks` of `locks` would queue if it were applied now: a name
    /// has waiters, a lock-delay, or holders that do not admit its spec. A hint for
    /// scheduling the write, never a decision.
    pub fn would_queue_locks(&self, locks: &[LockSpec]) -> bool {
        locks.iter().any(|spec| {
            self.lock_delays.contains_key(spec.name.as_str())
                || self.locks.get(spec.name.as_str()).is_some_and(|lock| {
                    !(lock.waiters.is_empty() && lock.admits(spec.mode, spec.weight))
                })
        })
    }

    /// The largest wall clock replicated so far ([`crate::Command::WallClock`]), in ms
    /// since the epoch; 0 before the first.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// The limits of the newer primitives in force.
    pub fn primitive_limits(&self) -> &PrimitiveLimits {
        &self.primitive_limits
    }

    /// The lock-delay in force on `name`, if any.
    pub fn lock_delay(&self, name: &str) -> Option<LockDelayView> {
        self.lock_delays.get(name).map(delay_view)
    }

    /// Every lock-delay in force, in name order: what a new leader restarts (in full)
    /// and ends with [`crate::Command::EndLockDelay`].
    pub fn lock_delays(&self) -> impl Iterator<Item = (&str, LockDelayView)> + '_ {
        self.lock_delays
            .iter()
            .map(|(name, delay)| (&**name, delay_view(delay)))
    }

    /// The remembered answer of a live session's request `seq` (kept current for a
    /// queued acquire: `Queued`, then the grant or the cancellation), if not forgotten.
    pub fn request_answer(&self, session: SessionId, seq: u64) -> Option<Result<Response, Error>> {
        self.sessions.get(&session)?.answers.get(&seq).cloned()
    }

    /// For the status page: the `limit` held locks held longest (earliest
    /// `granted_at_ms` of a grant in force first, then by the token of that grant;
    /// grants from before any wall clock was known count as the oldest), over every
    /// lock. Read from the grant index: the work is bounded by `limit` times the most
    /// grants one lock can have, whatever the number of locks.
    pub fn longest_held_locks(&self, limit: usize) -> Vec<LockSummary> {
        let mut names: Vec<&str> = Vec::with_capacity(limit.min(64));
        for grant in self.grants_by_age() {
            if names.len() >= limit {
                break;
            }
            // A lock with several grants appears once, at its oldest.
            if !names.contains(&grant.name) {
                names.push(grant.name);
            }
        }
        names
            .into_iter()
            .map(|name| summary(name, &self.locks[name]))
            .collect()
    }

    /// A known lock, or `None` if no one holds or waits for it.
    pub fn lock(&self, name: &str) -> Option<LockView> {
        let lock = self.locks.get(name)?;
        Some(self.lock_view(name, lock))
    }

    /// Up to `limit` known locks whose names start with `prefix`, in name order,
    /// starting after `start_after` if given (for paging), and whether more follow.
    ///
    /// Bounded work: one ordered-map seek, then at most `limit + 1` steps.
    pub fn locks_with_prefix(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> (Vec<LockView>, bool) {
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut matching = self
            .locks
            .range::<str, _>((lower, Bound::Unbounded))
            .take_while(|(name, _)| name.starts_with(prefix));
        let views = matching
            .by_ref()
            .take(limit)
            .map(|(name, lock)| self.lock_view(name, lock))
            .collect();
        let more = matching.next().is_some();
        (views, more)
    }

    /// Up to `limit` live sessions in id order, starting after `start_after` if given
    /// (for paging), and whether more follow.
    ///
    /// Bounded work: one ordered-map seek, then at most `limit + 1` steps.
    pub fn sessions_after(
        &self,
        start_after: Option<SessionId>,
        limit: usize,
    ) -> (Vec<SessionView>, bool) {
        let lower = start_after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut range = self.sessions.range((lower, Bound::Unbounded));
        let views = range
            .by_ref()
            .take(limit)
            .filter_map(|(&session, _)| self.session(session))
            .collect();
        let more = range.next().is_some();
        (views, more)
    }

    /// For the status page: the `limit` locks with the longest wait queues (longest
    /// first, then by name; locks without waiters are left out), looking at no more than
    /// the first `scan` locks in name order, so the work is bounded by `scan` whatever
    /// the number of locks.
    pub fn busiest_locks(&self, limit: usize, scan: usize) -> Vec<LockSummary> {
        let mut top: Vec<(&Name, &LockRecord)> = Vec::with_capacity(limit + 1);
        for (name, lock) in self.locks.iter().take(scan) {
            if lock.waiters.is_empty() || limit == 0 {
                continue;
            }
            let longer = |other: &(&Name, &LockRecord)| other.1.waiters.len() >= lock.waiters.len();
            let position = top
                .iter()
                .position(|other| !longer(other))
                .unwrap_or(top.len());
            if position < limit {
                top.insert(position, (name, lock));
                top.truncate(limit);
            }
        }
        top.into_iter()
            .map(|(name, lock)| summary(name, lock))
            .collect()
    }

    /// For the status page: the first `limit` held locks in name order.
    pub fn held_locks_sample(&self, limit: usize) -> Vec<LockSummary> {
        self.locks
            .iter()
            .filter(|(_, lock)| !lock.holders.is_empty())
            .take(limit)
            .map(|(name, lock)| summary(name, lock))
            .collect()
    }

    /// Whether `token` is a grant in force on lock `name`: what `Verify` answers.
    ///
    /// Advisory: a holder that verifies and then pauses may be stale by the time it
    /// acts; only the protected resource's own token check is safe.
    pub fn is_current_grant(&self, name: &str, token: FencingToken) -> bool {
        self.locks
            .get(name)
            .is_some_and(|lock| lock.holders.contains(token))
    }

    /// Counts of the state, in O(1).
    pub fn stats(&self) -> Stats {
        Stats {
            sessions: count(self.sessions.len()),
            locks: count(self.locks.len()),
            held_grants: self.held_grants,
            waiters: self.waiters,
            last_token: self.last_token,
            total_grants: self.total_grants,
            total_expired_sessions: self.total_expired_sessions,
        }
    }

    fn lock_view(&self, name: &str, lock: &LockRecord) -> LockView {
        LockView {
            name: name.to_owned(),
            holders: lock
                .holders
                .iter()
                .map(|(token, holder)| HolderView {
                    session: holder.session,
                    token,
                    mode: holder.mode,
                    value: holder.value.to_vec(),
                    client_id: self.sessions[&holder.session].client_id,
                    granted_at_ms: holder.granted_at_ms,
                    weight: holder.weight,
                    hold_count: holder.hold_count,
                    lock_delay_ms: u64::from(holder.lock_delay_ms),
                })
                .collect(),
            waiters: lock
                .waiters
                .iter()
                .map(|waiter| WaiterView {
                    session: waiter.session,
                    mode: waiter.mode,
                    queued_at_ms: waiter.queued_at_ms,
                    weight: waiter.weight,
                    names: waiter
                        .group
                        .iter()
                        .flat_map(|names| names.iter().map(|name| name.to_string()))
                        .collect(),
                })
                .collect(),
            permits: lock.permits,
            permits_used: lock.permits_used(),
            delay: self.lock_delay(name),
        }
    }
}

fn summary(name: &str, lock: &LockRecord) -> LockSummary {
    LockSummary {
        name: name.to_owned(),
        holders: lock
            .holders
            .iter()
            .map(|(token, holder)| (holder.session, token))
            .collect(),
        waiters: count(lock.waiters.len()),
        held_since_ms: held_since(lock),
    }
}

/// The earliest grant time of a lock's holders.
fn held_since(lock: &LockRecord) -> Option<u64> {
    lock.holders
        .iter()
        .map(|(_, holder)| holder.granted_at_ms)
        .min()
}

fn delay_view(delay: &crate::state::LockDelay) -> LockDelayView {
    LockDelayView {
        token: delay.token,
        delay_ms: u64::from(delay.delay_ms),
        started_at_ms: delay.started_at_ms,
    }
}
