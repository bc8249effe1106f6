//! CI smoke run of the benchmark: fencelock only, one node, tiny sizes, a few seconds, so
//! the harness keeps building and running. No timed assertions: the numbers on a busy CI
//! machine mean nothing; only that every workload completed and the report was written.

use std::path::PathBuf;
use std::process::Command;

/// The `fencelock` binary next to this test's build of `fencelock-bench`
/// (`cargo nextest run --workspace` and `cargo test --workspace` build every binary).
fn fencelock_bin() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_fencelock-bench"));
    bench.with_file_name("fencelock")
}

#[test]
fn a_tiny_fencelock_only_run_completes_and_writes_the_report() {
    let fencelock = fencelock_bin();
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
    let out = tempfile::tempdir().expect("temporary directory");
    let output = Command::new(env!("CARGO_BIN_EXE_fencelock-bench"))
        .args(["--systems", "fencelock-1"])
        .args(["--workloads", "seq,uncontended,contended,sessions,held"])
        .args(["--runs", "1", "--scale", "0.01", "--max-secs", "20"])
        .args(["--sessions-secs", "2", "--held", "200", "--held-secs", "30"])
        .arg("--quiet")
        .arg("--fencelock-bin")
        .arg(&fencelock)
        .arg("--out")
        .arg(out.path())
        .arg("--data-root")
        .arg(out.path())
        .output()
        .expect("run fencelock-bench");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "fencelock-bench failed\n{stdout}\n{stderr}"
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
