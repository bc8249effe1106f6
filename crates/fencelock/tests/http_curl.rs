//! The README's HTTP example with nothing but `curl`: a real 3-node cluster of
//! `fencelock serve` processes, a lock taken in a one-lock session, released, and the
//! session closed, each step the README's `curl` command run by `sh`. The commands go to
//! node 1 with `-L`, so a follower's redirect to the leader is followed as a user's
//! would be.

use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fencelock");

/// A free port on 127.0.0.1 (bound, read, released).
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr")
}

/// The started servers, killed (by their PIDs) when the test ends.
struct Servers(Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start(dir: &Path, clients: &[SocketAddr], peers: &[SocketAddr]) -> Servers {
    let members: Vec<String> = peers
        .iter()
        .enumerate()
        .map(|(i, peer)| format!("{}={peer}", i + 1))
        .collect();
    let mut servers = Servers(Vec::new());
    for (i, (client, peer)) in clients.iter().zip(peers).enumerate() {
        let id = (i + 1).to_string();
        let log = std::fs::File::create(dir.join(format!("node{id}.log"))).expect("log");
        let child = Command::new(BIN)
            .args(["serve", "--id", &id, "--peers", &members.join(",")])
            .arg("--listen")
            .arg(client.to_string())
            .arg("--peer-listen")
            .arg(peer.to_string())
            .arg("--admin")
            .arg(free_addr().to_string())
            .arg("--data-dir")
            .arg(dir.join(format!("data{id}")))
            .args(["--heartbeat-ms", "50", "--election-timeout-ms", "300"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn fencelock serve");
        servers.0.push(child);
    }
    servers
}

/// Runs `script` with `sh -c` and `$FENCELOCK` set to `base`; its stdout as JSON.
fn curl(script: &str, base: &str) -> Value {
    let output = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("FENCELOCK", base)
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script}: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{script}: not JSON ({e}): {stdout}"))
}

#[test]
fn a_lock_is_taken_and_released_with_curl_alone() {
    if Command::new("curl").arg("--version").output().is_err() {
        panic!("curl is not installed (.ci/run installs it)");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let clients: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let peers: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let _servers = start(dir.path(), &clients, &peers);
    let base = format!("http://{}", clients[0]);

    // Ready: node 1 knows a leader (the status is answered by any node).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let output = Command::new("curl")
            .args(["-s", "--max-time", "5"])
            .arg(format!("{base}/v1/cluster/status"))
            .output()
            .expect("run curl");
        let status: Value = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
        if status["leader_id"].as_u64().is_some_and(|id| id > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "no leader: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The README's commands (with -L and the address in $FENCELOCK).
    let granted = curl(
        r#"curl -sL -d '{"name":"jobs/nightly","wait":"TIMEOUT","wait_timeout_ms":30000,"lease_ttl_ms":60000}' "$FENCELOCK/v1/locks/acquire""#,
        &base,
    );
    assert_eq!(granted["outcome"], "GRANTED", "{granted}");
    let session = granted["session_id"].as_u64().expect("session id");
    let token = granted["token"].as_u64().expect("token");
    assert!(token > 0);

    let described = curl(
        r#"curl -sL -d '{"name":"jobs/nightly"}' "$FENCELOCK/v1/locks/describe""#,
        &base,
    );
    assert_eq!(
        described["lock"]["holders"][0]["token"], token,
        "{described}"
    );

    let released = curl(
        &format!(
            r#"curl -sL -d '{{"session_id":{session},"name":"jobs/nightly","token":{token},"request":{{"seq":1,"first_unanswered_seq":1}}}}' "$FENCELOCK/v1/locks/release""#
        ),
        &base,
    );
    assert_eq!(released, serde_json::json!({}));
    let closed = curl(
        &format!(r#"curl -sL -d '{{"session_id":{session}}}' "$FENCELOCK/v1/sessions/close""#),
        &base,
    );
    assert_eq!(closed, serde_json::json!({}));

    let described = curl(
        r#"curl -sL -d '{"name":"jobs/nightly"}' "$FENCELOCK/v1/locks/describe""#,
        &base,
    );
    assert_eq!(described["lock"], Value::Null, "{described}");
}
