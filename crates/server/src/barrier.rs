//! Linearizable reads and keepalive acknowledgements: the leader confirms with a quorum
//! round (openraft's `ensure_linearizable`, a ReadIndex) that it still leads, and waits
//! until its state machine has applied up to the read index.
//!
//! Rounds are shared: callers that arrive while a round is running wait for the *next*
//! round, which starts after they arrived. So a round covers only callers that arrived
//! before it started — the property keepalives need (DESIGN.md invariant 6).

use crate::raft::{NodeId, Raft};
use tokio::sync::{mpsc, oneshot};

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

/// Handle to the barrier task.
#[derive(Clone)]
pub struct ReadBarrier {
    requests: mpsc::UnboundedSender<oneshot::Sender<Result<(), BarrierError>>>,
}

impl ReadBarrier {
    /// Start the barrier task for `raft`.
    pub fn spawn(raft: Raft) -> Self {
        let (requests, receiver) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, receiver));
        ReadBarrier { requests }
    }

    /// Wait for a quorum round that started after this call, and for the state machine to
    /// apply everything committed before it.
    ///
    /// # Errors
    /// [`BarrierError::NotLeader`] when leadership is not confirmed.
    pub async fn confirm(&self) -> Result<(), BarrierError> {
        let (reply, result) = oneshot::channel();
        self.requests
            .send(reply)
            .map_err(|_| BarrierError::ShuttingDown)?;
        result.await.unwrap_or(Err(BarrierError::ShuttingDown))
    }
}

async fn run(
    raft: Raft,
    mut receiver: mpsc::UnboundedReceiver<oneshot::Sender<Result<(), BarrierError>>>,
) {
    let mut waiting = Vec::new();
    // Every caller drained here arrived before the round below starts.
    while receiver.recv_many(&mut waiting, usize::MAX).await > 0 {
        let result = match raft.ensure_linearizable().await {
            Ok(_) => Ok(()),
            Err(error) => {
                let leader = error
                    .forward_to_leader()
                    .and_then(|forward| forward.leader_id)
                    .or_else(|| raft.metrics().borrow().current_leader);
                Err(BarrierError::NotLeader { leader })
            }
        };
        for reply in waiting.drain(..) {
            let _ = reply.send(result.clone());
        }
    }
}
