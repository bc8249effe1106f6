//! Leases, seen from the holder's side (docs/design.md invariant 6): a client never acts on a
//! lease that the cluster has already given away.
//!
//! A careful holder checks its lease before each fenced write, and the workload records
//! with every such write until when the client library counted the lease valid
//! (`lease_until_ns`). The library counts from the send of the last answered keepalive,
//! the cluster from its arrival, so the cluster may end the lease (and grant the lock to
//! the next waiter) only after the client's own deadline. If another grant of the same
//! lock (a higher token) was already seen — answered to its holder, or reported by the
//! observer's watch — before a write that the writer still counted as covered by its
//! lease, that order was broken: the cluster expired the lease early, or the client
//! counted it from the wrong moment. With a fenced resource the write is refused anyway;
//! without one, it would have landed over the new holder's.
//!
//! Both times come from the same machine's monotonic clock, and a grant is only counted
//! once someone saw it, after it happened: the check can miss a violation, never invent
//! one. Unknown outcomes are left out for the same reason.

use super::{Evidence, Verdict};
use crate::history::{Kind, Op, operations};
use std::collections::BTreeMap;

/// The checker's name.
pub const NAME: &str = "lease";

/// One grant of a lock as first seen: when, with which token, and by whom.
struct SeenGrant {
    seen_ns: u64,
    token: u64,
    by: String,
}

/// Check every lease-checked write against the grants seen before it.
pub fn check(evidence: &Evidence) -> Verdict {
    let mut verdict = Verdict::new(NAME);
    let ops = operations(&evidence.history);

    let mut grants: BTreeMap<&str, Vec<SeenGrant>> = BTreeMap::new();
    for op in &ops {
        let (Some(lock), Some(token)) = (op.lock(), op.token()) else {
            continue;
        };
        let by = match op.op() {
            Op::Acquire if op.kind() == Kind::Ok && op.outcome() == Some("granted") => {
                format!("{} (session {:?})", op.invoke.process, op.session())
            }
            Op::Watch if op.outcome() == Some("acquired") => {
                format!("the observer's watch (session {:?})", op.session())
            }
            _ => continue,
        };
        grants.entry(lock).or_default().push(SeenGrant {
            seen_ns: op.end_ns(),
            token,
            by,
        });
    }
    // Per lock, by the time seen, with the largest token seen so far.
    let mut highest: BTreeMap<&str, Vec<(u64, usize)>> = BTreeMap::new();
    for (lock, seen) in &mut grants {
        seen.sort_by_key(|g| g.seen_ns);
        let mut best: Option<usize> = None;
        let prefix = seen
            .iter()
            .enumerate()
            .map(|(i, g)| {
                if best.is_none_or(|b| seen[b].token < g.token) {
                    best = Some(i);
                }
                (g.seen_ns, best.unwrap_or(i))
            })
            .collect();
        highest.insert(lock, prefix);
    }

    for op in &ops {
        if op.op() != Op::KvAppend {
            continue;
        }
        let Some(lease_until) = op.invoke.lease_until_ns else {
            continue;
        };
        let (Some(lock), Some(token)) = (op.lock(), op.invoke.token) else {
            continue;
        };
        // A semaphore's permits are held at once: a newer grant does not end an older
        // one, so "granted to someone else" says nothing about this writer's lease.
        if crate::workload::permits_of(lock).is_some() {
            continue;
        }
        let sent = op.start_ns();
        if sent >= lease_until {
            continue;
        }
        verdict.checked += 1;
        let Some(prefix) = highest.get(lock) else {
            continue;
        };
        // The grants seen strictly before the write was sent.
        let before = prefix.partition_point(|&(seen_ns, _)| seen_ns < sent);
        if before == 0 {
            continue;
        }
        let newest = &grants[lock][prefix[before - 1].1];
        if newest.token > token {
            verdict.violation(format!(
                "{} wrote to {lock} with token {token} at {:.3}s counting its lease valid until {:.3}s, but {lock} had been granted with token {} to {} by {:.3}s",
                op.invoke.process,
                sent as f64 / 1e9,
                lease_until as f64 / 1e9,
                newest.token,
                newest.by,
                newest.seen_ns as f64 / 1e9,
            ));
        }
    }
    if verdict.checked == 0 {
        verdict.note("no write was made under a lease the writer had checked".into());
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testkit::H;
    use crate::history::Event;

    fn checked_write(h: &mut H, at: u64, process: &str, lock: &str, token: u64, until: u64) {
        h.op(
            at,
            at + 1,
            process,
            Op::KvAppend,
            Kind::Ok,
            |e: Event| {
                let mut e = e.lock(lock).token(token);
                e.lease_until_ns = Some(until * 1_000_000);
                e
            },
            |e| e.lock(lock).token(token).outcome("admitted"),
        );
    }

    fn verdict(h: H) -> Verdict {
        check(&Evidence {
            history: h.done(),
            ..Evidence::default()
        })
    }

    #[test]
    fn writes_under_a_valid_lease_before_any_newer_grant_pass() {
        let mut h = H::default();
        h.grant(0, 2, "c0", "l", 1, 5);
        checked_write(&mut h, 3, "c0", "l", 5, 2_000);
        checked_write(&mut h, 900, "c0", "l", 5, 2_000);
        // The next grant comes after the holder's last write; an older grant before it
        // and a newer grant of another lock do not matter.
        h.grant(950, 2_100, "c1", "l", 2, 8);
        h.grant(0, 1, "c2", "m", 3, 9);
        let verdict = verdict(h);
        assert!(verdict.valid, "{verdict:?}");
        assert_eq!(verdict.checked, 2);
    }

    #[test]
    fn a_write_after_the_writers_own_deadline_is_not_counted() {
        let mut h = H::default();
        h.grant(0, 2, "c0", "l", 1, 5);
        h.grant(1_000, 2_500, "c1", "l", 2, 8);
        // Sent after the lease it recorded ran out: the writer did not count on it.
        checked_write(&mut h, 3_000, "c0", "l", 5, 2_000);
        let verdict = verdict(h);
        assert!(verdict.valid, "{verdict:?}");
        assert_eq!(verdict.checked, 0);
    }

    #[test]
    fn a_newer_grant_seen_before_a_write_under_a_valid_lease_fails() {
        let mut h = H::default();
        h.grant(0, 2, "c0", "l", 1, 5);
        h.grant(100, 1_500, "c1", "l", 2, 8);
        checked_write(&mut h, 1_600, "c0", "l", 5, 2_000);
        let verdict = verdict(h);
        assert!(!verdict.valid, "{verdict:?}");
        assert!(verdict.first().unwrap().contains("token 8"), "{verdict:?}");
    }

    #[test]
    fn the_observers_watch_counts_as_a_sighting() {
        let mut h = H::default();
        h.grant(0, 2, "c0", "l", 1, 5);
        h.watch(1_200, "acquired", "l", 2, 8, 40);
        checked_write(&mut h, 1_600, "c0", "l", 5, 2_000);
        let verdict = verdict(h);
        assert!(!verdict.valid, "{verdict:?}");
        assert!(verdict.first().unwrap().contains("watch"), "{verdict:?}");
    }
}
