//! The write path: one proposer task per node packs queued commands into one Raft entry
//! and keeps one entry in flight. openraft 0.9 flushes one `client_write` per log append,
//! so without packing every command would pay its own fsync (DEPENDENCIES.md).
//!
//! Callers get each command's own result back through a oneshot. A write that fails with
//! an unknown outcome (timeout, leadership lost mid-flight) is reported as
//! [`ProposeError::Unavailable`]: the caller must retry with the same request id, which
//! the state machine deduplicates.

use crate::raft::{CommandBatch, NodeId, Raft};
use fencelock_core::{Command, Error as CoreError, Response};
use openraft::error::{ClientWriteError, RaftError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

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

/// Handle to the proposer task.
#[derive(Clone)]
pub struct Proposer {
    queue: mpsc::Sender<Pending>,
}

impl Proposer {
    /// Start the proposer task for `raft`.
    pub fn spawn(
        raft: Raft,
        node_id: NodeId,
        max_batch: usize,
        max_queued: usize,
        write_timeout: Duration,
    ) -> Self {
        let (queue, receiver) = mpsc::channel(max_queued.max(1));
        tokio::spawn(run(
            raft,
            node_id,
            receiver,
            max_batch.max(1),
            write_timeout,
        ));
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
    max_batch: usize,
    write_timeout: Duration,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(max_batch);
    while receiver.recv_many(&mut batch, max_batch).await > 0 {
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
        let count = commands.len();
        crate::metrics::record_batch(count);
        let outcome =
            tokio::time::timeout(write_timeout, raft.client_write(CommandBatch(commands))).await;
        match outcome {
            Ok(Ok(written)) => {
                let results = written.data.0;
                debug_assert_eq!(results.len(), count, "one result per command");
                let mut results = results.into_iter();
                for reply in replies {
                    let result = results
                        .next()
                        .map(Ok)
                        .unwrap_or_else(|| Err(ProposeError::Unavailable("missing result".into())));
                    let _ = reply.send(result);
                }
            }
            Ok(Err(error)) => {
                let error = classify(error);
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
            Err(_elapsed) => {
                let error = ProposeError::Unavailable(format!(
                    "no commit within {} ms (leader may have lost its quorum)",
                    write_timeout.as_millis()
                ));
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}

fn classify(
    error: RaftError<NodeId, ClientWriteError<NodeId, crate::raft::PeerNode>>,
) -> ProposeError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            // openraft rejects before appending when this node does not lead.
            ProposeError::NotLeader {
                leader: forward.leader_id,
            }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ProposeError::Unavailable(e.to_string())
        }
        RaftError::Fatal(fatal) => ProposeError::Unavailable(fatal.to_string()),
    }
}
