//! The leader's background duties: follow leadership (lease clock, limits proposal, the
//! leader's client address, the cached commit index), expire sessions, end lock-delays,
//! and raise the cluster version once every member speaks a higher one.

use crate::metrics;
use crate::node::Node;
use crate::proposer::ProposeError;
use fencelock_core::{Command, FencingToken};
use openraft::ServerState;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Follow Raft's view of leadership: start or stop the lease clock, propose the
/// configured limits when they differ from the replicated ones, learn the leader's client
/// address, and refresh the cached commit index.
pub(crate) async fn watch_leadership(node: Arc<Node>, mut stopped: watch::Receiver<bool>) {
    let mut metrics = node.raft().metrics();
    let mut led_term: Option<u64> = None;
    let mut last_commit_refresh = Instant::now() - Duration::from_secs(1);
    loop {
        let (state, term, leader) = {
            let m = metrics.borrow_and_update();
            (m.state, m.current_term, m.current_leader)
        };
        let leading = state == ServerState::Leader;
        if leading && led_term != Some(term) {
            led_term = Some(term);
            node.shared()
                .read(|applied| node.leases().become_leader(&applied.state));
            tracing::info!(term, "became leader: every session has a full TTL from now");
            let limits_node = node.clone();
            tokio::spawn(async move { propose_limits(&limits_node).await });
        } else if !leading && led_term.is_some() {
            led_term = None;
            node.leases().step_down();
            tracing::info!(term, ?leader, "no longer leader");
        }
        if let Some(leader) = leader
            && node.client_addr_of(leader).is_none()
        {
            let learn_node = node.clone();
            tokio::spawn(async move { learn_node.learn_client_addr(leader).await });
        }
        if last_commit_refresh.elapsed() >= Duration::from_millis(100) {
            last_commit_refresh = Instant::now();
            if let Ok(Some(committed)) = node.raft().with_raft_state(|st| st.committed).await {
                node.set_commit_index(committed.index);
            }
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = stopped.wait_for(|stop| *stop) => return,
            // Refresh the commit index even when nothing else changes.
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// When this node leads and its configured limits differ from the replicated ones,
/// replicate its own, so every replica decides with the same limits.
async fn propose_limits(node: &Node) {
    // Wait until the entries of earlier terms are applied, so the comparison is current.
    if node.barrier().confirm().await.is_err() {
        return;
    }
    let (differs, primitives_differ) = node.shared().read(|applied| {
        (
            applied.state.limits() != &node.config().limits,
            applied.state.primitive_limits() != &node.config().primitive_limits,
        )
    });
    if primitives_differ {
        let command = Command::SetPrimitiveLimits(node.config().primitive_limits.clone());
        match node.proposer().propose(command).await {
            Ok(Ok(_)) => tracing::info!("replicated this node's primitive limits"),
            Ok(Err(error)) => tracing::error!(%error, "configured primitive limits refused"),
            Err(error) => tracing::warn!(%error, "could not replicate primitive limits"),
        }
    }
    if differs {
        match node
            .proposer()
            .propose(Command::SetLimits(node.config().limits.clone()))
            .await
        {
            Ok(Ok(_)) => tracing::info!("replicated this node's limits"),
            Ok(Err(error)) => tracing::error!(%error, "configured limits refused"),
            Err(error) => tracing::warn!(%error, "could not replicate limits"),
        }
    }
}

/// How often the leader compares the cluster version with what the members speak.
const CLUSTER_VERSION_CHECK: Duration = Duration::from_secs(1);

/// While this node leads: once every member (voters and learners) says it speaks a
/// protocol version above the cluster version in force, propose that version
/// (`Command::SetClusterVersion`), so the commands it introduces may be proposed. Never
/// lower: a member that speaks less than the version in force leaves it as it is.
pub(crate) async fn raise_cluster_version(node: Arc<Node>, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(CLUSTER_VERSION_CHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        if node.leader() != Some(node.id()) {
            continue;
        }
        let Some(version) = node.version_every_member_speaks() else {
            continue;
        };
        let current = node
            .shared()
            .read(|applied| applied.state.cluster_version());
        if version <= current {
            continue;
        }
        match node
            .proposer()
            .propose(Command::SetClusterVersion { version })
            .await
        {
            Ok(Ok(_)) => tracing::info!(
                from = current,
                to = version,
                "every member speaks a higher protocol version: raised the cluster version"
            ),
            Ok(Err(error)) => tracing::warn!(%error, "cluster version refused"),
            Err(error) => tracing::warn!(%error, "could not raise the cluster version"),
        }
    }
}

/// The leader's expiry loop: every tick, propose `ExpireSessions` for sessions whose
/// deadline passed, in bounded batches, and end the lock-delays that ran their course
/// (see [`LockDelayTimers`]).
pub(crate) async fn expire_sessions(node: Arc<Node>, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(node.config().write_path.expiry_tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut delays = LockDelayTimers::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
        delays.tick(&node).await;
        let max = node
            .shared()
            .read(|applied| applied.state.limits().max_expire_batch)
            .min(usize::MAX as u64) as usize;
        // A few batches per tick at most, so an expiry storm cannot stall the log.
        for _ in 0..4 {
            let due = node.leases().take_expired(Instant::now(), max);
            if due.is_empty() {
                break;
            }
            let count = due.len();
            let result = node
                .proposer()
                .propose(Command::ExpireSessions {
                    sessions: due.clone(),
                })
                .await;
            match result {
                Ok(Ok(_)) => {
                    metrics::record_expired(count);
                    tracing::debug!(count, "expired sessions");
                }
                Ok(Err(error)) => {
                    tracing::error!(%error, "expiry refused by the state machine");
                    node.leases().expiry_unresolved(&due);
                    break;
                }
                Err(ProposeError::NotLeader { .. }) => break,
                Err(error) => {
                    tracing::warn!(%error, "expiry outcome unknown; will retry");
                    node.leases().expiry_unresolved(&due);
                    break;
                }
            }
        }
    }
}

/// Lock-delays proposed ended at most per tick, so a burst of them cannot stall the log.
const MAX_DELAY_ENDS_PER_TICK: usize = 256;

/// The leader's clock for lock-delays, kept as session expiry is: only the leader times
/// a delay, on its monotonic clock, from when it first sees the delay in its applied
/// state (which is after the entry that started it committed), and proposes
/// `EndLockDelay` when the delay has passed. A node that starts leading (a new term)
/// forgets every timer and restarts each delay in force in full, so a change of leader
/// can only lengthen a delay, never shorten it. `EndLockDelay` names the delay by the
/// token of the grant whose loss started it, so a late proposal cannot end a newer one.
#[derive(Debug, Default)]
pub(crate) struct LockDelayTimers {
    /// The term the timers were started in; `None` while not leading.
    term: Option<u64>,
    /// Lock name → (the delay's id, when it may end).
    due: HashMap<String, (FencingToken, Instant)>,
}

impl LockDelayTimers {
    /// Start timers for new delays, forget ended ones, and propose the end of those due.
    async fn tick(&mut self, node: &Node) {
        let (leading, term) = {
            let metrics = node.raft().metrics();
            let metrics = metrics.borrow();
            (metrics.state == ServerState::Leader, metrics.current_term)
        };
        if !leading || !node.leases().is_leading() {
            self.term = None;
            self.due.clear();
            return;
        }
        if self.term != Some(term) {
            self.term = Some(term);
            self.due.clear();
        }
        let ends = self.refresh(node, Instant::now());
        if ends.is_empty() {
            return;
        }
        let proposals = ends.into_iter().map(|(name, token)| async move {
            let command = Command::EndLockDelay {
                name: name.clone(),
                token,
            };
            match node.proposer().propose(command).await {
                Ok(Ok(_)) => tracing::debug!(lock = %name, %token, "lock-delay ended"),
                Ok(Err(error)) => {
                    tracing::error!(lock = %name, %error, "end of lock-delay refused")
                }
                // Still in force: proposed again at the next tick.
                Err(error) => tracing::debug!(lock = %name, %error, "end of lock-delay unknown"),
            }
        });
        futures::future::join_all(proposals).await;
    }

    /// Sync the timers with the delays in force at `now`; the delays due, at most
    /// [`MAX_DELAY_ENDS_PER_TICK`].
    fn refresh(&mut self, node: &Node, now: Instant) -> Vec<(String, FencingToken)> {
        let due = &mut self.due;
        node.shared().read(|applied| {
            let mut in_force = 0;
            for (name, delay) in applied.state.lock_delays() {
                in_force += 1;
                let fresh = due.get(name).is_none_or(|(token, _)| *token != delay.token);
                if fresh {
                    let until = now + Duration::from_millis(delay.delay_ms);
                    due.insert(name.to_owned(), (delay.token, until));
                }
            }
            if due.len() > in_force {
                due.retain(|name, (token, _)| {
                    applied
                        .state
                        .lock_delay(name)
                        .is_some_and(|delay| delay.token == *token)
                });
            }
        });
        due.iter()
            .filter(|(_, (_, until))| *until <= now)
            .take(MAX_DELAY_ENDS_PER_TICK)
            .map(|(name, (token, _))| (name.clone(), *token))
            .collect()
    }
}
