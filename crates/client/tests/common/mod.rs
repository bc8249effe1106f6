//! Helpers for the client's integration tests against an in-process cluster.
#![allow(dead_code)]

pub use fencelock_client::*;
pub use fencelock_server::testing::TestCluster;
use std::future::Future;
pub use std::time::{Duration, Instant};

/// A client of every node of `cluster`, with test-friendly timeouts.
pub async fn connect(cluster: &TestCluster) -> Client {
    connect_to(cluster.endpoints()).await
}

/// A client of `endpoints`.
pub async fn connect_to(endpoints: Vec<String>) -> Client {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    Client::builder(endpoints)
        .connect_timeout(Duration::from_millis(500))
        .call_timeout(Duration::from_secs(2))
        .retry_deadline(Duration::from_secs(10))
        .connect()
        .await
        .expect("connect")
}

/// The lock's state, `None` when free and unwanted.
pub async fn lock_info(client: &Client, name: &str) -> Option<LockInfo> {
    client.describe(name).await.expect("describe").lock
}

/// Poll `check` until it returns true, failing after `limit`.
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
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until `session` is queued for `name`.
pub async fn wait_until_queued(client: &Client, name: &str, session: SessionId) {
    eventually(Duration::from_secs(3), "queued", || async {
        lock_info(client, name)
            .await
            .is_some_and(|l| l.waiters.iter().any(|w| w.session_id == session))
    })
    .await;
}
