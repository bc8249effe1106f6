//! Exhaustive, depth-bounded checks of the real lock state machine driven by clients and
//! a leader (`fencelock_model::locks`): no property fails, every `sometimes` witness is
//! reached, and the search is not vacuous.

use fencelock_model::explore;
use fencelock_model::locks::{LockModel, LockState};
use stateright::Model;

/// Explores `model` to `depth` (the checker evaluates states above that depth, so paths
/// of up to `depth - 2` steps) and asserts: no `always` property fails, every
/// `sometimes` property is witnessed (except those in `unreachable`, which need more
/// clients than the scope has), and at least `floor` distinct states were seen.
fn check(model: LockModel, depth: usize, floor: usize, unreachable: &[&str]) {
    let properties = model.properties();
    let label = format!(
        "{} clients, {} locks, depth {depth}",
        model.clients, model.locks
    );
    let outcome = explore(model, Some(depth), false);
    eprintln!(
        "{label}: {} distinct states ({} generated), {:?}",
        outcome.unique_states, outcome.states, outcome.elapsed
    );
    for property in &properties {
        let found = outcome.discoveries.get(property.name);
        match property.expectation {
            stateright::Expectation::Always => {
                if let Some(path) = found {
                    let last: &LockState = path.last_state();
                    panic!(
                        "{label}: {:?} fails ({:?}) after {:?}",
                        property.name,
                        last.violation,
                        path.clone().into_actions()
                    );
                }
            }
            _ => assert!(
                found.is_some() || unreachable.contains(&property.name),
                "{label}: never reached {:?}",
                property.name
            ),
        }
    }
    assert!(
        outcome.unique_states >= floor,
        "{label}: only {} states",
        outcome.unique_states
    );
}

/// Two shared waiters granted together behind a holder take three sessions.
const TWO_CLIENTS_CANNOT: &[&str] = &["shared waiters at the head granted together"];

#[test]
fn two_clients_two_locks() {
    check(LockModel::new(2, 2), 5, 15_000, TWO_CLIENTS_CANNOT);
}

/// Three sessions on one lock, queueing acquires only (no-wait is covered above).
#[test]
fn three_clients_one_lock() {
    let model = LockModel {
        no_wait: false,
        ..LockModel::new(3, 1)
    };
    check(model, 6, 20_000, &[]);
}

/// Deeper scopes, for a run on demand:
/// `cargo nextest run -p fencelock-model --run-ignored only` (minutes in debug).
#[test]
#[ignore = "slow: run on demand"]
fn deeper_scopes() {
    check(LockModel::new(2, 2), 6, 80_000, TWO_CLIENTS_CANNOT);
    check(LockModel::new(3, 1), 7, 100_000, &[]);
    check(LockModel::new(3, 2), 6, 100_000, &[]);
}

/// Proof that the dedup check can fail: retries that carry a fresh request id act twice.
#[test]
fn retries_without_their_request_id_are_caught() {
    let model = LockModel {
        retry_with_fresh_request_id: true,
        ..LockModel::new(2, 1)
    };
    let outcome = explore(model, Some(6), true);
    let path = outcome
        .discoveries
        .get("no step violated a property")
        .expect("a retry with a fresh request id must break dedup");
    let violation = path.last_state().violation.clone().unwrap_or_default();
    assert!(violation.starts_with("dedup"), "{violation}");
}
