//! Taking a lock: [`Session::acquire`] and its shorthands, and the withdrawal of an
//! acquire whose future was dropped (see [`Session::acquire`], "Cancel safety").

use crate::error::{Error, Result};
use crate::lock::{Acquisition, LockGuard};
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
        self.inner.acquire(name, options).await
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
