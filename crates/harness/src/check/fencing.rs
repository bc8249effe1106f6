//! The fenced service kept its promise: per key, it never admitted a token lower than one
//! it had already admitted, and the key's value is the fold of the admitted writes — no
//! lost write (an acknowledged admission missing from the log or the value) and no
//! phantom write (an admitted body no client sent, or a value that is not the fold).
//!
//! Evidence: the service's decision log (seq, key, token, admitted, body and value
//! hashes), the `kv_append` operations of the history (the bodies sent and the answers
//! received) and the final value of every key.

use super::{Evidence, Verdict};
use crate::history::{Kind, Op, operations};
use fencelock_fenced_kv::{WriteOp, body_hash};
use std::collections::{BTreeMap, HashMap};

/// The checker's name.
pub const NAME: &str = "fencing";

/// Check the fenced service's decisions.
pub fn check(evidence: &Evidence) -> Verdict {
    let mut verdict = Verdict::new(NAME);
    if evidence.kv_log_missed > 0 {
        verdict.note(format!(
            "{} decisions were dropped by the service: the fold is checked from the first kept one",
            evidence.kv_log_missed
        ));
    }
    // Every body the harness sent, by hash.
    let appends: Vec<_> = operations(&evidence.history)
        .into_iter()
        .filter(|o| o.op() == Op::KvAppend)
        .collect();
    let mut bodies: HashMap<String, String> = HashMap::new();
    for append in &appends {
        if let Some(body) = &append.invoke.body {
            bodies.insert(body_hash(body.as_bytes()), body.clone());
        }
    }

    // Walk the log per key.
    let mut highest: BTreeMap<&str, (u64, u64)> = BTreeMap::new(); // key -> (token, seq)
    let mut folds: BTreeMap<&str, Option<Vec<u8>>> = BTreeMap::new(); // None: unknown prefix
    let mut by_seq = HashMap::new();
    let mut previous_seq = None;
    for entry in &evidence.kv_log {
        verdict.checked += 1;
        if let Some(previous) = previous_seq
            && entry.seq != previous + 1
        {
            verdict.note(format!(
                "decision log jumps from seq {previous} to {}",
                entry.seq
            ));
        }
        previous_seq = Some(entry.seq);
        by_seq.insert(entry.seq, entry);
        if !entry.admitted {
            continue;
        }
        let key = entry.key.as_str();
        if let Some(&(token, seq)) = highest.get(key)
            && entry.token < token
        {
            verdict.violation(format!(
                "key {key:?}: decision {} admitted token {} (lock {:?}) after decision {seq} had admitted token {token}: a stale holder wrote",
                entry.seq, entry.token, entry.lock
            ));
        }
        let top = highest.entry(key).or_insert((entry.token, entry.seq));
        if entry.token >= top.0 {
            *top = (entry.token, entry.seq);
        }
        // The fold.
        let initial = if evidence.kv_log_missed == 0 {
            Some(Vec::new())
        } else {
            None
        };
        let fold = folds.entry(key).or_insert(initial);
        let Some(body) = bodies.get(&entry.body_hash) else {
            verdict.violation(format!(
                "key {key:?}: decision {} admitted a body (hash {}) that no client sent: a phantom write",
                entry.seq, entry.body_hash
            ));
            *fold = None;
            continue;
        };
        match entry.op {
            WriteOp::Put => *fold = Some(body.as_bytes().to_vec()),
            WriteOp::Append => {
                if let Some(value) = fold.as_mut() {
                    value.extend_from_slice(body.as_bytes());
                }
            }
        }
        if let (Some(value), Some(hash)) = (fold.as_ref(), entry.value_hash.as_ref())
            && body_hash(value) != *hash
        {
            verdict.violation(format!(
                "key {key:?}: after decision {} the value's hash is {hash}, not the fold of the admitted writes ({}): a write was lost or reordered",
                entry.seq,
                body_hash(value)
            ));
            *fold = None;
        }
    }

    // The final values.
    for (key, fold) in &folds {
        let Some(expected) = fold else { continue };
        match evidence.kv_final.get(*key) {
            Some(Some(value)) if value != expected => verdict.violation(format!(
                "key {key:?}: final value ({} bytes) differs from the fold of its admitted writes ({} bytes)",
                value.len(),
                expected.len()
            )),
            Some(None) if !expected.is_empty() => verdict.violation(format!(
                "key {key:?}: the service says it was never written, but writes were admitted"
            )),
            _ => {}
        }
    }

    // Every answer a client received matches the log.
    for append in &appends {
        if append.kind() != Kind::Ok {
            continue;
        }
        let Some(complete) = &append.complete else {
            continue;
        };
        let Some(seq) = complete.seq else { continue };
        let admitted = complete.outcome.as_deref() == Some("admitted");
        match by_seq.get(&seq) {
            None if evidence.kv_log_missed > 0 => {}
            None => verdict.violation(format!(
                "{} was told decision {seq} ({}) for key {:?} token {:?}, but the log has no such decision: a lost write",
                append.invoke.process,
                complete.outcome.as_deref().unwrap_or("?"),
                append.invoke.key,
                append.invoke.token
            )),
            Some(entry) => {
                let body = append.invoke.body.as_deref().unwrap_or("");
                if entry.admitted != admitted
                    || Some(entry.token) != append.invoke.token
                    || Some(&entry.key) != append.invoke.key.as_ref()
                    || entry.body_hash != body_hash(body.as_bytes())
                {
                    verdict.violation(format!(
                        "{} was told decision {seq} admitted={admitted} for key {:?} token {:?}, but the log says admitted={} key {:?} token {}",
                        append.invoke.process,
                        append.invoke.key,
                        append.invoke.token,
                        entry.admitted,
                        entry.key,
                        entry.token
                    ));
                }
            }
        }
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::testkit::H;
    use fencelock_fenced_kv::LogEntry;

    fn entry(seq: u64, token: u64, admitted: bool, body: &str, value: &str) -> LogEntry {
        LogEntry {
            seq,
            op: WriteOp::Append,
            key: "k".into(),
            lock: "l".into(),
            token,
            admitted,
            highest_seen: None,
            reason: None,
            bound_lock: None,
            version: admitted.then_some(seq),
            body_len: body.len() as u64,
            body_hash: body_hash(body.as_bytes()),
            value_len: admitted.then_some(value.len() as u64),
            value_hash: admitted.then(|| body_hash(value.as_bytes())),
            fenced: true,
        }
    }

    fn append(h: &mut H, a: u64, process: &str, token: u64, body: &str, seq: u64, outcome: &str) {
        let body = body.to_string();
        let body2 = body.clone();
        h.op(
            a,
            a + 1,
            process,
            Op::KvAppend,
            Kind::Ok,
            move |mut e| {
                e.key = Some("k".into());
                e.body = Some(body);
                e.token(token).lock("l")
            },
            move |mut e| {
                e.key = Some("k".into());
                e.seq = Some(seq);
                e.body = Some(body2);
                e.token(token).outcome(outcome)
            },
        );
    }

    #[test]
    fn a_fenced_history_passes() {
        let mut h = H::default();
        append(&mut h, 1, "c0", 5, "a;", 1, "admitted");
        append(&mut h, 3, "c1", 7, "b;", 2, "admitted");
        append(&mut h, 5, "c0", 5, "c;", 3, "refused"); // the stale holder, refused
        let evidence = Evidence {
            history: h.done(),
            kv_log: vec![
                entry(1, 5, true, "a;", "a;"),
                entry(2, 7, true, "b;", "a;b;"),
                entry(3, 5, false, "c;", ""),
            ],
            kv_final: [("k".to_string(), Some(b"a;b;".to_vec()))].into(),
            ..Evidence::default()
        };
        let verdict = check(&evidence);
        assert!(verdict.valid, "{verdict:?}");
        assert_eq!(verdict.checked, 3);
    }

    #[test]
    fn a_stale_admission_fails() {
        let mut h = H::default();
        append(&mut h, 1, "c0", 5, "a;", 1, "admitted");
        append(&mut h, 3, "c1", 7, "b;", 2, "admitted");
        append(&mut h, 5, "c0", 5, "c;", 3, "admitted");
        let evidence = Evidence {
            history: h.done(),
            kv_log: vec![
                entry(1, 5, true, "a;", "a;"),
                entry(2, 7, true, "b;", "a;b;"),
                entry(3, 5, true, "c;", "a;b;c;"),
            ],
            kv_final: [("k".to_string(), Some(b"a;b;c;".to_vec()))].into(),
            ..Evidence::default()
        };
        let verdict = check(&evidence);
        assert!(!verdict.valid);
        assert!(
            verdict.first().unwrap().contains("stale holder"),
            "{verdict:?}"
        );
    }

    #[test]
    fn lost_and_phantom_writes_fail() {
        let mut h = H::default();
        append(&mut h, 1, "c0", 5, "a;", 1, "admitted");
        append(&mut h, 3, "c1", 7, "b;", 2, "admitted");
        let evidence = Evidence {
            history: h.done(),
            // Decision 2 is missing; a body nobody sent was admitted; the final value
            // lost "a;".
            kv_log: vec![
                entry(1, 5, true, "a;", "a;"),
                entry(3, 8, true, "x;", "a;x;"),
            ],
            kv_final: [("k".to_string(), Some(b"x;".to_vec()))].into(),
            ..Evidence::default()
        };
        let verdict = check(&evidence);
        assert!(!verdict.valid);
        let all = verdict.examples.join("\n");
        assert!(all.contains("phantom"), "{all}");
        assert!(all.contains("lost write"), "{all}");
    }

    #[test]
    fn a_value_that_is_not_the_fold_fails() {
        let mut h = H::default();
        append(&mut h, 1, "c0", 5, "a;", 1, "admitted");
        let evidence = Evidence {
            history: h.done(),
            kv_log: vec![entry(1, 5, true, "a;", "zz")],
            kv_final: [("k".to_string(), Some(b"zz".to_vec()))].into(),
            ..Evidence::default()
        };
        let verdict = check(&evidence);
        assert!(!verdict.valid, "{verdict:?}");
    }
}
