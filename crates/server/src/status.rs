//! What a node reports about itself (`/status`, `/metrics`, the `Status` RPC): plain
//! data, so the admin port and the metrics read it without knowing the node.

use serde::Serialize;

/// One member as the status reports it.
#[derive(Clone, Debug, Serialize)]
pub struct MemberStatus {
    /// Node id.
    pub id: u64,
    /// Peer (Raft) address.
    pub peer_addr: String,
    /// Client address, when known.
    pub client_addr: Option<String>,
    /// Voter (true) or learner.
    pub voter: bool,
}

/// A snapshot of what a node knows, for `/status`, `/metrics` and the `Status` RPC.
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    /// This node.
    pub node_id: u64,
    /// "Leader", "Follower", "Candidate", "Learner" or "Shutdown".
    pub state: String,
    /// The leader, if known.
    pub leader_id: Option<u64>,
    /// The leader's client address, if known.
    pub leader_client_addr: Option<String>,
    /// Current term.
    pub term: u64,
    /// Last log index.
    pub last_log_index: u64,
    /// Commit index (refreshed at most every 100 ms).
    pub commit_index: u64,
    /// Applied index.
    pub applied_index: u64,
    /// Members of the effective configuration.
    pub members: Vec<MemberStatus>,
    /// Live sessions.
    pub sessions: u64,
    /// Known locks.
    pub locks: u64,
    /// Held grants.
    pub held_grants: u64,
    /// Queued waiters.
    pub waiters: u64,
    /// The last fencing token issued.
    pub last_token: u64,
    /// Grants since the beginning of the log.
    pub total_grants: u64,
    /// Sessions expired since the beginning of the log.
    pub total_expired_sessions: u64,
    /// The data disk: free space, reserve, and the NO_SPACE alarm.
    pub disk: DiskStatus,
    /// The cluster version in force on this node (`fencelock_core::version`).
    pub cluster_version: u32,
}

/// The disk part of the node's status (`/status`, `/metrics`, `/health`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DiskStatus {
    /// Whether the NO_SPACE alarm is up (writes are refused).
    pub no_space_alarm: bool,
    /// Free bytes on the data disk for the node's user, at the last check (0 before
    /// the first).
    pub free_bytes: u64,
    /// The data disk's size, at the last check.
    pub total_bytes: u64,
    /// Below this many free bytes the alarm goes up.
    pub reserve_bytes: u64,
    /// Storage writes waiting for space right now.
    pub writes_waiting_for_space: u64,
    /// Writes that had to wait for space since start-up.
    pub writes_refused_for_space_total: u64,
    /// Why the alarm is up, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
