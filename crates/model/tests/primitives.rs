//! Exhaustive, depth-bounded checks of the newer primitives of the real state machine
//! (`fencelock_model::primitives`): no property fails (no deadlock, no starvation past
//! the queue, never more permits than the limit, multi-locks all or nothing, no grant
//! during a lock-delay, hold counts), and every `sometimes` witness is reached.

use fencelock_model::explore;
use fencelock_model::primitives::{PrimitivesModel, PrimitivesState};
use stateright::Model;

/// Explores `model` to `depth` and asserts that no `always` property fails and every
/// `sometimes` one is witnessed (but those in `unreachable`, outside the scope's menu).
fn check(model: PrimitivesModel, depth: usize, floor: usize, unreachable: &[&str]) {
    let properties = model.properties();
    let label = format!("{} clients, depth {depth}", model.clients);
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
                    let last: &PrimitivesState = path.last_state();
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

#[test]
fn two_clients() {
    check(PrimitivesModel::new(2), 7, 1_000, &[]);
}

/// Three clients over the multi-lock and the single names it crosses.
#[test]
fn three_clients_crossing_multi_locks() {
    let model = PrimitivesModel {
        menu: vec![2, 3, 4, 5],
        ..PrimitivesModel::new(3)
    };
    check(model, 6, 1_000, &["a full semaphore with a waiter"]);
}
