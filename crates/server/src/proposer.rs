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
}

impl Proposer {
    /// Start the proposer task for `raft`.
    pub fn spawn(raft: Raft, node_id: NodeId, limits: ProposerLimits) -> Self {
        let (queue, receiver) = mpsc::channel(limits.max_queued.max(1));
        tokio::spawn(run(raft, node_id, receiver, limits));
        Proposer { queue }
    }

    /// Propose `command` and wait for its result.
    ///
    /// # Cancel safety
    /// Dropping the future does not withdraw the command: it may still be applied.
    pub async fn propose(&self, command: Command) -> ProposeResult {
        let (reply, result) = oneshot::channel();
        match self.queue.try_send(Pending { command, reply }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => return Err(ProposeError::Overloaded),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(ProposeError::ShuttingDown),
        }
        result.await.unwrap_or(Err(ProposeError::ShuttingDown))
    }
}

async fn run(
    raft: Raft,
    node_id: NodeId,
    mut receiver: mpsc::Receiver<Pending>,
    limits: ProposerLimits,
) {
    let max_batch = limits.max_batch.max(1);
    let inflight = Arc::new(Semaphore::new(limits.max_inflight.max(1)));
    let mut batch: Vec<Pending> = Vec::with_capacity(max_batch);
    loop {
        // Take a pipeline slot before packing: while every slot is busy, commands keep
        // queueing and go out together in the next entry.
        let slot = Arc::clone(&inflight)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        if receiver.recv_many(&mut batch, max_batch).await == 0 {
            return;
        }
        let leader = raft.metrics().borrow().current_leader;
        if leader != Some(node_id) {
            for pending in batch.drain(..) {
                let _ = pending.reply.send(Err(ProposeError::NotLeader { leader }));
            }
            continue;
        }
        let (commands, replies): (Vec<Command>, Vec<oneshot::Sender<ProposeResult>>) = batch
            .drain(..)
            .map(|pending| (pending.command, pending.reply))
            .unzip();
        crate::metrics::record_batch(commands.len());
        // Submitting is ordered (this task awaits each hand-over to Raft's core);
        // waiting for the commit is not.
        match raft.client_write_ff(CommandBatch(commands)).await {
            Ok(committed) => {
                let write_timeout = limits.write_timeout;
                tokio::spawn(async move {
                    let outcome = tokio::time::timeout(write_timeout, committed).await;
                    answer(replies, outcome, write_timeout);
                    drop(slot);
                });
            }
            Err(fatal) => {
                let error = ProposeError::Unavailable(fatal.to_string());
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
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

/// Send each caller of one entry its own result, or the entry's error.
fn answer(
    replies: Vec<oneshot::Sender<ProposeResult>>,
    outcome: CommitOutcome,
    write_timeout: Duration,
) {
    let error = match outcome {
        Ok(Ok(Ok(written))) => {
            let BatchResult(results) = written.data;
            debug_assert_eq!(results.len(), replies.len(), "one result per command");
            let mut results = results.into_iter();
            for reply in replies {
                let result = results
                    .next()
                    .map(Ok)
                    .unwrap_or_else(|| Err(ProposeError::Unavailable("missing result".into())));
                let _ = reply.send(result);
            }
            return;
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
    for reply in replies {
        let _ = reply.send(Err(error.clone()));
    }
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
