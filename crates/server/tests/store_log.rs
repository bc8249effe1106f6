//! The redb log store beyond openraft's suite: recovery after reopening, truncate and
//! purge, group commit, and the tail cache.

use fencelock_core::{ClientId, Command};
use fencelock_server::raft::{CommandBatch, LogId, NodeId, PeerNode, TypeConfig};
use fencelock_server::store::{LogStore, LogStoreOptions};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, Membership, RaftLogReader, Vote};
use std::collections::BTreeMap;
use std::path::Path;

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// A normal entry carrying one `OpenSession` command.
fn normal(term: u64, index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(CommandBatch(vec![Command::OpenSession {
            client_id: ClientId(u128::from(index)),
            ttl_ms: 10_000,
        }])),
    }
}

fn membership(term: u64, index: u64) -> Entry<TypeConfig> {
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
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(Membership::new(
            vec![nodes.keys().copied().collect()],
            nodes,
        )),
    }
}

fn open(dir: &Path) -> LogStore {
    LogStore::open(dir, LogStoreOptions::default()).expect("open log store")
}

/// Entries `first..=last` in `term`, a membership entry at index 1.
fn entries(term: u64, first: u64, last: u64) -> Vec<Entry<TypeConfig>> {
    (first..=last)
        .map(|i| {
            if i == 1 {
                membership(term, i)
            } else {
                normal(term, i)
            }
        })
        .collect()
}

async fn all_entries(store: &mut LogStore) -> Vec<Entry<TypeConfig>> {
    store.try_get_log_entries(..).await.expect("read entries")
}

#[tokio::test]
async fn reopening_recovers_vote_entries_committed_and_purged() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let written = entries(1, 1, 10);
    let vote = Vote::new_committed(3, 2);
    {
        let mut store = open(dir.path());
        store.save_vote(&vote).await.expect("save vote");
        store
            .blocking_append(written.clone())
            .await
            .expect("append");
        store
            .save_committed(Some(log_id(1, 8)))
            .await
            .expect("save committed");
        store.purge(log_id(1, 3)).await.expect("purge");
    }

    let mut store = open(dir.path());
    assert!(store.path().ends_with("raft-log.redb"));
    assert_eq!(store.read_vote().await.expect("read vote"), Some(vote));
    assert_eq!(
        store.read_committed().await.expect("read committed"),
        Some(log_id(1, 8))
    );
    let state = store.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(1, 10)));
    assert_eq!(all_entries(&mut store).await, written[3..].to_vec());
}

#[tokio::test]
async fn a_fresh_log_is_empty() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut store = open(dir.path());
    assert_eq!(store.read_vote().await.expect("read vote"), None);
    assert_eq!(store.read_committed().await.expect("read committed"), None);
    let state = store.get_log_state().await.expect("log state");
    assert_eq!((state.last_purged_log_id, state.last_log_id), (None, None));
    assert!(all_entries(&mut store).await.is_empty());
}

#[tokio::test]
async fn an_append_of_many_entries_is_one_transaction() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut store = open(dir.path());
    let before = store.commit_count();
    store
        .blocking_append(entries(1, 1, 1_000))
        .await
        .expect("append");
    assert_eq!(store.commit_count(), before + 1);
    assert_eq!(store.entries_appended(), 1_000);

    store
        .blocking_append(entries(1, 1_001, 1_001))
        .await
        .expect("append one");
    assert_eq!(store.commit_count(), before + 2);

    // An empty append needs no transaction, and still reports the flush.
    store
        .blocking_append(Vec::new())
        .await
        .expect("empty append");
    assert_eq!(store.commit_count(), before + 2);
}

#[tokio::test]
async fn the_committed_log_id_rides_on_the_next_transaction_and_is_kept_at_close() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let mut store = open(dir.path());
        store
            .blocking_append(entries(1, 1, 5))
            .await
            .expect("append");
        let before = store.commit_count();
        store
            .save_committed(Some(log_id(1, 4)))
            .await
            .expect("save committed");
        assert_eq!(store.commit_count(), before, "no transaction of its own");
        assert_eq!(
            store.read_committed().await.expect("read"),
            Some(log_id(1, 4))
        );
        store
            .blocking_append(entries(1, 6, 6))
            .await
            .expect("append");
        assert_eq!(store.commit_count(), before + 1, "carried by the append");
        // The newest one is written by the close.
        store
            .save_committed(Some(log_id(1, 6)))
            .await
            .expect("save committed");
    }
    let mut store = open(dir.path());
    assert_eq!(
        store.read_committed().await.expect("read"),
        Some(log_id(1, 6))
    );
}

#[tokio::test]
async fn a_crash_keeps_the_committed_log_id_of_the_last_transaction() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let mut store = open(dir.path());
        store
            .blocking_append(entries(1, 1, 5))
            .await
            .expect("append");
        store
            .save_committed(Some(log_id(1, 3)))
            .await
            .expect("save committed");
        store
            .blocking_append(entries(1, 6, 6))
            .await
            .expect("append");
        store
            .save_committed(Some(log_id(1, 5)))
            .await
            .expect("save committed");
        // A crash: the store is never closed, so nothing more is written.
        std::mem::forget(store);
    }
    // redb refuses a second open of a file this process still holds; copy it instead.
    let copy = tempfile::tempdir().expect("temporary directory");
    std::fs::copy(
        dir.path().join("raft-log.redb"),
        copy.path().join("raft-log.redb"),
    )
    .expect("copy the log file");
    let mut store = open(copy.path());
    assert_eq!(
        store.read_committed().await.expect("read"),
        Some(log_id(1, 3)),
        "the id carried by the last durable append survives; the newer one is re-learned"
    );
    assert_eq!(all_entries(&mut store).await.len(), 6);
}

#[tokio::test]
async fn truncate_deletes_from_the_index_on_and_survives_reopening() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let mut store = open(dir.path());
        store
            .blocking_append(entries(1, 1, 10))
            .await
            .expect("append");
        store.truncate(log_id(1, 6)).await.expect("truncate");
        let state = store.get_log_state().await.expect("log state");
        assert_eq!(state.last_log_id, Some(log_id(1, 5)));
        assert_eq!(all_entries(&mut store).await, entries(1, 1, 5));

        // A new leader's entries take the truncated indexes.
        store
            .blocking_append(entries(2, 6, 7))
            .await
            .expect("append");
        let mut expected = entries(1, 1, 5);
        expected.extend(entries(2, 6, 7));
        assert_eq!(all_entries(&mut store).await, expected);
    }
    let mut store = open(dir.path());
    let state = store.get_log_state().await.expect("log state");
    assert_eq!(state.last_log_id, Some(log_id(2, 7)));
    assert_eq!(all_entries(&mut store).await.len(), 7);

    // Truncating everything leaves an empty log.
    store.truncate(log_id(1, 1)).await.expect("truncate all");
    let state = store.get_log_state().await.expect("log state");
    assert_eq!(state.last_log_id, None);
    assert!(all_entries(&mut store).await.is_empty());
}

#[tokio::test]
async fn purge_past_the_end_leaves_the_log_ending_at_the_purged_id() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let mut store = open(dir.path());
        store
            .blocking_append(entries(1, 1, 10))
            .await
            .expect("append");
        store.purge(log_id(1, 4)).await.expect("purge");
        assert_eq!(all_entries(&mut store).await, entries(1, 5, 10));
        // As after installing a snapshot ahead of the log.
        store
            .purge(log_id(3, 20))
            .await
            .expect("purge past the end");
        let state = store.get_log_state().await.expect("log state");
        assert_eq!(state.last_purged_log_id, Some(log_id(3, 20)));
        assert_eq!(state.last_log_id, Some(log_id(3, 20)));
        assert!(all_entries(&mut store).await.is_empty());
        store
            .blocking_append(entries(3, 21, 22))
            .await
            .expect("append");
    }
    let mut store = open(dir.path());
    let state = store.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(3, 20)));
    assert_eq!(state.last_log_id, Some(log_id(3, 22)));
    assert_eq!(all_entries(&mut store).await, entries(3, 21, 22));
}

#[tokio::test]
async fn recent_entries_are_served_from_the_cache_older_ones_from_disk() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = LogStoreOptions {
        cache_entries_max: 8,
        ..LogStoreOptions::default()
    };
    let mut store = LogStore::open(dir.path(), options).expect("open");
    store
        .blocking_append(entries(1, 1, 20))
        .await
        .expect("append");
    let mut reader = store.get_log_reader().await;

    // The last 8 entries (13..=20) are cached.
    let tail = reader.try_get_log_entries(13..21).await.expect("read tail");
    assert_eq!(tail, entries(1, 13, 20));
    let beyond = reader
        .try_get_log_entries(15..100)
        .await
        .expect("read past end");
    assert_eq!(beyond, entries(1, 15, 20));
    assert_eq!(store.disk_read_count(), 0);

    let old = reader.try_get_log_entries(5..15).await.expect("read old");
    assert_eq!(old, entries(1, 5, 14));
    assert_eq!(store.disk_read_count(), 1);

    // Truncation and purge keep the cache in step with the disk.
    store.truncate(log_id(1, 18)).await.expect("truncate");
    assert_eq!(
        reader.try_get_log_entries(13..100).await.expect("read"),
        entries(1, 13, 17)
    );
    store.purge(log_id(1, 15)).await.expect("purge");
    assert_eq!(
        reader.try_get_log_entries(0..100).await.expect("read"),
        entries(1, 16, 17)
    );
}

#[tokio::test]
async fn the_cache_respects_its_byte_budget() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = LogStoreOptions {
        cache_entries_max: 1_000,
        cache_bytes_max: 1,
        ..LogStoreOptions::default()
    };
    let mut store = LogStore::open(dir.path(), options).expect("open");
    store
        .blocking_append(entries(1, 1, 5))
        .await
        .expect("append");
    assert_eq!(
        store.try_get_log_entries(4..6).await.expect("read"),
        entries(1, 4, 5)
    );
    assert_eq!(store.disk_read_count(), 1, "nothing fits a 1-byte budget");
}

#[tokio::test]
async fn a_second_open_of_the_same_file_fails_while_the_first_is_open() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let _store = open(dir.path());
    let error = LogStore::open(dir.path(), LogStoreOptions::default()).expect_err("second open");
    assert!(
        error.to_string().contains("raft-log.redb"),
        "error names the file: {error}"
    );
}

/// Set in the child process of the crash test: the directory to write in before aborting.
const CRASH_DIR_VAR: &str = "FENCELOCK_STORE_LOG_CRASH_DIR";

/// The child half of the crash test: append, vote, then die without closing anything.
#[tokio::test]
async fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR_VAR) else {
        return; // Not the child: nothing to do.
    };
    let mut store = open(Path::new(&dir));
    store.save_vote(&Vote::new(7, 1)).await.expect("save vote");
    store
        .blocking_append(entries(1, 1, 50))
        .await
        .expect("append");
    store
        .blocking_append(entries(1, 51, 60))
        .await
        .expect("append");
    std::process::abort();
}

#[tokio::test]
async fn flushed_entries_and_vote_survive_a_process_crash() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CRASH_DIR_VAR, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run the child");
    assert!(!status.success(), "the child must abort");

    let mut store = open(dir.path());
    assert_eq!(
        store.read_vote().await.expect("read vote"),
        Some(Vote::new(7, 1))
    );
    assert_eq!(all_entries(&mut store).await, entries(1, 1, 60));
}
