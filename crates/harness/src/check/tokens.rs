//! Fencing tokens: per lock, granted tokens strictly increase in real-time order, and no
//! token is ever granted twice (the counter is one for the whole cluster), across leader
//! changes and restarts.
//!
//! Evidence: every acknowledged grant of the history (if grant A was acknowledged before
//! grant B of the same lock was asked for, A's token is below B's), and the observer's
//! `acquired` watch events (per lock, tokens increase with the revision).

use super::{Evidence, Verdict};
use crate::history::{Kind, Op, Operation, operations};
use std::collections::{BTreeMap, HashMap};

/// The checker's name.
pub const NAME: &str = "tokens";

/// Check the tokens of every grant.
pub fn check(evidence: &Evidence) -> Verdict {
    let mut verdict = Verdict::new(NAME);
    let grants: Vec<Operation> = operations(&evidence.history)
        .into_iter()
        .filter(|o| {
            o.op() == Op::Acquire
                && o.kind() == Kind::Ok
                && o.outcome() == Some("granted")
                && o.token().is_some()
        })
        .collect();

    // Unique across the cluster.
    let mut seen: HashMap<u64, &Operation> = HashMap::new();
    for grant in &grants {
        verdict.checked += 1;
        let token = grant.token().unwrap_or(0);
        if let Some(other) = seen.insert(token, grant) {
            verdict.violation(format!(
                "token {token} granted twice: to {} (session {:?}, lock {:?}) and to {} (session {:?}, lock {:?})",
                other.invoke.process,
                other.session(),
                other.lock(),
                grant.invoke.process,
                grant.session(),
                grant.lock()
            ));
        }
    }

    // Real-time order per lock: sort by completion; any later-invoked grant must carry a
    // larger token than every grant completed before its invocation.
    let mut per_lock: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for grant in &grants {
        per_lock
            .entry(grant.lock().unwrap_or(""))
            .or_default()
            .push(grant);
    }
    for (lock, grants) in &per_lock {
        let mut by_end: Vec<&Operation> = grants.clone();
        by_end.sort_by_key(|g| g.end_ns());
        let mut by_start: Vec<&Operation> = grants.clone();
        by_start.sort_by_key(|g| g.start_ns());
        // Sweep: the maximum token among grants completed before each invocation.
        let mut index = 0;
        let mut max_before: Option<&Operation> = None;
        for grant in by_start {
            while index < by_end.len() && by_end[index].end_ns() < grant.start_ns() {
                let done = by_end[index];
                if max_before.is_none_or(|m| done.token() > m.token()) {
                    max_before = Some(done);
                }
                index += 1;
            }
            if let Some(before) = max_before
                && grant.token() <= before.token()
            {
                verdict.violation(format!(
                    "lock {lock:?}: {} was granted token {:?} at {:.3}s although {} had been granted the larger or equal token {:?} (acknowledged at {:.3}s, before the request)",
                    grant.invoke.process,
                    grant.token(),
                    seconds(grant.end_ns()),
                    before.invoke.process,
                    before.token(),
                    seconds(before.end_ns())
                ));
            }
        }
    }

    // The cluster's own order: acquired events per lock, by revision.
    let mut watched: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for event in &evidence.history {
        if event.op == Some(Op::Watch) && event.outcome.as_deref() == Some("acquired") {
            watched
                .entry(event.lock.as_deref().unwrap_or(""))
                .or_default()
                .push((event.revision.unwrap_or(0), event.token.unwrap_or(0)));
        }
    }
    for (lock, mut events) in watched {
        events.sort();
        events.dedup();
        for pair in events.windows(2) {
            verdict.checked += 1;
            let ((rev_a, token_a), (rev_b, token_b)) = (pair[0], pair[1]);
            if token_b <= token_a {
                verdict.violation(format!(
                    "lock {lock:?}: grant at revision {rev_b} has token {token_b}, not above token {token_a} granted at revision {rev_a}"
                ));
            }
        }
    }
    verdict
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testkit::H;

    #[test]
    fn increasing_tokens_pass() {
        let mut h = H::default();
        h.grant(0, 2, "c0", "l", 1, 3);
        h.release(3, 4, "c0", "l", 1, 3);
        h.grant(1, 6, "c1", "l", 2, 5); // concurrent with the first: any order
        h.grant(7, 8, "c2", "m", 3, 6);
        h.watch(2, "acquired", "l", 1, 3, 10);
        h.watch(5, "acquired", "l", 2, 5, 12);
        let verdict = check(&Evidence {
            history: h.done(),
            ..Evidence::default()
        });
        assert!(verdict.valid, "{verdict:?}");
        assert_eq!(verdict.checked, 4);
    }

    #[test]
    fn a_smaller_token_after_a_grant_fails() {
        let mut h = H::default();
        h.grant(0, 2, "c0", "l", 1, 9);
        h.grant(3, 4, "c1", "l", 2, 5);
        let verdict = check(&Evidence {
            history: h.done(),
            ..Evidence::default()
        });
        assert!(!verdict.valid);
        assert!(verdict.first().unwrap().contains("larger or equal token"));
    }

    #[test]
    fn a_repeated_token_fails() {
        let mut h = H::default();
        h.grant(0, 2, "c0", "l", 1, 4);
        h.grant(0, 2, "c1", "m", 2, 4);
        let verdict = check(&Evidence {
            history: h.done(),
            ..Evidence::default()
        });
        assert!(!verdict.valid);
        assert!(verdict.first().unwrap().contains("granted twice"));
    }

    #[test]
    fn watch_order_must_increase() {
        let mut h = H::default();
        h.watch(1, "acquired", "l", 1, 8, 10);
        h.watch(2, "acquired", "l", 2, 7, 11);
        let verdict = check(&Evidence {
            history: h.done(),
            ..Evidence::default()
        });
        assert!(!verdict.valid, "{verdict:?}");
    }
}
