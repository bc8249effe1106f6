//! Sessions: keepalive, lease accounting, loss, close.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_keeps_a_one_second_session_alive() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let session = client.session(Duration::from_secs(1)).await.unwrap();
    assert_eq!(session.ttl(), Duration::from_secs(1));
    let guard = session.lock("keepalive/held").await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!session.is_lost());
    assert!(session.lease_deadline() > Instant::now());
    let lock = lock_info(&client, "keepalive/held")
        .await
        .expect("still held");
    assert_eq!(lock.holders[0].session_id, session.id());
    assert_eq!(lock.holders[0].client_id, Some(session.client_id()));
    guard.release().await.unwrap();
    session.close().await.unwrap();
    cluster.shutdown().await;
}

/// `stop_keepalive` lets the lease lapse as a stopped process's would: the locks stay
/// held until the lease runs out, then the client reports it lost and the server frees
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_keepalive_stopped_lapses_and_frees_its_locks() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let session = client.session(Duration::from_secs(1)).await.unwrap();
    let guard = session.lock("lapse/held").await.unwrap();
    session.stop_keepalive();
    assert!(
        !session.is_lost(),
        "stopping the keepalive does not end the lease"
    );
    let reason = tokio::time::timeout(Duration::from_secs(10), guard.lost())
        .await
        .expect("lost fires once the lease runs out");
    assert_eq!(reason, LostReason::LeaseExpired);
    eventually(Duration::from_secs(10), "server expiry", || async {
        lock_info(&client, "lapse/held").await.is_none()
    })
    .await;
    let other = client.session(Duration::from_secs(10)).await.unwrap();
    assert!(other.try_lock("lapse/held").await.unwrap().is_some());
    drop(guard);
    other.close().await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_fires_before_the_server_expires_the_session() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let session = client.session(Duration::from_secs(1)).await.unwrap();
    let guard = session.lock("lost/held").await.unwrap();
    let lost = guard.lost();
    session.pause_keepalive_for_test(Duration::from_secs(30));
    let paused = Instant::now();
    let reason = tokio::time::timeout(Duration::from_secs(3), lost.clone())
        .await
        .expect("lost fires");
    assert_eq!(reason, LostReason::LeaseExpired);
    assert!(session.is_lost() && guard.is_lost());
    // The server has not expired the session yet: its lease counts from arrival.
    let lock = lock_info(&client, "lost/held")
        .await
        .expect("the server still has the session when lost() fires");
    assert_eq!(lock.holders[0].session_id, session.id());
    // Every clone resolves the same way, also after the fact.
    assert_eq!(lost.await, LostReason::LeaseExpired);
    // Then the server expires it and frees the lock.
    eventually(Duration::from_secs(3), "server expiry", || async {
        lock_info(&client, "lost/held").await.is_none()
    })
    .await;
    assert!(paused.elapsed() >= Duration::from_millis(700));
    // A lost session refuses to act.
    assert!(matches!(
        session.try_lock("lost/other").await,
        Err(Error::SessionLost(LostReason::LeaseExpired))
    ));
    drop(guard);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_on_the_server_is_reported_lost() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let session = client.session(Duration::from_secs(3)).await.unwrap();
    client.close_session(session.id()).await.unwrap();
    let reason = tokio::time::timeout(Duration::from_secs(3), session.lost())
        .await
        .expect("lost fires on SESSION_NOT_FOUND");
    assert_eq!(reason, LostReason::SessionNotFound);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_and_drop_end_the_session() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let closed = client.session(Duration::from_secs(5)).await.unwrap();
    let guard = closed.lock("close/a").await.unwrap();
    drop(guard);
    let lost = closed.lost();
    closed.close().await.unwrap();
    assert_eq!(lost.await, LostReason::Closed);
    let dropped = client.session(Duration::from_secs(5)).await.unwrap();
    let _guard = dropped.try_lock("close/b").await.unwrap().expect("free");
    drop(_guard);
    drop(dropped);
    eventually(Duration::from_secs(2), "sessions closed", || async {
        client.status().await.unwrap().sessions == 0
    })
    .await;
    assert!(lock_info(&client, "close/b").await.is_none());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sessions_share_one_client() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let mut sessions = Vec::new();
    for _ in 0..20 {
        sessions.push(client.session(Duration::from_secs(1)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert!(sessions.iter().all(|s| !s.is_lost()));
    assert_eq!(client.status().await.unwrap().sessions, 20);
    cluster.shutdown().await;
}
