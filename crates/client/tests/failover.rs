//! Leaders: redirects, failover mid-wait, dead endpoints, exactly-once retries.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_first_in_the_list_redirects_to_the_leader() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let mut endpoints = cluster.endpoints();
    let follower = (leader + 1) % 3;
    endpoints.swap(0, follower);
    endpoints.truncate(1); // only a follower: everything must go by redirect
    let client = connect_to(endpoints).await;
    let session = client.session(Duration::from_secs(3)).await.unwrap();
    let guard = session.lock("redirect/a").await.unwrap();
    assert_eq!(
        lock_info(&client, "redirect/a").await.unwrap().holders[0].token,
        guard.token()
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!session.is_lost(), "keepalives follow the redirect too");
    guard.release().await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_with_the_leader_stopped_and_listed_first() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let mut endpoints = cluster.endpoints();
    endpoints.swap(0, leader);
    cluster.stop(leader).await;
    let client = connect_to(endpoints).await;
    let session = client.session(Duration::from_secs(3)).await.unwrap();
    let guard = session.lock("dead/a").await.unwrap();
    guard.release().await.unwrap();
    session.close().await.unwrap();
    cluster.shutdown().await;
}

/// A loopback address nothing listens on: connections to it are refused.
fn refusing_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_nodes_are_skipped_without_a_pause() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let follower_id = cluster.running(follower).node().id();
    // A refused port first, then one follower; the leader only by redirect.
    let endpoints = vec![refusing_endpoint(), cluster.endpoints()[follower].clone()];
    // One round per call and minute-long pauses: a call that paused even once would
    // give up at that pause instead, so every call below that succeeds went past the
    // dead node and through the redirect at once.
    let client = Client::builder(endpoints)
        .connect_timeout(Duration::from_millis(500))
        .call_timeout(Duration::from_secs(2))
        .retry_budget(1)
        .backoff(Duration::from_secs(60), Duration::from_secs(60))
        .connect()
        .await
        .expect("connect goes past the refused endpoint");
    assert_eq!(client.status().await.unwrap().node_id, follower_id);
    let first = client
        .acquire_with_lease(
            "dead/skip",
            Duration::from_secs(5),
            AcquireOptions::default(),
        )
        .await
        .unwrap()
        .expect("granted through the redirect");

    // The leader dies: the client's leader hint now names a refusing node. Once the
    // follower knows the new leader's address, one round reaches it.
    cluster.stop(leader).await;
    let new_leader = cluster.leader_other_than(leader).await;
    let raw = cluster.cluster(follower).await;
    eventually(
        Duration::from_secs(5),
        "the follower knows the new leader",
        || {
            let mut raw = raw.clone();
            async move {
                raw.status(fencelock_proto::v1::StatusRequest {})
                    .await
                    .is_ok_and(|s| !s.into_inner().leader_addr.is_empty())
            }
        },
    )
    .await;
    let second = client
        .acquire_with_lease(
            "dead/skip2",
            Duration::from_secs(5),
            AcquireOptions::default(),
        )
        .await
        .expect("the dead leader and the dead endpoint are skipped in one round")
        .expect("granted");
    assert!(second.token > first.token);
    let holder = lock_info(&connect(&cluster).await, "dead/skip2")
        .await
        .unwrap();
    assert_eq!(holder.holders[0].session_id, second.session_id);
    eprintln!("new leader index {new_leader}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_lock_survives_leader_failover() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let client = connect(&cluster).await;
    // Long leases: a node stopping with a queued Acquire in flight takes 5 s to stop
    // and the cluster elects only after that (a server issue, see the client's report),
    // so the sessions must outlive ~6 s without a leader.
    let holder = client.session(Duration::from_secs(10)).await.unwrap();
    let waiter = client.session(Duration::from_secs(10)).await.unwrap();
    let held = holder.lock("failover/a").await.unwrap();
    let waiter_id = waiter.id();
    let wait = tokio::spawn(async move {
        let guard = waiter.lock("failover/a").await;
        (guard, waiter)
    });
    wait_until_queued(&client, "failover/a", waiter_id).await;

    let stopped = Instant::now();
    cluster.stop(leader).await;
    eprintln!("stopping the leader took {:?}", stopped.elapsed());
    let new_leader = cluster.leader_other_than(leader).await;
    eprintln!("new leader after {:?}", stopped.elapsed());
    // The wait is still queued on the new leader, in the same place.
    let lock = lock_info(&client, "failover/a").await.unwrap();
    assert_eq!(lock.waiters.len(), 1, "{lock:?}");
    if wait.is_finished() {
        let (result, _) = wait.await.unwrap();
        panic!("the wait ended early: {:?}", result.map(|g| g.token()));
    }
    let first = held.token();
    held.release().await.unwrap();
    let (guard, waiter) = tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("the wait completes on the new leader")
        .unwrap();
    let guard = guard.unwrap();
    assert!(guard.token() > first);
    assert!(!waiter.is_lost() && !holder.is_lost());
    let lock = lock_info(&client, "failover/a").await.unwrap();
    assert_eq!(lock.holders[0].session_id, waiter_id);
    assert!(lock.waiters.is_empty());
    eprintln!(
        "done after {:?} (new leader index {new_leader})",
        stopped.elapsed()
    );
    drop(guard);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_leader_failover() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let client = connect(&cluster).await;
    let session = client.session(Duration::from_secs(2)).await.unwrap();
    let guard = session.lock("failover/session").await.unwrap();
    cluster.stop(leader).await;
    cluster.leader_other_than(leader).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!session.is_lost());
    let lock = lock_info(&client, "failover/session").await.unwrap();
    assert_eq!(lock.holders[0].token, guard.token());
    guard.release().await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_mutation_acts_once() {
    let cluster = TestCluster::start(1).await;
    let client = connect(&cluster).await;

    client.lose_answers_for_test(2);
    let session = client.session(Duration::from_secs(5)).await.unwrap();
    assert_eq!(client.status().await.unwrap().sessions, 1, "one session");

    let before = client.status().await.unwrap().last_token;
    client.lose_answers_for_test(3);
    let guard = session.try_lock("once/a").await.unwrap().expect("granted");
    let after = client.status().await.unwrap().last_token;
    assert_eq!(after, before + 1, "one grant for four attempts");
    assert_eq!(guard.token().0, after);

    // A second release would answer NOT_HELD; the replay answers as the first did.
    client.lose_answers_for_test(2);
    guard.release().await.unwrap();
    assert!(lock_info(&client, "once/a").await.is_none());

    // Request-id bookkeeping: every answered seq is acknowledged.
    assert_eq!(session.first_unanswered_seq_for_test(), 3);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_lock_reattaches_when_its_leader_is_partitioned_away() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let client = connect(&cluster).await;
    let holder = client.session(Duration::from_secs(5)).await.unwrap();
    let waiter = client.session(Duration::from_secs(5)).await.unwrap();
    let held = holder.lock("partition/a").await.unwrap();
    let waiter_id = waiter.id();
    let wait = tokio::spawn(async move {
        let guard = waiter.lock("partition/a").await;
        (guard, waiter)
    });
    wait_until_queued(&client, "partition/a", waiter_id).await;
    let cut = Instant::now();
    cluster.isolate(leader);
    // Releasing goes to the new leader once the old one is found deposed.
    held.release().await.unwrap();
    let (guard, waiter) = tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("the wait completes on the new leader")
        .unwrap();
    let guard = guard.unwrap();
    eprintln!("granted {:?} after the cut", cut.elapsed());
    assert!(!waiter.is_lost() && !holder.is_lost());
    let lock = lock_info(&client, "partition/a").await.unwrap();
    assert_eq!(lock.holders[0].session_id, waiter_id);
    assert_eq!(lock.holders[0].token, guard.token());
    drop(guard);
    cluster.heal();
    cluster.shutdown().await;
}
