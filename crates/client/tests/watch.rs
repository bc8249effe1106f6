//! Watches and leader election.

mod common;
use common::*;
use fencelock_client::election::{self, Election};
use futures::StreamExt;

async fn next(stream: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(3), stream.next())
        .await
        .expect("an event")
        .expect("stream open")
        .expect("no error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sees_acquire_release_and_expiry() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let mut watch = client.watch("watched/a");
    let mut everything = client.watch_prefix("");
    assert!(matches!(next(&mut watch).await, WatchEvent::Resync { .. }));
    assert!(matches!(
        next(&mut everything).await,
        WatchEvent::Resync { .. }
    ));

    let session = client.session(Duration::from_secs(1)).await.unwrap();
    let _unwatched = session.lock("unwatched/b").await.unwrap();
    let guard = session
        .acquire(
            "watched/a",
            AcquireOptions::exclusive().value(b"me".to_vec()),
        )
        .await
        .unwrap()
        .granted()
        .unwrap();
    match next(&mut watch).await {
        WatchEvent::Acquired {
            name,
            session_id,
            token,
            value,
            mode,
            ..
        } => {
            assert_eq!(name, "watched/a");
            assert_eq!(session_id, session.id());
            assert_eq!(token, guard.token());
            assert_eq!(value, b"me");
            assert_eq!(mode, LockMode::Exclusive);
        }
        other => panic!("expected Acquired, got {other:?}"),
    }
    let token = guard.token();
    guard.release().await.unwrap();
    match next(&mut watch).await {
        WatchEvent::Released { token: t, .. } => assert_eq!(t, token),
        other => panic!("expected Released, got {other:?}"),
    }
    let guard = session.lock("watched/a").await.unwrap();
    assert!(matches!(
        next(&mut watch).await,
        WatchEvent::Acquired { .. }
    ));
    session.pause_keepalive_for_test(Duration::from_secs(30));
    match next(&mut watch).await {
        WatchEvent::Expired {
            session_id, token, ..
        } => {
            assert_eq!(session_id, session.id());
            assert_eq!(token, guard.token());
        }
        other => panic!("expected Expired, got {other:?}"),
    }
    // The prefix watch saw both locks.
    let mut names = Vec::new();
    while names.len() < 5 {
        if let Some(name) = next(&mut everything).await.name() {
            names.push(name.to_string());
        }
    }
    assert!(names.contains(&"unwatched/b".to_string()));
    assert!(names.contains(&"watched/a".to_string()));
    drop(guard);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reconnects_and_resumes_when_its_node_stops() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let mut endpoints = cluster.endpoints();
    endpoints.swap(0, follower);
    let client = connect_to(endpoints).await;
    let mut watch = client.watch("reconnect/a");
    assert!(matches!(next(&mut watch).await, WatchEvent::Resync { .. }));
    cluster.stop(follower).await;
    // Resumed on another node after the last event received: no resync.
    let session = client.session(Duration::from_secs(3)).await.unwrap();
    let guard = session.lock("reconnect/a").await.unwrap();
    assert!(matches!(
        next(&mut watch).await,
        WatchEvent::Acquired { .. }
    ));
    drop(guard);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_hands_over_in_order() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let name = "election/leader";
    let mut observed = election::observe(&client, name);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(3), observed.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        None,
        "no leader yet"
    );

    let a = client.session(Duration::from_secs(5)).await.unwrap();
    let b = client.session(Duration::from_secs(5)).await.unwrap();
    let leading = Election::new(&a, name)
        .campaign(b"a".to_vec())
        .await
        .unwrap();
    assert_eq!(leading.session_id(), a.id());
    let b_id = b.id();
    let candidate = tokio::spawn(async move {
        let leadership = Election::new(&b, name)
            .campaign(b"b".to_vec())
            .await
            .unwrap();
        (leadership, b)
    });
    wait_until_queued(&client, name, b_id).await;
    let now = election::leader(&client, name).await.unwrap().unwrap();
    assert_eq!(now.value, b"a");
    assert_eq!(now.session_id, a.id());
    assert_eq!(now.token, leading.token());

    let first_term = leading.token();
    leading.resign().await.unwrap();
    let (second, _b) = tokio::time::timeout(Duration::from_secs(3), candidate)
        .await
        .unwrap()
        .unwrap();
    assert!(second.token() > first_term);

    let mut leaders = Vec::new();
    while leaders.len() < 2 {
        let item = tokio::time::timeout(Duration::from_secs(3), observed.next())
            .await
            .expect("observe reports")
            .unwrap()
            .unwrap();
        if let Some(leader) = item {
            leaders.push(leader);
        }
    }
    assert_eq!(leaders[0].value, b"a");
    assert_eq!(leaders[0].token, first_term);
    assert_eq!(leaders[1].value, b"b");
    assert_eq!(leaders[1].session_id, b_id);
    assert_eq!(leaders[1].token, second.token());
    drop(second);
    cluster.shutdown().await;
}
