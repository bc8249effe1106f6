//! The `Locks` gRPC service.

use super::status::{self as st, from_barrier, from_core, from_propose, invalid_argument};
use crate::auth::{Authenticator, authorized, once};
use crate::barrier::{BarrierError, ReadBarrier, Round};
use crate::commit_trace::{self, Point};
use crate::events::{Attach, WaitOutcome, WaitTicket};
use crate::leases::Renewal;
use crate::node::Node;
use crate::proposer::ProposeResult;
use fencelock_core::{
    ClientId, Command, FencingToken, LockMode, ReleaseReason, RequestId, Response, Right,
    SessionId, WaitPolicy,
};
use fencelock_proto::v1 as pb;
use fencelock_proto::v1::locks_server::Locks;
use futures::stream::FuturesOrdered;
use futures::{FutureExt, Stream, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};

/// Keepalives of one stream queued together on the read barrier at most.
const KEEPALIVE_BATCH: usize = 4_096;
/// Keepalives of one stream waiting for their rounds at most; reading pauses beyond.
const KEEPALIVE_QUEUED: usize = 4 * KEEPALIVE_BATCH;
/// The longest finite wait an `Acquire` may ask for (one day).
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// The `Locks` service of one node.
pub struct LocksService {
    node: Arc<Node>,
    auth: Authenticator,
    keepalive_streams: Arc<AtomicUsize>,
    watch_streams: Arc<AtomicUsize>,
}

impl LocksService {
    /// Serve `node`.
    pub fn new(node: Arc<Node>) -> Self {
        LocksService {
            auth: Authenticator::new(node.shared().clone()),
            node,
            keepalive_streams: Arc::new(AtomicUsize::new(0)),
            watch_streams: Arc::new(AtomicUsize::new(0)),
        }
    }

    async fn propose(&self, command: Command) -> Result<Response, Status> {
        commit_trace::mark(Point::Proposed, 0);
        let proposed = self.node.proposer().propose(command).await;
        commit_trace::mark(Point::Answered, 0);
        self.outcome(proposed).await
    }

    /// [`crate::proposer::Proposer::propose_waiting`]: for an acquire expected to queue.
    async fn propose_waiting(&self, command: Command) -> Result<Response, Status> {
        commit_trace::mark(Point::Proposed, 0);
        let proposed = self.node.proposer().propose_waiting(command).await;
        commit_trace::mark(Point::Answered, 0);
        self.outcome(proposed).await
    }

    async fn outcome(&self, proposed: ProposeResult) -> Result<Response, Status> {
        match proposed {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(from_core(&error)),
            Err(error) => Err(from_propose(&self.node, error).await),
        }
    }

    async fn linearizable(&self) -> Result<(), Status> {
        match self.node.barrier().confirm().await {
            Ok(()) => Ok(()),
            Err(error) => Err(from_barrier(&self.node, error).await),
        }
    }

    fn check_name(&self, name: &str) -> Result<(), Status> {
        self.node
            .shared()
            .read(|applied| applied.state.limits().check_name(name))
            .map_err(|e| from_core(&e))
    }

    /// End a convenience-form session that holds and waits for nothing. Best effort: if
    /// it fails, the session still ends when its TTL runs out.
    async fn close_idle_lease_session(&self, session: SessionId) {
        let idle = self
            .node
            .shared()
            .read(|applied| applied.state.session_lock_counts(session) == Some((0, 0)));
        if idle {
            let _ = self
                .node
                .proposer()
                .propose(Command::CloseSession { session })
                .await;
        }
    }

    fn session_ttl_ms(&self, session: SessionId) -> u64 {
        self.node
            .shared()
            .read(|applied| applied.state.session_ttl_ms(session))
            .unwrap_or(0)
    }

    /// Wait for a queued acquire to end, cancelling it through the log at the deadline.
    async fn wait_for_grant(
        &self,
        session: SessionId,
        name: &str,
        deadline: Option<Instant>,
    ) -> Result<WaitEnd, Status> {
        let ticket = match self
            .node
            .hub()
            .attach_wait(self.node.shared(), session, name)
        {
            Attach::Granted(token) => return Ok(WaitEnd::Granted(token)),
            Attach::NotWaiting => return self.settle_ended_wait(session, name),
            Attach::Waiting(ticket) => ticket,
        };
        let mut guard = WaitGuard {
            node: self.node.clone(),
            ticket,
            session,
            name: name.to_string(),
            armed: true,
        };
        let expired = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            outcome = &mut guard.ticket.outcome => outcome.ok(),
            _ = expired => None,
            // A stopping node answers at once, so graceful shutdown does not wait for the
            // wait; it stays queued and the client re-attaches on the next leader.
            () = self.node.stopping() => {
                guard.disarm();
                return Err(st::reason(
                    tonic::Code::Unavailable,
                    pb::ErrorReason::Unavailable,
                    "node is shutting down; retry with the same request id",
                ));
            }
            // A deposed leader cannot learn of the grant or cancel the wait: send the
            // client to the new leader, where the same request id re-attaches to the wait.
            leader = self.node.leadership_lost() => {
                guard.disarm();
                return Err(
                    from_propose(&self.node, crate::proposer::ProposeError::NotLeader { leader }).await,
                );
            }
        };
        guard.disarm();
        match outcome {
            Some(WaitOutcome::Granted(token)) => Ok(WaitEnd::Granted(token)),
            Some(WaitOutcome::Ended) => self.settle_ended_wait(session, name),
            // The deadline passed: ask the state machine, which decides between the grant
            // and the cancel; the reply reports its decision, never a guess.
            None => self.cancel_wait(session, name).await,
        }
    }

    async fn cancel_wait(&self, session: SessionId, name: &str) -> Result<WaitEnd, Status> {
        let command = Command::CancelWait {
            session,
            name: name.to_string(),
        };
        match self.node.proposer().propose(command).await {
            Ok(Ok(Response::Granted { token, .. })) => Ok(WaitEnd::Granted(token)),
            Ok(Ok(_)) => Ok(WaitEnd::TimedOut),
            Ok(Err(fencelock_core::Error::NotWaiting(_))) => self.settle_ended_wait(session, name),
            Ok(Err(error)) => Err(from_core(&error)),
            Err(error) => Err(from_propose(&self.node, error).await),
        }
    }

    /// The wait is over without a grant seen: read what the state says.
    fn settle_ended_wait(&self, session: SessionId, name: &str) -> Result<WaitEnd, Status> {
        self.node.shared().read(|applied| {
            if applied.state.session_ttl_ms(session).is_none() {
                return Err(from_core(&fencelock_core::Error::SessionNotFound(session)));
            }
            match applied.state.held_token(session, name) {
                Some(token) => Ok(WaitEnd::Granted(token)),
                None => Ok(WaitEnd::TimedOut),
            }
        })
    }
}

enum WaitEnd {
    Granted(FencingToken),
    TimedOut,
}

/// Withdraws the wait on the server if the `Acquire` call is dropped (the client went
/// away or cancelled) while it was the last call attached to that wait.
struct WaitGuard {
    node: Arc<Node>,
    ticket: WaitTicket,
    session: SessionId,
    name: String,
    armed: bool,
}

impl WaitGuard {
    fn disarm(&mut self) {
        self.armed = false;
        self.ticket.detach(self.node.hub());
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if self.armed && self.ticket.detach(self.node.hub()) {
            let node = self.node.clone();
            let command = Command::CancelWait {
                session: self.session,
                name: std::mem::take(&mut self.name),
            };
            tokio::spawn(async move {
                let _ = node.proposer().propose(command).await;
            });
        }
    }
}

fn client_id(bytes: &[u8]) -> Result<ClientId, Status> {
    let bytes: [u8; 16] = bytes
        .try_into()
        .map_err(|_| invalid_argument("client_id must be 16 bytes (a UUID)"))?;
    Ok(ClientId(u128::from_be_bytes(bytes)))
}

fn request_id(request: Option<pb::RequestId>) -> Result<RequestId, Status> {
    let request = request.ok_or_else(|| invalid_argument("request id is required"))?;
    if request.seq == 0 {
        return Err(invalid_argument("request seq starts at 1"));
    }
    Ok(RequestId {
        seq: request.seq,
        first_unanswered_seq: request.first_unanswered_seq,
    })
}

fn session_id(id: u64) -> Result<SessionId, Status> {
    if id == 0 {
        return Err(invalid_argument("session_id is required"));
    }
    Ok(SessionId(id))
}

fn mode_from(mode: i32) -> Result<LockMode, Status> {
    match pb::LockMode::try_from(mode) {
        Ok(pb::LockMode::Exclusive) => Ok(LockMode::Exclusive),
        Ok(pb::LockMode::Shared) => Ok(LockMode::Shared),
        Err(_) => Err(invalid_argument(format!("unknown lock mode {mode}"))),
    }
}

fn mode_to(mode: LockMode) -> i32 {
    match mode {
        LockMode::Exclusive => pb::LockMode::Exclusive as i32,
        LockMode::Shared => pb::LockMode::Shared as i32,
    }
}

fn lock_info(view: fencelock_core::LockView) -> pb::LockInfo {
    pb::LockInfo {
        name: view.name,
        holders: view
            .holders
            .into_iter()
            .map(|h| pb::Holder {
                session_id: h.session.0,
                token: h.token.0,
                mode: mode_to(h.mode),
                value: h.value,
                client_id: h.client_id.0.to_be_bytes().to_vec(),
            })
            .collect(),
        waiters: view
            .waiters
            .into_iter()
            .map(|w| pb::Waiter {
                session_id: w.session.0,
                mode: mode_to(w.mode),
            })
            .collect(),
    }
}

fn timed<T>(method: &'static str, started: Instant, result: &Result<T, Status>) {
    let code = match result {
        Ok(_) => "ok",
        Err(status) => grpc_code_name(status.code()),
    };
    crate::metrics::record_request(method, code, started.elapsed());
}

fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}

/// Counts a live stream; the count drops when the guard does.
struct StreamSlot(Arc<AtomicUsize>);

impl StreamSlot {
    fn take(counter: &Arc<AtomicUsize>, max: usize, what: &str) -> Result<StreamSlot, Status> {
        let previous = counter.fetch_add(1, Ordering::SeqCst);
        if previous >= max {
            counter.fetch_sub(1, Ordering::SeqCst);
            return Err(st::status(
                tonic::Code::ResourceExhausted,
                pb::ErrorDetail {
                    reason: pb::ErrorReason::LimitReached as i32,
                    message: format!("too many {what} streams on this node (limit {max})"),
                    limit: format!("{what} streams"),
                    ..Default::default()
                },
            ));
        }
        Ok(StreamSlot(counter.clone()))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Locks for LocksService {
    async fn open_session(
        &self,
        request: Request<pb::OpenSessionRequest>,
    ) -> Result<tonic::Response<pb::OpenSessionResponse>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        let started = Instant::now();
        let result = async {
            let request = request.into_inner();
            let client_id = client_id(&request.client_id)?;
            match self
                .propose(authorized(
                    &caller,
                    Command::OpenSession {
                        client_id,
                        ttl_ms: request.ttl_ms,
                    },
                ))
                .await?
            {
                Response::SessionOpened { session, ttl_ms } => Ok(pb::OpenSessionResponse {
                    session_id: session.0,
                    ttl_ms,
                }),
                other => Err(unexpected(&other)),
            }
        }
        .await;
        timed("open_session", started, &result);
        result.map(tonic::Response::new)
    }

    async fn close_session(
        &self,
        request: Request<pb::CloseSessionRequest>,
    ) -> Result<tonic::Response<pb::CloseSessionResponse>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        let started = Instant::now();
        let result = async {
            let session = session_id(request.into_inner().session_id)?;
            self.auth.require_session(&caller, session, None)?;
            self.propose(authorized(&caller, Command::CloseSession { session }))
                .await?;
            Ok(pb::CloseSessionResponse {})
        }
        .await;
        timed("close_session", started, &result);
        result.map(tonic::Response::new)
    }

    type KeepAliveStream = BoxStream<pb::KeepAliveResponse>;

    async fn keep_alive(
        &self,
        request: Request<Streaming<pb::KeepAliveRequest>>,
    ) -> Result<tonic::Response<Self::KeepAliveStream>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        let slot = StreamSlot::take(
            &self.keepalive_streams,
            self.node.config().max_keepalive_streams,
            "keepalive",
        )?;
        let inbound = request.into_inner();
        let (replies, outbound) = mpsc::channel(KEEPALIVE_BATCH);
        let node = self.node.clone();
        let auth = self.auth.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let answer = |session: SessionId, arrived: Instant, confirmed: &Confirmed| {
                auth.require_session(&caller, session, None)?;
                Ok(answer_keepalive(&node, confirmed, session, arrived))
            };
            serve_keepalives(inbound, node.barrier(), &replies, node.stopping(), answer).await;
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(
            outbound,
        ))))
    }

    async fn acquire(
        &self,
        request: Request<pb::AcquireRequest>,
    ) -> Result<tonic::Response<pb::AcquireResponse>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        let started = Instant::now();
        let result = async {
            let request = request.into_inner();
            let mode = mode_from(request.mode)?;
            let (wait, deadline) = match pb::WaitPolicy::try_from(request.wait) {
                Ok(pb::WaitPolicy::NoWait) => (WaitPolicy::NoWait, None),
                Ok(pb::WaitPolicy::Forever) => (WaitPolicy::Queue, None),
                Ok(pb::WaitPolicy::Timeout) => {
                    let timeout = Duration::from_millis(request.wait_timeout_ms);
                    if timeout.is_zero() || timeout > MAX_WAIT {
                        return Err(invalid_argument(format!(
                            "wait_timeout_ms must be 1..={} with WAIT_POLICY_TIMEOUT",
                            MAX_WAIT.as_millis()
                        )));
                    }
                    (WaitPolicy::Queue, Some(started + timeout))
                }
                Err(_) => {
                    return Err(invalid_argument(format!(
                        "unknown wait policy {}",
                        request.wait
                    )));
                }
            };
            let convenience = request.session_id == 0;
            self.auth.require(&caller, &request.name, Right::Acquire)?;
            let command = if convenience {
                authorized(
                    &caller,
                    Command::AcquireWithLease {
                        client_id: client_id(&request.client_id)?,
                        ttl_ms: request.lease_ttl_ms,
                        name: request.name.clone(),
                        mode,
                        wait,
                        value: request.value,
                    },
                )
            } else {
                self.auth.require_session(
                    &caller,
                    SessionId(request.session_id),
                    Some(&request.name),
                )?;
                authorized(
                    &caller,
                    Command::Acquire {
                        session: SessionId(request.session_id),
                        request: request_id(request.request)?,
                        name: request.name.clone(),
                        mode,
                        wait,
                        value: request.value,
                    },
                )
            };
            // Held back only where the delay is small next to the wait it may add to.
            let delay = self.node.config().waiting_acquire_delay;
            let likely_queued = wait == WaitPolicy::Queue
                && !delay.is_zero()
                && deadline.is_none_or(|deadline| deadline > started + delay * 10)
                && self
                    .node
                    .shared()
                    .read(|applied| applied.state.would_queue(&request.name, mode));
            let response = if likely_queued {
                self.propose_waiting(command).await?
            } else {
                self.propose(command).await?
            };
            let (session, end) = match response {
                Response::Granted { session, token } => (session, WaitEnd::Granted(token)),
                Response::WouldBlock { session } => {
                    return Ok(pb::AcquireResponse {
                        outcome: pb::AcquireOutcome::WouldBlock as i32,
                        token: 0,
                        session_id: session.0,
                        ttl_ms: self.session_ttl_ms(session),
                    });
                }
                Response::WaitCancelled => (SessionId(request.session_id), WaitEnd::TimedOut),
                Response::Queued { session } => (
                    session,
                    self.wait_for_grant(session, &request.name, deadline)
                        .await?,
                ),
                other => return Err(unexpected(&other)),
            };
            let ttl_ms = self.session_ttl_ms(session);
            if convenience && matches!(end, WaitEnd::TimedOut) {
                // The one-lock session of the convenience form has nothing left to hold:
                // end it now rather than leave it until its TTL runs out.
                self.close_idle_lease_session(session).await;
            }
            Ok(match end {
                WaitEnd::Granted(token) => pb::AcquireResponse {
                    outcome: pb::AcquireOutcome::Granted as i32,
                    token: token.0,
                    session_id: session.0,
                    ttl_ms,
                },
                WaitEnd::TimedOut => pb::AcquireResponse {
                    outcome: pb::AcquireOutcome::TimedOut as i32,
                    token: 0,
                    session_id: session.0,
                    ttl_ms,
                },
            })
        }
        .await;
        timed("acquire", started, &result);
        result.map(tonic::Response::new)
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<tonic::Response<pb::ReleaseResponse>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        let started = Instant::now();
        let result = async {
            let request = request.into_inner();
            self.auth.require(&caller, &request.name, Right::Release)?;
            self.auth.require_session(
                &caller,
                SessionId(request.session_id),
                Some(&request.name),
            )?;
            let command = authorized(
                &caller,
                Command::Release {
                    session: session_id(request.session_id)?,
                    request: request_id(request.request)?,
                    name: request.name,
                    token: FencingToken(request.token),
                },
            );
            self.propose(command).await?;
            Ok(pb::ReleaseResponse {})
        }
        .await;
        timed("release", started, &result);
        result.map(tonic::Response::new)
    }

    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<tonic::Response<pb::VerifyResponse>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        let started = Instant::now();
        let result = async {
            let request = request.into_inner();
            self.check_name(&request.name)?;
            self.auth.require(&caller, &request.name, Right::Read)?;
            self.linearizable().await?;
            // Again on the state the barrier waited for: a revocation committed before
            // this read counts.
            self.auth.require(&caller, &request.name, Right::Read)?;
            let token = FencingToken(request.token);
            Ok(self.node.shared().read(|applied| {
                let current_token = applied
                    .state
                    .lock(&request.name)
                    .and_then(|lock| lock.holders.iter().map(|h| h.token.0).max())
                    .unwrap_or(0);
                pb::VerifyResponse {
                    current: applied.state.is_current_grant(&request.name, token),
                    current_token,
                }
            }))
        }
        .await;
        timed("verify", started, &result);
        result.map(tonic::Response::new)
    }

    async fn describe(
        &self,
        request: Request<pb::DescribeRequest>,
    ) -> Result<tonic::Response<pb::DescribeResponse>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        let started = Instant::now();
        let result = async {
            let request = request.into_inner();
            self.check_name(&request.name)?;
            self.auth.require(&caller, &request.name, Right::Read)?;
            self.linearizable().await?;
            self.auth.require(&caller, &request.name, Right::Read)?;
            Ok(self.node.shared().read(|applied| pb::DescribeResponse {
                lock: applied.state.lock(&request.name).map(lock_info),
                revision: applied.last_applied.map(|l| l.index).unwrap_or(0),
            }))
        }
        .await;
        timed("describe", started, &result);
        result.map(tonic::Response::new)
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<tonic::Response<pb::ListResponse>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        let started = Instant::now();
        let result = async {
            let request = request.into_inner();
            self.auth.require(&caller, &request.prefix, Right::Read)?;
            let max_page = self.node.config().max_list_page;
            let limit = match request.limit as usize {
                0 => max_page.min(100),
                n => n.min(max_page),
            };
            self.linearizable().await?;
            self.auth.require(&caller, &request.prefix, Right::Read)?;
            let start_after =
                (!request.start_after.is_empty()).then_some(request.start_after.as_str());
            Ok(self.node.shared().read(|applied| {
                let (locks, more) =
                    applied
                        .state
                        .locks_with_prefix(&request.prefix, start_after, limit);
                let next_start_after = if more {
                    locks.last().map(|l| l.name.clone()).unwrap_or_default()
                } else {
                    String::new()
                };
                pb::ListResponse {
                    locks: locks.into_iter().map(lock_info).collect(),
                    next_start_after,
                    revision: applied.last_applied.map(|l| l.index).unwrap_or(0),
                }
            }))
        }
        .await;
        timed("list", started, &result);
        result.map(tonic::Response::new)
    }

    type WatchStream = BoxStream<pb::WatchEvent>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        let request = request.into_inner();
        if !request.prefix {
            self.check_name(&request.name)?;
        }
        self.auth.require(&caller, &request.name, Right::Read)?;
        let slot = StreamSlot::take(
            &self.watch_streams,
            self.node.config().max_watchers,
            "watch",
        )?;
        // Subscribe before reading the revision, so nothing between the two is missed.
        let mut events = self.node.hub().subscribe();
        // Again after subscribing: an auth change applied in between sends no event this
        // stream will see.
        self.auth.require(&caller, &request.name, Right::Read)?;
        let revision = self
            .node
            .shared()
            .read(|applied| applied.last_applied.map(|l| l.index).unwrap_or(0));
        let (sender, outbound) = mpsc::channel(self.node.config().watch_buffer.max(1));
        let node = self.node.clone();
        let auth = self.auth.clone();
        // The caller is checked again, on the applied state, whenever an auth command
        // takes effect: a revoked token, a removed user, a right taken away or auth
        // switched on under a stream opened while it was off ends the stream.
        let watched = request.name.clone();
        let still_allowed = move || auth.require(&caller, &watched, Right::Read);
        tokio::spawn(async move {
            let _slot = slot;
            let resync = |revision| pb::WatchEvent {
                revision,
                resync: true,
                ..Default::default()
            };
            if sender.send(Ok(resync(revision))).await.is_err() {
                return;
            }
            let mut last_revision = revision;
            loop {
                let applied = tokio::select! {
                    applied = events.recv() => applied,
                    _ = sender.closed() => return,
                    _ = node.stopping() => return,
                };
                match applied {
                    Ok(applied) if applied.resync => {
                        if let Err(denied) = still_allowed() {
                            let _ = sender.send(Err(denied)).await;
                            return;
                        }
                        last_revision = applied.index;
                        if sender.send(Ok(resync(last_revision))).await.is_err() {
                            return;
                        }
                    }
                    Ok(applied) => {
                        last_revision = applied.index;
                        for event in &applied.events {
                            if matches!(event, fencelock_core::Event::AuthChanged { .. })
                                && let Err(denied) = still_allowed()
                            {
                                let _ = sender.send(Err(denied)).await;
                                return;
                            }
                            if let Some(event) = watch_event(event, applied.index, &request)
                                && sender.send(Ok(event)).await.is_err()
                            {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Missed events may have changed auth.
                        if let Err(denied) = still_allowed() {
                            let _ = sender.send(Err(denied)).await;
                            return;
                        }
                        if sender.send(Ok(resync(last_revision))).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(
            outbound,
        ))))
    }

    async fn force_release(
        &self,
        request: Request<pb::ForceReleaseRequest>,
    ) -> Result<tonic::Response<pb::ForceReleaseResponse>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        let started = Instant::now();
        let result = async {
            let request = request.into_inner();
            let name = request.name;
            self.auth.require(&caller, &name, Right::Admin)?;
            let command = authorized(&caller, Command::ForceRelease { name: name.clone() });
            let remember = self.node.config().max_remembered_requests;
            match self
                .propose(once(&request.request_id, remember, command)?)
                .await?
            {
                Response::ForceReleased { count } => {
                    tracing::warn!(lock = %name, released = count, "admin force-release");
                    Ok(pb::ForceReleaseResponse { released: count })
                }
                other => Err(unexpected(&other)),
            }
        }
        .await;
        timed("force_release", started, &result);
        result.map(tonic::Response::new)
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<tonic::Response<pb::ListSessionsResponse>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        let started = Instant::now();
        let result = async {
            // Sessions hold locks under every prefix: admin on all of them.
            self.auth.require(&caller, "", Right::Admin)?;
            let request = request.into_inner();
            let max_page = self.node.config().max_list_page;
            let limit = match request.limit as usize {
                0 => max_page.min(100),
                n => n.min(max_page),
            };
            self.linearizable().await?;
            self.auth.require(&caller, "", Right::Admin)?;
            let start_after = (request.start_after != 0).then_some(SessionId(request.start_after));
            Ok(self.node.shared().read(|applied| {
                let (sessions, more) = applied.state.sessions_after(start_after, limit);
                let next_start_after = if more {
                    sessions.last().map_or(0, |s| s.session.0)
                } else {
                    0
                };
                pb::ListSessionsResponse {
                    sessions: sessions.into_iter().map(session_info).collect(),
                    next_start_after,
                    revision: applied.last_applied.map(|l| l.index).unwrap_or(0),
                }
            }))
        }
        .await;
        timed("list_sessions", started, &result);
        result.map(tonic::Response::new)
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<tonic::Response<pb::RevokeSessionResponse>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        let started = Instant::now();
        let result = async {
            // A session may hold locks under any prefix: admin on all of them.
            self.auth.require(&caller, "", Right::Admin)?;
            let request = request.into_inner();
            let session = SessionId(request.session_id);
            let command = authorized(&caller, Command::RevokeSession { session });
            let remember = self.node.config().max_remembered_requests;
            match self
                .propose(once(&request.request_id, remember, command)?)
                .await?
            {
                Response::SessionRevoked { released } => {
                    tracing::warn!(%session, released, "admin revoked session");
                    Ok(pb::RevokeSessionResponse { released })
                }
                other => Err(unexpected(&other)),
            }
        }
        .await;
        timed("revoke_session", started, &result);
        result.map(tonic::Response::new)
    }
}

/// What the read barrier answered for a batch of keepalives.
type Confirmed = Result<Round, BarrierError>;

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
async fn serve_keepalives<S, A>(
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

fn answer_keepalive(
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

fn watch_event(
    event: &fencelock_core::Event,
    revision: u64,
    request: &pb::WatchRequest,
) -> Option<pb::WatchEvent> {
    use fencelock_core::Event;
    let matches = |name: &str| {
        if request.prefix {
            name.starts_with(&request.name)
        } else {
            name == request.name
        }
    };
    match event {
        Event::Acquired {
            name,
            session,
            token,
            mode,
            value,
        } if matches(name) => Some(pb::WatchEvent {
            kind: pb::EventKind::Acquired as i32,
            name: name.clone(),
            session_id: session.0,
            token: token.0,
            mode: mode_to(*mode),
            value: value.clone(),
            revision,
            resync: false,
        }),
        Event::Released {
            name,
            session,
            token,
            reason,
        } if matches(name) => Some(pb::WatchEvent {
            kind: match reason {
                ReleaseReason::Released => pb::EventKind::Released,
                ReleaseReason::SessionClosed => pb::EventKind::SessionClosed,
                ReleaseReason::SessionExpired => pb::EventKind::Expired,
                ReleaseReason::Forced => pb::EventKind::Forced,
                ReleaseReason::Revoked => pb::EventKind::Revoked,
            } as i32,
            name: name.clone(),
            session_id: session.0,
            token: token.0,
            revision,
            ..Default::default()
        }),
        _ => None,
    }
}

fn session_info(view: fencelock_core::SessionView) -> pb::SessionInfo {
    pb::SessionInfo {
        session_id: view.session.0,
        client_id: view.client_id.0.to_be_bytes().to_vec(),
        ttl_ms: view.ttl_ms,
        held: view
            .held
            .into_iter()
            .map(|(name, token)| pb::HeldLock {
                name,
                token: token.0,
            })
            .collect(),
        waiting: view.waiting,
    }
}

fn unexpected(response: &Response) -> Status {
    st::reason(
        tonic::Code::Internal,
        pb::ErrorReason::Internal,
        format!("unexpected state machine response {response:?}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::barrier::fake::FakeQuorum;

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
                    return Err(Status::permission_denied("session 0"));
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
