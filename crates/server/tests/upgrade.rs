//! Rolling upgrades in one process: a node forced to speak protocol version 1 (the link
//! handshake of the builds before the versioned one, and their commands) in a cluster of
//! the current build. The cluster version stays 1 while it is a member, commands of
//! version 2 are refused with `UNSUPPORTED_BY_CLUSTER`, snapshots stay in the format
//! the older builds read, and locks keep working; once the node runs at full version the
//! leader raises the cluster version, and nothing held is lost.

mod common;

use common::*;
use fencelock_core::Command;
use fencelock_proto::v1 as pb;
use fencelock_server::node::Node;
use fencelock_server::proposer::ProposeError;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Wait until `check` holds, for at most `within`.
async fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn cluster_version(node: &Node) -> u32 {
    node.shared()
        .read(|applied| applied.state.cluster_version())
}

/// The format byte of the newest snapshot file of `data_dir`, if there is one.
fn newest_snapshot_format(data_dir: &std::path::Path) -> Option<u8> {
    let dir = data_dir.join("snapshots");
    let newest = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "bin"))
        .max_by_key(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())?;
    std::fs::read(newest).ok()?.get(4).copied()
}

/// A command of cluster version 2 that a client could send (wrapped, as an admin
/// command is): the gate must refuse it at version 1.
fn version_2_command() -> Command {
    Command::Once {
        request: 0x19,
        remember: 10,
        command: Box::new(Command::SetClusterVersion { version: 2 }),
    }
}

/// Grant `count` fresh locks named `prefix{i}` to `session`, with request sequence
/// numbers from `first_seq`; the last token.
async fn grant_many(
    cluster: &TestCluster,
    leader: usize,
    session: u64,
    (prefix, first_seq): (&str, u64),
    count: u64,
) -> u64 {
    let mut client = cluster.locks(leader).await;
    let mut last = 0;
    for seq in 0..count {
        let token = try_lock(
            &mut client,
            session,
            &format!("{prefix}{seq}"),
            first_seq + seq,
        )
        .await
        .expect("free lock granted");
        assert!(token > last, "token {token} after {last}");
        last = token;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_protocol_version_1_holds_the_cluster_version_until_it_runs_the_new_build() {
    const OLD: usize = 2;
    let speaks_version_1 = Arc::new(AtomicBool::new(true));
    let flag = speaks_version_1.clone();
    let mut cluster = TestCluster::start_with_configs(3, move |config| {
        fast(config);
        config.raft.snapshot_every_entries = 20;
        config.raft.log_entries_kept_after_snapshot = 5;
        if config.node_id == OLD as u64 + 1 && flag.load(Ordering::SeqCst) {
            config.raft.max_protocol_version = Some(1);
        }
    })
    .await;
    // The old node must not lead: a leader of the new build is the one that could raise
    // the version too early.
    let mut leader = cluster.leader().await;
    if leader == OLD {
        cluster.stop(OLD).await;
        leader = cluster.leader_other_than(OLD).await;
        cluster.restart(OLD).await;
    }
    let leader_node = cluster.running(leader).node().clone();
    // The leader reaches the old node only by dialling it again with the old handshake,
    // and learns that it speaks version 1 only.
    wait_for("the leader learns every member's versions", SETTLE, || {
        leader_node.version_every_member_speaks() == Some(1)
    })
    .await;

    // Locks work, on every node, through entries and snapshots.
    let mut client = cluster.locks(leader).await;
    let session = open_session(&mut client, 1, 120_000).await;
    let held = try_lock(&mut client, session, "jobs/held", 1)
        .await
        .expect("granted");
    let last = grant_many(&cluster, leader, session, ("before/", 100), 30).await;
    let old_node = cluster.running(OLD).node().clone();
    wait_for("the old node applies every grant", SETTLE, || {
        old_node.status().last_token == last
    })
    .await;

    // Version 2 commands are refused, with the reason; the node stays up.
    let refused = leader_node.proposer().propose(version_2_command()).await;
    assert_eq!(
        refused,
        Err(ProposeError::UnsupportedByCluster {
            needs: 2,
            cluster: 1
        })
    );
    let status =
        fencelock_server::api::status::from_propose(leader_node.id(), refused.unwrap_err(), None);
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(reason_of(&status), pb::ErrorReason::UnsupportedByCluster);
    // Several of the leader's checks later, the version is still 1, everywhere, and
    // every snapshot is in the format the older builds read.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for index in 0..3 {
        let node = cluster.running(index).node().clone();
        assert_eq!(cluster_version(&node), 1, "node {index}");
    }
    assert_eq!(
        newest_snapshot_format(&cluster.slots[leader].data_dir),
        Some(3),
        "the leader snapshotted at version 1 in format 3"
    );

    // Upgrade the old node in place: same data, full version.
    cluster.stop(OLD).await;
    speaks_version_1.store(false, Ordering::SeqCst);
    cluster.restart(OLD).await;
    let leader = cluster.leader().await;
    let leader_node = cluster.running(leader).node().clone();
    wait_for(
        "the cluster version rises on every node",
        SETTLE * 3,
        || (0..3).all(|index| cluster_version(cluster.running(index).node()) == 2),
    )
    .await;

    // Nothing was lost, tokens keep rising, and version 2 commands pass the gate (this
    // one is then refused by the state machine: `Once` does not wrap it).
    let lock = cluster
        .locks(leader)
        .await
        .describe(pb::DescribeRequest {
            name: "jobs/held".into(),
        })
        .await
        .expect("describe")
        .into_inner()
        .lock
        .expect("still held");
    assert_eq!(lock.holders.len(), 1);
    assert_eq!(lock.holders[0].token, held);
    let after = grant_many(&cluster, leader, session, ("after/", 200), 30).await;
    assert!(after > last, "token {after} after {last}");
    let passed = leader_node.proposer().propose(version_2_command()).await;
    assert!(
        matches!(passed, Ok(Err(fencelock_core::Error::BadWrapper(_)))),
        "{passed:?}"
    );
    let upgraded = cluster.running(OLD).node().clone();
    wait_for("the upgraded node applies every grant", SETTLE, || {
        upgraded.status().last_token == after
    })
    .await;
    wait_for("a snapshot at version 2 is in format 4", SETTLE, || {
        newest_snapshot_format(&cluster.slots[leader].data_dir) == Some(4)
    })
    .await;
    cluster.shutdown().await;
}

/// Snapshot bytes: format 3 while the cluster version is 1 (the older builds read it and
/// nothing in it is lost: their reading takes the version to be 1), format 4 once it is
/// higher; both decode back to the same state.
#[test]
fn snapshots_are_written_in_the_format_the_cluster_version_allows() {
    use fencelock_server::store::snapshot;
    let mut state = fencelock_core::State::default();
    let mut events = Vec::new();
    state
        .apply(
            Command::OpenSession {
                client_id: fencelock_core::ClientId(7),
                ttl_ms: 10_000,
            },
            &mut events,
        )
        .unwrap();
    let meta = snapshot::SnapshotMeta::default();
    let at_1 = snapshot::encode(&meta, &state).unwrap();
    assert_eq!(at_1[4], 3);
    assert_eq!(snapshot::decode(&at_1).unwrap().state, state);
    state
        .apply(Command::SetClusterVersion { version: 2 }, &mut events)
        .unwrap();
    let at_2 = snapshot::encode(&meta, &state).unwrap();
    assert_eq!(at_2[4], snapshot::FORMAT_VERSION);
    assert_eq!(at_2[4], 4);
    // Format 4's payload is format 3's and the version after it.
    assert_eq!(at_2.len(), at_1.len() + 1);
    let decoded = snapshot::decode(&at_2).unwrap().state;
    assert_eq!(decoded, state);
    assert_eq!(decoded.cluster_version(), 2);
    // Format 3 bytes under a format 4 header are refused, not misread.
    let mut relabelled = at_1.clone();
    relabelled[4] = 4;
    assert!(snapshot::decode(&relabelled).is_err());
}
