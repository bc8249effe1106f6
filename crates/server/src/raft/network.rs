//! openraft's network: Raft messages to peers over links ([`super::link`]), and the
//! peer gRPC service (`peer.proto`) that tells peers a node's client address.
//!
//! openraft's requests and results travel postcard-encoded. Connections are shared by
//! every openraft network client of a node (openraft asks for a new client per
//! replication stream and per election): links through a [`LinkPool`], gRPC through one
//! lazily connected tonic channel per peer address.

use crate::commit_trace::{CommitTrace, Point};
use crate::raft::link::{FrameKind, LinkClientTls, LinkError, LinkPool, encode_frame};
use crate::raft::{NodeId, PeerNode, TypeConfig};
use fencelock_proto::peer::peer_client::PeerClient;
use fencelock_proto::peer::peer_server::Peer;
use fencelock_proto::peer::{
    NodeInfoRequest, NodeInfoResponse, ReadIndexRequest, ReadIndexResponse,
};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
#[cfg(feature = "test-support")]
use std::collections::BTreeSet;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Shared, lazily connected channels to peers, keyed by peer address; plaintext, or
/// mutual TLS when made with TLS settings.
#[derive(Clone)]
pub struct PeerChannels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    #[cfg(feature = "test-support")]
    blocked: Arc<Mutex<BTreeSet<NodeId>>>,
    tls: Option<ClientTlsConfig>,
    links: LinkPool,
    /// Where the leader marks the AppendEntries it sends and their replies.
    trace: CommitTrace,
}

impl PeerChannels {
    /// Channels and links that speak TLS with `tls` and `link_tls` (this node's
    /// certificate and the cluster CA), or plaintext when `None`; Raft messages of at
    /// most `max_message_bytes`.
    pub fn new(
        tls: Option<ClientTlsConfig>,
        link_tls: Option<LinkClientTls>,
        max_message_bytes: usize,
    ) -> PeerChannels {
        PeerChannels {
            channels: Arc::default(),
            #[cfg(feature = "test-support")]
            blocked: Arc::default(),
            tls,
            links: LinkPool::new(link_tls, max_message_bytes),
            trace: CommitTrace::off(),
        }
    }

    /// Mark the AppendEntries sent over these channels' links on `trace`.
    #[must_use]
    pub fn with_commit_trace(mut self, trace: CommitTrace) -> PeerChannels {
        self.trace = trace;
        self
    }

    /// Raft links that name cluster `id` (`raft::link`); `None`: a cluster without one.
    #[must_use]
    pub fn with_cluster_id(mut self, id: Option<super::link::ClusterId>) -> PeerChannels {
        self.links = self.links.with_cluster_id(id);
        self
    }

    /// Raft links that offer the protocol versions `versions` (`raft::link`).
    #[must_use]
    pub fn with_versions(mut self, versions: super::link::VersionRange) -> PeerChannels {
        self.links = self.links.with_versions(versions);
        self
    }

    /// The protocol versions the node at `peer_addr` said it speaks when a Raft link to
    /// it was last opened (`None`: none opened yet).
    pub fn peer_versions(&self, peer_addr: &str) -> Option<super::link::VersionRange> {
        self.links.peer_versions(peer_addr)
    }

    /// Fault injection for in-process tests (`test-support` builds only): Raft messages
    /// from this node to any of `targets` fail as unreachable until the set is changed.
    /// Cut both directions (on both nodes) to model a partition.
    #[cfg(feature = "test-support")]
    pub fn set_blocked(&self, targets: BTreeSet<NodeId>) {
        *self.blocked.lock().unwrap_or_else(|e| e.into_inner()) = targets;
    }

    #[cfg(feature = "test-support")]
    fn is_blocked(&self, target: NodeId) -> bool {
        self.blocked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&target)
    }

    /// The channel to `peer_addr` (connected on first use, reconnected by tonic).
    ///
    /// # Errors
    /// The address does not parse as a URI, or the TLS settings do not apply to it.
    pub fn channel(&self, peer_addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(peer_addr) {
            return Ok(channel.clone());
        }
        let endpoint = match &self.tls {
            None => Endpoint::from_shared(format!("http://{peer_addr}"))?,
            Some(tls) => {
                Endpoint::from_shared(format!("https://{peer_addr}"))?.tls_config(tls.clone())?
            }
        };
        let channel = endpoint
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        channels.insert(peer_addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// A peer client for `peer_addr`.
    ///
    /// # Errors
    /// The address does not parse as a URI.
    pub fn client(&self, peer_addr: &str) -> Result<PeerClient<Channel>, tonic::transport::Error> {
        // NodeInfo only: tonic's default message limits are plenty.
        Ok(PeerClient::new(self.channel(peer_addr)?))
    }
}

/// openraft's network factory.
#[derive(Clone)]
pub struct PeerNetworkFactory {
    channels: PeerChannels,
}

impl PeerNetworkFactory {
    /// A factory over shared channels.
    pub fn new(channels: PeerChannels) -> Self {
        PeerNetworkFactory { channels }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> PeerNetwork {
        PeerNetwork {
            target,
            node: node.clone(),
            channels: self.channels.clone(),
        }
    }
}

/// One openraft network client: the RPCs to one target.
pub struct PeerNetwork {
    target: NodeId,
    node: PeerNode,
    channels: PeerChannels,
}

/// An error message as an `std::error::Error`, for openraft's error wrappers.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PeerError(String);

impl PeerNetwork {
    /// Whether the receiver would refuse `frame` (its length field counts all but itself).
    fn frame_too_large(&self, frame: &[u8]) -> bool {
        frame.len().saturating_sub(4) > self.channels.links.max_frame_bytes()
    }

    /// Encode `request` as a `kind` frame, send it over a link, decode the remote
    /// `Result<Resp, E>`.
    async fn call<Req, Resp, E>(
        &mut self,
        kind: FrameKind,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, PeerNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let frame =
            encode_frame(kind, request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        self.send(frame, option).await
    }

    /// Send an encoded request frame over a link, decode the remote `Result<Resp, E>`.
    async fn send<Resp, E>(
        &mut self,
        frame: Vec<u8>,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, PeerNode, E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        #[cfg(feature = "test-support")]
        if self.channels.is_blocked(self.target) {
            return Err(RPCError::Unreachable(Unreachable::new(&PeerError(
                format!("link to node {} is cut (fault injection)", self.target),
            ))));
        }
        if self.frame_too_large(&frame) {
            // The receiver would close the link on it.
            return Err(RPCError::Network(NetworkError::new(&PeerError(format!(
                "a Raft message of {} bytes is over the {}-byte limit",
                frame.len(),
                self.channels.links.max_frame_bytes()
            )))));
        }
        let reply = self
            .channels
            .links
            .call(&self.node.peer_addr, &frame, option.hard_ttl())
            .await
            .map_err(|error| match error {
                // Refused, not listening, or not yet up: back off before retrying.
                LinkError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&error)),
                LinkError::Failed { .. } | LinkError::Refused { .. } => {
                    RPCError::Network(NetworkError::new(&error))
                }
            })?;
        let result: Result<Resp, E> =
            postcard::from_bytes(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|remote| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                remote,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
        let frame = encode_frame(FrameKind::AppendEntries, &rpc)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let entries = rpc.entries.len() as u64;
        if self.frame_too_large(&frame) && entries > 1 {
            // Over the frame limit: openraft retries at once with fewer entries.
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entries / 2),
            ));
        }
        if entries == 0 {
            // Without entries it only carries the commit index (or is a heartbeat), and
            // openraft sends it to every follower the moment an entry commits, in the
            // same turn as the apply: let the apply and the callers' answers, ready on
            // this worker, go out before these sends (docs/performance.md).
            tokio::task::yield_now().await;
        }
        // A clone: `send` borrows `self` mutably (and an off trace clones nothing).
        let trace = self.channels.trace.clone();
        if !trace.enabled() {
            return self.send(frame, &option).await;
        }
        let tag = super::append_tag_of(Some(self.target), &rpc);
        trace.mark(Point::AppendSent, tag);
        let reply = self.send(frame, &option).await;
        trace.mark(Point::AppendReplied, tag);
        reply
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, PeerNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(FrameKind::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
        self.call(FrameKind::Vote, &rpc, &option).await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // A down peer is retried every 200 ms: fast rejoin after a restart, little noise.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

/// What answers a follower's `ReadIndex` on the leader: the node, with its read barrier
/// (which sits above this module).
pub trait ReadIndexSource: Send + Sync + 'static {
    /// After a quorum round that confirmed this node leads, the index its state machine
    /// has applied (at least the commit index when the round started); `None` when it
    /// does not lead.
    fn read_index(&self) -> futures::future::BoxFuture<'_, Option<u64>>;
}

/// The server side of the peer gRPC service: tells peers this node's addresses, and a
/// follower the leader's read index.
pub struct PeerService {
    info: NodeInfoResponse,
    read_index: Option<std::sync::Arc<dyn ReadIndexSource>>,
}

impl PeerService {
    /// Tell peers this node's id and its client and admin addresses.
    pub fn new(node_id: NodeId, client_addr: String, admin_addr: String) -> Self {
        PeerService {
            info: NodeInfoResponse {
                node_id,
                client_addr,
                admin_addr,
            },
            read_index: None,
        }
    }

    /// Answer `ReadIndex` from `source` (without one, this node never confirms).
    #[must_use]
    pub fn with_read_index(mut self, source: std::sync::Arc<dyn ReadIndexSource>) -> Self {
        self.read_index = Some(source);
        self
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn node_info(
        &self,
        _request: tonic::Request<NodeInfoRequest>,
    ) -> Result<tonic::Response<NodeInfoResponse>, tonic::Status> {
        Ok(tonic::Response::new(self.info.clone()))
    }

    async fn read_index(
        &self,
        _request: tonic::Request<ReadIndexRequest>,
    ) -> Result<tonic::Response<ReadIndexResponse>, tonic::Status> {
        let index = match &self.read_index {
            Some(source) => source.read_index().await,
            None => None,
        };
        Ok(tonic::Response::new(ReadIndexResponse {
            confirmed: index.is_some(),
            index: index.unwrap_or(0),
        }))
    }
}
