//! Locks: tokens, contention, timeouts, cancellation, guards, shared mode, reads.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_release_tokens_increase() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let session = client.session(Duration::from_secs(5)).await.unwrap();
    let mut last = FencingToken(0);
    for _ in 0..5 {
        let guard = session.lock("tokens/a").await.unwrap();
        assert!(guard.token() > last, "{} after {}", guard.token(), last);
        assert_eq!(guard.name(), "tokens/a");
        assert_eq!(guard.session_id(), session.id());
        assert_eq!(guard.mode(), LockMode::Exclusive);
        last = guard.token();
        let verified = client.verify("tokens/a", guard.token()).await.unwrap();
        assert!(verified.current);
        assert_eq!(verified.current_token, Some(guard.token()));
        guard.release().await.unwrap();
        assert!(!client.verify("tokens/a", last).await.unwrap().current);
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_lock_sees_contention() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let one = client.session(Duration::from_secs(5)).await.unwrap();
    let two = client.session(Duration::from_secs(5)).await.unwrap();
    let held = one.try_lock("try/a").await.unwrap().expect("free");
    assert!(two.try_lock("try/a").await.unwrap().is_none());
    // The same session cannot take it twice.
    assert!(matches!(
        one.try_lock("try/a").await,
        Err(Error::AlreadyHeldOrQueued(_))
    ));
    let first = held.token();
    held.release().await.unwrap();
    let taken = two.try_lock("try/a").await.unwrap().expect("released");
    assert!(taken.token() > first);
    assert!(matches!(one.try_lock("").await, Err(Error::InvalidName(_))));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_timeout_times_out_and_leaves_no_waiter() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let one = client.session(Duration::from_secs(5)).await.unwrap();
    let two = client.session(Duration::from_secs(5)).await.unwrap();
    let _held = one.lock("timeout/a").await.unwrap();
    let started = Instant::now();
    let got = two
        .lock_timeout("timeout/a", Duration::from_millis(300))
        .await
        .unwrap();
    assert!(got.is_none());
    assert!(started.elapsed() >= Duration::from_millis(300));
    let typed = two
        .acquire(
            "timeout/a",
            AcquireOptions::exclusive().wait(Wait::Timeout(Duration::from_millis(100))),
        )
        .await
        .unwrap();
    assert!(matches!(typed, Acquisition::TimedOut));
    let lock = lock_info(&client, "timeout/a").await.unwrap();
    assert!(lock.waiters.is_empty(), "{lock:?}");
    assert_eq!(lock.holders.len(), 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_waiting_lock_withdraws_the_wait() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let one = client.session(Duration::from_secs(5)).await.unwrap();
    let two = client.session(Duration::from_secs(5)).await.unwrap();
    let held = one.lock("cancel/a").await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(300), two.lock("cancel/a")).await;
    assert!(waiting.is_err(), "the lock is held");
    let dropped = Instant::now();
    eventually(Duration::from_secs(1), "no waiter", || async {
        lock_info(&client, "cancel/a")
            .await
            .is_some_and(|l| l.waiters.is_empty())
    })
    .await;
    assert!(dropped.elapsed() < Duration::from_secs(1));
    held.release().await.unwrap();
    assert!(
        lock_info(&client, "cancel/a").await.is_none(),
        "nobody got it"
    );
    // The same session can wait again at once.
    let guard = two.lock("cancel/a").await.unwrap();
    guard.release().await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_wait_racing_its_grant_never_leaves_the_lock_held() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let holder = client.session(Duration::from_secs(5)).await.unwrap();
    let waiter = client.session(Duration::from_secs(5)).await.unwrap();
    let mut granted_before_drop = 0;
    for round in 0..40u64 {
        let held = holder.lock("race/a").await.unwrap();
        let release_after = Duration::from_millis(fastrand::u64(0..15));
        let drop_after = Duration::from_millis(fastrand::u64(0..15));
        let release = tokio::spawn(async move {
            tokio::time::sleep(release_after).await;
            held.release().await.unwrap();
        });
        if let Ok(guard) = tokio::time::timeout(drop_after, waiter.lock("race/a")).await {
            granted_before_drop += 1;
            drop(guard.unwrap());
        }
        release.await.unwrap();
        eventually(
            Duration::from_secs(1),
            &format!("round {round}: lock free"),
            || async { lock_info(&client, "race/a").await.is_none() },
        )
        .await;
    }
    eprintln!("granted before drop in {granted_before_drop} of 40 rounds");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_guard_releases_the_lock() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let one = client.session(Duration::from_secs(5)).await.unwrap();
    let two = client.session(Duration::from_secs(5)).await.unwrap();
    let guard = one.lock("guard/a").await.unwrap();
    let first = guard.token();
    drop(guard);
    // Re-locking on the same session right away waits for the background release.
    let again = one.lock("guard/a").await.unwrap();
    assert!(again.token() > first);
    drop(again);
    let other = two
        .lock_timeout("guard/a", Duration::from_secs(2))
        .await
        .unwrap()
        .expect("released in the background");
    drop(other);
    eventually(Duration::from_secs(1), "released", || async {
        lock_info(&client, "guard/a").await.is_none()
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_holders_coexist_and_an_exclusive_waits() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let readers: Vec<Session> =
        futures::future::try_join_all((0..2).map(|_| client.session(Duration::from_secs(5))))
            .await
            .unwrap();
    let writer = client.session(Duration::from_secs(5)).await.unwrap();
    let shared = AcquireOptions::exclusive()
        .mode(LockMode::Shared)
        .wait(Wait::NoWait)
        .value(b"reader".to_vec());
    let mut guards = Vec::new();
    for reader in &readers {
        match reader.acquire("shared/a", shared.clone()).await.unwrap() {
            Acquisition::Granted(guard) => guards.push(guard),
            other => panic!("shared grant refused: {other:?}"),
        }
    }
    assert!(writer.try_lock("shared/a").await.unwrap().is_none());
    let writer_id = writer.id();
    let wait = tokio::spawn(async move {
        let guard = writer.lock("shared/a").await.unwrap();
        (guard.token(), writer)
    });
    wait_until_queued(&client, "shared/a", writer_id).await;
    let lock = lock_info(&client, "shared/a").await.unwrap();
    assert_eq!(lock.holders.len(), 2);
    assert!(
        lock.holders
            .iter()
            .all(|h| h.mode == LockMode::Shared && h.value == b"reader")
    );
    let max_shared = guards.iter().map(|g| g.token()).max().unwrap();
    guards.pop().unwrap().release().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!wait.is_finished(), "one shared holder is left");
    guards.pop().unwrap().release().await.unwrap();
    let (token, _writer) = tokio::time::timeout(Duration::from_secs(2), wait)
        .await
        .expect("granted after both readers left")
        .unwrap();
    assert!(token > max_shared);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_describe_force_release_and_status() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let session = client.session(Duration::from_secs(5)).await.unwrap();
    let mut guards = Vec::new();
    for i in 0..7 {
        guards.push(session.lock(&format!("list/{i}")).await.unwrap());
    }
    let _other = session.lock("other/x").await.unwrap();
    let all = client.list("list/", 100).await.unwrap();
    assert_eq!(
        all.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
        (0..7).map(|i| format!("list/{i}")).collect::<Vec<_>>()
    );
    assert_eq!(client.list("list/", 3).await.unwrap().len(), 3);
    let page = client.list_page("list/", None, 4).await.unwrap();
    assert_eq!(page.locks.len(), 4);
    let next = page.next_start_after.expect("more pages");
    let rest = client.list_page("list/", Some(&next), 4).await.unwrap();
    assert_eq!(rest.locks.len(), 3);
    assert_eq!(rest.next_start_after, None);

    assert_eq!(client.force_release("list/0").await.unwrap(), 1);
    assert!(lock_info(&client, "list/0").await.is_none());
    assert!(matches!(
        guards.remove(0).release().await,
        Err(Error::NotHeld(_))
    ));
    let status = client.status().await.unwrap();
    assert_eq!(status.members.len(), 1);
    assert_eq!(status.leader_id, Some(status.node_id));
    assert_eq!(status.sessions, 1);
    assert!(status.last_token >= 8);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_with_lease_takes_a_session_less_lock() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let ttl = Duration::from_secs(30);
    let lease = client
        .acquire_with_lease("lease/a", ttl, AcquireOptions::default())
        .await
        .unwrap()
        .expect("granted");
    assert_eq!(lease.ttl, ttl);
    assert!(lease.remaining > Duration::ZERO && lease.remaining < ttl);
    let lock = lock_info(&client, "lease/a").await.unwrap();
    assert_eq!(lock.holders[0].session_id, lease.session_id);
    assert_eq!(lock.holders[0].token, lease.token);
    assert_eq!(lock.holders[0].client_id, Some(lease.client_id));
    let busy = AcquireOptions::exclusive().wait(Wait::NoWait);
    assert!(
        client
            .acquire_with_lease("lease/a", ttl, busy)
            .await
            .unwrap()
            .is_none()
    );
    client.close_session(lease.session_id).await.unwrap();
    assert!(lock_info(&client, "lease/a").await.is_none());
    cluster.shutdown().await;
}

/// The server starts a session-less lock's TTL when it takes the request in, so a wait
/// of W uses W of it: the client reports at most TTL - W, counted from its first send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_with_lease_reports_what_the_wait_left_of_the_ttl() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;
    let holder = client.session(Duration::from_secs(30)).await.unwrap();
    let guard = holder.lock("lease/waited").await.unwrap();
    let ttl = Duration::from_secs(10);
    let waiting = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .acquire_with_lease("lease/waited", ttl, AcquireOptions::default())
                .await
        }
    });
    eventually(
        Duration::from_secs(10),
        "the session-less acquire queued",
        || async {
            lock_info(&client, "lease/waited")
                .await
                .is_some_and(|lock| !lock.waiters.is_empty())
        },
    )
    .await;
    // The request was sent before it queued: it has waited at least W when granted.
    let waited = Duration::from_secs(2);
    tokio::time::sleep(waited).await;
    guard.release().await.unwrap();
    let lease = waiting.await.unwrap().unwrap().expect("granted");
    assert_eq!(lease.ttl, ttl);
    assert!(
        lease.remaining <= ttl - waited,
        "reported {:?} after a wait of {waited:?} on a TTL of {ttl:?}",
        lease.remaining
    );
    assert!(lease.remaining > Duration::ZERO);
    assert!(lease.deadline <= Instant::now() + ttl - waited);
    client.close_session(lease.session_id).await.unwrap();
    holder.close().await.unwrap();
    cluster.shutdown().await;
}
