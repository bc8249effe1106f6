//! The seeded short CI run of the harness (every nemesis kind), the disk-full run, and
//! the control runs (unfenced, lease counted too long, a suspended holder's clock that
//! missed the suspend), against real `fencelock` and `fenced-kv` processes.
//!
//! The client-partition and disk-full nemeses need root (a network namespace, tmpfs
//! mounts), as CI has; without root they are left out, and said so.
//!
//! The binaries are the workspace's: `cargo nextest run --workspace` builds them before
//! any test runs. Run alone, build them first: `cargo build -p fencelock -p
//! fencelock-fenced-kv`. Both tests are in the `harness` test group of
//! `.config/nextest.toml` (one at a time, a longer slow-timeout).

use fencelock_harness::clock::HolderClock;
use fencelock_harness::cluster::locate_binary;
use fencelock_harness::history::{Op, read_history};
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
        holder_clock: HolderClock::Boottime,
        disk_bytes: 64 << 20,
        permits: None,
        multi_lock: false,
        lock_delay: None,
    }
}

/// The kinds of `kinds` this process can inject: those that need root are left out
/// (and said so) without it.
fn runnable(kinds: &[FaultKind]) -> Vec<FaultKind> {
    let root = fencelock_harness::disk::is_root();
    kinds
        .iter()
        .copied()
        .filter(|kind| {
            let keep = root || !kind.needs_root();
            if !keep {
                println!("left out: the {kind} nemesis needs root");
            }
            keep
        })
        .collect()
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
    let kinds: Vec<FaultKind> = runnable(&FaultKind::ALL).into_iter().collect();
    let report = run(options(
        seed,
        Duration::from_secs(80),
        kinds.clone(),
        dir.path().join("run"),
    ))
    .await
    .expect("the run");
    show(&report);
    for kind in kinds {
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

/// The control run: the fenced service admits every write (`--unfenced`); a paused
/// holder writes after its lease expired and another holder wrote, and a holder cut off
/// from every node keeps writing after the rival wrote. The fencing checker must report
/// both: proof that the checker can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfenced_control_run_shows_the_stale_write() {
    let dir = tempfile::tempdir().unwrap();
    let kinds = runnable(&[FaultKind::ClientPause, FaultKind::ClientPartition]);
    let mut options = options(
        2,
        Duration::from_secs(22),
        kinds.clone(),
        dir.path().join("control"),
    );
    options.unfenced = true;
    options.client_processes = 0;
    let report = run(options).await.expect("the run");
    show(&report);
    // The cluster itself did nothing wrong.
    assert_only_failing(&report, "fencing", "stale holder");
    let fencing = report.verdict("fencing").unwrap().examples.join("\n");
    for (kind, holder) in [
        (FaultKind::ClientPause, "harness/pause"),
        (FaultKind::ClientPartition, "harness/partitioned"),
    ] {
        if kinds.contains(&kind) {
            assert!(
                fencing.contains(holder),
                "no stale write of {kind}: {fencing}"
            );
        }
    }
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

/// The suspend control run: suspended holders count their lease on a clock that missed
/// the suspend (as `CLOCK_MONOTONIC` does across a real one), so after SIGCONT they
/// write under a lease the cluster has ended and given to the rival. The lease checker
/// must report it; the fence refuses the writes, and nothing else may fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_control_run_shows_the_clock_that_missed_the_suspend() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(
        4,
        Duration::from_secs(16),
        vec![FaultKind::Suspend],
        dir.path().join("control"),
    );
    options.holder_clock = HolderClock::SuspendBlind;
    options.client_processes = 0;
    let report = run(options).await.expect("the run");
    show(&report);
    assert_only_failing(&report, "lease", "counting its lease valid");
    let lease = report.verdict("lease").unwrap();
    assert!(lease.first().unwrap().contains("suspend"), "{lease:?}");
}

/// Full disks: node data directories on small tmpfs mounts, filled to "no space" and
/// emptied. Every checker must pass, liveness after healing included: a node recovers by
/// itself once space returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_run_keeps_every_property_and_recovers() {
    if runnable(&[FaultKind::DiskFull]).is_empty() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let seed = 5;
    let report = run(options(
        seed,
        Duration::from_secs(30),
        vec![FaultKind::DiskFull],
        dir.path().join("disk-full"),
    ))
    .await
    .expect("the run");
    show(&report);
    assert!(
        report.faults.get("disk-full").copied().unwrap_or(0) >= 1,
        "{:?}",
        report.faults
    );
    let failed: Vec<_> = report
        .verdicts
        .iter()
        .filter(|verdict| !verdict.valid)
        .map(|verdict| verdict.checker)
        .collect();
    if !failed.is_empty() {
        let kept = dir.keep();
        panic!(
            "seed {seed}: {failed:?} failed; output kept in {}",
            kept.display()
        );
    }
}

/// The semaphore workload: the contended locks are semaphores of 2 permits, taken by 4
/// client tasks and a client process under node kills, pauses and partitions, paused
/// holders and lost keepalives. Every checker passes (exclusion counting at most 2
/// grants in force per semaphore), and the observer saw 2 grants of one semaphore in
/// force at once: the semaphores were really shared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_run_keeps_at_most_n_holders() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 6;
    let kinds = runnable(&[
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::ClientPause,
        FaultKind::KeepaliveLoss,
    ]);
    let mut options = options(seed, Duration::from_secs(30), kinds, dir.path().join("sem"));
    options.permits = Some(2);
    options.clients = 4;
    options.locks = 2;
    let report = run(options).await.expect("the run");
    show(&report);
    let exclusion = report.verdict("exclusion").unwrap();
    assert!(exclusion.checked > 0, "{exclusion:?}");
    let most = most_in_force(&read_history(&report.out.join("history.jsonl")).unwrap());
    if !report.valid() || most < 2 {
        let kept = dir.keep();
        panic!(
            "seed {seed}: a checker failed or no semaphore was shared (at most {most} grants in force at once); output kept in {}",
            kept.display()
        );
    }
}

/// The most grants of one lock the observer saw in force at once, in revision order
/// (a lower bound: the count starts again after every resync).
fn most_in_force(history: &[fencelock_harness::history::Event]) -> usize {
    let mut events: Vec<_> = history.iter().filter(|e| e.op == Some(Op::Watch)).collect();
    events.sort_by_key(|e| e.revision);
    let mut in_force = std::collections::BTreeMap::<String, std::collections::BTreeSet<u64>>::new();
    let mut most = 0;
    for event in events {
        let lock = event.lock.clone().unwrap_or_default();
        let token = event.token.unwrap_or(0);
        match event.outcome.as_deref() {
            Some("resync") => in_force.clear(),
            Some("acquired") => {
                let held = in_force.entry(lock).or_default();
                held.insert(token);
                most = most.max(held.len());
            }
            Some("released" | "expired" | "closed" | "forced") => {
                in_force.entry(lock).or_default().remove(&token);
            }
            _ => {}
        }
    }
    most
}

/// The multi-lock workload: client tasks also take two contended locks at once in one
/// atomic multi-lock, under node kills, pauses and partitions. Every checker passes,
/// `multilock` (each request granted whole, in one log entry), and some were granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_lock_run_grants_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 7;
    let kinds = runnable(&[FaultKind::Kill, FaultKind::Pause, FaultKind::Partition]);
    let mut options = options(
        seed,
        Duration::from_secs(20),
        kinds,
        dir.path().join("multi"),
    );
    options.multi_lock = true;
    options.client_processes = 0;
    let report = run(options).await.expect("the run");
    show(&report);
    let granted = read_history(&report.out.join("history.jsonl"))
        .unwrap()
        .iter()
        .filter(|e| {
            e.op == Some(Op::Acquire)
                && e.multi.is_some()
                && e.outcome.as_deref() == Some("granted")
        })
        .count();
    if !report.valid() || granted < 2 {
        let kept = dir.keep();
        panic!(
            "seed {seed}: a checker failed or no multi-lock was granted; output kept in {}",
            kept.display()
        );
    }
}

/// The lock-delay workload: every lock asks for an 800 ms lock-delay, and paused, cut-off
/// and suspended holders let their sessions expire while rivals wait. Every checker
/// passes, `lockdelay` (no grant inside a delay) among them, and delays were seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_delay_run_grants_nothing_inside_a_delay() {
    let dir = tempfile::tempdir().unwrap();
    let seed = 17;
    let kinds = runnable(&[
        FaultKind::ClientPause,
        FaultKind::KeepaliveLoss,
        FaultKind::Suspend,
        FaultKind::Kill,
    ]);
    let mut options = options(
        seed,
        Duration::from_secs(30),
        kinds,
        dir.path().join("delay"),
    );
    options.lock_delay = Some(Duration::from_millis(800));
    let report = run(options).await.expect("the run");
    show(&report);
    let delays = read_history(&report.out.join("history.jsonl"))
        .unwrap()
        .iter()
        .filter(|e| e.op == Some(Op::Watch) && e.outcome.as_deref() == Some("lock_delay_started"))
        .count();
    if !report.valid() || delays == 0 {
        let kept = dir.keep();
        panic!(
            "seed {seed}: a checker failed or no lock-delay started; output kept in {}",
            kept.display()
        );
    }
}
