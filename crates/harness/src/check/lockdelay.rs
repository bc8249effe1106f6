//! Lock-delay (the lock-delay workload, whose lock names carry the delay:
//! [`lock_delay_of`]): nobody is granted a lock inside a delay window, which runs from
//! the expiry or revocation of a holder's grant to the end of its delay, and every such
//! loss of a grant that asked for a delay starts one.
//!
//! Read in the cluster's order: the watch observer's events, as it received them (its
//! stream is the log's order; (revision, event) never goes back). For each lock:
//!
//! - an `expired` or `revoked` grant of a lock whose grants ask for a delay must be
//!   followed, in the same revision, by `lock_delay_started` for that grant's token;
//! - `lock_delay_started` must follow such a loss (a clean release or a closed session
//!   starts no delay), and name that grant's session when it names one;
//! - between `lock_delay_started` and the `lock_delay_ended` that ends it, no `acquired`
//!   of the lock.
//!
//! A `resync` (the observer fell behind, or the node installed a snapshot) loses events:
//! what was in force is forgotten, and the checker starts afresh from the next events.
//! The delay's length is the leader's to time (`EndLockDelay`), restarted in full by a
//! new leader; a delay that ended sooner than asked would show as a grant earlier than
//! the leader's wall clock allows, which the watch does not carry: the order is checked
//! here, the length by the core's model checks.

use super::{Evidence, Verdict};
use crate::history::{Event, Op};
use crate::workload::lock_delay_of;
use std::collections::BTreeMap;

/// The checker's name.
pub const NAME: &str = "lockdelay";

/// A delay in force on a lock, as the observer saw it start.
struct InForce {
    /// The lost grant's token (the delay's id).
    token: u64,
    /// The revision it started at.
    revision: u64,
}

/// What the checker knows of one lock.
#[derive(Default)]
struct LockView {
    /// The delay in force.
    delay: Option<InForce>,
    /// A grant lost by expiry or revocation, whose delay must start next: its token,
    /// revision and session.
    lost: Option<(u64, u64, Option<u64>)>,
}

/// Check the history's lock-delays.
pub fn check(evidence: &Evidence) -> Verdict {
    let mut verdict = Verdict::new(NAME);
    let observed: Vec<&Event> = evidence
        .history
        .iter()
        .filter(|e| e.op == Some(Op::Watch) && e.process == "observer")
        .collect();
    let mut locks: BTreeMap<&str, LockView> = BTreeMap::new();
    let mut delays = 0usize;
    let mut grants = 0usize;
    let mut resyncs = 0usize;
    for event in observed {
        let what = event.outcome.as_deref().unwrap_or("");
        if what == "resync" {
            resyncs += 1;
            locks.clear();
            continue;
        }
        let Some(lock) = event.lock.as_deref() else {
            continue;
        };
        let Some(delay_ms) = lock_delay_of(lock) else {
            continue;
        };
        let revision = event.revision.unwrap_or(0);
        let token = event.token.unwrap_or(0);
        let view = locks.entry(lock).or_default();
        if what != "lock_delay_started"
            && let Some((lost, at, _)) = view.lost.take()
        {
            verdict.violation(format!(
                "{lock}: the grant of token {lost} was lost by expiry or revocation at revision \
                 {at}, but no lock-delay ({delay_ms} ms) started; next came `{what}` at \
                 revision {revision}"
            ));
        }
        match what {
            "expired" | "revoked" => view.lost = Some((token, revision, event.session)),
            "lock_delay_started" => {
                delays += 1;
                verdict.checked += 1;
                match view.lost.take() {
                    Some((lost, _, session)) if lost == token => {
                        if event.session.is_some() && event.session != session {
                            verdict.violation(format!(
                                "{lock}: the lock-delay at revision {revision} names session \
                                 {:?}, but the grant of token {token} was session {:?}'s",
                                event.session, session
                            ));
                        }
                    }
                    _ => verdict.violation(format!(
                        "{lock}: a lock-delay started at revision {revision} for token {token} \
                         without an expiry or revocation of that grant just before"
                    )),
                }
                view.delay = Some(InForce { token, revision });
            }
            "lock_delay_ended" => view.delay = None,
            "acquired" => {
                grants += 1;
                verdict.checked += 1;
                if let Some(delay) = &view.delay {
                    verdict.violation(format!(
                        "{lock}: token {token} granted to session {} at revision {revision}, \
                         inside the lock-delay that the loss of token {} started at revision {}",
                        event.session.unwrap_or(0),
                        delay.token,
                        delay.revision
                    ));
                }
            }
            _ => {}
        }
    }
    for (lock, view) in &locks {
        if let Some((lost, at, _)) = view.lost {
            verdict.note(format!(
                "{lock}: the observer's events end with the loss of token {lost} at revision \
                 {at}; whether its delay started is not known"
            ));
        }
    }
    if delays > 0 || grants > 0 {
        verdict.note(format!(
            "{delays} lock-delays and {grants} grants of lock-delayed locks checked in the \
             cluster's order ({resyncs} resyncs)"
        ));
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testkit::H;

    const LOCK: &str = "harness/delay500-pause1";

    /// A delay event naming session 1 (the holder of the tests' first grant).
    fn delay(h: &mut H, t: u64, what: &str, token: u64, revision: u64) {
        h.watch(t, what, LOCK, 1, token, revision);
    }

    fn evidence(h: H) -> Evidence {
        Evidence {
            history: h.done(),
            ..Evidence::default()
        }
    }

    /// An expiry, its delay, the delay's end, then the waiting rival's grant: passes.
    #[test]
    fn a_grant_after_the_delay_passes() {
        let mut h = H::default();
        h.watch(10, "acquired", LOCK, 1, 5, 100);
        h.watch(3_000, "expired", LOCK, 1, 5, 140);
        delay(&mut h, 3_001, "lock_delay_started", 5, 140);
        delay(&mut h, 3_600, "lock_delay_ended", 0, 150);
        h.watch(3_601, "acquired", LOCK, 2, 6, 150);
        let verdict = check(&evidence(h));
        assert!(verdict.valid, "{verdict:?}");
        assert_eq!(verdict.checked, 3);
    }

    /// A grant between the delay's start and end: refuted.
    #[test]
    fn a_grant_inside_the_delay_fails() {
        let mut h = H::default();
        h.watch(10, "acquired", LOCK, 1, 5, 100);
        h.watch(3_000, "expired", LOCK, 1, 5, 140);
        delay(&mut h, 3_001, "lock_delay_started", 5, 140);
        h.watch(3_002, "acquired", LOCK, 2, 6, 140);
        delay(&mut h, 3_600, "lock_delay_ended", 0, 150);
        let verdict = check(&evidence(h));
        assert!(!verdict.valid);
        assert!(
            verdict.first().unwrap().contains("inside the lock-delay"),
            "{verdict:?}"
        );
    }

    /// An expiry of a grant that asked for a delay, and no delay: refuted. A delay after
    /// a clean release: refuted.
    #[test]
    fn a_missing_or_unprompted_delay_fails() {
        let mut h = H::default();
        h.watch(10, "acquired", LOCK, 1, 5, 100);
        h.watch(3_000, "expired", LOCK, 1, 5, 140);
        h.watch(3_001, "acquired", LOCK, 2, 6, 140);
        let verdict = check(&evidence(h));
        assert!(!verdict.valid);
        assert!(verdict.first().unwrap().contains("no lock-delay"));

        let mut h = H::default();
        h.watch(10, "acquired", LOCK, 1, 5, 100);
        h.watch(20, "released", LOCK, 1, 5, 101);
        delay(&mut h, 21, "lock_delay_started", 5, 101);
        let verdict = check(&evidence(h));
        assert!(!verdict.valid);
        assert!(verdict.first().unwrap().contains("without an expiry"));

        // A delay that names another session than the expired grant's: refuted.
        let mut h = H::default();
        h.watch(3_000, "expired", LOCK, 2, 5, 140);
        delay(&mut h, 3_001, "lock_delay_started", 5, 140);
        let verdict = check(&evidence(h));
        assert!(!verdict.valid);
        assert!(
            verdict.first().unwrap().contains("names session"),
            "{verdict:?}"
        );
    }

    /// A resync forgets the delay in force (its end may be among the lost events), and
    /// locks without a delay in their name are not this checker's.
    #[test]
    fn a_resync_forgets_and_plain_locks_are_skipped() {
        let mut h = H::default();
        h.watch(3_000, "expired", LOCK, 1, 5, 140);
        delay(&mut h, 3_001, "lock_delay_started", 5, 140);
        h.watch(3_100, "resync", "", 0, 0, 160);
        h.watch(3_200, "acquired", LOCK, 2, 6, 161);
        h.watch(3_300, "expired", "harness/l0", 3, 7, 162);
        h.watch(3_301, "acquired", "harness/l0", 4, 8, 162);
        let verdict = check(&evidence(h));
        assert!(verdict.valid, "{verdict:?}");
    }

    #[test]
    fn the_delay_is_read_from_the_name() {
        use crate::workload::with_lock_delay;
        assert_eq!(
            with_lock_delay("harness/l0", Some(500)),
            "harness/delay500-l0"
        );
        assert_eq!(with_lock_delay("harness/l0", None), "harness/l0");
        assert_eq!(lock_delay_of("harness/delay500-l0"), Some(500));
        assert_eq!(lock_delay_of("harness/delay0-l0"), None);
        assert_eq!(lock_delay_of("harness/l0"), None);
    }
}
