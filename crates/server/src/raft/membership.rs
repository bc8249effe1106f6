//! Run-time membership changes through openraft, with errors of the server's own type,
//! so the API never names an openraft type.

use super::{NodeId, PeerNode, Raft};
use openraft::ChangeMembers;
use openraft::error::{ClientWriteError, RaftError};
use std::collections::BTreeSet;

/// Why a membership change was refused.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// This node does not lead (any more); `leader` is the one it knows, if any.
    #[error("not the leader")]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
    },
    /// openraft refused the change (e.g. one is already in progress).
    #[error("{0}")]
    Refused(String),
    /// Raft stopped.
    #[error("{0}")]
    Fatal(String),
    /// Removing the member would leave no voter.
    #[error("cannot remove the last voter")]
    LastVoter,
}

fn check<T>(
    result: Result<T, RaftError<u64, ClientWriteError<u64, PeerNode>>>,
) -> Result<T, MembershipError> {
    result.map_err(|error| match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
            MembershipError::NotLeader {
                leader: forward.leader_id,
            }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            MembershipError::Refused(e.to_string())
        }
        RaftError::Fatal(e) => MembershipError::Fatal(e.to_string()),
    })
}

fn voters(raft: &Raft) -> BTreeSet<NodeId> {
    raft.metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect()
}

/// Add node `id` at `peer_addr`: caught up as a learner first, so adding it never
/// stalls commits, then made a voter unless `learner_only`.
///
/// # Errors
///
/// As [`MembershipError`].
pub async fn add_member(
    raft: &Raft,
    id: NodeId,
    peer_addr: String,
    learner_only: bool,
) -> Result<(), MembershipError> {
    check(raft.add_learner(id, PeerNode { peer_addr }, true).await)?;
    if !learner_only {
        let mut voters = voters(raft);
        voters.insert(id);
        check(
            raft.change_membership(ChangeMembers::ReplaceAllVoters(voters), false)
                .await,
        )?;
    }
    Ok(())
}

/// Remove node `id`, voter or learner.
///
/// # Errors
///
/// As [`MembershipError`]; [`MembershipError::LastVoter`] for the only voter.
pub async fn remove_member(raft: &Raft, id: NodeId) -> Result<(), MembershipError> {
    let mut voters = voters(raft);
    let change = if voters.remove(&id) {
        if voters.is_empty() {
            return Err(MembershipError::LastVoter);
        }
        ChangeMembers::ReplaceAllVoters(voters)
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    check(raft.change_membership(change, false).await)?;
    Ok(())
}
