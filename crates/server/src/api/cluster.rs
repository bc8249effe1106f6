//! The `Cluster` gRPC service: status, run-time membership changes, and backups
//! (`SaveSnapshot`, in `api/backup.rs`).

use super::leader::membership_error;
use super::status::invalid_argument;
use crate::auth::Authenticator;
use crate::node::Node;
use crate::raft::membership::{self, MembershipError};
use fencelock_proto::v1 as pb;
use fencelock_proto::v1::cluster_server::Cluster;
use std::sync::Arc;
use tonic::{Request, Status};

/// `host:port` with a port >= 1: an IP address, or a DNS name (as Kubernetes gives the
/// pods of a StatefulSet), which the peer links resolve when they connect.
fn is_host_port(addr: &str) -> bool {
    if addr.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    let port_ok = port.parse::<u16>().is_ok_and(|port| port > 0);
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    port_ok && host_ok
}

/// The `Cluster` service of one node.
pub struct ClusterService {
    node: Arc<Node>,
    auth: Authenticator,
}

impl ClusterService {
    /// Serve `node`.
    pub fn new(node: Arc<Node>) -> Self {
        ClusterService {
            auth: super::authenticator(&node),
            node,
        }
    }

    async fn require_leader(&self) -> Result<(), Status> {
        let leader = self.node.leader();
        if leader != Some(self.node.id()) {
            return Err(self.error(MembershipError::NotLeader { leader }).await);
        }
        Ok(())
    }

    async fn error(&self, error: MembershipError) -> Status {
        membership_error(&self.node, error).await
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
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    type SaveSnapshotStream = super::backup::ChunkStream;

    async fn save_snapshot(
        &self,
        request: Request<pb::SaveSnapshotRequest>,
    ) -> Result<tonic::Response<Self::SaveSnapshotStream>, Status> {
        super::backup::save_snapshot(&self.node, &self.auth, request.metadata())
            .await
            .map(tonic::Response::new)
    }

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
            cluster_version: status.cluster_version,
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
        if !is_host_port(&request.peer_addr) {
            return Err(invalid_argument(format!(
                "peer address {:?} is not host:port",
                request.peer_addr
            )));
        }
        self.require_leader().await?;
        let added = membership::add_member(
            self.node.raft(),
            request.id,
            request.peer_addr.clone(),
            request.learner_only,
        )
        .await;
        if let Err(error) = added {
            return Err(self.error(error).await);
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
        if let Err(error) = membership::remove_member(self.node.raft(), id).await {
            return Err(self.error(error).await);
        }
        tracing::info!(id, "member removed");
        Ok(tonic::Response::new(pb::RemoveMemberResponse {
            members: self.members(),
        }))
    }
}
