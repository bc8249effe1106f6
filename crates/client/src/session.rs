//! [`Session`]: a lease kept alive in the background, request ids, and lock acquisition.

use crate::client::{Client, attempt_timeout, duration_ms, remaining, wait_to_pb};
use crate::error::{Error, Result};
use crate::keepalive::{Command, LeaseState, Lost};
use crate::lock::{Acquisition, LockGuard};
use crate::transport::CallSpec;
use crate::types::{AcquireOptions, FencingToken, LockMode, LostReason, SessionId, Wait};
use fencelock_proto::v1 as pb;
use fencelock_proto::v1::locks_client::LocksClient;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use uuid::Uuid;

/// How many times an acquire restarts after the server cancelled its wait early.
const EARLY_CANCEL_RESTARTS: u32 = 3;

/// Options of [`Client::session_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionOptions {
    /// The lease's time to live (the server's limits apply; 1 s..=1 h by default).
    pub ttl: Duration,
    /// How often to send a keepalive (default: the client's setting, else `ttl / 3`).
    pub keepalive_interval: Option<Duration>,
    /// The lease safety margin (default: the client's setting, else
    /// `max(ttl / 10, 200 ms)`).
    pub safety_margin: Option<Duration>,
}

impl SessionOptions {
    /// Options with `ttl` and the client's defaults.
    pub fn new(ttl: Duration) -> SessionOptions {
        SessionOptions {
            ttl,
            keepalive_interval: None,
            safety_margin: None,
        }
    }

    /// Set the keepalive interval.
    #[must_use]
    pub fn keepalive_interval(mut self, interval: Duration) -> Self {
        self.keepalive_interval = Some(interval);
        self
    }

    /// Set the safety margin.
    #[must_use]
    pub fn safety_margin(mut self, margin: Duration) -> Self {
        self.safety_margin = Some(margin);
        self
    }
}

/// Request ids of one session (Raft dissertation §6.3): `seq` counts from 1, and
/// `first_unanswered_seq` is the lowest seq whose answer the client has not received
/// (or given up on), so the server may forget every answer below it.
#[derive(Debug)]
pub(crate) struct SeqTracker {
    next: u64,
    unanswered: BTreeSet<u64>,
}

impl Default for SeqTracker {
    fn default() -> Self {
        SeqTracker {
            next: 1,
            unanswered: BTreeSet::new(),
        }
    }
}

impl SeqTracker {
    /// A new request's seq, unanswered until [`SeqTracker::answered`].
    pub fn begin(&mut self) -> u64 {
        let seq = self.next;
        self.next += 1;
        self.unanswered.insert(seq);
        seq
    }

    /// The lowest seq without an answer (the next seq when all are answered).
    pub fn first_unanswered(&self) -> u64 {
        self.unanswered.first().copied().unwrap_or(self.next)
    }

    /// The answer of `seq` arrived, or the client will never send `seq` again.
    pub fn answered(&mut self, seq: u64) {
        self.unanswered.remove(&seq);
    }

    /// The wire request id of `seq`.
    pub fn request_id(&self, seq: u64) -> pb::RequestId {
        assert!(
            self.unanswered.contains(&seq),
            "request {seq} is sent only while unanswered"
        );
        let first = self.first_unanswered();
        assert!(first <= seq);
        pb::RequestId {
            seq,
            first_unanswered_seq: first,
        }
    }
}

/// A session: a lease on the cluster, kept alive by the client's background keepalive
/// task, that holds locks.
///
/// # Losing the session
///
/// The client counts the lease from when it *sent* each keepalive that was answered:
/// `deadline = send instant + ttl - safety margin`. When the deadline passes without a
/// newer answer, or the server answers that the session does not exist, the session is
/// *lost*: [`Session::lost`] fires and [`Session::is_lost`] turns true. Because the
/// server counts the same lease from the keepalive's *arrival* (which is later), the
/// client's deadline passes first: when `lost()` fires, the server has not yet expired
/// the session, and the holder has the safety margin to stop touching the protected
/// resource. (Fencing tokens cover what it cannot know, such as a pause longer than that.)
///
/// A lost session is never silently replaced while it holds locks: it stays lost, its
/// calls fail with [`Error::SessionLost`], and the application opens a new one.
///
/// # Ending
///
/// [`Session::close`] ends it on the server (every lock it holds is released). When the
/// `Session` and every [`LockGuard`] taken from it are dropped, it is closed in the
/// background; `Drop` never blocks.
#[derive(Debug)]
pub struct Session {
    pub(crate) inner: Arc<SessionInner>,
}

pub(crate) struct SessionInner {
    pub client: Client,
    pub id: SessionId,
    pub client_id: Uuid,
    pub ttl: Duration,
    pub lease: Arc<LeaseState>,
    seqs: Mutex<SeqTracker>,
    /// Background releases and withdrawals per lock name; a new acquire of the same
    /// name waits for them (the server would otherwise answer "already held").
    background: Mutex<HashMap<String, usize>>,
    background_done: watch::Sender<u64>,
    closed: AtomicBool,
}

impl std::fmt::Debug for SessionInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) async fn open(client: Client, options: SessionOptions) -> Result<Session> {
        let config = client.config().clone();
        let ttl = options.ttl;
        let margin = options
            .safety_margin
            .map(|m| m.min(ttl / 2))
            .unwrap_or_else(|| config.safety_margin(ttl));
        let interval = options
            .keepalive_interval
            .unwrap_or_else(|| config.keepalive_interval(ttl));
        let client_id = Uuid::new_v4();
        let request = pb::OpenSessionRequest {
            client_id: client_id.as_bytes().to_vec(),
            ttl_ms: duration_ms(ttl),
        };
        // The lease counts from the first send: a lost answer to an earlier attempt may
        // have opened the session then, and a retry returns that same session.
        let clock = config.clock.clone();
        let first_send = clock.now();
        let answer = client
            .transport()
            .call(CallSpec::mutation(&config), |channel, _| {
                let request = request.clone();
                async move { LocksClient::new(channel).open_session(request).await }
            })
            .await?;
        let ttl = Duration::from_millis(answer.ttl_ms);
        let margin = margin.min(ttl / 2);
        let lease = Arc::new(LeaseState::new(
            answer.session_id,
            ttl,
            interval,
            margin,
            first_send,
            clock,
        ));
        let inner = Arc::new(SessionInner {
            client: client.clone(),
            id: SessionId(answer.session_id),
            client_id,
            ttl,
            lease: lease.clone(),
            seqs: Mutex::new(SeqTracker::default()),
            background: Mutex::new(HashMap::new()),
            background_done: watch::channel(0).0,
            closed: AtomicBool::new(false),
        });
        let _ = client.inner.keepalive.send(Command::Register(lease));
        let session = Session { inner };
        if let Some(reason) = session.inner.lease.lost_reason() {
            // Opening took longer than the lease: it may be gone already.
            return Err(Error::SessionLost(reason));
        }
        Ok(session)
    }

    /// The session id.
    pub fn id(&self) -> SessionId {
        self.inner.id
    }

    /// The TTL the server granted.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The client id (a random UUID v4) the session was opened with.
    pub fn client_id(&self) -> Uuid {
        self.inner.client_id
    }

    /// The client this session belongs to.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Whether the session is lost (its lease ran out on the client, the server no
    /// longer knows it, or it was closed).
    pub fn is_lost(&self) -> bool {
        self.inner.lease.lost_reason().is_some()
    }

    /// When the client-side lease runs out unless a newer keepalive is answered, as an
    /// `Instant`: now plus [`Session::lease_remaining`]. The lease itself is counted on a
    /// clock that keeps running while the machine is suspended, which `Instant` does not
    /// (on Linux); [`Session::lost`] and [`Session::is_lost`] decide on that clock.
    pub fn lease_deadline(&self) -> Instant {
        self.inner.lease.deadline_instant()
    }

    /// How long the client-side lease has left unless a newer keepalive is answered
    /// (zero once it ran out).
    pub fn lease_remaining(&self) -> Duration {
        self.inner.lease.remaining()
    }

    /// A future that resolves, with the reason, when the session is lost. Cloneable and
    /// cheap; await it alongside the work the locks protect.
    pub fn lost(&self) -> Lost {
        self.inner.lease.lost()
    }

    /// End the session: every lock it holds is released and every wait dropped, in one
    /// step on the server. Guards taken from it stop being valid. Closing a session that
    /// already ended on the server is not an error.
    ///
    /// # Errors
    ///
    /// A transient error once retries ran out; the session then ends when its lease
    /// expires on the server.
    pub async fn close(self) -> Result<()> {
        self.inner.close().await
    }

    /// Take lock `name` in exclusive mode, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As [`Session::acquire`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Session::acquire`].
    pub async fn lock(&self, name: &str) -> Result<LockGuard> {
        match self.acquire(name, AcquireOptions::default()).await? {
            Acquisition::Granted(guard) => Ok(guard),
            other => Err(Error::Internal(format!(
                "a wait without deadline ended with {other:?}"
            ))),
        }
    }

    /// Take lock `name` in exclusive mode, waiting at most `timeout`. `Ok(None)` means the
    /// wait timed out and the cluster withdrew it (no waiter is left behind).
    ///
    /// # Errors
    ///
    /// As [`Session::acquire`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Session::acquire`].
    pub async fn lock_timeout(&self, name: &str, timeout: Duration) -> Result<Option<LockGuard>> {
        let options = AcquireOptions {
            wait: Wait::Timeout(timeout),
            ..AcquireOptions::default()
        };
        Ok(self.acquire(name, options).await?.granted())
    }

    /// Take lock `name` in exclusive mode if it is free right now.
    ///
    /// # Errors
    ///
    /// As [`Session::acquire`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Session::acquire`].
    pub async fn try_lock(&self, name: &str) -> Result<Option<LockGuard>> {
        let options = AcquireOptions {
            wait: Wait::NoWait,
            ..AcquireOptions::default()
        };
        Ok(self.acquire(name, options).await?.granted())
    }

    /// Take lock `name` with `options` (mode, wait, holder value).
    ///
    /// A waiting acquire survives a change of leader: it is retried on the new leader
    /// with the same request id, which re-attaches to the wait already queued (keeping
    /// its place in the FIFO queue) instead of queueing twice.
    ///
    /// # Errors
    ///
    /// - [`Error::SessionLost`] when the session is lost before or during the wait.
    /// - [`Error::InvalidName`], [`Error::ValueTooLarge`], [`Error::LimitReached`].
    /// - [`Error::AlreadyHeldOrQueued`] when this session already holds the lock (a
    ///   session holds a lock at most once).
    /// - [`Error::SessionNotFound`] when the server no longer knows the session.
    /// - A transient error ([`Error::Unavailable`], [`Error::Timeout`], ...) once retries
    ///   ran out: the outcome is unknown and is settled in the background as on
    ///   cancellation (below).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future (e.g. losing a `select!`, or a
    /// `tokio::time::timeout`) withdraws the acquire and never leaves the lock held.
    /// Precisely: the server withdraws a queued wait when its `Acquire` call is dropped,
    /// but a grant may race the drop. So the drop spawns a background task that re-sends
    /// the *same* request id with a 1 ms wait. The server's request-id memory answers
    /// with what it decided: a grant (the task releases it), a wait still queued (the
    /// server waits 1 ms, then cancels it through the log and answers with the state
    /// machine's decision, grant or cancel), or a cancelled wait (nothing to do). A later
    /// acquire of the same name on this session waits for that task, so it never sees
    /// the old wait as "already queued". A future dropped before its first attempt was
    /// sent needs no cleanup. The task retries until the withdrawal is settled or the
    /// session ends; if it cannot settle it within
    /// [`ClientBuilder::withdraw_deadline`](crate::ClientBuilder::withdraw_deadline)
    /// (or the cluster refuses it), it closes the session ([`Session::lost`] fires with
    /// [`LostReason::Closed`]), so no wait is left queued for a session that would not
    /// know of its grant.
    pub async fn acquire(&self, name: &str, options: AcquireOptions) -> Result<Acquisition> {
        self.inner.acquire(name, options).await
    }

    /// Test support: stop sending keepalives for `duration` (the lease then runs out).
    #[doc(hidden)]
    pub fn pause_keepalive_for_test(&self, duration: Duration) {
        self.inner.lease.pause_for(duration);
    }

    /// Test support: the seq the next request will use.
    #[doc(hidden)]
    pub fn first_unanswered_seq_for_test(&self) -> u64 {
        self.inner.seqs().first_unanswered()
    }
}

/// Marks a background operation on one lock name as running; a new acquire of that name
/// waits until every ticket is dropped.
pub(crate) struct BackgroundTicket {
    session: Arc<SessionInner>,
    name: String,
}

impl Drop for BackgroundTicket {
    fn drop(&mut self) {
        let mut background = self
            .session
            .background
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(count) = background.get_mut(&self.name) {
            *count -= 1;
            if *count == 0 {
                background.remove(&self.name);
            }
        }
        drop(background);
        self.session.background_done.send_modify(|n| *n += 1);
    }
}

/// An acquire whose outcome is not settled yet; dropping it armed withdraws it.
struct PendingAcquire {
    session: Arc<SessionInner>,
    name: String,
    seq: u64,
    mode: LockMode,
    /// An attempt may have been sent.
    sent: Arc<AtomicBool>,
    armed: bool,
}

impl PendingAcquire {
    /// Settled: the seq is answered.
    fn settle(mut self) {
        self.armed = false;
        self.session.answered(self.seq);
    }
}

impl Drop for PendingAcquire {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if !self.sent.load(Ordering::SeqCst) {
            self.session.answered(self.seq);
            return;
        }
        let ticket = self.session.background_ticket(&self.name);
        let session = self.session.clone();
        let name = std::mem::take(&mut self.name);
        let (seq, mode) = (self.seq, self.mode);
        self.session.client.inner.runtime.spawn(async move {
            session.withdraw(&name, seq, mode).await;
            drop(ticket);
        });
    }
}

impl SessionInner {
    fn seqs(&self) -> std::sync::MutexGuard<'_, SeqTracker> {
        self.seqs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn begin(&self) -> u64 {
        self.seqs().begin()
    }

    pub(crate) fn answered(&self, seq: u64) {
        self.seqs().answered(seq);
    }

    fn request_id(&self, seq: u64) -> Option<pb::RequestId> {
        Some(self.seqs().request_id(seq))
    }

    pub(crate) fn background_ticket(self: &Arc<Self>, name: &str) -> BackgroundTicket {
        *self
            .background
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_string())
            .or_default() += 1;
        BackgroundTicket {
            session: self.clone(),
            name: name.to_string(),
        }
    }

    /// Wait until no background operation on `name` runs.
    async fn wait_background(&self, name: &str) {
        let mut done = self.background_done.subscribe();
        loop {
            let busy = self
                .background
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(name);
            if !busy || done.changed().await.is_err() {
                return;
            }
        }
    }

    /// A failure that says the session is gone makes it lost.
    fn note(&self, error: Error) -> Error {
        if let Error::SessionNotFound(_) = &error {
            self.lease.mark_lost(LostReason::SessionNotFound);
        }
        error
    }

    fn check_alive(&self) -> Result<()> {
        match self.lease.lost_reason() {
            Some(reason) => Err(Error::SessionLost(reason)),
            None => Ok(()),
        }
    }

    pub(crate) async fn acquire(
        self: &Arc<Self>,
        name: &str,
        options: AcquireOptions,
    ) -> Result<Acquisition> {
        let started = Instant::now();
        for _ in 0..EARLY_CANCEL_RESTARTS {
            self.wait_background(name).await;
            self.check_alive()?;
            let seq = self.begin();
            let pending = PendingAcquire {
                session: self.clone(),
                name: name.to_string(),
                seq,
                mode: options.mode,
                sent: Arc::new(AtomicBool::new(false)),
                armed: true,
            };
            let lost = self.lease.lost();
            let answer = tokio::select! {
                answer = self.acquire_once(name, &options, seq, started, pending.sent.clone()) => answer,
                reason = lost => return Err(Error::SessionLost(reason)),
            };
            let answer = match answer {
                Ok(answer) => answer,
                // Unknown outcome: `pending` withdraws it on drop.
                Err(error) if error.is_transient() => return Err(error),
                Err(error) => {
                    pending.settle();
                    return Err(self.note(error));
                }
            };
            pending.settle();
            match pb::AcquireOutcome::try_from(answer.outcome) {
                Ok(pb::AcquireOutcome::Granted) => {
                    let guard = LockGuard::new(
                        self.clone(),
                        name.to_string(),
                        FencingToken(answer.token),
                        options.mode,
                    );
                    // A grant that arrives after this lease ran out on the client's clock
                    // is never handed out: the holder could not know when it ends. The
                    // guard's drop gives the lock back.
                    if let Some(reason) = self.lease.lost_reason() {
                        drop(guard);
                        return Err(Error::SessionLost(reason));
                    }
                    return Ok(Acquisition::Granted(guard));
                }
                Ok(pb::AcquireOutcome::WouldBlock) => return Ok(Acquisition::WouldBlock),
                Ok(pb::AcquireOutcome::TimedOut) | Err(_) => {
                    let early = match options.wait {
                        Wait::Forever => true,
                        Wait::Timeout(timeout) => {
                            started.elapsed() + Duration::from_millis(50) < timeout
                        }
                        Wait::NoWait => false,
                    };
                    if !early {
                        return Ok(Acquisition::TimedOut);
                    }
                    // The server withdrew the wait before its time: a retry after a
                    // leader change raced the old call's cancel-on-drop. Queue again.
                    tracing::debug!(lock = name, "wait withdrawn early; queueing again");
                }
            }
        }
        match options.wait {
            Wait::Timeout(_) | Wait::NoWait => Ok(Acquisition::TimedOut),
            Wait::Forever => Err(Error::Unavailable {
                outcome_unknown: false,
                message: format!("the cluster withdrew the wait for {name:?} repeatedly"),
            }),
        }
    }

    async fn acquire_once(
        self: &Arc<Self>,
        name: &str,
        options: &AcquireOptions,
        seq: u64,
        started: Instant,
        sent: Arc<AtomicBool>,
    ) -> Result<pb::AcquireResponse> {
        let config = self.client.config();
        let waits = options.wait != Wait::NoWait;
        let spec = CallSpec {
            timeout: attempt_timeout(config, options.wait),
            waits,
            ..CallSpec::mutation(config)
        };
        let transport = &self.client.inner.transport;
        transport
            .call(spec, |channel, addr| {
                let (wait, wait_timeout_ms) = wait_to_pb(remaining(options.wait, started));
                let request = pb::AcquireRequest {
                    session_id: self.id.0,
                    name: name.to_string(),
                    mode: options.mode.to_pb(),
                    wait: wait as i32,
                    wait_timeout_ms,
                    request: self.request_id(seq),
                    value: options.value.clone(),
                    ..Default::default()
                };
                let leader = transport.leader_watch();
                let sent = sent.clone();
                async move {
                    sent.store(true, Ordering::SeqCst);
                    let mut client = LocksClient::new(channel);
                    let call = client.acquire(request);
                    if !waits {
                        return call.await;
                    }
                    tokio::select! {
                        answer = call => answer,
                        () = moved_away(leader, addr) => {
                            Err(tonic::Status::unavailable("the leader changed while waiting"))
                        }
                    }
                }
            })
            .await
    }

    /// Settle an acquire whose future was dropped (see `Session::acquire`, "Cancel
    /// safety"): re-send the same request id with a 1 ms wait and release a grant.
    ///
    /// Until this settles, the cluster may hold a wait of this session that it grants
    /// later, to a client that no longer knows it asked. So it is retried until it
    /// settles or the session ends; when it cannot settle (the request is refused, or
    /// the withdraw deadline passes) the session is closed instead: its waits and grants
    /// end with it, and `lost()` tells the application.
    async fn withdraw(self: &Arc<Self>, name: &str, seq: u64, mode: LockMode) {
        let deadline = self.client.config().withdraw_deadline;
        let lost = self.lease.lost();
        let settled = tokio::select! {
            settled = tokio::time::timeout(deadline, self.settle_withdrawal(name, seq, mode)) => {
                settled.unwrap_or(false)
            }
            // The session is gone, and with it every wait and grant it had.
            _ = lost => true,
        };
        self.answered(seq);
        if !settled {
            tracing::warn!(
                lock = name,
                session = %self.id,
                "cannot withdraw a cancelled acquire; closing the session"
            );
            if let Err(error) = self.close().await {
                tracing::debug!(session = %self.id, %error, "close after a failed withdrawal");
            }
        }
    }

    /// Retries the withdrawal of `seq` until its outcome is known and nothing of it is
    /// held; false when the cluster refused it.
    async fn settle_withdrawal(self: &Arc<Self>, name: &str, seq: u64, mode: LockMode) -> bool {
        let config = self.client.config().clone();
        let transport = &self.client.inner.transport;
        let mut backoff = config.backoff_initial;
        let token = loop {
            let spec = CallSpec {
                timeout: attempt_timeout(&config, Wait::Timeout(Duration::from_millis(1))),
                ..CallSpec::mutation(&config)
            };
            let answer = transport
                .call(spec, |channel, _| {
                    let request = pb::AcquireRequest {
                        session_id: self.id.0,
                        name: name.to_string(),
                        mode: mode.to_pb(),
                        wait: pb::WaitPolicy::Timeout as i32,
                        wait_timeout_ms: 1,
                        request: self.request_id(seq),
                        ..Default::default()
                    };
                    async move { LocksClient::new(channel).acquire(request).await }
                })
                .await;
            match answer {
                Ok(answer) if answer.outcome == pb::AcquireOutcome::Granted as i32 => {
                    break FencingToken(answer.token);
                }
                Ok(_) => return true,
                Err(error) if error.is_transient() => {
                    tokio::time::sleep(transport.backoff(&mut backoff)).await;
                }
                Err(Error::SessionNotFound(_)) => {
                    // The session is gone: nothing of it is held or queued.
                    self.lease.mark_lost(LostReason::SessionNotFound);
                    return true;
                }
                Err(error) => {
                    tracing::debug!(lock = name, %error, "withdrawal refused");
                    return false;
                }
            }
        };
        tracing::debug!(lock = name, %token, "releasing a grant that raced a cancel");
        self.answered(seq);
        loop {
            match self.release(name, token).await {
                Ok(()) | Err(Error::NotHeld(_)) => return true,
                Err(error) if error.is_transient() => {
                    tokio::time::sleep(transport.backoff(&mut backoff)).await;
                }
                Err(Error::SessionNotFound(_)) => return true,
                Err(error) => {
                    tracing::debug!(lock = name, %error, "release of a raced grant refused");
                    return false;
                }
            }
        }
    }

    /// Release the grant `token` of `name`.
    pub(crate) async fn release(self: &Arc<Self>, name: &str, token: FencingToken) -> Result<()> {
        let seq = self.begin();
        let result = self
            .client
            .inner
            .transport
            .call(CallSpec::mutation(self.client.config()), |channel, _| {
                let request = pb::ReleaseRequest {
                    session_id: self.id.0,
                    name: name.to_string(),
                    token: token.0,
                    request: self.request_id(seq),
                };
                async move { LocksClient::new(channel).release(request).await }
            })
            .await;
        // Answered, or given up on: either way this seq is never sent again.
        self.answered(seq);
        result.map(|_| ()).map_err(|e| self.note(e))
    }

    async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        // Marked before the close is sent: a keepalive already in flight may come back
        // SESSION_NOT_FOUND once the server has closed it, and the reason must still be
        // Closed. Ending the lease early is the safe side.
        self.lease.mark_lost(LostReason::Closed);
        let _ = self
            .client
            .inner
            .keepalive
            .send(Command::Unregister(self.id.0));
        let result = self.client.close_session(self.id).await;
        match result {
            Ok(()) | Err(Error::SessionNotFound(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }
}

impl Drop for SessionInner {
    fn drop(&mut self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.lease.mark_lost(LostReason::Closed);
        let _ = self
            .client
            .inner
            .keepalive
            .send(Command::Unregister(self.id.0));
        let client = self.client.clone();
        let id = self.id;
        self.client.inner.runtime.spawn(async move {
            if let Err(error) = client.close_session(id).await {
                tracing::debug!(session = %id, %error, "background close failed");
            }
        });
    }
}

/// Resolves when the leader hint names a node other than `addr`.
async fn moved_away(mut leader: watch::Receiver<Option<String>>, addr: String) {
    loop {
        if let Some(hint) = leader.borrow_and_update().as_deref()
            && hint != addr
        {
            return;
        }
        if leader.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_unanswered_is_the_lowest_outstanding_seq() {
        let mut seqs = SeqTracker::default();
        assert_eq!(seqs.first_unanswered(), 1);
        let a = seqs.begin();
        let b = seqs.begin();
        let c = seqs.begin();
        assert_eq!((a, b, c), (1, 2, 3));
        assert_eq!(seqs.request_id(c).first_unanswered_seq, 1);
        seqs.answered(b);
        assert_eq!(seqs.first_unanswered(), 1);
        seqs.answered(a);
        assert_eq!(seqs.request_id(c).first_unanswered_seq, 3);
        seqs.answered(c);
        assert_eq!(seqs.first_unanswered(), 4);
        // A retry resends the same seq with the acknowledgement as it stands now.
        let d = seqs.begin();
        let first = seqs.request_id(d);
        let retry = seqs.request_id(d);
        assert_eq!(first, retry);
        assert_eq!(first.seq, 4);
    }

    #[test]
    #[should_panic(expected = "only while unanswered")]
    fn an_answered_seq_is_never_sent_again() {
        let mut seqs = SeqTracker::default();
        let seq = seqs.begin();
        seqs.answered(seq);
        let _ = seqs.request_id(seq);
    }
}
