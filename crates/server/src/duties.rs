//! The leader's background duties: follow leadership (lease clock, limits proposal, the
//! leader's client address, the cached commit index) and expire sessions.

use crate::metrics;
use crate::node::Node;
use crate::proposer::ProposeError;
use fencelock_core::Command;
use openraft::ServerState;
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
    let differs = node
        .shared()
        .read(|applied| applied.state.limits() != &node.config().limits);
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

/// The leader's expiry loop: every tick, propose `ExpireSessions` for sessions whose
/// deadline passed, in bounded batches.
pub(crate) async fn expire_sessions(node: Arc<Node>, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(node.config().write_path.expiry_tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|stop| *stop) => return,
        }
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
