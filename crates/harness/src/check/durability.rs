//! Nothing acknowledged is lost after faults and restarts.
//!
//! - Every holder the cluster describes at the end is explained by the history: a grant
//!   of that lock to that session with that token that was acknowledged (or whose outcome
//!   is unknown), and not released with an acknowledgement since (no phantom grant, no
//!   lost release).
//! - Every acknowledged grant whose session is still alive at the end (the client never
//!   saw it lost) and that was not released since is still held, with its token (no lost
//!   acquire).
//! - No session was dropped while the client's lease was still valid: the client saw its
//!   session lost with "session not found" before its own lease deadline (counted from
//!   the send of the last answered keepalive) had passed. That is docs/design.md invariant 6
//!   seen from outside: the cluster forgot an acknowledged session.
//!
//! Evidence: the history, the final `describe` of every lock the run used, and the
//! clients' `session_lost` events.

use super::{Evidence, Verdict};
use crate::history::{Kind, Op, Operation, operations};
use std::collections::{BTreeMap, HashMap};

/// The checker's name.
pub const NAME: &str = "durability";

/// The `value` of a `session_lost` event when the client's lease had not yet run out.
pub const BEFORE_DEADLINE: &str = "before the client's lease deadline";

/// Check the final state against the acknowledged history.
pub fn check(evidence: &Evidence) -> Verdict {
    let mut verdict = Verdict::new(NAME);
    let ops = operations(&evidence.history);

    // Sessions the client saw lost (first time), and sessions the client ended.
    let mut lost_at: HashMap<u64, u64> = HashMap::new();
    for op in &ops {
        let session = op.session();
        match op.op() {
            Op::SessionLost => {
                let Some(session) = session else { continue };
                lost_at.entry(session).or_insert(op.start_ns());
                verdict.checked += 1;
                if op.outcome() == Some("session_not_found")
                    && op.invoke.value.as_deref() == Some(BEFORE_DEADLINE)
                {
                    verdict.violation(format!(
                        "session {session} ({}) was reported gone by the cluster at {:.3}s while the client's lease was still valid",
                        op.invoke.process,
                        op.start_ns() as f64 / 1e9
                    ));
                }
            }
            Op::CloseSession | Op::Acquire | Op::Release => {
                // A session the client closed, or that the cluster refused, is not
                // expected to hold anything.
                let refused = matches!(op.outcome(), Some("session_not_found" | "session_lost"));
                if let Some(session) = session
                    && (op.op() == Op::CloseSession || refused)
                {
                    lost_at.entry(session).or_insert(op.start_ns());
                }
            }
            _ => {}
        }
    }

    if !evidence.final_locks_read {
        verdict.note("the final state could not be read; only sessions were checked".into());
        return verdict;
    }
    let describe_at = evidence
        .history
        .iter()
        .filter(|e| e.process == "final")
        .map(|e| e.time_ns)
        .min()
        .unwrap_or(u64::MAX);

    // Per (lock, session): the session's acquires and releases of the lock, in order.
    let mut per: BTreeMap<(String, u64), Vec<&Operation>> = BTreeMap::new();
    for op in &ops {
        if !matches!(op.op(), Op::Acquire | Op::Release) {
            continue;
        }
        if let (Some(lock), Some(session)) = (op.lock(), op.session()) {
            per.entry((lock.to_string(), session)).or_default().push(op);
        }
    }

    // Every described holder is explained.
    for (lock, state) in &evidence.final_locks {
        for &(session, token) in state.iter().flat_map(|s| s.holders.iter()) {
            verdict.checked += 1;
            let history = per.get(&(lock.clone(), session));
            let granted = history.is_some_and(|ops| {
                ops.iter().any(|o| {
                    o.op() == Op::Acquire
                        && ((o.kind() == Kind::Ok
                            && o.outcome() == Some("granted")
                            && o.token() == Some(token))
                            || o.kind() == Kind::Info)
                })
            });
            let released = history.is_some_and(|ops| {
                ops.iter().any(|o| {
                    o.op() == Op::Release && o.kind() == Kind::Ok && o.invoke.token == Some(token)
                })
            });
            if !granted {
                verdict.violation(format!(
                    "lock {lock:?} is held by session {session} with token {token}, but no such grant was acknowledged or attempted: a phantom grant"
                ));
            } else if released {
                verdict.violation(format!(
                    "lock {lock:?} is held by session {session} with token {token}, but that grant's release was acknowledged: a lost release"
                ));
            }
        }
    }

    // Every acknowledged, unreleased grant of a live session is still held.
    for ((lock, session), history) in &per {
        let Some(last_grant) = history.iter().rposition(|o| {
            o.op() == Op::Acquire && o.kind() == Kind::Ok && o.outcome() == Some("granted")
        }) else {
            continue;
        };
        let grant = history[last_grant];
        if history[last_grant + 1..]
            .iter()
            .any(|o| o.op() == Op::Release || o.op() == Op::Acquire)
        {
            continue;
        }
        if grant.end_ns() > describe_at {
            continue;
        }
        if lost_at.get(session).is_some_and(|&t| t <= describe_at) {
            continue;
        }
        verdict.checked += 1;
        let token = grant.token().unwrap_or(0);
        let held = evidence
            .final_locks
            .get(lock)
            .and_then(Option::as_ref)
            .is_some_and(|s| s.holders.contains(&(*session, token)));
        if !held {
            verdict.violation(format!(
                "{} acquired lock {lock:?} (session {session}, token {token}, acknowledged at {:.3}s) and its session is alive, but the cluster no longer has the grant: a lost acquire",
                grant.invoke.process,
                grant.end_ns() as f64 / 1e9
            ));
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::FinalLock;
    use crate::check::testkit::H;
    use crate::history::Event;

    fn final_marker(h: &mut H, t: u64) {
        h.events
            .push(Event::new(Kind::Ok, "final", 999, Op::Describe).at(t * 1_000_000));
    }

    type Holders = Option<Vec<(u64, u64)>>;

    fn evidence(h: H, locks: &[(&str, Holders)]) -> Evidence {
        Evidence {
            history: h.done(),
            final_locks: locks
                .iter()
                .map(|(name, holders)| {
                    (
                        name.to_string(),
                        holders.clone().map(|holders| FinalLock {
                            holders,
                            waiters: vec![],
                        }),
                    )
                })
                .collect(),
            final_locks_read: true,
            ..Evidence::default()
        }
    }

    #[test]
    fn a_kept_grant_and_a_kept_release_pass() {
        let mut h = H::default();
        h.grant(0, 1, "c0", "held", 1, 3);
        h.grant(2, 3, "c1", "free", 2, 4);
        h.release(4, 5, "c1", "free", 2, 4);
        final_marker(&mut h, 10);
        let verdict = check(&evidence(
            h,
            &[("held", Some(vec![(1, 3)])), ("free", None)],
        ));
        assert!(verdict.valid, "{verdict:?}");
        assert_eq!(verdict.checked, 2);
    }

    #[test]
    fn a_lost_acquire_fails() {
        let mut h = H::default();
        h.grant(0, 1, "c0", "held", 1, 3);
        final_marker(&mut h, 10);
        let verdict = check(&evidence(h, &[("held", None)]));
        assert!(!verdict.valid);
        assert!(verdict.first().unwrap().contains("lost acquire"));
    }

    #[test]
    fn a_lost_release_and_a_phantom_grant_fail() {
        let mut h = H::default();
        h.grant(0, 1, "c0", "l", 1, 3);
        h.release(2, 3, "c0", "l", 1, 3);
        final_marker(&mut h, 10);
        let verdict = check(&evidence(
            h,
            &[("l", Some(vec![(1, 3)])), ("m", Some(vec![(7, 9)]))],
        ));
        assert!(!verdict.valid);
        let all = verdict.examples.join("\n");
        assert!(
            all.contains("lost release") && all.contains("phantom grant"),
            "{all}"
        );
    }

    #[test]
    fn an_expired_session_may_lose_its_grant_but_not_early() {
        let mut h = H::default();
        h.grant(0, 1, "c0", "l", 1, 3);
        h.events.push(
            Event::new(Kind::Ok, "c0", 50, Op::SessionLost)
                .session(1)
                .outcome("lease_expired")
                .at(5_000_000),
        );
        final_marker(&mut h, 10);
        let verdict = check(&evidence(h, &[("l", None)]));
        assert!(verdict.valid, "{verdict:?}");

        let mut h = H::default();
        let mut lost = Event::new(Kind::Ok, "c0", 50, Op::SessionLost)
            .session(1)
            .outcome("session_not_found")
            .at(5_000_000);
        lost.value = Some(BEFORE_DEADLINE.to_string());
        h.events.push(lost);
        let verdict = check(&evidence(h, &[]));
        assert!(!verdict.valid);
    }
}
