//! The parts of a running node that the API services share ([`Node`]): Raft, the applied
//! state, the write and read paths, the lease clock, and what the node knows about its
//! peers. [`crate::startup`] builds it; `duties` runs the leader's background work.

use crate::admin;
use crate::auth::CatchUp;
use crate::barrier::{BarrierError, ReadBarrier};
use crate::config::ServerConfig;
use crate::events::EventHub;
use crate::leases::LeaseClock;
use crate::limits;
use crate::proposer::Proposer;
use crate::raft::network::{PeerChannels, ReadIndexSource};
use crate::raft::{NodeId, Raft};
use crate::space::DiskSpace;
use crate::status::{MemberStatus, NodeStatus};
use crate::store::SharedState;
use fencelock_proto::peer::{NodeInfoRequest, ReadIndexRequest};
use futures::future::BoxFuture;
use openraft::ServerState;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Client addresses of the members, learned over the peer service.
#[derive(Default)]
pub struct PeerDirectory {
    client_addrs: Mutex<HashMap<NodeId, String>>,
}

impl PeerDirectory {
    /// The cached client address of `node`.
    pub fn client_addr(&self, node: NodeId) -> Option<String> {
        self.client_addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node)
            .cloned()
    }

    fn remember(&self, node: NodeId, client_addr: String) {
        self.client_addrs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node, client_addr);
    }
}

/// The parts of a node that the API services share.
pub struct Node {
    id: NodeId,
    config: ServerConfig,
    raft: Raft,
    shared: Arc<SharedState>,
    hub: Arc<EventHub>,
    leases: Arc<LeaseClock>,
    proposer: Proposer,
    barrier: ReadBarrier,
    peers: PeerDirectory,
    disk: Arc<DiskSpace>,
    channels: PeerChannels,
    commit_index: AtomicU64,
    stopping: watch::Receiver<bool>,
}

/// What start-up hands to [`Node::new`].
pub(crate) struct NodeParts {
    pub(crate) config: ServerConfig,
    pub(crate) raft: Raft,
    pub(crate) shared: Arc<SharedState>,
    pub(crate) hub: Arc<EventHub>,
    pub(crate) leases: Arc<LeaseClock>,
    pub(crate) proposer: Proposer,
    pub(crate) barrier: ReadBarrier,
    pub(crate) disk: Arc<DiskSpace>,
    pub(crate) channels: PeerChannels,
    pub(crate) stopping: watch::Receiver<bool>,
}

impl Node {
    pub(crate) fn new(parts: NodeParts) -> Node {
        Node {
            id: parts.config.node_id,
            config: parts.config,
            raft: parts.raft,
            shared: parts.shared,
            hub: parts.hub,
            leases: parts.leases,
            proposer: parts.proposer,
            barrier: parts.barrier,
            peers: PeerDirectory::default(),
            disk: parts.disk,
            channels: parts.channels,
            commit_index: AtomicU64::new(0),
            stopping: parts.stopping,
        }
    }

    /// The Raft handle.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The applied state.
    pub fn shared(&self) -> &Arc<SharedState> {
        &self.shared
    }

    /// Wait and watch notifications.
    pub fn hub(&self) -> &Arc<EventHub> {
        &self.hub
    }

    /// The leader's lease clock.
    pub fn leases(&self) -> &Arc<LeaseClock> {
        &self.leases
    }

    /// The write path.
    pub fn proposer(&self) -> &Proposer {
        &self.proposer
    }

    /// The linearizable read path.
    pub fn barrier(&self) -> &ReadBarrier {
        &self.barrier
    }

    /// Client addresses of peers.
    pub fn peers(&self) -> &PeerDirectory {
        &self.peers
    }

    /// Free space on the data disk and the NO_SPACE alarm.
    pub fn disk(&self) -> &Arc<DiskSpace> {
        &self.disk
    }

    /// Remember the latest commit index Raft reported (the leadership watch refreshes it).
    pub(crate) fn set_commit_index(&self, index: u64) {
        self.commit_index.store(index, Ordering::Relaxed);
    }

    /// Resolves when the node starts shutting down; long-lived streams end then, so the
    /// servers' graceful shutdown does not wait for clients to hang up.
    pub async fn stopping(&self) {
        let mut stopping = self.stopping.clone();
        let _ = stopping.wait_for(|stop| *stop).await;
    }

    /// Fault injection for in-process tests (`test-support` builds only): cut Raft
    /// traffic from this node to `targets` (see [`PeerChannels::set_blocked`]).
    #[cfg(feature = "test-support")]
    pub fn cut_links_to(&self, targets: impl IntoIterator<Item = NodeId>) {
        self.channels.set_blocked(targets.into_iter().collect());
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Its configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Resolves once this node is known not to lead: another leader is known, or a
    /// quorum round fails (an isolated leader keeps its own view of leadership in Raft,
    /// so only a failed round reveals it). Rounds are shared through the read barrier,
    /// one per election timeout however many callers wait. Returns the leader it then
    /// knows, if any.
    pub async fn leadership_lost(&self) -> Option<NodeId> {
        let mut metrics = self.raft.metrics();
        let id = self.id;
        // One timer for the whole wait: metrics change often and must not restart it.
        let mut check = tokio::time::interval(self.config.raft.election_timeout);
        check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        check.tick().await;
        loop {
            let leader = metrics.borrow_and_update().current_leader;
            if leader != Some(id) {
                return leader;
            }
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return None },
                _ = check.tick() => {
                    if self.barrier.confirm().await.is_err() {
                        return self.leader().filter(|leader| *leader != id);
                    }
                }
            }
        }
    }

    /// The current leader, if known (never this node unless it leads).
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// The client address of `node`, if known.
    pub fn client_addr_of(&self, node: NodeId) -> Option<String> {
        if node == self.id {
            Some(self.config.client_advertise_addr())
        } else {
            self.peers.client_addr(node)
        }
    }

    /// The highest protocol version every member (voter or learner, this node
    /// included) speaks, as far as this node knows: each peer says so when a Raft link
    /// to it opens (`raft::link`). `None` while a member's versions are unknown.
    pub fn version_every_member_speaks(&self) -> Option<u32> {
        let membership = self.raft.metrics().borrow().membership_config.clone();
        let mut version = self.config.raft.protocol_versions().max;
        for (id, member) in membership.membership().nodes() {
            if *id != self.id {
                version = version.min(self.channels.peer_versions(&member.peer_addr)?.max);
            }
        }
        Some(version)
    }

    /// What the node knows right now.
    pub fn status(&self) -> NodeStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| MemberStatus {
                id: *id,
                peer_addr: node.peer_addr.clone(),
                client_addr: self.client_addr_of(*id),
                voter: voters.contains(id),
            })
            .collect();
        let (stats, oldest_grant) = self.shared.read(|applied| {
            (
                applied.state.stats(),
                crate::status::OldestGrant::of(&applied.state, crate::proposer::wall_clock_ms()),
            )
        });
        let state = match metrics.running_state {
            Err(_) => "Shutdown".to_string(),
            Ok(()) => match metrics.state {
                ServerState::Leader => "Leader",
                ServerState::Follower => "Follower",
                ServerState::Candidate => "Candidate",
                ServerState::Learner => "Learner",
                ServerState::Shutdown => "Shutdown",
            }
            .to_string(),
        };
        NodeStatus {
            node_id: self.id,
            state,
            leader_id: metrics.current_leader,
            leader_client_addr: metrics.current_leader.and_then(|l| self.client_addr_of(l)),
            term: metrics.current_term,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            // Applied entries are committed: the cached commit index is never behind them.
            commit_index: self
                .commit_index
                .load(Ordering::Relaxed)
                .max(metrics.last_applied.map(|l| l.index).unwrap_or(0)),
            applied_index: metrics.last_applied.map(|l| l.index).unwrap_or(0),
            members,
            sessions: stats.sessions,
            locks: stats.locks,
            held_grants: stats.held_grants,
            waiters: stats.waiters,
            last_token: stats.last_token,
            total_grants: stats.total_grants,
            total_expired_sessions: stats.total_expired_sessions,
            disk: self.disk.status(),
            oldest_grant,
            cluster_version: self.shared.read(|applied| applied.state.cluster_version()),
        }
    }

    /// Ask `node` for its client address over the peer service and remember it.
    pub async fn learn_client_addr(&self, node: NodeId) -> Option<String> {
        if node == self.id {
            return Some(self.config.client_advertise_addr());
        }
        let peer_addr = self.peer_addr_of(node)?;
        let mut client = self.channels.client(&peer_addr).ok()?;
        let mut request = tonic::Request::new(NodeInfoRequest {});
        request.set_timeout(Duration::from_secs(1));
        let info = client.node_info(request).await.ok()?.into_inner();
        if info.node_id != node {
            tracing::warn!(node, answered = info.node_id, %peer_addr, "peer address answers as another node");
            return None;
        }
        self.peers.remember(node, info.client_addr.clone());
        Some(info.client_addr)
    }

    /// The peer address of member `node`, if it is one.
    fn peer_addr_of(&self, node: NodeId) -> Option<String> {
        let metrics = self.raft.metrics().borrow().clone();
        metrics
            .membership_config
            .membership()
            .get_node(&node)
            .map(|n| n.peer_addr.clone())
    }

    /// Wait until this node has applied everything committed before the call: a read
    /// barrier that also works on a follower, which asks the leader for its read index
    /// (`ReadIndex` on the peer service) and waits to apply up to it. At most the
    /// configured `request_timeout`. False when it could not: no leader known, the
    /// leader unreachable or no longer leading, the time up.
    pub async fn catch_up(&self) -> bool {
        let timeout = self.config.write_path.request_timeout;
        tokio::time::timeout(timeout, self.catch_up_unbounded())
            .await
            .unwrap_or(false)
    }

    async fn catch_up_unbounded(&self) -> bool {
        let leader = match self.barrier.confirm().await {
            Ok(()) => return true,
            Err(BarrierError::NotLeader {
                leader: Some(leader),
            }) if leader != self.id => leader,
            Err(_) => return false,
        };
        let Some(peer_addr) = self.peer_addr_of(leader) else {
            return false;
        };
        let Ok(mut client) = self.channels.client(&peer_addr) else {
            return false;
        };
        let index = match client.read_index(ReadIndexRequest {}).await {
            Ok(reply) if reply.get_ref().confirmed => reply.into_inner().index,
            _ => return false,
        };
        self.raft
            .wait(None)
            .applied_index_at_least(Some(index), "caught up with the leader's read index")
            .await
            .is_ok()
    }
}

impl CatchUp for Node {
    fn catch_up(&self) -> BoxFuture<'_, bool> {
        Box::pin(Node::catch_up(self))
    }
}

impl ReadIndexSource for Node {
    fn read_index(&self) -> BoxFuture<'_, Option<u64>> {
        Box::pin(async move {
            self.barrier.confirm().await.ok()?;
            Some(
                self.shared
                    .read(|applied| applied.last_applied.map_or(0, |l| l.index)),
            )
        })
    }
}

impl admin::AdminSource for Node {
    fn status(&self) -> NodeStatus {
        Node::status(self)
    }

    fn locks_overview(&self) -> admin::LocksOverview {
        self.shared.read(|applied| admin::LocksOverview {
            top_queues: applied
                .state
                .busiest_locks(limits::STATUS_TOP_QUEUES, limits::STATUS_LOCK_SCAN),
            held: applied.state.held_locks_sample(limits::STATUS_HELD_SAMPLE),
            longest_held: applied.state.longest_held_locks(limits::STATUS_TOP_QUEUES),
            lock_delays: applied
                .state
                .lock_delays()
                .take(limits::STATUS_TOP_QUEUES)
                .map(|(name, delay)| admin::DelayInForce {
                    name: name.to_owned(),
                    delay_ms: delay.delay_ms,
                    started_at_ms: delay.started_at_ms,
                    token: delay.token.0,
                    session: self
                        .hub
                        .delay_session_of(name, delay.token)
                        .map_or(0, |s| s.0),
                })
                .collect(),
            now_ms: crate::proposer::wall_clock_ms(),
        })
    }

    fn recent_events(&self) -> Vec<crate::events::RecentEvent> {
        self.hub.recent_events()
    }
}
