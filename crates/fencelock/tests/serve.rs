//! End to end: the real `fencelock` binary starts a single-node cluster on free ports,
//! becomes healthy, serves `/metrics` and `/status`, and exits 0 on SIGTERM. Also: a bad
//! configuration given through the environment stops it before it starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_fencelock");

/// A free port on 127.0.0.1 (bound, read, released).
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr")
}

/// A plain HTTP/1.1 GET; returns (status code, content type, body).
async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("not HTTP: {text:?}")))?;
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    Ok((code, content_type, body.to_owned()))
}

/// The child process, killed if the test fails before it exits.
struct Server {
    child: Option<Child>,
    log: PathBuf,
}

impl Server {
    /// Starts `fencelock serve`; its log goes to a file (a pipe nobody reads could fill
    /// up and block it).
    fn start(dir: &Path, client: SocketAddr, peer: SocketAddr, admin: SocketAddr) -> Server {
        let log = dir.join("fencelock.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(BIN)
            .args(["serve", "--id", "1"])
            .arg("--listen")
            .arg(client.to_string())
            .arg("--peer-listen")
            .arg(peer.to_string())
            .arg("--admin")
            .arg(admin.to_string())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--heartbeat-ms", "50", "--election-timeout-ms", "200"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn fencelock");
        Server {
            child: Some(child),
            log,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .expect("running")
            .try_wait()
            .expect("try_wait")
    }

    /// Waits for the exit (at most `limit`); returns the status and what it logged.
    fn wait(&mut self, limit: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                self.child = None;
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return (status, log);
            }
            assert!(
                Instant::now() < deadline,
                "fencelock did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_admin_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (client, peer, admin) = (free_addr(), free_addr(), free_addr());
    let mut server = Server::start(dir.path(), client, peer, admin);

    // Healthy: a one-node cluster elects itself.
    let deadline = Instant::now() + Duration::from_secs(30);
    let health = loop {
        if let Some(status) = server.exited() {
            let (_, log) = server.wait(Duration::ZERO);
            panic!("fencelock exited early with {status}:\n{log}");
        }
        if let Ok((200, _, body)) = http_get(admin, "/health").await {
            break body;
        }
        assert!(Instant::now() < deadline, "/health never answered 200");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let health: serde_json::Value = serde_json::from_str(&health).expect("health JSON");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["leader_id"], 1);

    let (code, content_type, status) = http_get(admin, "/status").await.expect("/status");
    assert_eq!(code, 200);
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(status["node_id"], 1);
    assert_eq!(status["state"], "Leader");
    assert_eq!(status["leader_id"], 1);
    assert_eq!(status["members"][0]["id"], 1);
    assert_eq!(status["members"][0]["voter"], true);

    let (code, content_type, metrics) = http_get(admin, "/metrics").await.expect("/metrics");
    assert_eq!(code, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4");
    assert!(
        metrics.contains("fencelock_is_leader{node=\"1\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE fencelock_raft_term gauge"),
        "{metrics}"
    );

    let (code, content_type, page) = http_get(admin, "/").await.expect("status page");
    assert_eq!(code, 200);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(page.contains("fencelock node 1"), "{page}");

    // Garbage on every port leaves the node up and healthy.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for port in [admin, client, peer] {
        for _ in 0..5 {
            let mut bytes = vec![0u8; 4096];
            for b in &mut bytes {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let mut stream = TcpStream::connect(port).await.expect("port open");
            let _ = stream.write_all(&bytes).await;
            let mut sink = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut sink)).await;
        }
    }
    let (code, _, _) = http_get(admin, "/health")
        .await
        .expect("/health after garbage");
    assert_eq!(code, 200);
    assert!(server.exited().is_none(), "garbage stopped the node");

    let killed = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let (exit, log) = server.wait(Duration::from_secs(10));
    assert_eq!(exit.code(), Some(0), "exit {exit}; log:\n{log}");
    assert!(log.contains("fencelock serving"), "{log}");
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains(&admin.to_string()), "{log}");
    assert!(
        dir.path().join("data").is_dir(),
        "the data directory was created"
    );
    assert!(
        TcpStream::connect(admin).await.is_err(),
        "admin port closed"
    );
}

#[test]
fn bad_configuration_from_the_environment_is_refused_before_start() {
    let output = Command::new(BIN)
        .arg("serve")
        .env("FENCELOCK_ID", "4")
        .env("FENCELOCK_PEERS", "1=127.0.0.1:7101,2=127.0.0.1:7102")
        .env("FENCELOCK_DATA_DIR", "/nonexistent/never-created")
        .stdin(Stdio::null())
        .output()
        .expect("run fencelock");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error: invalid configuration: --peers does not name this node (id 4)"),
        "{stderr}"
    );

    let output = Command::new(BIN)
        .args(["serve", "--peers", "1=127.0.0.1"])
        .stdin(Stdio::null())
        .output()
        .expect("run fencelock");
    assert_eq!(output.status.code(), Some(2), "clap usage errors exit 2");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("has no port"), "{stderr}");
}
