//! A node whose data disk fills up: it refuses writes with `NO_SPACE`, keeps serving
//! reads and keepalives, never damages its log, and recovers by itself once space is
//! freed (no restart). The data dir is a small tmpfs the test mounts (root only: CI runs
//! as root; elsewhere each test says it skipped) and fills with a filler file.

mod common;

use common::*;
use fencelock_proto::v1 as pb;
use fencelock_server::config::ServerConfig;
use fencelock_server::store::check::check_data_dir;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the tests wait for a condition (generous: the machine may be loaded).
const PATIENCE: Duration = Duration::from_secs(30);

/// A tmpfs of a given size mounted on a temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mount one of `bytes`, or `None` (with a message) when not running as root.
    fn mount(bytes: u64) -> Option<Tmpfs> {
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        if !root {
            eprintln!(
                "SKIPPED: this test mounts a tmpfs as the data disk, which needs root \
                 (CI runs as root)"
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("fencelock-disk-full-test")
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mount -t tmpfs failed: {status}");
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily: a file still open (a node that failed to stop) must not keep it mounted.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fill the file system holding `dir` with `dir/filler` until it refuses more.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("create the filler");
    let chunk = vec![0x5au8; 64 << 10];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // The last partial chunk, byte by byte, so nothing at all is left.
    while let Ok(n) = file.write(&chunk[..512]) {
        if n == 0 {
            break;
        }
    }
    path
}

/// Wait until `condition` holds, or fail with `what`.
async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn on_tmpfs(mount: PathBuf, reserve_bytes: u64, wal_bytes: u64) -> impl Fn(&mut ServerConfig) {
    move |config: &mut ServerConfig| {
        fast(config);
        config.data_dir = mount.join(format!("node-{}", config.node_id));
        config.storage.disk_reserve_bytes = reserve_bytes;
        config.storage.disk_check_interval = Duration::from_millis(50);
        config.storage.log_wal_bytes = wal_bytes;
        // Snapshots and checkpoints happen during the test too.
        config.raft.snapshot_every_entries = 20;
        config.raft.log_entries_kept_after_snapshot = 5;
    }
}

async fn keepalive_once(
    client: &mut pb::locks_client::LocksClient<tonic::transport::Channel>,
    session: u64,
) -> pb::KeepAliveResponse {
    let request = pb::KeepAliveRequest {
        session_id: session,
    };
    let mut answers = client
        .keep_alive(tokio_stream::iter(vec![request]))
        .await
        .expect("keepalive stream")
        .into_inner();
    answers
        .message()
        .await
        .expect("keepalive answer")
        .expect("one answer")
}

async fn acquire(
    client: &mut pb::locks_client::LocksClient<tonic::transport::Channel>,
    session: u64,
    name: &str,
    seq: u64,
) -> Result<pb::AcquireResponse, tonic::Status> {
    client
        .acquire(acquire_request(session, name, seq, pb::WaitPolicy::NoWait))
        .await
        .map(tonic::Response::into_inner)
}

/// Writes that add state: a few acquires on fresh locks, for log entries and snapshots.
async fn write_some(
    client: &mut pb::locks_client::LocksClient<tonic::transport::Channel>,
    session: u64,
    seq: &mut u64,
    count: usize,
) {
    for _ in 0..count {
        *seq += 1;
        let name = format!("jobs/{seq}");
        let answer = acquire(client, session, &name, *seq)
            .await
            .expect("acquire");
        assert_eq!(answer.outcome, pb::AcquireOutcome::Granted as i32);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_with_no_space_serves_reads_and_recovers_by_itself() {
    let Some(tmpfs) = Tmpfs::mount(64 << 20) else {
        return;
    };
    let cluster =
        TestCluster::start_with_configs(1, on_tmpfs(tmpfs.path().to_owned(), 8 << 20, 256 << 10))
            .await;
    let leader = cluster.leader().await;
    let node = cluster.running(leader).node().clone();
    let data_dir = node.config().data_dir.clone();
    let mut client = cluster.locks(leader).await;
    let session = open_session(&mut client, 1, 60_000).await;
    let mut seq = 0;
    write_some(&mut client, session, &mut seq, 40).await;
    let held = acquire(&mut client, session, "held", 1_000)
        .await
        .expect("acquire");
    assert!(!node.disk().alarm());

    let filler = fill(tmpfs.path());
    wait_for("the NO_SPACE alarm", || node.disk().alarm()).await;
    assert!(node.status().disk.no_space_alarm);
    assert!(
        fencelock_server::admin::health(&node.status())
            .expect_err("unhealthy while full")
            .contains("NO_SPACE")
    );
    let metrics = fencelock_server::metrics::render(&node.status());
    assert!(
        metrics.contains(&format!(
            "fencelock_disk_no_space_alarm{{node=\"{}\"}} 1",
            node.id()
        )),
        "{metrics}"
    );

    // Writes that add state are refused, with the reason, and act not at all.
    let refused = acquire(&mut client, session, "new", 2_000)
        .await
        .expect_err("refused while the disk is full");
    assert_eq!(reason_of(&refused), pb::ErrorReason::NoSpace, "{refused:?}");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    assert!(refused.message().contains("NO_SPACE"), "{refused:?}");
    let refused = client
        .open_session(pb::OpenSessionRequest {
            client_id: client_id(2),
            ttl_ms: 5_000,
        })
        .await
        .expect_err("refused while the disk is full");
    assert_eq!(reason_of(&refused), pb::ErrorReason::NoSpace, "{refused:?}");

    // Reads and keepalives are served.
    let described = client
        .describe(pb::DescribeRequest {
            name: "held".into(),
        })
        .await
        .expect("describe while full")
        .into_inner();
    assert_eq!(described.lock.expect("held").holders[0].token, held.token);
    assert!(
        client
            .describe(pb::DescribeRequest { name: "new".into() })
            .await
            .expect("describe while full")
            .into_inner()
            .lock
            .is_none(),
        "the refused acquire did nothing"
    );
    let listed = client
        .list(pb::ListRequest {
            prefix: "jobs/".into(),
            ..Default::default()
        })
        .await
        .expect("list while full")
        .into_inner();
    assert_eq!(listed.locks.len(), 40);
    let renewed = keepalive_once(&mut client, session).await;
    assert_eq!(
        renewed.status,
        pb::KeepAliveStatus::Ok as i32,
        "{renewed:?}"
    );

    // A release only frees state: it passes.
    client
        .release(pb::ReleaseRequest {
            session_id: session,
            name: "held".into(),
            token: held.token,
            request: rid(1_001),
        })
        .await
        .expect("a release passes the alarm");

    // Space returns: the alarm clears by itself and writes succeed, without a restart.
    std::fs::remove_file(&filler).expect("free the disk");
    wait_for("the NO_SPACE alarm to clear", || !node.disk().alarm()).await;
    fencelock_server::admin::health(&node.status()).expect("healthy again");
    let answer = acquire(&mut client, session, "new", 2_001)
        .await
        .expect("writes work again");
    assert_eq!(answer.outcome, pb::AcquireOutcome::Granted as i32);
    seq = 3_000;
    write_some(&mut client, session, &mut seq, 30).await;

    cluster.shutdown().await;
    let report = check_data_dir(&data_dir);
    assert!(report.is_clean(), "{report}");
    drop(tmpfs);
}

/// With no reserve, the disk fills under the log itself: the write the full disk
/// refused waits for space (the NO_SPACE alarm is up meanwhile) instead of stopping
/// Raft, and goes through once space is back. On a build that hands the error to
/// openraft, its core stops for good and no write ever succeeds again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_full_disk_refused_waits_for_space_instead_of_stopping_raft() {
    let Some(tmpfs) = Tmpfs::mount(64 << 20) else {
        return;
    };
    // The smallest write-ahead file: checkpoints into the log database come often.
    let cluster =
        TestCluster::start_with_configs(1, on_tmpfs(tmpfs.path().to_owned(), 0, 8 << 10)).await;
    let leader = cluster.leader().await;
    let node = cluster.running(leader).node().clone();
    let data_dir = node.config().data_dir.clone();
    let mut client = cluster.locks(leader).await;
    let session = open_session(&mut client, 1, 60_000).await;
    let mut seq = 0;
    write_some(&mut client, session, &mut seq, 10).await;

    let filler = fill(tmpfs.path());
    // Keep writing until the log needs the disk and must wait: each write either
    // succeeds (the write-ahead file still has room), or is refused with NO_SPACE once
    // the alarm is up, or its outcome is unknown (it waits for space).
    let deadline = Instant::now() + PATIENCE;
    let mut waited = false;
    while !node.disk().alarm() {
        assert_ne!(
            node.status().state,
            "Shutdown",
            "Raft stopped when the full disk refused a write"
        );
        assert!(Instant::now() < deadline, "the log never needed the disk");
        seq += 1;
        let name = format!("jobs/{seq}");
        match tokio::time::timeout(
            Duration::from_millis(500),
            acquire(&mut client, session, &name, seq),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(status)) => {
                let reason = reason_of(&status);
                assert!(
                    reason == pb::ErrorReason::NoSpace || reason == pb::ErrorReason::Unavailable,
                    "{status:?}"
                );
                waited = true;
            }
            Err(_) => waited = true,
        }
    }
    assert!(
        waited,
        "a write waited for space, or was refused with NO_SPACE"
    );
    seq += 1;
    let refused = acquire(&mut client, session, "while-full", seq)
        .await
        .expect_err("refused while a write waits for space");
    assert_eq!(reason_of(&refused), pb::ErrorReason::NoSpace, "{refused:?}");
    assert_ne!(node.status().state, "Shutdown", "Raft must not stop");

    std::fs::remove_file(&filler).expect("free the disk");
    wait_for("the waiting write to go through", || !node.disk().alarm()).await;
    assert_ne!(node.status().state, "Shutdown", "Raft must not stop");
    // Writes work again without a restart (a fresh connection: the old one may still
    // hold the call that waited).
    let mut client = cluster.locks(leader).await;
    let deadline = Instant::now() + PATIENCE;
    loop {
        seq += 1;
        match acquire(&mut client, session, &format!("after/{seq}"), seq).await {
            Ok(answer) => {
                assert_eq!(answer.outcome, pb::AcquireOutcome::Granted as i32);
                break;
            }
            Err(status) => {
                assert!(
                    Instant::now() < deadline,
                    "writes never came back: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    write_some(&mut client, session, &mut seq, 30).await;
    assert!(node.status().disk.writes_refused_for_space_total > 0);

    cluster.shutdown().await;
    let report = check_data_dir(&data_dir);
    assert!(report.is_clean(), "{report}");
    drop(tmpfs);
}
