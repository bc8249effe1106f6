//! The client API of the primitives beyond a plain lock: semaphores, atomic multi-locks,
//! reentrancy, lock-delay, proclaim, and the hold times describe reports.

mod common;

use common::*;
use fencelock_client::election::{Election, leader};
use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semaphore_permits_are_counted_and_another_limit_is_a_typed_error() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let a = client.session(Duration::from_secs(30)).await.unwrap();
    let b = client.session(Duration::from_secs(30)).await.unwrap();
    let c = client.session(Duration::from_secs(30)).await.unwrap();
    let first = a.acquire_semaphore("workers", 2).await.expect("a permit");
    let second = b.acquire_semaphore("workers", 2).await.expect("a permit");
    assert_ne!(first.token(), second.token(), "one token per grant");
    let full = c
        .acquire("workers", AcquireOptions::semaphore(2).wait(Wait::NoWait))
        .await
        .unwrap();
    assert!(matches!(full, Acquisition::WouldBlock), "{full:?}");
    let info = lock_info(&client, "workers").await.expect("in use");
    assert_eq!(info.permits, Some(2));
    assert_eq!((info.permits_used, info.permits_free()), (2, Some(0)));
    let mismatch = c
        .acquire("workers", AcquireOptions::semaphore(5).wait(Wait::NoWait))
        .await
        .expect_err("another limit");
    assert!(
        matches!(mismatch, Error::PermitsMismatch(_)),
        "{mismatch:?}"
    );
    first.release().await.unwrap();
    let third = c.acquire_semaphore("workers", 2).await.expect("a permit");
    assert!(third.token() > second.token());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_all_returns_one_guard_per_name_and_a_dropped_wait_takes_nothing() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let holder = client.session(Duration::from_secs(30)).await.unwrap();
    let asker = client.session(Duration::from_secs(30)).await.unwrap();
    let b = holder.lock("accounts/b").await.unwrap();
    // Cancelled while queued behind b: withdrawn as a whole.
    let cancelled = tokio::time::timeout(
        Duration::from_millis(300),
        asker.lock_all(&["accounts/a", "accounts/b"]),
    )
    .await;
    assert!(cancelled.is_err(), "still waiting for b");
    eventually(Duration::from_secs(5), "the wait is withdrawn", || async {
        lock_info(&client, "accounts/b")
            .await
            .is_some_and(|l| l.waiters.is_empty())
    })
    .await;
    assert!(
        lock_info(&client, "accounts/a").await.is_none(),
        "a is not held"
    );
    b.release().await.unwrap();
    let guards = asker
        .lock_all(&["accounts/b", "accounts/a"])
        .await
        .expect("both");
    let names: Vec<&str> = guards.iter().map(LockGuard::name).collect();
    assert_eq!(names, ["accounts/b", "accounts/a"]);
    assert_ne!(guards[0].token(), guards[1].token());
    for guard in &guards {
        let info = lock_info(&client, guard.name()).await.expect("held");
        assert_eq!(info.holders[0].token, guard.token());
        assert_eq!(info.holders[0].session_id, asker.id());
    }
    drop(guards);
    eventually(Duration::from_secs(5), "released on drop", || async {
        lock_info(&client, "accounts/a").await.is_none()
            && lock_info(&client, "accounts/b").await.is_none()
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reentrant_guards_share_a_token_and_release_one_hold_each() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let session = client.session(Duration::from_secs(30)).await.unwrap();
    let options = AcquireOptions::exclusive().reentrant(true);
    let outer = session
        .acquire("tree", options.clone())
        .await
        .unwrap()
        .granted()
        .expect("outer");
    let inner = session
        .acquire("tree", options)
        .await
        .unwrap()
        .granted()
        .expect("inner");
    assert_eq!(outer.token(), inner.token());
    assert_eq!((outer.hold_count(), inner.hold_count()), (1, 2));
    assert_eq!(
        lock_info(&client, "tree").await.unwrap().holders[0].hold_count,
        2
    );
    inner.release().await.unwrap();
    assert_eq!(
        lock_info(&client, "tree").await.unwrap().holders[0].hold_count,
        1
    );
    let refused = session.try_lock("tree").await.expect_err("not reentrant");
    assert!(
        matches!(refused, Error::AlreadyHeldOrQueued(_)),
        "{refused:?}"
    );
    outer.release().await.unwrap();
    assert!(lock_info(&client, "tree").await.is_none());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_delay_and_hold_times_show_in_describe() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let session = client.session(Duration::from_secs(30)).await.unwrap();
    let guard = session
        .acquire(
            "printer",
            AcquireOptions::exclusive().lock_delay(Duration::from_secs(5)),
        )
        .await
        .unwrap()
        .granted()
        .expect("granted");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let info = lock_info(&client, "printer").await.expect("held");
    let holder = &info.holders[0];
    assert_eq!(holder.lock_delay, Duration::from_secs(5));
    assert!(holder.granted_at.is_some());
    assert!(
        holder.held_for.expect("held for") >= Duration::from_secs(1),
        "{holder:?}"
    );
    // A delay beyond the cluster's limit (60 s by default) is refused.
    let other = client.session(Duration::from_secs(30)).await.unwrap();
    let refused = other
        .acquire(
            "scanner",
            AcquireOptions::exclusive().lock_delay(Duration::from_secs(3_600)),
        )
        .await
        .expect_err("too long");
    assert!(matches!(refused, Error::InvalidArgument(_)), "{refused:?}");
    guard.release().await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_proclaims_a_new_value_without_resigning() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let session = client.session(Duration::from_secs(30)).await.unwrap();
    let election = Election::new(&session, "elections/db");
    let leadership = election.campaign("10.0.0.1:5432").await.unwrap();
    let mut watch = client.watch("elections/db");
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next()).await;
    assert!(
        matches!(first, Ok(Some(Ok(WatchEvent::Resync { .. })))),
        "{first:?}"
    );
    leadership
        .proclaim("10.0.0.2:5432")
        .await
        .expect("proclaim");
    let changed = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("an event in time")
        .expect("the stream is open")
        .expect("an event");
    assert!(
        matches!(
            &changed,
            WatchEvent::ValueChanged { token, value, .. }
                if *token == leadership.token() && value == b"10.0.0.2:5432"
        ),
        "{changed:?}"
    );
    let now = leader(&client, "elections/db")
        .await
        .unwrap()
        .expect("a leader");
    assert_eq!(now.token, leadership.token(), "same term");
    assert_eq!(now.value, b"10.0.0.2:5432");
    leadership.resign().await.unwrap();
    cluster.shutdown().await;
}
