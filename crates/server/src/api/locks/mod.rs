//! The `Locks` gRPC service: the handlers. A queued acquire's wait is in `wait`, the
//! keepalive stream in `keepalive`, the watch stream in `watch`, the protobuf
//! conversions in `convert`.

mod convert;
mod keepalive;
mod renew;
mod wait;
mod watch;

use crate::limits::{KEEPALIVE_BATCH, MAX_WAIT};
use convert::{
    client_id, lock_info, lock_spec, mode_from, request_id, session_id, session_info, unexpected,
};
use keepalive::{Confirmed, answer_keepalive, serve_keepalives};
use wait::WaitEnd;

use super::leader::propose_error;
use super::read::checked_read;
use super::status::{self as st, from_core, invalid_argument};
use crate::auth::{Authenticator, Caller, authorized, once};
use crate::commit_trace::{CommitTrace, Point};
use crate::node::Node;
use crate::proposer::ProposeResult;
use crate::proposer::wall_clock_ms;
use crate::raft::AppliedCommand;
use crate::store::Applied;
use fencelock_core::{
    Command, FencingToken, Grant, LockSpec, Response, Right, SessionId, WaitPolicy,
};
use fencelock_proto::v1 as pb;
use fencelock_proto::v1::locks_server::Locks;
use futures::Stream;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};

/// The `Locks` service of one node.
pub struct LocksService {
    node: Arc<Node>,
    auth: Authenticator,
    keepalive_streams: Arc<AtomicUsize>,
    watch_streams: Arc<AtomicUsize>,
    /// Where a write is marked when proposed and when its result comes back.
    trace: CommitTrace,
}

impl LocksService {
    /// The wire form of `lock`, its lock-delay naming the session whose lost grant
    /// started it when this node saw it start. Called under the state's read lock.
    fn lock_info(&self, lock: fencelock_core::LockView) -> pb::LockInfo {
        let mut info = lock_info(lock, wall_clock_ms());
        if let Some(delay) = info.lock_delay.as_mut() {
            delay.session_id = self
                .node
                .hub()
                .delay_session_of(&info.name, fencelock_core::FencingToken(delay.token))
                .map_or(0, |s| s.0);
        }
        info
    }

    /// Serve `node`.
    pub fn new(node: Arc<Node>) -> Self {
        LocksService {
            auth: crate::api::authenticator(&node),
            node,
            keepalive_streams: Arc::new(AtomicUsize::new(0)),
            watch_streams: Arc::new(AtomicUsize::new(0)),
            trace: CommitTrace::off(),
        }
    }

    /// Mark each write's proposal and answer on `trace`.
    #[must_use]
    pub fn with_commit_trace(mut self, trace: CommitTrace) -> Self {
        self.trace = trace;
        self
    }

    async fn propose(&self, command: Command) -> Result<Response, Status> {
        self.trace.mark(Point::Proposed, 0);
        let proposed = self.node.proposer().propose(command).await;
        self.trace.mark(Point::Answered, 0);
        self.outcome(proposed).await
    }

    /// An acquire's proposal ([`crate::proposer::Proposer::propose_waiting`] if it is
    /// expected to queue): its response, and the TTL of the session it names as the
    /// applying node read it (0 if that session is not open).
    async fn propose_acquire(
        &self,
        command: Command,
        likely_queued: bool,
    ) -> Result<(Response, u64), Status> {
        self.trace.mark(Point::Proposed, 0);
        let proposer = self.node.proposer();
        let proposed = if likely_queued {
            proposer.propose_waiting(command).await
        } else {
            proposer.propose_applied(command).await
        };
        self.trace.mark(Point::Answered, 0);
        let (proposed, ttl_ms) = match proposed {
            Ok(AppliedCommand {
                result,
                session_ttl_ms,
            }) => (Ok(result), session_ttl_ms.unwrap_or(0)),
            Err(error) => (Err(error), 0),
        };
        Ok((self.outcome(proposed).await?, ttl_ms))
    }

    async fn outcome(&self, proposed: ProposeResult) -> Result<Response, Status> {
        match proposed {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(from_core(&error)),
            Err(error) => Err(propose_error(&self.node, error).await),
        }
    }

    /// Read the applied state for `caller` with `right` on `name` (a prefix for a
    /// listing): [`checked_read`], the one rule of every read.
    async fn read<T>(
        &self,
        caller: &Caller,
        name: &str,
        right: Right,
        read: impl FnOnce(&Applied) -> T,
    ) -> Result<T, Status> {
        checked_read(&self.node, || self.auth.require(caller, name, right), read).await
    }

    /// A unary call: authenticate (a refusal there is not timed), then run `handle` on
    /// the caller, the request and the time it started, record how long it took and its
    /// code, and wrap the reply.
    async fn unary<Req, Reply, F, Fut>(
        &self,
        method: &'static str,
        request: Request<Req>,
        handle: F,
    ) -> Result<tonic::Response<Reply>, Status>
    where
        F: FnOnce(Caller, Req, Instant) -> Fut,
        Fut: Future<Output = Result<Reply, Status>>,
    {
        let caller = self.auth.authenticate(request.metadata()).await?;
        let started = Instant::now();
        let result = handle(caller, request.into_inner(), started).await;
        timed(method, started, &result);
        result.map(tonic::Response::new)
    }

    /// A listing's page size: what the request asks (100 when it asks nothing), at most
    /// the configured `max_list_page`.
    fn page_limit(&self, asked: u32) -> usize {
        let max_page = self.node.config().api_limits.max_list_page;
        match asked as usize {
            0 => max_page.min(100),
            n => n.min(max_page),
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

    /// `session`'s TTL in the applied state (0 if it is not open), for an answer that
    /// does not carry it (see [`AppliedCommand`]).
    fn session_ttl_ms(&self, session: SessionId) -> u64 {
        self.node
            .shared()
            .read(|applied| applied.state.session_ttl_ms(session))
            .unwrap_or(0)
    }
}

impl LocksService {
    /// An acquire of one name with none of the newer primitives: `Acquire` (or
    /// `AcquireWithLease`), as before they existed.
    async fn acquire_one(
        &self,
        caller: Caller,
        request: pb::AcquireRequest,
        mode: fencelock_core::LockMode,
        wait: WaitPolicy,
        deadline: Option<Instant>,
        started: Instant,
    ) -> Result<pb::AcquireResponse, Status> {
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
        let likely_queued = wait == WaitPolicy::Queue
            && self.worth_holding_back(deadline, started)
            && self
                .node
                .shared()
                .read(|applied| applied.state.would_queue(&request.name, mode));
        let (response, mut ttl_ms) = self.propose_acquire(command, likely_queued).await?;
        let (session, end) = match response {
            Response::Granted { session, token } => (session, WaitEnd::Granted(token)),
            Response::WouldBlock { session } => {
                return Ok(pb::AcquireResponse {
                    outcome: pb::AcquireOutcome::WouldBlock as i32,
                    session_id: session.0,
                    ttl_ms,
                    ..Default::default()
                });
            }
            Response::WaitCancelled => {
                // The answer names no session: the request's own is the one.
                let session = SessionId(request.session_id);
                ttl_ms = self.session_ttl_ms(session);
                (session, WaitEnd::TimedOut)
            }
            Response::Queued { session } => (
                session,
                self.wait_for_grant(session, &request.name, deadline)
                    .await?,
            ),
            other => return Err(unexpected(&other)),
        };
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
                grants: vec![pb::Grant {
                    name: request.name,
                    token: token.0,
                    hold_count: 1,
                }],
            },
            WaitEnd::TimedOut => pb::AcquireResponse {
                outcome: pb::AcquireOutcome::TimedOut as i32,
                session_id: session.0,
                ttl_ms,
                ..Default::default()
            },
        })
    }

    /// Whether an acquire expected to queue may be held back to share the next entry:
    /// only where the hold-back is small next to the wait it may add to.
    fn worth_holding_back(&self, deadline: Option<Instant>, started: Instant) -> bool {
        let delay = self.node.config().write_path.waiting_acquire_delay;
        !delay.is_zero() && deadline.is_none_or(|deadline| deadline > started + delay * 10)
    }

    /// The grants of a queued `AcquireLocks` that its wait saw granted: the state
    /// machine's remembered answer (the session form), else the session's grants of
    /// those names in the applied state (the convenience form, whose new session
    /// nothing else uses).
    fn granted(
        &self,
        session: SessionId,
        seq: u64,
        convenience: bool,
        specs: &[LockSpec],
    ) -> Result<Vec<Grant>, Status> {
        self.node.shared().read(|applied| {
            if !convenience
                && let Some(Ok(Response::GrantedLocks { grants, .. })) =
                    applied.state.request_answer(session, seq)
            {
                return Ok(grants);
            }
            specs
                .iter()
                .map(|spec| {
                    let lock = applied.state.lock(&spec.name);
                    let holder = lock
                        .as_ref()
                        .and_then(|lock| lock.holders.iter().find(|h| h.session == session));
                    match holder {
                        Some(holder) => Ok(Grant {
                            name: spec.name.clone(),
                            token: holder.token,
                            hold_count: holder.hold_count,
                        }),
                        None => Err(from_core(&fencelock_core::Error::NotHeld(
                            spec.name.clone(),
                        ))),
                    }
                })
                .collect()
        })
    }
}

/// The lock specs of an acquire that uses a newer primitive (a semaphore, a weight,
/// reentrancy, a lock-delay, or several names), or `None` for a plain one-name acquire,
/// which keeps going through `Acquire` as before.
fn primitive_specs(request: &pb::AcquireRequest) -> Result<Option<Vec<LockSpec>>, Status> {
    if request.locks.is_empty() {
        let plain = request.permits == 0
            && request.weight == 0
            && !request.reentrant
            && request.lock_delay_ms == 0;
        if plain {
            return Ok(None);
        }
        let spec = lock_spec(
            request.name.clone(),
            request.mode,
            request.permits,
            request.weight,
            request.reentrant,
            request.lock_delay_ms,
        )?;
        return Ok(Some(vec![spec]));
    }
    let single_fields_set = !request.name.is_empty()
        || request.mode != 0
        || request.permits != 0
        || request.weight != 0
        || request.reentrant
        || request.lock_delay_ms != 0;
    if single_fields_set {
        return Err(invalid_argument(
            "an acquire with `locks` names its locks there only: leave name, mode, permits, \
             weight, reentrant and lock_delay_ms unset",
        ));
    }
    let specs = request
        .locks
        .iter()
        .map(|spec| {
            lock_spec(
                spec.name.clone(),
                spec.mode,
                spec.permits,
                spec.weight,
                spec.reentrant,
                spec.lock_delay_ms,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(specs))
}

/// `grants` (in name order, as the state machine gives them) in the order `specs` asked.
fn in_request_order(specs: &[LockSpec], grants: Vec<Grant>) -> Result<Vec<pb::Grant>, Status> {
    let mut by_name: std::collections::HashMap<String, Grant> = grants
        .into_iter()
        .map(|grant| (grant.name.clone(), grant))
        .collect();
    specs
        .iter()
        .map(|spec| {
            let grant = by_name.remove(&spec.name).ok_or_else(|| {
                st::reason(
                    tonic::Code::Internal,
                    pb::ErrorReason::Internal,
                    format!("the grant of {:?} is missing from the answer", spec.name),
                )
            })?;
            Ok(pb::Grant {
                name: grant.name,
                token: grant.token.0,
                hold_count: grant.hold_count,
            })
        })
        .collect()
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
        self.unary("open_session", request, |caller, request, _| async move {
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
        })
        .await
    }

    async fn close_session(
        &self,
        request: Request<pb::CloseSessionRequest>,
    ) -> Result<tonic::Response<pb::CloseSessionResponse>, Status> {
        self.unary("close_session", request, |caller, request, _| async move {
            let session = session_id(request.session_id)?;
            self.auth.require_session(&caller, session, None)?;
            self.propose(authorized(&caller, Command::CloseSession { session }))
                .await?;
            Ok(pb::CloseSessionResponse {})
        })
        .await
    }

    type KeepAliveStream = BoxStream<pb::KeepAliveResponse>;

    async fn keep_alive(
        &self,
        request: Request<Streaming<pb::KeepAliveRequest>>,
    ) -> Result<tonic::Response<Self::KeepAliveStream>, Status> {
        let caller = self.auth.authenticate(request.metadata()).await?;
        let slot = StreamSlot::take(
            &self.keepalive_streams,
            self.node.config().api_limits.max_keepalive_streams,
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
        self.unary("acquire", request, |caller, request, started| async move {
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
            let Some(specs) = primitive_specs(&request)? else {
                return self
                    .acquire_one(caller, request, mode, wait, deadline, started)
                    .await;
            };
            for spec in &specs {
                self.auth.require(&caller, &spec.name, Right::Acquire)?;
                if !convenience {
                    self.auth.require_session(
                        &caller,
                        SessionId(request.session_id),
                        Some(&spec.name),
                    )?;
                }
            }
            let seq = request.request.as_ref().map_or(0, |r| r.seq);
            let command = if convenience {
                Command::AcquireLocksWithLease {
                    client_id: client_id(&request.client_id)?,
                    ttl_ms: request.lease_ttl_ms,
                    locks: specs.clone(),
                    wait,
                    value: request.value,
                }
            } else {
                Command::AcquireLocks {
                    session: SessionId(request.session_id),
                    request: request_id(request.request)?,
                    locks: specs.clone(),
                    wait,
                    value: request.value,
                }
            };
            let likely_queued = wait == WaitPolicy::Queue
                && self.worth_holding_back(deadline, started)
                && self
                    .node
                    .shared()
                    .read(|applied| applied.state.would_queue_locks(&specs));
            let command = authorized(&caller, command);
            let (response, mut ttl_ms) = self.propose_acquire(command, likely_queued).await?;
            // A multi-lock is granted in one entry, so the wait of its first name ends
            // when all of them are granted (and a cancel of it withdraws them all).
            let first = &specs[0].name;
            let (session, grants) = match response {
                Response::GrantedLocks { session, grants } => (session, Some(grants)),
                Response::WouldBlock { session } => {
                    return Ok(pb::AcquireResponse {
                        outcome: pb::AcquireOutcome::WouldBlock as i32,
                        session_id: session.0,
                        ttl_ms,
                        ..Default::default()
                    });
                }
                Response::WaitCancelled => {
                    // The answer names no session: the request's own is the one.
                    let session = SessionId(request.session_id);
                    ttl_ms = self.session_ttl_ms(session);
                    (session, None)
                }
                Response::Queued { session } => {
                    match self.wait_for_grant(session, first, deadline).await? {
                        WaitEnd::Granted(_) => (
                            session,
                            Some(self.granted(session, seq, convenience, &specs)?),
                        ),
                        WaitEnd::TimedOut => (session, None),
                    }
                }
                other => return Err(unexpected(&other)),
            };
            let Some(grants) = grants else {
                if convenience {
                    self.close_idle_lease_session(session).await;
                }
                return Ok(pb::AcquireResponse {
                    outcome: pb::AcquireOutcome::TimedOut as i32,
                    session_id: session.0,
                    ttl_ms,
                    ..Default::default()
                });
            };
            let grants = in_request_order(&specs, grants)?;
            Ok(pb::AcquireResponse {
                outcome: pb::AcquireOutcome::Granted as i32,
                token: grants[0].token,
                session_id: session.0,
                ttl_ms,
                grants,
            })
        })
        .await
    }

    async fn set_value(
        &self,
        request: Request<pb::SetValueRequest>,
    ) -> Result<tonic::Response<pb::SetValueResponse>, Status> {
        self.unary("set_value", request, |caller, request, _| async move {
            let session = session_id(request.session_id)?;
            self.auth.require(&caller, &request.name, Right::Acquire)?;
            self.auth
                .require_session(&caller, session, Some(&request.name))?;
            let command = authorized(
                &caller,
                Command::SetValue {
                    session,
                    request: request_id(request.request)?,
                    name: request.name,
                    token: FencingToken(request.token),
                    value: request.value,
                },
            );
            match self.propose(command).await? {
                Response::ValueSet => Ok(pb::SetValueResponse {}),
                other => Err(unexpected(&other)),
            }
        })
        .await
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseRequest>,
    ) -> Result<tonic::Response<pb::ReleaseResponse>, Status> {
        self.unary("release", request, |caller, request, _| async move {
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
        })
        .await
    }

    async fn verify(
        &self,
        request: Request<pb::VerifyRequest>,
    ) -> Result<tonic::Response<pb::VerifyResponse>, Status> {
        self.unary("verify", request, |caller, request, _| async move {
            self.check_name(&request.name)?;
            let token = FencingToken(request.token);
            self.read(&caller, &request.name, Right::Read, |applied| {
                let current_token = applied
                    .state
                    .lock(&request.name)
                    .and_then(|lock| lock.holders.iter().map(|h| h.token.0).max())
                    .unwrap_or(0);
                pb::VerifyResponse {
                    current: applied.state.is_current_grant(&request.name, token),
                    current_token,
                }
            })
            .await
        })
        .await
    }

    async fn describe(
        &self,
        request: Request<pb::DescribeRequest>,
    ) -> Result<tonic::Response<pb::DescribeResponse>, Status> {
        self.unary("describe", request, |caller, request, _| async move {
            self.check_name(&request.name)?;
            self.read(&caller, &request.name, Right::Read, |applied| {
                pb::DescribeResponse {
                    lock: applied
                        .state
                        .lock(&request.name)
                        .map(|lock| self.lock_info(lock)),
                    revision: applied.last_applied.map(|l| l.index).unwrap_or(0),
                }
            })
            .await
        })
        .await
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<tonic::Response<pb::ListResponse>, Status> {
        self.unary("list", request, |caller, request, _| async move {
            let limit = self.page_limit(request.limit);
            let start_after =
                (!request.start_after.is_empty()).then_some(request.start_after.as_str());
            self.read(&caller, &request.prefix, Right::Read, |applied| {
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
                    locks: locks.into_iter().map(|lock| self.lock_info(lock)).collect(),
                    next_start_after,
                    revision: applied.last_applied.map(|l| l.index).unwrap_or(0),
                }
            })
            .await
        })
        .await
    }

    type WatchStream = BoxStream<pb::WatchEvent>;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        self.serve_watch(request).await
    }

    async fn force_release(
        &self,
        request: Request<pb::ForceReleaseRequest>,
    ) -> Result<tonic::Response<pb::ForceReleaseResponse>, Status> {
        self.unary("force_release", request, |caller, request, _| async move {
            let name = request.name;
            self.auth.require(&caller, &name, Right::Admin)?;
            let command = authorized(&caller, Command::ForceRelease { name: name.clone() });
            let remember = self.node.config().api_limits.max_remembered_requests;
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
        })
        .await
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<tonic::Response<pb::ListSessionsResponse>, Status> {
        self.unary("list_sessions", request, |caller, request, _| async move {
            let limit = self.page_limit(request.limit);
            let start_after = (request.start_after != 0).then_some(SessionId(request.start_after));
            // Sessions hold locks under every prefix: admin on all of them.
            self.read(&caller, "", Right::Admin, |applied| {
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
            })
            .await
        })
        .await
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<tonic::Response<pb::RevokeSessionResponse>, Status> {
        self.unary("revoke_session", request, |caller, request, _| async move {
            // A session may hold locks under any prefix: admin on all of them.
            self.auth.require(&caller, "", Right::Admin)?;
            let session = SessionId(request.session_id);
            let command = authorized(&caller, Command::RevokeSession { session });
            let remember = self.node.config().api_limits.max_remembered_requests;
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
        })
        .await
    }
}
