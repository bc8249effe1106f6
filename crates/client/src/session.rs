//! [`Session`]: a lease kept alive in the background, request ids, releases and close.
//! Taking a lock is in `acquire`.

use crate::client::Client;
use crate::error::{Error, Result};
use crate::keepalive::{Command, LeaseState, Lost};
use crate::transport::CallSpec;
use crate::types::{FencingToken, LostReason, SessionId};
use crate::wire::duration_ms;
use fencelock_proto::v1 as pb;
use fencelock_proto::v1::locks_client::LocksClient;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use uuid::Uuid;

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

impl Client {
    /// Open a session (a lease) with `ttl`, kept alive in the background.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTtl`](crate::Error::InvalidTtl) when the server refuses the TTL, [`Error::LimitReached`](crate::Error::LimitReached),
    /// or a transient error once retries ran out.
    pub async fn session(&self, ttl: Duration) -> Result<Session> {
        Session::open(self.clone(), SessionOptions::new(ttl)).await
    }

    /// Open a session with explicit options.
    ///
    /// # Errors
    ///
    /// As [`Client::session`].
    pub async fn session_with(&self, options: SessionOptions) -> Result<Session> {
        Session::open(self.clone(), options).await
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
/// `Session` and every [`LockGuard`](crate::LockGuard) taken from it are dropped, it is closed in the
/// background; `Drop` never blocks. Clones are handles of the same session (a binding
/// that shares it between calls in flight and a later close keeps one each).
#[derive(Clone, Debug)]
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

    /// Stop renewing the lease without closing the session: no keepalive is sent for it
    /// again, so the lease runs out on the client's clock ([`Session::lost`] fires with
    /// [`LostReason::LeaseExpired`]) and the cluster then ends the session and releases
    /// its locks, one TTL after the last keepalive it received.
    ///
    /// Unlike [`Session::close`], the locks stay held until then. To the cluster the
    /// session looks like that of a process that stopped (a long pause, a hang, a cut
    /// network): use it to rehearse that case, e.g. to check that the protected resource
    /// refuses the writes of a holder that wakes up late.
    pub fn stop_keepalive(&self) {
        self.inner.lease.pause_for(Duration::MAX);
    }

    /// Test support: stop sending keepalives for `duration` (the lease then runs out).
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn pause_keepalive_for_test(&self, duration: Duration) {
        self.inner.lease.pause_for(duration);
    }

    /// Test support: the seq the next request will use.
    #[cfg(feature = "test-support")]
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

    pub(crate) fn request_id(&self, seq: u64) -> Option<pb::RequestId> {
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
    pub(crate) async fn wait_background(&self, name: &str) {
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
    pub(crate) fn note(&self, error: Error) -> Error {
        if let Error::SessionNotFound(_) = &error {
            self.lease.mark_lost(LostReason::SessionNotFound);
        }
        error
    }

    pub(crate) fn check_alive(&self) -> Result<()> {
        match self.lease.lost_reason() {
            Some(reason) => Err(Error::SessionLost(reason)),
            None => Ok(()),
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

    /// Replace the holder value of the grant `token` of `name`.
    pub(crate) async fn set_value(
        self: &Arc<Self>,
        name: &str,
        token: FencingToken,
        value: Vec<u8>,
    ) -> Result<()> {
        self.check_alive()?;
        let seq = self.begin();
        let result = self
            .client
            .inner
            .transport
            .call(CallSpec::mutation(self.client.config()), |channel, _| {
                let request = pb::SetValueRequest {
                    session_id: self.id.0,
                    name: name.to_string(),
                    token: token.0,
                    value: value.clone(),
                    request: self.request_id(seq),
                };
                async move { LocksClient::new(channel).set_value(request).await }
            })
            .await;
        self.answered(seq);
        result.map(|_| ()).map_err(|e| self.note(e))
    }

    pub(crate) async fn close(&self) -> Result<()> {
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
