//! Mutual exclusion in the cluster's view: no two exclusive grants of one lock overlap.
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
use std::collections::{BTreeMap, BTreeSet};

/// The checker's name.
pub const NAME: &str = "exclusion";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holder {
    Unknown,
    Free,
    Held {
        session: u64,
        token: u64,
        revision: u64,
    },
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
    let mut locks: BTreeMap<String, (Holder, u64)> = BTreeMap::new();
    for (revision, what, lock, session, token) in events {
        verdict.checked += 1;
        let (holder, last) = locks.entry(lock.clone()).or_insert((Holder::Unknown, 0));
        if crosses_gap(*last, revision) {
            *holder = Holder::Unknown;
        }
        *last = revision;
        match what.as_str() {
            "acquired" => {
                if let Holder::Held {
                    session: other,
                    token: other_token,
                    revision: since,
                } = *holder
                {
                    verdict.violation(format!(
                        "lock {lock:?}: granted to session {session} (token {token}) at revision {revision} while session {other} held it (token {other_token}, since revision {since})"
                    ));
                }
                *holder = Holder::Held {
                    session,
                    token,
                    revision,
                };
            }
            "released" | "expired" | "closed" | "forced" => {
                match *holder {
                    Holder::Held {
                        token: held, ..
                    } if held != token => verdict.violation(format!(
                        "lock {lock:?}: grant with token {token} {what} at revision {revision}, but the grant in force had token {held}"
                    )),
                    Holder::Free => verdict.violation(format!(
                        "lock {lock:?}: grant with token {token} {what} at revision {revision}, but the lock was free"
                    )),
                    _ => {}
                }
                *holder = Holder::Free;
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
        assert!(verdict.first().unwrap().contains("while session 1 held it"));
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
}
