//! Lease accounting and the one keepalive stream per client.
//!
//! Every session of a [`crate::Client`] is kept alive over a single bidirectional
//! `KeepAlive` stream to the leader, driven by one background task. The task sends each
//! session's keepalive every interval, matches answers to the keepalives they answer
//! (the server answers a stream's keepalives in order), and moves each session's lease
//! deadline to `send instant + ttl - safety margin` of the newest answered keepalive.
//! Every instant here is read from the client's [`LeaseClock`], which keeps counting
//! while the machine is suspended (`crate::clock`).
//!
//! Why counting from the *send* is safe: the leader renews a lease for `ttl` from when the
//! keepalive *arrived*, which is after it was sent, and only after confirming with a
//! quorum (a round that started after the arrival) that it still leads. A leader elected
//! later gives every session a full TTL from its takeover, which is later still. So the
//! server's deadline is never earlier than the client's `send + ttl`, and the client's
//! lease, shorter by the safety margin, ends first, even when the two clocks run at
//! slightly different rates.

use crate::LostReason;
use crate::clock::{LeaseClock, LeaseInstant};
use crate::transport::Transport;
use fencelock_proto::v1 as pb;
use fencelock_proto::v1::locks_client::LocksClient;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// Keepalives of one session that may be unanswered at once on a stream.
const MAX_IN_FLIGHT: usize = 4;
/// Requests buffered towards the stream.
const STREAM_QUEUE: usize = 1_024;

/// Where a session's lease stands.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LeaseStatus {
    /// The client-side lease ends here unless a newer keepalive is answered.
    pub deadline: LeaseInstant,
    /// Set once the session is lost; never cleared.
    pub lost: Option<LostReason>,
}

/// A session's lease, shared by the session and the keepalive task.
#[derive(Debug)]
pub(crate) struct LeaseState {
    pub session_id: u64,
    pub ttl: Duration,
    pub interval: Duration,
    pub margin: Duration,
    status: watch::Sender<LeaseStatus>,
    paused_until: Mutex<Option<LeaseInstant>>,
    clock: Arc<dyn LeaseClock>,
}

impl LeaseState {
    /// A lease whose first grant was requested at `sent` (the `OpenSession` send).
    pub fn new(
        session_id: u64,
        ttl: Duration,
        interval: Duration,
        margin: Duration,
        sent: LeaseInstant,
        clock: Arc<dyn LeaseClock>,
    ) -> LeaseState {
        assert!(margin < ttl, "the safety margin must be below the TTL");
        LeaseState {
            session_id,
            ttl,
            interval,
            margin,
            status: watch::channel(LeaseStatus {
                deadline: sent + ttl - margin,
                lost: None,
            })
            .0,
            paused_until: Mutex::new(None),
            clock,
        }
    }

    /// A keepalive sent at `sent` was answered OK.
    pub fn renewed(&self, sent: LeaseInstant) {
        let now = self.clock.now();
        let new = sent + self.ttl - self.margin;
        self.status.send_if_modified(|status| {
            if status.lost.is_some() {
                return false;
            }
            if now >= status.deadline {
                // Too late: the lease already ran out on this clock and `lost()` may have
                // fired. A lost session stays lost.
                status.lost = Some(LostReason::LeaseExpired);
                return true;
            }
            if new > status.deadline {
                status.deadline = new;
                true
            } else {
                false
            }
        });
    }

    /// Mark the session lost (first reason wins).
    pub fn mark_lost(&self, reason: LostReason) {
        self.status.send_if_modified(|status| {
            if status.lost.is_none() {
                status.lost = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// Why the session is lost, if it is, checked against the clock too.
    pub fn lost_reason(&self) -> Option<LostReason> {
        let status = *self.status.borrow();
        status
            .lost
            .or_else(|| (self.clock.now() >= status.deadline).then_some(LostReason::LeaseExpired))
    }

    /// The current deadline.
    pub fn deadline(&self) -> LeaseInstant {
        self.status.borrow().deadline
    }

    /// The time left until the deadline (zero once it passed).
    pub fn remaining(&self) -> Duration {
        self.deadline().saturating_duration_since(self.clock.now())
    }

    /// The deadline as an `Instant`: now plus what is left on the lease clock. An
    /// estimate for display and for comparing with other `Instant`s; a suspend makes it
    /// late (`Instant` stops counting then), which is why the lease itself is not kept on it.
    pub fn deadline_instant(&self) -> Instant {
        let now = self.clock.now();
        let deadline = self.deadline();
        let instant = Instant::now();
        if deadline >= now {
            instant + deadline.saturating_duration_since(now)
        } else {
            let passed = now.saturating_duration_since(deadline);
            instant.checked_sub(passed).unwrap_or(instant)
        }
    }

    /// A future that resolves when the lease is lost.
    pub fn lost(&self) -> Lost {
        Lost(
            wait_lost(self.status.subscribe(), self.clock.clone())
                .boxed()
                .shared(),
        )
    }

    /// Stop sending keepalives for `duration` from now (`Duration::MAX`: for good).
    pub fn pause_for(&self, duration: Duration) {
        let until = self.clock.now() + duration;
        *self.paused_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
    }

    fn paused(&self, now: LeaseInstant) -> bool {
        self.paused_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| now < until)
    }
}

async fn wait_lost(
    mut status: watch::Receiver<LeaseStatus>,
    clock: Arc<dyn LeaseClock>,
) -> LostReason {
    loop {
        let current = *status.borrow_and_update();
        if let Some(reason) = current.lost {
            return reason;
        }
        if clock.now() >= current.deadline {
            return LostReason::LeaseExpired;
        }
        tokio::select! {
            () = clock.sleep_until(current.deadline) => {}
            changed = status.changed() => {
                if changed.is_err() {
                    return status.borrow().lost.unwrap_or(LostReason::Closed);
                }
            }
        }
    }
}

/// Resolves when a session is lost: its client-side lease ran out, the server said it no
/// longer exists, or it was closed. Cloneable; every clone resolves with the same reason.
///
/// It fires on the client's own lease clock at the lease deadline, independently of the
/// keepalive task, so a stalled network or server cannot delay it; after a suspend that
/// passed the deadline it fires on waking (within a quarter of a second), before any
/// keepalive answer can renew the lease.
#[derive(Clone)]
#[must_use = "a future does nothing unless awaited"]
pub struct Lost(Shared<BoxFuture<'static, LostReason>>);

impl Future for Lost {
    type Output = LostReason;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<LostReason> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl std::fmt::Debug for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lost").finish_non_exhaustive()
    }
}

/// What sessions tell the keepalive task.
pub(crate) enum Command {
    /// Keep this session alive.
    Register(Arc<LeaseState>),
    /// Stop (the session was closed).
    Unregister(u64),
}

struct Entry {
    lease: Arc<LeaseState>,
    next_send: LeaseInstant,
    /// Send instants of keepalives not answered yet, oldest first.
    in_flight: VecDeque<LeaseInstant>,
}

struct Conn {
    addr: String,
    requests: mpsc::Sender<pb::KeepAliveRequest>,
    answers: tonic::Streaming<pb::KeepAliveResponse>,
}

type Connecting = Pin<Box<dyn Future<Output = (String, Result<Conn, Status>)> + Send>>;

enum Wake {
    Command(Option<Command>),
    Answer(Result<Option<pb::KeepAliveResponse>, Status>),
    Connected(String, Box<Result<Conn, Status>>),
    LeaderChanged,
    Timer,
}

async fn connect(transport: Arc<Transport>, addr: String) -> (String, Result<Conn, Status>) {
    let channel = match transport.channel(&addr) {
        Ok(channel) => channel,
        Err(error) => return (addr, Err(Status::invalid_argument(error.to_string()))),
    };
    let (requests, outbound) = mpsc::channel(STREAM_QUEUE);
    let mut client = LocksClient::new(channel);
    let limit = transport.config.connect_timeout + transport.config.call_timeout;
    let opened =
        tokio::time::timeout(limit, client.keep_alive(ReceiverStream::new(outbound))).await;
    let result = match opened {
        Ok(Ok(response)) => Ok(Conn {
            addr: addr.clone(),
            requests,
            answers: response.into_inner(),
        }),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(Status::deadline_exceeded("keepalive stream did not open")),
    };
    (addr, result)
}

/// The keepalive task of one client; ends when the client is dropped.
pub(crate) async fn run(transport: Arc<Transport>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut sessions: HashMap<u64, Entry> = HashMap::new();
    let mut conn: Option<Conn> = None;
    let mut connecting: Option<Connecting> = None;
    let clock = transport.config.clock.clone();
    let mut reconnect_at = clock.now();
    let mut backoff = transport.config.backoff_initial;
    let mut leader = transport.leader_watch();
    loop {
        let now = clock.now();
        // Lost sessions leave; a passed deadline makes a session lost.
        sessions.retain(|_, entry| match entry.lease.lost_reason() {
            Some(reason) => {
                entry.lease.mark_lost(reason);
                false
            }
            None => true,
        });
        if sessions.is_empty() {
            // Nothing to keep alive: hang up so the server frees the stream.
            conn = None;
            connecting = None;
        } else if conn.is_none() && connecting.is_none() && now >= reconnect_at {
            let addr = transport.pick(true);
            connecting = Some(Box::pin(connect(transport.clone(), addr)));
        }

        // Send what is due; notice a stream that stopped answering.
        let mut broken = false;
        if let Some(stream) = &conn {
            for entry in sessions.values_mut() {
                if entry.next_send <= now {
                    entry.next_send = now + entry.lease.interval;
                    if entry.lease.paused(now) || entry.in_flight.len() >= MAX_IN_FLIGHT {
                        continue;
                    }
                    let request = pb::KeepAliveRequest {
                        session_id: entry.lease.session_id,
                    };
                    if stream.requests.try_send(request).is_err() {
                        broken = true;
                        break;
                    }
                    entry.in_flight.push_back(now);
                }
                if let Some(oldest) = entry.in_flight.front()
                    && now >= *oldest + stuck_after(&entry.lease)
                {
                    tracing::debug!(node = %stream.addr, "keepalive stream stopped answering");
                    broken = true;
                }
            }
        }
        if broken {
            if let Some(stream) = conn.take() {
                transport.demote(&stream.addr);
            }
            drop_in_flight(&mut sessions);
            reconnect_at = now + transport.backoff(&mut backoff);
            continue;
        }

        let mut wake = now + Duration::from_secs(3_600);
        for entry in sessions.values() {
            wake = wake.min(entry.lease.deadline());
            if conn.is_some() {
                wake = wake.min(entry.next_send);
                if let Some(oldest) = entry.in_flight.front() {
                    wake = wake.min(*oldest + stuck_after(&entry.lease));
                }
            }
        }
        if conn.is_none() && connecting.is_none() && !sessions.is_empty() {
            wake = wake.min(reconnect_at);
        }

        // With no session there is nothing to time (and the real clock's naps would
        // wake this task for nothing).
        let timer = if sessions.is_empty() {
            std::future::pending().boxed()
        } else {
            clock.sleep_until(wake)
        };
        let event = tokio::select! {
            command = commands.recv() => Wake::Command(command),
            answer = next_answer(&mut conn) => Wake::Answer(answer),
            (addr, result) = poll_connecting(&mut connecting) => Wake::Connected(addr, Box::new(result)),
            changed = leader.changed() => {
                if changed.is_err() { return; }
                Wake::LeaderChanged
            }
            () = timer => Wake::Timer,
        };
        let now = clock.now();
        match event {
            Wake::Command(None) => return,
            Wake::Command(Some(Command::Register(lease))) => {
                sessions.insert(
                    lease.session_id,
                    Entry {
                        next_send: now + lease.interval,
                        lease,
                        in_flight: VecDeque::new(),
                    },
                );
            }
            Wake::Command(Some(Command::Unregister(session))) => {
                sessions.remove(&session);
            }
            Wake::Answer(Ok(Some(answer))) => {
                let addr = conn.as_ref().map(|c| c.addr.clone()).unwrap_or_default();
                let sent = sessions
                    .get_mut(&answer.session_id)
                    .and_then(|entry| entry.in_flight.pop_front());
                match pb::KeepAliveStatus::try_from(answer.status) {
                    Ok(pb::KeepAliveStatus::Ok) => {
                        backoff = transport.config.backoff_initial;
                        transport.set_leader(&addr);
                        if let (Some(entry), Some(sent)) = (sessions.get(&answer.session_id), sent)
                        {
                            entry.lease.renewed(sent);
                        }
                    }
                    Ok(pb::KeepAliveStatus::SessionNotFound) => {
                        if let Some(entry) = sessions.remove(&answer.session_id) {
                            tracing::warn!(session = answer.session_id, "session not found");
                            entry.lease.mark_lost(LostReason::SessionNotFound);
                        }
                    }
                    Ok(pb::KeepAliveStatus::NotLeader) | Err(_) => {
                        conn = None;
                        drop_in_flight(&mut sessions);
                        if answer.leader_addr.is_empty() {
                            transport.demote(&addr);
                            reconnect_at = now + transport.backoff(&mut backoff);
                        } else {
                            transport.set_leader(&answer.leader_addr);
                            reconnect_at = now;
                        }
                    }
                }
            }
            Wake::Answer(end) => {
                if let Err(status) = &end {
                    tracing::debug!(%status, "keepalive stream broke");
                }
                if let Some(stream) = conn.take() {
                    transport.demote(&stream.addr);
                }
                drop_in_flight(&mut sessions);
                reconnect_at = now + transport.backoff(&mut backoff);
            }
            Wake::Connected(addr, result) => {
                connecting = None;
                match *result {
                    Ok(stream) => {
                        tracing::debug!(node = %addr, "keepalive stream open");
                        conn = Some(stream);
                        // Renew everything at once on a new stream (after a failover
                        // every lease wants a fresh answer).
                        for entry in sessions.values_mut() {
                            entry.next_send = now;
                        }
                    }
                    Err(status) => {
                        tracing::debug!(node = %addr, %status, "keepalive stream failed to open");
                        transport.demote(&addr);
                        reconnect_at = now + transport.backoff(&mut backoff);
                    }
                }
            }
            Wake::LeaderChanged => {
                let hint = leader.borrow_and_update().clone();
                if let (Some(hint), Some(stream)) = (hint, &conn)
                    && hint != stream.addr
                {
                    // Another call learned of a new leader: move the stream there.
                    conn = None;
                    drop_in_flight(&mut sessions);
                    reconnect_at = now;
                }
            }
            Wake::Timer => {}
        }
    }
}

/// An unanswered keepalive older than this means the stream is stuck.
fn stuck_after(lease: &LeaseState) -> Duration {
    (lease.interval * 2).max(Duration::from_millis(500))
}

fn drop_in_flight(sessions: &mut HashMap<u64, Entry>) {
    for entry in sessions.values_mut() {
        entry.in_flight.clear();
    }
}

async fn next_answer(conn: &mut Option<Conn>) -> Result<Option<pb::KeepAliveResponse>, Status> {
    match conn {
        Some(stream) => stream.answers.message().await,
        None => std::future::pending().await,
    }
}

async fn poll_connecting(connecting: &mut Option<Connecting>) -> (String, Result<Conn, Status>) {
    match connecting {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const TTL: Duration = Duration::from_secs(10);
    const MARGIN: Duration = Duration::from_secs(1);

    fn lease(clock: &Arc<ManualClock>) -> Arc<LeaseState> {
        let interval = Duration::from_secs(3);
        Arc::new(LeaseState::new(
            1,
            TTL,
            interval,
            MARGIN,
            clock.now(),
            clock.clone(),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewal_counts_from_the_send_on_the_lease_clock() {
        let clock = ManualClock::new(Duration::from_secs(1_000));
        let lease = lease(&clock);
        let opened = clock.now();
        assert_eq!(lease.deadline(), opened + TTL - MARGIN);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let sent = clock.now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        lease.renewed(sent);
        assert_eq!(lease.deadline(), sent + TTL - MARGIN);
        assert_eq!(lease.remaining(), TTL - MARGIN - Duration::from_secs(1));
        assert_eq!(lease.lost_reason(), None);
    }

    /// The machine sleeps past the TTL: tokio's timers (like `CLOCK_MONOTONIC`) stand
    /// still, the lease clock jumps. `lost()` fires on waking, and the late answer to a
    /// keepalive sent before the suspend does not bring the lease back.
    #[tokio::test(start_paused = true)]
    async fn a_suspend_past_the_ttl_loses_the_lease_on_waking_before_any_renewal() {
        let clock = ManualClock::new(Duration::from_secs(1_000));
        let lease = lease(&clock);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let sent = clock.now();
        let lost = tokio::spawn(lease.lost());
        tokio::task::yield_now().await;
        assert!(!lost.is_finished());

        clock.advance(Duration::from_secs(60));
        // Paused tokio time moves only when every task is idle: a lease counted on
        // tokio's clock would still have 6 s left and hit the 1 ms timeout first.
        let reason = tokio::time::timeout(Duration::from_millis(1), lost)
            .await
            .expect("lost() fires on waking")
            .unwrap();
        assert_eq!(reason, LostReason::LeaseExpired);
        assert_eq!(lease.lost_reason(), Some(LostReason::LeaseExpired));

        lease.renewed(sent);
        assert_eq!(lease.lost_reason(), Some(LostReason::LeaseExpired));
        assert!(lease.remaining().is_zero());
        // Even a renewal counted from after the suspend: a lost session stays lost.
        lease.renewed(clock.now());
        assert_eq!(lease.lost_reason(), Some(LostReason::LeaseExpired));
    }
}
