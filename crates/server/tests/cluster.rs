//! Cluster behaviour over real gRPC on loopback: formation, failover, restart, expiry,
//! partitions, retries, snapshots and membership changes.

mod common;

use common::*;
use fencelock_proto::v1 as pb;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn describe(cluster: &TestCluster, index: usize, name: &str) -> Option<pb::LockInfo> {
    cluster
        .locks(index)
        .await
        .describe(pb::DescribeRequest { name: name.into() })
        .await
        .expect("describe")
        .into_inner()
        .lock
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_started_in_any_order_form_one_cluster() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let status = cluster
        .cluster(leader)
        .await
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.members.len(), 3);
    assert!(status.members.iter().all(|m| m.voter));
    // A follower names the leader's client address so clients can redirect.
    let follower = (leader + 1) % 3;
    let error = cluster
        .locks(follower)
        .await
        .open_session(pb::OpenSessionRequest {
            client_id: client_id(1),
            ttl_ms: 5_000,
        })
        .await
        .expect_err("a follower does not accept writes");
    assert_eq!(reason_of(&error), pb::ErrorReason::NotLeader);
    let detail = fencelock_server::api::status::detail_of(&error).unwrap();
    assert_eq!(detail.leader_id, cluster.slots[leader].id);
    assert_eq!(detail.leader_addr, cluster.slots[leader].client.to_string());
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_survives_leader_kill_and_new_grants_get_larger_tokens() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let mut client = cluster.locks(leader).await;
    let session = open_session(&mut client, 1, 8_000).await;
    let token = try_lock(&mut client, session, "jobs/billing", 1)
        .await
        .expect("granted");

    cluster.stop(leader).await;
    let started = Instant::now();
    let new_leader = cluster.leader_other_than(leader).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "failover took {:?}",
        started.elapsed()
    );

    let lock = describe(&cluster, new_leader, "jobs/billing")
        .await
        .expect("still held");
    assert_eq!(lock.holders.len(), 1);
    assert_eq!(lock.holders[0].session_id, session);
    assert_eq!(lock.holders[0].token, token);

    let mut client = cluster.locks(new_leader).await;
    let other = open_session(&mut client, 2, 8_000).await;
    let next = try_lock(&mut client, other, "jobs/other", 1)
        .await
        .expect("granted");
    assert!(next > token, "token {next} after {token}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_restart_restores_locks_sessions_and_the_token_counter() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let mut client = cluster.locks(leader).await;
    let session = open_session(&mut client, 1, 20_000).await;
    let mut tokens = Vec::new();
    for (seq, name) in ["a", "b", "c"].iter().enumerate() {
        tokens.push(
            try_lock(&mut client, session, name, seq as u64 + 1)
                .await
                .unwrap(),
        );
    }
    // Release one so the counter is ahead of every held token.
    client
        .release(pb::ReleaseRequest {
            session_id: session,
            name: "c".into(),
            token: tokens[2],
            request: rid(4),
        })
        .await
        .unwrap();
    drop(client);
    for index in 0..3 {
        cluster.stop(index).await;
    }
    for index in 0..3 {
        cluster.restart(index).await;
    }
    let leader = cluster.leader().await;
    let a = describe(&cluster, leader, "a")
        .await
        .expect("lock a is back");
    assert_eq!(
        (a.holders[0].session_id, a.holders[0].token),
        (session, tokens[0])
    );
    assert!(describe(&cluster, leader, "c").await.is_none());
    let mut client = cluster.locks(leader).await;
    // The session is back: it can still release with its token.
    client
        .release(pb::ReleaseRequest {
            session_id: session,
            name: "b".into(),
            token: tokens[1],
            request: rid(5),
        })
        .await
        .expect("session survived the restart");
    let fresh = try_lock(&mut client, session, "c", 6).await.unwrap();
    assert!(fresh > tokens[2], "token {fresh} reissued after restart");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_holder_passes_the_lock_to_waiters_in_fifo_order() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let mut client = cluster.locks(leader).await;
    let mut watch = client
        .watch(pb::WatchRequest {
            name: "queue".into(),
            prefix: false,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let holder = open_session(&mut client, 1, 1_000).await;
    let first = open_session(&mut client, 2, 10_000).await;
    let second = open_session(&mut client, 3, 10_000).await;
    let _alive = keep_alive(&mut client, vec![first, second], Duration::from_millis(200)).await;
    let held = try_lock(&mut client, holder, "queue", 1).await.unwrap();

    let mut waiting = Vec::new();
    for session in [first, second] {
        let mut waiter = cluster.locks(leader).await;
        waiting.push(tokio::spawn(async move {
            let response = waiter
                .acquire(acquire_request(
                    session,
                    "queue",
                    1,
                    pb::WaitPolicy::Forever,
                ))
                .await
                .expect("granted after the holder expires")
                .into_inner();
            (session, response.token, Instant::now())
        }));
        // Queue in a known order.
        let deadline = Instant::now() + SETTLE;
        loop {
            let lock = describe(&cluster, leader, "queue").await.unwrap();
            if lock.waiters.iter().any(|w| w.session_id == session) {
                break;
            }
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // The holder sends no keepalive: its lease ends and `first` gets the lock.
    let (session, token, _) = waiting.remove(0).await.unwrap();
    assert_eq!(session, first);
    assert!(token > held);
    let lock = describe(&cluster, leader, "queue").await.unwrap();
    assert_eq!(lock.holders[0].session_id, first);
    assert_eq!(lock.waiters.len(), 1);
    assert_eq!(lock.waiters[0].session_id, second);
    client
        .release(pb::ReleaseRequest {
            session_id: first,
            name: "queue".into(),
            token,
            request: rid(2),
        })
        .await
        .unwrap();
    let (session, second_token, _) = waiting.remove(0).await.unwrap();
    assert_eq!(session, second);
    assert!(second_token > token);

    // Watchers saw the expiry as such.
    let mut kinds = Vec::new();
    while kinds.len() < 5 {
        let event = tokio::time::timeout(SETTLE, watch.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if !event.resync {
            kinds.push((event.kind, event.session_id));
        }
    }
    assert_eq!(
        kinds,
        vec![
            (pb::EventKind::Acquired as i32, holder),
            (pb::EventKind::Expired as i32, holder),
            (pb::EventKind::Acquired as i32, first),
            (pb::EventKind::Released as i32, first),
            (pb::EventKind::Acquired as i32, second),
        ]
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_neither_grants_nor_acknowledges_keepalives() {
    let cluster = TestCluster::start(3).await;
    let old = cluster.leader().await;
    let mut client = cluster.locks(old).await;
    let session = open_session(&mut client, 1, 10_000).await;

    cluster.isolate(old);
    // The cut-off leader cannot commit a grant...
    let result = tokio::time::timeout(
        Duration::from_secs(8),
        client.acquire(acquire_request(
            session,
            "isolated",
            1,
            pb::WaitPolicy::NoWait,
        )),
    )
    .await
    .expect("answers within the request timeout");
    let error = result.expect_err("no grant without a quorum");
    assert!(matches!(
        reason_of(&error),
        pb::ErrorReason::Unavailable | pb::ErrorReason::NotLeader | pb::ErrorReason::NoLeader
    ));
    // ...and does not acknowledge keepalives.
    let (requests, outbound) = tokio::sync::mpsc::channel(4);
    let mut replies = client
        .keep_alive(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
        .unwrap()
        .into_inner();
    requests
        .send(pb::KeepAliveRequest {
            session_id: session,
        })
        .await
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(8), replies.message())
        .await
        .expect("keepalive answered")
        .unwrap()
        .unwrap();
    assert_eq!(reply.status, pb::KeepAliveStatus::NotLeader as i32);

    // The majority elects a new leader that grants.
    let deadline = Instant::now() + SETTLE;
    let new = loop {
        let majority: Vec<usize> = (0..3).filter(|i| *i != old).collect();
        let states: Vec<_> = majority
            .iter()
            .map(|i| cluster.running(*i).node().status())
            .collect();
        if let Some(index) = majority
            .iter()
            .zip(&states)
            .find(|(_, s)| s.state == "Leader")
        {
            break *index.0;
        }
        assert!(Instant::now() < deadline, "majority elected no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut majority_client = cluster.locks(new).await;
    assert!(
        try_lock(&mut majority_client, session, "isolated", 1)
            .await
            .is_some()
    );
    cluster.heal();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_acts_once() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let mut client = cluster.locks(leader).await;
    let session = open_session(&mut client, 1, 10_000).await;
    // Retrying OpenSession with the same client id returns the same session.
    assert_eq!(open_session(&mut client, 1, 10_000).await, session);
    let first = try_lock(&mut client, session, "once", 1).await.unwrap();
    let again = try_lock(&mut client, session, "once", 1).await.unwrap();
    assert_eq!(first, again, "the retry returned the first answer");
    let status = cluster
        .cluster(leader)
        .await
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.last_token, first, "no second token was minted");
    let release = pb::ReleaseRequest {
        session_id: session,
        name: "once".into(),
        token: first,
        request: rid(2),
    };
    client.release(release.clone()).await.unwrap();
    client
        .release(release)
        .await
        .expect("a retried release returns the first answer");
    cluster.shutdown().await;
}

/// Stop a follower, then take `count` locks named by `name` (one entry each) through
/// the leader. Returns the leader's and the stopped follower's indexes and the last token.
async fn lock_while_one_is_down(
    cluster: &mut TestCluster,
    count: u64,
    name: impl Fn(u64) -> String,
) -> (usize, usize, u64) {
    let leader = cluster.leader().await;
    let behind = (leader + 1) % 3;
    cluster.stop(behind).await;
    let mut client = cluster.locks(leader).await;
    // No keepalives are sent: the lease must outlast hundreds of acquires on a loaded
    // machine (20 s did not, once).
    let session = open_session(&mut client, 1, 300_000).await;
    let mut last = 0;
    for seq in 1..=count {
        last = try_lock(&mut client, session, &name(seq), seq)
            .await
            .unwrap();
    }
    (leader, behind, last)
}

/// Start the stopped node at `index` again and wait until it has applied the grant of
/// token `last`.
async fn restart_until_caught_up(
    cluster: &mut TestCluster,
    index: usize,
    last: u64,
) -> Arc<fencelock_server::node::Node> {
    cluster.restart(index).await;
    let node = cluster.running(index).node().clone();
    let deadline = Instant::now() + SETTLE;
    while node.status().last_token != last {
        assert!(Instant::now() < deadline, "lagging node did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_far_behind_catches_up_through_a_snapshot() {
    let mut cluster = TestCluster::start_with(3, |config| {
        fast(config);
        config.raft.snapshot_every_entries = 20;
        config.raft.log_entries_kept_after_snapshot = 5;
    })
    .await;
    let (leader, behind, last) =
        lock_while_one_is_down(&mut cluster, 60, |seq| format!("k{seq}")).await;
    let leader_node = cluster.running(leader).node().clone();
    let deadline = Instant::now() + SETTLE;
    while leader_node.raft().metrics().borrow().purged.is_none() {
        assert!(Instant::now() < deadline, "leader never purged its log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let node = restart_until_caught_up(&mut cluster, behind, last).await;
    assert!(
        node.raft().metrics().borrow().snapshot.is_some(),
        "caught up through a snapshot"
    );
    assert_eq!(node.status().locks, 60);
    cluster.shutdown().await;
}

/// A follower that missed more entries than fit in one peer message catches up: the
/// leader's batch over `max_peer_message_bytes` goes back to openraft as "payload too
/// large" and is sent again in smaller batches (a batch over the limit would be refused
/// by the follower's link and never get through).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_by_more_than_one_message_catches_up_in_smaller_batches() {
    let mut cluster = TestCluster::start_with(3, |config| {
        fast(config);
        config.network.max_peer_message_bytes = 64 * 1024;
    })
    .await;
    // 400 entries of one ~200-byte name each: ~100 KiB, over the 64 KiB limit.
    let (_, behind, last) = lock_while_one_is_down(&mut cluster, 400, |seq| {
        format!("{seq:04}-{}", "x".repeat(200))
    })
    .await;
    let node = restart_until_caught_up(&mut cluster, behind, last).await;
    assert_eq!(node.status().locks, 400);
    assert!(
        node.raft().metrics().borrow().snapshot.is_none(),
        "caught up from the log, not a snapshot"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_a_fourth_node_and_remove_one_at_run_time() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let mut client = cluster.locks(leader).await;
    let session = open_session(&mut client, 1, 20_000).await;
    let token = try_lock(&mut client, session, "m", 1).await.unwrap();

    let fourth = cluster.add_joining_node().await;
    let members = cluster
        .cluster(leader)
        .await
        .add_member(pb::AddMemberRequest {
            id: cluster.slots[fourth].id,
            peer_addr: cluster.slots[fourth].peer.to_string(),
            learner_only: false,
        })
        .await
        .expect("add member")
        .into_inner()
        .members;
    assert_eq!(members.iter().filter(|m| m.voter).count(), 4);
    let node = cluster.running(fourth).node().clone();
    let deadline = Instant::now() + SETTLE;
    while node.status().last_token != token {
        assert!(Instant::now() < deadline, "new member did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let removed = (0..3).find(|i| *i != leader).unwrap();
    let members = cluster
        .cluster(leader)
        .await
        .remove_member(pb::RemoveMemberRequest {
            id: cluster.slots[removed].id,
        })
        .await
        .expect("remove member")
        .into_inner()
        .members;
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m.id != cluster.slots[removed].id));
    cluster.stop(removed).await;
    // The remaining three still commit.
    let next = try_lock(&mut client, session, "m2", 2).await.unwrap();
    assert!(next > token);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_on_a_deposed_leader_ends_with_not_leader_and_reattaches_on_the_new_one() {
    let cluster = TestCluster::start(3).await;
    let old = cluster.leader().await;
    let mut client = cluster.locks(old).await;
    let holder = open_session(&mut client, 1, 10_000).await;
    let waiter_session = open_session(&mut client, 2, 10_000).await;
    let held = try_lock(&mut client, holder, "handoff", 1).await.unwrap();
    let mut waiter = cluster.locks(old).await;
    let waiting = tokio::spawn(async move {
        waiter
            .acquire(acquire_request(
                waiter_session,
                "handoff",
                1,
                pb::WaitPolicy::Forever,
            ))
            .await
    });
    let deadline = Instant::now() + SETTLE;
    while cluster.running(old).node().status().waiters == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.isolate(old);
    let error = tokio::time::timeout(SETTLE, waiting)
        .await
        .expect("the wait ends when leadership is lost")
        .unwrap()
        .expect_err("not granted by a deposed leader");
    assert!(matches!(
        reason_of(&error),
        pb::ErrorReason::NotLeader | pb::ErrorReason::NoLeader
    ));
    // On the new leader the same request id re-attaches to the same queued wait.
    let new = loop {
        if let Some(index) = (0..3)
            .filter(|i| *i != old)
            .find(|i| cluster.running(*i).node().status().state == "Leader")
        {
            break index;
        }
        assert!(Instant::now() < deadline, "no new leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut waiter = cluster.locks(new).await;
    let retried = tokio::spawn(async move {
        waiter
            .acquire(acquire_request(
                waiter_session,
                "handoff",
                1,
                pb::WaitPolicy::Forever,
            ))
            .await
    });
    let mut client = cluster.locks(new).await;
    let lock = describe(&cluster, new, "handoff").await.unwrap();
    assert_eq!(lock.waiters.len(), 1, "re-attached, not queued twice");
    client
        .release(pb::ReleaseRequest {
            session_id: holder,
            name: "handoff".into(),
            token: held,
            request: rid(2),
        })
        .await
        .unwrap();
    let granted = tokio::time::timeout(SETTLE, retried)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .into_inner();
    assert_eq!(granted.outcome, pb::AcquireOutcome::Granted as i32);
    assert!(granted.token > held);
    cluster.heal();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commands_are_packed_into_few_raft_entries() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let node = cluster.running(leader).node().clone();
    let before = node.raft().metrics().borrow().last_log_index.unwrap_or(0);
    let mut tasks = Vec::new();
    for id in 0..200u128 {
        let mut client = cluster.locks(leader).await;
        tasks.push(tokio::spawn(async move {
            open_session(&mut client, 10_000 + id, 10_000).await
        }));
    }
    let mut sessions = std::collections::BTreeSet::new();
    for task in tasks {
        sessions.insert(task.await.unwrap());
    }
    assert_eq!(sessions.len(), 200, "every open acted once");
    let entries = node.raft().metrics().borrow().last_log_index.unwrap_or(0) - before;
    // One entry per command would be 200; the proposer packs what queues up during a
    // write. The bound is loose: it only has to show that packing happens.
    assert!(entries < 150, "200 commands took {entries} entries");
    cluster.shutdown().await;
}

/// The leader's last log index.
fn last_log_index(cluster: &TestCluster, index: usize) -> u64 {
    let metrics = cluster.running(index).node().raft().metrics();
    let last = metrics.borrow().last_log_index;
    last.unwrap_or(0)
}

/// A holder of `name` and a second session that will wait for it, on a 1-node cluster
/// that holds back acquires that will queue for `waiting_acquire_delay`.
async fn held_lock_and_a_waiter(
    tweak: fn(&mut fencelock_server::config::ServerConfig),
    name: &str,
) -> (TestCluster, u64, u64, u64) {
    let cluster = TestCluster::start_with(1, tweak).await;
    cluster.leader().await;
    let mut client = cluster.locks(0).await;
    let holder = open_session(&mut client, 1, 10_000).await;
    let waiter = open_session(&mut client, 2, 10_000).await;
    let token = try_lock(&mut client, holder, name, 1).await.unwrap();
    (cluster, holder, waiter, token)
}

/// `session` waits for `name` (no timeout) in a task of its own.
async fn wait_forever(
    cluster: &TestCluster,
    session: u64,
    name: &'static str,
) -> tokio::task::JoinHandle<Result<pb::AcquireResponse, tonic::Status>> {
    let mut client = cluster.locks(0).await;
    tokio::spawn(async move {
        client
            .acquire(acquire_request(session, name, 1, pb::WaitPolicy::Forever))
            .await
            .map(tonic::Response::into_inner)
    })
}

/// `holder` releases `name`; the waiter's acquire (`waiting`) ends with a grant.
async fn release_to_the_waiter(
    cluster: &TestCluster,
    holder: u64,
    name: &str,
    held: u64,
    waiting: tokio::task::JoinHandle<Result<pb::AcquireResponse, tonic::Status>>,
) -> pb::AcquireResponse {
    let mut client = cluster.locks(0).await;
    client
        .release(pb::ReleaseRequest {
            session_id: holder,
            name: name.into(),
            token: held,
            request: rid(2),
        })
        .await
        .unwrap();
    let granted = tokio::time::timeout(SETTLE, waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(granted.outcome, pb::AcquireOutcome::Granted as i32);
    granted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_that_will_queue_rides_in_the_entry_of_the_next_write() {
    let (cluster, holder, waiter, held) = held_lock_and_a_waiter(
        |config| {
            fast(config);
            config.write_path.waiting_acquire_delay = Duration::from_secs(1);
        },
        "ride",
    )
    .await;
    let before = last_log_index(&cluster, 0);
    let waiting = wait_forever(&cluster, waiter, "ride").await;
    // Held back: with no other write, nothing reaches the log within its delay.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        last_log_index(&cluster, 0),
        before,
        "the acquire is held back"
    );
    assert_eq!(cluster.running(0).node().status().waiters, 0);
    let granted = release_to_the_waiter(&cluster, holder, "ride", held, waiting).await;
    assert!(granted.token > held);
    // Raft's metrics are published by its core after the answers went out: wait for
    // them to show the entry before counting.
    let deadline = Instant::now() + SETTLE;
    while last_log_index(&cluster, 0) == before {
        assert!(
            Instant::now() < deadline,
            "the entry never showed in the metrics"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        last_log_index(&cluster, 0),
        before + 1,
        "the waiter's acquire and the holder's release went to Raft as one entry"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_back_acquire_goes_to_raft_alone_when_its_delay_is_up() {
    let (cluster, holder, waiter, held) = held_lock_and_a_waiter(
        |config| {
            fast(config);
            config.write_path.waiting_acquire_delay = Duration::from_millis(100);
        },
        "alone",
    )
    .await;
    let before = last_log_index(&cluster, 0);
    let waiting = wait_forever(&cluster, waiter, "alone").await;
    let deadline = Instant::now() + SETTLE;
    while cluster.running(0).node().status().waiters == 0 {
        assert!(
            Instant::now() < deadline,
            "the held-back acquire was never proposed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        last_log_index(&cluster, 0),
        before + 1,
        "one entry of its own"
    );
    release_to_the_waiter(&cluster, holder, "alone", held, waiting).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_convenience_form_grants_with_a_lease_and_leaves_no_session_when_it_times_out() {
    let cluster = TestCluster::start(1).await;
    cluster.leader().await;
    let mut client = cluster.locks(0).await;
    let lease = |wait: pb::WaitPolicy, id: u128| pb::AcquireRequest {
        session_id: 0,
        client_id: client_id(id),
        lease_ttl_ms: 5_000,
        name: "lease".into(),
        wait: wait as i32,
        wait_timeout_ms: if wait == pb::WaitPolicy::Timeout {
            200
        } else {
            0
        },
        ..Default::default()
    };
    let granted = client
        .acquire(lease(pb::WaitPolicy::NoWait, 1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(granted.outcome, pb::AcquireOutcome::Granted as i32);
    assert_eq!(granted.ttl_ms, 5_000);
    assert_ne!(granted.session_id, 0);
    let sessions = |cluster: &TestCluster| cluster.running(0).node().status().sessions;
    assert_eq!(sessions(&cluster), 1);
    let timed_out = client
        .acquire(lease(pb::WaitPolicy::Timeout, 2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(timed_out.outcome, pb::AcquireOutcome::TimedOut as i32);
    assert_eq!(
        sessions(&cluster),
        1,
        "the timed-out one-lock session was closed"
    );
    let blocked = client
        .acquire(lease(pb::WaitPolicy::NoWait, 3))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(blocked.outcome, pb::AcquireOutcome::WouldBlock as i32);
    assert_eq!(sessions(&cluster), 1, "a refused try leaves no session");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_keep_working_with_two_down() {
    let mut cluster = TestCluster::start(5).await;
    let leader = cluster.leader().await;
    let mut client = cluster.locks(leader).await;
    let session = open_session(&mut client, 1, 10_000).await;
    let first = try_lock(&mut client, session, "five", 1).await.unwrap();
    // Stop the leader and one follower: three of five remain, a quorum.
    let follower = (leader + 1) % 5;
    cluster.stop(leader).await;
    cluster.stop(follower).await;
    let new = cluster.leader().await;
    let lock = describe(&cluster, new, "five").await.expect("still held");
    assert_eq!(lock.holders[0].token, first);
    let mut client = cluster.locks(new).await;
    let next = try_lock(&mut client, session, "five-b", 2).await.unwrap();
    assert!(next > first);
    cluster.shutdown().await;
}

/// Post-mortem (fault harness, seed 42, 5 nodes, restart-all): a `Verify` right after every
/// node was killed answered from before an acknowledged release. openraft 0.9 restores a
/// leader that restarts within its term as leader at once, with the read index at its
/// first entry of that term and a commit index that can lag entries it committed before
/// the crash. The read barrier now commits an entry of its own before the first read of
/// each term; this test checks that it does, and that later reads do not pay for it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_leader_commits_an_entry_before_serving_reads() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let mut client = cluster.locks(leader).await;
    let session = open_session(&mut client, 1, 20_000).await;
    let token = try_lock(&mut client, session, "restored", 1).await.unwrap();
    client
        .release(pb::ReleaseRequest {
            session_id: session,
            name: "restored".into(),
            token,
            request: rid(2),
        })
        .await
        .unwrap();
    drop(client);
    let term = cluster.running(leader).node().status().term;
    let last_before_crash = cluster.running(leader).node().status().last_log_index;
    for index in 0..3 {
        cluster.stop(index).await;
    }
    // The old leader first: it comes back as leader of the same term.
    cluster.restart(leader).await;
    for index in (0..3).filter(|i| *i != leader) {
        cluster.restart(index).await;
    }
    let node = cluster.running(leader).node().clone();
    let deadline = Instant::now() + SETTLE;
    while node.status().state != "Leader" {
        assert!(Instant::now() < deadline, "old leader not restored");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(node.status().term, term, "restored within its term");
    let verify = |cluster: &TestCluster| {
        let addr = cluster.slots[leader].client;
        async move {
            fencelock_proto::v1::locks_client::LocksClient::new(channel(addr).await)
                .verify(pb::VerifyRequest {
                    name: "restored".into(),
                    token,
                })
                .await
                .expect("verify")
                .into_inner()
        }
    };
    assert!(!verify(&cluster).await.current, "the release is seen");
    let after = node.raft().metrics().borrow().last_log_index.unwrap_or(0);
    assert!(
        after > last_before_crash,
        "the restored leader committed an entry of its own before reading"
    );
    assert!(!verify(&cluster).await.current);
    assert_eq!(
        node.raft().metrics().borrow().last_log_index.unwrap_or(0),
        after,
        "later reads of the term write nothing"
    );
    cluster.shutdown().await;
}
