//! Withdrawing a cancelled acquire: it is settled, or the session ends; a lock is never
//! left held (or a wait queued) for a live session whose client does not know it.

mod common;
use common::*;

/// A client whose calls give up after two rounds, so lost answers exhaust them fast.
async fn impatient(cluster: &TestCluster, withdraw_deadline: Duration) -> Client {
    Client::builder(cluster.endpoints())
        .connect_timeout(Duration::from_millis(500))
        .call_timeout(Duration::from_secs(2))
        .retry_deadline(Duration::from_secs(5))
        .retry_budget(2)
        .withdraw_deadline(withdraw_deadline)
        .connect()
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_keeps_trying_until_the_raced_grant_is_released() {
    let cluster = TestCluster::start(1).await;
    // The impatient client gives up after two tries: let the election finish first.
    cluster.leader().await;
    let client = impatient(&cluster, Duration::from_secs(120)).await;
    let session = client.session(Duration::from_secs(60)).await.unwrap();
    // The server grants, but the answers of the acquire and of the first withdrawal
    // attempts are lost: more of them than ten withdrawal calls of two attempts each.
    client.lose_answers_for_test(40);
    let error = session.try_lock("withdraw/raced").await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    eventually(
        Duration::from_secs(60),
        "the grant nobody knows of is released",
        || async { lock_info(&client, "withdraw/raced").await.is_none() },
    )
    .await;
    assert!(!session.is_lost(), "settled without ending the session");
    // The session is usable again for the same lock.
    let guard = session
        .try_lock("withdraw/raced")
        .await
        .unwrap()
        .expect("free");
    guard.release().await.unwrap();
    session.close().await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawal_that_cannot_settle_ends_the_session() {
    let cluster = TestCluster::start(1).await;
    // The impatient client gives up after two tries: let the election finish first.
    cluster.leader().await;
    let client = impatient(&cluster, Duration::from_secs(2)).await;
    let session = client.session(Duration::from_secs(60)).await.unwrap();
    // No answer of a mutation comes back for the rest of the test.
    client.lose_answers_for_test(u32::MAX);
    let error = session.try_lock("withdraw/stuck").await.unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    let reason = tokio::time::timeout(Duration::from_secs(60), session.lost())
        .await
        .expect("the session ends once the withdrawal gave up");
    assert_eq!(reason, LostReason::Closed);
    // The close reached the server (only its answer was lost): the grant is gone.
    eventually(
        Duration::from_secs(30),
        "the grant ends with the session",
        || async { lock_info(&client, "withdraw/stuck").await.is_none() },
    )
    .await;
    cluster.shutdown().await;
}
