//! Taking a lock: [`Session::acquire`] and its shorthands, and the withdrawal of an
//! acquire whose future was dropped (see [`Session::acquire`], "Cancel safety").

use crate::error::{Error, Result};
use crate::lock::{Acquisition, LockGuard, MultiAcquisition};
use crate::session::{Session, SessionInner};
use crate::transport::CallSpec;
use crate::types::{AcquireOptions, FencingToken, LockMode, LostReason, Wait};
use crate::wire::{attempt_timeout, remaining, wait_to_pb};
use fencelock_proto::v1 as pb;
use fencelock_proto::v1::locks_client::LocksClient;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How many times an acquire restarts after the server cancelled its wait early.
const EARLY_CANCEL_RESTARTS: u32 = 3;

impl Session {
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
        self.inner.acquire_one(name, options).await
    }

    /// Take one permit of the counting semaphore `name` of `permits` permits, waiting as
    /// long as it takes (see [`AcquireOptions::permits`]; for a weight, a deadline or a
    /// value use [`Session::acquire`] with [`AcquireOptions::semaphore`]).
    ///
    /// # Errors
    ///
    /// As [`Session::acquire`]; [`Error::PermitsMismatch`] when the name is in use with
    /// another limit.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Session::acquire`].
    pub async fn acquire_semaphore(&self, name: &str, permits: u32) -> Result<LockGuard> {
        match self
            .acquire(name, AcquireOptions::semaphore(permits))
            .await?
        {
            Acquisition::Granted(guard) => Ok(guard),
            other => Err(Error::Internal(format!(
                "a wait without deadline ended with {other:?}"
            ))),
        }
    }

    /// Take every lock of `names` at once, all or nothing, waiting as long as it takes:
    /// one guard per name, in the order given, each with its own token.
    ///
    /// # Errors
    ///
    /// As [`Session::acquire_all`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Session::acquire`].
    pub async fn lock_all(&self, names: &[&str]) -> Result<Vec<LockGuard>> {
        match self.acquire_all(names, AcquireOptions::default()).await? {
            MultiAcquisition::Granted(guards) => Ok(guards),
            other => Err(Error::Internal(format!(
                "a wait without deadline ended with {other:?}"
            ))),
        }
    }

    /// An atomic multi-lock: take every lock of `names`, each with `options` (mode,
    /// permits, reentrancy, lock-delay), all or nothing. The cluster grants them in one
    /// log entry, each with its own token, and while the request waits it holds none of
    /// them, so multi-locks never deadlock whatever order their names are in. One guard
    /// per name, in the order given.
    ///
    /// # Errors
    ///
    /// As [`Session::acquire`]; [`Error::InvalidArgument`] for an empty list or a name
    /// given twice.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Session::acquire`]: dropping the future withdraws the whole
    /// request and releases every lock of a grant that raced the drop.
    pub async fn acquire_all(
        &self,
        names: &[&str],
        options: AcquireOptions,
    ) -> Result<MultiAcquisition> {
        if names.is_empty() {
            return Err(Error::InvalidArgument("a multi-lock needs a name".into()));
        }
        let ask = Ask::many(names, &options);
        Ok(match self.inner.acquire(ask, options.wait).await? {
            Outcome::Granted(guards) => MultiAcquisition::Granted(guards),
            Outcome::WouldBlock => MultiAcquisition::WouldBlock,
            Outcome::TimedOut => MultiAcquisition::TimedOut,
        })
    }
}

/// What one acquire asks for: one lock, or several at once (an atomic multi-lock).
#[derive(Clone, Debug)]
pub(crate) struct Ask {
    /// The locks, in the order asked.
    specs: Vec<pb::LockSpec>,
    /// Sent as `AcquireRequest.locks` (several names) rather than the single-name fields.
    multi: bool,
    value: Vec<u8>,
}

impl Ask {
    pub(crate) fn one(name: &str, options: &AcquireOptions) -> Ask {
        Ask {
            specs: vec![options.spec(name)],
            multi: false,
            value: options.value.clone(),
        }
    }

    fn many(names: &[&str], options: &AcquireOptions) -> Ask {
        Ask {
            specs: names.iter().map(|name| options.spec(name)).collect(),
            multi: true,
            value: options.value.clone(),
        }
    }

    /// A text naming the locks, for logs and messages.
    fn label(&self) -> String {
        let names: Vec<&str> = self.specs.iter().map(|spec| spec.name.as_str()).collect();
        names.join(",")
    }

    fn request(&self, session: &SessionInner, seq: u64, wait: Wait) -> pb::AcquireRequest {
        let (wait, wait_timeout_ms) = wait_to_pb(wait);
        let mut request = pb::AcquireRequest {
            session_id: session.id.0,
            wait: wait as i32,
            wait_timeout_ms,
            request: session.request_id(seq),
            value: self.value.clone(),
            ..Default::default()
        };
        match (&self.specs[..], self.multi) {
            ([spec], false) => {
                request.name = spec.name.clone();
                request.mode = spec.mode;
                request.permits = spec.permits;
                request.weight = spec.weight;
                request.reentrant = spec.reentrant;
                request.lock_delay_ms = spec.lock_delay_ms;
            }
            _ => request.locks = self.specs.clone(),
        }
        request
    }

    /// The grants of a GRANTED answer: (name, token, hold count), in the order asked.
    fn grants(&self, answer: &pb::AcquireResponse) -> Vec<(String, FencingToken, u32)> {
        if answer.grants.is_empty() {
            // A server that predates multi-locks answers a single name with `token`.
            return self
                .specs
                .iter()
                .map(|spec| (spec.name.clone(), FencingToken(answer.token), 1))
                .collect();
        }
        answer
            .grants
            .iter()
            .map(|grant| {
                (
                    grant.name.clone(),
                    FencingToken(grant.token),
                    grant.hold_count.max(1),
                )
            })
            .collect()
    }
}

/// How an [`Ask`] ended.
enum Outcome {
    Granted(Vec<LockGuard>),
    WouldBlock,
    TimedOut,
}

/// An acquire whose outcome is not settled yet; dropping it armed withdraws it.
struct PendingAcquire {
    session: Arc<SessionInner>,
    ask: Ask,
    seq: u64,
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
        let tickets: Vec<_> = self
            .ask
            .specs
            .iter()
            .map(|spec| self.session.background_ticket(&spec.name))
            .collect();
        let session = self.session.clone();
        let ask = self.ask.clone();
        let seq = self.seq;
        self.session.client.inner.runtime.spawn(async move {
            session.withdraw(&ask, seq).await;
            drop(tickets);
        });
    }
}

impl SessionInner {
    /// [`Session::acquire`].
    pub(crate) async fn acquire_one(
        self: &Arc<Self>,
        name: &str,
        options: AcquireOptions,
    ) -> Result<Acquisition> {
        let ask = Ask::one(name, &options);
        Ok(match self.acquire(ask, options.wait).await? {
            Outcome::Granted(mut guards) => match guards.pop() {
                Some(guard) if guards.is_empty() => Acquisition::Granted(guard),
                _ => {
                    return Err(Error::Internal(
                        "a single-name acquire was granted other than one lock".into(),
                    ));
                }
            },
            Outcome::WouldBlock => Acquisition::WouldBlock,
            Outcome::TimedOut => Acquisition::TimedOut,
        })
    }

    async fn acquire(self: &Arc<Self>, ask: Ask, wait: Wait) -> Result<Outcome> {
        let started = Instant::now();
        let label = ask.label();
        for _ in 0..EARLY_CANCEL_RESTARTS {
            for spec in &ask.specs {
                self.wait_background(&spec.name).await;
            }
            self.check_alive()?;
            let seq = self.begin();
            let pending = PendingAcquire {
                session: self.clone(),
                ask: ask.clone(),
                seq,
                sent: Arc::new(AtomicBool::new(false)),
                armed: true,
            };
            let lost = self.lease.lost();
            let answer = tokio::select! {
                answer = self.acquire_once(&ask, wait, seq, started, pending.sent.clone()) => answer,
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
                    let guards: Vec<LockGuard> = ask
                        .grants(&answer)
                        .into_iter()
                        .zip(&ask.specs)
                        .map(|((name, token, hold_count), spec)| {
                            LockGuard::new(
                                self.clone(),
                                name,
                                token,
                                LockMode::from_pb(spec.mode),
                                hold_count,
                            )
                        })
                        .collect();
                    // A grant that arrives after this lease ran out on the client's clock
                    // is never handed out: the holder could not know when it ends. The
                    // guards' drop gives the locks back.
                    if let Some(reason) = self.lease.lost_reason() {
                        drop(guards);
                        return Err(Error::SessionLost(reason));
                    }
                    return Ok(Outcome::Granted(guards));
                }
                Ok(pb::AcquireOutcome::WouldBlock) => return Ok(Outcome::WouldBlock),
                Ok(pb::AcquireOutcome::TimedOut) | Err(_) => {
                    let early = match wait {
                        Wait::Forever => true,
                        Wait::Timeout(timeout) => {
                            started.elapsed() + Duration::from_millis(50) < timeout
                        }
                        Wait::NoWait => false,
                    };
                    if !early {
                        return Ok(Outcome::TimedOut);
                    }
                    // The server withdrew the wait before its time: a retry after a
                    // leader change raced the old call's cancel-on-drop. Queue again.
                    tracing::debug!(lock = label, "wait withdrawn early; queueing again");
                }
            }
        }
        match wait {
            Wait::Timeout(_) | Wait::NoWait => Ok(Outcome::TimedOut),
            Wait::Forever => Err(Error::Unavailable {
                outcome_unknown: false,
                message: format!("the cluster withdrew the wait for {label:?} repeatedly"),
            }),
        }
    }

    async fn acquire_once(
        self: &Arc<Self>,
        ask: &Ask,
        wait: Wait,
        seq: u64,
        started: Instant,
        sent: Arc<AtomicBool>,
    ) -> Result<pb::AcquireResponse> {
        let config = self.client.config();
        let waits = wait != Wait::NoWait;
        let spec = CallSpec {
            timeout: attempt_timeout(config, wait),
            waits,
            ..CallSpec::mutation(config)
        };
        let transport = &self.client.inner.transport;
        transport
            .call(spec, |channel, addr| {
                let request = ask.request(self, seq, remaining(wait, started));
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
    async fn withdraw(self: &Arc<Self>, ask: &Ask, seq: u64) {
        let deadline = self.client.config().withdraw_deadline;
        let lost = self.lease.lost();
        let settled = tokio::select! {
            settled = tokio::time::timeout(deadline, self.settle_withdrawal(ask, seq)) => {
                settled.unwrap_or(false)
            }
            // The session is gone, and with it every wait and grant it had.
            _ = lost => true,
        };
        self.answered(seq);
        if !settled {
            tracing::warn!(
                lock = ask.label(),
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
    async fn settle_withdrawal(self: &Arc<Self>, ask: &Ask, seq: u64) -> bool {
        let config = self.client.config().clone();
        let transport = &self.client.inner.transport;
        let mut backoff = config.backoff_initial;
        let label = ask.label();
        let grants = loop {
            let spec = CallSpec {
                timeout: attempt_timeout(&config, Wait::Timeout(Duration::from_millis(1))),
                ..CallSpec::mutation(&config)
            };
            let answer = transport
                .call(spec, |channel, _| {
                    let request = ask.request(self, seq, Wait::Timeout(Duration::from_millis(1)));
                    async move { LocksClient::new(channel).acquire(request).await }
                })
                .await;
            match answer {
                Ok(answer) if answer.outcome == pb::AcquireOutcome::Granted as i32 => {
                    break ask.grants(&answer);
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
                    tracing::debug!(lock = label, %error, "withdrawal refused");
                    return false;
                }
            }
        };
        self.answered(seq);
        for (name, token, _) in grants {
            tracing::debug!(lock = name, %token, "releasing a grant that raced a cancel");
            if !self.release_raced(&name, token, &mut backoff).await {
                return false;
            }
        }
        true
    }

    /// Release a grant that raced a withdrawal, retrying transient failures; false when
    /// the cluster refused it.
    async fn release_raced(
        self: &Arc<Self>,
        name: &str,
        token: FencingToken,
        backoff: &mut Duration,
    ) -> bool {
        let transport = &self.client.inner.transport;
        loop {
            match self.release(name, token).await {
                Ok(()) | Err(Error::NotHeld(_)) => return true,
                Err(error) if error.is_transient() => {
                    tokio::time::sleep(transport.backoff(backoff)).await;
                }
                Err(Error::SessionNotFound(_)) => return true,
                Err(error) => {
                    tracing::debug!(lock = name, %error, "release of a raced grant refused");
                    return false;
                }
            }
        }
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
