//! The leader's lease clock. Only the leader decides that a session expired (docs/design.md,
//! "Time and leases"): it keeps a deadline per session on its monotonic clock, renews it
//! on keepalives that it answered after confirming its leadership, and when a deadline
//! passes it proposes `ExpireSessions` through the log. Followers keep the table too (it
//! is fed by the apply path on every node), but never act on it; a node that becomes
//! leader restarts every deadline at a full TTL from that moment, so a lease can only be
//! lengthened by a change of leader, never shortened.

use fencelock_core::{SessionId, State};
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Lease {
    deadline: Instant,
    ttl: Duration,
    /// An `ExpireSessions` naming it has been proposed; keepalives are refused.
    expiring: bool,
}

#[derive(Debug, Default)]
struct LeaseTable {
    leading: bool,
    leases: HashMap<SessionId, Lease>,
    by_deadline: BTreeSet<(Instant, SessionId)>,
}

impl LeaseTable {
    fn insert(&mut self, session: SessionId, ttl: Duration, now: Instant) {
        if let Some(old) = self.leases.remove(&session) {
            self.by_deadline.remove(&(old.deadline, session));
        }
        let deadline = now + ttl;
        self.leases.insert(
            session,
            Lease {
                deadline,
                ttl,
                expiring: false,
            },
        );
        self.by_deadline.insert((deadline, session));
    }

    fn rebuild(&mut self, state: &State, now: Instant) {
        self.leases.clear();
        self.by_deadline.clear();
        for (session, ttl_ms) in state.sessions() {
            self.insert(session, Duration::from_millis(ttl_ms), now);
        }
    }
}

/// What a keepalive did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed: the lease runs `ttl` from the keepalive's arrival.
    Renewed {
        /// The session's TTL.
        ttl: Duration,
    },
    /// The session is unknown, ended, or being expired.
    NotFound,
    /// This node does not lead.
    NotLeader,
}

/// Session deadlines on this node's monotonic clock.
#[derive(Debug, Default)]
pub struct LeaseClock {
    table: Mutex<LeaseTable>,
}

impl LeaseClock {
    fn table(&self) -> std::sync::MutexGuard<'_, LeaseTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The apply path opened a session: its lease runs a full TTL from now.
    pub fn session_opened(&self, session: SessionId, ttl_ms: u64) {
        self.table()
            .insert(session, Duration::from_millis(ttl_ms), Instant::now());
    }

    /// The apply path ended a session.
    pub fn session_ended(&self, session: SessionId) {
        let mut table = self.table();
        if let Some(lease) = table.leases.remove(&session) {
            table.by_deadline.remove(&(lease.deadline, session));
        }
    }

    /// The state was replaced (snapshot): every session gets a full TTL from now.
    pub fn reset(&self, state: &State) {
        self.table().rebuild(state, Instant::now());
    }

    /// This node became leader: every session gets a full TTL from now, and expiry starts.
    pub fn become_leader(&self, state: &State) {
        let mut table = self.table();
        table.rebuild(state, Instant::now());
        table.leading = true;
    }

    /// This node stopped leading: stop expiring and forget pending expiries.
    pub fn step_down(&self) {
        let mut table = self.table();
        table.leading = false;
        for lease in table.leases.values_mut() {
            lease.expiring = false;
        }
    }

    /// Whether this clock expires sessions (the node leads).
    pub fn is_leading(&self) -> bool {
        self.table().leading
    }

    /// Renew `session` for a keepalive that reached this node at `arrived`. Call only
    /// after this node confirmed, with a quorum round that started after `arrived`, that
    /// it still leads.
    pub fn renew(&self, session: SessionId, arrived: Instant) -> Renewal {
        let mut table = self.table();
        if !table.leading {
            return Renewal::NotLeader;
        }
        let Some(lease) = table.leases.get_mut(&session) else {
            return Renewal::NotFound;
        };
        if lease.expiring {
            return Renewal::NotFound;
        }
        let ttl = lease.ttl;
        let old = lease.deadline;
        let new = arrived + ttl;
        if new > old {
            lease.deadline = new;
            table.by_deadline.remove(&(old, session));
            table.by_deadline.insert((new, session));
        }
        Renewal::Renewed { ttl }
    }

    /// Sessions whose deadline passed by `now`, at most `max`, marked as expiring (their
    /// keepalives are refused from now on). Empty when this node does not lead.
    pub fn take_expired(&self, now: Instant, max: usize) -> Vec<SessionId> {
        let mut table = self.table();
        if !table.leading {
            return Vec::new();
        }
        let due: Vec<(Instant, SessionId)> = table
            .by_deadline
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .take(max)
            .copied()
            .collect();
        let mut expired = Vec::with_capacity(due.len());
        for (deadline, session) in due {
            table.by_deadline.remove(&(deadline, session));
            if let Some(lease) = table.leases.get_mut(&session) {
                lease.expiring = true;
                expired.push(session);
            }
        }
        expired
    }

    /// Proposing the expiry of `sessions` did not return a result (it timed out, or the
    /// state machine refused the batch): the entry may still commit, so the sessions stay
    /// marked as expiring — their keepalives keep being refused — and the next tick
    /// proposes their expiry again. The apply path removes those that did expire.
    /// (Un-marking them here would let a keepalive be acknowledged for a session whose
    /// expiry then commits: found by the lease model in `crates/model`.)
    pub fn expiry_unresolved(&self, sessions: &[SessionId]) {
        let mut table = self.table();
        let now = Instant::now();
        for session in sessions {
            if let Some(lease) = table.leases.get_mut(session)
                && lease.expiring
            {
                lease.deadline = now;
                table.by_deadline.insert((now, *session));
            }
        }
    }

    /// How many sessions the table tracks.
    pub fn len(&self) -> usize {
        self.table().leases.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_only_when_leading_and_never_shortens() {
        let clock = LeaseClock::default();
        clock.session_opened(SessionId(1), 1_000);
        assert_eq!(
            clock.renew(SessionId(1), Instant::now()),
            Renewal::NotLeader
        );
        clock.become_leader(&State::default());
        // The state had no sessions: the rebuild dropped the apply-path entry.
        assert_eq!(clock.renew(SessionId(1), Instant::now()), Renewal::NotFound);
        clock.session_opened(SessionId(1), 1_000);
        let early = Instant::now() - Duration::from_secs(10);
        assert_eq!(
            clock.renew(SessionId(1), early),
            Renewal::Renewed {
                ttl: Duration::from_secs(1)
            }
        );
        // The stale arrival did not pull the deadline back: nothing is due yet.
        assert!(clock.take_expired(Instant::now(), 10).is_empty());
    }

    #[test]
    fn expiry_marks_sessions_and_refuses_their_keepalives() {
        let clock = LeaseClock::default();
        clock.become_leader(&State::default());
        clock.session_opened(SessionId(7), 1_000);
        let later = Instant::now() + Duration::from_secs(2);
        assert_eq!(clock.take_expired(later, 10), vec![SessionId(7)]);
        assert_eq!(clock.renew(SessionId(7), later), Renewal::NotFound);
        assert!(clock.take_expired(later, 10).is_empty());
        clock.expiry_unresolved(&[SessionId(7)]);
        // Still refused: the unresolved expiry may yet commit.
        assert_eq!(clock.renew(SessionId(7), later), Renewal::NotFound);
        assert_eq!(clock.take_expired(later, 10), vec![SessionId(7)]);
        clock.session_ended(SessionId(7));
        assert!(clock.is_empty());
    }

    #[test]
    fn step_down_stops_expiry() {
        let clock = LeaseClock::default();
        clock.become_leader(&State::default());
        clock.session_opened(SessionId(3), 1_000);
        clock.step_down();
        let later = Instant::now() + Duration::from_secs(5);
        assert!(clock.take_expired(later, 10).is_empty());
    }

    #[test]
    fn expiry_batches_are_bounded() {
        let clock = LeaseClock::default();
        clock.become_leader(&State::default());
        for id in 1..=10 {
            clock.session_opened(SessionId(id), 1_000);
        }
        let later = Instant::now() + Duration::from_secs(2);
        assert_eq!(clock.take_expired(later, 4).len(), 4);
        assert_eq!(clock.take_expired(later, 4).len(), 4);
        assert_eq!(clock.take_expired(later, 4).len(), 2);
    }
}
