//! The write path: one proposer task per node packs queued commands into one Raft entry
//! and keeps at most `max_inflight` entries in flight. openraft 0.9 flushes one
//! `client_write` per log append, so without packing every command would pay its own
//! fsync (DEPENDENCIES.md).
//!
//! Why more than one entry in flight: openraft 0.9 replicates an entry only after the
//! leader's own flush, so a commit is two fsyncs in a row plus a round trip. With a second
//! entry in flight, the leader appends and flushes the next entry while the followers
//! work on the previous one, and a command that arrives during a commit is proposed at
//! once instead of waiting for it (a lock hand-off is a release followed by the next
//! holder's release: with one entry in flight every hand-off waited for an unrelated
//! entry first). Entries are submitted to Raft in the order their batches were packed.
//!
//! Callers get each command's own result back through a oneshot. A write that fails with
//! an unknown outcome (timeout, leadership lost mid-flight) is reported as
//! [`ProposeError::Unavailable`]: the caller must retry with the same request id, which
//! the state machine deduplicates.

use crate::raft::{BatchResult, CommandBatch, NodeId, Raft};
use fencelock_core::{Command, Error as CoreError, Response};
use openraft::error::ClientWriteError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};

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
}

/// The result of one proposed command.
pub type ProposeResult = Result<Result<Response, CoreError>, ProposeError>;

struct Pending {
    command: Command,
    reply: oneshot::Sender<ProposeResult>,
}

/// The proposer's bounds.
#[derive(Clone, Copy, Debug)]
pub struct ProposerLimits {
    /// Commands packed into one entry at most.
    pub max_batch: usize,
    /// Commands waiting to be packed at most (callers beyond it get `Overloaded`).
    pub max_queued: usize,
    /// Entries proposed and not yet answered at most.
    pub max_inflight: usize,
    /// How long an entry may take to commit before its callers get `Unavailable`.
    pub write_timeout: Duration,
}

/// Handle to the proposer task.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Pending>,
    writer: Arc<Writer>,
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
        tokio::spawn(run(Arc::clone(&writer), receiver, limits.max_batch));
        Proposer { queue, writer }
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
    /// caller on the idle path that gives up frees its pipeline slot at once, while its
    /// entry may still be in flight.
    pub async fn propose(&self, command: Command) -> ProposeResult {
        if self.queue.capacity() == self.queue.max_capacity()
            && let Ok(slot) = Arc::clone(&self.writer.inflight).try_acquire_owned()
        {
            let mut results = self.writer.submit(vec![command]).await.await;
            drop(slot);
            return results
                .pop()
                .unwrap_or_else(|| Err(ProposeError::Unavailable("missing result".into())));
        }
        let (reply, result) = oneshot::channel();
        match self.queue.try_send(Pending { command, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(ProposeError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(ProposeError::ShuttingDown),
        }
        result.await.unwrap_or(Err(ProposeError::ShuttingDown))
    }
}

async fn run(writer: Arc<Writer>, mut receiver: mpsc::Receiver<Pending>, max_batch: usize) {
    let max_batch = max_batch.max(1);
    let mut batch: Vec<Pending> = Vec::with_capacity(max_batch);
    loop {
        // Take a pipeline slot before packing: while every slot is busy, commands keep
        // queueing and go out together in the next entry.
        let slot = Arc::clone(&writer.inflight)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        if receiver.recv_many(&mut batch, max_batch).await == 0 {
            return;
        }
        let (commands, replies): (Vec<Command>, Vec<oneshot::Sender<ProposeResult>>) = batch
            .drain(..)
            .map(|pending| (pending.command, pending.reply))
            .unzip();
        // Submitting is ordered (this task awaits each hand-over to Raft's core);
        // waiting for the commit is not.
        let committed = writer.submit(commands).await;
        tokio::spawn(async move {
            for (reply, result) in replies.into_iter().zip(committed.await) {
                let _ = reply.send(result);
            }
            drop(slot);
        });
    }
}

impl Writer {
    /// Hand `commands` to Raft as one entry; the returned future waits for the commit
    /// (at most `write_timeout`) and gives each command's result, in order.
    async fn submit(
        &self,
        commands: Vec<Command>,
    ) -> impl std::future::Future<Output = Vec<ProposeResult>> + Send + 'static {
        let count = commands.len();
        let leader = self.raft.metrics().borrow().current_leader;
        let submitted = if leader == Some(self.node_id) {
            crate::metrics::record_batch(count);
            self.raft
                .client_write_ff(CommandBatch(commands))
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
                    results(count, outcome, write_timeout)
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
fn results(count: usize, outcome: CommitOutcome, write_timeout: Duration) -> Vec<ProposeResult> {
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
