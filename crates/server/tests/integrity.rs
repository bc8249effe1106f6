//! Data integrity of the storage layer: checksummed log records, the start-up policy for
//! damaged logs (drop an uncommitted torn tail, refuse anything else), damaged files
//! (flipped bytes, truncation), and `check_data_dir` reporting each case.

use fencelock_core::{ClientId, Command, LockMode, RequestId, SessionId, State, WaitPolicy};
use fencelock_server::raft::{CommandBatch, LogId, NodeId, PeerNode, TypeConfig};
use fencelock_server::store::check::{CheckReport, Location, check_data_dir};
use fencelock_server::store::log::LOG_FILE_NAME;
use fencelock_server::store::record::{self, RecordError};
use fencelock_server::store::snapshot::{self, SnapshotMeta};
use fencelock_server::store::{
    LogStore, LogStoreOptions, NoObserver, SharedState, StateMachineStore, StoreError,
};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, Membership, RaftLogReader, StoredMembership, Vote,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// A marker that appears once in entry `index`'s bytes, so tests can find it in the file.
fn marker(index: u64) -> String {
    format!("integrity-marker-{index:06}-ZQXJ")
}

/// A normal entry carrying an `Acquire` whose lock name is [`marker`]`(index)`.
fn normal(term: u64, index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(CommandBatch(vec![Command::Acquire {
            session: SessionId(1),
            request: RequestId {
                seq: index,
                first_unanswered_seq: 1,
            },
            name: marker(index),
            mode: LockMode::Exclusive,
            wait: WaitPolicy::NoWait,
            value: vec![7; 16],
        }])),
    }
}

fn membership(term: u64, index: u64) -> Entry<TypeConfig> {
    let nodes: BTreeMap<NodeId, PeerNode> = [(
        1,
        PeerNode {
            peer_addr: "127.0.0.1:7101".to_owned(),
        },
    )]
    .into_iter()
    .collect();
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Membership(Membership::new(
            vec![nodes.keys().copied().collect()],
            nodes,
        )),
    }
}

fn entries(first: u64, last: u64) -> Vec<Entry<TypeConfig>> {
    (first..=last)
        .map(|i| {
            if i == 1 {
                membership(1, i)
            } else {
                normal(1, i)
            }
        })
        .collect()
}

fn open(dir: &Path) -> Result<LogStore, StoreError> {
    LogStore::open(dir, LogStoreOptions::default())
}

fn log_file(dir: &Path) -> PathBuf {
    dir.join(LOG_FILE_NAME)
}

/// A log with entries 1..=`last`, vote (1, node 1), committed at `committed`.
async fn write_log(dir: &Path, last: u64, committed: Option<u64>) {
    let mut store = open(dir).expect("open");
    store.save_vote(&Vote::new(1, 1)).await.expect("vote");
    store
        .blocking_append(entries(1, last))
        .await
        .expect("append");
    store
        .save_committed(committed.map(|c| log_id(1, c)))
        .await
        .expect("committed");
    store.close().expect("close");
}

async fn all_entries(store: &mut LogStore) -> Vec<Entry<TypeConfig>> {
    store.try_get_log_entries(..).await.expect("read entries")
}

fn problem_at(report: &CheckReport, location: &Location) -> bool {
    report.problems.iter().any(|p| &p.location == location)
}

// ---------------------------------------------------------------------------------------
// The record format.

#[test]
fn records_round_trip_and_every_byte_flip_is_caught() {
    let entry = normal(3, 42);
    let bytes = record::encode_entry(&entry, Vec::new()).expect("encode");
    assert_eq!(bytes[0], record::RECORD_VERSION);
    assert_eq!(record::decode_entry(42, &bytes).expect("decode"), entry);
    for at in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut damaged = bytes.clone();
            damaged[at] ^= flip;
            assert!(
                record::decode_entry(42, &damaged).is_err(),
                "flipping {flip:#x} at byte {at} went unnoticed"
            );
        }
    }
    // Truncated at every length, and extended.
    for len in 0..bytes.len() {
        assert!(record::decode_entry(42, &bytes[..len]).is_err());
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(record::decode_entry(42, &longer).is_err());
    // The index is part of the checksum: a record moved to another key fails.
    assert!(matches!(
        record::decode_entry(43, &bytes),
        Err(RecordError::Checksum { .. })
    ));
}

// ---------------------------------------------------------------------------------------
// Start-up policy.

#[tokio::test]
async fn a_clean_log_verifies_and_check_data_says_clean() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), 10, Some(8)).await;
    let report = check_data_dir(dir.path());
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.log.entries_checked, 10);
    assert_eq!(
        (report.log.first_index, report.log.last_index),
        (Some(1), Some(10))
    );
    assert_eq!(report.log.vote, Some(Vote::new(1, 1)));
    assert_eq!(report.log.committed, Some(log_id(1, 8)));
    let text = report.to_string();
    assert!(
        text.contains("entries checked: 10 (index 1..=10)"),
        "{text}"
    );
    assert!(text.ends_with("result: clean"), "{text}");
    let mut store = open(dir.path()).expect("reopen");
    assert_eq!(all_entries(&mut store).await, entries(1, 10));
}

#[tokio::test]
async fn a_damaged_uncommitted_tail_is_dropped_at_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), 10, Some(7)).await;
    {
        let store = open(dir.path()).expect("open");
        store.corrupt_entry_for_test(9).expect("corrupt");
        store.corrupt_entry_for_test(10).expect("corrupt");
    }
    let report = check_data_dir(dir.path());
    assert!(!report.is_clean());
    assert!(problem_at(&report, &Location::Index(9)), "{report}");
    assert!(problem_at(&report, &Location::Index(10)), "{report}");
    let start_up = report.log.start_up.clone().expect("verdict");
    assert!(start_up.contains("deletes the damaged uncommitted tail (entries 9..=10)"));
    assert!(
        report
            .to_string()
            .contains("entry 9: corrupt: checksum mismatch")
    );

    let mut store = open(dir.path()).expect("a damaged uncommitted tail is dropped");
    assert_eq!(all_entries(&mut store).await, entries(1, 8));
    let state = store.get_log_state().await.expect("log state");
    assert_eq!(state.last_log_id, Some(log_id(1, 8)));
    // The leader re-sends the dropped entries.
    store
        .blocking_append(entries(9, 10))
        .await
        .expect("append again");
    drop(store);
    assert!(check_data_dir(dir.path()).is_clean());
}

#[tokio::test]
async fn a_damaged_tail_at_or_below_committed_refuses_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), 10, Some(10)).await;
    open(dir.path())
        .expect("open")
        .corrupt_entry_for_test(10)
        .expect("corrupt");
    let error = open(dir.path()).expect_err("must refuse");
    let StoreError::CorruptLog {
        path,
        index,
        reason,
    } = &error
    else {
        panic!("unexpected error {error}");
    };
    assert_eq!((path, *index), (&log_file(dir.path()), 10));
    assert!(reason.contains("committed"), "{reason}");
    assert!(error.to_string().contains("raft-log.redb"), "{error}");
    let report = check_data_dir(dir.path());
    assert!(problem_at(&report, &Location::Index(10)), "{report}");
    assert!(report.log.start_up.unwrap().starts_with("refuses to start"));
}

#[tokio::test]
async fn damage_in_the_middle_refuses_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), 10, Some(3)).await;
    open(dir.path())
        .expect("open")
        .corrupt_entry_for_test(5)
        .expect("corrupt");
    let error = open(dir.path()).expect_err("must refuse");
    assert!(
        matches!(&error, StoreError::CorruptLog { index: 5, reason, .. } if reason.contains("middle")),
        "{error}"
    );
    let report = check_data_dir(dir.path());
    assert_eq!(report.problems.len(), 1, "{report}");
    assert!(problem_at(&report, &Location::Index(5)));
}

#[tokio::test]
async fn a_missing_entry_refuses_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), 10, None).await;
    open(dir.path())
        .expect("open")
        .put_raw_entry_for_test(5, None)
        .expect("delete");
    let error = open(dir.path()).expect_err("must refuse");
    assert!(
        matches!(&error, StoreError::CorruptLog { index: 5, reason, .. } if reason.contains("missing")),
        "{error}"
    );
    assert!(problem_at(&check_data_dir(dir.path()), &Location::Index(5)));
}

#[tokio::test]
async fn a_log_that_does_not_start_after_the_purged_id_refuses_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), 10, Some(10)).await;
    {
        let mut store = open(dir.path()).expect("open");
        store.purge(log_id(1, 4)).await.expect("purge");
        store.put_raw_entry_for_test(5, None).expect("delete");
    }
    let error = open(dir.path()).expect_err("must refuse");
    assert!(
        matches!(&error, StoreError::CorruptLog { index: 5, .. }),
        "{error}"
    );
}

#[tokio::test]
async fn damaged_meta_records_refuse_start_up() {
    for key in ["vote", "committed", "last_purged_log_id", "format"] {
        let dir = tempfile::tempdir().expect("temp dir");
        write_log(dir.path(), 5, Some(3)).await;
        {
            let mut store = open(dir.path()).expect("open");
            store.purge(log_id(1, 2)).await.expect("purge");
            store.corrupt_record_for_test(key).expect("corrupt");
        }
        let error = open(dir.path()).expect_err("must refuse");
        let StoreError::CorruptRecord { path, record, .. } = &error else {
            panic!("{key}: unexpected error {error}");
        };
        assert_eq!((path, record.as_str()), (&log_file(dir.path()), key));
        let report = check_data_dir(dir.path());
        assert!(
            problem_at(&report, &Location::Record(key.to_owned())),
            "{report}"
        );
    }
}

#[tokio::test]
async fn a_vote_record_from_a_build_without_checksums_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), 3, None).await;
    {
        let store = open(dir.path()).expect("open");
        // What the previous format stored: bare postcard.
        let bare = postcard::to_allocvec(&Vote::<NodeId>::new(1, 1)).expect("encode");
        store
            .put_raw_record_for_test("vote", Some(&bare))
            .expect("write");
        store
            .put_raw_record_for_test("format", None)
            .expect("remove");
    }
    let error = open(dir.path()).expect_err("must refuse");
    assert!(error.to_string().contains("`format`"), "{error}");
    assert!(error.to_string().contains("vote") || error.to_string().contains("checksum"));
}

#[tokio::test]
async fn reads_from_disk_are_verified_cache_hits_are_not_needed_to() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), 10, None).await;
    let mut uncached = LogStore::open(
        dir.path(),
        LogStoreOptions {
            cache_entries_max: 0,
            cache_bytes_max: 0,
            ..LogStoreOptions::default()
        },
    )
    .expect("open");
    uncached.corrupt_entry_for_test(4).expect("corrupt");
    let error = uncached
        .try_get_log_entries(2..6)
        .await
        .expect_err("a damaged entry read from disk is an error");
    assert!(error.to_string().contains("entry 4"), "{error}");
    assert!(error.to_string().contains("raft-log.redb"), "{error}");
    // Entries after it still read.
    assert_eq!(
        uncached.try_get_log_entries(5..7).await.expect("read"),
        entries(5, 6)
    );
}

// ---------------------------------------------------------------------------------------
// Damaged files.

/// Every offset of `needle` in `haystack`.
fn find_all(haystack: &[u8], needle: &[u8]) -> Vec<usize> {
    haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect()
}

/// Flip a byte inside every copy of entry `index`'s marker in the log file.
fn flip_marker_in_file(dir: &Path, index: u64) -> usize {
    let file = log_file(dir);
    let mut bytes = std::fs::read(&file).expect("read log file");
    let hits = find_all(&bytes, marker(index).as_bytes());
    for &at in &hits {
        bytes[at + 3] ^= 0x20;
    }
    std::fs::write(&file, &bytes).expect("write log file");
    hits.len()
}

#[tokio::test]
async fn a_byte_flipped_in_the_file_in_the_middle_of_the_log_is_detected() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), 20, Some(20)).await;
    assert!(flip_marker_in_file(dir.path(), 7) >= 1, "marker not found");
    let error = open(dir.path()).expect_err("a flipped byte must refuse start-up");
    assert!(
        error
            .to_string()
            .contains(&log_file(dir.path()).display().to_string()),
        "the error names the file: {error}"
    );
    assert!(
        matches!(error, StoreError::CorruptLog { index: 7, .. }),
        "{error}"
    );
    let report = check_data_dir(dir.path());
    assert!(problem_at(&report, &Location::Index(7)), "{report}");
}

#[tokio::test]
async fn a_byte_flipped_in_the_file_in_the_uncommitted_tail_is_dropped() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), 20, Some(15)).await;
    assert!(flip_marker_in_file(dir.path(), 20) >= 1, "marker not found");
    let report = check_data_dir(dir.path());
    assert!(problem_at(&report, &Location::Index(20)), "{report}");
    let mut store = open(dir.path()).expect("a torn uncommitted tail is dropped");
    assert_eq!(all_entries(&mut store).await, entries(1, 19));
}

#[tokio::test]
async fn a_truncated_log_file_is_refused_naming_the_file_never_a_panic() {
    let source = tempfile::tempdir().expect("temp dir");
    write_log(source.path(), 200, Some(150)).await;
    let good = std::fs::read(log_file(source.path())).expect("read");
    let mut refused = 0;
    let mut cuts: Vec<usize> = vec![0, 1, 16, 100, 511, 4096, good.len() / 3];
    cuts.extend([
        good.len() / 2,
        good.len() * 2 / 3,
        good.len() - 4096,
        good.len() - 1,
    ]);
    for cut in cuts {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(log_file(dir.path()), &good[..cut]).expect("write cut file");
        let report = check_data_dir(dir.path());
        match open(dir.path()) {
            Err(error) => {
                refused += 1;
                eprintln!("cut at {cut}: {error}\n  check-data: {:?}", report.problems);
                assert!(
                    error.to_string().contains("raft-log.redb"),
                    "cut at {cut}: the error names the file: {error}"
                );
                assert!(!report.is_clean(), "cut at {cut}: check-data: {report}");
            }
            Ok(mut store) => {
                // Only acceptable if nothing was lost (the cut removed unused space).
                assert_eq!(
                    store.read_vote().await.expect("vote"),
                    Some(Vote::new(1, 1)),
                    "cut at {cut}"
                );
                assert_eq!(
                    all_entries(&mut store).await,
                    entries(1, 200),
                    "cut at {cut}"
                );
            }
        }
    }
    assert!(refused >= 5, "most cuts must be refused ({refused})");
}

#[tokio::test]
async fn an_empty_log_file_is_refused_not_recreated() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(log_file(dir.path()), b"").expect("write");
    let error = open(dir.path()).expect_err("must refuse");
    assert!(error.to_string().contains("empty"), "{error}");
    assert!(!check_data_dir(dir.path()).is_clean());
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(log_file(dir.path()), vec![0x5a; 64 * 1024]).expect("write");
    let error = open(dir.path()).expect_err("must refuse");
    assert!(error.to_string().contains("raft-log.redb"), "{error}");
    assert!(!check_data_dir(dir.path()).is_clean());
}

// ---------------------------------------------------------------------------------------
// Snapshots in check-data.

fn snapshot_meta(index: u64) -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: Some(log_id(1, index)),
        last_membership: StoredMembership::new(Some(log_id(1, 1)), {
            let EntryPayload::Membership(m) = membership(1, 1).payload else {
                unreachable!()
            };
            m
        }),
        snapshot_id: format!("1-{index}-0"),
    }
}

fn state_with_a_session() -> State {
    let mut state = State::default();
    let mut events = Vec::new();
    let _ = state.apply(
        Command::OpenSession {
            client_id: ClientId(9),
            ttl_ms: 10_000,
        },
        &mut events,
    );
    state
}

fn write_snapshot(dir: &Path, index: u64) -> PathBuf {
    let snapshots = dir.join("snapshots");
    std::fs::create_dir_all(&snapshots).expect("mkdir");
    let file = snapshots.join(format!("snapshot-1-{index}.bin"));
    let bytes = snapshot::encode(&snapshot_meta(index), &state_with_a_session()).expect("encode");
    std::fs::write(&file, bytes).expect("write snapshot");
    file
}

#[tokio::test]
async fn check_data_verifies_every_snapshot_file_and_names_the_offset() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_log(dir.path(), 10, Some(10)).await;
    {
        let mut store = open(dir.path()).expect("open");
        store.purge(log_id(1, 6)).await.expect("purge");
    }
    let older = write_snapshot(dir.path(), 4);
    let newest = write_snapshot(dir.path(), 6);
    std::fs::write(
        dir.path().join("snapshots/snapshot-1-9.bin.tmp"),
        b"partial",
    )
    .unwrap();
    let report = check_data_dir(dir.path());
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.snapshots.len(), 2);
    assert!(report.snapshots[1].newest && report.snapshots[1].ok);
    assert_eq!(report.snapshots[1].last_log_id, Some(log_id(1, 6)));
    assert!(report.notes.iter().any(|n| n.contains(".tmp")), "{report}");
    let text = report.to_string();
    assert!(text.contains("snapshot-1-6.bin"), "{text}");
    assert!(text.contains("last log id T1-N1-6, ok (newest)"), "{text}");

    // A flipped byte in the older file's payload: reported with its offset.
    let good = std::fs::read(&older).unwrap();
    let mut flipped = good.clone();
    *flipped.last_mut().unwrap() ^= 0x10;
    std::fs::write(&older, &flipped).unwrap();
    let report = check_data_dir(dir.path());
    assert_eq!(report.problems.len(), 1, "{report}");
    assert_eq!(report.problems[0].file, older);
    assert_eq!(
        report.problems[0].location,
        Location::Offset(snapshot::PAYLOAD_OFFSET)
    );
    assert!(report.problems[0].message.contains("checksum mismatch"));
    assert!(report.problems[0].message.contains("ignores"));
    std::fs::write(&older, &good).unwrap();

    // The newest truncated: the length field is named, and start-up refuses.
    let good = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &good[..good.len() - 3]).unwrap();
    let report = check_data_dir(dir.path());
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.file == newest && p.location == Location::Offset(9)),
        "{report}"
    );
    // ... and the purged entries are now covered by no good snapshot.
    assert!(report.to_string().contains("exist nowhere"), "{report}");
    let error = StateMachineStore::open(
        &dir.path().join("snapshots"),
        SharedState::new(Arc::new(NoObserver)),
    )
    .expect_err("a damaged newest snapshot stops start-up");
    assert!(error.to_string().contains("snapshot-1-6.bin"), "{error}");
}

#[test]
fn a_snapshot_whose_state_breaks_an_invariant_is_refused() {
    // Find a zero counter in the encoding of an empty state (e.g. the count of waiters)
    // whose change still decodes but claims things that do not exist: the layout of
    // `State` may change, so search rather than hard-code an offset.
    let encoded = postcard::to_allocvec(&State::default()).unwrap();
    let broken: State = (0..encoded.len())
        .rev()
        .filter(|at| encoded[*at] == 0)
        .find_map(|at| {
            let mut candidate = encoded.clone();
            candidate[at] = 5;
            postcard::from_bytes::<State>(&candidate)
                .ok()
                .filter(|state| state.check_invariants().is_err())
        })
        .expect("some counter of an empty state can be made to lie");
    assert!(broken.check_invariants().is_err());
    let bytes = snapshot::encode(&snapshot_meta(3), &broken).unwrap();
    let error = snapshot::decode(&bytes).expect_err("must be refused");
    assert!(error.reason.contains("invariant"), "{error}");
    assert_eq!(error.offset, snapshot::PAYLOAD_OFFSET);
    let good = snapshot::encode(&snapshot_meta(3), &state_with_a_session()).unwrap();
    assert!(snapshot::decode(&good).is_ok());
}

// ---------------------------------------------------------------------------------------
// A log left by a crash needs redb's recovery: check-data checks a copy, leaving the
// file untouched.

const CRASH_DIR_VAR: &str = "FENCELOCK_INTEGRITY_CRASH_DIR";

#[tokio::test]
async fn integrity_crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR_VAR) else {
        return;
    };
    let mut store = open(Path::new(&dir)).expect("open");
    store.save_vote(&Vote::new(2, 1)).await.expect("vote");
    store.blocking_append(entries(1, 30)).await.expect("append");
    std::process::abort();
}

#[tokio::test]
async fn check_data_on_a_crashed_log_checks_a_recovered_copy_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let status = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "integrity_crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_DIR_VAR, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run the child");
    assert!(!status.success(), "the child must abort");
    let before = std::fs::read(log_file(dir.path())).expect("read");
    let report = check_data_dir(dir.path());
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.log.entries_checked, 30);
    assert_eq!(report.log.vote, Some(Vote::new(2, 1)));
    assert_eq!(
        std::fs::read(log_file(dir.path())).expect("read"),
        before,
        "check-data must not modify the file"
    );
    let mut store = open(dir.path()).expect("recovers");
    assert_eq!(all_entries(&mut store).await, entries(1, 30));
}

#[test]
fn check_data_on_a_missing_directory_reports_it() {
    let report = check_data_dir(Path::new("/nonexistent/fencelock-data"));
    assert!(!report.is_clean());
    assert!(report.to_string().contains("not a directory"));
}

// ---------------------------------------------------------------------------------------
// A byte flipped anywhere in the file.

/// A byte flipped anywhere in the file (about 250 offsets spread over its non-zero
/// bytes, where the data and redb's structures are): start-up refuses naming the
/// file, or drops only an uncommitted tail, or reads exactly what was written; never a
/// panic, never a changed vote or committed entry. `check_data_dir` agrees: it reports
/// what start-up refuses or drops, and may report more (damage to redb's own structures
/// that start-up does not read).
#[tokio::test]
async fn a_byte_flipped_anywhere_in_the_file_is_refused_or_changes_nothing() {
    let source = tempfile::tempdir().expect("temp dir");
    write_log(source.path(), 30, Some(20)).await;
    let good = std::fs::read(log_file(source.path())).expect("read");
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut refused, mut dropped_tail, mut unchanged, mut redb_level) = (0, 0, 0, 0);
    let used: Vec<usize> = (0..good.len()).filter(|&at| good[at] != 0).collect();
    let step = (used.len() / 250).max(1);
    for &at in used.iter().step_by(step) {
        let mut bytes = good.clone();
        bytes[at] ^= 0x5a;
        std::fs::write(log_file(dir.path()), &bytes).expect("write");
        let report = check_data_dir(dir.path());
        match open(dir.path()) {
            Err(error) => {
                refused += 1;
                assert!(
                    error.to_string().contains("raft-log.redb"),
                    "byte {at}: the error names the file: {error}"
                );
                assert!(
                    !report.is_clean(),
                    "byte {at}: check-data missed what start-up refused ({error}): {report}"
                );
            }
            Ok(mut store) => {
                let vote = store.read_vote().await.expect("vote");
                let committed = store.read_committed().await.expect("committed");
                let got = all_entries(&mut store).await;
                assert_eq!(vote, Some(Vote::new(1, 1)), "byte {at}: the vote changed");
                assert_eq!(committed, Some(log_id(1, 20)), "byte {at}");
                assert_eq!(got, entries(1, got.len() as u64), "byte {at}");
                if got.len() < 30 {
                    dropped_tail += 1;
                    assert!(
                        got.len() >= 20,
                        "byte {at}: committed entries lost: {} left; {report}",
                        got.len()
                    );
                    assert!(!report.is_clean(), "byte {at}: check-data missed it");
                } else if report.is_clean() {
                    unchanged += 1;
                } else {
                    redb_level += 1;
                    assert!(
                        report.problems.iter().all(|p| p.location == Location::File),
                        "byte {at}: {report}"
                    );
                }
            }
        }
    }
    eprintln!(
        "{} bytes: refused {refused}, dropped an uncommitted tail {dropped_tail}, \
         unchanged {unchanged}, redb-level damage reported by check-data only {redb_level}",
        good.len()
    );
    assert!(refused > 0);
}
