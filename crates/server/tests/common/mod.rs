//! An in-process cluster on loopback for the server's integration tests: real gRPC
//! listeners on port 0, real redb logs in temp dirs, real Raft traffic between nodes.
#![allow(dead_code)]

use fencelock_proto::v1 as pb;
use fencelock_proto::v1::cluster_client::ClusterClient;
use fencelock_proto::v1::locks_client::LocksClient;
use fencelock_server::config::{Bootstrap, ServerConfig};
use fencelock_server::node::{Listeners, RunningNode, start_with_listeners};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// How long tests wait for the cluster to settle before failing.
pub const SETTLE: Duration = Duration::from_secs(10);

/// One node's fixed identity: id, addresses and data dir survive restarts.
pub struct Slot {
    pub id: u64,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    pub data_dir: PathBuf,
    pub running: Option<RunningNode>,
}

/// A cluster of in-process nodes.
pub struct TestCluster {
    pub slots: Vec<Slot>,
    pub members: BTreeMap<u64, String>,
    _dir: tempfile::TempDir,
    tweak: fn(&mut ServerConfig),
}

fn free_listener() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback")
}

/// Fast timings so tests finish in seconds.
pub fn fast(config: &mut ServerConfig) {
    config.heartbeat_interval = Duration::from_millis(50);
    config.election_timeout = Duration::from_millis(300);
    config.expiry_tick = Duration::from_millis(20);
    config.request_timeout = Duration::from_secs(3);
}

impl TestCluster {
    /// Start `n` voters with the same `--peers`.
    pub async fn start(n: u64) -> TestCluster {
        Self::start_with(n, fast).await
    }

    /// Start `n` voters, adjusting each node's config with `tweak`.
    pub async fn start_with(n: u64, tweak: fn(&mut ServerConfig)) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
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
        };
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
            listen: slot.client,
            peer_listen: slot.peer,
            admin_listen: None,
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

    pub async fn locks(&self, index: usize) -> LocksClient<Channel> {
        LocksClient::new(channel(self.slots[index].client).await)
    }

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

    pub async fn shutdown(mut self) {
        for index in 0..self.slots.len() {
            self.stop(index).await;
        }
    }
}

pub async fn channel(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .expect("connect")
}

pub fn client_id(n: u128) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

pub fn rid(seq: u64) -> Option<pb::RequestId> {
    Some(pb::RequestId {
        seq,
        first_unanswered_seq: seq,
    })
}

pub async fn open_session(client: &mut LocksClient<Channel>, id: u128, ttl_ms: u64) -> u64 {
    client
        .open_session(pb::OpenSessionRequest {
            client_id: client_id(id),
            ttl_ms,
        })
        .await
        .expect("open session")
        .into_inner()
        .session_id
}

pub fn acquire_request(
    session: u64,
    name: &str,
    seq: u64,
    wait: pb::WaitPolicy,
) -> pb::AcquireRequest {
    pb::AcquireRequest {
        session_id: session,
        name: name.to_string(),
        mode: pb::LockMode::Exclusive as i32,
        wait: wait as i32,
        wait_timeout_ms: if wait == pb::WaitPolicy::Timeout {
            5_000
        } else {
            0
        },
        request: rid(seq),
        ..Default::default()
    }
}

/// Try to take `name` at once; the token if granted.
pub async fn try_lock(
    client: &mut LocksClient<Channel>,
    session: u64,
    name: &str,
    seq: u64,
) -> Option<u64> {
    let response = client
        .acquire(acquire_request(session, name, seq, pb::WaitPolicy::NoWait))
        .await
        .expect("acquire")
        .into_inner();
    (response.outcome == pb::AcquireOutcome::Granted as i32).then_some(response.token)
}

/// The reason carried by a status.
pub fn reason_of(status: &tonic::Status) -> pb::ErrorReason {
    fencelock_server::api::status::detail_of(status)
        .and_then(|d| pb::ErrorReason::try_from(d.reason).ok())
        .unwrap_or(pb::ErrorReason::Unspecified)
}

/// Keep `sessions` alive over one stream until the returned sender is dropped.
pub async fn keep_alive(
    client: &mut LocksClient<Channel>,
    sessions: Vec<u64>,
    every: Duration,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let (requests, outbound) = tokio::sync::mpsc::channel(64);
    let mut inbound = client
        .keep_alive(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
        .expect("keepalive stream")
        .into_inner();
    tokio::spawn(async move {
        loop {
            for session in &sessions {
                if requests
                    .send(pb::KeepAliveRequest {
                        session_id: *session,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            for _ in &sessions {
                if inbound.message().await.ok().flatten().is_none() {
                    return;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = &mut stopped => return,
            }
        }
    });
    stop
}
