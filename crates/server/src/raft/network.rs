//! Raft traffic between nodes over the peer gRPC service (`peer.proto`).
//!
//! openraft's requests and results travel postcard-encoded inside a `bytes` field, so the
//! proto does not mirror openraft's types. The client side ([`PeerNetwork`]) keeps one
//! lazily connected tonic channel per peer address, shared by every openraft network
//! client, because openraft asks for a new client per heartbeat round.

use crate::raft::{NodeId, PeerNode, Raft, TypeConfig};
use fencelock_proto::peer::peer_client::PeerClient;
use fencelock_proto::peer::peer_server::Peer;
use fencelock_proto::peer::{NodeInfoRequest, NodeInfoResponse, RaftPayload};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Largest peer message (a snapshot chunk plus framing, or a batch of entries).
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Shared, lazily connected channels to peers, keyed by peer address; plaintext, or
/// mutual TLS when made with [`PeerChannels::with_tls`].
#[derive(Clone, Default)]
pub struct PeerChannels {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    blocked: Arc<Mutex<BTreeSet<NodeId>>>,
    tls: Option<ClientTlsConfig>,
}

impl PeerChannels {
    /// Channels that speak TLS with `tls` (this node's certificate and the cluster CA),
    /// or plaintext when `None`.
    pub fn with_tls(tls: Option<ClientTlsConfig>) -> PeerChannels {
        PeerChannels {
            tls,
            ..PeerChannels::default()
        }
    }

    /// Fault injection for in-process tests: Raft messages from this node to any of
    /// `targets` fail as unreachable until the set is changed. Cut both directions (on
    /// both nodes) to model a partition.
    pub fn set_blocked(&self, targets: BTreeSet<NodeId>) {
        *self.blocked.lock().unwrap_or_else(|e| e.into_inner()) = targets;
    }

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
        Ok(PeerClient::new(self.channel(peer_addr)?)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES))
    }
}

/// openraft's network factory.
#[derive(Clone, Default)]
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
            client: self
                .channels
                .client(&node.peer_addr)
                .map_err(|e| e.to_string()),
            channels: self.channels.clone(),
        }
    }
}

/// One openraft network client: the RPCs to one target.
pub struct PeerNetwork {
    target: NodeId,
    node: PeerNode,
    client: Result<PeerClient<Channel>, String>,
    channels: PeerChannels,
}

/// An error message as an `std::error::Error`, for openraft's error wrappers.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct PeerError(String);

impl PeerNetwork {
    /// Encode `request`, call `method`, decode the remote `Result<Resp, E>`.
    async fn call<Req, Resp, E, F, Fut>(
        &mut self,
        request: &Req,
        option: &RPCOption,
        method: F,
    ) -> Result<Resp, RPCError<NodeId, PeerNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        F: FnOnce(PeerClient<Channel>, RaftPayload) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<RaftPayload>, tonic::Status>>,
    {
        if self.channels.is_blocked(self.target) {
            return Err(RPCError::Unreachable(Unreachable::new(&PeerError(
                format!("link to node {} is cut (fault injection)", self.target),
            ))));
        }
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(message) => {
                return Err(RPCError::Unreachable(Unreachable::new(&PeerError(
                    message.clone(),
                ))));
            }
        };
        let data =
            postcard::to_allocvec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut grpc_request = tonic::Request::new(RaftPayload { data });
        grpc_request.set_timeout(option.hard_ttl());
        let reply = match method(client, grpc_request.into_inner()).await {
            Ok(reply) => reply.into_inner(),
            Err(status) => return Err(status_to_rpc_error(&status)),
        };
        let result: Result<Resp, E> = postcard::from_bytes(&reply.data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|remote| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                remote,
            ))
        })
    }
}

fn status_to_rpc_error<E: std::error::Error>(
    status: &tonic::Status,
) -> RPCError<NodeId, PeerNode, E> {
    let error = PeerError(format!("{}: {}", status.code(), status.message()));
    match status.code() {
        // Connection refused, reset or not yet up: back off before retrying.
        tonic::Code::Unavailable | tonic::Code::Unknown => {
            RPCError::Unreachable(Unreachable::new(&error))
        }
        _ => RPCError::Network(NetworkError::new(&error)),
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
        self.call(&rpc, &option, |mut client, payload| async move {
            client.append_entries(payload).await
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, PeerNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(&rpc, &option, |mut client, payload| async move {
            client.install_snapshot(payload).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, PeerNode, RaftError<NodeId>>> {
        self.call(&rpc, &option, |mut client, payload| async move {
            client.vote(payload).await
        })
        .await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // A down peer is retried every 200 ms: fast rejoin after a restart, little noise.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

/// The server side of the peer service: hands Raft messages to the local Raft node.
pub struct PeerService {
    raft: Raft,
    info: NodeInfoResponse,
}

impl PeerService {
    /// Serve `raft`, telling peers this node's client and admin addresses.
    pub fn new(raft: Raft, node_id: NodeId, client_addr: String, admin_addr: String) -> Self {
        PeerService {
            raft,
            info: NodeInfoResponse {
                node_id,
                client_addr,
                admin_addr,
            },
        }
    }
}

fn decode<T: DeserializeOwned>(payload: &RaftPayload) -> Result<T, tonic::Status> {
    postcard::from_bytes(&payload.data)
        .map_err(|e| tonic::Status::invalid_argument(format!("undecodable Raft message: {e}")))
}

fn encode<T: Serialize>(result: &T) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
    let data = postcard::to_allocvec(result)
        .map_err(|e| tonic::Status::internal(format!("cannot encode Raft reply: {e}")))?;
    Ok(tonic::Response::new(RaftPayload { data }))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn append_entries(
        &self,
        request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        let rpc: AppendEntriesRequest<TypeConfig> = decode(request.get_ref())?;
        encode(&self.raft.append_entries(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(request.get_ref())?;
        encode(&self.raft.install_snapshot(rpc).await)
    }

    async fn vote(
        &self,
        request: tonic::Request<RaftPayload>,
    ) -> Result<tonic::Response<RaftPayload>, tonic::Status> {
        let rpc: VoteRequest<NodeId> = decode(request.get_ref())?;
        encode(&self.raft.vote(rpc).await)
    }

    async fn node_info(
        &self,
        _request: tonic::Request<NodeInfoRequest>,
    ) -> Result<tonic::Response<NodeInfoResponse>, tonic::Status> {
        Ok(tonic::Response::new(self.info.clone()))
    }
}
