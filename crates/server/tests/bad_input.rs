//! Bad input: each case gets a typed error (gRPC code plus a machine-readable reason) and
//! the node stays up.

mod common;

use common::*;
use fencelock_proto::v1 as pb;
use fencelock_proto::v1::locks_client::LocksClient;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;
use tonic::transport::Channel;

fn small_limits(config: &mut fencelock_server::config::ServerConfig) {
    fast(config);
    config.limits.max_sessions = 3;
    config.limits.max_locks = 4;
    config.limits.max_waiters_per_lock = 1;
    config.limits.max_locks_per_session = 2;
    config.limits.max_ttl_ms = 60_000;
}

/// One node with small limits, its client, and a session holding nothing.
async fn setup() -> (TestCluster, LocksClient<Channel>, u64) {
    let cluster = TestCluster::start_with(1, small_limits).await;
    cluster.leader().await;
    let mut client = cluster.locks(0).await;
    // The leader replicates its configured limits once it leads; wait until they apply.
    let node = cluster.running(0).node().clone();
    let deadline = std::time::Instant::now() + SETTLE;
    while node.shared().read(|a| a.state.limits().max_sessions) != 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "limits not replicated"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let session = open_session(&mut client, 1, 10_000).await;
    (cluster, client, session)
}

async fn assert_node_up(client: &mut LocksClient<Channel>, session: u64) {
    client
        .describe(pb::DescribeRequest { name: "up".into() })
        .await
        .expect("node still answers");
    let _ = session;
}

fn expect(result: Result<impl std::fmt::Debug, tonic::Status>, code: Code, why: pb::ErrorReason) {
    let status = result.expect_err("must be refused");
    assert_eq!(status.code(), code, "{status:?}");
    assert_eq!(reason_of(&status), why, "{status:?}");
}

async fn acquire(
    client: &mut LocksClient<Channel>,
    session: u64,
    name: &str,
    seq: u64,
) -> Result<pb::AcquireResponse, tonic::Status> {
    client
        .acquire(acquire_request(session, name, seq, pb::WaitPolicy::NoWait))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_lock_name() {
    let (cluster, mut client, session) = setup().await;
    expect(
        acquire(&mut client, session, "", 1).await,
        Code::InvalidArgument,
        pb::ErrorReason::InvalidName,
    );
    assert_node_up(&mut client, session).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_lock_name() {
    let (cluster, mut client, session) = setup().await;
    let name = "x".repeat(513);
    expect(
        acquire(&mut client, session, &name, 1).await,
        Code::InvalidArgument,
        pb::ErrorReason::InvalidName,
    );
    expect(
        client.describe(pb::DescribeRequest { name }).await,
        Code::InvalidArgument,
        pb::ErrorReason::InvalidName,
    );
    assert_node_up(&mut client, session).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_in_lock_name() {
    let (cluster, mut client, session) = setup().await;
    expect(
        acquire(&mut client, session, "a\nb", 1).await,
        Code::InvalidArgument,
        pb::ErrorReason::InvalidName,
    );
    expect(
        acquire(&mut client, session, "nul\0", 2).await,
        Code::InvalidArgument,
        pb::ErrorReason::InvalidName,
    );
    assert_node_up(&mut client, session).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_zero_and_above_maximum() {
    let (cluster, mut client, session) = setup().await;
    for ttl_ms in [0, 60_001, u64::MAX] {
        expect(
            client
                .open_session(pb::OpenSessionRequest {
                    client_id: client_id(9),
                    ttl_ms,
                })
                .await,
            Code::InvalidArgument,
            pb::ErrorReason::InvalidTtl,
        );
    }
    assert_node_up(&mut client, session).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_session() {
    let (cluster, mut client, session) = setup().await;
    expect(
        acquire(&mut client, 999, "a", 1).await,
        Code::NotFound,
        pb::ErrorReason::SessionNotFound,
    );
    assert_node_up(&mut client, session).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_session() {
    let (cluster, mut client, session) = setup().await;
    client
        .close_session(pb::CloseSessionRequest {
            session_id: session,
        })
        .await
        .unwrap();
    expect(
        acquire(&mut client, session, "a", 1).await,
        Code::NotFound,
        pb::ErrorReason::SessionNotFound,
    );
    expect(
        client
            .close_session(pb::CloseSessionRequest {
                session_id: session,
            })
            .await,
        Code::NotFound,
        pb::ErrorReason::SessionNotFound,
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_session() {
    let (cluster, mut client, _) = setup().await;
    let short = open_session(&mut client, 2, 1_000).await;
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    expect(
        acquire(&mut client, short, "a", 1).await,
        Code::NotFound,
        pb::ErrorReason::SessionNotFound,
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_or_wrong_token_on_release() {
    let (cluster, mut client, session) = setup().await;
    let token = acquire(&mut client, session, "a", 1).await.unwrap().token;
    for (seq, wrong) in [(2, token - 1), (3, token + 1), (4, 0)] {
        expect(
            client
                .release(pb::ReleaseRequest {
                    session_id: session,
                    name: "a".into(),
                    token: wrong,
                    request: rid(seq),
                })
                .await,
            Code::FailedPrecondition,
            pb::ErrorReason::StaleToken,
        );
    }
    // Another session cannot release it even with the right token.
    let other = open_session(&mut client, 2, 10_000).await;
    expect(
        client
            .release(pb::ReleaseRequest {
                session_id: other,
                name: "a".into(),
                token,
                request: rid(1),
            })
            .await,
        Code::FailedPrecondition,
        pb::ErrorReason::NotHeld,
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_of_a_lock_not_held() {
    let (cluster, mut client, session) = setup().await;
    expect(
        client
            .release(pb::ReleaseRequest {
                session_id: session,
                name: "never".into(),
                token: 1,
                request: rid(1),
            })
            .await,
        Code::FailedPrecondition,
        pb::ErrorReason::NotHeld,
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_limit() {
    let (cluster, mut client, _) = setup().await;
    open_session(&mut client, 2, 10_000).await;
    open_session(&mut client, 3, 10_000).await;
    let status = client
        .open_session(pb::OpenSessionRequest {
            client_id: client_id(4),
            ttl_ms: 10_000,
        })
        .await
        .expect_err("fourth session refused");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(reason_of(&status), pb::ErrorReason::LimitReached);
    assert_eq!(
        fencelock_server::api::status::detail_of(&status)
            .unwrap()
            .limit,
        "sessions"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_limit_and_locks_per_session_limit() {
    let (cluster, mut client, session) = setup().await;
    acquire(&mut client, session, "l1", 1).await.unwrap();
    acquire(&mut client, session, "l2", 2).await.unwrap();
    let status = acquire(&mut client, session, "l3", 3)
        .await
        .expect_err("third lock of one session");
    assert_eq!(
        fencelock_server::api::status::detail_of(&status)
            .unwrap()
            .limit,
        "locks per session"
    );
    let other = open_session(&mut client, 2, 10_000).await;
    acquire(&mut client, other, "l3", 1).await.unwrap();
    acquire(&mut client, other, "l4", 2).await.unwrap();
    let third = open_session(&mut client, 3, 10_000).await;
    let status = acquire(&mut client, third, "l5", 1)
        .await
        .expect_err("fifth lock");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(
        fencelock_server::api::status::detail_of(&status)
            .unwrap()
            .limit,
        "locks"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_per_lock_limit() {
    let (cluster, mut client, session) = setup().await;
    acquire(&mut client, session, "busy", 1).await.unwrap();
    let first = open_session(&mut client, 2, 10_000).await;
    let second = open_session(&mut client, 3, 10_000).await;
    let mut waiter = cluster.locks(0).await;
    let queued = tokio::spawn(async move {
        waiter
            .acquire(acquire_request(first, "busy", 1, pb::WaitPolicy::Timeout))
            .await
    });
    let node = cluster.running(0).node().clone();
    while node.status().waiters == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = client
        .acquire(acquire_request(second, "busy", 1, pb::WaitPolicy::Timeout))
        .await
        .expect_err("second waiter refused");
    assert_eq!(
        fencelock_server::api::status::detail_of(&status)
            .unwrap()
            .limit,
        "waiters per lock"
    );
    queued.abort();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message() {
    let (cluster, mut client, session) = setup().await;
    let mut request = acquire_request(session, "big", 1, pb::WaitPolicy::NoWait);
    request.value = vec![7; 128 * 1024];
    let status = client.acquire(request).await.expect_err("too large");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // A value within the message limit but above the holder-value limit is typed too.
    let mut request = acquire_request(session, "big", 2, pb::WaitPolicy::NoWait);
    request.value = vec![7; 2_000];
    expect(
        client.acquire(request).await,
        Code::InvalidArgument,
        pb::ErrorReason::ValueTooLarge,
    );
    assert_node_up(&mut client, session).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_arguments() {
    let (cluster, mut client, session) = setup().await;
    expect(
        client
            .open_session(pb::OpenSessionRequest {
                client_id: vec![1, 2, 3],
                ttl_ms: 5_000,
            })
            .await,
        Code::InvalidArgument,
        pb::ErrorReason::InvalidArgument,
    );
    let mut request = acquire_request(session, "a", 1, pb::WaitPolicy::NoWait);
    request.request = None;
    expect(
        client.acquire(request).await,
        Code::InvalidArgument,
        pb::ErrorReason::InvalidArgument,
    );
    let mut request = acquire_request(session, "a", 1, pb::WaitPolicy::NoWait);
    request.mode = 42;
    expect(
        client.acquire(request).await,
        Code::InvalidArgument,
        pb::ErrorReason::InvalidArgument,
    );
    let mut request = acquire_request(session, "a", 1, pb::WaitPolicy::Timeout);
    request.wait_timeout_ms = 0;
    expect(
        client.acquire(request).await,
        Code::InvalidArgument,
        pb::ErrorReason::InvalidArgument,
    );
    assert_node_up(&mut client, session).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_on_the_grpc_and_peer_ports() {
    let (cluster, mut client, session) = setup().await;
    let slot = &cluster.slots[0];
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for addr in [slot.client, slot.peer] {
        for round in 0..20 {
            let mut garbage = vec![0u8; 64 + round * 97];
            for byte in &mut garbage {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *byte = seed as u8;
            }
            if round % 2 == 0 {
                // Look like HTTP/2 first, then go wrong.
                garbage.splice(0..0, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".iter().copied());
            }
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            let _ = stream.write_all(&garbage).await;
            let mut sink = [0u8; 256];
            let _ = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut sink)).await;
        }
    }
    assert_node_up(&mut client, session).await;
    acquire(&mut client, session, "still-works", 1)
        .await
        .expect("writes still commit");
    cluster.shutdown().await;
}

/// More connections on the peer port than `max_peer_links` are closed as they arrive;
/// once one ends, a new link is served again, and the node stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_links_over_the_limit_are_closed() {
    use fencelock_server::raft::link::LINK_MAGIC;
    let cluster = TestCluster::start_with(1, |config| {
        fast(config);
        config.network.max_peer_links = 2;
    })
    .await;
    cluster.leader().await;
    let peer = cluster.running(0).peer_addr();
    let open_link = || async move {
        let mut stream = tokio::net::TcpStream::connect(peer).await.unwrap();
        stream.write_all(&LINK_MAGIC).await.unwrap();
        stream
    };
    /// Whether the node closed `stream` (rather than keeping it open, silent).
    async fn closed(stream: &mut tokio::net::TcpStream) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_millis(500), stream.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }
    let mut held = vec![open_link().await, open_link().await];
    let mut third = open_link().await;
    assert!(closed(&mut third).await, "a link over the limit is closed");
    for stream in &mut held {
        assert!(!closed(stream).await, "links within the limit stay open");
    }
    drop(held.pop());
    // The slot frees when the node sees the close.
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let mut again = open_link().await;
        if !closed(&mut again).await {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a freed slot is never reused"
        );
    }
    let mut client = cluster.locks(0).await;
    let session = open_session(&mut client, 1, 10_000).await;
    assert_node_up(&mut client, session).await;
    cluster.shutdown().await;
}
