//! Helpers for the tests that run the real `fencelock` binary (a separate process)
//! against an in-process cluster started by the test.
#![allow(dead_code)]

pub use fencelock_client::{Client, LockInfo};
pub use fencelock_server::testing::TestCluster;
use std::future::Future;
use std::process::Stdio;
pub use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// What a finished run of the binary gave.
#[derive(Debug)]
pub struct Run {
    /// The exit code (`-1` when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Stdout as one JSON document.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// The binary with `--endpoints` set and a clean environment.
pub fn command(endpoints: &[String], args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fencelock"));
    command
        .arg("--endpoints")
        .arg(endpoints.join(","))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("FENCELOCK_ENDPOINTS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// Runs the binary to completion (at most 30 s).
pub async fn fencelock(endpoints: &[String], args: &[&str]) -> Run {
    let child = command(endpoints, args).spawn().expect("spawn fencelock");
    finish(child).await
}

/// Waits for a spawned binary (at most 30 s).
pub async fn finish(child: Child) -> Run {
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("fencelock finished within 30 s")
        .expect("wait for fencelock");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A client of the cluster, for setting up and checking.
pub async fn connect(cluster: &TestCluster) -> Client {
    Client::builder(cluster.endpoints())
        .connect_timeout(Duration::from_millis(500))
        .call_timeout(Duration::from_secs(2))
        .retry_deadline(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect")
}

/// The lock's state (`None`: free and unwanted).
pub async fn lock_info(client: &Client, name: &str) -> Option<LockInfo> {
    client.describe(name).await.expect("describe").lock
}

/// Polls `check` until true, failing after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `name` has a holder.
pub async fn wait_held(client: &Client, name: &str) {
    eventually(Duration::from_secs(10), "lock held", || async {
        lock_info(client, name)
            .await
            .is_some_and(|l| !l.holders.is_empty())
    })
    .await;
}

/// Waits until `name` is free and nobody waits for it.
pub async fn wait_free(client: &Client, name: &str) {
    eventually(Duration::from_secs(10), "lock free", || async {
        lock_info(client, name).await.is_none()
    })
    .await;
}

/// Sends `signal` to the process `pid`.
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).expect("signal");
}

/// Whether process `pid` exists.
pub fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}
