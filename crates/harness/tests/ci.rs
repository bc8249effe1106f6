//! The seeded short CI run of the harness (every nemesis kind) and the unfenced control
//! run, against real `fencelock` and `fenced-kv` processes.
//!
//! The binaries are the workspace's: `cargo nextest run --workspace` builds them before
//! any test runs. Run alone, build them first: `cargo build -p fencelock -p
//! fencelock-fenced-kv`. Both tests are in the `harness` test group of
//! `.config/nextest.toml` (one at a time, a longer slow-timeout).

use fencelock_harness::cluster::locate_binary;
use fencelock_harness::nemesis::FaultKind;
use fencelock_harness::run::{RunOptions, RunReport, run};
use std::path::PathBuf;
use std::time::Duration;

fn options(seed: u64, time: Duration, nemesis: Vec<FaultKind>, out: PathBuf) -> RunOptions {
    RunOptions {
        time,
        nodes: 3,
        seed,
        nemesis,
        unfenced: false,
        out,
        fencelock_bin: locate_binary(None, "FENCELOCK_BIN", "fencelock", "fencelock")
            .expect("the fencelock binary"),
        fenced_kv_bin: locate_binary(None, "FENCED_KV_BIN", "fenced-kv", "fencelock-fenced-kv")
            .expect("the fenced-kv binary"),
        harness_bin: Some(PathBuf::from(env!("CARGO_BIN_EXE_fencelock-harness"))),
        clients: 3,
        client_processes: 1,
        locks: 3,
        ttl: Duration::from_secs(2),
        max_pause: Duration::from_secs(4),
        progress: false,
        election_timeout_ms: 500,
        max_ops_per_client: 100_000,
        lease_slack: Duration::ZERO,
    }
}

fn show(report: &RunReport) {
    println!("{}", report.summary);
    println!(
        "output in {} (kept on failure), took {:.1}s",
        report.out.display(),
        report.elapsed.as_secs_f64()
    );
}

/// Every nemesis kind at least once in one seeded run, and every checker passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_run_every_nemesis_kind() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 1;
    let report = run(options(
        seed,
        Duration::from_secs(70),
        FaultKind::ALL.to_vec(),
        dir.path().join("run"),
    ))
    .await
    .expect("the run");
    show(&report);
    for kind in FaultKind::ALL {
        assert!(
            report.faults.get(kind.name()).copied().unwrap_or(0) >= 1,
            "seed {seed}: no {kind} fault was injected: {:?}",
            report.faults
        );
    }
    if !report.valid() {
        let kept = dir.keep();
        panic!(
            "seed {seed}: a checker failed; output kept in {}",
            kept.display()
        );
    }
}

/// The control run: the fenced service admits every write (`--unfenced`), and a paused
/// holder writes after its lease expired and another holder wrote. The fencing checker
/// must report it: proof that the checker can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfenced_control_run_shows_the_stale_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(
        2,
        Duration::from_secs(16),
        vec![FaultKind::ClientPause],
        dir.path().join("control"),
    );
    options.unfenced = true;
    options.client_processes = 0;
    let report = run(options).await.expect("the run");
    show(&report);
    // The cluster itself did nothing wrong.
    assert_only_failing(&report, "fencing", "stale holder");
}

/// The control run failed in `checker` alone, with a first counter-example that says
/// `expected`.
fn assert_only_failing(report: &RunReport, checker: &str, expected: &str) {
    assert!(!report.valid(), "the control run must fail");
    let failing = report.verdict(checker).unwrap();
    assert!(!failing.valid, "{failing:?}");
    assert!(failing.first().unwrap().contains(expected), "{failing:?}");
    for verdict in &report.verdicts {
        if verdict.checker != checker {
            assert!(verdict.valid, "{verdict:?}");
        }
    }
}

/// The lease control run: every client trusts its lease 10 s longer than its client
/// library says (a client that counts its lease wrongly), and holders lose their
/// keepalives while they keep writing. The lease checker must report a write sent after
/// the rival's grant was seen: proof that it can fail. Nothing else may fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_control_run_shows_the_write_under_a_lost_lease() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(
        3,
        Duration::from_secs(16),
        vec![FaultKind::KeepaliveLoss],
        dir.path().join("control"),
    );
    options.lease_slack = Duration::from_secs(10);
    options.client_processes = 0;
    let report = run(options).await.expect("the run");
    show(&report);
    // The fence refused the late writes, and the cluster itself did nothing wrong.
    assert_only_failing(&report, "lease", "counting its lease valid");
}
