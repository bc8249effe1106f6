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

/// Append `entries` and wait for their flush.
async fn append(store: &mut LogStore, entries: Vec<Entry<TypeConfig>>) {
    store.blocking_append(entries).await.expect("append");
}

/// Save `committed` as the committed log id.
async fn commit(store: &mut LogStore, committed: LogId) {
    store
        .save_committed(Some(committed))
        .await
        .expect("save committed");
}

fn open(dir: &Path) -> LogStore {
    LogStore::open(dir, LogStoreOptions::default()).expect("open log store")
}

/// Open, and save a vote newer than every entry the tests write (a node saves the vote
/// of a term before it appends entries of that term; start-up refuses a log whose vote
/// is missing or older than its entries).
async fn voted(dir: &Path) -> LogStore {
    let mut store = open(dir);
    store.save_vote(&Vote::new(9, 1)).await.expect("save vote");
    store
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
        append(&mut store, written.clone()).await;
        commit(&mut store, log_id(1, 8)).await;
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
    append(&mut store, entries(1, 1, 1_000)).await;
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
        let mut store = voted(dir.path()).await;
        append(&mut store, entries(1, 1, 5)).await;
        let before = store.commit_count();
        commit(&mut store, log_id(1, 4)).await;
        assert_eq!(store.commit_count(), before, "no transaction of its own");
        assert_eq!(
            store.read_committed().await.expect("read"),
            Some(log_id(1, 4))
        );
        append(&mut store, entries(1, 6, 6)).await;
        assert_eq!(store.commit_count(), before + 1, "carried by the append");
        // The newest one is written by the close.
        commit(&mut store, log_id(1, 6)).await;
        store.close().expect("close");
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
        append(&mut store, entries(1, 1, 5)).await;
        commit(&mut store, log_id(1, 3)).await;
        append(&mut store, entries(1, 6, 6)).await;
        commit(&mut store, log_id(1, 5)).await;
        // A crash: the store is never closed, so nothing more is written.
        std::mem::forget(store);
    }
    // redb refuses a second open of a file this process still holds; copy them instead.
    let copy = copy_files(dir.path());
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
        let mut store = voted(dir.path()).await;
        append(&mut store, entries(1, 1, 10)).await;
        store.truncate(log_id(1, 6)).await.expect("truncate");
        let state = store.get_log_state().await.expect("log state");
        assert_eq!(state.last_log_id, Some(log_id(1, 5)));
        assert_eq!(all_entries(&mut store).await, entries(1, 1, 5));

        // A new leader's entries take the truncated indexes.
        append(&mut store, entries(2, 6, 7)).await;
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
        let mut store = voted(dir.path()).await;
        append(&mut store, entries(1, 1, 10)).await;
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
        append(&mut store, entries(3, 21, 22)).await;
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
    append(&mut store, entries(1, 1, 20)).await;
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
    append(&mut store, entries(1, 1, 5)).await;
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
    append(&mut store, entries(1, 1, 50)).await;
    append(&mut store, entries(1, 51, 60)).await;
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

// ---------------------------------------------------------------------------------------
// The write-ahead file.

use fencelock_server::store::StoreError;
use fencelock_server::store::check::check_data_dir;
use fencelock_server::store::wal;

const WAL: &str = "raft-log.wal";

/// Copy the log's files (a store this process still holds, as a crash leaves them).
fn copy_files(from: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().expect("temporary directory");
    for file in ["raft-log.redb", WAL] {
        std::fs::copy(from.join(file), copy.path().join(file)).expect("copy the log");
    }
    copy
}

/// A store that appended entries 1..=5, then (with the committed log id at 3) 6..=7,
/// then (with it at `committed_after`) 8, and crashed: a copy of its files, where all
/// of it is in the write-ahead file.
async fn crashed_with_entries_in_the_wal(committed_after: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    // A small file (later opens keep its size): the tests copy it often.
    let small = LogStoreOptions {
        wal_bytes: 2 * wal::MIN_WAL_BYTES,
        ..LogStoreOptions::default()
    };
    let mut store = LogStore::open(dir.path(), small).expect("open");
    store.save_vote(&Vote::new(9, 1)).await.expect("save vote");
    append(&mut store, entries(1, 1, 5)).await;
    commit(&mut store, log_id(1, 3)).await;
    append(&mut store, entries(1, 6, 7)).await;
    commit(&mut store, log_id(1, committed_after)).await;
    append(&mut store, entries(1, 8, 8)).await;
    assert_eq!(
        store.checkpoint_count(),
        0,
        "all of it is in the write-ahead file"
    );
    let copy = copy_files(dir.path());
    std::mem::forget(store);
    copy
}

/// The file offset of every record frame in the write-ahead file, with the entry index
/// when it holds one (read by the frames' lengths alone, as a test knows the layout:
/// length, CRC, kind (high bit: the append's last), append number, index).
fn wal_frames(dir: &Path) -> Vec<(u64, Option<u64>)> {
    let bytes = std::fs::read(dir.join(WAL)).expect("read the write-ahead file");
    let mut frames = Vec::new();
    let mut at = wal::RECORDS_START as usize;
    loop {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 {
            return frames;
        }
        let kind = bytes[at + 8];
        let index = (kind & 0x7f == wal::KIND_ENTRY)
            .then(|| u64::from_le_bytes(bytes[at + 17..at + 25].try_into().expect("8 bytes")));
        frames.push((at as u64, index));
        at += 8 + len;
        if kind & 0x80 != 0 {
            // The append's last record: the next append begins at a boundary.
            at = at.next_multiple_of(wal::APPEND_ALIGN as usize);
        }
    }
}

fn wal_offset_of(dir: &Path, index: u64) -> usize {
    wal_frames(dir)
        .into_iter()
        .find_map(|(offset, i)| (i == Some(index)).then_some(offset as usize))
        .expect("the entry is in the file")
}

fn zero_from(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset..].fill(0);
    std::fs::write(path, bytes).expect("write");
}

fn flip(path: &Path, offset: usize, mask: u8) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset] ^= mask;
    std::fs::write(path, bytes).expect("write");
}

#[tokio::test]
async fn appends_go_to_the_write_ahead_file_until_it_fills() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let options = LogStoreOptions {
        wal_bytes: wal::MIN_WAL_BYTES,
        ..LogStoreOptions::default()
    };
    let mut store = LogStore::open(dir.path(), options.clone()).expect("open");
    store.save_vote(&Vote::new(9, 1)).await.expect("save vote");
    let before = store.commit_count();
    for index in 1..=40 {
        append(&mut store, entries(1, index, index)).await;
    }
    assert_eq!(store.commit_count(), before + 40 + store.checkpoint_count());
    assert!(
        store.checkpoint_count() > 0,
        "4 KiB of records fill with 40 appends and are checkpointed"
    );
    assert_eq!(all_entries(&mut store).await, entries(1, 1, 40));
    drop(store);
    // Reads that miss the tail cache come from both files.
    let uncached = LogStoreOptions {
        cache_entries_max: 0,
        ..options.clone()
    };
    let mut store = LogStore::open(dir.path(), uncached).expect("reopen");
    append(&mut store, entries(1, 41, 45)).await;
    assert_eq!(
        store.try_get_log_entries(38..43).await.expect("read"),
        entries(1, 38, 42)
    );
    // An append too large for the empty file goes to the database directly.
    let big: Vec<_> = (46..=200).map(|i| normal(1, i)).collect();
    append(&mut store, big).await;
    assert_eq!(all_entries(&mut store).await, entries(1, 1, 200));
    drop(store);
    let mut store = LogStore::open(dir.path(), options).expect("reopen");
    assert_eq!(all_entries(&mut store).await, entries(1, 1, 200));
}

/// An append that is one small write-ahead write is synced by the asking task; one
/// bigger than the limit, one that needs a checkpoint first, and every append with the
/// limit at 0 go to the blocking pool. Either way the entries land the same.
#[tokio::test]
async fn small_appends_are_synced_inline_and_the_rest_on_the_blocking_pool() {
    for max_inline in [0, 1024] {
        let dir = tempfile::tempdir().expect("temporary directory");
        let options = LogStoreOptions {
            wal_bytes: wal::MIN_WAL_BYTES,
            inline_append_max_bytes: max_inline,
            ..LogStoreOptions::default()
        };
        let mut store = LogStore::open(dir.path(), options.clone()).expect("open");
        store.save_vote(&Vote::new(9, 1)).await.expect("save vote");
        // Appends of one entry each fill the file's 4 KiB several times over.
        for index in 1..=100 {
            append(&mut store, entries(1, index, index)).await;
        }
        let checkpoints = store.checkpoint_count();
        assert!(checkpoints > 0);
        let inline = if max_inline == 0 {
            0
        } else {
            100 - checkpoints
        };
        assert_eq!(store.inline_appends(), inline, "limit {max_inline}");
        // 40 entries are more than 1 KiB and less than the file holds.
        append(&mut store, entries(1, 101, 140)).await;
        assert_eq!(store.inline_appends(), inline, "limit {max_inline}");
        assert_eq!(all_entries(&mut store).await, entries(1, 1, 140));
        drop(store);
        let mut store = LogStore::open(dir.path(), options).expect("reopen");
        assert_eq!(all_entries(&mut store).await, entries(1, 1, 140));
    }
}

#[tokio::test]
async fn a_crash_loses_nothing_the_write_ahead_file_synced() {
    let copy = crashed_with_entries_in_the_wal(7).await;
    let report = check_data_dir(copy.path());
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.log.wal.as_ref().map(|w| w.entries_to_move), Some(8));
    let mut store = open(copy.path());
    assert_eq!(all_entries(&mut store).await, entries(1, 1, 8));
    assert_eq!(
        store.read_committed().await.expect("read"),
        Some(log_id(1, 7))
    );
    drop(store);
    // Start-up moved them into the database: the file's records are dead now.
    let report = check_data_dir(copy.path());
    assert_eq!(
        report.log.wal.as_ref().map(|w| w.records),
        Some(0),
        "{report}"
    );
    let mut store = open(copy.path());
    assert_eq!(all_entries(&mut store).await, entries(1, 1, 8));
}

#[tokio::test]
async fn a_torn_write_ahead_tail_above_the_committed_id_is_dropped() {
    let copy = crashed_with_entries_in_the_wal(5).await;
    // The last append (the committed id and entry 8) was torn: its entry never reached
    // the disk.
    zero_from(&copy.path().join(WAL), wal_offset_of(copy.path(), 8));
    let report = check_data_dir(copy.path());
    assert!(report.is_clean(), "{report}");
    let mut store = open(copy.path());
    assert_eq!(all_entries(&mut store).await, entries(1, 1, 7));
    assert_eq!(
        store.read_committed().await.expect("read"),
        Some(log_id(1, 5))
    );
}

#[tokio::test]
async fn damage_in_the_middle_of_the_write_ahead_file_refuses_start_up() {
    let copy = crashed_with_entries_in_the_wal(7).await;
    // Entry 6 was synced (the append of 8 came after it): a bit flipped in it is damage,
    // not a torn write, and would lose the committed entries 6 and 7.
    flip(
        &copy.path().join(WAL),
        wal_offset_of(copy.path(), 6) + 30,
        0x40,
    );
    let report = check_data_dir(copy.path());
    match LogStore::open(copy.path(), LogStoreOptions::default()) {
        Err(error @ StoreError::CorruptLog { .. }) => {
            let message = error.to_string();
            assert!(message.contains("damage in the middle"), "{message}");
            assert!(message.contains(WAL), "{message}");
        }
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("started without committed entries"),
    }
    assert!(!report.is_clean(), "{report}");
    assert!(report.to_string().contains("refuses to start"), "{report}");
}

/// Dropping a store releases its files and writes nothing: the write-ahead file is the
/// durable record, so every appended entry is there at the next open, and only the
/// committed log id no write carried yet is lost (a lower bound, relearned from the
/// leader).
#[tokio::test]
async fn a_store_dropped_without_close_writes_nothing_and_loses_no_entry() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let mut store = voted(dir.path()).await;
        append(&mut store, entries(1, 1, 5)).await;
        commit(&mut store, log_id(1, 4)).await;
        append(&mut store, entries(1, 6, 6)).await;
        commit(&mut store, log_id(1, 6)).await;
        assert_eq!(store.checkpoint_count(), 0);
    }
    let mut store = open(dir.path());
    assert_eq!(all_entries(&mut store).await, entries(1, 1, 6));
    assert_eq!(
        store.read_committed().await.expect("read"),
        Some(log_id(1, 4)),
        "the drop must not write the newest committed log id"
    );
}

#[tokio::test]
async fn a_stale_copy_of_the_write_ahead_file_adds_nothing() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let stale = tempfile::tempdir().expect("temporary directory");
    {
        let mut store = voted(dir.path()).await;
        append(&mut store, entries(1, 1, 6)).await;
        std::fs::copy(dir.path().join(WAL), stale.path().join(WAL)).expect("copy");
        // A new leader overwrote 5 and 6 (a truncate checkpoints first).
        store.truncate(log_id(1, 5)).await.expect("truncate");
        append(&mut store, entries(2, 5, 6)).await;
        // A clean close moves 5 and 6 of term 2 into the database.
        store.close().expect("close");
    }
    // A file from before the checkpoint comes back (a restored backup, say): its
    // records are of an older generation and do not count.
    std::fs::copy(stale.path().join(WAL), dir.path().join(WAL)).expect("copy back");
    let report = check_data_dir(dir.path());
    assert!(report.is_clean(), "{report}");
    let mut store = open(dir.path());
    let mut expected = entries(1, 1, 4);
    expected.extend(entries(2, 5, 6));
    assert_eq!(all_entries(&mut store).await, expected);
}

#[tokio::test]
async fn every_byte_flipped_in_the_write_ahead_file_is_refused_or_drops_only_uncommitted() {
    let source = crashed_with_entries_in_the_wal(5).await;
    let good = std::fs::read(source.path().join(WAL)).expect("read");
    // The magic, and every byte of every record (the pages' unused rest is not read).
    let frames = wal_frames(source.path());
    let record_bytes = frames.iter().map(|&(offset, _)| {
        let at = offset as usize;
        let len = u32::from_le_bytes(good[at..at + 4].try_into().expect("4 bytes")) as usize;
        at..at + 8 + len
    });
    let (mut refused, mut dropped, mut unchanged) = (0, 0, 0);
    for at in (0..8).chain(record_bytes.flatten()) {
        let dir = copy_files(source.path());
        flip(&dir.path().join(WAL), at, 0x21);
        let report = check_data_dir(dir.path());
        match LogStore::open(dir.path(), LogStoreOptions::default()) {
            Err(error) => {
                refused += 1;
                assert!(error.to_string().contains(WAL), "byte {at}: {error}");
                assert!(!report.is_clean(), "byte {at}: check-data missed {error}");
            }
            Ok(mut store) => {
                let got = all_entries(&mut store).await;
                assert_eq!(got, entries(1, 1, got.len() as u64), "byte {at}");
                assert!(got.len() >= 5, "byte {at}: committed entries lost: {got:?}");
                if got.len() < 8 {
                    dropped += 1;
                } else {
                    unchanged += 1;
                }
                assert!(report.is_clean(), "byte {at}: {report}");
            }
        }
    }
    eprintln!("refused {refused}, dropped an uncommitted tail {dropped}, unchanged {unchanged}");
    assert!(refused > 0 && dropped > 0);
}

#[tokio::test]
async fn without_a_write_ahead_file_appends_are_database_transactions_and_an_old_file_is_recovered()
{
    let copy = crashed_with_entries_in_the_wal(7).await;
    let options = LogStoreOptions {
        wal_bytes: 0,
        ..LogStoreOptions::default()
    };
    let mut store = LogStore::open(copy.path(), options.clone()).expect("open");
    assert_eq!(all_entries(&mut store).await, entries(1, 1, 8));
    let before = std::fs::read(copy.path().join(WAL)).expect("read");
    append(&mut store, entries(1, 9, 9)).await;
    assert_eq!(
        std::fs::read(copy.path().join(WAL)).expect("read"),
        before,
        "the file is left alone"
    );
    drop(store);
    let mut store = LogStore::open(copy.path(), LogStoreOptions::default()).expect("open");
    assert_eq!(all_entries(&mut store).await, entries(1, 1, 9));
    let fresh = tempfile::tempdir().expect("temporary directory");
    LogStore::open(fresh.path(), options).expect("open");
    assert!(!fresh.path().join(WAL).exists());
}

#[tokio::test]
async fn a_format_1_log_is_marked_format_2_when_the_write_ahead_file_is_used() {
    let dir = tempfile::tempdir().expect("temporary directory");
    {
        let store = open(dir.path());
        let format_1 =
            fencelock_server::store::record::encode(b"format", &1u32, Vec::new()).expect("encode");
        store
            .put_raw_record_for_test("format", Some(&format_1))
            .expect("write");
    }
    let store = open(dir.path());
    let marker = store
        .raw_record_for_test("format")
        .expect("read")
        .expect("present");
    let format: u32 = fencelock_server::store::record::decode(b"format", &marker).expect("decode");
    assert_eq!(format, 2);
}

#[tokio::test]
async fn a_missing_write_ahead_file_that_was_in_use_refuses_start_up_and_check_data_says_so() {
    let copy = crashed_with_entries_in_the_wal(7).await;
    std::fs::remove_file(copy.path().join(WAL)).expect("remove the write-ahead file");
    let report = check_data_dir(copy.path());
    assert!(!report.is_clean(), "{report}");
    let text = report.to_string();
    assert!(text.contains(WAL) && text.contains("missing"), "{text}");
    let error = LogStore::open(copy.path(), LogStoreOptions::default())
        .expect_err("a missing write-ahead file in use must refuse start-up");
    let message = error.to_string();
    assert!(
        message.contains(WAL) && message.contains("missing"),
        "{message}"
    );
    // Not recreated behind the operator's back.
    assert!(!copy.path().join(WAL).exists());
}
