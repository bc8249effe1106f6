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
    assert!(!report.valid(), "the control run must fail");
    let fencing = report.verdict("fencing").unwrap();
    assert!(!fencing.valid, "{fencing:?}");
    assert!(
        fencing.first().unwrap().contains("stale holder"),
        "{fencing:?}"
    );
    // The cluster itself did nothing wrong.
    for verdict in &report.verdicts {
        if verdict.checker != "fencing" {
            assert!(verdict.valid, "{verdict:?}");
        }
    }
}
