//! The systems under test: how each is started on loopback ports with its data under a
//! temporary directory, how the harness finds its leader, and how it is stopped.

use crate::etcd_pb::etcdserverpb::{StatusRequest, maintenance_client::MaintenanceClient};
use crate::procs::{Proc, free_port};
use anyhow::{Context, Result, bail};
use fencelock_proto::v1::{StatusRequest as FlStatusRequest, cluster_client::ClusterClient};
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Which server software.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// fencelock (fsync on, its default).
    Fencelock,
    /// etcd through its v3 lock API (fsync on, its default).
    Etcd,
    /// ZooKeeper with the ephemeral-sequential recipe (forceSync default: yes).
    Zookeeper,
    /// Redis, no persistence.
    Redis,
    /// Redis with `appendonly yes`, `appendfsync always`.
    RedisAof,
}

/// One system under test: a kind and a node count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The software.
    pub kind: Kind,
    /// How many nodes (1 or 3; Redis is always 1).
    pub nodes: usize,
}

impl Spec {
    /// Every system the benchmark knows, in report order.
    pub const ALL: [Spec; 8] = [
        Spec::new(Kind::Fencelock, 1),
        Spec::new(Kind::Fencelock, 3),
        Spec::new(Kind::Etcd, 1),
        Spec::new(Kind::Etcd, 3),
        Spec::new(Kind::Zookeeper, 1),
        Spec::new(Kind::Zookeeper, 3),
        Spec::new(Kind::Redis, 1),
        Spec::new(Kind::RedisAof, 1),
    ];

    /// A spec.
    pub const fn new(kind: Kind, nodes: usize) -> Spec {
        Spec { kind, nodes }
    }

    /// Parses a name as printed by `Display` ("fencelock-3", "redis-aof").
    pub fn parse(name: &str) -> Result<Spec> {
        Spec::ALL
            .into_iter()
            .find(|s| s.to_string() == name)
            .with_context(|| {
                let known: Vec<String> = Spec::ALL.iter().map(ToString::to_string).collect();
                format!("unknown system {name:?}; known: {}", known.join(", "))
            })
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Fencelock => write!(f, "fencelock-{}", self.nodes),
            Kind::Etcd => write!(f, "etcd-{}", self.nodes),
            Kind::Zookeeper => write!(f, "zookeeper-{}", self.nodes),
            Kind::Redis => f.write_str("redis"),
            Kind::RedisAof => f.write_str("redis-aof"),
        }
    }
}

/// Where the harness finds the server binaries.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// `fencelock`.
    pub fencelock: PathBuf,
    /// The fencelock nodes' `--log-level`.
    pub fencelock_log_level: String,
    /// Each fencelock node's `--worker-threads`; `None` for (cores - 1) / nodes, at least 1.
    pub fencelock_worker_threads: Option<usize>,
    /// Leave each system's data directory (and its node logs) behind.
    pub keep_data: bool,
    /// Run fencelock nodes with `--commit-trace`, their files under this directory.
    pub commit_trace: Option<PathBuf>,
    /// More arguments for every fencelock node (global flags such as `--log-format`).
    pub fencelock_extra_args: Vec<String>,
}

/// The `--commit-trace` prefix of `system`'s nodes under `dir` (files `<prefix>.<node id>`).
pub fn commit_trace_prefix(dir: &Path, system: &str) -> PathBuf {
    dir.join(system)
}

/// How a node process is started: what `Cluster::restart` runs again.
struct Launch {
    label: String,
    program: OsString,
    args: Vec<OsString>,
    log: PathBuf,
}

impl Launch {
    fn spawn(&self) -> Result<Proc> {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        Proc::spawn(self.label.clone(), command, &self.log)
    }
}

/// A running system: its processes (index = node - 1) and client addresses.
pub struct Cluster {
    /// What it is.
    pub spec: Spec,
    /// The node processes; `None` once killed by the failover workload.
    pub procs: Vec<Option<Proc>>,
    /// How each node was started, to start it again on the same data.
    launches: Vec<Launch>,
    /// Each node's client address, `host:port`.
    pub client_addrs: Vec<String>,
    /// etcd only: each node's member id, to map the leader id to a node.
    etcd_member_ids: Vec<u64>,
    /// Kept so the data outlives the processes.
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `spec` with data under `root` and waits until it serves.
    pub async fn start(spec: Spec, bins: &Binaries, root: &Path) -> Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{spec}-"))
            .disable_cleanup(bins.keep_data)
            .tempdir_in(root)?;
        let mut cluster = Cluster {
            spec,
            procs: Vec::new(),
            launches: Vec::new(),
            client_addrs: Vec::new(),
            etcd_member_ids: Vec::new(),
            _dir: dir,
        };
        let dir = cluster._dir.path().to_owned();
        match spec.kind {
            Kind::Fencelock => cluster.start_fencelock(bins, &dir)?,
            Kind::Etcd => cluster.start_etcd(&dir)?,
            Kind::Zookeeper => cluster.start_zookeeper(&dir)?,
            Kind::Redis | Kind::RedisAof => cluster.start_redis(&dir)?,
        }
        cluster
            .wait_ready(Duration::from_secs(60))
            .await
            .with_context(|| format!("{spec} did not become ready; logs in {}", dir.display()))?;
        Ok(cluster)
    }

    fn start_fencelock(&mut self, bins: &Binaries, dir: &Path) -> Result<()> {
        let n = self.spec.nodes;
        let client: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_>>()?;
        let peer: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_>>()?;
        let admin: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_>>()?;
        let peers = (0..n)
            .map(|i| format!("{}=127.0.0.1:{}", i + 1, peer[i]))
            .collect::<Vec<_>>()
            .join(",");
        let worker_threads = bins.fencelock_worker_threads.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
            (cores.saturating_sub(1) / n).max(1)
        });
        for i in 0..n {
            let mut cmd = Command::new(&bins.fencelock);
            cmd.arg("serve")
                .args(["--worker-threads", &worker_threads.to_string()])
                .args(["--id", &(i + 1).to_string()])
                .args(["--listen", &format!("127.0.0.1:{}", client[i])])
                .args(["--peer-listen", &format!("127.0.0.1:{}", peer[i])])
                .args(["--admin", &format!("127.0.0.1:{}", admin[i])])
                .arg("--data-dir")
                .arg(dir.join(format!("node-{}", i + 1)))
                .args(["--peers", &peers])
                .args(["--log-level", &bins.fencelock_log_level])
                .args(&bins.fencelock_extra_args);
            if let Some(dir) = &bins.commit_trace {
                std::fs::create_dir_all(dir)?;
                let prefix = commit_trace_prefix(dir, &self.spec.to_string());
                // A fresh file per benchmark: the nodes append.
                let _ = std::fs::remove_file(fencelock_server::commit_trace::trace_file(
                    &prefix,
                    i as u64 + 1,
                ));
                cmd.arg("--commit-trace").arg(prefix);
            }
            let label = format!("{} node {}", self.spec, i + 1);
            let log = dir.join(format!("node-{}.log", i + 1));
            self.launch(label, &cmd, log)?;
            self.client_addrs.push(format!("127.0.0.1:{}", client[i]));
        }
        Ok(())
    }

    fn start_etcd(&mut self, dir: &Path) -> Result<()> {
        let n = self.spec.nodes;
        let client: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_>>()?;
        let peer: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_>>()?;
        let initial = (0..n)
            .map(|i| format!("n{}=http://127.0.0.1:{}", i + 1, peer[i]))
            .collect::<Vec<_>>()
            .join(",");
        for i in 0..n {
            let mut cmd = Command::new("etcd");
            cmd.args(["--name", &format!("n{}", i + 1)])
                .arg("--data-dir")
                .arg(dir.join(format!("node-{}", i + 1)))
                .arg(format!(
                    "--listen-client-urls=http://127.0.0.1:{}",
                    client[i]
                ))
                .arg(format!(
                    "--advertise-client-urls=http://127.0.0.1:{}",
                    client[i]
                ))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{}", peer[i]))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{}",
                    peer[i]
                ))
                .arg(format!("--initial-cluster={initial}"))
                .arg("--initial-cluster-state=new")
                .arg("--initial-cluster-token=fencelock-bench")
                .arg("--logger=zap")
                .arg("--log-level=warn");
            let label = format!("{} node {}", self.spec, i + 1);
            let log = dir.join(format!("node-{}.log", i + 1));
            self.launch(label, &cmd, log)?;
            self.client_addrs.push(format!("127.0.0.1:{}", client[i]));
        }
        Ok(())
    }

    #[allow(clippy::needless_range_loop)] // i is the node number in paths and ids too
    fn start_zookeeper(&mut self, dir: &Path) -> Result<()> {
        let n = self.spec.nodes;
        let client: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_>>()?;
        let quorum: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_>>()?;
        let election: Vec<u16> = (0..n).map(|_| free_port()).collect::<Result<_>>()?;
        for i in 0..n {
            let node = dir.join(format!("node-{}", i + 1));
            std::fs::create_dir_all(node.join("data"))?;
            let mut cfg = format!(
                "tickTime=2000\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={}\n\
                 clientPortAddress=127.0.0.1\nmaxClientCnxns=0\nadmin.enableServer=false\n\
                 4lw.commands.whitelist=*\n",
                node.join("data").display(),
                client[i]
            );
            if n > 1 {
                for j in 0..n {
                    cfg.push_str(&format!(
                        "server.{}=127.0.0.1:{}:{}\n",
                        j + 1,
                        quorum[j],
                        election[j]
                    ));
                }
                std::fs::write(node.join("data/myid"), format!("{}\n", i + 1))?;
            }
            std::fs::write(node.join("zoo.cfg"), cfg)?;
            // Console logging at WARN (the classpath's first entry wins for logback.xml).
            std::fs::write(
                node.join("logback.xml"),
                "<configuration><appender name=\"C\" class=\"ch.qos.logback.core.ConsoleAppender\">\
                 <encoder><pattern>%d %-5level %logger{36} - %msg%n</pattern></encoder></appender>\
                 <root level=\"WARN\"><appender-ref ref=\"C\"/></root></configuration>\n",
            )?;
            let mut cmd = Command::new("java");
            cmd.arg("-cp")
                .arg(format!("{}:/usr/share/java/zookeeper.jar", node.display()))
                .arg(format!("-Dzookeeper.log.dir={}", node.display()))
                .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
                .arg(node.join("zoo.cfg"));
            let label = format!("{} node {}", self.spec, i + 1);
            let log = dir.join(format!("node-{}.log", i + 1));
            self.launch(label, &cmd, log)?;
            self.client_addrs.push(format!("127.0.0.1:{}", client[i]));
        }
        Ok(())
    }

    fn start_redis(&mut self, dir: &Path) -> Result<()> {
        let port = free_port()?;
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args(["--save", ""])
            .args(["--daemonize", "no"])
            .args(["--protected-mode", "no"]);
        if self.spec.kind == Kind::RedisAof {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let label = self.spec.to_string();
        self.launch(label, &cmd, dir.join("redis.log"))?;
        self.client_addrs.push(format!("127.0.0.1:{port}"));
        Ok(())
    }

    /// Starts a node and remembers how, for [`Cluster::restart`].
    fn launch(&mut self, label: String, command: &Command, log: PathBuf) -> Result<()> {
        let launch = Launch {
            label,
            program: command.get_program().to_owned(),
            args: command.get_args().map(ToOwned::to_owned).collect(),
            log,
        };
        self.procs.push(Some(launch.spawn()?));
        self.launches.push(launch);
        Ok(())
    }

    /// Starts a killed node (0-based) again on its data, with the same arguments, and
    /// waits until the system serves again.
    pub async fn restart(&mut self, node: usize, timeout: Duration) -> Result<()> {
        self.spawn(node)?;
        self.wait_ready(timeout).await
    }

    /// Starts a stopped node (0-based) again on its data, with the same arguments, and
    /// returns at once.
    pub fn spawn(&mut self, node: usize) -> Result<()> {
        if self.procs[node].is_none() {
            self.procs[node] = Some(self.launches[node].spawn()?);
        }
        Ok(())
    }

    /// Stops one node (0-based): SIGTERM, up to `grace` to exit, then SIGKILL.
    pub fn stop_node(&mut self, node: usize, grace: Duration) {
        if let Some(mut p) = self.procs[node].take() {
            p.stop(grace);
        }
    }

    /// The file a node's output goes to (0-based).
    pub fn log_path(&self, node: usize) -> &Path {
        &self.launches[node].log
    }

    /// The directory every node's data and log is under.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    async fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            for p in self.procs.iter_mut().flatten() {
                if !p.alive() {
                    bail!("{} exited during start-up", p.label);
                }
            }
            if self.ready().await.unwrap_or(false) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("not ready after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn ready(&mut self) -> Result<bool> {
        match self.spec.kind {
            Kind::Fencelock => Ok(self.leader().await?.is_some()),
            Kind::Etcd => {
                let mut ids = Vec::new();
                for addr in &self.client_addrs {
                    let status = etcd_status(addr).await?;
                    if status.leader == 0 {
                        return Ok(false);
                    }
                    ids.push(status.header.map(|h| h.member_id).unwrap_or(0));
                }
                self.etcd_member_ids = ids;
                Ok(true)
            }
            Kind::Zookeeper => {
                for addr in &self.client_addrs {
                    let client = tokio::time::timeout(
                        Duration::from_secs(3),
                        zookeeper_client::Client::connect(addr),
                    )
                    .await??;
                    // A write proves a quorum.
                    match client
                        .create(
                            "/bench-ready",
                            b"",
                            &zookeeper_client::CreateMode::Persistent
                                .with_acls(zookeeper_client::Acls::anyone_all()),
                        )
                        .await
                    {
                        Ok(_) | Err(zookeeper_client::Error::NodeExists) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(true)
            }
            Kind::Redis | Kind::RedisAof => {
                let client = redis::Client::open(format!("redis://{}/", self.client_addrs[0]))?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                let pong: String = redis::cmd("PING").query_async(&mut conn).await?;
                Ok(pong == "PONG")
            }
        }
    }

    /// The leader's node index (0-based), if there is one. Redis and ZooKeeper-1: node 0.
    pub async fn leader(&self) -> Result<Option<usize>> {
        match self.spec.kind {
            Kind::Fencelock => {
                let mut leader = None;
                for (i, addr) in self.client_addrs.iter().enumerate() {
                    if self.procs[i].is_none() {
                        continue;
                    }
                    let status = fencelock_status(addr).await?;
                    if status.leader_id == 0 {
                        return Ok(None);
                    }
                    leader = Some(status.leader_id as usize - 1);
                }
                Ok(leader)
            }
            Kind::Etcd => {
                for (i, addr) in self.client_addrs.iter().enumerate() {
                    if self.procs[i].is_none() {
                        continue;
                    }
                    let status = etcd_status(addr).await?;
                    return Ok(self
                        .etcd_member_ids
                        .iter()
                        .position(|&m| m == status.leader));
                }
                Ok(None)
            }
            Kind::Zookeeper if self.spec.nodes > 1 => {
                // The `srvr` four-letter word names each node's mode.
                for (i, addr) in self.client_addrs.iter().enumerate() {
                    if self.procs[i].is_none() {
                        continue;
                    }
                    if four_letter(addr, "srvr").await?.contains("Mode: leader") {
                        return Ok(Some(i));
                    }
                }
                Ok(None)
            }
            _ => Ok(Some(0)),
        }
    }

    /// fencelock only: one node's (0-based) `Status` answer.
    pub async fn status(&self, node: usize) -> Result<fencelock_proto::v1::StatusResponse> {
        fencelock_status(&self.client_addrs[node]).await
    }

    /// The live processes.
    pub fn live(&self) -> impl Iterator<Item = &Proc> {
        self.procs.iter().flatten()
    }

    /// Total CPU seconds of all live nodes.
    pub fn cpu_secs(&self) -> f64 {
        self.live().map(Proc::cpu_secs).sum()
    }

    /// RSS of each node (0 for a killed one).
    pub fn rss_each(&self) -> Vec<u64> {
        self.procs
            .iter()
            .map(|p| p.as_ref().map_or(0, Proc::rss))
            .collect()
    }

    /// Stops every node.
    pub fn stop(&mut self) {
        for p in self.procs.iter_mut().flatten() {
            p.stop(Duration::from_secs(10));
        }
    }
}

/// A fencelock node's `Status` answer (its own view, no read barrier).
pub async fn fencelock_status(addr: &str) -> Result<fencelock_proto::v1::StatusResponse> {
    tokio::time::timeout(STATUS_TIMEOUT, async {
        let mut client = ClusterClient::connect(format!("http://{addr}")).await?;
        Ok(client.status(FlStatusRequest {}).await?.into_inner())
    })
    .await?
}

/// etcd's Maintenance.Status of one member.
pub async fn etcd_status(addr: &str) -> Result<crate::etcd_pb::etcdserverpb::StatusResponse> {
    tokio::time::timeout(STATUS_TIMEOUT, async {
        let mut client = MaintenanceClient::connect(format!("http://{addr}")).await?;
        Ok(client.status(StatusRequest {}).await?.into_inner())
    })
    .await?
}

/// How long a status probe may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends a ZooKeeper four-letter command and returns the answer.
async fn four_letter(addr: &str, word: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream =
        tokio::time::timeout(STATUS_TIMEOUT, tokio::net::TcpStream::connect(addr)).await??;
    stream.write_all(word.as_bytes()).await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(3), stream.read_to_string(&mut out)).await??;
    Ok(out)
}
