//! [`Client`]: the handle to a cluster.

use crate::config::{ClientBuilder, Config};
use crate::error::Result;
use crate::keepalive::{self, Command};
use crate::transport::{CallSpec, Transport};
use crate::types::{
    AcquireOptions, ClusterStatus, Description, FencingToken, LeaseLock, ListPage, LockInfo,
    Member, SessionId, Verification, Wait,
};
use crate::types::{SessionInfo, SessionPage};
use crate::wire::{attempt_timeout, duration_ms, request_id, wait_to_pb};
use fencelock_proto::v1 as pb;
use fencelock_proto::v1::cluster_client::ClusterClient;
use fencelock_proto::v1::locks_client::LocksClient;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use uuid::Uuid;

/// A connection to a fencelock cluster. Cheap to clone; clones share the channels, the
/// leader hint and the one keepalive stream.
///
/// Every call goes to the node believed to lead, follows "not leader" redirects at once,
/// and retries transient failures (no leader, node down, transport errors) on the other
/// nodes at once, pausing with randomized exponential backoff only after a whole round
/// over the nodes failed, until the retry deadline. Mutations are retried with the same
/// request id, so a retry never acts twice.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

pub(crate) struct ClientInner {
    pub transport: Arc<Transport>,
    pub keepalive: mpsc::UnboundedSender<Command>,
    pub runtime: tokio::runtime::Handle,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.transport.config.endpoints)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connect to the cluster with default settings (see [`ClientBuilder`]).
    ///
    /// # Errors
    ///
    /// As [`ClientBuilder::connect`].
    pub async fn connect<I, S>(endpoints: I) -> Result<Client>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder::new(endpoints).connect().await
    }

    /// A builder for custom settings.
    pub fn builder<I, S>(endpoints: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder::new(endpoints)
    }

    pub(crate) async fn from_config(config: Config) -> Result<Client> {
        let transport = Arc::new(Transport::new(config)?);
        let (keepalive, commands) = mpsc::unbounded_channel();
        let runtime = tokio::runtime::Handle::current();
        runtime.spawn(keepalive::run(transport.clone(), commands));
        let client = Client {
            inner: Arc::new(ClientInner {
                transport,
                keepalive,
                runtime,
            }),
        };
        // Reach some node and learn the leader from it.
        let status = client.status().await?;
        if let Some(leader) = &status.leader_addr {
            client.inner.transport.set_leader(leader);
        }
        Ok(client)
    }

    /// Test support: the answers of the next `count` successful mutation attempts are
    /// dropped as if the connection broke after the server acted, so the client retries
    /// them with the same request id.
    #[cfg(feature = "test-support")]
    #[doc(hidden)]
    pub fn lose_answers_for_test(&self, count: u32) {
        self.inner.transport.lose_answers(count);
    }

    pub(crate) fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.transport.config
    }

    /// Take a lock with the session-less form: the server opens a one-lock session with
    /// `ttl` for a fresh client id and grants the lock to it. The session is *not* kept
    /// alive: the lock lasts until the session's TTL runs out, unless released earlier
    /// with [`Client::close_session`]. Retries reuse the client id, so they act once.
    ///
    /// The server starts that TTL when it takes the request in, so a wait for the lock
    /// uses it up. The client counts it as it counts a session's lease: from the first
    /// send of the request, less the safety margin; [`LeaseLock::remaining`] is what was
    /// left when the answer arrived.
    ///
    /// Returns `None` when the lock is taken and `options.wait` gave up
    /// ([`Wait::NoWait`] or a [`Wait::Timeout`] that passed).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTtl`](crate::Error::InvalidTtl), [`Error::InvalidName`](crate::Error::InvalidName), [`Error::LimitReached`](crate::Error::LimitReached), or a
    /// transient error once retries ran out. [`Error::SessionLost`](crate::Error::SessionLost)
    /// when the grant came after the lease ran out on the client's clock: nothing is left
    /// of it to use, and the client ends the session.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: if the future is dropped after the server granted the lock, the
    /// lock stays held until its TTL runs out.
    pub async fn acquire_with_lease(
        &self,
        name: &str,
        ttl: Duration,
        options: AcquireOptions,
    ) -> Result<Option<LeaseLock>> {
        let client_id = Uuid::new_v4();
        let (wait, wait_timeout) = wait_to_pb(options.wait);
        let spec = options.spec(name);
        let request = pb::AcquireRequest {
            session_id: 0,
            name: spec.name,
            mode: spec.mode,
            wait: wait as i32,
            wait_timeout_ms: wait_timeout,
            request: None,
            value: options.value,
            lease_ttl_ms: duration_ms(ttl),
            client_id: client_id.as_bytes().to_vec(),
            permits: spec.permits,
            weight: spec.weight,
            reentrant: spec.reentrant,
            lock_delay_ms: spec.lock_delay_ms,
            locks: Vec::new(),
        };
        let spec = CallSpec {
            timeout: attempt_timeout(self.config(), options.wait),
            waits: options.wait != Wait::NoWait,
            ..CallSpec::mutation(self.config())
        };
        let clock = &self.config().clock;
        // The lease counts from the first send: an earlier attempt whose answer was lost
        // may have started it then, and a retry returns that same session.
        let first_send = clock.now();
        let answer = self
            .transport()
            .call(spec, |channel, _| {
                let request = request.clone();
                async move { LocksClient::new(channel).acquire(request).await }
            })
            .await?;
        if pb::AcquireOutcome::try_from(answer.outcome) != Ok(pb::AcquireOutcome::Granted) {
            return Ok(None);
        }
        let session_id = SessionId(answer.session_id);
        let ttl = Duration::from_millis(answer.ttl_ms);
        let deadline = first_send + ttl - self.config().safety_margin(ttl);
        let remaining = deadline.saturating_duration_since(clock.now());
        if remaining.is_zero() {
            // Granted after the lease ran out on this clock: the server may end it at
            // any moment, so it is given back rather than handed out.
            if let Err(error) = self.close_session(session_id).await {
                tracing::debug!(session = %session_id, %error, "closing a late grant");
            }
            return Err(crate::Error::SessionLost(crate::LostReason::LeaseExpired));
        }
        Ok(Some(LeaseLock {
            name: name.to_string(),
            token: FencingToken(answer.token),
            session_id,
            ttl,
            client_id,
            remaining,
            deadline: Instant::now() + remaining,
        }))
    }

    /// End a session by id (e.g. one opened by [`Client::acquire_with_lease`]): its locks
    /// are released and its waits dropped.
    ///
    /// # Errors
    ///
    /// [`Error::SessionNotFound`](crate::Error::SessionNotFound) when it had already ended.
    pub async fn close_session(&self, session_id: SessionId) -> Result<()> {
        let request = pb::CloseSessionRequest {
            session_id: session_id.0,
        };
        self.transport()
            .call(CallSpec::mutation(self.config()), |channel, _| async move {
                LocksClient::new(channel).close_session(request).await
            })
            .await?;
        Ok(())
    }

    /// Is `token` a current grant of lock `name`? A linearizable read.
    ///
    /// Advisory only: a holder that verifies and then pauses (GC, swap, a slow network)
    /// can be stale by the time it acts. The safe check is the one the protected
    /// resource makes itself, comparing the token it receives with the newest it has
    /// seen (see the `fencelock-fence` crate).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`](crate::Error::InvalidName), or a transient error once retries ran out.
    pub async fn verify(&self, name: &str, token: FencingToken) -> Result<Verification> {
        let request = pb::VerifyRequest {
            name: name.to_string(),
            token: token.0,
        };
        let answer = self
            .transport()
            .call(CallSpec::read(self.config()), |channel, _| {
                let request = request.clone();
                async move { LocksClient::new(channel).verify(request).await }
            })
            .await?;
        Ok(Verification {
            current: answer.current,
            current_token: (answer.current_token != 0)
                .then_some(FencingToken(answer.current_token)),
        })
    }

    /// A linearizable read of one lock's holders and waiters.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`](crate::Error::InvalidName), or a transient error once retries ran out.
    pub async fn describe(&self, name: &str) -> Result<Description> {
        let request = pb::DescribeRequest {
            name: name.to_string(),
        };
        let answer = self
            .transport()
            .call(CallSpec::read(self.config()), |channel, _| {
                let request = request.clone();
                async move { LocksClient::new(channel).describe(request).await }
            })
            .await?;
        Ok(Description {
            lock: answer.lock.map(LockInfo::from_pb),
            revision: answer.revision,
        })
    }

    /// One page of the locks whose names start with `prefix`, after `start_after`
    /// (exclusive), at most `limit` (0 = the server's default).
    ///
    /// # Errors
    ///
    /// A transient error once retries ran out.
    pub async fn list_page(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: u32,
    ) -> Result<ListPage> {
        let request = pb::ListRequest {
            prefix: prefix.to_string(),
            start_after: start_after.unwrap_or_default().to_string(),
            limit,
        };
        let answer = self
            .transport()
            .call(CallSpec::read(self.config()), |channel, _| {
                let request = request.clone();
                async move { LocksClient::new(channel).list(request).await }
            })
            .await?;
        Ok(ListPage {
            locks: answer.locks.into_iter().map(LockInfo::from_pb).collect(),
            next_start_after: (!answer.next_start_after.is_empty())
                .then_some(answer.next_start_after),
            revision: answer.revision,
        })
    }

    /// Every lock whose name starts with `prefix`, in name order, following pages, but
    /// at most `max` locks. Each page is linearizable; the whole list is not a snapshot.
    ///
    /// # Errors
    ///
    /// A transient error once retries ran out.
    pub async fn list(&self, prefix: &str, max: usize) -> Result<Vec<LockInfo>> {
        let mut locks = Vec::new();
        let mut start_after: Option<String> = None;
        while locks.len() < max {
            let want = u32::try_from(max - locks.len()).unwrap_or(u32::MAX);
            let page = self.list_page(prefix, start_after.as_deref(), want).await?;
            let last = page.locks.last().map(|l| l.name.clone());
            locks.extend(page.locks);
            match page.next_start_after {
                // A page that made no progress would loop forever: stop.
                Some(next) if last.is_some() => start_after = Some(next),
                _ => break,
            }
        }
        locks.truncate(max);
        Ok(locks)
    }

    /// One node's view of the cluster (the first that answers; not necessarily the
    /// leader).
    ///
    /// # Errors
    ///
    /// A transient error once retries ran out.
    pub async fn status(&self) -> Result<ClusterStatus> {
        let spec = CallSpec {
            leader_only: false,
            ..CallSpec::read(self.config())
        };
        let answer = self
            .transport()
            .call(spec, |channel, _| async move {
                ClusterClient::new(channel)
                    .status(pb::StatusRequest {})
                    .await
            })
            .await?;
        Ok(ClusterStatus::from_pb(answer))
    }

    /// Add a node (by id and Raft peer address) as a voter; it is caught up as a learner
    /// first. Returns the new membership.
    ///
    /// # Errors
    ///
    /// [`Error::Membership`](crate::Error::Membership) when the change is refused.
    pub async fn add_member(&self, id: u64, peer_addr: &str) -> Result<Vec<Member>> {
        let request = pb::AddMemberRequest {
            id,
            peer_addr: peer_addr.to_string(),
            learner_only: false,
        };
        let answer = self
            .transport()
            .call(membership_spec(self.config()), |channel, _| {
                let request = request.clone();
                async move { ClusterClient::new(channel).add_member(request).await }
            })
            .await?;
        Ok(answer.members.into_iter().map(Member::from_pb).collect())
    }

    /// Remove a node from the membership. Returns the new membership.
    ///
    /// # Errors
    ///
    /// [`Error::Membership`](crate::Error::Membership) when the change is refused.
    pub async fn remove_member(&self, id: u64) -> Result<Vec<Member>> {
        let request = pb::RemoveMemberRequest { id };
        let answer = self
            .transport()
            .call(membership_spec(self.config()), |channel, _| async move {
                ClusterClient::new(channel).remove_member(request).await
            })
            .await?;
        Ok(answer.members.into_iter().map(Member::from_pb).collect())
    }

    /// Admin: release every holder of lock `name` (recorded as a `Forced` event); the next
    /// waiters are granted. Returns how many grants were released.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`](crate::Error::InvalidName), or a transient error once retries ran out.
    pub async fn force_release(&self, name: &str) -> Result<u64> {
        // One request id for every retry: a retry after a lost answer returns the first
        // answer instead of releasing the next holder too.
        let request = pb::ForceReleaseRequest {
            name: name.to_string(),
            request_id: request_id(),
        };
        let answer = self
            .transport()
            .call(CallSpec::mutation(self.config()), |channel, _| {
                let request = request.clone();
                async move { LocksClient::new(channel).force_release(request).await }
            })
            .await?;
        Ok(answer.released)
    }

    /// Admin: one page of the live sessions in id order, after `start_after`
    /// (exclusive), at most `limit` (0 = the server's default page size). Each session
    /// comes with its client id, TTL, held locks (with tokens) and waits. Linearizable.
    ///
    /// # Errors
    ///
    /// A transient error once retries ran out.
    pub async fn list_sessions_page(
        &self,
        start_after: Option<SessionId>,
        limit: u32,
    ) -> Result<SessionPage> {
        let request = pb::ListSessionsRequest {
            start_after: start_after.map_or(0, |s| s.0),
            limit,
        };
        let answer = self
            .transport()
            .call(CallSpec::read(self.config()), |channel, _| async move {
                LocksClient::new(channel).list_sessions(request).await
            })
            .await?;
        Ok(SessionPage {
            sessions: answer
                .sessions
                .into_iter()
                .map(SessionInfo::from_pb)
                .collect(),
            next_start_after: (answer.next_start_after != 0)
                .then_some(SessionId(answer.next_start_after)),
            revision: answer.revision,
        })
    }

    /// Admin: the live sessions in id order, following pages, but at most `max`. Each
    /// page is linearizable; the whole list is not a snapshot.
    ///
    /// # Errors
    ///
    /// A transient error once retries ran out.
    pub async fn list_sessions(&self, max: usize) -> Result<Vec<SessionInfo>> {
        let mut sessions = Vec::new();
        let mut start_after = None;
        while sessions.len() < max {
            let want = u32::try_from(max - sessions.len()).unwrap_or(u32::MAX);
            let page = self.list_sessions_page(start_after, want).await?;
            let progressed = !page.sessions.is_empty();
            sessions.extend(page.sessions);
            match page.next_start_after {
                Some(next) if progressed => start_after = Some(next),
                _ => break,
            }
        }
        sessions.truncate(max);
        Ok(sessions)
    }

    /// Admin: end session `session` as if its lease had run out: its locks are released
    /// (watchers see [`WatchEvent::Revoked`](crate::WatchEvent::Revoked)), its waits are
    /// dropped and the next waiters are granted. The session's own client finds out at
    /// its next keep-alive. Returns how many grants the session held.
    ///
    /// # Errors
    ///
    /// [`Error::SessionNotFound`](crate::Error::SessionNotFound) when no such session is
    /// live, or a transient error once retries ran out.
    pub async fn revoke_session(&self, session: SessionId) -> Result<u64> {
        let request = pb::RevokeSessionRequest {
            session_id: session.0,
            request_id: request_id(),
        };
        let answer = self
            .transport()
            .call(CallSpec::mutation(self.config()), |channel, _| {
                let request = request.clone();
                async move { LocksClient::new(channel).revoke_session(request).await }
            })
            .await?;
        Ok(answer.released)
    }
}

fn membership_spec(config: &Config) -> CallSpec {
    // Catching a learner up can take a while.
    CallSpec {
        timeout: Some(config.call_timeout.max(Duration::from_secs(30))),
        ..CallSpec::mutation(config)
    }
}

impl ClientBuilder {
    /// Connect: reach any node and learn the leader.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] for no or malformed endpoints;
    /// [`crate::Error::Unavailable`] / [`crate::Error::Timeout`] when no node answered
    /// within the retry deadline.
    pub async fn connect(self) -> Result<Client> {
        Client::from_config(self.config).await
    }
}
