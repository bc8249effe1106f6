//! Helpers for the server's integration tests over raw gRPC.
#![allow(dead_code)]

use fencelock_proto::v1 as pb;
use fencelock_proto::v1::locks_client::LocksClient;
pub use fencelock_server::testing::*;
use std::time::Duration;
use tonic::transport::Channel;

pub fn client_id(n: u128) -> Vec<u8> {
    n.to_be_bytes().to_vec()
}

pub fn rid(seq: u64) -> Option<pb::RequestId> {
    Some(pb::RequestId {
        seq,
        first_unanswered_seq: seq,
    })
}

pub async fn open_session(client: &mut LocksClient<Channel>, id: u128, ttl_ms: u64) -> u64 {
    client
        .open_session(pb::OpenSessionRequest {
            client_id: client_id(id),
            ttl_ms,
        })
        .await
        .expect("open session")
        .into_inner()
        .session_id
}

pub fn acquire_request(
    session: u64,
    name: &str,
    seq: u64,
    wait: pb::WaitPolicy,
) -> pb::AcquireRequest {
    pb::AcquireRequest {
        session_id: session,
        name: name.to_string(),
        mode: pb::LockMode::Exclusive as i32,
        wait: wait as i32,
        wait_timeout_ms: if wait == pb::WaitPolicy::Timeout {
            5_000
        } else {
            0
        },
        request: rid(seq),
        ..Default::default()
    }
}

/// Try to take `name` at once; the token if granted.
pub async fn try_lock(
    client: &mut LocksClient<Channel>,
    session: u64,
    name: &str,
    seq: u64,
) -> Option<u64> {
    let response = client
        .acquire(acquire_request(session, name, seq, pb::WaitPolicy::NoWait))
        .await
        .expect("acquire")
        .into_inner();
    (response.outcome == pb::AcquireOutcome::Granted as i32).then_some(response.token)
}

/// The reason carried by a status.
pub fn reason_of(status: &tonic::Status) -> pb::ErrorReason {
    fencelock_server::api::status::detail_of(status)
        .and_then(|d| pb::ErrorReason::try_from(d.reason).ok())
        .unwrap_or(pb::ErrorReason::Unspecified)
}

/// Keep `sessions` alive over one stream until the returned sender is dropped.
pub async fn keep_alive(
    client: &mut LocksClient<Channel>,
    sessions: Vec<u64>,
    every: Duration,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let (requests, outbound) = tokio::sync::mpsc::channel(64);
    let mut inbound = client
        .keep_alive(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
        .expect("keepalive stream")
        .into_inner();
    tokio::spawn(async move {
        loop {
            for session in &sessions {
                if requests
                    .send(pb::KeepAliveRequest {
                        session_id: *session,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            for _ in &sessions {
                if inbound.message().await.ok().flatten().is_none() {
                    return;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = &mut stopped => return,
            }
        }
    });
    stop
}
