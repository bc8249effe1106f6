//! One keepalive stream: keepalives queued on the read barrier in batches, answered in
//! order once a round that started after them has ended.

use crate::barrier::{BarrierError, ReadBarrier, Round};
use crate::leases::Renewal;
use crate::node::Node;
use fencelock_core::SessionId;
use fencelock_proto::v1 as pb;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, Stream, StreamExt};
use std::future::Future;
use std::time::Instant;
use tokio::sync::mpsc;
use tonic::Status;

use crate::limits::{KEEPALIVE_BATCH, KEEPALIVE_QUEUED};

/// What the read barrier answered for a batch of keepalives.
pub(super) type Confirmed = Result<Round, BarrierError>;

/// Serve one keepalive stream: read keepalives, queue each batch of those read together
/// on the read barrier, and answer the batches in order as their rounds end.
///
/// The stream is read on while rounds are in flight: a keepalive joins the barrier's queue
/// as soon as it is read, not after the round in flight for earlier keepalives of the
/// stream (which cannot answer it) has ended, so it waits for about one round — the next
/// to start, pipelined behind those in flight. A keepalive is answered only by a round that
/// started after it arrived (docs/design.md invariant 6; a leader deposed meanwhile must not
/// extend a lease that the new leader may expire), and a stream's keepalives are answered
/// in the order they came (the client matches answers to keepalives by that order).
/// Reading pauses while [`KEEPALIVE_QUEUED`] keepalives of this stream wait for rounds.
///
/// `answer` turns one keepalive into its reply, or into a status that ends the stream.
pub(super) async fn serve_keepalives<S, A>(
    mut inbound: S,
    barrier: &ReadBarrier,
    replies: &mpsc::Sender<Result<pb::KeepAliveResponse, Status>>,
    stopping: impl Future<Output = ()>,
    mut answer: A,
) where
    S: Stream<Item = Result<pb::KeepAliveRequest, Status>> + Unpin,
    A: FnMut(SessionId, Instant, &Confirmed) -> Result<pb::KeepAliveResponse, Status>,
{
    let mut pending = FuturesOrdered::new();
    // Keepalives in `pending`.
    let mut queued = 0usize;
    let mut reading = true;
    tokio::pin!(stopping);
    loop {
        if !reading && pending.is_empty() {
            return;
        }
        tokio::select! {
            biased;
            _ = &mut stopping => return,
            _ = replies.closed() => return,
            Some((batch, confirmed)) = pending.next(), if !pending.is_empty() => {
                let (batch, confirmed): (Vec<(SessionId, Instant)>, Confirmed) = (batch, confirmed);
                queued -= batch.len();
                for (session, arrived) in batch {
                    if let Ok(round) = &confirmed {
                        debug_assert!(
                            round.started >= arrived,
                            "a keepalive answered by a round that started before it arrived"
                        );
                    }
                    match answer(session, arrived, &confirmed) {
                        Ok(reply) => {
                            if replies.send(Ok(reply)).await.is_err() {
                                return;
                            }
                        }
                        Err(denied) => {
                            let _ = replies.send(Err(denied)).await;
                            return;
                        }
                    }
                }
            }
            message = inbound.next(), if reading && queued < KEEPALIVE_QUEUED => {
                // One keepalive, then every one already received.
                let Some(Ok(first)) = message else {
                    reading = false;
                    continue;
                };
                let mut batch = vec![(SessionId(first.session_id), Instant::now())];
                while batch.len() < KEEPALIVE_BATCH {
                    match inbound.next().now_or_never() {
                        Some(Some(Ok(message))) => {
                            batch.push((SessionId(message.session_id), Instant::now()));
                        }
                        Some(_) => {
                            reading = false;
                            break;
                        }
                        None => break,
                    }
                }
                queued += batch.len();
                // Queued on the barrier now, after every arrival in the batch: the round
                // that answers it starts later still.
                let round = barrier.request();
                pending.push_back(async move { (batch, round.await) });
            }
        }
    }
}

pub(super) fn answer_keepalive(
    node: &Node,
    confirmed: &Confirmed,
    session: SessionId,
    arrived: Instant,
) -> pb::KeepAliveResponse {
    let not_leader = |leader: Option<u64>| pb::KeepAliveResponse {
        session_id: session.0,
        status: pb::KeepAliveStatus::NotLeader as i32,
        ttl_ms: 0,
        leader_addr: leader
            .filter(|l| *l != node.id())
            .and_then(|l| node.client_addr_of(l))
            .unwrap_or_default(),
    };
    match confirmed {
        Err(BarrierError::NotLeader { leader }) => not_leader(*leader),
        Err(BarrierError::ShuttingDown) => not_leader(None),
        Ok(_) => match node.leases().renew(session, arrived) {
            Renewal::Renewed { ttl } => pb::KeepAliveResponse {
                session_id: session.0,
                status: pb::KeepAliveStatus::Ok as i32,
                ttl_ms: ttl.as_millis() as u64,
                leader_addr: String::new(),
            },
            Renewal::NotFound => pb::KeepAliveResponse {
                session_id: session.0,
                status: pb::KeepAliveStatus::SessionNotFound as i32,
                ttl_ms: 0,
                leader_addr: String::new(),
            },
            Renewal::NotLeader => not_leader(node.leader()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::barrier::fake::FakeQuorum;
    use std::sync::Arc;
    use tokio_stream::wrappers::ReceiverStream;

    /// (session, arrival, start of the round that answered it) of answered keepalives.
    type Answered = Arc<std::sync::Mutex<Vec<(SessionId, Instant, Option<Instant>)>>>;

    /// A keepalive stream served over `fake`; answers carry the number of the round that
    /// answered them in `ttl_ms` (0 when refused).
    struct Stream {
        requests: mpsc::Sender<Result<pb::KeepAliveRequest, Status>>,
        answers: mpsc::Receiver<Result<pb::KeepAliveResponse, Status>>,
        answered: Answered,
    }

    fn serve(fake: &FakeQuorum) -> Stream {
        let barrier = ReadBarrier::spawn_with(fake.clone());
        let (requests, inbound) = mpsc::channel(100_000);
        let (replies, answers) = mpsc::channel(100_000);
        let answered = Answered::default();
        let log = answered.clone();
        tokio::spawn(async move {
            let answer = |session: SessionId, arrived: Instant, confirmed: &Confirmed| {
                if session.0 == 0 {
                    return Err(crate::api::status::reason(
                        tonic::Code::PermissionDenied,
                        pb::ErrorReason::PermissionDenied,
                        "session 0",
                    ));
                }
                log.lock().unwrap().push((
                    session,
                    arrived,
                    confirmed.as_ref().ok().map(|round| round.started),
                ));
                Ok(pb::KeepAliveResponse {
                    session_id: session.0,
                    status: if confirmed.is_ok() {
                        pb::KeepAliveStatus::Ok
                    } else {
                        pb::KeepAliveStatus::NotLeader
                    } as i32,
                    ttl_ms: confirmed.as_ref().map_or(0, |round| round.number),
                    leader_addr: String::new(),
                })
            };
            let inbound = ReceiverStream::new(inbound);
            serve_keepalives(inbound, &barrier, &replies, std::future::pending(), answer).await;
        });
        Stream {
            requests,
            answers,
            answered,
        }
    }

    impl Stream {
        fn send(&self, session: u64) {
            self.requests
                .try_send(Ok(pb::KeepAliveRequest {
                    session_id: session,
                }))
                .unwrap();
        }

        /// Answers received so far, as (session, round).
        fn received(&mut self) -> Vec<(u64, u64)> {
            let mut received = Vec::new();
            while let Ok(answer) = self.answers.try_recv() {
                let answer = answer.unwrap();
                received.push((answer.session_id, answer.ttl_ms));
            }
            received
        }

        fn check_rule(&self) {
            for (session, arrived, started) in self.answered.lock().unwrap().iter() {
                if let Some(started) = started {
                    assert!(
                        started >= arrived,
                        "{session:?} answered by an earlier round"
                    );
                }
            }
        }
    }

    /// One stream keeps reading while its round is in flight: the keepalives that came
    /// meanwhile all join the next round (one round for all of them, started while the
    /// first is still in flight), and none is answered by the round that was in flight
    /// when it arrived.
    #[tokio::test]
    async fn a_stream_reads_on_while_its_round_is_in_flight() {
        let fake = FakeQuorum::leading(1);
        let mut stream = serve(&fake);
        stream.send(1);
        fake.until(|f| f.rounds() == 1).await;
        for session in 2..=65 {
            stream.send(session);
        }
        // Read and queued while round 1 is held: round 2 starts, round 1 still in flight.
        fake.until(|f| f.rounds() == 2).await;
        fake.settle_down().await;
        assert_eq!(fake.rounds(), 2, "the 64 keepalives share one round");
        assert_eq!(fake.in_flight(), 2);
        fake.end(1, Ok(()));
        fake.settle_down().await;
        assert_eq!(
            stream.received(),
            vec![(1, 1)],
            "only the first is answered"
        );
        fake.end(2, Ok(()));
        fake.until(|_| stream.answered.lock().unwrap().len() == 65)
            .await;
        fake.settle_down().await;
        let expected: Vec<(u64, u64)> = (2..=65).map(|session| (session, 2)).collect();
        assert_eq!(stream.received(), expected);
        stream.check_rule();
        assert_eq!(fake.rounds(), 2);
    }

    /// A stream's keepalives are answered in the order they came, even when a later round
    /// ends first; a refused round refuses its own keepalives only.
    #[tokio::test]
    async fn answers_keep_the_stream_order_across_rounds() {
        let fake = FakeQuorum::leading(1);
        let mut stream = serve(&fake);
        stream.send(1);
        fake.until(|f| f.rounds() == 1).await;
        stream.send(2);
        fake.until(|f| f.rounds() == 2).await;
        stream.send(3);
        fake.until(|f| f.rounds() == 3).await;
        fake.end(3, Ok(()));
        fake.end(2, Err(BarrierError::NotLeader { leader: None }));
        fake.settle_down().await;
        assert!(
            stream.received().is_empty(),
            "nothing before the first answer"
        );
        fake.end(1, Ok(()));
        fake.until(|_| stream.answered.lock().unwrap().len() == 3)
            .await;
        fake.settle_down().await;
        assert_eq!(stream.received(), vec![(1, 1), (2, 0), (3, 3)]);
        stream.check_rule();
    }

    /// Keepalives that arrive in bursts while rounds are held each wait for a round that
    /// started after them: never one that was in flight when they arrived.
    #[tokio::test]
    async fn every_keepalive_waits_for_a_round_that_started_after_it() {
        let fake = FakeQuorum::leading(1);
        let mut stream = serve(&fake);
        let mut session = 0;
        // (round number in flight when the burst was sent, sessions of the burst)
        let mut bursts = Vec::new();
        for burst in 0..12 {
            let rounds_before = fake.rounds();
            let sessions: Vec<u64> = (0..=burst % 5)
                .map(|_| {
                    session += 1;
                    session
                })
                .collect();
            for s in &sessions {
                stream.send(*s);
            }
            bursts.push((rounds_before as u64, sessions));
            fake.settle_down().await;
            // End the oldest round in flight every other burst.
            if burst % 2 == 1
                && let Some(oldest) = fake.oldest_in_flight()
            {
                fake.end(oldest, Ok(()));
            }
        }
        fake.settle_down().await;
        while let Some(oldest) = fake.oldest_in_flight() {
            fake.end(oldest, Ok(()));
        }
        fake.until(|_| stream.answered.lock().unwrap().len() == session as usize)
            .await;
        fake.settle_down().await;
        let received = stream.received();
        let round_of: std::collections::HashMap<u64, u64> = received.iter().copied().collect();
        for (rounds_before, sessions) in bursts {
            for s in sessions {
                assert!(
                    round_of[&s] > rounds_before,
                    "keepalive {s} answered by round {} that started before it",
                    round_of[&s]
                );
            }
        }
        let order: Vec<u64> = received.iter().map(|(s, _)| *s).collect();
        assert_eq!(order, (1..=session).collect::<Vec<_>>());
        stream.check_rule();
    }

    /// A refused keepalive ends the stream with its status; those before it are answered.
    #[tokio::test]
    async fn a_denied_keepalive_ends_the_stream() {
        let fake = FakeQuorum::leading(1);
        let mut stream = serve(&fake);
        stream.send(1);
        stream.send(0);
        stream.send(2);
        fake.until(|f| f.rounds() == 1).await;
        fake.end(1, Ok(()));
        let first = stream.answers.recv().await.unwrap().unwrap();
        assert_eq!(first.session_id, 1);
        let denied = stream.answers.recv().await.unwrap().unwrap_err();
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(stream.answers.recv().await.is_none(), "the stream ended");
    }

    /// Half-closing the stream still answers the keepalives already read.
    #[tokio::test]
    async fn keepalives_read_before_the_end_of_the_stream_are_answered() {
        let fake = FakeQuorum::leading(1);
        let Stream {
            requests,
            mut answers,
            ..
        } = serve(&fake);
        for session in 1..=3 {
            requests
                .try_send(Ok(pb::KeepAliveRequest {
                    session_id: session,
                }))
                .unwrap();
        }
        drop(requests);
        fake.until(|f| f.rounds() == 1).await;
        fake.end(1, Ok(()));
        for session in 1..=3 {
            assert_eq!(answers.recv().await.unwrap().unwrap().session_id, session);
        }
        assert!(answers.recv().await.is_none());
    }
}
