//! An in-process cluster on loopback for tests of this crate and of the crates above it
//! (client library, CLI, fault harness): real gRPC listeners on loopback, real redb logs in
//! a temp dir, real Raft traffic between nodes, and link cutting for partitions.
//! [`TestPki`] writes a throw-away CA and certificates for clusters that speak TLS.

use crate::certs;
use crate::config::{Bootstrap, NetworkConfig, ServerConfig, TlsConfig};
use crate::startup::{Listeners, RunningNode, start_with_listeners};
use fencelock_proto::v1::cluster_client::ClusterClient;
use fencelock_proto::v1::locks_client::LocksClient;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// How long tests wait for the cluster to settle before failing.
pub const SETTLE: Duration = Duration::from_secs(10);

/// One node's fixed identity: id, addresses and data dir survive restarts.
pub struct Slot {
    /// Node id.
    pub id: u64,
    /// Client gRPC address.
    pub client: SocketAddr,
    /// Peer address.
    pub peer: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// The node, while it runs.
    pub running: Option<RunningNode>,
}

/// A cluster of in-process nodes.
pub struct TestCluster {
    /// The nodes, index = id - 1.
    pub slots: Vec<Slot>,
    /// The initial members (id → peer address).
    pub members: BTreeMap<u64, String>,
    _dir: tempfile::TempDir,
    tweak: Tweak,
    /// The simulated disk every node's data directory is on, when started with
    /// [`TestCluster::start_on_simulated_disk`].
    #[cfg(feature = "test-support")]
    sim: Option<crate::store::sim::SimDisk>,
}

/// A per-node configuration change (the node's id is in the config it gets).
type Tweak = Arc<dyn Fn(&mut ServerConfig) + Send + Sync>;

/// A loopback listener for a test node, on a port below the kernel's ephemeral range.
///
/// A stopped node is restarted on its old ports; a port the kernel handed out for port 0
/// is an ephemeral port, which the kernel may meanwhile give to any outgoing connection
/// (the other nodes reconnecting to the stopped one), and the restart would fail with
/// "address in use". The kernel never hands out ports below the ephemeral range by
/// itself. Ports are probed in order from an offset drawn from the process id, so test
/// processes running side by side rarely probe the same ones.
fn free_listener() -> std::net::TcpListener {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOWEST: u32 = 10_000;
    static PROBES: AtomicU32 = AtomicU32::new(0);
    let first_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = first_ephemeral
        .saturating_sub(LOWEST)
        .min(u32::from(u16::MAX));
    let offset = std::process::id().wrapping_mul(7_919);
    for _ in 0..span.min(1_000) {
        let probe = PROBES.fetch_add(1, Ordering::Relaxed);
        let port = LOWEST + offset.wrapping_add(probe) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback")
}

/// Fast timings so tests finish in seconds.
pub fn fast(config: &mut ServerConfig) {
    config.raft.heartbeat_interval = Duration::from_millis(50);
    config.raft.election_timeout = Duration::from_millis(300);
    config.write_path.expiry_tick = Duration::from_millis(20);
    config.write_path.request_timeout = Duration::from_secs(3);
}

impl TestCluster {
    /// Start `n` voters with the same `--peers`.
    pub async fn start(n: u64) -> TestCluster {
        Self::start_with(n, fast).await
    }

    /// Start `n` voters, adjusting each node's config with `tweak`.
    pub async fn start_with(n: u64, tweak: fn(&mut ServerConfig)) -> TestCluster {
        Self::start_with_configs(n, tweak).await
    }

    /// Start `n` voters, adjusting each node's config with `tweak`, a closure that may
    /// capture (e.g. the certificate paths of a [`TestPki`]) and may look at
    /// `config.node_id`. It also applies to nodes added later and to restarts.
    pub async fn start_with_configs(
        n: u64,
        tweak: impl Fn(&mut ServerConfig) + Send + Sync + 'static,
    ) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, n, Arc::new(tweak), |_| {}).await
    }

    /// Start `n` voters (adjusted with `tweak`) whose data directories are all on one
    /// simulated disk (`store::sim`) seeded with `seed`, so [`TestCluster::power_cut`] can
    /// cut the power of every node at once.
    #[cfg(feature = "test-support")]
    pub async fn start_on_simulated_disk(
        n: u64,
        seed: u64,
        tweak: impl Fn(&mut ServerConfig) + Send + Sync + 'static,
    ) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let sim = crate::store::sim::SimDisk::new(dir.path(), seed);
        Self::start_in(dir, n, Arc::new(tweak), |cluster| {
            cluster.sim = Some(sim);
        })
        .await
    }

    /// Cut the power of every node at once (the cluster must have been started with
    /// [`TestCluster::start_on_simulated_disk`]): what was not durable is lost, every node
    /// is stopped (its writes fail from the cut on) and started again on what is left.
    #[cfg(feature = "test-support")]
    pub async fn power_cut(&mut self) {
        self.sim
            .as_ref()
            .expect("started on a simulated disk")
            .power_cut();
        for index in 0..self.slots.len() {
            self.stop(index).await;
        }
        for index in 0..self.slots.len() {
            self.restart(index).await;
        }
    }

    async fn start_in(
        dir: tempfile::TempDir,
        n: u64,
        tweak: Tweak,
        prepare: impl FnOnce(&mut TestCluster),
    ) -> TestCluster {
        let mut slots = Vec::new();
        let mut listeners = Vec::new();
        for id in 1..=n {
            let client = free_listener();
            let peer = free_listener();
            slots.push(Slot {
                id,
                client: client.local_addr().unwrap(),
                peer: peer.local_addr().unwrap(),
                data_dir: dir.path().join(format!("node-{id}")),
                running: None,
            });
            listeners.push((client, peer));
        }
        let members: BTreeMap<u64, String> =
            slots.iter().map(|s| (s.id, s.peer.to_string())).collect();
        let mut cluster = TestCluster {
            slots,
            members,
            _dir: dir,
            tweak,
            #[cfg(feature = "test-support")]
            sim: None,
        };
        prepare(&mut cluster);
        // Start in reverse order: any order must form the cluster.
        for (index, (client, peer)) in listeners.into_iter().enumerate().rev() {
            let config = cluster.config(index, Bootstrap::Members(cluster.members.clone()));
            let running = start_with_listeners(
                config,
                Listeners {
                    client,
                    peer,
                    admin: None,
                },
            )
            .await
            .expect("node starts");
            cluster.slots[index].running = Some(running);
        }
        cluster
    }

    fn config(&self, index: usize, bootstrap: Bootstrap) -> ServerConfig {
        let slot = &self.slots[index];
        let mut config = ServerConfig {
            node_id: slot.id,
            network: NetworkConfig {
                listen: slot.client,
                peer_listen: slot.peer,
                admin_listen: None,
                ..NetworkConfig::default()
            },
            data_dir: slot.data_dir.clone(),
            bootstrap,
            ..ServerConfig::default()
        };
        (self.tweak)(&mut config);
        config
    }

    /// Add a node that starts empty (`--join`); it is not a member until `AddMember`.
    pub async fn add_joining_node(&mut self) -> usize {
        let id = self.slots.len() as u64 + 1;
        let client = free_listener();
        let peer = free_listener();
        self.slots.push(Slot {
            id,
            client: client.local_addr().unwrap(),
            peer: peer.local_addr().unwrap(),
            data_dir: self._dir.path().join(format!("node-{id}")),
            running: None,
        });
        let index = self.slots.len() - 1;
        let config = self.config(index, Bootstrap::Join);
        let running = start_with_listeners(
            config,
            Listeners {
                client,
                peer,
                admin: None,
            },
        )
        .await
        .expect("node starts");
        self.slots[index].running = Some(running);
        index
    }

    /// Stop node `index` (graceful: like a process exit, data stays).
    pub async fn stop(&mut self, index: usize) {
        if let Some(running) = self.slots[index].running.take() {
            running.shutdown().await;
        }
    }

    /// Restart node `index` on the same addresses and data dir.
    pub async fn restart(&mut self, index: usize) {
        assert!(self.slots[index].running.is_none(), "node is running");
        let slot = &self.slots[index];
        let listeners = Listeners {
            client: std::net::TcpListener::bind(slot.client).expect("rebind client port"),
            peer: std::net::TcpListener::bind(slot.peer).expect("rebind peer port"),
            admin: None,
        };
        let config = self.config(index, Bootstrap::Members(self.members.clone()));
        let running = start_with_listeners(config, listeners)
            .await
            .expect("node restarts");
        self.slots[index].running = Some(running);
    }

    /// The running node at `index` (panics if stopped).
    pub fn running(&self, index: usize) -> &RunningNode {
        self.slots[index].running.as_ref().expect("node running")
    }

    /// Index of the node that every running node agrees leads, waiting for it.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + SETTLE;
        loop {
            let mut seen = None;
            let mut agreed = true;
            for slot in self.slots.iter().filter(|s| s.running.is_some()) {
                let status = slot.running.as_ref().unwrap().node().status();
                match (status.leader_id, seen) {
                    (None, _) => agreed = false,
                    (Some(l), None) => seen = Some(l),
                    (Some(l), Some(s)) if l != s => agreed = false,
                    _ => {}
                }
            }
            if agreed && let Some(leader) = seen {
                let index = self.slots.iter().position(|s| s.id == leader).unwrap();
                if self.slots[index].running.is_some()
                    && self.slots[index]
                        .running
                        .as_ref()
                        .unwrap()
                        .node()
                        .status()
                        .state
                        == "Leader"
                {
                    return index;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader within {SETTLE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until node `index` reports a leader other than `not`.
    /// Wait until the agreed leader is not node `not`; its index.
    pub async fn leader_other_than(&self, not: usize) -> usize {
        let deadline = Instant::now() + SETTLE;
        loop {
            let leader = self.leader().await;
            if leader != not {
                return leader;
            }
            assert!(Instant::now() < deadline, "leadership did not move");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A raw gRPC client of node `index`.
    pub async fn locks(&self, index: usize) -> LocksClient<Channel> {
        LocksClient::new(channel(self.slots[index].client).await)
    }

    /// A raw cluster-service client of node `index`.
    pub async fn cluster(&self, index: usize) -> ClusterClient<Channel> {
        ClusterClient::new(channel(self.slots[index].client).await)
    }

    /// Cut node `index` off from every other node, both ways.
    pub fn isolate(&self, index: usize) {
        let isolated = self.slots[index].id;
        for slot in &self.slots {
            if let Some(running) = &slot.running {
                if slot.id == isolated {
                    running
                        .node()
                        .cut_links_to(self.slots.iter().map(|s| s.id).filter(|id| *id != isolated));
                } else {
                    running.node().cut_links_to([isolated]);
                }
            }
        }
    }

    /// Restore every link.
    pub fn heal(&self) {
        for slot in &self.slots {
            if let Some(running) = &slot.running {
                running.node().cut_links_to([]);
            }
        }
    }

    /// The client addresses of all nodes, for client libraries.
    pub fn endpoints(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.client.to_string()).collect()
    }

    /// Stop every node.
    pub async fn shutdown(mut self) {
        for index in 0..self.slots.len() {
            self.stop(index).await;
        }
    }
}

/// A throw-away CA with node and client certificates, written to a temp dir with
/// [`certs::write_certs`] (the files `fencelock certs` writes), for TLS tests.
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// Certificates for nodes `nodes` and clients `clients`.
    pub fn new(nodes: &[u64], clients: &[&str]) -> TestPki {
        let dir = tempfile::tempdir().expect("temp dir");
        let clients: Vec<String> = clients.iter().map(|c| c.to_string()).collect();
        certs::write_certs(dir.path(), nodes, &clients, &[], false).expect("write certificates");
        TestPki { dir }
    }

    /// The directory holding the files.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate file.
    pub fn ca(&self) -> PathBuf {
        self.path().join(certs::names::CA)
    }

    /// Node `id`'s certificate and key files.
    pub fn node(&self, id: u64) -> (PathBuf, PathBuf) {
        (
            self.path().join(certs::names::node_cert(id)),
            self.path().join(certs::names::node_key(id)),
        )
    }

    /// Client `name`'s certificate and key files.
    pub fn client(&self, name: &str) -> (PathBuf, PathBuf) {
        (
            self.path().join(certs::names::client_cert(name)),
            self.path().join(certs::names::client_key(name)),
        )
    }

    /// Node `id`'s TLS settings: its certificate on the client listener (clients must
    /// present a certificate of this CA when `client_mtls`) and mutual TLS between
    /// peers with this CA.
    pub fn node_tls(&self, id: u64, client_mtls: bool) -> TlsConfig {
        let (cert, key) = self.node(id);
        TlsConfig {
            cert: Some(cert),
            key: Some(key),
            client_ca: client_mtls.then(|| self.ca()),
            peer_ca: Some(self.ca()),
            ..TlsConfig::default()
        }
    }

    /// The PEM text of a file of this set.
    pub fn read(&self, path: &Path) -> Vec<u8> {
        std::fs::read(path).expect("read certificate file")
    }

    /// Client TLS settings that trust this CA, presenting client `name`'s certificate
    /// if given.
    pub fn client_tls(&self, name: Option<&str>) -> ClientTlsConfig {
        let mut tls =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(self.read(&self.ca())));
        if let Some(name) = name {
            let (cert, key) = self.client(name);
            tls = tls.identity(Identity::from_pem(self.read(&cert), self.read(&key)));
        }
        tls
    }
}

/// A channel to `addr` over TLS with `tls`, connected now.
///
/// # Errors
/// The connection or the handshake failed (e.g. the server refused the certificate).
pub async fn tls_channel(
    addr: SocketAddr,
    tls: ClientTlsConfig,
) -> Result<Channel, tonic::transport::Error> {
    tonic::transport::Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
}

/// A connected channel to `addr`.
pub async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .expect("connect")
}
