//! Keepalive streams on a real cluster: read on while rounds run, answered in order, and
//! rounds shared among the keepalives of a stream.

mod common;

use common::*;
use fencelock_proto::v1 as pb;
use std::time::Duration;

/// One stream sends many keepalives without waiting for answers: the server reads on
/// while rounds run, answers every one in the order sent (an unknown session as such), and
/// shares rounds among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_stream_pipelines_keepalives_and_answers_them_in_order() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let mut client = cluster.locks(leader).await;
    let mut sessions = Vec::new();
    for n in 0..20 {
        sessions.push(open_session(&mut client, 100 + n, 10_000).await);
    }
    let unknown = sessions.iter().max().unwrap() + 1_000;
    let node = cluster.running(leader).node().clone();
    // The term's own entry and a first round, before counting.
    node.barrier().confirm().await.unwrap();

    let rounds_before = node.barrier().rounds_started();
    let (requests, outbound) = tokio::sync::mpsc::channel(4_096);
    let mut answers = client
        .keep_alive(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
        .unwrap()
        .into_inner();
    let mut sent = Vec::new();
    for burst in 0..50 {
        for (i, session) in sessions.iter().enumerate() {
            let session = if burst == 25 && i == 7 {
                unknown
            } else {
                *session
            };
            requests
                .send(pb::KeepAliveRequest {
                    session_id: session,
                })
                .await
                .unwrap();
            sent.push(session);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    for (n, session) in sent.iter().enumerate() {
        let answer = tokio::time::timeout(Duration::from_secs(10), answers.message())
            .await
            .expect("answered")
            .unwrap()
            .unwrap();
        assert_eq!(answer.session_id, *session, "answer {n} out of order");
        let expected = if *session == unknown {
            pb::KeepAliveStatus::SessionNotFound
        } else {
            pb::KeepAliveStatus::Ok
        };
        assert_eq!(answer.status, expected as i32, "answer {n}");
        if *session != unknown {
            assert_eq!(answer.ttl_ms, 10_000);
        }
    }
    let rounds = node.barrier().rounds_started() - rounds_before;
    assert!(
        rounds < sent.len() as u64 / 4,
        "{rounds} rounds for {} keepalives",
        sent.len()
    );
    drop(requests);
    cluster.shutdown().await;
}
