//! The primitives beyond a plain lock, over real gRPC on loopback: counting semaphores,
//! atomic multi-locks, reentrancy, lock-delay (timed by the leader), proclaim, and the
//! hold and wait times that describe, the status page and `/metrics` show.

mod common;

use common::*;
use fencelock_proto::v1 as pb;
use fencelock_proto::v1::locks_client::LocksClient;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

async fn describe(client: &mut LocksClient<Channel>, name: &str) -> Option<pb::LockInfo> {
    client
        .describe(pb::DescribeRequest { name: name.into() })
        .await
        .expect("describe")
        .into_inner()
        .lock
}

/// An acquire of a semaphore permit.
fn permit(
    session: u64,
    name: &str,
    permits: u32,
    seq: u64,
    wait: pb::WaitPolicy,
) -> pb::AcquireRequest {
    pb::AcquireRequest {
        permits,
        ..acquire_request(session, name, seq, wait)
    }
}

/// An atomic multi-lock of `names` (exclusive).
fn multi(session: u64, names: &[&str], seq: u64, wait: pb::WaitPolicy) -> pb::AcquireRequest {
    pb::AcquireRequest {
        name: String::new(),
        locks: names
            .iter()
            .map(|name| pb::LockSpec {
                name: (*name).to_owned(),
                ..Default::default()
            })
            .collect(),
        ..acquire_request(session, "", seq, wait)
    }
}

fn granted(response: &pb::AcquireResponse) -> bool {
    response.outcome == pb::AcquireOutcome::Granted as i32
}

async fn release(
    client: &mut LocksClient<Channel>,
    session: u64,
    name: &str,
    token: u64,
    seq: u64,
) {
    client
        .release(pb::ReleaseRequest {
            session_id: session,
            name: name.into(),
            token,
            request: rid(seq),
        })
        .await
        .expect("release");
}

/// Poll `check` until true, failing after `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_semaphore_grants_at_most_its_permits_each_with_a_token_and_refuses_another_limit() {
    let cluster = TestCluster::start(1).await;
    cluster.leader().await;
    let mut client = cluster.locks(0).await;
    let sessions = [
        open_session(&mut client, 1, 30_000).await,
        open_session(&mut client, 2, 30_000).await,
        open_session(&mut client, 3, 30_000).await,
    ];
    let mut tokens = Vec::new();
    for &session in &sessions[..2] {
        let answer = client
            .acquire(permit(session, "pool", 2, 1, pb::WaitPolicy::NoWait))
            .await
            .expect("acquire")
            .into_inner();
        assert!(granted(&answer), "{answer:?}");
        assert_eq!(answer.grants.len(), 1);
        assert_eq!(answer.grants[0].token, answer.token);
        tokens.push(answer.token);
    }
    assert!(
        tokens[1] > tokens[0],
        "every grant its own token: {tokens:?}"
    );
    // Full: the third does not get a permit.
    let third = client
        .acquire(permit(sessions[2], "pool", 2, 1, pb::WaitPolicy::NoWait))
        .await
        .expect("acquire")
        .into_inner();
    assert_eq!(third.outcome, pb::AcquireOutcome::WouldBlock as i32);
    let lock = describe(&mut client, "pool").await.expect("in use");
    assert_eq!((lock.permits, lock.permits_used), (2, 2));
    assert_eq!(lock.holders.len(), 2);
    // Another limit while the name is in use: a typed refusal naming both.
    let error = client
        .acquire(permit(sessions[2], "pool", 3, 2, pb::WaitPolicy::NoWait))
        .await
        .expect_err("another limit");
    assert_eq!(reason_of(&error), pb::ErrorReason::PermitsMismatch);
    assert_eq!(error.code(), tonic::Code::FailedPrecondition);
    assert!(
        error.message().contains('2') && error.message().contains('3'),
        "{error:?}"
    );
    // A queued permit is granted when one is given back.
    let mut waiter = cluster.locks(0).await;
    let queued = tokio::spawn(async move {
        waiter
            .acquire(permit(sessions[2], "pool", 2, 3, pb::WaitPolicy::Timeout))
            .await
            .map(tonic::Response::into_inner)
    });
    eventually(Duration::from_secs(5), "queued", || {
        let mut client = client.clone();
        async move {
            describe(&mut client, "pool")
                .await
                .is_some_and(|lock| lock.waiters.len() == 1)
        }
    })
    .await;
    release(&mut client, sessions[0], "pool", tokens[0], 2).await;
    let third = queued.await.expect("task").expect("acquire");
    assert!(granted(&third), "{third:?}");
    assert!(third.token > tokens[1]);
    let lock = describe(&mut client, "pool").await.expect("in use");
    assert_eq!((lock.permits, lock.permits_used), (2, 2));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_lock_holds_nothing_until_it_holds_everything() {
    let cluster = TestCluster::start(1).await;
    cluster.leader().await;
    let mut client = cluster.locks(0).await;
    let holder = open_session(&mut client, 1, 30_000).await;
    let asker = open_session(&mut client, 2, 30_000).await;
    let b = try_lock(&mut client, holder, "m/b", 1).await.expect("b");
    // b is taken: no-wait answers WOULD_BLOCK and takes none of the others.
    let answer = client
        .acquire(multi(
            asker,
            &["m/c", "m/a", "m/b"],
            1,
            pb::WaitPolicy::NoWait,
        ))
        .await
        .expect("acquire")
        .into_inner();
    assert_eq!(answer.outcome, pb::AcquireOutcome::WouldBlock as i32);
    assert!(
        describe(&mut client, "m/a").await.is_none(),
        "a is not held"
    );
    assert!(
        describe(&mut client, "m/c").await.is_none(),
        "c is not held"
    );
    // Waiting: queued on every name, holding none.
    let mut waiter = cluster.locks(0).await;
    let queued = tokio::spawn(async move {
        waiter
            .acquire(multi(
                asker,
                &["m/c", "m/a", "m/b"],
                2,
                pb::WaitPolicy::Timeout,
            ))
            .await
            .map(tonic::Response::into_inner)
    });
    eventually(Duration::from_secs(5), "queued on b", || {
        let mut client = client.clone();
        async move {
            describe(&mut client, "m/b")
                .await
                .is_some_and(|lock| lock.waiters.len() == 1)
        }
    })
    .await;
    let a = describe(&mut client, "m/a").await;
    assert!(
        a.as_ref().is_none_or(|lock| lock.holders.is_empty()),
        "a waiting multi-lock holds nothing: {a:?}"
    );
    let waiting = describe(&mut client, "m/b").await.expect("b");
    let mut names = waiting.waiters[0].names.clone();
    names.sort();
    assert_eq!(names, ["m/a", "m/b", "m/c"]);
    // b's release grants all three in one entry, each with its own token, in the order
    // asked.
    release(&mut client, holder, "m/b", b, 2).await;
    let answer = queued.await.expect("task").expect("acquire");
    assert!(granted(&answer), "{answer:?}");
    let names: Vec<&str> = answer.grants.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["m/c", "m/a", "m/b"]);
    let mut tokens: Vec<u64> = answer.grants.iter().map(|g| g.token).collect();
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(tokens.len(), 3, "one token per name: {answer:?}");
    assert!(tokens.iter().all(|&t| t > b));
    for grant in &answer.grants {
        let lock = describe(&mut client, &grant.name).await.expect("held");
        assert_eq!(lock.holders[0].session_id, asker);
        assert_eq!(lock.holders[0].token, grant.token);
    }
    // A name twice is a typed refusal, not a crash.
    let error = client
        .acquire(multi(holder, &["m/x", "m/x"], 3, pb::WaitPolicy::NoWait))
        .await
        .expect_err("a name twice");
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reentrant_acquire_counts_holds_and_keeps_the_token() {
    let cluster = TestCluster::start(1).await;
    cluster.leader().await;
    let mut client = cluster.locks(0).await;
    let session = open_session(&mut client, 1, 30_000).await;
    let reentrant = |seq| pb::AcquireRequest {
        reentrant: true,
        ..acquire_request(session, "re", seq, pb::WaitPolicy::NoWait)
    };
    let first = client
        .acquire(reentrant(1))
        .await
        .expect("first")
        .into_inner();
    let second = client
        .acquire(reentrant(2))
        .await
        .expect("second")
        .into_inner();
    assert!(granted(&first) && granted(&second));
    assert_eq!(first.token, second.token, "the same grant");
    assert_eq!(second.grants[0].hold_count, 2);
    assert_eq!(
        describe(&mut client, "re").await.unwrap().holders[0].hold_count,
        2
    );
    // Not reentrant: today's refusal stays.
    let error = client
        .acquire(acquire_request(session, "re", 3, pb::WaitPolicy::NoWait))
        .await
        .expect_err("not reentrant");
    assert_eq!(reason_of(&error), pb::ErrorReason::AlreadyHeldOrQueued);
    // Each release gives one hold back; the lock is free at zero.
    release(&mut client, session, "re", first.token, 4).await;
    let lock = describe(&mut client, "re").await.expect("still held");
    assert_eq!(lock.holders[0].hold_count, 1);
    release(&mut client, session, "re", first.token, 5).await;
    assert!(describe(&mut client, "re").await.is_none(), "free at zero");
    cluster.shutdown().await;
}

/// Watch `name` and collect its events' kinds until `until` is seen.
async fn watch_until(
    mut client: LocksClient<Channel>,
    name: &str,
    until: pb::EventKind,
) -> tokio::task::JoinHandle<Vec<pb::WatchEvent>> {
    let mut stream = client
        .watch(pb::WatchRequest {
            name: name.into(),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(Some(event)) = stream.message().await {
            if event.resync {
                continue;
            }
            let done = event.kind == until as i32;
            seen.push(event);
            if done {
                break;
            }
        }
        seen
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_holder_s_lock_delay_grants_nobody_until_the_leader_ends_it() {
    let cluster = TestCluster::start(1).await;
    cluster.leader().await;
    let mut client = cluster.locks(0).await;
    // A clean release starts no delay.
    let clean = open_session(&mut client, 9, 30_000).await;
    let delayed = |session, seq| pb::AcquireRequest {
        lock_delay_ms: 2_000,
        ..acquire_request(session, "delayed", seq, pb::WaitPolicy::NoWait)
    };
    let answer = client
        .acquire(delayed(clean, 1))
        .await
        .expect("acquire")
        .into_inner();
    assert!(granted(&answer));
    release(&mut client, clean, "delayed", answer.token, 2).await;
    assert!(
        describe(&mut client, "delayed").await.is_none(),
        "no delay after a release"
    );

    let watch = watch_until(
        cluster.locks(0).await,
        "delayed",
        pb::EventKind::LockDelayEnded,
    )
    .await;
    // A holder with a lock-delay whose session expires (no keepalives): not before its
    // TTL has run from the open, which is after `opened_at`.
    let opened_at = Instant::now();
    let holder = open_session(&mut client, 1, 1_000).await;
    let lost = client
        .acquire(delayed(holder, 1))
        .await
        .expect("acquire")
        .into_inner();
    assert!(granted(&lost));
    let other = open_session(&mut client, 2, 30_000).await;
    let _alive = keep_alive(&mut client, vec![other, clean], Duration::from_millis(200)).await;
    eventually(Duration::from_secs(10), "the delay is in force", || {
        let mut client = client.clone();
        async move {
            describe(&mut client, "delayed")
                .await
                .is_some_and(|lock| lock.lock_delay.is_some())
        }
    })
    .await;
    let lock = describe(&mut client, "delayed").await.expect("in delay");
    let delay = lock.lock_delay.expect("delay");
    assert!(lock.holders.is_empty());
    assert_eq!((delay.delay_ms, delay.token), (2_000, lost.token));
    // It names whose lapse it is.
    assert_eq!(delay.session_id, holder, "{delay:?}");
    assert!(delay.remaining_ms <= 2_000);
    // Nobody gets it during the delay.
    let refused = client
        .acquire(acquire_request(other, "delayed", 1, pb::WaitPolicy::NoWait))
        .await
        .expect("acquire")
        .into_inner();
    assert_eq!(refused.outcome, pb::AcquireOutcome::WouldBlock as i32);
    // A waiter gets it when the leader ends the delay: never before the TTL and then the
    // whole delay have run (a lower bound only; a slow machine makes it later).
    let answer = client
        .acquire(pb::AcquireRequest {
            wait_timeout_ms: 20_000,
            ..acquire_request(other, "delayed", 2, pb::WaitPolicy::Timeout)
        })
        .await
        .expect("acquire")
        .into_inner();
    assert!(granted(&answer), "{answer:?}");
    assert!(answer.token > lost.token);
    let waited = opened_at.elapsed();
    assert!(
        waited >= Duration::from_millis(1_000 + 2_000),
        "granted {waited:?} after the holder's session opened"
    );
    let events = tokio::time::timeout(Duration::from_secs(10), watch)
        .await
        .expect("watch ends")
        .expect("task");
    let kinds: Vec<i32> = events.iter().map(|e| e.kind).collect();
    let started = kinds
        .iter()
        .position(|&k| k == pb::EventKind::LockDelayStarted as i32)
        .expect("delay started event");
    assert_eq!(
        events[started].session_id, holder,
        "the delay's start names the expired session: {:?}",
        events[started]
    );
    let expired = kinds
        .iter()
        .position(|&k| k == pb::EventKind::Expired as i32)
        .expect("expired event");
    assert!(expired < started, "{kinds:?}");
    assert_eq!(kinds.last(), Some(&(pb::EventKind::LockDelayEnded as i32)));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_restarts_a_lock_delay_in_full() {
    let mut cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let mut client = cluster.locks(leader).await;
    let holder = open_session(&mut client, 1, 1_000).await;
    let answer = client
        .acquire(pb::AcquireRequest {
            lock_delay_ms: 3_000,
            ..acquire_request(holder, "failover", 1, pb::WaitPolicy::NoWait)
        })
        .await
        .expect("acquire")
        .into_inner();
    assert!(granted(&answer));
    eventually(Duration::from_secs(10), "the delay is in force", || {
        let mut client = client.clone();
        async move {
            describe(&mut client, "failover")
                .await
                .is_some_and(|lock| lock.lock_delay.is_some())
        }
    })
    .await;
    cluster.stop(leader).await;
    let stopped_at = Instant::now();
    let new_leader = cluster.leader_other_than(leader).await;
    let mut client = cluster.locks(new_leader).await;
    let other = open_session(&mut client, 2, 30_000).await;
    let _alive = keep_alive(&mut client, vec![other], Duration::from_millis(200)).await;
    let answer = client
        .acquire(pb::AcquireRequest {
            wait_timeout_ms: 30_000,
            ..acquire_request(other, "failover", 1, pb::WaitPolicy::Timeout)
        })
        .await
        .expect("acquire")
        .into_inner();
    assert!(granted(&answer), "{answer:?}");
    // The new leader timed the whole delay from when it took over, which is after the
    // old leader stopped: a lower bound, whatever the machine's load.
    let after = stopped_at.elapsed();
    assert!(
        after >= Duration::from_millis(3_000),
        "granted {after:?} after the old leader stopped"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_shows_how_long_each_holder_held_and_each_waiter_waited() {
    let cluster = TestCluster::start(1).await;
    cluster.leader().await;
    let mut client = cluster.locks(0).await;
    let holder = open_session(&mut client, 1, 30_000).await;
    let waiter = open_session(&mut client, 2, 30_000).await;
    let token = try_lock(&mut client, holder, "timed", 1)
        .await
        .expect("granted");
    let mut queued_client = cluster.locks(0).await;
    let queued = tokio::spawn(async move {
        queued_client
            .acquire(acquire_request(waiter, "timed", 1, pb::WaitPolicy::Timeout))
            .await
            .map(tonic::Response::into_inner)
    });
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let lock = describe(&mut client, "timed").await.expect("held");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let held = &lock.holders[0];
    assert!(
        held.granted_at_ms > 0 && held.granted_at_ms <= now_ms,
        "{held:?}"
    );
    assert!(held.held_for_ms >= 1_000, "{held:?}");
    assert_eq!(lock.waiters.len(), 1, "{lock:?}");
    assert!(
        lock.waiters[0].queued_at_ms >= held.granted_at_ms,
        "{lock:?}"
    );
    release(&mut client, holder, "timed", token, 2).await;
    let answer = queued.await.expect("task").expect("acquire");
    assert!(granted(&answer));
    // Both times reach /metrics on release and on grant, by name prefix.
    let text = fencelock_server::metrics::handle().render();
    assert!(
        text.contains("fencelock_lock_hold_seconds_count{prefix=\"timed\"}"),
        "{text}"
    );
    assert!(
        text.contains("fencelock_lock_wait_seconds_count{prefix=\"timed\"}"),
        "{text}"
    );
    cluster.shutdown().await;
}

/// The count of `fencelock_lock_wait_seconds` for lock-name prefix `prefix` in this
/// process's `/metrics` (0 before the first sample).
fn wait_samples(prefix: &str) -> u64 {
    let text = fencelock_server::metrics::handle().render();
    let key = format!("fencelock_lock_wait_seconds_count{{prefix=\"{prefix}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(key.as_str()))
        .map_or(0, |count| count.trim().parse().expect("a count"))
}

/// Wait times are recorded from the applied log by every node, not by the node that
/// served the wait: on 3 nodes (one process, one metrics registry), each waited grant
/// is counted exactly three times, once per node, followers included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_records_each_waited_grant_once() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let mut client = cluster.locks(leader).await;
    let holder = open_session(&mut client, 1, 30_000).await;
    let mut token = try_lock(&mut client, holder, "waitall/x", 1)
        .await
        .expect("granted");
    let waiters = 3u64;
    let mut queued = Vec::new();
    for i in 0..waiters {
        let session = open_session(&mut client, 10 + u128::from(i), 30_000).await;
        let mut waiting = cluster.locks(leader).await;
        queued.push((
            session,
            tokio::spawn(async move {
                waiting
                    .acquire(pb::AcquireRequest {
                        wait_timeout_ms: 60_000,
                        ..acquire_request(session, "waitall/x", 1, pb::WaitPolicy::Timeout)
                    })
                    .await
                    .map(tonic::Response::into_inner)
            }),
        ));
        // Queued one after the other.
        eventually(Duration::from_secs(30), "the waiter queued", || {
            let mut client = client.clone();
            let want = (i + 1) as usize;
            async move {
                describe(&mut client, "waitall/x")
                    .await
                    .is_some_and(|lock| lock.waiters.len() == want)
            }
        })
        .await;
    }
    let mut owner = holder;
    for (session, task) in queued {
        release(&mut client, owner, "waitall/x", token, 2).await;
        let answer = task.await.expect("task").expect("acquire");
        assert!(granted(&answer), "{answer:?}");
        token = answer.token;
        owner = session;
    }
    let expected = waiters * 3;
    eventually(
        Duration::from_secs(30),
        "every node recorded the waits",
        || async { wait_samples("waitall") >= expected },
    )
    .await;
    // Settled: nothing counted twice.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(wait_samples("waitall"), expected);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_proclaims_a_new_value_without_releasing() {
    let cluster = TestCluster::start(1).await;
    cluster.leader().await;
    let mut client = cluster.locks(0).await;
    let session = open_session(&mut client, 1, 30_000).await;
    let token = client
        .acquire(pb::AcquireRequest {
            value: b"10.0.0.1".to_vec(),
            ..acquire_request(session, "leader", 1, pb::WaitPolicy::NoWait)
        })
        .await
        .expect("acquire")
        .into_inner()
        .token;
    let watch = watch_until(
        cluster.locks(0).await,
        "leader",
        pb::EventKind::ValueChanged,
    )
    .await;
    client
        .set_value(pb::SetValueRequest {
            session_id: session,
            name: "leader".into(),
            token,
            value: b"10.0.0.2".to_vec(),
            request: rid(2),
        })
        .await
        .expect("proclaim");
    let lock = describe(&mut client, "leader").await.expect("held");
    assert_eq!(lock.holders[0].token, token, "same term");
    assert_eq!(lock.holders[0].value, b"10.0.0.2");
    let events = tokio::time::timeout(Duration::from_secs(10), watch)
        .await
        .expect("watch ends")
        .expect("task");
    let changed = events.last().expect("an event");
    assert_eq!(changed.value, b"10.0.0.2");
    assert_eq!(changed.token, token);
    // A stale token is refused.
    let error = client
        .set_value(pb::SetValueRequest {
            session_id: session,
            name: "leader".into(),
            token: token + 100,
            value: b"x".to_vec(),
            request: rid(3),
        })
        .await
        .expect_err("stale token");
    assert_eq!(error.code(), tonic::Code::FailedPrecondition);
    cluster.shutdown().await;
}

/// The oldest grant in force reaches every node's status (and so `/metrics`) and the
/// longest-held list, from the applied log: the same grant time on the leader and on a
/// follower, and an age that keeps growing on an idle cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_reports_the_oldest_grant_in_force_and_its_age() {
    use fencelock_server::admin::AdminSource;
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let mut client = cluster.locks(leader).await;
    let first = open_session(&mut client, 1, 60_000).await;
    let second = open_session(&mut client, 2, 60_000).await;
    let _alive = keep_alive(&mut client, vec![first, second], Duration::from_millis(300)).await;
    for node in 0..3 {
        let status = cluster.running(node).node().status();
        assert_eq!(status.oldest_grant.granted_at_ms, None, "node {node}");
    }
    let token = try_lock(&mut client, first, "stuck/holder", 1)
        .await
        .expect("granted");
    try_lock(&mut client, second, "later", 1)
        .await
        .expect("granted");
    let granted_at_ms = describe(&mut client, "stuck/holder")
        .await
        .expect("held")
        .holders[0]
        .granted_at_ms;
    let follower = (leader + 1) % 3;
    for node in [leader, follower] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // Both grants applied here: a follower may have applied the first only.
            let status = cluster.running(node).node().status();
            let applied_both = cluster
                .running(node)
                .node()
                .locks_overview()
                .longest_held
                .len()
                >= 2;
            if status.oldest_grant.granted_at_ms == Some(granted_at_ms) && applied_both {
                break;
            }
            assert!(Instant::now() < deadline, "node {node}: {status:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let overview = cluster.running(node).node().locks_overview();
        assert_eq!(overview.longest_held[0].name, "stuck/holder", "node {node}");
        assert_eq!(overview.longest_held[1].name, "later", "node {node}");
    }
    // Nothing is written while the holder sits on its lock; the age still grows.
    let before = cluster
        .running(follower)
        .node()
        .status()
        .oldest_grant
        .age_ms;
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let after = cluster.running(follower).node().status();
    assert!(
        after.oldest_grant.age_ms >= before + 1_000,
        "{before} then {:?}",
        after.oldest_grant
    );
    let text = fencelock_server::metrics::render(&after);
    assert!(
        text.contains("fencelock_oldest_grant_age_seconds{node="),
        "{text}"
    );
    release(&mut client, first, "stuck/holder", token, 2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let overview = cluster.running(leader).node().locks_overview();
        if overview.longest_held.len() == 1 && overview.longest_held[0].name == "later" {
            break;
        }
        assert!(Instant::now() < deadline, "{overview:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.shutdown().await;
}
