//! The checkers, one module each. Each takes the [`Evidence`] of a run and returns a
//! [`Verdict`]: pass or fail, how much it looked at, and every counter-example found.
//!
//! | module | property |
//! |---|---|
//! | [`fencing`] | the fenced service never admitted a token lower than one it had admitted for the key, and each key's value is the fold of its admitted writes (no lost or phantom write) |
//! | [`tokens`] | per lock, granted tokens strictly increase in real-time order and never repeat |
//! | [`exclusion`] | in the cluster's order (watch revisions) no two exclusive grants of a lock overlap, and no more than N grants of a semaphore of N permits are in force |
//! | [`linearizable`] | the lock history is linearizable against a sequential lock model (exclusive locks) |
//! | [`durability`] | no acknowledged acquire, release or session is lost after faults and restarts |
//! | [`lease`] | no holder wrote under a lease it still counted valid after the lock had been granted to someone else (exclusive locks) |
//! | [`multilock`] | the names of an atomic multi-lock are granted together (one answer, one log entry) or not at all |
//! | [`lockdelay`] | in the cluster's order, every expiry or revocation of a grant that asked for a lock-delay starts one, and no grant of the lock falls inside it (the lock-delay workload) |
//! | [`liveness`] | after healing, every node agrees on leader and state, and a fresh acquire succeeds in time |

pub mod durability;
pub mod exclusion;
pub mod fencing;
pub mod lease;
pub mod linearizable;
pub mod liveness;
pub mod lockdelay;
pub mod multilock;
pub mod tokens;

use crate::history::Event;
use fencelock_fenced_kv::LogEntry;
use serde::Serialize;
use std::collections::BTreeMap;

/// How many counter-examples a verdict keeps (the count goes on).
pub const MAX_EXAMPLES: usize = 20;

/// The result of one checker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The checker's name.
    pub checker: &'static str,
    /// Whether the property held.
    pub valid: bool,
    /// How many things it checked (operations, grants, decisions...), for the report.
    pub checked: usize,
    /// How many violations it found.
    pub violation_count: usize,
    /// The first violations found, the first one first.
    pub examples: Vec<String>,
    /// What the checker could not decide, if anything (a bounded search that ran out,
    /// events the observer missed).
    pub notes: Vec<String>,
}

impl Verdict {
    /// A passing verdict for `checker`, to which violations can be added.
    pub fn new(checker: &'static str) -> Verdict {
        Verdict {
            checker,
            valid: true,
            checked: 0,
            violation_count: 0,
            examples: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Record a violation: the verdict fails.
    pub fn violation(&mut self, example: String) {
        self.valid = false;
        self.violation_count += 1;
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(example);
        }
    }

    /// Record a note (something the checker could not decide).
    pub fn note(&mut self, note: String) {
        if self.notes.len() < MAX_EXAMPLES {
            self.notes.push(note);
        }
    }

    /// The first counter-example, if any.
    pub fn first(&self) -> Option<&str> {
        self.examples.first().map(String::as_str)
    }
}

/// One lock as the cluster described it after the run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FinalLock {
    /// Holders, as (session, token).
    pub holders: Vec<(u64, u64)>,
    /// Queued waiters' sessions.
    pub waiters: Vec<u64>,
}

/// One node's `/status` after healing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeView {
    /// The node.
    pub node_id: u64,
    /// The leader it knows.
    pub leader_id: Option<u64>,
    /// Its term.
    pub term: u64,
    /// Its applied index.
    pub applied_index: u64,
    /// The last token minted in its state.
    pub last_token: u64,
    /// Live sessions in its state.
    pub sessions: u64,
    /// Locks in its state.
    pub locks: u64,
}

/// What the liveness phase measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LivenessReport {
    /// The bound the nodes had to converge within, in ms.
    pub converge_bound_ms: u64,
    /// How long they took, when they did.
    pub converged_after_ms: Option<u64>,
    /// The last views of every node (those that answered).
    pub views: Vec<NodeView>,
    /// Nodes whose `/status` did not answer at the end.
    pub unreachable: Vec<u64>,
    /// The bound a fresh acquire had to succeed within, in ms.
    pub acquire_bound_ms: u64,
    /// How long the fresh acquire took, or why it failed.
    pub acquire: Result<u64, String>,
}

/// Everything the checkers look at.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// The history, sorted by time.
    pub history: Vec<Event>,
    /// The fenced service's decision log, in `seq` order.
    pub kv_log: Vec<LogEntry>,
    /// Decisions missing from the log (dropped by the service), which makes the fencing
    /// check partial.
    pub kv_log_missed: u64,
    /// Final values of the fenced service's keys (`None`: never written).
    pub kv_final: BTreeMap<String, Option<Vec<u8>>>,
    /// Final description of every lock the run used (`None`: free and unwanted).
    pub final_locks: BTreeMap<String, Option<FinalLock>>,
    /// Whether `final_locks` was read (false when the cluster did not answer).
    pub final_locks_read: bool,
    /// The liveness phase.
    pub liveness: Option<LivenessReport>,
}

/// Run every checker.
pub fn check_all(evidence: &Evidence) -> Vec<Verdict> {
    vec![
        fencing::check(evidence),
        tokens::check(evidence),
        exclusion::check(evidence),
        linearizable::check(evidence, linearizable::DEFAULT_STEP_BUDGET),
        durability::check(evidence),
        lease::check(evidence),
        liveness::check(evidence),
        multilock::check(evidence),
        lockdelay::check(evidence),
    ]
}

#[cfg(test)]
pub(crate) mod testkit {
    //! Building hand-written histories for the checkers' tests.
    use crate::history::{Event, Kind, Op};

    /// A history under construction: every call adds events at increasing times.
    #[derive(Default)]
    pub struct H {
        pub events: Vec<Event>,
        next_op: u64,
    }

    impl H {
        /// An invocation at `t` ms; returns the op id.
        pub fn invoke(
            &mut self,
            t: u64,
            process: &str,
            op: Op,
            f: impl FnOnce(Event) -> Event,
        ) -> u64 {
            self.next_op += 1;
            let event = f(Event::new(Kind::Invoke, process, self.next_op, op)).at(t * 1_000_000);
            self.events.push(event);
            self.next_op
        }

        /// A completion at `t` ms of op `id`.
        pub fn complete(
            &mut self,
            t: u64,
            process: &str,
            id: u64,
            kind: Kind,
            op: Op,
            f: impl FnOnce(Event) -> Event,
        ) {
            let event = f(Event::new(kind, process, id, op)).at(t * 1_000_000);
            self.events.push(event);
        }

        /// A whole operation from `a` to `b` ms.
        #[allow(clippy::too_many_arguments)]
        pub fn op(
            &mut self,
            a: u64,
            b: u64,
            process: &str,
            op: Op,
            kind: Kind,
            invoke: impl FnOnce(Event) -> Event,
            complete: impl FnOnce(Event) -> Event,
        ) {
            let id = self.invoke(a, process, op, invoke);
            self.complete(b, process, id, kind, op, complete);
        }

        /// A granted acquire of `lock` by `session` with `token`.
        pub fn grant(
            &mut self,
            a: u64,
            b: u64,
            process: &str,
            lock: &str,
            session: u64,
            token: u64,
        ) {
            self.op(
                a,
                b,
                process,
                Op::Acquire,
                Kind::Ok,
                |e| e.lock(lock).session(session),
                |e| {
                    e.lock(lock)
                        .session(session)
                        .token(token)
                        .outcome("granted")
                },
            );
        }

        /// An acknowledged release.
        pub fn release(
            &mut self,
            a: u64,
            b: u64,
            process: &str,
            lock: &str,
            session: u64,
            token: u64,
        ) {
            self.op(
                a,
                b,
                process,
                Op::Release,
                Kind::Ok,
                |e| e.lock(lock).session(session).token(token),
                |e| e.lock(lock).session(session).token(token),
            );
        }

        /// A watch event seen by the observer at `t` ms.
        pub fn watch(
            &mut self,
            t: u64,
            what: &str,
            lock: &str,
            session: u64,
            token: u64,
            revision: u64,
        ) {
            self.next_op += 1;
            let mut event = Event::new(Kind::Ok, "observer", self.next_op, Op::Watch)
                .outcome(what)
                .at(t * 1_000_000);
            if what != "resync" {
                event = event.lock(lock).session(session).token(token);
            }
            event.revision = Some(revision);
            self.events.push(event);
        }

        /// The events sorted by time.
        pub fn done(mut self) -> Vec<Event> {
            self.events.sort_by_key(|e| e.time_ns);
            self.events
        }
    }
}
