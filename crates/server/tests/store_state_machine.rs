//! The state machine store: apply and the observer, snapshots on disk, restart recovery,
//! and damaged snapshots.

use fencelock_core::{
    ClientId, Command, Event, LockMode, RequestId, Response, SessionId, WaitPolicy,
};
use fencelock_server::raft::{
    AppliedCommand, BatchResult, CommandBatch, LogId, NodeId, PeerNode, TypeConfig,
};
use fencelock_server::store::{Applied, ApplyObserver, SharedState, StateMachineStore, StoreError};
use openraft::storage::RaftStateMachine;
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, Membership, RaftSnapshotBuilder, Snapshot,
    StoredMembership,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn open_session(client: u128) -> Command {
    Command::OpenSession {
        client_id: ClientId(client),
        ttl_ms: 10_000,
    }
}

fn normal(index: u64, commands: Vec<Command>) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Normal(CommandBatch(commands)),
    }
}

fn blank(index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Blank,
    }
}

fn cluster_membership() -> Membership<NodeId, PeerNode> {
    let nodes: BTreeMap<NodeId, PeerNode> = [1, 2, 3]
        .into_iter()
        .map(|id| {
            (
                id,
                PeerNode {
                    peer_addr: format!("127.0.0.1:{}", 7000 + id),
                },
            )
        })
        .collect();
    Membership::new(vec![nodes.keys().copied().collect()], nodes)
}

fn membership(index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Membership(cluster_membership()),
    }
}

/// What the observer was told, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Applied {
        index: u64,
        events: Vec<Event>,
        last_applied: Option<LogId>,
    },
    Reset {
        last_applied: Option<LogId>,
    },
}

#[derive(Debug, Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
}

impl Recorder {
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().expect("lock"))
    }
}

impl ApplyObserver for Recorder {
    fn applied(&self, index: u64, events: &[Event], applied: &Applied) {
        self.seen.lock().expect("lock").push(Seen::Applied {
            index,
            events: events.to_vec(),
            last_applied: applied.last_applied,
        });
    }

    fn reset(&self, applied: &Applied) {
        self.seen.lock().expect("lock").push(Seen::Reset {
            last_applied: applied.last_applied,
        });
    }
}

fn open(dir: &Path) -> (StateMachineStore, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let store = StateMachineStore::open(dir, SharedState::new(recorder.clone()))
        .expect("open state machine store");
    (store, recorder)
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read snapshot dir")
        .map(|item| item.expect("dir entry").path())
        .collect();
    files.sort();
    files
}

async fn build(store: &mut StateMachineStore) -> Snapshot<TypeConfig> {
    store
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build snapshot")
}

/// Apply a membership entry at 1 and sessions for clients 1..=3 at 2, then a blank at 3.
async fn populate(store: &mut StateMachineStore) -> Vec<BatchResult> {
    store
        .apply([
            membership(1),
            normal(2, vec![open_session(1), open_session(2), open_session(3)]),
            blank(3),
        ])
        .await
        .expect("apply")
}

#[tokio::test]
async fn apply_returns_one_result_per_entry_and_tells_the_observer_under_the_lock() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (mut store, recorder) = open(dir.path());
    assert_eq!(recorder.take(), vec![Seen::Reset { last_applied: None }]);

    let results = populate(&mut store).await;
    assert_eq!(results.len(), 3);
    assert_eq!(results[0], BatchResult::default(), "membership: no results");
    assert_eq!(results[2], BatchResult::default(), "blank: no results");
    let sessions: Vec<SessionId> = results[1]
        .0
        .iter()
        .map(|applied| match applied.result {
            Ok(Response::SessionOpened { session, .. }) => session,
            ref other => panic!("unexpected result {other:?}"),
        })
        .collect();
    assert_eq!(sessions.len(), 3);

    let seen = recorder.take();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[0],
        Seen::Applied {
            index: 1,
            events: vec![],
            last_applied: Some(log_id(1, 1)),
        }
    );
    let Seen::Applied {
        index: 2,
        events,
        last_applied: Some(applied_id),
    } = &seen[1]
    else {
        panic!("unexpected {:?}", seen[1]);
    };
    assert_eq!(*applied_id, log_id(1, 2));
    assert_eq!(
        events
            .iter()
            .filter(|event| matches!(event, Event::SessionOpened { .. }))
            .count(),
        3
    );
    assert_eq!(
        seen[2],
        Seen::Applied {
            index: 3,
            events: vec![],
            last_applied: Some(log_id(1, 3)),
        }
    );

    let (last_applied, last_membership) = store.applied_state().await.expect("applied state");
    assert_eq!(last_applied, Some(log_id(1, 3)));
    assert_eq!(
        last_membership,
        StoredMembership::new(Some(log_id(1, 1)), cluster_membership())
    );
}

#[tokio::test]
async fn a_restart_restores_the_snapshot_state_last_applied_and_membership() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (built, state_at_snapshot) = {
        let (mut store, _recorder) = open(dir.path());
        populate(&mut store).await;
        let built = build(&mut store).await;
        let state = store.shared().read(|applied| applied.state.clone());
        // Applied after the snapshot: lost on restart until the log is replayed.
        store
            .apply([normal(4, vec![open_session(4)])])
            .await
            .expect("apply");
        (built, state)
    };
    assert_eq!(built.meta.last_log_id, Some(log_id(1, 3)));
    assert_eq!(
        snapshot_files(dir.path()),
        vec![dir.path().join("snapshot-1-3.bin")]
    );

    let (mut store, recorder) = open(dir.path());
    assert_eq!(
        recorder.take(),
        vec![Seen::Reset {
            last_applied: Some(log_id(1, 3))
        }]
    );
    store.shared().read(|applied| {
        assert_eq!(applied.state, state_at_snapshot);
        assert_eq!(applied.last_applied, Some(log_id(1, 3)));
        assert_eq!(
            applied.last_membership,
            StoredMembership::new(Some(log_id(1, 1)), cluster_membership())
        );
    });
    let current = store
        .get_current_snapshot()
        .await
        .expect("current snapshot")
        .expect("a snapshot");
    assert_eq!(current.meta, built.meta);
    assert_eq!(current.snapshot.into_inner(), built.snapshot.into_inner());

    // Replaying the entry after the snapshot gives the same answer as before the restart.
    let results = store
        .apply([normal(4, vec![open_session(4)])])
        .await
        .expect("apply");
    assert!(matches!(
        results[0].0[0].result,
        Ok(Response::SessionOpened { .. })
    ));
}

#[tokio::test]
async fn a_new_snapshot_replaces_the_old_file_and_gets_a_new_id() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (mut store, _recorder) = open(dir.path());
    populate(&mut store).await;
    let first = build(&mut store).await;
    let again = build(&mut store).await;
    assert_ne!(first.meta.snapshot_id, again.meta.snapshot_id);
    store
        .apply([normal(4, vec![open_session(4)])])
        .await
        .expect("apply");
    let second = build(&mut store).await;
    assert_eq!(second.meta.last_log_id, Some(log_id(1, 4)));
    assert_eq!(
        snapshot_files(dir.path()),
        vec![dir.path().join("snapshot-1-4.bin")]
    );
    assert_eq!(store.current_snapshot_meta(), Some(second.meta));
}

#[tokio::test]
async fn a_corrupted_snapshot_file_stops_start_up_naming_the_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let (mut store, _recorder) = open(dir.path());
        populate(&mut store).await;
        build(&mut store).await;
    }
    let file = dir.path().join("snapshot-1-3.bin");
    let good = std::fs::read(&file).expect("read snapshot");

    // One flipped bit in the payload, then a truncated file, then a wrong version.
    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    let mut wrong_version = good.clone();
    wrong_version[4] = 99;
    for (bytes, expected) in [
        (flipped, "checksum mismatch"),
        (good[..good.len() / 2].to_vec(), "payload bytes"),
        (wrong_version, "format version 99"),
    ] {
        std::fs::write(&file, &bytes).expect("damage snapshot");
        let error =
            StateMachineStore::open(dir.path(), SharedState::new(Arc::new(Recorder::default())))
                .expect_err("a damaged snapshot must not load");
        let StoreError::CorruptSnapshotFile { path, reason } = &error else {
            panic!("unexpected error {error}");
        };
        assert_eq!(path, &file);
        assert!(
            reason.contains(expected),
            "{reason:?} should say {expected:?}"
        );
        assert!(error.to_string().contains("snapshot-1-3.bin"));
    }
}

#[tokio::test]
async fn installing_a_snapshot_replaces_the_state_and_persists_it() {
    let leader_dir = tempfile::tempdir().expect("temporary directory");
    let follower_dir = tempfile::tempdir().expect("temporary directory");
    let (mut leader, _) = open(leader_dir.path());
    populate(&mut leader).await;
    let snapshot = build(&mut leader).await;
    let leader_state = leader.shared().read(|applied| applied.state.clone());
    let bytes = snapshot.snapshot.into_inner();

    let (mut follower, recorder) = open(follower_dir.path());
    follower.apply([blank(1)]).await.expect("apply");
    follower
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    recorder.take();

    // Damaged bytes and bytes that do not match the metadata are refused, state untouched.
    let mut damaged = bytes.clone();
    damaged[20] ^= 0xff;
    let mut other_meta = snapshot.meta.clone();
    other_meta.last_log_id = Some(log_id(1, 2));
    for (meta, data) in [(&snapshot.meta, damaged), (&other_meta, bytes.clone())] {
        let mut received = follower.begin_receiving_snapshot().await.expect("begin");
        assert!(received.get_ref().is_empty());
        *received.get_mut() = data;
        follower
            .install_snapshot(meta, received)
            .await
            .expect_err("must refuse");
    }
    assert_eq!(
        follower.applied_state().await.expect("applied").0,
        Some(log_id(1, 1))
    );
    assert!(recorder.take().is_empty());

    let mut received = follower.begin_receiving_snapshot().await.expect("begin");
    *received.get_mut() = bytes.clone();
    follower
        .install_snapshot(&snapshot.meta, received)
        .await
        .expect("install");
    assert_eq!(
        recorder.take(),
        vec![Seen::Reset {
            last_applied: Some(log_id(1, 3))
        }]
    );
    follower
        .shared()
        .read(|applied| assert_eq!(applied.state, leader_state));
    assert_eq!(
        snapshot_files(follower_dir.path()),
        vec![follower_dir.path().join("snapshot-1-3.bin")],
        "the follower's older snapshot is gone"
    );
    drop(follower);

    // And it is what a restart loads.
    let (restarted, _) = open(follower_dir.path());
    restarted.shared().read(|applied| {
        assert_eq!(applied.state, leader_state);
        assert_eq!(applied.last_applied, Some(log_id(1, 3)));
    });
    assert_eq!(restarted.current_snapshot_meta(), Some(snapshot.meta));
}

#[tokio::test]
async fn leftover_temporary_files_are_removed_at_start_up() {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("snapshot-1-9.bin.tmp"), b"half written").expect("write");
    let (mut store, _) = open(dir.path());
    assert!(snapshot_files(dir.path()).is_empty());
    assert!(
        store
            .get_current_snapshot()
            .await
            .expect("current")
            .is_none()
    );
}

/// Each command's answer carries, beside it and outside the stored `Response`, the TTL
/// of the session the response names, read right after the command was applied.
#[tokio::test]
async fn each_answer_carries_the_ttl_of_the_session_it_names() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (mut store, _recorder) = open(dir.path());
    let results = populate(&mut store).await;
    let opened = &results[1].0[0];
    assert_eq!(opened.session_ttl_ms, Some(10_000), "{opened:?}");
    let Ok(Response::SessionOpened { session, .. }) = opened.result else {
        panic!("unexpected result {opened:?}");
    };
    let acquire = |seq, wait| Command::Acquire {
        session,
        request: RequestId {
            seq,
            first_unanswered_seq: 1,
        },
        name: "a".to_owned(),
        mode: LockMode::Exclusive,
        wait,
        value: Vec::new(),
    };
    let results = store
        .apply([normal(
            4,
            vec![
                acquire(1, WaitPolicy::NoWait),
                Command::AcquireWithLease {
                    client_id: ClientId(9),
                    ttl_ms: 5_000,
                    name: "a".to_owned(),
                    mode: LockMode::Exclusive,
                    wait: WaitPolicy::Queue,
                    value: Vec::new(),
                },
                Command::CloseSession { session },
                acquire(2, WaitPolicy::NoWait),
            ],
        )])
        .await
        .expect("apply");
    let granted = &results[0].0[0];
    assert!(
        matches!(granted.result, Ok(Response::Granted { .. })),
        "{granted:?}"
    );
    let queued = &results[0].0[1];
    assert!(
        matches!(queued.result, Ok(Response::Queued { .. })),
        "{queued:?}"
    );
    assert!(results[0].0[3].result.is_err(), "{:?}", results[0].0[3]);
    assert_eq!(
        results[0]
            .0
            .iter()
            .map(|applied: &AppliedCommand| applied.session_ttl_ms)
            .collect::<Vec<_>>(),
        // Granted, Queued (the new session's own TTL), SessionClosed (names no session),
        // the closed session's error.
        vec![Some(10_000), Some(5_000), None, None]
    );
}
