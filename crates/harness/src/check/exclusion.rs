//! Mutual exclusion in the cluster's view: no two exclusive grants of one lock overlap,
//! and no more than N grants of a semaphore of N permits (the semaphore workload, whose
//! lock names carry N: [`permits_of`]) are in force at once.
//! A grant's interval runs from its `acquired` event to the `released`, `expired`,
//! `closed` or `forced` event of the same grant, in revision order (the applied log
//! index: the cluster's own order of decisions).
//!
//! Evidence: the observer's watch stream. When it reconnects it may miss events (a
//! `resync` to a later revision) or see some twice (a resync to an earlier one); events are
//! de-duplicated, and a lock whose history crosses a gap is taken as unknown until its
//! next event, so a missed event never makes a false alarm.

use super::{Evidence, Verdict};
use crate::history::Op;
use crate::workload::permits_of;
use std::collections::{BTreeMap, BTreeSet};

/// The checker's name.
pub const NAME: &str = "exclusion";

/// A lock's grants in force, by token: (session, revision granted). `known` is false
/// after a gap in the observer's stream, until an event makes the state certain again;
/// while unknown, the grants tracked are a subset of those in force (only grants seen
/// after the gap, not seen ending), so too many of them is still a violation.
#[derive(Debug, Default)]
struct Grants {
    known: bool,
    in_force: BTreeMap<u64, (u64, u64)>,
}

/// Check the observed grants for overlaps.
pub fn check(evidence: &Evidence) -> Verdict {
    let mut verdict = Verdict::new(NAME);
    // Missed revision ranges (inclusive) and the de-duplicated events.
    let mut gaps: Vec<(u64, u64)> = Vec::new();
    let mut last_revision = 0u64;
    let mut seen = BTreeSet::new();
    let mut events = Vec::new();
    for event in &evidence.history {
        if event.op != Some(Op::Watch) {
            continue;
        }
        let revision = event.revision.unwrap_or(0);
        let what = event.outcome.as_deref().unwrap_or("");
        if what == "resync" {
            if revision > last_revision {
                gaps.push((last_revision + 1, revision));
            }
            last_revision = last_revision.max(revision);
            continue;
        }
        last_revision = last_revision.max(revision);
        let key = (
            revision,
            what.to_string(),
            event.lock.clone().unwrap_or_default(),
            event.session.unwrap_or(0),
            event.token.unwrap_or(0),
        );
        if seen.insert(key.clone()) {
            events.push(key);
        }
    }
    if !gaps.is_empty() {
        verdict.note(format!(
            "the observer resynced {} time(s); locks were unknown across {} missed revision range(s)",
            gaps.len(),
            gaps.iter().filter(|(a, b)| a <= b && *a > 1).count()
        ));
    }
    // Stable: events of one revision keep the order the cluster sent them in.
    events.sort_by_key(|e| e.0);

    let crosses_gap = |from: u64, to: u64| gaps.iter().any(|&(a, b)| a <= to && b > from);
    let mut locks: BTreeMap<String, (Grants, u64)> = BTreeMap::new();
    for (revision, what, lock, session, token) in events {
        verdict.checked += 1;
        // An ordinary lock is exclusive; a semaphore of the semaphore workload has N.
        let limit = permits_of(&lock).map_or(1, |n| n as usize);
        let (grants, last) = locks.entry(lock.clone()).or_default();
        if crosses_gap(*last, revision) {
            *grants = Grants::default();
        }
        *last = revision;
        match what.as_str() {
            "acquired" => {
                if grants.in_force.len() >= limit {
                    let holders: Vec<String> = grants
                        .in_force
                        .iter()
                        .map(|(t, (s, since))| {
                            format!("session {s} (token {t}, since revision {since})")
                        })
                        .collect();
                    verdict.violation(format!(
                        "lock {lock:?}: granted to session {session} (token {token}) at revision {revision} while {} held it (at most {limit} at once): {}",
                        holders.len(),
                        holders.join(", ")
                    ));
                }
                grants.in_force.insert(token, (session, revision));
                // An exclusive grant means nobody else holds the lock.
                grants.known |= limit == 1;
            }
            "released" | "expired" | "closed" | "forced" => {
                if grants.in_force.remove(&token).is_none() && grants.known {
                    verdict.violation(format!(
                        "lock {lock:?}: grant with token {token} {what} at revision {revision}, but no grant with that token was in force"
                    ));
                }
                // The end of an exclusive grant leaves the lock free.
                if limit == 1 {
                    grants.in_force.clear();
                    grants.known = true;
                }
            }
            _ => {}
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testkit::H;

    #[test]
    fn handoffs_in_one_entry_pass() {
        let mut h = H::default();
        h.watch(0, "resync", "", 0, 0, 1);
        h.watch(1, "acquired", "l", 1, 3, 5);
        h.watch(2, "expired", "l", 1, 3, 9);
        h.watch(2, "acquired", "l", 2, 4, 9); // the next waiter, same entry
        h.watch(3, "released", "l", 2, 4, 11);
        h.watch(4, "acquired", "m", 2, 5, 12);
        let verdict = check(&Evidence {
            history: h.done(),
            ..Evidence::default()
        });
        assert!(verdict.valid, "{verdict:?}");
        assert_eq!(verdict.checked, 5);
    }

    #[test]
    fn an_overlapping_grant_fails() {
        let mut h = H::default();
        h.watch(0, "resync", "", 0, 0, 1);
        h.watch(1, "acquired", "l", 1, 3, 5);
        h.watch(2, "acquired", "l", 2, 4, 7);
        let verdict = check(&Evidence {
            history: h.done(),
            ..Evidence::default()
        });
        assert!(!verdict.valid);
        let first = verdict.first().unwrap();
        assert!(
            first.contains("while 1 held it (at most 1 at once)"),
            "{first}"
        );
        assert!(
            first.contains("session 1 (token 3, since revision 5)"),
            "{first}"
        );
    }

    #[test]
    fn a_gap_makes_the_lock_unknown_and_duplicates_are_ignored() {
        let mut h = H::default();
        h.watch(0, "resync", "", 0, 0, 1);
        h.watch(1, "acquired", "l", 1, 3, 5);
        // Reconnected to a node ahead: revisions 6..=8 missed (the release among them).
        h.watch(2, "resync", "", 0, 0, 8);
        h.watch(3, "acquired", "l", 2, 4, 9);
        // Reconnected to a node behind: 9 is seen again.
        h.watch(4, "resync", "", 0, 0, 8);
        h.watch(5, "acquired", "l", 2, 4, 9);
        h.watch(6, "released", "l", 2, 4, 10);
        let verdict = check(&Evidence {
            history: h.done(),
            ..Evidence::default()
        });
        assert!(verdict.valid, "{verdict:?}");
    }

    #[test]
    fn releasing_a_grant_not_in_force_fails() {
        let mut h = H::default();
        h.watch(0, "resync", "", 0, 0, 1);
        h.watch(1, "acquired", "l", 1, 3, 5);
        h.watch(2, "released", "l", 1, 2, 6);
        let verdict = check(&Evidence {
            history: h.done(),
            ..Evidence::default()
        });
        assert!(!verdict.valid);
    }

    /// Three permits: three holders at once pass, handoffs included.
    #[test]
    fn a_semaphore_passes_with_n_holders() {
        let lock = crate::workload::contended_lock(0, Some(3));
        let mut h = H::default();
        h.watch(0, "resync", "", 0, 0, 1);
        h.watch(1, "acquired", &lock, 1, 3, 5);
        h.watch(2, "acquired", &lock, 2, 4, 6);
        h.watch(3, "acquired", &lock, 3, 5, 7);
        h.watch(4, "released", &lock, 2, 4, 8);
        h.watch(4, "acquired", &lock, 4, 6, 8); // the next waiter, same entry
        h.watch(5, "expired", &lock, 1, 3, 9);
        h.watch(6, "released", &lock, 4, 6, 10);
        let verdict = check(&Evidence {
            history: h.done(),
            ..Evidence::default()
        });
        assert!(verdict.valid, "{verdict:?}");
        assert_eq!(verdict.checked, 7);
    }

    /// Three permits, four overlapping holders in the cluster's order: refuted, even
    /// though the observer saw the events out of revision order.
    #[test]
    fn a_semaphore_with_n_plus_one_holders_fails() {
        let lock = crate::workload::contended_lock(0, Some(3));
        let mut h = H::default();
        h.watch(0, "resync", "", 0, 0, 1);
        h.watch(1, "acquired", &lock, 1, 3, 5);
        h.watch(2, "acquired", &lock, 2, 4, 6);
        h.watch(3, "acquired", &lock, 4, 6, 9);
        h.watch(4, "acquired", &lock, 3, 5, 7);
        h.watch(5, "released", &lock, 1, 3, 10);
        let verdict = check(&Evidence {
            history: h.done(),
            ..Evidence::default()
        });
        assert!(!verdict.valid, "{verdict:?}");
        assert_eq!(verdict.violation_count, 1);
        let first = verdict.first().unwrap();
        assert!(
            first.contains(
                "granted to session 4 (token 6) at revision 9 while 3 held it (at most 3 at once)"
            ),
            "{first}"
        );
    }

    /// After a gap, the grants seen since are still too many when they exceed N, and an
    /// end of a grant not seen is no alarm.
    #[test]
    fn a_semaphore_after_a_gap_counts_what_it_saw() {
        let lock = crate::workload::contended_lock(1, Some(2));
        let mut h = H::default();
        h.watch(0, "resync", "", 0, 0, 1);
        h.watch(1, "acquired", &lock, 1, 3, 5);
        h.watch(2, "resync", "", 0, 0, 8);
        h.watch(3, "released", &lock, 1, 3, 9); // granted before the gap: no alarm
        h.watch(4, "acquired", &lock, 2, 4, 10);
        h.watch(5, "acquired", &lock, 3, 5, 11);
        let ok = check(&Evidence {
            history: h.events.clone(),
            ..Evidence::default()
        });
        assert!(ok.valid, "{ok:?}");
        h.watch(6, "acquired", &lock, 4, 6, 12);
        let verdict = check(&Evidence {
            history: h.done(),
            ..Evidence::default()
        });
        assert!(!verdict.valid, "{verdict:?}");
    }

    #[test]
    fn semaphore_names_carry_their_limit() {
        assert_eq!(
            permits_of(&crate::workload::contended_lock(2, Some(3))),
            Some(3)
        );
        assert_eq!(permits_of(&crate::workload::contended_lock(2, None)), None);
        assert_eq!(permits_of("harness/sem0-l1"), None);
        assert_eq!(permits_of("harness/semx-l1"), None);
    }
}
