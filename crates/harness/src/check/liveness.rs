//! Liveness after healing: within a bound, every node answers, all agree on one leader
//! and have applied the same state (applied index, last token, sessions, locks), and a
//! fresh session acquires a fresh lock within a bound.
//!
//! Evidence: the [`LivenessReport`](super::LivenessReport) the runner measured after the
//! last fault ended.

use super::{Evidence, Verdict};

/// The checker's name.
pub const NAME: &str = "liveness";

/// Check the liveness phase.
pub fn check(evidence: &Evidence) -> Verdict {
    let mut verdict = Verdict::new(NAME);
    let Some(report) = &evidence.liveness else {
        verdict.violation("the liveness phase did not run".into());
        return verdict;
    };
    verdict.checked = report.views.len() + 1;
    if !report.unreachable.is_empty() {
        verdict.violation(format!(
            "node(s) {:?} did not answer /status after healing",
            report.unreachable
        ));
    }
    match report.converged_after_ms {
        Some(ms) if ms <= report.converge_bound_ms => {}
        Some(ms) => verdict.violation(format!(
            "the nodes converged only after {ms} ms (bound {} ms)",
            report.converge_bound_ms
        )),
        None => {
            let views: Vec<String> = report
                .views
                .iter()
                .map(|v| {
                    format!(
                        "node {} leader {:?} term {} applied {} last_token {}",
                        v.node_id, v.leader_id, v.term, v.applied_index, v.last_token
                    )
                })
                .collect();
            verdict.violation(format!(
                "the nodes did not agree on leader and state within {} ms: {}",
                report.converge_bound_ms,
                views.join("; ")
            ));
        }
    }
    if let Some(first) = report.views.first() {
        for view in &report.views[1..] {
            if (
                view.leader_id,
                view.applied_index,
                view.last_token,
                view.sessions,
                view.locks,
            ) != (
                first.leader_id,
                first.applied_index,
                first.last_token,
                first.sessions,
                first.locks,
            ) && report.converged_after_ms.is_some()
            {
                verdict.violation(format!(
                    "node {} and node {} disagree at the end: {view:?} vs {first:?}",
                    view.node_id, first.node_id
                ));
            }
        }
        if first.leader_id.is_none() {
            verdict.violation("no node knows a leader after healing".into());
        }
    }
    match &report.acquire {
        Ok(ms) if *ms <= report.acquire_bound_ms => {}
        Ok(ms) => verdict.violation(format!(
            "a fresh acquire took {ms} ms after healing (bound {} ms)",
            report.acquire_bound_ms
        )),
        Err(error) => verdict.violation(format!("a fresh acquire failed after healing: {error}")),
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{LivenessReport, NodeView};

    fn view(node_id: u64, applied_index: u64) -> NodeView {
        NodeView {
            node_id,
            leader_id: Some(2),
            term: 3,
            applied_index,
            last_token: 40,
            sessions: 1,
            locks: 1,
        }
    }

    fn report(
        views: Vec<NodeView>,
        converged: Option<u64>,
        acquire: Result<u64, String>,
    ) -> Evidence {
        Evidence {
            liveness: Some(LivenessReport {
                converge_bound_ms: 30_000,
                converged_after_ms: converged,
                views,
                unreachable: vec![],
                acquire_bound_ms: 10_000,
                acquire,
            }),
            ..Evidence::default()
        }
    }

    #[test]
    fn a_converged_cluster_passes() {
        let evidence = report(
            vec![view(1, 90), view(2, 90), view(3, 90)],
            Some(800),
            Ok(12),
        );
        let verdict = check(&evidence);
        assert!(verdict.valid, "{verdict:?}");
    }

    #[test]
    fn disagreement_or_a_failed_acquire_fails() {
        let split = report(vec![view(1, 90), view(2, 85)], None, Ok(12));
        assert!(!check(&split).valid);
        let stuck = report(
            vec![view(1, 90), view(2, 90)],
            Some(500),
            Err("timed out".into()),
        );
        let verdict = check(&stuck);
        assert!(!verdict.valid);
        assert!(verdict.first().unwrap().contains("fresh acquire failed"));
        assert!(!check(&Evidence::default()).valid);
    }
}
