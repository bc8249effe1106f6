//! Model checks of fencelock's core protocol, with [`stateright`]: exhaustive searches of
//! small scopes that check the invariants of docs/design.md in every reachable state, run as
//! ordinary tests (`cargo nextest run -p fencelock-model`, a few seconds in a debug
//! build).
//!
//! # Three models
//!
//! * [`primitives::PrimitivesModel`]: **the newer primitives** of the real state machine
//!   (a weighted counting semaphore, crossing atomic multi-locks, a reentrant lock, a
//!   lock-delay) with 2–3 clients and a leader: no deadlock, FIFO without barging, never
//!   more permits than the limit, multi-locks all or nothing, no grant during a delay,
//!   hold counts; each rule has a mutant (core's test-only `model-mutants` feature) that
//!   `tests/primitives_mutants.rs` requires the checker to refute.
//! * [`locks::LockModel`]: **the real state machine** ([`fencelock_core::State::apply`],
//!   `crates/core/src/apply.rs`) driven by 2–3 clients and a leader over 1–3 lock names,
//!   every interleaving up to a depth bound. Actions: open (and re-open) a session,
//!   acquire exclusive/shared with queue/no-wait, release with the right token, release
//!   with a stale or foreign token, cancel a wait, close, the leader's expiry of one
//!   session or of all in one entry, and a retry of the last request with the same
//!   request id. Checked: invariants 1, 2 (against a history of every grant), 3, 4
//!   (FIFO per lock: grants are a prefix of the queue, the rest keep their order, no
//!   immediate grant jumps a queue, a grantable head never waits), 7, 8, the crate's own
//!   `check_invariants()` (`crates/core/src/invariants.rs`), and dedup (a retry returns
//!   the remembered answer, which the state machine keeps current, and changes nothing).
//! * [`lease::LeaseModel`]: **the lease protocol** (invariant 6) as an abstract model with
//!   discrete time, three nodes and three terms, a lossy reordering network, the leader's
//!   lease clock (`crates/server/src/leases.rs`), the keepalive read barrier
//!   (`crates/server/src/barrier.rs` and the keepalive stream in
//!   `crates/server/src/api/locks.rs`), old-term expiry entries that commit under a new
//!   leader, and the client's lease accounting (`crates/client/src/keepalive.rs`).
//!   Checked: whenever the cluster has committed the session's expiry, the client does
//!   not believe it holds the lease. Mutants that drop one rule each must fail.
//!
//! # How the model maps to the code
//!
//! | model | code |
//! |---|---|
//! | every [`locks::LockAction`] | one [`fencelock_core::Command`] through the real `State::apply` |
//! | [`locks::LockState::history`] | the `Event::Acquired` events `apply` emits |
//! | [`lease::Lease`] `deadline`/`expiring` | `LeaseClock`'s `Lease` (`leases.rs`) |
//! | `Elect` | `watch_leadership` → `LeaseClock::become_leader` (`crates/server/src/node.rs`) |
//! | `DecideExpiry` | `expire_sessions` → `LeaseClock::take_expired` + `Proposer::propose` |
//! | `ProposalTimeout` | `ProposeError::Unavailable` → `LeaseClock::expiry_unresolved` |
//! | `StartRound`/`FinishRound` | `ReadBarrier::confirm` (openraft `ensure_linearizable`) then `answer_keepalive` → `LeaseClock::renew` |
//! | `CommitBlank` | openraft's blank entry of a new term committing (the read index of `ensure_linearizable`) |
//! | `Apply` | the apply path's `session_ended` (`crates/server/src/events.rs`) |
//! | `Receive` | `LeaseState` deadline update in the client's keepalive task |
//!
//! # What is abstracted away
//!
//! The lock model has no time (the leader may expire any live session at any step,
//! which covers every timing), no replication (each action is one committed command;
//! replication is openraft's job and the lease model's subject), default limits (the
//! unit tests of `crates/core` cover limits), and no `ForceRelease`, `SetLimits` or
//! `AcquireWithLease`. The lease model is described in [`lease`]; in short it has one
//! session, one keepalive (see the reduction argument there), abstract Raft terms and
//! commits instead of logs, and clocks that run at one rate except a leader's expiry
//! timer that may fire early.
//!
//! # Findings
//!
//! [`lease::UnknownOutcome::Unmark`] is how `LeaseClock::expiry_failed` was written (fixed since:
//! the server now does [`lease::UnknownOutcome::KeepRefusing`], `LeaseClock::expiry_unresolved`): after
//! an `ExpireSessions` proposal ends with an unknown outcome (the proposer's write
//! timeout), the session is no longer `expiring`, so a keepalive is renewed and answered
//! `Ok` while the expiry entry is still in the log; it then commits. A client that takes
//! an answer after its lease ran out then believes it holds a lease the cluster has
//! expired ([`lease::LeaseConfig::as_coded`]); the client crate's sticky "lost stays
//! lost" rule hides it. See the tests in `tests/lease.rs`.

pub mod hashed;
pub mod lease;
pub mod locks;
pub mod primitives;

use std::time::{Duration, Instant};

use stateright::{Checker, HasDiscoveries, Model};

/// What one exhaustive run found.
#[derive(Debug)]
pub struct Outcome<M: Model> {
    /// Distinct states visited.
    pub unique_states: usize,
    /// States generated, with repeats.
    pub states: usize,
    /// The deepest path explored.
    pub max_depth: usize,
    /// Wall time.
    pub elapsed: Duration,
    /// Property name → the path that discovered it: a counterexample for an `always`
    /// property, a witness for a `sometimes` one.
    pub discoveries: std::collections::HashMap<&'static str, stateright::Path<M::State, M::Action>>,
}

/// Runs a breadth-first search of `model` on one thread, to depth `max_depth` if given;
/// stops at the first counterexample if `stop_at_failure`.
pub fn explore<M>(model: M, max_depth: Option<usize>, stop_at_failure: bool) -> Outcome<M>
where
    M: Model + Send + Sync + 'static,
    M::State: Clone + std::fmt::Debug + std::hash::Hash + PartialEq + Send + Sync + 'static,
    M::Action: Clone + std::fmt::Debug + PartialEq + Send + Sync + 'static,
{
    let started = Instant::now();
    let mut builder = model.checker().threads(1);
    if let Some(depth) = max_depth {
        builder = builder.target_max_depth(depth);
    }
    if stop_at_failure {
        builder = builder.finish_when(HasDiscoveries::AnyFailures);
    }
    let checker = builder.spawn_bfs().join();
    Outcome {
        unique_states: checker.unique_state_count(),
        states: checker.state_count(),
        max_depth: checker.max_depth(),
        elapsed: started.elapsed(),
        discoveries: checker.discoveries(),
    }
}
