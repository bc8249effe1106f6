//! The write path: one proposer task per node packs queued commands into one Raft entry
//! and keeps at most `max_inflight` entries in flight. openraft 0.9 flushes one
//! `client_write` per log append, so without packing every command would pay its own
//! fsync (docs/dependencies.md).
//!
//! How many entries in flight (`max_inflight`, 1 by default): openraft 0.9 replicates an
//! entry only after the leader's own flush, so a second entry in flight lets the leader
//! flush the next entry while the followers work on the previous one. Where nodes share
//! cores (the benchmark: 3 nodes and their client on 2) one is better: under load what
//! arrives during a commit goes out together in the next entry, and fewer, larger entries
//! cost less CPU per command; a lock hand-off is one entry either way (the next holder's
//! release carries the former holder's re-acquire, below). A node with cores to spare may
//! do better with 2. Entries are submitted to Raft in the order their batches were
//! packed (with 2 or more in flight, an idle-path entry that carries held-back commands
//! is submitted by a task of its own, and may go after one packed just after it). The proposer task takes a slot only once it has work, so a write that finds
//! nothing queued and a slot free goes to Raft from its caller's task.
//!
//! An acquire that will queue behind a holder (the caller says so: see
//! [`Proposer::propose_waiting`]) is held back for up to `waiting_acquire_delay`, so that
//! it rides in the next entry proposed for any other reason instead of taking an entry,
//! an append and a replication round of its own. Its answer only says "queued", and the
//! wait that follows is long compared to the delay; but a hand-off is on the critical
//! path. Under contention a released lock's former holder asks again at the moment its
//! successor finishes and releases; as two entries, the release (which grants the next
//! waiter) waited for the re-acquire's append and replication first. The delay is a
//! scheduling hint, never a decision: the entry decides when it is applied, so a
//! predicted queue that has emptied meanwhile is granted as usual.
//!
//! Callers get each command's own result back through a oneshot. A write that fails with
//! an unknown outcome (timeout, leadership lost mid-flight) is reported as
//! [`ProposeError::Unavailable`]: the caller must retry with the same request id, which
//! the state machine deduplicates.

use crate::raft::{AppliedCommand, BatchResult, CommandBatch, NodeId, Raft};
use crate::space::DiskSpace;
use fencelock_core::{Command, Error as CoreError, Response};
use openraft::error::ClientWriteError;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

/// Why a command was not applied (or may not have been).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node does not lead; `leader` is the leader if known. Nothing was proposed.
    #[error("not the leader")]
    NotLeader {
        /// The known leader.
        leader: Option<NodeId>,
    },
    /// The outcome is unknown: it may or may not be applied.
    #[error("outcome unknown: {0}")]
    Unavailable(String),
    /// The proposer's queue is full; nothing was proposed.
    #[error("too many queued commands")]
    Overloaded,
    /// The node is shutting down.
    #[error("node is shutting down")]
    ShuttingDown,
    /// This leader's NO_SPACE alarm is up (its data disk is full) and the command adds
    /// state; nothing was proposed. The text says why.
    #[error("no space on the data disk: {0}")]
    NoSpace(String),
    /// The command needs a cluster version above the one in force (see
    /// `fencelock_core::version`); nothing was proposed.
    #[error("the command needs cluster version {needs}; the cluster is at {cluster}")]
    UnsupportedByCluster {
        /// The version that introduced the command.
        needs: u32,
        /// The cluster version in force on this node.
        cluster: u32,
    },
}

/// Reads the cluster version in force (the applied state's).
pub type ClusterVersionSource = Arc<dyn Fn() -> u32 + Send + Sync>;

/// The result of one proposed command.
pub type ProposeResult = Result<Result<Response, CoreError>, ProposeError>;

/// The result of one proposed command, with what was read beside it when applied.
pub type ProposeAnswer = Result<AppliedCommand, ProposeError>;

struct Pending {
    command: Command,
    reply: oneshot::Sender<ProposeAnswer>,
    /// Commands go into an entry in the order they arrived (queued and held-back ones
    /// are merged by it), so waits queue first come, first served.
    arrived: Instant,
}

impl Pending {
    fn new(command: Command) -> (Pending, oneshot::Receiver<ProposeAnswer>) {
        let (reply, result) = oneshot::channel();
        let arrived = Instant::now();
        (
            Pending {
                command,
                reply,
                arrived,
            },
            result,
        )
    }
}

/// The proposer's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProposerLimits {
    /// Commands packed into one entry at most.
    pub max_batch: usize,
    /// Commands waiting to be packed at most (callers beyond it get `Overloaded`).
    pub max_queued: usize,
    /// Entries proposed and not yet answered at most.
    pub max_inflight: usize,
    /// How long an entry may take to commit before its callers get `Unavailable`.
    pub write_timeout: Duration,
    /// How long an acquire that will queue may wait for another write to share its
    /// entry (zero: never held back).
    pub waiting_acquire_delay: Duration,
}

impl Default for ProposerLimits {
    fn default() -> Self {
        ProposerLimits {
            max_batch: 1_024,
            max_queued: 100_000,
            max_inflight: 1,
            write_timeout: Duration::from_secs(5),
            waiting_acquire_delay: Duration::from_millis(2),
        }
    }
}

/// Handle to the proposer task.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Pending>,
    writer: Arc<Writer>,
    held: Arc<HeldBack>,
    /// While its alarm is up, writes that add state are refused (see
    /// [`Proposer::refuse_writes_without_space`]).
    space: Option<Arc<DiskSpace>>,
    /// Commands the cluster version does not allow are refused (see
    /// [`Proposer::gate_by_cluster_version`]).
    cluster_version: Option<ClusterVersionSource>,
}

/// Acquires held back to ride in the next entry (see the module docs), shared by the
/// proposer task (which proposes them when their delay is up) and idle-path callers
/// (which take them along).
struct HeldBack {
    /// Oldest first; a command waits its delay from when it arrived.
    pending: Mutex<Vec<Pending>>,
    /// Wakes the proposer task when the first command is held back.
    arrived: Notify,
    delay: Duration,
    /// Commands held back at most; beyond it an acquire is proposed as usual.
    max: usize,
}

impl HeldBack {
    /// Hold `pending` back, or give it back when holding is off or full.
    fn hold(&self, pending: Pending) -> Option<Pending> {
        if self.delay.is_zero() {
            return Some(pending);
        }
        let mut held = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if held.len() >= self.max {
            return Some(pending);
        }
        if held.is_empty() {
            self.arrived.notify_one();
        }
        held.push(pending);
        None
    }

    /// Everything held back, oldest first, up to `limit` commands.
    fn take(&self, limit: usize) -> Vec<Pending> {
        let mut held = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if held.len() <= limit {
            return std::mem::take(&mut *held);
        }
        // The rest are overdue too and go in the next entry.
        let rest = held.split_off(limit);
        std::mem::replace(&mut *held, rest)
    }

    /// Returns once the oldest held-back command has waited its delay.
    async fn due(&self) {
        loop {
            // Registered before the state is read: a `notify_one` in between is kept.
            let arrived = self.arrived.notified();
            let oldest = self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .first()
                .map(|pending| pending.arrived);
            match oldest {
                Some(oldest) if oldest + self.delay <= Instant::now() => return,
                Some(oldest) => tokio::time::sleep_until(oldest + self.delay).await,
                None => arrived.await,
            }
        }
    }
}

/// What submitting an entry needs, shared by the proposer task and idle-path callers.
struct Writer {
    raft: Raft,
    node_id: NodeId,
    /// One permit per entry in flight (`max_inflight`).
    inflight: Arc<Semaphore>,
    write_timeout: Duration,
}

impl Proposer {
    /// Start the proposer task for `raft`.
    pub fn spawn(raft: Raft, node_id: NodeId, limits: ProposerLimits) -> Self {
        let (queue, receiver) = mpsc::channel(limits.max_queued.max(1));
        let writer = Arc::new(Writer {
            raft,
            node_id,
            inflight: Arc::new(Semaphore::new(limits.max_inflight.max(1))),
            write_timeout: limits.write_timeout,
        });
        let max_batch = limits.max_batch.max(1);
        let held = Arc::new(HeldBack {
            pending: Mutex::default(),
            arrived: Notify::new(),
            delay: limits.waiting_acquire_delay,
            // An idle-path caller adds its own command to what it takes along.
            max: max_batch - 1,
        });
        tokio::spawn(run(
            Arc::clone(&writer),
            Arc::clone(&held),
            receiver,
            max_batch,
        ));
        Proposer {
            queue,
            writer,
            held,
            space: None,
            cluster_version: None,
        }
    }

    /// Refuse (as [`ProposeError::UnsupportedByCluster`]) every command whose
    /// `Command::introduced_in` is above the cluster version `version` reads, so that a
    /// command reaches the log only once every member's build decodes it (a rolling
    /// upgrade; `fencelock_core::version` holds the table).
    pub fn gate_by_cluster_version(mut self, version: ClusterVersionSource) -> Self {
        self.cluster_version = Some(version);
        self
    }

    /// While `space`'s NO_SPACE alarm is up, refuse (as [`ProposeError::NoSpace`]) every
    /// command that adds state when this node leads, as etcd's NOSPACE alarm does.
    /// Commands that only free state (release, close, cancel a wait, expiry, forced
    /// release, revocation) still pass: they may be what frees the disk's owner from
    /// waiting, and each is a small entry that the preallocated write-ahead file takes
    /// without asking the disk for space.
    pub fn refuse_writes_without_space(mut self, space: Arc<DiskSpace>) -> Self {
        self.space = Some(space);
        self
    }

    /// Why `command` is refused right now, if it is.
    fn refusal(&self, command: &Command) -> Option<ProposeError> {
        let needs = command.introduced_in();
        // Everything of the first version passes without a look at the state.
        if needs > fencelock_core::version::INITIAL_CLUSTER_VERSION
            && let Some(version) = &self.cluster_version
        {
            let cluster = version();
            if !command.allowed_at(cluster) {
                return Some(ProposeError::UnsupportedByCluster { needs, cluster });
            }
        }
        let space = self.space.as_ref()?;
        if !space.alarm() || frees_state(command) {
            return None;
        }
        let leader = self.writer.raft.metrics().borrow().current_leader;
        if leader != Some(self.writer.node_id) {
            // A follower's own disk does not decide: the leader's answer (a redirect) does.
            return None;
        }
        Some(ProposeError::NoSpace(
            space
                .status()
                .reason
                .unwrap_or_else(|| "the NO_SPACE alarm is up".to_owned()),
        ))
    }

    /// Propose `command` and wait for its result.
    ///
    /// When nothing is queued and a pipeline slot is free (the proposer task itself
    /// waits on the queue holding another), the command goes to Raft as an entry of its
    /// own from the caller's task: a lone write then skips two task hand-overs (to the
    /// proposer task, and back through a reply channel). Otherwise it queues and is packed.
    ///
    /// # Cancel safety
    /// Dropping the future does not withdraw the command: it may still be applied. A
    /// lone caller on the idle path that gives up frees its pipeline slot at once, while
    /// its entry may still be in flight. Held-back commands that ride in its entry are
    /// answered whether or not it stays: that entry is submitted and awaited by a task.
    pub async fn propose(&self, command: Command) -> ProposeResult {
        self.propose_applied(command)
            .await
            .map(|applied| applied.result)
    }

    /// [`Proposer::propose`], with what the applying node read beside the result.
    pub async fn propose_applied(&self, command: Command) -> ProposeAnswer {
        if let Some(refusal) = self.refusal(&command) {
            return Err(refusal);
        }
        if self.queue.capacity() == self.queue.max_capacity()
            && let Ok(slot) = Arc::clone(&self.writer.inflight).try_acquire_owned()
        {
            // Held-back acquires ride along, ahead of this command (they came first).
            let riders = self.held.take(usize::MAX);
            if riders.is_empty() {
                let mut results = self.writer.submit(vec![command]).await.await;
                drop(slot);
                return results
                    .pop()
                    .unwrap_or_else(|| Err(ProposeError::Unavailable("missing result".into())));
            }
            // Their answers must not depend on this caller: its RPC may be cancelled
            // (the future dropped) while the entry commits, and the riders would be told
            // nothing. A task of its own submits the entry and answers everyone.
            let (own, result) = Pending::new(command);
            let (commands, replies) = unzip(riders.into_iter().chain([own]).collect());
            let writer = Arc::clone(&self.writer);
            tokio::spawn(async move {
                let results = writer.submit(commands).await.await;
                drop(slot);
                answer(replies, results);
            });
            return result.await.unwrap_or(Err(ProposeError::ShuttingDown));
        }
        let (pending, result) = Pending::new(command);
        match self.queue.try_send(pending) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(ProposeError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(ProposeError::ShuttingDown),
        }
        result.await.unwrap_or(Err(ProposeError::ShuttingDown))
    }

    /// Propose an acquire that the caller expects to queue behind a holder (the
    /// applied state says the lock is held in a conflicting mode or has waiters). It
    /// waits up to `waiting_acquire_delay` for another write to share its entry; the
    /// result is the same as from [`Proposer::propose_applied`].
    pub async fn propose_waiting(&self, command: Command) -> ProposeAnswer {
        if let Some(refusal) = self.refusal(&command) {
            return Err(refusal);
        }
        let (pending, result) = Pending::new(command);
        match self.held.hold(pending) {
            None => result.await.unwrap_or(Err(ProposeError::ShuttingDown)),
            Some(pending) => self.propose_applied(pending.command).await,
        }
    }
}

/// Whether `command` only takes state away (so it may pass the NO_SPACE alarm). A
/// wrapper is judged by what it wraps: the caller it names adds nothing, and a request
/// id's remembered answer is bounded by `max_remembered_requests`.
fn frees_state(command: &Command) -> bool {
    match command {
        Command::Authorized { command, .. }
        | Command::Once { command, .. }
        | Command::Owned { command, .. } => frees_state(command),
        other => matches!(
            other,
            Command::CloseSession { .. }
                | Command::EndLockDelay { .. }
                | Command::Release { .. }
                | Command::CancelWait { .. }
                | Command::ExpireSessions { .. }
                | Command::ForceRelease { .. }
                | Command::RevokeSession { .. }
        ),
    }
}

fn unzip(pending: Vec<Pending>) -> (Vec<Command>, Vec<oneshot::Sender<ProposeAnswer>>) {
    pending
        .into_iter()
        .map(|pending| (pending.command, pending.reply))
        .unzip()
}

/// Give each caller its command's result, in order.
fn answer(replies: Vec<oneshot::Sender<ProposeAnswer>>, results: Vec<ProposeAnswer>) {
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(result);
    }
}

async fn run(
    writer: Arc<Writer>,
    held: Arc<HeldBack>,
    mut receiver: mpsc::Receiver<Pending>,
    max_batch: usize,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(max_batch);
    loop {
        // Wait for work: a queued command, or a held-back one whose delay is up. No
        // pipeline slot is held meanwhile, so a lone write can take the idle path.
        tokio::select! {
            // Cancel safe: when the other branch wins, nothing was received.
            received = receiver.recv_many(&mut batch, max_batch) => {
                if received == 0 {
                    // Every handle is gone, so no caller waits on a held-back command.
                    return;
                }
            }
            () = held.due() => {}
        }
        // While every slot is busy, commands keep queueing and join this entry.
        let slot = Arc::clone(&writer.inflight)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        while batch.len() < max_batch {
            match receiver.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        let mut pending = held.take(max_batch - batch.len());
        pending.append(&mut batch);
        // Both parts are in arrival order: the stable sort only merges them.
        pending.sort_by_key(|pending| pending.arrived);
        if pending.is_empty() {
            // An idle-path caller took the held-back commands first.
            continue;
        }
        let (commands, replies) = unzip(pending);
        // Submitting is ordered (this task awaits each hand-over to Raft's core);
        // waiting for the commit is not.
        let committed = writer.submit(commands).await;
        tokio::spawn(async move {
            answer(replies, committed.await);
            drop(slot);
        });
    }
}

/// This node's wall clock in ms since the Unix epoch (0 if it is set before 1970).
pub(crate) fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

impl Writer {
    /// Hand `commands` to Raft as one entry; the returned future waits for the commit
    /// (at most `write_timeout`) and gives each command's result, in order.
    ///
    /// The entry starts with a `WallClock` of this leader's clock: time enters the state
    /// machine only as data, and the grants and waits of the entry are stamped with it
    /// (the state keeps the largest value seen, so a clock stepped back changes nothing).
    async fn submit(
        &self,
        commands: Vec<Command>,
    ) -> impl std::future::Future<Output = Vec<ProposeAnswer>> + Send + 'static {
        let count = commands.len();
        let leader = self.raft.metrics().borrow().current_leader;
        let submitted = if leader == Some(self.node_id) {
            crate::metrics::record_batch(count);
            let mut entry = Vec::with_capacity(count + 1);
            entry.push(Command::WallClock {
                unix_ms: wall_clock_ms(),
            });
            entry.extend(commands);
            self.raft
                .client_write_ff(CommandBatch(entry))
                .await
                .map_err(|fatal| ProposeError::Unavailable(fatal.to_string()))
        } else {
            Err(ProposeError::NotLeader { leader })
        };
        let write_timeout = self.write_timeout;
        async move {
            match submitted {
                Ok(committed) => {
                    let outcome = tokio::time::timeout(write_timeout, committed).await;
                    let mut results = results(count + 1, outcome, write_timeout);
                    // The leading `WallClock`'s own result is nobody's.
                    let _clock = results.remove(0);
                    results
                }
                Err(error) => vec![Err(error); count],
            }
        }
    }
}

type CommitOutcome = Result<
    Result<
        Result<
            openraft::raft::ClientWriteResponse<crate::raft::TypeConfig>,
            ClientWriteError<NodeId, crate::raft::PeerNode>,
        >,
        tokio::sync::oneshot::error::RecvError,
    >,
    tokio::time::error::Elapsed,
>;

/// Each of the `count` commands of one entry: its own result, or the entry's error.
fn results(count: usize, outcome: CommitOutcome, write_timeout: Duration) -> Vec<ProposeAnswer> {
    let error = match outcome {
        Ok(Ok(Ok(written))) => {
            let BatchResult(results) = written.data;
            debug_assert_eq!(results.len(), count, "one result per command");
            let mut results = results.into_iter();
            return (0..count)
                .map(|_| {
                    results
                        .next()
                        .map(Ok)
                        .unwrap_or_else(|| Err(ProposeError::Unavailable("missing result".into())))
                })
                .collect();
        }
        Ok(Ok(Err(error))) => classify(error),
        Ok(Err(_closed)) => {
            ProposeError::Unavailable("Raft stopped before the entry was answered".into())
        }
        Err(_elapsed) => ProposeError::Unavailable(format!(
            "no commit within {} ms (leader may have lost its quorum)",
            write_timeout.as_millis()
        )),
    };
    vec![Err(error); count]
}

fn classify(error: ClientWriteError<NodeId, crate::raft::PeerNode>) -> ProposeError {
    match error {
        ClientWriteError::ForwardToLeader(forward) => {
            // openraft rejects before appending when this node does not lead.
            ProposeError::NotLeader {
                leader: forward.leader_id,
            }
        }
        ClientWriteError::ChangeMembershipError(e) => ProposeError::Unavailable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestCluster, fast};
    use fencelock_core::ClientId;

    fn open(client: u128) -> Command {
        Command::OpenSession {
            client_id: ClientId(client),
            ttl_ms: 60_000,
        }
    }

    /// Each entry starts with the leader's wall clock, which the state keeps, and each
    /// caller still gets its own command's answer (not the clock's).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_entry_carries_the_leader_s_wall_clock() {
        let cluster = TestCluster::start_with(1, fast).await;
        let leader = cluster.leader().await;
        let node = cluster.running(leader).node();
        let before = wall_clock_ms();
        let answer = node.proposer().propose(open(1)).await;
        assert!(
            matches!(answer, Ok(Ok(Response::SessionOpened { .. }))),
            "{answer:?}"
        );
        let clock = node.shared().read(|applied| applied.state.clock_ms());
        assert!(
            (before..=wall_clock_ms()).contains(&clock),
            "clock {clock}, proposed after {before}"
        );
        cluster.shutdown().await;
    }

    /// A held-back command rides in the entry of a caller whose future is dropped right
    /// after submitting (its RPC was cancelled): the rider still gets its answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_rider_is_answered_when_the_carrying_caller_goes_away() {
        let cluster = TestCluster::start_with(1, |config| {
            fast(config);
            // Long enough that the proposer task does not propose the rider itself.
            config.write_path.waiting_acquire_delay = Duration::from_secs(1);
        })
        .await;
        let leader = cluster.leader().await;
        let proposer = cluster.running(leader).node().proposer().clone();
        // The idle path is free: an ordinary write goes through.
        assert!(matches!(proposer.propose(open(1)).await, Ok(Ok(_))));

        let rider = tokio::spawn({
            let proposer = proposer.clone();
            async move { proposer.propose_waiting(open(2)).await }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        // Held back, and the idle path free (no background write of the node in flight).
        while proposer.held.pending.lock().unwrap().is_empty()
            || proposer.writer.inflight.available_permits() == 0
            || proposer.queue.capacity() != proposer.queue.max_capacity()
        {
            assert!(Instant::now() < deadline, "the command was never held back");
            tokio::task::yield_now().await;
        }
        // Hold the applied state's lock so the entry cannot be applied (and answered)
        // while its caller is still there.
        let (locked, unlock) = {
            let (locked_tx, locked) = std::sync::mpsc::channel();
            let (unlock, unlock_rx) = std::sync::mpsc::channel::<()>();
            let shared = Arc::clone(cluster.running(leader).node().shared());
            std::thread::spawn(move || {
                shared.read(|_| {
                    let _ = locked_tx.send(());
                    let _ = unlock_rx.recv();
                });
            });
            (locked, unlock)
        };
        locked.recv().expect("the applied state is locked");
        // One poll takes the rider along and submits; then the caller is gone.
        let carrier = proposer.propose(open(3));
        let polled = tokio::time::timeout(Duration::ZERO, carrier).await;
        assert!(polled.is_err(), "the entry cannot have been answered yet");
        assert!(
            proposer.held.pending.lock().unwrap().is_empty(),
            "taken along"
        );
        drop(unlock);

        let answer = tokio::time::timeout(Duration::from_secs(30), rider)
            .await
            .expect("the rider is answered")
            .expect("the rider's task");
        assert!(
            matches!(
                answer,
                Ok(AppliedCommand {
                    result: Ok(Response::SessionOpened { .. }),
                    session_ttl_ms: Some(60_000),
                })
            ),
            "{answer:?}"
        );
        cluster.shutdown().await;
    }
}
