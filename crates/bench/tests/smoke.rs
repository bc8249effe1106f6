//! CI smoke runs of the benchmark: fencelock only, tiny sizes, a few seconds each, so the
//! harness keeps building and running. No timed assertions: the numbers on a busy CI
//! machine mean nothing; only that every workload completed and the report was written.

use std::path::PathBuf;
use std::process::Command;

/// The `fencelock` binary next to this test's build of `fencelock-bench`
/// (`cargo nextest run --workspace` and `cargo test --workspace` build every binary).
fn fencelock_bin() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_fencelock-bench"));
    let fencelock = bench.with_file_name("fencelock");
    if !fencelock.exists() {
        // `cargo test -p fencelock-bench` alone does not build the server binary.
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "fencelock", "--bin", "fencelock"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building fencelock failed");
    }
    assert!(
        fencelock.exists(),
        "no fencelock binary at {}",
        fencelock.display()
    );
    fencelock
}

/// Runs `fencelock-bench ARGS --quiet` with its report and data in `out`; asserts it
/// succeeded and returns its stdout and stderr.
fn run_bench(args: &[&str], out: &std::path::Path) -> (String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_fencelock-bench"))
        .args(args)
        .arg("--quiet")
        .arg("--fencelock-bin")
        .arg(fencelock_bin())
        .arg("--out")
        .arg(out)
        .arg("--data-root")
        .arg(out)
        .output()
        .expect("run fencelock-bench");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "fencelock-bench failed\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

#[test]
fn a_tiny_fencelock_only_run_completes_and_writes_the_report() {
    let out = tempfile::tempdir().expect("temporary directory");
    let (stdout, stderr) = run_bench(
        &[
            "--systems",
            "fencelock-1",
            "--workloads",
            "seq,uncontended,contended,sessions,held",
            "--runs",
            "1",
            "--scale",
            "0.01",
            "--max-secs",
            "20",
            "--sessions-secs",
            "2",
            "--held",
            "200",
            "--held-secs",
            "30",
        ],
        out.path(),
    );
    for heading in [
        "## seq",
        "## uncontended",
        "## contended",
        "## sessions",
        "## held locks",
    ] {
        assert!(
            stdout.contains(heading),
            "no {heading:?} in the report:\n{stdout}\n{stderr}"
        );
    }
    assert!(
        stdout.contains("| fencelock-1 |"),
        "no fencelock-1 row:\n{stdout}"
    );
    assert!(
        !stdout.contains("## Notes"),
        "a workload failed:\n{stdout}\n{stderr}"
    );
    let latest = std::fs::read_to_string(out.path().join("latest.md")).expect("latest.md");
    assert_eq!(latest.trim(), stdout.trim());
    let svg = std::fs::read_to_string(out.path().join("latest.svg")).expect("latest.svg");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    let json = std::fs::read_to_string(out.path().join("latest.json")).expect("latest.json");
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(parsed["pairs"].as_array().map(Vec::len), Some(3));
}

/// Two leader kills on 3 nodes: the node killed first is started again on its data before
/// the second kill, and the report judges the failover target over both kills.
#[test]
fn failover_kills_the_leader_twice_restarting_the_first_victim_in_between() {
    let out = tempfile::tempdir().expect("temporary directory");
    let (stdout, stderr) = run_bench(
        &[
            "--systems",
            "fencelock-3",
            "--workloads",
            "failover",
            "--failover-runs",
            "2",
            "--kill-after-secs",
            "1",
            "--failover-secs",
            "5",
        ],
        out.path(),
    );
    assert!(
        !stdout.contains("## Notes"),
        "the failover runs failed:\n{stdout}\n{stderr}"
    );
    let rows = stdout
        .lines()
        .filter(|l| l.starts_with("| fencelock-3 |"))
        .count();
    assert_eq!(rows, 2, "one row per kill:\n{stdout}");
    assert!(
        stdout.contains("over 2 kills"),
        "the target is judged over both kills:\n{stdout}"
    );
    // Had the first victim not come back, the second kill would leave one node of three:
    // no quorum, so the locks held across it could not be confirmed.
    assert!(
        stdout.contains("| failover: no grant lost | 16/16 |"),
        "a grant held across a kill was lost:\n{stdout}"
    );
}

/// `--commit-trace` on 3 nodes: the report breaks the commits down, leader and followers.
#[test]
fn a_traced_run_reports_each_stage_of_a_commit() {
    let out = tempfile::tempdir().expect("temporary directory");
    let (stdout, stderr) = run_bench(
        &[
            "--systems",
            "fencelock-3",
            "--workloads",
            "seq",
            "--runs",
            "1",
            "--scale",
            "0.05",
            "--commit-trace",
        ],
        out.path(),
    );
    assert!(
        stdout.contains("## commit path: fencelock-3, seq"),
        "no commit path section:\n{stdout}\n{stderr}"
    );
    for stage in [
        "| leader: write + sync |",
        "| follower: write + sync |",
        "| commit: append called -> applied on the leader |",
    ] {
        assert!(stdout.contains(stage), "no {stage:?} row:\n{stdout}");
    }
    assert!(!stdout.contains("No breakdown"), "{stdout}\n{stderr}");
}

/// The scale part at a tiny size: 1,000 locks in 100 sessions on 3 nodes, one restart
/// of a node, one of the whole cluster, one new member; every step measured, with the
/// start-up split the nodes log.
#[test]
fn a_tiny_scale_run_restarts_a_node_and_the_cluster_and_catches_up_a_new_member() {
    let out = tempfile::tempdir().expect("temporary directory");
    let (stdout, stderr) = run_bench(
        &[
            "--workloads",
            "scale",
            "--scale-sizes",
            "1000:100",
            "--scale-runs",
            "1",
            "--scale-keepalive-secs",
            "2",
            "--scale-snapshot-every",
            "100",
        ],
        out.path(),
    );
    assert!(
        stdout.contains("## scale:"),
        "no scale table:\n{stdout}\n{stderr}"
    );
    let json =
        std::fs::read_to_string(out.path().join("scale-latest.json")).expect("scale-latest.json");
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    let point = &parsed["points"][0];
    assert_eq!(point["errors"], serde_json::json!([]), "{stdout}\n{stderr}");
    assert_eq!(point["locks_held"], 1000, "{point}");
    assert_eq!(point["keepalive"]["lost"], 0, "{point}");
    assert_eq!(point["keepalive"]["alive_at_end"], 100, "{point}");
    for restarts in ["node_restarts", "cluster_restarts"] {
        let restart = &point[restarts][0];
        assert!(restart.is_object(), "no {restarts}: {point}");
        // What the restarted nodes logged about their start-up: the restored state
        // holds every lock and session.
        let restored = restart["restored"].as_array().expect("restored");
        let expected = if restarts == "node_restarts" { 1 } else { 3 };
        assert_eq!(restored.len(), expected, "{restarts}: {restart}");
        for node in restored {
            assert_eq!(node["locks"], 1000, "{restarts}: {restart}");
            assert_eq!(node["sessions"], 100, "{restarts}: {restart}");
        }
    }
    assert!(
        point["cluster_restarts"][0]["write_ms"].is_number(),
        "{point}"
    );
    assert!(
        point["cluster_restarts"][0]["read_ms"].is_number(),
        "{point}"
    );
    assert!(point["joins"][0]["caught_up_ms"].is_number(), "{point}");
}
