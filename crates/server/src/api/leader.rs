//! The leader a "not leader" reply names, resolved by the handler before the reply is
//! built: a leader whose client address this node has not learned yet is asked for it
//! first, so a client is never left to guess, and `status` maps errors without I/O.

use super::status;
use crate::barrier::BarrierError;
use crate::node::Node;
use crate::proposer::ProposeError;
use crate::raft::NodeId;
use crate::raft::membership::MembershipError;
use tonic::Status;

/// Another node that leads, and its client address (empty while unknown).
pub struct Leader {
    /// Its node id.
    pub id: NodeId,
    /// Its client address, or empty.
    pub client_addr: String,
}

/// `leader` with its client address; `None` when no other node is known to lead.
pub async fn resolve(node: &Node, leader: Option<NodeId>) -> Option<Leader> {
    let id = leader.filter(|leader| *leader != node.id())?;
    let client_addr = match node.client_addr_of(id) {
        Some(addr) => addr,
        None => node.learn_client_addr(id).await.unwrap_or_default(),
    };
    Some(Leader { id, client_addr })
}

/// The status of a proposer error.
pub async fn propose_error(node: &Node, error: ProposeError) -> Status {
    let leader = match &error {
        ProposeError::NotLeader { leader } => resolve(node, *leader).await,
        _ => None,
    };
    status::from_propose(node.id(), error, leader)
}

/// The status of a read-barrier error.
pub async fn barrier_error(node: &Node, error: BarrierError) -> Status {
    let leader = match &error {
        BarrierError::NotLeader { leader } => resolve(node, *leader).await,
        BarrierError::ShuttingDown => None,
    };
    status::from_barrier(node.id(), error, leader)
}

/// The status of a membership error.
pub async fn membership_error(node: &Node, error: MembershipError) -> Status {
    let leader = match &error {
        MembershipError::NotLeader { leader } => resolve(node, *leader).await,
        _ => None,
    };
    status::from_membership(node.id(), &error, leader)
}
