//! Linearizable reads and keepalive acknowledgements: the leader confirms with a quorum
//! round (openraft's `ensure_linearizable`, a ReadIndex) that it still leads, and waits
//! until its state machine has applied up to the read index.
//!
//! Rounds are shared: callers that arrive while a round is running wait for the *next*
//! round, which starts after they arrived. So a round covers only callers that arrived
//! before it started — the property keepalives need (DESIGN.md invariant 6).

use crate::raft::{CommandBatch, NodeId, Raft};
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
    // The term in which this node (this process) has committed an entry of its own.
    let mut settled_term: Option<u64> = None;
    // Every caller drained here arrived before the round below starts.
    while receiver.recv_many(&mut waiting, usize::MAX).await > 0 {
        let result = match settle(&raft, &mut settled_term).await {
            Ok(()) => match raft.ensure_linearizable().await {
                Ok(_) => Ok(()),
                Err(error) => Err(BarrierError::NotLeader {
                    leader: error
                        .forward_to_leader()
                        .and_then(|forward| forward.leader_id)
                        .or_else(|| raft.metrics().borrow().current_leader),
                }),
            },
            Err(error) => Err(error),
        };
        for reply in waiting.drain(..) {
            let _ = reply.send(result.clone());
        }
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
async fn settle(raft: &Raft, settled_term: &mut Option<u64>) -> Result<(), BarrierError> {
    let (term, leader, id) = {
        let metrics = raft.metrics().borrow().clone();
        (metrics.current_term, metrics.current_leader, metrics.id)
    };
    if leader != Some(id) {
        return Err(BarrierError::NotLeader { leader });
    }
    if *settled_term == Some(term) {
        return Ok(());
    }
    let write = raft.client_write(CommandBatch(Vec::new()));
    match tokio::time::timeout(SETTLE_TIMEOUT, write).await {
        Ok(Ok(_)) => {
            *settled_term = Some(term);
            Ok(())
        }
        Ok(Err(error)) => Err(BarrierError::NotLeader {
            leader: error
                .forward_to_leader()
                .and_then(|forward| forward.leader_id)
                .filter(|leader| *leader != id),
        }),
        Err(_elapsed) => Err(BarrierError::NotLeader { leader: None }),
    }
}

/// How long the first write of a term may take before reads are refused.
const SETTLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
