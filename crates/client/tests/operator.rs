//! Operator tools: listing sessions, revoking a session, force-releasing a lock, and
//! what watchers see of each.

mod common;
use common::*;
use futures::StreamExt;

async fn next(stream: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(3), stream.next())
        .await
        .expect("an event")
        .expect("stream open")
        .expect("no error")
}

/// The next event that is not a `Resync` marker.
async fn next_change(stream: &mut WatchStream) -> WatchEvent {
    loop {
        let event = next(stream).await;
        if !matches!(event, WatchEvent::Resync { .. }) {
            return event;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_lists_client_ids_ttls_and_held_locks() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let first = client.session(Duration::from_secs(5)).await.unwrap();
    let second = std::sync::Arc::new(client.session(Duration::from_secs(7)).await.unwrap());
    let _a = first.lock("ops/a").await.unwrap();
    let b = first.lock("ops/b").await.unwrap();
    let queued = tokio::spawn({
        let second = second.clone();
        async move { second.lock("ops/a").await }
    });
    wait_until_queued(&client, "ops/a", second.id()).await;

    let sessions = client.list_sessions(100).await.unwrap();
    assert_eq!(sessions.len(), 2);
    let one = &sessions[0];
    assert_eq!(one.session_id, first.id());
    assert_eq!(one.client_id, Some(first.client_id()));
    assert_eq!(one.ttl, Duration::from_secs(5));
    assert_eq!(
        one.held
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>(),
        ["ops/a", "ops/b"]
    );
    assert_eq!(one.held[1].1, b.token());
    assert!(one.waiting.is_empty());
    let two = &sessions[1];
    assert_eq!(two.session_id, second.id());
    assert_eq!(two.client_id, Some(second.client_id()));
    assert_eq!(two.ttl, Duration::from_secs(7));
    assert!(two.held.is_empty());
    assert_eq!(two.waiting, ["ops/a"]);

    // Paging: one at a time, in id order, and the last page says so.
    let page = client.list_sessions_page(None, 1).await.unwrap();
    assert_eq!(page.sessions.len(), 1);
    let next_page = page.next_start_after.expect("a second page");
    let rest = client.list_sessions_page(Some(next_page), 1).await.unwrap();
    assert_eq!(rest.sessions[0].session_id, second.id());
    assert_eq!(rest.next_start_after, None);
    assert_eq!(client.list_sessions(1).await.unwrap().len(), 1);
    queued.abort();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_session_hands_its_locks_to_the_next_waiter_and_watchers_see_it() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let mut watch = client.watch("revoke/a");
    assert!(matches!(next(&mut watch).await, WatchEvent::Resync { .. }));

    let holder = client.session(Duration::from_secs(10)).await.unwrap();
    let waiter = std::sync::Arc::new(client.session(Duration::from_secs(10)).await.unwrap());
    let held = holder.lock("revoke/a").await.unwrap();
    let _other = holder.lock("revoke/b").await.unwrap();
    assert!(matches!(
        next_change(&mut watch).await,
        WatchEvent::Acquired { .. }
    ));
    let waiting = tokio::spawn({
        let waiter = waiter.clone();
        async move { waiter.lock("revoke/a").await }
    });
    wait_until_queued(&client, "revoke/a", waiter.id()).await;

    assert_eq!(client.revoke_session(holder.id()).await.unwrap(), 2);
    match next_change(&mut watch).await {
        WatchEvent::Revoked {
            name,
            session_id,
            token,
            ..
        } => {
            assert_eq!(name, "revoke/a");
            assert_eq!(session_id, holder.id());
            assert_eq!(token, held.token());
        }
        other => panic!("expected a revoked event, got {other:?}"),
    }
    let granted = tokio::time::timeout(Duration::from_secs(3), waiting)
        .await
        .expect("the waiter is granted")
        .unwrap()
        .unwrap();
    assert!(granted.token() > held.token());
    match next_change(&mut watch).await {
        WatchEvent::Acquired { session_id, .. } => assert_eq!(session_id, waiter.id()),
        other => panic!("expected the waiter's grant, got {other:?}"),
    }
    assert!(lock_info(&client, "revoke/b").await.is_none());
    let sessions = client.list_sessions(100).await.unwrap();
    assert_eq!(
        sessions.iter().map(|s| s.session_id).collect::<Vec<_>>(),
        [waiter.id()]
    );
    // The revoked session's client finds out at its next keep-alive.
    eventually(Duration::from_secs(5), "the holder is lost", || async {
        holder.is_lost()
    })
    .await;
    assert!(matches!(
        client.revoke_session(holder.id()).await,
        Err(Error::SessionNotFound(_))
    ));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_a_force_release_as_forced() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let mut watch = client.watch_prefix("forced/");
    assert!(matches!(next(&mut watch).await, WatchEvent::Resync { .. }));
    let session = client.session(Duration::from_secs(10)).await.unwrap();
    let guard = session.lock("forced/x").await.unwrap();
    assert!(matches!(
        next_change(&mut watch).await,
        WatchEvent::Acquired { .. }
    ));
    assert_eq!(client.force_release("forced/x").await.unwrap(), 1);
    match next_change(&mut watch).await {
        WatchEvent::Forced {
            name,
            session_id,
            token,
            ..
        } => {
            assert_eq!(name, "forced/x");
            assert_eq!(session_id, session.id());
            assert_eq!(token, guard.token());
        }
        other => panic!("expected a forced event, got {other:?}"),
    }
    cluster.shutdown().await;
}
