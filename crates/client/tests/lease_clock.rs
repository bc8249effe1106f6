//! The lease clock: a machine that sleeps past the TTL wakes up with its session lost.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspend_past_the_ttl_loses_the_session_on_waking() {
    let cluster = TestCluster::start(1).await;
    let clock = ManualClock::new(Duration::from_secs(1_000));
    let client = Client::builder(cluster.endpoints())
        .connect_timeout(Duration::from_millis(500))
        .call_timeout(Duration::from_secs(2))
        .retry_deadline(Duration::from_secs(10))
        .lease_clock(clock.clone())
        .connect()
        .await
        .expect("connect");
    let ttl = Duration::from_secs(30);
    let session = client.session(ttl).await.unwrap();
    let guard = session.lock("suspend/a").await.unwrap();
    let lost = guard.lost();
    assert!(!session.is_lost());

    // A minute asleep: CLOCK_MONOTONIC, and every tokio timer, stood still meanwhile.
    clock.advance(Duration::from_secs(60));
    assert!(
        session.is_lost(),
        "lost as soon as the clock is read on waking"
    );
    assert_eq!(session.lease_remaining(), Duration::ZERO);
    // A lease counted on the monotonic clock would still have most of its 27 s.
    let reason = tokio::time::timeout(ttl / 3, lost)
        .await
        .expect("lost() fires on waking");
    assert_eq!(reason, LostReason::LeaseExpired);

    // The cluster did not sleep and still answers this session's keepalives; none of
    // them brings the lease back.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(guard.is_lost());
    assert!(matches!(
        session.try_lock("suspend/b").await,
        Err(Error::SessionLost(LostReason::LeaseExpired))
    ));
    drop(guard);
    cluster.shutdown().await;
}
