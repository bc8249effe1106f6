//! The processes of a run: `fencelock serve` nodes and the `fenced-kv` service, each a
//! real child process on loopback with its own data directory and log file, plus the
//! per-link proxies between nodes. Signals (SIGKILL, SIGSTOP, SIGCONT, SIGTERM) go only to
//! the PIDs spawned here.

use crate::check::NodeView;
use crate::disk::TmpfsMount;
use crate::ports::free_port;
use crate::proxy::ProxyNet;
use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Find a sibling binary `name`: next to the running executable, or one directory up
/// (tests run from `target/<profile>/deps`).
pub fn sibling_binary(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    [dir.join(name), dir.parent()?.join(name)]
        .into_iter()
        .find(|p| p.is_file())
}

/// Find `name` from an explicit path, an environment variable, or beside the executable.
///
/// # Errors
/// Nowhere to be found: the message says how to build it.
pub fn locate_binary(
    explicit: Option<&Path>,
    env: &str,
    name: &str,
    package: &str,
) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    if let Ok(path) = std::env::var(env) {
        return Ok(PathBuf::from(path));
    }
    sibling_binary(name).with_context(|| {
        format!(
            "cannot find the `{name}` binary next to {:?}: build it first (`cargo build -p {package}` with the same profile), or pass its path with {env}",
            std::env::current_exe().unwrap_or_default()
        )
    })
}

/// How to start the cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// The `fencelock` binary.
    pub fencelock_bin: PathBuf,
    /// The `fenced-kv` binary.
    pub fenced_kv_bin: PathBuf,
    /// Where data directories and logs go.
    pub dir: PathBuf,
    /// Raft election timeout (lower bound), ms.
    pub election_timeout_ms: u64,
    /// Raft heartbeat, ms.
    pub heartbeat_ms: u64,
    /// Start the fenced service in `--unfenced` mode (the control run).
    pub unfenced: bool,
    /// Put every node's data directory on a tmpfs of this many bytes, mounted by the run
    /// (the disk-full nemesis fills them; needs root). `None`: plain directories.
    pub tmpfs_bytes: Option<u64>,
}

/// One node's addresses and process.
#[derive(Debug)]
pub struct NodeProcess {
    /// Node id (1..).
    pub id: u64,
    /// Client gRPC address.
    pub client: SocketAddr,
    /// Peer listener.
    pub peer: SocketAddr,
    /// Admin HTTP address.
    pub admin: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    child: Option<Child>,
    paused: bool,
}

/// The cluster: nodes, proxies and the fenced service.
pub struct Cluster {
    config: ClusterConfig,
    nodes: Vec<Mutex<NodeProcess>>,
    /// The per-link proxies.
    pub net: ProxyNet,
    kv: Mutex<Option<Child>>,
    /// The fenced service's address.
    pub kv_addr: SocketAddr,
    /// The fenced service's decision log file.
    pub kv_log_file: PathBuf,
    /// The tmpfs mounts of the data directories, if any: dropped (unmounted) after the
    /// nodes, when the cluster is.
    mounts: Vec<TmpfsMount>,
}

impl Cluster {
    /// Start every node and the fenced service, and wait until a leader is known.
    ///
    /// # Errors
    /// A process cannot be spawned, or no leader within 30 s.
    pub async fn start(config: ClusterConfig) -> anyhow::Result<Cluster> {
        std::fs::create_dir_all(&config.dir)?;
        // Mounted first, so that any later failure unmounts them on the way out.
        let mut mounts = Vec::new();
        if let Some(bytes) = config.tmpfs_bytes {
            for id in 1..=config.nodes as u64 {
                mounts.push(TmpfsMount::mount(
                    &config.dir.join(format!("node-{id}")),
                    bytes,
                )?);
            }
        }
        let mut nodes = Vec::new();
        let mut peers = BTreeMap::new();
        for id in 1..=config.nodes as u64 {
            let node = NodeProcess {
                id,
                client: free_port()?,
                peer: free_port()?,
                admin: free_port()?,
                data_dir: config.dir.join(format!("node-{id}")),
                child: None,
                paused: false,
            };
            peers.insert(id, node.peer);
            nodes.push(Mutex::new(node));
        }
        let net = ProxyNet::start(&peers).await?;
        let kv_addr = free_port()?;
        let kv_log_file = config.dir.join("kv-decisions.jsonl");
        let cluster = Cluster {
            config,
            nodes,
            net,
            kv: Mutex::new(None),
            kv_addr,
            kv_log_file,
            mounts,
        };
        cluster.start_kv()?;
        for id in cluster.ids() {
            cluster.start_node(id)?;
        }
        cluster
            .wait_for_leader(Duration::from_secs(30))
            .await
            .context("the cluster elected no leader")?;
        Ok(cluster)
    }

    fn start_kv(&self) -> anyhow::Result<()> {
        let log = self.config.dir.join("fenced-kv.log");
        let mut command = Command::new(&self.config.fenced_kv_bin);
        command
            .arg("--listen")
            .arg(self.kv_addr.to_string())
            .arg("--log-file")
            .arg(&self.kv_log_file)
            .arg("--log-capacity")
            .arg("10000000")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(append(&log)?);
        if self.config.unfenced {
            command.arg("--unfenced");
        }
        let child = command
            .spawn()
            .with_context(|| format!("spawning {:?}", self.config.fenced_kv_bin))?;
        *self.kv.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        Ok(())
    }

    /// The node ids.
    pub fn ids(&self) -> Vec<u64> {
        (1..=self.nodes.len() as u64).collect()
    }

    fn node(&self, id: u64) -> std::sync::MutexGuard<'_, NodeProcess> {
        self.nodes[(id - 1) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The client addresses of every node (for `Client::connect`).
    pub fn endpoints(&self) -> Vec<String> {
        self.ids()
            .into_iter()
            .map(|id| self.node(id).client.to_string())
            .collect()
    }

    /// The client address of every node, by id.
    pub fn client_addrs(&self) -> BTreeMap<u64, SocketAddr> {
        self.ids()
            .into_iter()
            .map(|id| (id, self.node(id).client))
            .collect()
    }

    /// The `--peers` of node `id`: itself at its own peer listener, every other node at
    /// the proxy of the link from `id` to it.
    fn peers_of(&self, id: u64) -> String {
        self.ids()
            .into_iter()
            .map(|other| {
                let addr = if other == id {
                    self.node(id).peer
                } else {
                    self.net
                        .address(id, other)
                        .expect("a proxy for every ordered pair")
                };
                format!("{other}={addr}")
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Start node `id` (again) on its ports and data directory.
    ///
    /// # Errors
    /// The process cannot be spawned.
    pub fn start_node(&self, id: u64) -> anyhow::Result<()> {
        let peers = self.peers_of(id);
        let mut node = self.node(id);
        if node.child.is_some() {
            return Ok(());
        }
        let log = self.config.dir.join(format!("node-{id}.log"));
        let mut command = Command::new(&self.config.fencelock_bin);
        command.arg("serve");
        if self.has_tmpfs() {
            command.arg("--config").arg(self.small_disk_config()?);
        }
        let child = command
            .arg("--id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(node.client.to_string())
            .arg("--peer-listen")
            .arg(node.peer.to_string())
            .arg("--admin")
            .arg(node.admin.to_string())
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--peers")
            .arg(peers)
            .arg("--election-timeout-ms")
            .arg(self.config.election_timeout_ms.to_string())
            .arg("--heartbeat-ms")
            .arg(self.config.heartbeat_ms.to_string())
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(append(&log)?)
            .stderr(append(&log)?)
            .spawn()
            .with_context(|| format!("spawning {:?}", self.config.fencelock_bin))?;
        node.child = Some(child);
        node.paused = false;
        Ok(())
    }

    /// The settings file of nodes on tmpfs data directories: a small write-ahead file and
    /// frequent snapshots, so that checkpoints into redb and snapshot files — the writes
    /// that need new space — happen every few seconds and a full disk meets them; a free-
    /// space reserve that fits a small disk (the default is larger than the whole tmpfs),
    /// read often, so the NO_SPACE alarm follows the nemesis's filler closely.
    fn small_disk_config(&self) -> anyhow::Result<PathBuf> {
        let path = self.config.dir.join("node-small-disk.toml");
        if !path.exists() {
            std::fs::write(
                &path,
                "# Written by the harness for nodes on small tmpfs data directories.\n\
                 log_wal_bytes = 262144\n\
                 snapshot_every_entries = 500\n\
                 log_entries_kept_after_snapshot = 250\n\
                 disk_reserve_bytes = 8388608\n\
                 disk_check_interval = 200\n",
            )?;
        }
        Ok(path)
    }

    fn signal(&self, id: u64, signal: Signal) -> bool {
        let node = self.node(id);
        match &node.child {
            Some(child) => {
                let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
                kill(pid, signal).is_ok()
            }
            None => false,
        }
    }

    /// kill -9 node `id` and reap it.
    pub fn kill(&self, id: u64) {
        self.signal(id, Signal::SIGKILL);
        let mut node = self.node(id);
        if let Some(mut child) = node.child.take() {
            let _ = child.wait();
        }
        node.paused = false;
    }

    /// Stop node `id` gracefully (SIGTERM, then SIGKILL after 10 s).
    pub async fn terminate(&self, id: u64) {
        let _ = self.resume(id);
        if !self.signal(id, Signal::SIGTERM) {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let exited = {
                let mut node = self.node(id);
                match node.child.as_mut().map(Child::try_wait) {
                    Some(Ok(Some(_))) | None => {
                        node.child = None;
                        true
                    }
                    _ => false,
                }
            };
            if exited {
                return;
            }
            if Instant::now() > deadline {
                self.kill(id);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGSTOP node `id`.
    pub fn pause(&self, id: u64) -> bool {
        let done = self.signal(id, Signal::SIGSTOP);
        if done {
            self.node(id).paused = true;
        }
        done
    }

    /// SIGCONT node `id`.
    pub fn resume(&self, id: u64) -> bool {
        let done = self.signal(id, Signal::SIGCONT);
        self.node(id).paused = false;
        done
    }

    /// Whether node `id` has a running (possibly paused) process. A process that exited
    /// by itself (a crash) is reaped here and counts as not running.
    pub fn is_running(&self, id: u64) -> bool {
        let mut node = self.node(id);
        if let Some(Ok(Some(_))) = node.child.as_mut().map(Child::try_wait) {
            node.child = None;
            node.paused = false;
        }
        node.child.is_some()
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.node(id).data_dir.clone()
    }

    /// Whether the data directories are tmpfs mounts of the run's own (the disk-full
    /// nemesis can fill them).
    pub fn has_tmpfs(&self) -> bool {
        !self.mounts.is_empty()
    }

    /// Resume every paused node and start every stopped one (killed, or exited by
    /// itself: as a service manager would restart it).
    ///
    /// # Errors
    /// A process cannot be spawned.
    pub fn revive_all(&self) -> anyhow::Result<()> {
        for id in self.ids() {
            if self.node(id).paused {
                self.resume(id);
            }
            if !self.is_running(id) {
                self.start_node(id)?;
            }
        }
        Ok(())
    }

    /// Node `id`'s `/status`, if it answers within 1 s.
    pub async fn status(&self, id: u64) -> Option<NodeView> {
        let admin = self.node(id).admin;
        let body = http_get(admin, "/status", Duration::from_secs(1)).await?;
        let value: serde_json::Value = serde_json::from_str(&body).ok()?;
        Some(NodeView {
            node_id: value["node_id"].as_u64()?,
            leader_id: value["leader_id"].as_u64(),
            term: value["term"].as_u64().unwrap_or(0),
            applied_index: value["applied_index"].as_u64().unwrap_or(0),
            last_token: value["last_token"].as_u64().unwrap_or(0),
            sessions: value["sessions"].as_u64().unwrap_or(0),
            locks: value["locks"].as_u64().unwrap_or(0),
        })
    }

    /// The leader as the running, unpaused nodes see it: the one id a majority of the
    /// answers name.
    pub async fn leader(&self) -> Option<u64> {
        let mut votes: BTreeMap<u64, usize> = BTreeMap::new();
        for id in self.ids() {
            if !self.is_running(id) || self.node(id).paused {
                continue;
            }
            if let Some(view) = self.status(id).await
                && let Some(leader) = view.leader_id
            {
                *votes.entry(leader).or_default() += 1;
            }
        }
        votes.into_iter().max_by_key(|&(_, n)| n).map(|(id, _)| id)
    }

    /// Wait until some node names a leader.
    ///
    /// # Errors
    /// None within `limit`.
    pub async fn wait_for_leader(&self, limit: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(leader) = self.leader().await {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                bail!("no leader after {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stop everything (nodes gracefully when `graceful`, else kill -9) and the fenced
    /// service.
    pub async fn shutdown(&self, graceful: bool) {
        for id in self.ids() {
            if graceful {
                self.terminate(id).await;
            } else {
                self.kill(id);
            }
        }
        if let Some(mut child) = self.kv.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
            let _ = kill(pid, Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    /// Kill every process; the tmpfs mounts (a field) are dropped after this, so after the
    /// nodes that used them.
    fn drop(&mut self) {
        for id in self.ids() {
            self.kill(id);
        }
        if let Some(mut child) = self.kv.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
            let _ = kill(pid, Signal::SIGKILL);
            let _ = child.wait();
        }
    }
}

fn append(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// A minimal HTTP/1.0 GET: the body of a 200 answer.
pub async fn http_get(addr: SocketAddr, path: &str, limit: Duration) -> Option<String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8(response).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200")
            .then(|| body.to_string())
            .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_string()))
    };
    tokio::time::timeout(limit, exchange).await.ok().flatten()
}
