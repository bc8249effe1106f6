//! The lease protocol model (`fencelock_model::lease`): the design keeps invariant 6, each
//! rule it relies on is needed (dropping it gives a counterexample), and the server as
//! written breaks it for a client that takes an answer after its lease ran out.

use fencelock_model::explore;
use fencelock_model::lease::{
    KeepaliveRule, LeaseAction, LeaseConfig, LeaseFrom, LeaseModel, UnknownOutcome,
};
use stateright::Model;

const PROPERTY: &str = "never told it holds a lease the cluster expired";

/// The scope of the CI checks: 3 nodes/terms, time 0..=4, TTL 3, margin 1, drift 1, one
/// keepalive, two expiry proposals.
fn scope() -> LeaseConfig {
    LeaseConfig {
        max_time: 4,
        max_keepalives: 1,
        max_proposals: 2,
        ..LeaseConfig::design()
    }
}

/// Explores `config` fully; asserts that the property holds, that every witness is
/// reached, and that at least `floor` distinct states were seen.
fn holds(label: &str, config: LeaseConfig, floor: usize) {
    let model = LeaseModel::new(config);
    let properties = model.properties();
    let outcome = explore(model, None, false);
    eprintln!(
        "{label}: {} distinct states ({} generated), depth {}, {:?}",
        outcome.unique_states, outcome.states, outcome.max_depth, outcome.elapsed
    );
    if let Some(path) = outcome.discoveries.get(PROPERTY) {
        panic!("{label}: counterexample {:?}", path.clone().into_actions());
    }
    for property in properties.iter().filter(|p| p.name != PROPERTY) {
        assert!(
            outcome.discoveries.contains_key(property.name),
            "{label}: never reached {:?}",
            property.name
        );
    }
    assert!(
        outcome.unique_states >= floor,
        "{label}: only {} states",
        outcome.unique_states
    );
}

/// Explores `config` until the property fails; returns the counterexample's actions.
fn fails(label: &str, config: LeaseConfig) -> Vec<LeaseAction> {
    let outcome = explore(LeaseModel::new(config), None, true);
    let path = outcome.discoveries.get(PROPERTY).unwrap_or_else(|| {
        panic!(
            "{label}: no counterexample in {} states",
            outcome.unique_states
        )
    });
    let last = path.last_state();
    assert!(last.expired_at.is_some() && last.now < last.client.lease_end);
    let actions = path.clone().into_actions();
    eprintln!(
        "{label}: counterexample after {} states, {:?}: {actions:?}",
        outcome.unique_states, outcome.elapsed
    );
    actions
}

#[test]
fn design_keeps_invariant_6() {
    holds("design", scope(), 100_000);
}

/// Deeper scopes, for a run on demand:
/// `cargo nextest run -p fencelock-model --run-ignored only` (about a minute in debug).
#[test]
#[ignore = "slow: run on demand"]
fn design_keeps_invariant_6_deeper() {
    holds(
        "design, time 0..=6",
        LeaseConfig {
            max_time: 6,
            ..scope()
        },
        500_000,
    );
    holds(
        "design, two keepalives",
        LeaseConfig {
            max_time: 3,
            max_keepalives: 2,
            max_proposals: 1,
            ..scope()
        },
        1_000_000,
    );
}

/// The finding (fixed in the server by `LeaseClock::expiry_unresolved`): the old
/// `LeaseClock::expiry_failed` un-marked a session whose `ExpireSessions`
/// may still commit, so a keepalive is answered `Ok` and the expiry commits inside the
/// lease the client then computes.
#[test]
fn server_as_coded_breaks_invariant_6_for_a_forgiving_client() {
    let actions = fails(
        "as coded",
        LeaseConfig {
            unknown_outcome: UnknownOutcome::Unmark,
            ..scope()
        },
    );
    let timeout = actions
        .iter()
        .position(|a| matches!(a, LeaseAction::ProposalTimeout { .. }))
        .expect("the counterexample goes through the proposal timeout");
    let commit = actions
        .iter()
        .position(|a| matches!(a, LeaseAction::CommitOwn { .. }))
        .expect("the old proposal commits");
    assert!(timeout < commit);
}

/// The client crate's rule (an answer after the lease ran out leaves the session lost)
/// hides the finding: no counterexample in this scope.
#[test]
fn server_as_coded_is_safe_with_the_sticky_client() {
    holds(
        "as coded, sticky client",
        LeaseConfig {
            unknown_outcome: UnknownOutcome::Unmark,
            sticky_client: true,
            max_time: 3,
            max_proposals: 1,
            ..scope()
        },
        20_000,
    );
}

#[test]
fn mutant_answering_without_a_round_fails() {
    fails(
        "no round",
        LeaseConfig {
            keepalive: KeepaliveRule::NoRound,
            ..scope()
        },
    );
}

#[test]
fn mutant_round_that_started_before_the_arrival_fails() {
    let actions = fails(
        "round may start before arrival",
        LeaseConfig {
            keepalive: KeepaliveRule::RoundMayStartBeforeArrival,
            max_time: 3,
            max_proposals: 1,
            ..scope()
        },
    );
    let start = actions
        .iter()
        .position(|a| matches!(a, LeaseAction::StartRound { .. }))
        .expect("a round");
    let deliver = actions
        .iter()
        .position(|a| matches!(a, LeaseAction::Deliver { .. }))
        .expect("a keepalive arrives");
    assert!(start < deliver, "the keepalive joined a running round");
}

#[test]
fn mutant_lease_counted_from_receipt_fails() {
    fails(
        "lease from receipt",
        LeaseConfig {
            lease_from: LeaseFrom::Receipt,
            ..scope()
        },
    );
}

#[test]
fn mutant_new_leader_not_waiting_for_earlier_terms_fails() {
    fails(
        "no wait for earlier terms",
        LeaseConfig {
            wait_for_earlier_terms: false,
            ..scope()
        },
    );
}

#[test]
fn mutant_margin_below_clock_drift_fails() {
    fails(
        "margin 0, drift 1",
        LeaseConfig {
            margin: 0,
            ..scope()
        },
    );
}
