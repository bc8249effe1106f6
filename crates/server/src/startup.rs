//! Start-up: opens storage, starts Raft, binds the client, peer and admin listeners,
//! starts the background duties and forms or joins the cluster. [`start`] returns a
//! [`RunningNode`] that shuts it all down gracefully.

use crate::admin;
use crate::api::{AuthService, ClusterService, LocksService, http};
use crate::barrier::ReadBarrier;
use crate::commit_trace::CommitTrace;
use crate::config::{Bootstrap, ServerConfig};
use crate::events::{EventHub, HistoryBounds};
use crate::leases::LeaseClock;
use crate::node::{Node, NodeParts};
use crate::proposer::Proposer;
use crate::raft::link::{ClusterId, LinkLimits, PeerPort, dispatch_peer_port};
use crate::raft::network::{PeerChannels, PeerNetworkFactory, PeerService};
use crate::raft::{NodeId, PeerNode, Raft};
use crate::store::log::{LogStore, LogStoreCloseWatch, LogStoreOptions};
use crate::store::state_machine::StateMachineStore;
use crate::store::{Disk, SharedState, StoreError};
use crate::tls::NodeTls;
use fencelock_proto::peer::peer_server::PeerServer;
use fencelock_proto::v1::auth_server::AuthServer;
use fencelock_proto::v1::cluster_server::ClusterServer;
use fencelock_proto::v1::locks_server::LocksServer;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;

/// Why a node could not start. Each variant's message says what failed; the cause, when
/// there is one, is its [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// openraft refused the timing derived from the configuration.
    #[error("invalid Raft configuration")]
    RaftConfig(#[source] Box<openraft::ConfigError>),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A bound listener's address could not be read.
    #[error("cannot read a bound listener's address")]
    LocalAddr(#[source] std::io::Error),
    /// The data directory could not be created.
    #[error("cannot create {}", path.display())]
    DataDir {
        /// The data directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The data directory could not be opened or is damaged.
    #[error("storage")]
    Storage(#[from] StoreError),
    /// openraft stopped while starting.
    #[error("raft")]
    Raft(#[source] Box<openraft::error::Fatal<NodeId>>),
    /// openraft refused to form the cluster.
    #[error("cannot form the cluster")]
    Initialize(#[source] Box<InitializeError>),
    /// A TLS file is missing or unusable (the message names it).
    #[error("tls: {0}")]
    Tls(String),
    /// A listener refused its TLS settings.
    #[error("tls: {listener} listener")]
    ListenerTls {
        /// "client" or "peer".
        listener: &'static str,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
}

/// openraft's refusal to form the cluster.
pub type InitializeError =
    openraft::error::RaftError<NodeId, openraft::error::InitializeError<NodeId, PeerNode>>;

impl From<openraft::error::Fatal<NodeId>> for StartError {
    fn from(error: openraft::error::Fatal<NodeId>) -> Self {
        StartError::Raft(Box::new(error))
    }
}

impl From<InitializeError> for StartError {
    fn from(error: InitializeError) -> Self {
        StartError::Initialize(Box::new(error))
    }
}

/// A started node and its servers.
pub struct RunningNode {
    node: Arc<Node>,
    client_addr: SocketAddr,
    peer_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    log_closed: LogStoreCloseWatch,
}

impl RunningNode {
    /// The node.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The bound client (gRPC) address.
    pub fn client_addr(&self) -> SocketAddr {
        self.client_addr
    }

    /// The bound peer (Raft) address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    /// The bound admin (HTTP) address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Stop serving, stop Raft, and wait for the background tasks.
    pub async fn shutdown(self) {
        // Servers and background duties first, while Raft still answers them; then Raft.
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        if let Err(error) = self.node.raft().shutdown().await {
            tracing::warn!(%error, "raft shutdown");
        }
        self.log_closed.close_store().await;
        // Raft's tasks drop their log handles as they finish: wait until the database is
        // closed, so the same data dir can be opened again at once.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.log_closed.is_closed() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !self.log_closed.is_closed() {
            tracing::warn!("the Raft log was still open 5 s after shutdown");
        }
    }
}

/// Pre-bound listeners, for callers that pick ports themselves (tests use port 0).
pub struct Listeners {
    /// Client gRPC.
    pub client: std::net::TcpListener,
    /// Peer gRPC.
    pub peer: std::net::TcpListener,
    /// Admin HTTP.
    pub admin: Option<std::net::TcpListener>,
}

impl Listeners {
    /// Bind the addresses of `config`.
    ///
    /// # Errors
    /// [`StartError::Bind`] naming the address that failed.
    pub fn bind(config: &ServerConfig) -> Result<Listeners, StartError> {
        let bind = |addr: SocketAddr| {
            std::net::TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })
        };
        Ok(Listeners {
            client: bind(config.network.listen)?,
            peer: bind(config.network.peer_listen)?,
            admin: config.network.admin_listen.map(bind).transpose()?,
        })
    }
}

/// Start a node with the listeners its configuration names.
///
/// # Errors
/// See [`StartError`].
pub async fn start(config: ServerConfig) -> Result<RunningNode, StartError> {
    start_traced(config, CommitTrace::off()).await
}

/// [`start`], marking the write path's points on `trace` (`fencelock serve
/// --commit-trace`).
///
/// # Errors
/// See [`StartError`].
pub async fn start_traced(
    config: ServerConfig,
    trace: CommitTrace,
) -> Result<RunningNode, StartError> {
    config.validate().map_err(StartError::Config)?;
    let listeners = Listeners::bind(&config)?;
    start_on(config, listeners, trace).await
}

fn raft_config(config: &ServerConfig) -> Result<openraft::Config, StartError> {
    let heartbeat_ms = config.raft.heartbeat_interval.as_millis() as u64;
    let election_ms = config.raft.election_timeout.as_millis() as u64;
    let raft_config = openraft::Config {
        cluster_name: "fencelock".into(),
        heartbeat_interval: heartbeat_ms,
        election_timeout_min: election_ms,
        election_timeout_max: election_ms * 2,
        install_snapshot_timeout: 2_000.max(election_ms * 4),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(
            config.raft.snapshot_every_entries,
        ),
        // Generous, so a follower installing a snapshot never finds the log purged past it
        // (openraft#1706).
        max_in_snapshot_log_to_keep: config.raft.log_entries_kept_after_snapshot,
        // A chunk and its request's other fields fit in one peer message.
        snapshot_max_chunk_size: (4 * 1024 * 1024)
            .min(config.network.max_peer_message_bytes as u64 / 2),
        max_payload_entries: 512,
        ..Default::default()
    };
    raft_config
        .validate()
        .map_err(|e| StartError::RaftConfig(Box::new(e)))
}

/// Start a node on pre-bound listeners.
///
/// # Errors
/// See [`StartError`].
pub async fn start_with_listeners(
    config: ServerConfig,
    listeners: Listeners,
) -> Result<RunningNode, StartError> {
    start_on(config, listeners, CommitTrace::off()).await
}

/// Start a node on pre-bound listeners, handing `trace` to the components that mark the
/// write path: the log store, the state machine, the Raft network and links, and the
/// locks API.
async fn start_on(
    config: ServerConfig,
    listeners: Listeners,
    trace: CommitTrace,
) -> Result<RunningNode, StartError> {
    config.validate().map_err(StartError::Config)?;
    // TLS files first: a bad one stops start-up before anything is opened.
    let tls = match &config.tls {
        Some(tls) => NodeTls::load(tls).map_err(StartError::Tls)?,
        None => NodeTls::default(),
    };
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    // Each step of restoring the node's data is timed and logged once ("data restored"),
    // so an operator (and the benchmark's scale part) can tell where a slow start goes.
    let opening = Instant::now();
    let log_options = LogStoreOptions {
        commit_trace: trace.clone(),
        ..config.storage.log_store_options()
    };
    let log_store = LogStore::open(&config.data_dir, log_options)?;
    let log_open = opening.elapsed();
    let log_closed = log_store.close_watch();
    // One account of the data disk's space for the log, the snapshots, the monitor and
    // the write path; read once now, so a node that starts on a full disk refuses
    // writes from the start.
    let space = log_store.disk_space();
    space.set_reserve_bytes(config.storage.space_options().reserve_bytes);
    if let Err(error) = space.measure(&config.data_dir) {
        tracing::warn!(data_dir = %config.data_dir.display(), %error, "cannot read the data disk's free space");
    }
    let leases = Arc::new(LeaseClock::default());
    let history = HistoryBounds {
        events: config.api_limits.watch_history_events,
        bytes: config.api_limits.watch_history_bytes,
    };
    let hub = EventHub::new(config.api_limits.watch_buffer, history, leases.clone());
    crate::metrics::set_name_prefixes(
        config.api_limits.metrics_name_depth,
        config.api_limits.metrics_max_name_prefixes,
    );
    let shared = SharedState::new(crate::metrics::HoldTimes::new(hub.clone()));
    // The admin port's TLS and token files are read now: a bad one stops start-up
    // before any listener serves.
    let admin_security =
        admin::AdminSecurity::from_config(&config, crate::auth::Authenticator::new(shared.clone()))
            .map_err(StartError::Tls)?;
    let snapshot_dir = config.data_dir.join("snapshots");
    let loading = Instant::now();
    let state_machine = StateMachineStore::open_sharing_space(
        &Disk::for_dir(&snapshot_dir),
        &snapshot_dir,
        shared.clone(),
        space.clone(),
    )?
    .with_commit_trace(trace.clone());
    let snapshot_load = loading.elapsed();
    let applied_index =
        |shared: &SharedState| shared.read(|applied| applied.last_applied.map_or(0, |id| id.index));
    let from_snapshot = applied_index(&shared);
    let cluster_id = cluster_id(&config.data_dir)?;
    let channels = PeerChannels::new(
        tls.peer_client.clone(),
        tls.peer_link_client.clone(),
        config.network.max_peer_message_bytes,
    )
    .with_cluster_id(cluster_id)
    .with_commit_trace(trace.clone())
    .with_versions(config.raft.protocol_versions());
    let replaying = Instant::now();
    // openraft applies the committed entries the snapshot does not hold before it returns.
    let raft = Raft::new(
        config.node_id,
        Arc::new(raft_config(&config)?),
        PeerNetworkFactory::new(channels.clone()),
        log_store,
        state_machine,
    )
    .await?;
    let log_replay = replaying.elapsed();
    let applied = applied_index(&shared);
    let stats = shared.read(|applied| applied.state.stats());
    tracing::info!(
        log_open_ms = log_open.as_millis() as u64,
        snapshot_load_ms = snapshot_load.as_millis() as u64,
        snapshot_index = from_snapshot,
        log_replay_ms = log_replay.as_millis() as u64,
        entries_replayed = applied.saturating_sub(from_snapshot),
        applied_index = applied,
        sessions = stats.sessions,
        locks = stats.locks,
        "data restored"
    );

    let proposer = Proposer::spawn(
        raft.clone(),
        config.node_id,
        config.write_path.proposer_limits(),
    )
    .refuse_writes_without_space(space.clone())
    .gate_by_cluster_version({
        let shared = shared.clone();
        Arc::new(move || shared.read(|applied| applied.state.cluster_version()))
    });
    let barrier = ReadBarrier::spawn(raft.clone());
    let (stop, stopped) = watch::channel(false);
    let node = Arc::new(Node::new(NodeParts {
        config: config.clone(),
        raft: raft.clone(),
        shared,
        hub,
        leases,
        proposer,
        barrier,
        disk: space.clone(),
        channels,
        stopping: stopped.clone(),
    }));

    let shutdown_signal = |mut stopped: watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let to_tokio = |listener: std::net::TcpListener| -> Result<TcpListener, StartError> {
        let addr = listener.local_addr().map_err(StartError::LocalAddr)?;
        listener
            .set_nonblocking(true)
            .map_err(|source| StartError::Bind { addr, source })?;
        TcpListener::from_std(listener).map_err(|source| StartError::Bind { addr, source })
    };
    let client_listener = to_tokio(listeners.client)?;
    let peer_listener = to_tokio(listeners.peer)?;
    let admin_listener = listeners.admin.map(to_tokio).transpose()?;
    let client_addr = client_listener
        .local_addr()
        .map_err(StartError::LocalAddr)?;
    let peer_addr = peer_listener.local_addr().map_err(StartError::LocalAddr)?;
    let admin_addr = admin_listener
        .as_ref()
        .map(|l| l.local_addr())
        .transpose()
        .map_err(StartError::LocalAddr)?;

    let mut tasks = Vec::new();
    let peer_service = PeerServer::new(
        PeerService::new(
            config.node_id,
            config.client_advertise_addr(),
            admin_addr.map(|a| a.to_string()).unwrap_or_default(),
        )
        .with_read_index(node.clone()),
    );
    let mut peer_server = tonic::transport::Server::builder();
    if let Some(server_tls) = tls.peer_server {
        peer_server =
            peer_server
                .tls_config(server_tls)
                .map_err(|source| StartError::ListenerTls {
                    listener: "peer",
                    source,
                })?;
    }
    // Raft links are served by the peer port's dispatcher; gRPC connections go on to tonic.
    let (peer_grpc_incoming, peer_dispatcher) = dispatch_peer_port(
        peer_listener,
        PeerPort {
            raft: raft.clone(),
            tls: tls.peer_link_server.clone(),
            versions: config.raft.protocol_versions(),
            limits: LinkLimits {
                cluster_id,
                ..config.network.link_limits()
            },
            trace: trace.clone(),
        },
        stopped.clone(),
    );
    tasks.push(peer_dispatcher);
    let signal = shutdown_signal(stopped.clone());
    tasks.push(tokio::spawn(async move {
        let served = peer_server
            .add_service(peer_service)
            .serve_with_incoming_shutdown(peer_grpc_incoming, signal)
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "peer server stopped");
        }
    }));

    let max_message = config.api_limits.max_message_bytes;
    // One service object each for gRPC and the JSON API (`api/http`), so both share the
    // stream limits.
    let locks_service = Arc::new(LocksService::new(node.clone()).with_commit_trace(trace));
    let cluster_service = Arc::new(ClusterService::new(node.clone()));
    let locks = LocksServer::from_arc(locks_service.clone())
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message.max(4 * 1024 * 1024));
    let cluster =
        ClusterServer::from_arc(cluster_service.clone()).max_decoding_message_size(max_message);
    let auth =
        AuthServer::new(AuthService::new(node.clone())).max_decoding_message_size(max_message);
    let client_routes = http::with_json_routes(
        Routes::new(locks).add_service(cluster).add_service(auth),
        http::Api::new(&node, locks_service, cluster_service),
        tls.client_server.is_some(),
    );
    let mut client_server = tonic::transport::Server::builder();
    if let Some(server_tls) = tls.client_server {
        client_server =
            client_server
                .tls_config(server_tls)
                .map_err(|source| StartError::ListenerTls {
                    listener: "client",
                    source,
                })?;
    }
    let signal = shutdown_signal(stopped.clone());
    tasks.push(tokio::spawn(async move {
        let served = client_server
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            // HTTP/1.1 too, for the JSON API.
            .accept_http1(true)
            .add_routes(client_routes)
            .serve_with_incoming_shutdown(accepted_without_nagle(client_listener), signal)
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "client server stopped");
        }
    }));

    if let Some(listener) = admin_listener {
        let signal = shutdown_signal(stopped.clone());
        let admin_node = node.clone();
        let security = admin_security.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(error) = admin::serve_secured(listener, admin_node, security, signal).await {
                tracing::error!(%error, "admin server stopped");
            }
        }));
    }

    tasks.push(tokio::spawn(crate::duties::watch_leadership(
        node.clone(),
        stopped.clone(),
    )));
    tasks.push(tokio::spawn(crate::duties::expire_sessions(
        node.clone(),
        stopped.clone(),
    )));
    tasks.push(tokio::spawn(crate::duties::raise_cluster_version(
        node.clone(),
        stopped.clone(),
    )));
    tasks.push(tokio::spawn(crate::space::monitor(
        space,
        config.data_dir.clone(),
        config.storage.space_options().check_interval,
        stopped.clone(),
    )));

    bootstrap(&node, peer_addr).await?;
    tracing::info!(
        node_id = config.node_id,
        %client_addr,
        %peer_addr,
        admin = ?admin_addr,
        data_dir = %config.data_dir.display(),
        "fencelock node started"
    );
    Ok(RunningNode {
        node,
        client_addr,
        peer_addr,
        admin_addr,
        stop,
        tasks,
        log_closed,
    })
}

/// The cluster id a restore recorded in `data_dir`, if any.
fn cluster_id(data_dir: &std::path::Path) -> Result<Option<ClusterId>, StartError> {
    let Some(text) = crate::store::restore::read_cluster_id(data_dir)? else {
        return Ok(None);
    };
    hex::decode(&text)
        .ok()
        .and_then(|bytes| ClusterId::try_from(bytes).ok())
        .map(Some)
        .ok_or_else(|| {
            StartError::Config(format!(
                "{}: {text:?} is not a cluster id (32 hex digits)",
                data_dir
                    .join(crate::store::restore::CLUSTER_ID_FILE)
                    .display()
            ))
        })
}

/// Form the cluster at first start. Every node started with the same `--peers` calls
/// `initialize` with the same membership, which openraft allows; a node that already has
/// a log, or was started with `--join`, does nothing.
async fn bootstrap(node: &Node, bound_peer_addr: SocketAddr) -> Result<(), StartError> {
    let Bootstrap::Members(members) = &node.config().bootstrap else {
        return Ok(());
    };
    let initialized = node.raft().is_initialized().await?;
    if initialized {
        return Ok(());
    }
    let members: BTreeMap<NodeId, PeerNode> = if members.is_empty() {
        let peer_addr = node
            .config()
            .network
            .peer_advertise
            .clone()
            .unwrap_or_else(|| bound_peer_addr.to_string());
        BTreeMap::from([(node.id(), PeerNode { peer_addr })])
    } else {
        members
            .iter()
            .map(|(id, addr)| {
                (
                    *id,
                    PeerNode {
                        peer_addr: addr.clone(),
                    },
                )
            })
            .collect()
    };
    match node.raft().initialize(members).await {
        Ok(()) => Ok(()),
        Err(openraft::error::RaftError::APIError(
            openraft::error::InitializeError::NotAllowed(_),
        )) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Accepted connections with Nagle's algorithm off. tonic's `Server::tcp_nodelay` does not
/// apply to `serve_with_incoming*`, and with Nagle on, a response written in two small
/// pieces (HTTP/2 headers, then data) waits for the peer's delayed ACK.
fn accepted_without_nagle(listener: tokio::net::TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

#[cfg(test)]
mod tests {
    use super::{Listeners, StartError, accepted_without_nagle, start_with_listeners};
    use crate::config::{NetworkConfig, ServerConfig};
    use std::error::Error as _;
    use tokio_stream::StreamExt;

    fn loopback_config() -> ServerConfig {
        ServerConfig {
            network: NetworkConfig {
                listen: "127.0.0.1:0".parse().expect("address"),
                peer_listen: "127.0.0.1:0".parse().expect("address"),
                admin_listen: None,
                ..NetworkConfig::default()
            },
            ..ServerConfig::default()
        }
    }

    #[test]
    fn a_taken_address_is_a_bind_error_with_the_os_error_as_its_source() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let mut config = loopback_config();
        config.network.listen = taken.local_addr().expect("address");
        let Err(error) = Listeners::bind(&config) else {
            panic!("bound a taken address");
        };
        assert!(
            matches!(&error, StartError::Bind { addr, .. } if *addr == config.network.listen),
            "{error:?}"
        );
        let source = error.source().expect("a source");
        assert!(
            source.downcast_ref::<std::io::Error>().is_some(),
            "{source:?}"
        );
    }

    #[tokio::test]
    async fn a_data_dir_that_cannot_be_created_names_it_and_keeps_the_os_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"not a directory").expect("write");
        let config = ServerConfig {
            data_dir: file.join("data"),
            ..loopback_config()
        };
        let listeners = Listeners::bind(&config).expect("bind");
        let Err(error) = start_with_listeners(config.clone(), listeners).await else {
            panic!("started under a regular file");
        };
        match &error {
            StartError::DataDir { path, source } => {
                assert_eq!(path, &config.data_dir);
                assert!(error.to_string().contains("a-file"), "{error}");
                assert_eq!(
                    error.source().map(|s| s.to_string()),
                    Some(source.to_string())
                );
            }
            other => panic!("expected a data dir error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut incoming = accepted_without_nagle(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let accepted = incoming
            .next()
            .await
            .expect("a connection")
            .expect("accepted");
        assert!(accepted.nodelay().expect("read TCP_NODELAY"));
    }
}
