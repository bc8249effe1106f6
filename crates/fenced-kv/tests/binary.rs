//! The `fenced-kv` binary: starts, answers, and exits 0 on SIGTERM.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fencelock_fenced_kv::FencedKvClient;

#[tokio::test]
async fn starts_answers_health_and_exits_cleanly_on_sigterm() {
    let directory = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fenced-kv"))
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(directory.path().join("kv.redb"))
        .arg("--log-file")
        .arg(directory.path().join("log.jsonl"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();

    // The binary prints the address it listens on (port 0 picks a free one).
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .unwrap()
    .unwrap();
    let address: SocketAddr = line
        .trim()
        .strip_prefix("fenced-kv listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();

    let client = FencedKvClient::new(address);
    let health = client.health().await.unwrap();
    assert_eq!((health.status.as_str(), health.fenced), ("ok", true));
    assert_eq!(health.backend, "durable");
    assert!(client.put("k", "l", 1, "v").await.unwrap().is_admitted());
    drop(client);

    // Signal only the process this test started.
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("fenced-kv did not exit after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    let log = std::fs::read_to_string(directory.path().join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 1);
}

#[test]
fn refuses_a_bad_data_path_with_an_error() {
    let directory = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_fenced-kv"))
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(directory.path().join("missing-dir").join("kv.redb"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot open the data file"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
