//! End to end: the real `fencelock check-data DIR` on a data dir written by a real node,
//! clean and then damaged three ways (a flipped byte in the log, in the snapshot, and the
//! log truncated mid-file). Exit 0 when clean, 1 with each problem named, 2 on a usage
//! error; the directory is never modified.

use fencelock_server::store::log::LOG_FILE_NAME;
use fencelock_server::store::{LogStore, LogStoreOptions};
use fencelock_server::testing::{SETTLE, TestCluster};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fencelock");

fn check_data(args: &[&Path]) -> Output {
    Command::new(BIN)
        .arg("check-data")
        .args(args)
        .output()
        .expect("run fencelock check-data")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every file under `dir` with its contents, sorted by path.
fn contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read file");
                files.push((path, bytes));
            }
        }
    }
    files.sort();
    files
}

fn copy_dir(from: &Path, to: &Path) {
    for (path, bytes) in contents(from) {
        let target = to.join(path.strip_prefix(from).expect("inside"));
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::write(target, bytes).expect("copy file");
    }
}

/// A single node's data dir with log entries and a snapshot, the node stopped.
async fn data_dir_of_a_stopped_node(into: &Path) -> PathBuf {
    let mut cluster = TestCluster::start(1).await;
    cluster.leader().await;
    let node = cluster.running(0).node().clone();
    node.raft()
        .trigger()
        .snapshot()
        .await
        .expect("trigger snapshot");
    let snapshots = cluster.slots[0].data_dir.join("snapshots");
    let deadline = Instant::now() + SETTLE;
    while !std::fs::read_dir(&snapshots)
        .expect("snapshot dir")
        .filter_map(Result::ok)
        .any(|e| e.path().extension().is_some_and(|x| x == "bin"))
    {
        assert!(Instant::now() < deadline, "no snapshot was written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.stop(0).await;
    let dir = into.join("data");
    copy_dir(&cluster.slots[0].data_dir, &dir);
    cluster.shutdown().await;
    dir
}

fn snapshot_file(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir.join("snapshots"))
        .expect("snapshot dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "bin"))
        .expect("a snapshot file")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_data_reports_a_clean_dir_and_each_kind_of_damage() {
    let temp = tempfile::tempdir().expect("temp dir");
    let clean = data_dir_of_a_stopped_node(temp.path()).await;

    // Clean: exit 0, a report with the log and the snapshot, nothing changed.
    let before = contents(&clean);
    let output = check_data(&[&clean]);
    let report = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert!(report.contains("entries checked: "), "{report}");
    assert!(report.contains("vote: T"), "{report}");
    assert!(report.contains("start-up: starts normally"), "{report}");
    assert!(report.contains("snapshot-"), "{report}");
    assert!(report.contains("ok (newest)"), "{report}");
    assert!(report.trim_end().ends_with("result: clean"), "{report}");
    assert_eq!(
        contents(&clean),
        before,
        "check-data must not modify the dir"
    );

    // A flipped byte in the log: the last entry (committed), named by file and index.
    let flipped_log = temp.path().join("flipped-log");
    copy_dir(&clean, &flipped_log);
    let last = {
        let store = LogStore::open(&flipped_log, LogStoreOptions::default()).expect("open");
        let mut index = 0;
        while store.raw_entry_for_test(index + 1).expect("read").is_some() {
            index += 1;
        }
        store.corrupt_entry_for_test(index).expect("corrupt");
        index
    };
    let before = contents(&flipped_log);
    let output = check_data(&[&flipped_log]);
    let report = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    let log_file = flipped_log.join(LOG_FILE_NAME);
    assert!(
        report.contains(&format!(
            "{}, entry {last}: corrupt: checksum mismatch",
            log_file.display()
        )),
        "{report}"
    );
    assert!(report.contains("start-up: refuses to start"), "{report}");
    assert!(report.contains("result: 1 problem found"), "{report}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("1 problem found"),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        contents(&flipped_log),
        before,
        "check-data must not modify the dir"
    );

    // A flipped byte in the snapshot: named by file and offset.
    let flipped_snapshot = temp.path().join("flipped-snapshot");
    copy_dir(&clean, &flipped_snapshot);
    let file = snapshot_file(&flipped_snapshot);
    let mut bytes = std::fs::read(&file).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&file, &bytes).expect("write");
    let output = check_data(&[&flipped_snapshot]);
    let report = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(
        report.contains(&format!("{}, byte 17: checksum mismatch", file.display())),
        "{report}"
    );
    assert!(report.contains("BAD (newest)"), "{report}");

    // The log truncated mid-file: named by file.
    let truncated = temp.path().join("truncated-log");
    copy_dir(&clean, &truncated);
    let log_file = truncated.join(LOG_FILE_NAME);
    let bytes = std::fs::read(&log_file).expect("read");
    std::fs::write(&log_file, &bytes[..bytes.len() / 2]).expect("truncate");
    let output = check_data(&[&truncated]);
    let report = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(
        report.contains(&format!("  - {}: ", log_file.display())),
        "{report}"
    );
}

#[test]
fn usage_errors_exit_2() {
    let missing = Path::new("/nonexistent/fencelock-data");
    let output = check_data(&[missing]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not exist"));
    let output = check_data(&[]);
    assert_eq!(output.status.code(), Some(2));
    let file = tempfile::NamedTempFile::new().expect("temp file");
    let output = check_data(&[file.path()]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a directory"));
}
