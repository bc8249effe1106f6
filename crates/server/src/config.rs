//! Server configuration: addresses, data directory, initial members, timing and limits.
//! Built by the binary from flags and an optional TOML file; every field has a default
//! so that `ServerConfig::default()` is the single-node quick start.

use crate::proposer::ProposerLimits;
use crate::raft::NodeId;
use crate::raft::link::{LinkLimits, PROTOCOL_VERSIONS, VersionRange};
use crate::space::SpaceOptions;
use crate::store::LogStoreOptions;
use fencelock_core::{Limits, PrimitiveLimits};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default client (gRPC) address of the single-node quick start.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7001";
/// Default peer (Raft) address.
pub const DEFAULT_PEER_LISTEN: &str = "127.0.0.1:7101";
/// Default admin (HTTP) address.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:7201";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "fencelock-data";

/// How the node finds its cluster at first start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Bootstrap {
    /// Form a cluster of these voters (node id → peer address), which must include this
    /// node. Every node started with the same map forms the same cluster, in any order.
    /// An empty map means a single-node cluster of this node alone.
    Members(BTreeMap<NodeId, String>),
    /// Do not initialize anything: wait to be added to an existing cluster with
    /// `AddMember`.
    Join,
}

/// Everything a node needs to run. The groups are flattened: the config file's keys are
/// the groups' field names, with no table of their own (`listen = …`, not
/// `[network] listen = …`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// This node's Raft id (>= 1).
    pub node_id: NodeId,
    /// Where the Raft log and the snapshots live.
    pub data_dir: PathBuf,
    /// How the node joins or forms its cluster at first start.
    pub bootstrap: Bootstrap,
    /// Client addresses of existing members through which a node started with
    /// `Bootstrap::Join` adds itself to their cluster (learner, then voter), so nobody
    /// has to call `AddMember`. Empty: wait for an operator's `AddMember`. A node that is
    /// already a voter ignores it.
    pub join_via: Vec<String>,
    /// A file holding a bearer token sent with the join calls; with auth on, its user
    /// must be allowed to change the membership.
    pub join_token_file: Option<PathBuf>,
    /// How long a node keeps trying to join through `join_via` before it gives up and
    /// stops (zero: it keeps trying, logging every failure).
    #[serde(with = "duration_ms")]
    pub join_timeout: Duration,
    /// Threads of the node's async runtime (0: one per core). Nodes that share a
    /// machine's cores with each other or with their clients run faster with fewer:
    /// every hop between tasks on different threads is a wake-up across cores (measured
    /// on 2 cores with 3 nodes and the benchmark client: one each, seq +15 %,
    /// contended +10 %).
    pub worker_threads: usize,
    /// Listeners, advertised addresses, peer traffic.
    #[serde(flatten)]
    pub network: NetworkConfig,
    /// Raft timing and snapshots.
    #[serde(flatten)]
    pub raft: RaftConfig,
    /// The log's caches and write-ahead file, the data disk's reserve.
    #[serde(flatten)]
    pub storage: StorageConfig,
    /// Batching, pipelining and waiting of writes.
    #[serde(flatten)]
    pub write_path: WritePathConfig,
    /// What this node grants each client.
    #[serde(flatten)]
    pub api_limits: ApiLimits,
    /// The replicated limits this node proposes when it leads.
    pub limits: Limits,
    /// The replicated limits of semaphores, lock-delays, multi-locks and reentrancy this
    /// node proposes when it leads.
    pub primitive_limits: PrimitiveLimits,
    /// TLS for the client and peer listeners (`None`: plaintext everywhere).
    pub tls: Option<TlsConfig>,
}

/// Where the node listens, the addresses it gives out, and the bounds of peer traffic.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct NetworkConfig {
    /// Client gRPC listener.
    pub listen: SocketAddr,
    /// Peer (Raft) gRPC listener.
    pub peer_listen: SocketAddr,
    /// The peer address other nodes use to reach this one (defaults to `peer_listen`).
    pub peer_advertise: Option<String>,
    /// The client address this node tells clients (defaults to `listen`).
    pub client_advertise: Option<String>,
    /// Admin HTTP listener (`/health`, `/metrics`, `/status`); `None` disables it.
    pub admin_listen: Option<SocketAddr>,
    /// Raft links (connections from peers, see `raft::link`) served at once; more are
    /// closed as they arrive.
    pub max_peer_links: usize,
    /// Largest Raft message between nodes, in bytes (the same on every node): a batch of
    /// entries over it is sent in smaller batches, snapshots in chunks of at most half.
    pub max_peer_message_bytes: usize,
    /// The admin listener speaks TLS with `tls.cert`/`tls.key` (and requires client
    /// certificates of `tls.client_ca` when it is set), like the client listener.
    pub admin_tls: bool,
    /// With auth on, `/metrics` on the admin port stays open to anyone.
    pub metrics_open: bool,
    /// A file whose first line is a bearer token (at least 32 characters) that may read
    /// `/metrics` with auth on (for Prometheus); `None`: none.
    pub metrics_token_file: Option<PathBuf>,
}

/// Raft's timing and its snapshots (handed to openraft's own configuration).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct RaftConfig {
    /// Raft heartbeat interval (openraft ticks every 1.5 heartbeats, so a leader sends
    /// one about every 75 ms with the default 50 ms).
    #[serde(with = "duration_ms")]
    pub heartbeat_interval: Duration,
    /// Raft election timeout, lower bound (the upper bound is twice this). openraft draws
    /// each node's timeout once from `[this, 2 × this)`, and a follower that followed a
    /// leader campaigns only after that timeout *plus* the upper bound (openraft's
    /// leader lease) passed without a heartbeat: with the default 300 ms, 0.9–1.2 s after
    /// a leader dies. Session leases do not depend on it (see `leases.rs`: a new leader
    /// restarts every deadline at a full TTL, and keepalives are answered only after a
    /// quorum round).
    #[serde(with = "duration_ms")]
    pub election_timeout: Duration,
    /// Take a snapshot after this many applied entries since the last one.
    pub snapshot_every_entries: u64,
    /// Log entries kept behind a snapshot (for followers that are a little behind).
    pub log_entries_kept_after_snapshot: u64,
    /// The highest protocol version this node speaks, lowered to test clusters of mixed
    /// builds (`test-support` builds only): at 1 the node speaks only the link
    /// handshake of the builds before versioned links, as they do.
    #[cfg(feature = "test-support")]
    #[serde(skip)]
    pub max_protocol_version: Option<u32>,
}

/// The Raft log's caches and write-ahead file, and the watch on the data disk's space.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// redb's page cache for the Raft log file, in bytes.
    pub log_page_cache_bytes: usize,
    /// Size of the Raft log's write-ahead file (`raft-log.wal`), in bytes: appends are
    /// synced there and moved into the log database when it fills. 0 turns it off
    /// (every append is then a log database transaction, about twice the sync work).
    pub log_wal_bytes: u64,
    /// An append that is one write-ahead write of at most this many bytes is synced by
    /// openraft's core task itself (which waits for it anyway) instead of on the blocking
    /// pool: two thread wake-ups fewer per commit, the core's worker thread busy for that
    /// one sync. 0: every append on the blocking pool. At most 16 MiB.
    pub log_inline_append_max_bytes: u64,
    /// Newest log entries kept decoded in memory for replication, at most (0: none).
    pub log_cache_entries: usize,
    /// The cached entries' encoded sizes add up to at most this many bytes.
    pub log_cache_bytes: usize,
    /// Below this many free bytes on the data disk the node raises its NO_SPACE alarm and,
    /// while it leads, refuses writes that add state (reads, keepalives and releases still
    /// work; see `space.rs`). 0: only a write the full disk refused raises it. Keep it
    /// above what the node writes between two checks: a checkpoint of the write-ahead
    /// file (about twice `log_wal_bytes`) and a snapshot of the state. At most 1 TiB.
    pub disk_reserve_bytes: u64,
    /// How often the node reads its data disk's free space (10 ms to 60 s).
    #[serde(with = "duration_ms")]
    pub disk_check_interval: Duration,
}

/// How writes are batched into Raft entries, how long they may wait, and how often the
/// leader proposes expiries.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct WritePathConfig {
    /// Commands packed into one Raft entry at most.
    pub max_batch_commands: usize,
    /// Commands queued for the proposer at most (callers beyond it get "unavailable").
    pub max_queued_commands: usize,
    /// Raft entries proposed and not yet committed at most (the write pipeline's depth).
    /// With 2 the leader flushes the next entry while followers work on the previous one;
    /// with 1 (the default) what arrives meanwhile waits and goes out as one larger entry,
    /// which costs less CPU per command where nodes share cores (measured on 2 cores with
    /// 3 nodes and the benchmark client: uncontended +5–20 %, CPU per operation −10–15 %,
    /// seq and contended unchanged).
    pub max_inflight_entries: usize,
    /// How long an acquire that will queue behind a holder may wait for another write
    /// to share its Raft entry (0: never held back). Its answer is only "queued", and
    /// under contention the lock's next release follows within about one commit, so
    /// the re-acquire and the release (which hands the lock on) go out as one entry
    /// instead of two in a row.
    #[serde(with = "duration_ms")]
    pub waiting_acquire_delay: Duration,
    /// How long a request may wait for Raft before the caller gets "unavailable"
    /// (outcome unknown; retry with the same request id).
    #[serde(with = "duration_ms")]
    pub request_timeout: Duration,
    /// How often the leader looks for expired sessions.
    #[serde(with = "duration_ms")]
    pub expiry_tick: Duration,
}

/// What one node grants its clients: message size, pages, streams, remembered answers.
/// Enforced by this node alone (the replicated limits are `ServerConfig::limits`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiLimits {
    /// Largest gRPC message accepted from clients, in bytes.
    pub max_message_bytes: usize,
    /// Largest page of `List`.
    pub max_list_page: usize,
    /// Open watch streams at most.
    pub max_watchers: usize,
    /// Answers of session-less admin mutations (force release, revoke session, auth
    /// administration) the cluster remembers by request id, so a retry within the last
    /// this many such requests returns the first answer (1..=1_000_000). Travels in each
    /// such command, so every replica evicts alike.
    pub max_remembered_requests: u64,
    /// Events buffered per watcher before it is told to resync.
    pub watch_buffer: usize,
    /// Lock events this node keeps for watches that start (or resume) at a revision
    /// (0..=10_000_000; 0 keeps none). See `events.rs`.
    pub watch_history_events: usize,
    /// The most memory those events may take, estimated, in bytes (0..=1 GiB).
    pub watch_history_bytes: usize,
    /// Live keepalive streams at most.
    pub max_keepalive_streams: usize,
    /// Hold- and wait-time histograms on `/metrics` are labelled by the first this many
    /// `/`-separated segments of the lock name (1: the part before the first `/`; 0:
    /// one series for all locks).
    pub metrics_name_depth: usize,
    /// Distinct name-prefix labels of those histograms at most; names past it share the
    /// label `(other)` (1..=100000).
    pub metrics_max_name_prefixes: usize,
}

/// TLS settings: PEM files for the client listener and for peer (Raft) traffic.
///
/// The client listener speaks TLS when `cert` and `key` are set, and then refuses
/// plaintext; with `client_ca` it also requires each client to present a certificate
/// signed by that CA (mutual TLS). Peer traffic speaks mutual TLS when `peer_ca` is set:
/// the peer listener requires a certificate signed by `peer_ca` from every caller, and
/// this node presents its own (`peer_cert`/`peer_key`, else `cert`/`key`) when it calls
/// other nodes, whose certificates it checks against `peer_ca`. Every node of a cluster
/// must use peer TLS, or none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (PEM) of the client listener.
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of `cert`.
    pub key: Option<PathBuf>,
    /// CA certificate(s) (PEM) that client certificates must chain to; when set, clients
    /// without such a certificate are refused.
    pub client_ca: Option<PathBuf>,
    /// Certificate chain (PEM) this node presents on peer traffic, both as server and as
    /// client; defaults to `cert`.
    pub peer_cert: Option<PathBuf>,
    /// Private key (PEM) of `peer_cert`; defaults to `key`.
    pub peer_key: Option<PathBuf>,
    /// CA certificate(s) (PEM) of the cluster: switches peer traffic to mutual TLS, and
    /// every peer's certificate must chain to it.
    pub peer_ca: Option<PathBuf>,
    /// The name (DNS name or IP address) checked against the other nodes' certificates
    /// when this node calls them (default: the host of each peer address). Set it when
    /// nodes are dialled by an address their certificates do not name.
    pub server_name: Option<String>,
}

impl TlsConfig {
    /// The client listener's certificate and key files, when it speaks TLS.
    pub fn client_identity(&self) -> Option<(&PathBuf, &PathBuf)> {
        self.cert.as_ref().zip(self.key.as_ref())
    }

    /// The certificate and key files presented on peer traffic, when it speaks TLS.
    pub fn peer_identity(&self) -> Option<(&PathBuf, &PathBuf)> {
        self.peer_ca.as_ref()?;
        match (&self.peer_cert, &self.peer_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => self.client_identity(),
        }
    }

    /// Check that the settings make sense together.
    ///
    /// # Errors
    /// A message naming the `tls.*` keys at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.cert.is_some() != self.key.is_some() {
            return Err("tls.cert and tls.key must be given together".into());
        }
        if self.peer_cert.is_some() != self.peer_key.is_some() {
            return Err("tls.peer_cert and tls.peer_key must be given together".into());
        }
        if self.client_ca.is_some() && self.cert.is_none() {
            return Err("tls.client_ca needs tls.cert and tls.key (client TLS)".into());
        }
        if self.peer_ca.is_none() && (self.peer_cert.is_some() || self.server_name.is_some()) {
            return Err(
                "tls.peer_cert, tls.peer_key and tls.server_name need tls.peer_ca \
                 (peer TLS is always mutual)"
                    .into(),
            );
        }
        if self.peer_ca.is_some() && self.peer_identity().is_none() {
            return Err(
                "tls.peer_ca needs this node's certificate: tls.peer_cert and tls.peer_key \
                 (or tls.cert and tls.key)"
                    .into(),
            );
        }
        if let Some(name) = &self.server_name
            && name.trim().is_empty()
        {
            return Err("tls.server_name is empty".into());
        }
        Ok(())
    }
}

impl NetworkConfig {
    /// The peer port's link bounds.
    pub fn link_limits(&self) -> LinkLimits {
        LinkLimits {
            max_frame_bytes: self.max_peer_message_bytes,
            max_links: self.max_peer_links,
            cluster_id: None,
        }
    }
}

impl WritePathConfig {
    /// The proposer's bounds.
    pub fn proposer_limits(&self) -> ProposerLimits {
        ProposerLimits {
            max_batch: self.max_batch_commands,
            max_queued: self.max_queued_commands,
            max_inflight: self.max_inflight_entries,
            write_timeout: self.request_timeout,
            waiting_acquire_delay: self.waiting_acquire_delay,
        }
    }
}

impl StorageConfig {
    /// How the data disk's free space is watched.
    pub fn space_options(&self) -> SpaceOptions {
        SpaceOptions {
            reserve_bytes: self.disk_reserve_bytes,
            check_interval: self.disk_check_interval,
        }
    }

    /// The log store's options, from the `log_*` fields.
    pub fn log_store_options(&self) -> LogStoreOptions {
        LogStoreOptions {
            cache_entries_max: self.log_cache_entries,
            cache_bytes_max: self.log_cache_bytes,
            page_cache_bytes: self.log_page_cache_bytes,
            wal_bytes: self.log_wal_bytes,
            inline_append_max_bytes: self.log_inline_append_max_bytes,
            ..LogStoreOptions::default()
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            node_id: 1,
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            bootstrap: Bootstrap::Members(BTreeMap::new()),
            join_via: Vec::new(),
            join_token_file: None,
            join_timeout: Duration::ZERO,
            worker_threads: 0,
            network: NetworkConfig::default(),
            raft: RaftConfig::default(),
            storage: StorageConfig::default(),
            write_path: WritePathConfig::default(),
            api_limits: ApiLimits::default(),
            limits: Limits::default(),
            primitive_limits: PrimitiveLimits::default(),
            tls: None,
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        let links = LinkLimits::default();
        NetworkConfig {
            listen: DEFAULT_LISTEN.parse().expect("valid default address"),
            peer_listen: DEFAULT_PEER_LISTEN.parse().expect("valid default address"),
            peer_advertise: None,
            client_advertise: None,
            admin_listen: Some(DEFAULT_ADMIN_LISTEN.parse().expect("valid default address")),
            max_peer_links: links.max_links,
            max_peer_message_bytes: links.max_frame_bytes,
            admin_tls: false,
            metrics_open: false,
            metrics_token_file: None,
        }
    }
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            heartbeat_interval: Duration::from_millis(50),
            election_timeout: Duration::from_millis(300),
            snapshot_every_entries: 10_000,
            log_entries_kept_after_snapshot: 5_000,
            #[cfg(feature = "test-support")]
            max_protocol_version: None,
        }
    }
}

impl RaftConfig {
    /// The protocol versions this node speaks (`raft::link`, `fencelock_core::version`).
    pub fn protocol_versions(&self) -> VersionRange {
        #[cfg(feature = "test-support")]
        if let Some(max) = self.max_protocol_version {
            let min = PROTOCOL_VERSIONS.min.min(max);
            return VersionRange { min, max };
        }
        PROTOCOL_VERSIONS
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        // The log store and the space watch own their defaults; the fields mirror them.
        let log = LogStoreOptions::default();
        let space = SpaceOptions::default();
        StorageConfig {
            log_page_cache_bytes: log.page_cache_bytes,
            log_wal_bytes: log.wal_bytes,
            log_inline_append_max_bytes: log.inline_append_max_bytes,
            log_cache_entries: log.cache_entries_max,
            log_cache_bytes: log.cache_bytes_max,
            disk_reserve_bytes: space.reserve_bytes,
            disk_check_interval: space.check_interval,
        }
    }
}

impl Default for WritePathConfig {
    fn default() -> Self {
        // The proposer owns its defaults; the fields here mirror them.
        let proposer = ProposerLimits::default();
        WritePathConfig {
            max_batch_commands: proposer.max_batch,
            max_queued_commands: proposer.max_queued,
            max_inflight_entries: proposer.max_inflight,
            waiting_acquire_delay: proposer.waiting_acquire_delay,
            request_timeout: proposer.write_timeout,
            expiry_tick: Duration::from_millis(50),
        }
    }
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_message_bytes: 64 * 1024,
            max_list_page: 1_000,
            max_watchers: 10_000,
            max_remembered_requests: 10_000,
            watch_buffer: 1_024,
            watch_history_events: 10_000,
            watch_history_bytes: 16 << 20,
            max_keepalive_streams: 10_000,
            metrics_name_depth: 1,
            metrics_max_name_prefixes: 1_000,
        }
    }
}

impl ServerConfig {
    /// The peer address other nodes use for this one.
    pub fn peer_advertise_addr(&self) -> String {
        self.network
            .peer_advertise
            .clone()
            .unwrap_or_else(|| self.network.peer_listen.to_string())
    }

    /// The client address this node gives out.
    pub fn client_advertise_addr(&self) -> String {
        self.network
            .client_advertise
            .clone()
            .unwrap_or_else(|| self.network.listen.to_string())
    }

    /// Check the configuration for mistakes that would only show later.
    ///
    /// # Errors
    /// A message naming the offending setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.node_id == 0 {
            return Err("node id must be >= 1".into());
        }
        if let Bootstrap::Members(members) = &self.bootstrap {
            if !members.is_empty() && !members.contains_key(&self.node_id) {
                return Err(format!(
                    "--peers does not name this node (id {}); add {}=<peer address>",
                    self.node_id, self.node_id
                ));
            }
            if members.contains_key(&0) {
                return Err("node ids in --peers must be >= 1".into());
            }
        }
        if !self.join_via.is_empty() && self.bootstrap != Bootstrap::Join {
            return Err("join_via (--join-via) needs bootstrap = \"Join\"; it cannot be combined with --peers".into());
        }
        if self.join_via.iter().any(|addr| addr.trim().is_empty()) {
            return Err("join_via (--join-via) holds an empty address".into());
        }
        if self.raft.heartbeat_interval.is_zero()
            || self.raft.election_timeout <= self.raft.heartbeat_interval * 2
        {
            return Err("election timeout must exceed twice the heartbeat interval".into());
        }
        if self.write_path.max_batch_commands == 0
            || self.write_path.max_queued_commands == 0
            || self.write_path.max_inflight_entries == 0
        {
            return Err("batch, queue and in-flight sizes must be >= 1".into());
        }
        if self.storage.log_wal_bytes > 1 << 30 {
            return Err("the log's write-ahead file must be at most 1 GiB (0: none)".into());
        }
        if self.storage.log_inline_append_max_bytes > 16 << 20 {
            return Err("inline log appends must be at most 16 MiB (0: none)".into());
        }
        if self.storage.disk_reserve_bytes > 1 << 40 {
            return Err("the disk reserve must be at most 1 TiB (0: none)".into());
        }
        if !(Duration::from_millis(10)..=Duration::from_secs(60))
            .contains(&self.storage.disk_check_interval)
        {
            return Err("the disk check interval must be between 10 ms and 60000 ms".into());
        }
        if self.write_path.waiting_acquire_delay > Duration::from_secs(1) {
            return Err("the waiting-acquire delay must be at most 1000 ms".into());
        }
        if self.worker_threads > 1024 {
            return Err("worker threads must be at most 1024 (0: one per core)".into());
        }
        if self.raft.snapshot_every_entries == 0 {
            return Err("snapshot interval must be >= 1 entry".into());
        }
        if self.api_limits.max_message_bytes < 1024 {
            return Err("max message size must be >= 1024 bytes".into());
        }
        if self.network.max_peer_links == 0 {
            return Err("max peer links must be >= 1".into());
        }
        if !(64 * 1024..=1 << 30).contains(&self.network.max_peer_message_bytes) {
            return Err("max peer message size must be between 64 KiB and 1 GiB".into());
        }
        if !(1..=fencelock_core::Once::MAX_REMEMBER)
            .contains(&self.api_limits.max_remembered_requests)
        {
            return Err(format!(
                "max remembered requests must be 1..={}",
                fencelock_core::Once::MAX_REMEMBER
            ));
        }
        if self.api_limits.max_list_page == 0 || self.api_limits.watch_buffer == 0 {
            return Err("list page and watch buffer must be >= 1".into());
        }
        if self.api_limits.watch_history_events > 10_000_000
            || self.api_limits.watch_history_bytes > 1 << 30
        {
            return Err("watch history must be at most 10000000 events and 1 GiB".into());
        }
        if !(1..=100_000).contains(&self.api_limits.metrics_max_name_prefixes) {
            return Err("metrics_max_name_prefixes must be 1..=100000".into());
        }
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        Ok(())
    }
}

/// Durations in the TOML file are written as milliseconds (`election_timeout = 300`).
mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(value.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(deserializer)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_timing_is_valid_and_tolerates_lost_heartbeats() {
        let config = ServerConfig::default();
        config.validate().unwrap();
        // openraft ticks, and so sends heartbeats, every 1.5 heartbeat intervals; a
        // follower of a live leader campaigns no sooner than twice the election timeout
        // (timeout + leader lease) after the last one it got.
        let tick = config.raft.heartbeat_interval * 3 / 2;
        assert!(config.raft.election_timeout * 2 >= tick * 8, "{config:?}");
        let mut tight = config.clone();
        tight.raft.election_timeout = config.raft.heartbeat_interval * 2;
        assert!(tight.validate().is_err());
    }

    /// Each component owns its defaults; the configuration's defaults are theirs.
    #[test]
    fn the_default_configuration_assembles_the_components_defaults() {
        let config = ServerConfig::default();
        assert_eq!(
            config.storage.log_store_options(),
            LogStoreOptions::default()
        );
        assert_eq!(config.storage.space_options(), SpaceOptions::default());
        assert_eq!(
            config.write_path.proposer_limits(),
            ProposerLimits::default()
        );
        assert_eq!(config.network.link_limits(), LinkLimits::default());
    }

    #[test]
    fn the_runtime_and_the_write_ahead_file_are_bounded() {
        let mut ok = ServerConfig {
            worker_threads: 1,
            ..ServerConfig::default()
        };
        ok.storage.log_wal_bytes = 0;
        ok.storage.log_inline_append_max_bytes = 16 << 20;
        ok.validate().unwrap();
        let storage = |change: fn(&mut StorageConfig)| {
            let mut config = ServerConfig::default();
            change(&mut config.storage);
            config
        };
        for bad in [
            ServerConfig {
                worker_threads: 1025,
                ..ServerConfig::default()
            },
            storage(|s| s.log_wal_bytes = (1 << 30) + 1),
            storage(|s| s.log_inline_append_max_bytes = (16 << 20) + 1),
            storage(|s| s.disk_reserve_bytes = (1 << 40) + 1),
            storage(|s| s.disk_check_interval = Duration::from_millis(9)),
            storage(|s| s.disk_check_interval = Duration::from_secs(61)),
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
