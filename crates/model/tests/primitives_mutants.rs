//! Proof that the checks of `fencelock_model::primitives` can fail: with each rule of the
//! newer primitives broken in turn (`fencelock_core::mutants`, a feature only this
//! crate's tests enable), the checker must find a counterexample to the property that
//! rule upholds. One test, so that the process-wide switch is never shared by two tests
//! running at once.

use fencelock_core::mutants::{self, Mutant};
use fencelock_model::explore;
use fencelock_model::primitives::PrimitivesModel;

#[test]
fn every_broken_rule_is_refused_by_the_checker() {
    // (mutant, clients, menu, depth, the property it must break)
    let cases = [
        (
            Mutant::SemaphoreCountsHolders,
            2,
            vec![0, 1],
            5,
            "never more permits out than the limit",
        ),
        (
            Mutant::MultiLockTakesWhatIsFree,
            2,
            vec![2, 4],
            5,
            "a multi-lock is granted all at once or not at all",
        ),
        (
            Mutant::MultiLockTakesWhatIsFree,
            3,
            vec![2, 3, 4],
            7,
            "no deadlock: every waiter is granted once holders release",
        ),
        (
            Mutant::GrantDuringDelay,
            2,
            vec![4],
            6,
            "no step violated a property",
        ),
        (
            Mutant::ReleaseIgnoresHoldCount,
            1,
            vec![3],
            5,
            "no step violated a property",
        ),
        (
            Mutant::BargePastQueue,
            3,
            vec![0, 1],
            5,
            "no step violated a property",
        ),
    ];
    for (mutant, clients, menu, depth, property) in cases {
        mutants::set(Some(mutant));
        let model = PrimitivesModel {
            menu,
            ..PrimitivesModel::new(clients)
        };
        let outcome = explore(model, Some(depth), false);
        mutants::set(None);
        let path = outcome.discoveries.get(property);
        assert!(
            path.is_some(),
            "{mutant:?}: the checker did not refute {property:?} ({} states)",
            outcome.unique_states
        );
        eprintln!(
            "{mutant:?} refuted: {property:?} fails after {:?}",
            path.unwrap().clone().into_actions()
        );
    }
}
