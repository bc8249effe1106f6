//! Deliberate faults in the rules of the newer primitives, for the model checker to
//! refute (`crates/model/tests/primitives_mutants.rs`): each breaks one rule, and the
//! check must find a state that shows it. Compiled only with the `model-mutants`
//! feature, which only that test enables; off, nothing of this exists.
//!
//! While a mutant is on, `apply` does not check the invariants after each command (the
//! model checker's properties must find the fault, not a debug assertion).

use std::sync::atomic::{AtomicU8, Ordering};

/// One broken rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mutant {
    /// A semaphore counts its holders, not their weights: more than N permits go out.
    SemaphoreCountsHolders = 1,
    /// A multi-lock that cannot have every name takes the free ones now and waits for
    /// the rest (hold-and-wait).
    MultiLockTakesWhatIsFree = 2,
    /// A lock-delay does not stop grants.
    GrantDuringDelay = 3,
    /// A release ends a reentrant grant whatever its hold count.
    ReleaseIgnoresHoldCount = 4,
    /// An acquire whose holders admit it is granted at once past a queue (barging).
    BargePastQueue = 5,
}

static ACTIVE: AtomicU8 = AtomicU8::new(0);

/// Switches `mutant` on for the whole process (`None`: the real rules).
pub fn set(mutant: Option<Mutant>) {
    ACTIVE.store(mutant.map_or(0, |m| m as u8), Ordering::SeqCst);
}

/// Whether `mutant` is on.
pub(crate) fn active(mutant: Mutant) -> bool {
    ACTIVE.load(Ordering::SeqCst) == mutant as u8
}

/// Whether any mutant is on.
pub(crate) fn any() -> bool {
    ACTIVE.load(Ordering::SeqCst) != 0
}
