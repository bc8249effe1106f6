//! Linearizable reads and keepalive acknowledgements: the leader confirms with a quorum
//! round (openraft's `ensure_linearizable`, a ReadIndex) that it still leads, and waits
//! until its state machine has applied up to the read index.
//!
//! Rounds are shared and pipelined. A caller joins the next round to *start*, never one
//! already running, so a round covers only callers that arrived before it started — the
//! property keepalives need (docs/design.md invariant 6). The next round starts as soon as the
//! barrier task sees a caller, while earlier rounds are still in flight (up to
//! [`MAX_ROUNDS_IN_FLIGHT`] at once): a caller waits for about one round, not for the
//! rest of the round in flight and then its own.
//!
//! Before the first round of each term, the barrier commits an entry of this node's own
//! (`settle`); no round of that term starts before that entry is committed.

use crate::raft::{CommandBatch, NodeId, Raft};
use futures::future::BoxFuture;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Instant;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Quorum rounds that may be in flight at once. Callers that arrive while this many run
/// wait for one of them to end and then join the next round to start.
pub const MAX_ROUNDS_IN_FLIGHT: usize = 4;

/// How long the first write of a term may take before reads are refused.
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why leadership could not be confirmed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BarrierError {
    /// This node is not the leader (or lost a quorum); `leader` if known.
    #[error("not the leader")]
    NotLeader {
        /// The known leader.
        leader: Option<NodeId>,
    },
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
}

/// A quorum round that confirmed this node's leadership.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Round {
    /// Rounds are numbered from 1 in the order they started.
    pub number: u64,
    /// When the round started: after every caller it answers had asked.
    pub started: Instant,
}

/// What the barrier needs from Raft (a trait so that tests can hold rounds in flight).
pub trait Quorum: Send + Sync + 'static {
    /// This node's current term if it believes it leads, else the leader it knows.
    ///
    /// # Errors
    /// [`BarrierError::NotLeader`] when this node does not lead.
    fn leading_term(&self) -> Result<u64, BarrierError>;

    /// Commit an (empty) entry of this node's own in its current term.
    fn commit_own_entry(&self) -> BoxFuture<'static, Result<(), BarrierError>>;

    /// One quorum round confirming leadership, then a wait until the state machine
    /// applied everything committed when the round started (`ensure_linearizable`).
    fn round(&self) -> BoxFuture<'static, Result<(), BarrierError>>;
}

/// The barrier over an openraft node.
struct RaftQuorum(Raft);

impl Quorum for RaftQuorum {
    fn leading_term(&self) -> Result<u64, BarrierError> {
        let metrics = self.0.metrics();
        let metrics = metrics.borrow();
        if metrics.current_leader != Some(metrics.id) {
            return Err(BarrierError::NotLeader {
                leader: metrics.current_leader,
            });
        }
        Ok(metrics.current_term)
    }

    fn commit_own_entry(&self) -> BoxFuture<'static, Result<(), BarrierError>> {
        let raft = self.0.clone();
        Box::pin(async move {
            let id = raft.metrics().borrow().id;
            match raft.client_write(CommandBatch(Vec::new())).await {
                Ok(_) => Ok(()),
                Err(error) => Err(BarrierError::NotLeader {
                    leader: error
                        .forward_to_leader()
                        .and_then(|forward| forward.leader_id)
                        .filter(|leader| *leader != id),
                }),
            }
        })
    }

    fn round(&self) -> BoxFuture<'static, Result<(), BarrierError>> {
        let raft = self.0.clone();
        Box::pin(async move {
            match raft.ensure_linearizable().await {
                Ok(_) => Ok(()),
                Err(error) => Err(BarrierError::NotLeader {
                    leader: error
                        .forward_to_leader()
                        .and_then(|forward| forward.leader_id)
                        .or_else(|| raft.metrics().borrow().current_leader),
                }),
            }
        })
    }
}

/// One caller waiting for a round.
struct Waiter {
    /// When the caller asked: the round that answers it must start later.
    asked: Instant,
    reply: oneshot::Sender<Result<Round, BarrierError>>,
}

/// Handle to the barrier task.
#[derive(Clone)]
pub struct ReadBarrier {
    requests: mpsc::UnboundedSender<Waiter>,
    started: Arc<AtomicU64>,
}

impl ReadBarrier {
    /// Start the barrier task for `raft`.
    pub fn spawn(raft: Raft) -> Self {
        Self::spawn_with(RaftQuorum(raft))
    }

    /// Start the barrier task over any [`Quorum`] (tests hold rounds in flight with it).
    pub fn spawn_with(quorum: impl Quorum) -> Self {
        let (requests, receiver) = mpsc::unbounded_channel();
        let started = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(Arc::new(quorum), receiver, started.clone()));
        ReadBarrier { requests, started }
    }

    /// Wait for a quorum round that started after this call, and for the state machine to
    /// apply everything committed before it.
    ///
    /// # Errors
    /// [`BarrierError::NotLeader`] when leadership is not confirmed.
    pub async fn confirm(&self) -> Result<(), BarrierError> {
        self.request().await.map(|_| ())
    }

    /// Join the next round to start *now* (when this is called, not when the future is
    /// first polled), and return its outcome as a future: a caller can go on with other
    /// work, such as reading the next keepalives of its stream, while the round runs.
    /// The [`Round`] answered started after this call.
    pub fn request(&self) -> impl Future<Output = Result<Round, BarrierError>> + Send + 'static {
        let asked = Instant::now();
        let (reply, result) = oneshot::channel();
        let queued = self.requests.send(Waiter { asked, reply }).is_ok();
        async move {
            if !queued {
                return Err(BarrierError::ShuttingDown);
            }
            let round = result.await.unwrap_or(Err(BarrierError::ShuttingDown))?;
            debug_assert!(
                round.started >= asked,
                "answered by a round that started before the caller asked"
            );
            Ok(round)
        }
    }

    /// How many rounds have started so far (successful or not).
    pub fn rounds_started(&self) -> u64 {
        self.started.load(Ordering::SeqCst)
    }
}

async fn run(
    quorum: Arc<dyn Quorum>,
    mut receiver: mpsc::UnboundedReceiver<Waiter>,
    started: Arc<AtomicU64>,
) {
    let slots = Arc::new(Semaphore::new(MAX_ROUNDS_IN_FLIGHT));
    let mut waiting: Vec<Waiter> = Vec::new();
    // The term in which this node (this process) has committed an entry of its own.
    let mut settled_term: Option<u64> = None;
    while receiver.recv_many(&mut waiting, usize::MAX).await > 0 {
        // A free slot: rounds in flight keep running (each in its own task) meanwhile.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Before the first round of a term: rounds in flight keep running, new callers
        // queue, and no round of this term starts until the entry is committed.
        if let Err(error) = settle(&*quorum, &mut settled_term).await {
            for waiter in waiting.drain(..) {
                let _ = waiter.reply.send(Err(error.clone()));
            }
            continue;
        }
        // Everyone who asked until now joins this round: they all asked before it starts.
        while let Ok(waiter) = receiver.try_recv() {
            waiting.push(waiter);
        }
        let callers = std::mem::take(&mut waiting);
        let round_started = Instant::now();
        let number = started.fetch_add(1, Ordering::SeqCst) + 1;
        debug_assert!(callers.iter().all(|waiter| waiter.asked <= round_started));
        // Poll the round once here, so that it is under way (openraft's check sent) without
        // waiting for another task to be scheduled; it goes on in a task of its own.
        let mut round = quorum.round();
        let result = match futures::poll!(&mut round) {
            Poll::Ready(result) => result,
            Poll::Pending => {
                tokio::spawn(async move {
                    let result = round.await;
                    drop(slot);
                    answer(callers, result, number, round_started);
                });
                continue;
            }
        };
        drop(slot);
        answer(callers, result, number, round_started);
    }
}

/// Send the outcome of round `number`, started at `started`, to its callers.
fn answer(callers: Vec<Waiter>, result: Result<(), BarrierError>, number: u64, started: Instant) {
    let result = result.map(|()| Round { number, started });
    for waiter in callers {
        let _ = waiter.reply.send(result.clone());
    }
}

/// Before the first read of a term, commit an (empty) entry of this process's own.
///
/// openraft 0.9 restores a leader that restarts without losing its term as leader at
/// once, with the read index at the first entry it proposed in that term — but the commit
/// index it then knows can be behind entries it committed (and whose results it
/// acknowledged) before the restart. A read served then would miss acknowledged writes
/// (found by the fault harness: a `Verify` after a whole-cluster kill -9 answered from
/// before an acknowledged release). Committing a new entry first brings the commit index,
/// and so the read index, past everything committed earlier.
async fn settle(quorum: &dyn Quorum, settled_term: &mut Option<u64>) -> Result<(), BarrierError> {
    let term = quorum.leading_term()?;
    if *settled_term == Some(term) {
        return Ok(());
    }
    match tokio::time::timeout(SETTLE_TIMEOUT, quorum.commit_own_entry()).await {
        Ok(Ok(())) => {
            *settled_term = Some(term);
            Ok(())
        }
        Ok(Err(error)) => Err(error),
        Err(_elapsed) => Err(BarrierError::NotLeader { leader: None }),
    }
}

/// A [`Quorum`] driven by the test: rounds and the first entry of a term stay in flight
/// until the test ends them.
#[cfg(test)]
pub(crate) mod fake {
    use super::{BarrierError, Quorum};
    use futures::future::BoxFuture;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tokio::sync::oneshot;

    #[derive(Default)]
    struct Inner {
        /// The current term; `None` when this node does not lead.
        term: Option<u64>,
        /// Whether the next own entries wait for [`FakeQuorum::commit_held`].
        hold_commits: bool,
        held_commits: Vec<oneshot::Sender<()>>,
        /// Terms in which an own entry was committed, in order.
        committed: Vec<u64>,
        /// One end per round started, in order; taken when the round is ended.
        rounds: Vec<Option<oneshot::Sender<Result<(), BarrierError>>>>,
        /// A round started in a term without a committed own entry of that term.
        unsettled_round: bool,
    }

    /// The fake quorum; clones share it.
    #[derive(Clone, Default)]
    pub(crate) struct FakeQuorum(Arc<Mutex<Inner>>);

    impl FakeQuorum {
        /// A quorum of which this node leads in `term`.
        pub(crate) fn leading(term: u64) -> FakeQuorum {
            let fake = FakeQuorum::default();
            fake.set_term(Some(term));
            fake
        }

        fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
            self.0.lock().unwrap()
        }

        pub(crate) fn set_term(&self, term: Option<u64>) {
            self.inner().term = term;
        }

        pub(crate) fn hold_commits(&self, hold: bool) {
            self.inner().hold_commits = hold;
        }

        /// Commit the own entries held so far.
        pub(crate) fn commit_held(&self) {
            for commit in self.inner().held_commits.drain(..) {
                let _ = commit.send(());
            }
        }

        /// Terms in which an own entry was committed.
        pub(crate) fn committed(&self) -> Vec<u64> {
            self.inner().committed.clone()
        }

        /// Rounds started so far.
        pub(crate) fn rounds(&self) -> usize {
            self.inner().rounds.len()
        }

        /// Rounds started and not ended.
        pub(crate) fn in_flight(&self) -> usize {
            self.inner().rounds.iter().filter(|r| r.is_some()).count()
        }

        /// The oldest round in flight.
        pub(crate) fn oldest_in_flight(&self) -> Option<usize> {
            self.inner()
                .rounds
                .iter()
                .position(|r| r.is_some())
                .map(|i| i + 1)
        }

        /// Whether a round ever started before the own entry of its term committed.
        pub(crate) fn unsettled_round(&self) -> bool {
            self.inner().unsettled_round
        }

        /// End round `number` (from 1) with `result`.
        pub(crate) fn end(&self, number: usize, result: Result<(), BarrierError>) {
            let end = self.inner().rounds[number - 1]
                .take()
                .expect("round in flight");
            let _ = end.send(result);
        }

        /// Let the other tasks run until `done` holds (panics after a second).
        pub(crate) async fn until(&self, mut done: impl FnMut(&FakeQuorum) -> bool) {
            let wait = async {
                while !done(self) {
                    tokio::task::yield_now().await;
                }
            };
            tokio::time::timeout(Duration::from_secs(1), wait)
                .await
                .expect("condition reached");
        }

        /// Let the other tasks run for a while.
        pub(crate) async fn settle_down(&self) {
            for _ in 0..100 {
                tokio::task::yield_now().await;
            }
        }
    }

    impl Quorum for FakeQuorum {
        fn leading_term(&self) -> Result<u64, BarrierError> {
            self.inner()
                .term
                .ok_or(BarrierError::NotLeader { leader: Some(9) })
        }

        fn commit_own_entry(&self) -> BoxFuture<'static, Result<(), BarrierError>> {
            let fake = self.clone();
            let (commit, committed) = oneshot::channel();
            let held = {
                let mut inner = self.inner();
                if inner.hold_commits {
                    inner.held_commits.push(commit);
                    true
                } else {
                    false
                }
            };
            Box::pin(async move {
                if held {
                    committed.await.map_err(|_| BarrierError::ShuttingDown)?;
                }
                let mut inner = fake.inner();
                let term = inner.term.ok_or(BarrierError::NotLeader { leader: None })?;
                inner.committed.push(term);
                Ok(())
            })
        }

        fn round(&self) -> BoxFuture<'static, Result<(), BarrierError>> {
            let (end, ended) = oneshot::channel();
            {
                let mut inner = self.inner();
                if inner.term.is_none() || inner.committed.last() != inner.term.as_ref() {
                    inner.unsettled_round = true;
                }
                inner.rounds.push(Some(end));
            }
            Box::pin(async move { ended.await.unwrap_or(Err(BarrierError::ShuttingDown)) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeQuorum;
    use super::*;
    use futures::FutureExt;

    /// A barrier over a fake quorum of which this node leads in `term`.
    fn leading(term: u64) -> (FakeQuorum, ReadBarrier) {
        let fake = FakeQuorum::leading(term);
        let barrier = ReadBarrier::spawn_with(fake.clone());
        (fake, barrier)
    }

    #[tokio::test]
    async fn a_caller_never_joins_the_round_in_flight() {
        let (fake, barrier) = leading(1);
        let first = tokio::spawn(barrier.request());
        fake.until(|f| f.rounds() == 1).await;
        // Asked while round 1 runs: round 1 must not answer it.
        let asked = Instant::now();
        let mut second = Box::pin(barrier.request());
        fake.until(|f| f.rounds() == 2).await;
        fake.end(1, Ok(()));
        let first = first.await.unwrap().unwrap();
        assert_eq!(first.number, 1);
        assert!(first.started < asked);
        fake.settle_down().await;
        assert!(
            second.as_mut().now_or_never().is_none(),
            "answered by round 1"
        );
        fake.end(2, Ok(()));
        let second = second.await.unwrap();
        assert_eq!(second.number, 2);
        assert!(second.started >= asked);
        assert_eq!(barrier.rounds_started(), 2);
    }

    #[tokio::test]
    async fn rounds_are_pipelined_up_to_the_limit_then_callers_share_the_next() {
        let (fake, barrier) = leading(1);
        let mut early = Vec::new();
        for n in 1..=MAX_ROUNDS_IN_FLIGHT {
            early.push(tokio::spawn(barrier.request()));
            // Each starts its own round at once, with the earlier ones still in flight.
            fake.until(|f| f.rounds() == n).await;
        }
        assert_eq!(fake.in_flight(), MAX_ROUNDS_IN_FLIGHT);
        // No slot: these wait, and then all join the same next round.
        let asked = Instant::now();
        let late: Vec<_> = (0..50).map(|_| tokio::spawn(barrier.request())).collect();
        fake.settle_down().await;
        assert_eq!(fake.rounds(), MAX_ROUNDS_IN_FLIGHT);
        fake.end(2, Ok(()));
        fake.until(|f| f.rounds() == MAX_ROUNDS_IN_FLIGHT + 1).await;
        fake.settle_down().await;
        assert_eq!(fake.rounds(), MAX_ROUNDS_IN_FLIGHT + 1, "one round for all");
        fake.end(MAX_ROUNDS_IN_FLIGHT + 1, Ok(()));
        for caller in late {
            let round = caller.await.unwrap().unwrap();
            assert_eq!(round.number, MAX_ROUNDS_IN_FLIGHT as u64 + 1);
            assert!(round.started >= asked);
        }
        for n in [1, 3, 4] {
            fake.end(n, Ok(()));
        }
        for (n, caller) in early.into_iter().enumerate() {
            assert_eq!(caller.await.unwrap().unwrap().number, n as u64 + 1);
        }
        assert!(!fake.unsettled_round());
    }

    #[tokio::test]
    async fn a_failed_round_refuses_its_own_callers_only() {
        let (fake, barrier) = leading(1);
        let first = tokio::spawn(barrier.request());
        fake.until(|f| f.rounds() == 1).await;
        let second = tokio::spawn(barrier.request());
        fake.until(|f| f.rounds() == 2).await;
        let lost = BarrierError::NotLeader { leader: Some(2) };
        fake.end(1, Err(lost.clone()));
        fake.end(2, Ok(()));
        assert_eq!(first.await.unwrap(), Err(lost));
        assert_eq!(second.await.unwrap().unwrap().number, 2);
    }

    #[tokio::test]
    async fn no_round_of_a_term_starts_before_an_own_entry_of_that_term_commits() {
        let fake = FakeQuorum::leading(3);
        fake.hold_commits(true);
        let barrier = ReadBarrier::spawn_with(fake.clone());
        let first = tokio::spawn(barrier.request());
        let second = tokio::spawn(barrier.request());
        fake.settle_down().await;
        assert_eq!(
            fake.rounds(),
            0,
            "no round before the term's own entry commits"
        );
        fake.commit_held();
        fake.until(|f| f.rounds() == 1).await;
        assert_eq!(fake.committed(), vec![3]);
        fake.end(1, Ok(()));
        assert_eq!(first.await.unwrap().unwrap().number, 1);
        assert_eq!(second.await.unwrap().unwrap().number, 1);

        // Later rounds of the term write nothing.
        fake.hold_commits(false);
        let third = tokio::spawn(barrier.request());
        fake.until(|f| f.rounds() == 2).await;
        fake.end(2, Ok(()));
        assert_eq!(third.await.unwrap().unwrap().number, 2);
        assert_eq!(fake.committed(), vec![3]);

        // A new term: a round of the old term is still in flight; the new term's first
        // round waits for the new term's own entry.
        let old = tokio::spawn(barrier.request());
        fake.until(|f| f.rounds() == 3).await;
        fake.set_term(Some(4));
        fake.hold_commits(true);
        let new = tokio::spawn(barrier.request());
        fake.settle_down().await;
        assert_eq!(fake.rounds(), 3);
        fake.commit_held();
        fake.until(|f| f.rounds() == 4).await;
        assert_eq!(fake.committed(), vec![3, 4]);
        fake.end(3, Ok(()));
        fake.end(4, Ok(()));
        assert_eq!(old.await.unwrap().unwrap().number, 3);
        assert_eq!(new.await.unwrap().unwrap().number, 4);
        assert!(!fake.unsettled_round());
    }

    #[tokio::test]
    async fn a_follower_refuses_without_a_round() {
        let fake = FakeQuorum::default();
        let barrier = ReadBarrier::spawn_with(fake.clone());
        assert_eq!(
            barrier.confirm().await,
            Err(BarrierError::NotLeader { leader: Some(9) })
        );
        assert_eq!(fake.rounds(), 0);
        assert!(fake.committed().is_empty());
    }

    #[tokio::test]
    async fn a_failed_own_entry_refuses_and_is_tried_again() {
        let fake = FakeQuorum::leading(5);
        fake.hold_commits(true);
        let barrier = ReadBarrier::spawn_with(fake.clone());
        let first = tokio::spawn(barrier.request());
        fake.settle_down().await;
        // The node loses leadership before its entry commits.
        fake.set_term(None);
        fake.commit_held();
        assert!(first.await.unwrap().is_err());
        assert_eq!(fake.rounds(), 0);
        fake.set_term(Some(6));
        fake.hold_commits(false);
        let second = tokio::spawn(barrier.request());
        fake.until(|f| f.rounds() == 1).await;
        fake.end(1, Ok(()));
        assert_eq!(second.await.unwrap().unwrap().number, 1);
        assert_eq!(fake.committed(), vec![6]);
        assert!(!fake.unsettled_round());
    }
}
