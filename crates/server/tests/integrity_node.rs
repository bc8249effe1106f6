//! A real node on a damaged data dir: it never serves from state it could not verify.
//! Start-up stops with `StartError::Storage` naming the file (and the entry) for damage
//! it must not guess about, drops a damaged uncommitted tail and serves, and
//! `check_data_dir` reports each case.

mod common;

use common::*;
use fencelock_proto::v1 as pb;
use fencelock_server::config::{Bootstrap, NetworkConfig, ServerConfig};
use fencelock_server::raft::{CommandBatch, LogId};
use fencelock_server::startup::{Listeners, RunningNode, StartError, start_with_listeners};
use fencelock_server::store::check::{Location, check_data_dir};
use fencelock_server::store::log::LOG_FILE_NAME;
use fencelock_server::store::{LogStore, LogStoreOptions};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{Entry, EntryPayload};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Start node `index` of `cluster` again on its addresses and data dir, returning the
/// start-up error instead of panicking.
async fn try_restart(cluster: &TestCluster, index: usize) -> Result<RunningNode, StartError> {
    let slot = &cluster.slots[index];
    let mut config = ServerConfig {
        node_id: slot.id,
        network: NetworkConfig {
            listen: slot.client,
            peer_listen: slot.peer,
            admin_listen: None,
            ..NetworkConfig::default()
        },
        data_dir: slot.data_dir.clone(),
        bootstrap: Bootstrap::Members(cluster.members.clone()),
        ..ServerConfig::default()
    };
    fast(&mut config);
    let listeners = Listeners {
        client: std::net::TcpListener::bind(slot.client).expect("rebind client port"),
        peer: std::net::TcpListener::bind(slot.peer).expect("rebind peer port"),
        admin: None,
    };
    start_with_listeners(config, listeners).await
}

/// A one-node cluster holding lock "integrity/a", stopped; its data dir.
async fn stopped_node_with_a_lock() -> (TestCluster, PathBuf) {
    let mut cluster = TestCluster::start(1).await;
    cluster.leader().await;
    let mut client = cluster.locks(0).await;
    let session = open_session(&mut client, 1, 60_000).await;
    assert!(
        try_lock(&mut client, session, "integrity/a", 1)
            .await
            .is_some()
    );
    cluster.stop(0).await;
    let dir = cluster.slots[0].data_dir.clone();
    (cluster, dir)
}

async fn last_log_id(dir: &Path) -> LogId {
    let mut store = LogStore::open(dir, LogStoreOptions::default()).expect("open log");
    store
        .get_log_state()
        .await
        .expect("log state")
        .last_log_id
        .expect("the log is not empty")
}

async fn lock_is_held(cluster: &TestCluster) -> bool {
    let mut client = cluster.locks(0).await;
    client
        .describe(pb::DescribeRequest {
            name: "integrity/a".into(),
        })
        .await
        .expect("describe")
        .into_inner()
        .lock
        .is_some_and(|lock| !lock.holders.is_empty())
}

fn storage_message(result: Result<RunningNode, StartError>) -> String {
    match result {
        Err(StartError::Storage(error)) => error.to_string(),
        Err(other) => panic!("expected a storage error, got {other}"),
        Ok(_) => panic!("the node started on damaged data"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_committed_entry_stops_start_up_naming_file_and_index() {
    let (cluster, dir) = stopped_node_with_a_lock().await;
    let last = last_log_id(&dir).await;
    LogStore::open(&dir, LogStoreOptions::default())
        .expect("open")
        .corrupt_entry_for_test(last.index)
        .expect("corrupt");

    let message = storage_message(try_restart(&cluster, 0).await);
    assert!(message.contains(LOG_FILE_NAME), "{message}");
    assert!(
        message.contains(&format!("entry {}", last.index)),
        "{message}"
    );
    assert!(message.contains("committed"), "{message}");

    let report = check_data_dir(&dir);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.location == Location::Index(last.index)),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_uncommitted_tail_is_dropped_and_the_node_serves() {
    let (mut cluster, dir) = stopped_node_with_a_lock().await;
    let last = last_log_id(&dir).await;
    // An entry this node appended but never saw committed (no command: a blank), then
    // damaged as a torn write would leave it.
    {
        let mut store = LogStore::open(&dir, LogStoreOptions::default()).expect("open");
        let unacknowledged = Entry {
            log_id: LogId::new(last.leader_id, last.index + 1),
            payload: EntryPayload::Normal(CommandBatch(Vec::new())),
        };
        store
            .blocking_append([unacknowledged])
            .await
            .expect("append");
        store
            .corrupt_entry_for_test(last.index + 1)
            .expect("corrupt");
    }
    let report = check_data_dir(&dir);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.location == Location::Index(last.index + 1)),
        "{report}"
    );
    assert!(
        report
            .log
            .start_up
            .as_deref()
            .is_some_and(|s| s.starts_with("deletes the damaged uncommitted tail")),
        "{report}"
    );

    let running = try_restart(&cluster, 0)
        .await
        .expect("the node starts after dropping the tail");
    cluster.slots[0].running = Some(running);
    cluster.leader().await;
    assert!(lock_is_held(&cluster).await, "the committed state survives");
    // It takes writes again.
    let mut client = cluster.locks(0).await;
    let session = open_session(&mut client, 2, 60_000).await;
    assert!(
        try_lock(&mut client, session, "integrity/b", 1)
            .await
            .is_some()
    );
    cluster.stop(0).await;
    let report = check_data_dir(&dir);
    assert!(report.is_clean(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_stops_start_up_naming_the_file() {
    let mut cluster = TestCluster::start(1).await;
    cluster.leader().await;
    let mut client = cluster.locks(0).await;
    let session = open_session(&mut client, 1, 60_000).await;
    assert!(
        try_lock(&mut client, session, "integrity/a", 1)
            .await
            .is_some()
    );
    cluster
        .running(0)
        .node()
        .raft()
        .trigger()
        .snapshot()
        .await
        .expect("trigger a snapshot");
    let snapshots = cluster.slots[0].data_dir.join("snapshots");
    let deadline = Instant::now() + SETTLE;
    let file = loop {
        let found = std::fs::read_dir(&snapshots)
            .expect("snapshot dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "bin"));
        if let Some(file) = found {
            break file;
        }
        assert!(Instant::now() < deadline, "no snapshot was written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    cluster.stop(0).await;
    let dir = cluster.slots[0].data_dir.clone();
    assert!(check_data_dir(&dir).is_clean());

    let mut bytes = std::fs::read(&file).expect("read snapshot");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x04;
    std::fs::write(&file, &bytes).expect("write snapshot");

    let message = storage_message(try_restart(&cluster, 0).await);
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    assert!(message.contains(&name), "{message}");
    assert!(message.contains("checksum mismatch"), "{message}");
    let report = check_data_dir(&dir);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.file == file && matches!(p.location, Location::Offset(_))),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_log_file_stops_start_up_naming_the_file() {
    let (cluster, dir) = stopped_node_with_a_lock().await;
    let file = dir.join(LOG_FILE_NAME);
    let bytes = std::fs::read(&file).expect("read log");
    std::fs::write(&file, &bytes[..bytes.len() / 2]).expect("truncate log");

    let message = storage_message(try_restart(&cluster, 0).await);
    assert!(message.contains(&file.display().to_string()), "{message}");
    let report = check_data_dir(&dir);
    assert!(!report.is_clean());
    assert!(report.problems.iter().any(|p| p.file == file), "{report}");
}
