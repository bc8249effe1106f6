//! The `Cluster` gRPC service: status and run-time membership changes.

use super::status::{from_propose, invalid_argument, reason};
use crate::auth::Authenticator;
use crate::node::Node;
use crate::proposer::ProposeError;
use crate::raft::PeerNode;
use fencelock_proto::v1 as pb;
use fencelock_proto::v1::cluster_server::Cluster;
use openraft::ChangeMembers;
use openraft::error::{ClientWriteError, RaftError};
use std::collections::BTreeSet;
use std::sync::Arc;
use tonic::{Request, Status};

/// The `Cluster` service of one node.
pub struct ClusterService {
    node: Arc<Node>,
    auth: Authenticator,
}

impl ClusterService {
    /// Serve `node`.
    pub fn new(node: Arc<Node>) -> Self {
        ClusterService {
            auth: Authenticator::new(node.shared().clone()),
            node,
        }
    }

    async fn require_leader(&self) -> Result<(), Status> {
        let leader = self.node.leader();
        if leader != Some(self.node.id()) {
            return Err(from_propose(&self.node, ProposeError::NotLeader { leader }).await);
        }
        Ok(())
    }

    async fn check<T>(
        &self,
        result: Result<T, RaftError<u64, ClientWriteError<u64, PeerNode>>>,
    ) -> Result<T, Status> {
        let error = match result {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        Err(match error {
            RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
                from_propose(
                    &self.node,
                    ProposeError::NotLeader {
                        leader: forward.leader_id,
                    },
                )
                .await
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => reason(
                tonic::Code::FailedPrecondition,
                pb::ErrorReason::Membership,
                e.to_string(),
            ),
            RaftError::Fatal(e) => reason(
                tonic::Code::Unavailable,
                pb::ErrorReason::Unavailable,
                e.to_string(),
            ),
        })
    }

    fn members(&self) -> Vec<pb::Member> {
        self.node
            .status()
            .members
            .into_iter()
            .map(|m| pb::Member {
                id: m.id,
                peer_addr: m.peer_addr,
                client_addr: m.client_addr.unwrap_or_default(),
                voter: m.voter,
            })
            .collect()
    }

    fn voters(&self) -> BTreeSet<u64> {
        self.node
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<tonic::Response<pb::StatusResponse>, Status> {
        self.auth.authenticate(request.metadata()).await?;
        let status = self.node.status();
        Ok(tonic::Response::new(pb::StatusResponse {
            node_id: status.node_id,
            leader_id: status.leader_id.unwrap_or(0),
            leader_addr: status.leader_client_addr.clone().unwrap_or_default(),
            term: status.term,
            commit_index: status.commit_index,
            applied_index: status.applied_index,
            members: self.members(),
            state: status.state,
            sessions: status.sessions,
            locks: status.locks,
            last_token: status.last_token,
        }))
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<tonic::Response<pb::AddMemberResponse>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        self.auth.require_superuser(&caller)?;
        let request = request.into_inner();
        if request.id == 0 {
            return Err(invalid_argument("member id must be >= 1"));
        }
        if request.peer_addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid_argument(format!(
                "peer address {:?} is not host:port",
                request.peer_addr
            )));
        }
        self.require_leader().await?;
        let node = PeerNode {
            peer_addr: request.peer_addr.clone(),
        };
        // Catch the new node up as a learner first, so adding it never stalls commits.
        let result = self.node.raft().add_learner(request.id, node, true).await;
        self.check(result).await?;
        if !request.learner_only {
            let mut voters = self.voters();
            voters.insert(request.id);
            let result = self
                .node
                .raft()
                .change_membership(ChangeMembers::ReplaceAllVoters(voters), false)
                .await;
            self.check(result).await?;
        }
        tracing::info!(id = request.id, peer = %request.peer_addr, learner_only = request.learner_only, "member added");
        let _ = self.node.learn_client_addr(request.id).await;
        Ok(tonic::Response::new(pb::AddMemberResponse {
            members: self.members(),
        }))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<tonic::Response<pb::RemoveMemberResponse>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        self.auth.require_superuser(&caller)?;
        let id = request.into_inner().id;
        self.require_leader().await?;
        let mut voters = self.voters();
        let change = if voters.remove(&id) {
            if voters.is_empty() {
                return Err(invalid_argument("cannot remove the last voter"));
            }
            ChangeMembers::ReplaceAllVoters(voters)
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let result = self.node.raft().change_membership(change, false).await;
        self.check(result).await?;
        tracing::info!(id, "member removed");
        Ok(tonic::Response::new(pb::RemoveMemberResponse {
            members: self.members(),
        }))
    }
}
