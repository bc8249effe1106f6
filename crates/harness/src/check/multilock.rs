//! Atomic multi-locks, all or nothing: the names of one multi-lock request are granted
//! together or not at all. Per request (the `multi` group of its acquires): the client's
//! answers agree (every name granted, or none), and the observer saw the grants of its
//! tokens in one revision (one log entry).

use super::{Evidence, Verdict};
use crate::history::{Kind, Op, operations};
use std::collections::{BTreeMap, BTreeSet};

/// The checker's name.
pub const NAME: &str = "multilock";

/// One name of a request: its lock, the token granted (if it was), the answer's kind.
type Name<'a> = (&'a str, Option<u64>, Kind);

/// Check every multi-lock request of the history.
pub fn check(evidence: &Evidence) -> Verdict {
    let mut verdict = Verdict::new(NAME);
    // The revision at which the observer saw each (lock, token) granted.
    let mut seen: BTreeMap<(&str, u64), u64> = BTreeMap::new();
    for event in &evidence.history {
        if event.op == Some(Op::Watch)
            && event.outcome.as_deref() == Some("acquired")
            && let (Some(lock), Some(token), Some(revision)) =
                (event.lock.as_deref(), event.token, event.revision)
        {
            seen.insert((lock, token), revision);
        }
    }
    // Per request (process, group): every name's lock, granted token and answer kind.
    let ops = operations(&evidence.history);
    let mut groups: BTreeMap<(&str, u64), Vec<Name<'_>>> = BTreeMap::new();
    for op in &ops {
        let (Op::Acquire, Some(group)) = (op.op(), op.invoke.multi) else {
            continue;
        };
        let granted = (op.kind() == Kind::Ok && op.outcome() == Some("granted"))
            .then(|| op.token())
            .flatten();
        groups
            .entry((op.invoke.process.as_str(), group))
            .or_default()
            .push((op.lock().unwrap_or(""), granted, op.kind()));
    }
    for ((process, group), names) in &groups {
        verdict.checked += 1;
        let answered: Vec<_> = names.iter().filter(|n| n.2 == Kind::Ok).collect();
        let granted: Vec<_> = answered.iter().filter(|n| n.1.is_some()).collect();
        if !granted.is_empty() && granted.len() != answered.len() {
            verdict.violation(format!(
                "{process}'s multi-lock {group}: {} of its {} answered names granted",
                granted.len(),
                answered.len()
            ));
        }
        let revisions: BTreeSet<u64> = granted
            .iter()
            .filter_map(|n| seen.get(&(n.0, n.1.unwrap_or(0))).copied())
            .collect();
        if revisions.len() > 1 {
            let tokens: Vec<String> = granted
                .iter()
                .map(|n| format!("{} token {}", n.0, n.1.unwrap_or(0)))
                .collect();
            verdict.violation(format!(
                "{process}'s multi-lock {group} ({}) was granted over revisions {revisions:?}, not in one entry",
                tokens.join(", ")
            ));
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testkit::H;

    fn multi(h: &mut H, t: u64, group: u64, grants: &[(&str, u64)]) {
        for &(lock, token) in grants {
            h.op(
                t,
                t + 2,
                "c0",
                Op::Acquire,
                Kind::Ok,
                |mut e| {
                    e.multi = Some(group);
                    e.lock(lock).session(1)
                },
                |mut e| {
                    e.multi = Some(group);
                    e.lock(lock).session(1).token(token).outcome("granted")
                },
            );
        }
    }

    #[test]
    fn grants_in_one_entry_pass() {
        let mut h = H::default();
        multi(&mut h, 1, 100, &[("a", 3), ("b", 4)]);
        h.watch(2, "acquired", "a", 1, 3, 7);
        h.watch(2, "acquired", "b", 1, 4, 7);
        let verdict = check(&Evidence {
            history: h.done(),
            ..Evidence::default()
        });
        assert!(verdict.valid, "{verdict:?}");
        assert_eq!(verdict.checked, 1);
    }

    #[test]
    fn grants_over_two_entries_fail() {
        let mut h = H::default();
        multi(&mut h, 1, 100, &[("a", 3), ("b", 4)]);
        h.watch(2, "acquired", "a", 1, 3, 7);
        h.watch(2, "acquired", "b", 1, 4, 8);
        let verdict = check(&Evidence {
            history: h.done(),
            ..Evidence::default()
        });
        assert!(!verdict.valid, "{verdict:?}");
        assert!(verdict.first().unwrap().contains("not in one entry"));
    }
}
