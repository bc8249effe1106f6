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
    /// The oldest grant in force (what an alert on a lock held too long reads).
    pub oldest_grant: OldestGrant,
}

/// The oldest grant in force, from the applied state's index of grants by time (exact,
/// whatever the number of locks).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OldestGrant {
    /// When it was granted: the leader's wall clock recorded in the log with the grant
    /// (ms since the Unix epoch), the same on every node; `None` when no grant with a
    /// known time is in force.
    pub granted_at_ms: Option<u64>,
    /// Its age at the time of the report (0 when there is none): "now" minus
    /// `granted_at_ms`, where "now" is this node's wall clock, or the newest wall clock
    /// in the applied log if that is later. On a follower, "now" is the follower's own
    /// clock, so the age is off by the clock difference between it and the leader that
    /// granted; it is not the applied clock alone because that only moves when an entry
    /// is written, and an idle cluster whose one holder is stuck writes none.
    pub age_ms: u64,
    /// Grants in force made before the log carried a wall clock (from a snapshot of an
    /// older version): their age is unknown, and they are left out of the above.
    pub unstamped: u64,
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

impl OldestGrant {
    /// The oldest grant in force of `state`, its age measured at `now_ms` (this node's
    /// wall clock) or at the state's applied wall clock if that is later.
    pub fn of(state: &fencelock_core::State, now_ms: u64) -> OldestGrant {
        let granted_at_ms = state.oldest_stamped_grant_ms();
        let now_ms = now_ms.max(state.clock_ms());
        OldestGrant {
            granted_at_ms,
            age_ms: granted_at_ms.map_or(0, |at| now_ms.saturating_sub(at)),
            unstamped: state.unstamped_grants(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OldestGrant;
    use fencelock_core::{ClientId, Command, LockMode, RequestId, SessionId, State, WaitPolicy};

    fn acquire(state: &mut State, session: u64, name: &str) {
        let command = Command::Acquire {
            session: SessionId(session),
            request: RequestId {
                seq: 1,
                first_unanswered_seq: 1,
            },
            name: name.into(),
            mode: LockMode::Exclusive,
            wait: WaitPolicy::NoWait,
            value: Vec::new(),
        };
        state.apply(command, &mut Vec::new()).expect("granted");
    }

    #[test]
    fn the_age_counts_from_the_later_of_the_local_and_the_applied_clock() {
        let mut state = State::default();
        let mut events = Vec::new();
        for client in 1..=2 {
            let open = Command::OpenSession {
                client_id: ClientId(client),
                ttl_ms: 10_000,
            };
            state.apply(open, &mut events).expect("open");
        }
        assert_eq!(OldestGrant::of(&state, 5_000), OldestGrant::default());
        // Before any wall clock: a grant of unknown age, left out.
        acquire(&mut state, 1, "unstamped");
        assert_eq!(OldestGrant::of(&state, 5_000).granted_at_ms, None);
        assert_eq!(OldestGrant::of(&state, 5_000).unstamped, 1);
        state
            .apply(Command::WallClock { unix_ms: 10_000 }, &mut events)
            .expect("clock");
        acquire(&mut state, 2, "stamped");
        let idle_cluster = OldestGrant::of(&state, 70_000);
        assert_eq!(idle_cluster.granted_at_ms, Some(10_000));
        assert_eq!(idle_cluster.age_ms, 60_000, "the local clock moves on");
        let clock_behind = OldestGrant::of(&state, 3_000);
        assert_eq!(clock_behind.age_ms, 0, "never before the applied clock");
    }
}
