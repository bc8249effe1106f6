//! Watching locks: typed events over a stream that survives node failures.
//!
//! Every lock event has a place in the log, a [`WatchPosition`]: the revision (the log
//! index of the entry that made the change) and the event's place among that entry's
//! events. A stream remembers the position after the last event it received and, when
//! its node fails, resumes there on another node (or the same one after its restart):
//! the node replays what the stream missed from its watch history, so nothing is lost or
//! repeated. A position older than every node's history is *compacted*: a stream started
//! with [`Client::watch`] then yields a [`WatchEvent::Resync`] (re-read), one started at
//! a position with [`Client::watch_from`] ends with [`Error::Compacted`].

use crate::client::Client;
use crate::error::{Error, Failure, Result, classify};
use crate::types::{FencingToken, LockMode, SessionId};
use fencelock_proto::v1 as pb;
use fencelock_proto::v1::locks_client::LocksClient;
use futures::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

impl Client {
    /// Watch one lock: acquired / released / expired events as the cluster applies them.
    /// See [`WatchStream`].
    pub fn watch(&self, name: &str) -> WatchStream {
        watch_stream(self.clone(), name.to_string(), false, None)
    }

    /// Watch every lock whose name starts with `prefix` (`""` watches everything).
    pub fn watch_prefix(&self, prefix: &str) -> WatchStream {
        watch_stream(self.clone(), prefix.to_string(), true, None)
    }

    /// Watch one lock from `start`: first the events at or after it that the cluster
    /// still holds, then live ones, with no `Resync`. To see every change after a
    /// `describe` or `list` answered at revision `R`, start at
    /// [`WatchPosition::at_revision`]`(R + 1)`; to resume a stream, start at its
    /// [`WatchStream::position`]. A start beyond what a node has applied is not an error:
    /// its events come as the node applies them.
    ///
    /// The stream ends with [`Error::Compacted`] (naming the oldest revision still held)
    /// when no node holds the events from `start` any more, at the start or after a
    /// reconnect; it never skips an event silently.
    pub fn watch_from(&self, name: &str, start: WatchPosition) -> WatchStream {
        watch_stream(self.clone(), name.to_string(), false, Some(start))
    }

    /// [`Client::watch_from`] for every lock whose name starts with `prefix`.
    pub fn watch_prefix_from(&self, prefix: &str, start: WatchPosition) -> WatchStream {
        watch_stream(self.clone(), prefix.to_string(), true, Some(start))
    }
}

/// A place in the cluster's sequence of lock events, ordered as the log: before the
/// event `event` of revision `revision`. The same on every node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchPosition {
    revision: u64,
    event: u32,
}

impl WatchPosition {
    /// Before every event of `revision`: a watch started here sees the events of
    /// `revision` and later.
    pub fn at_revision(revision: u64) -> WatchPosition {
        WatchPosition { revision, event: 0 }
    }

    /// The revision (log index) the position is in.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// What a stream that received `event` resumes from: the next event after it.
    fn after(event: &pb::WatchEvent) -> WatchPosition {
        if event.resync {
            WatchPosition::at_revision(event.revision.saturating_add(1))
        } else {
            WatchPosition {
                revision: event.revision,
                event: event.event_index.saturating_add(1),
            }
        }
    }
}

/// Events buffered between the background task and the consumer.
const WATCH_BUFFER: usize = 256;

/// A change to a watched lock, as the cluster applied it (more kinds may come: match
/// with a wildcard arm).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchEvent {
    /// A session was granted the lock.
    Acquired {
        /// The lock.
        name: String,
        /// The new holder.
        session_id: SessionId,
        /// Its grant's token.
        token: FencingToken,
        /// Exclusive or shared.
        mode: LockMode,
        /// The holder value.
        value: Vec<u8>,
        /// The log index of the change.
        revision: u64,
    },
    /// The holder released the lock.
    Released {
        /// The lock.
        name: String,
        /// The former holder.
        session_id: SessionId,
        /// The released grant's token.
        token: FencingToken,
        /// The log index of the change.
        revision: u64,
    },
    /// The lock was released because its holder's session expired.
    Expired {
        /// The lock.
        name: String,
        /// The former holder.
        session_id: SessionId,
        /// The released grant's token.
        token: FencingToken,
        /// The log index of the change.
        revision: u64,
    },
    /// An admin force-released the lock.
    Forced {
        /// The lock.
        name: String,
        /// The former holder.
        session_id: SessionId,
        /// The released grant's token.
        token: FencingToken,
        /// The log index of the change.
        revision: u64,
    },
    /// The lock was released because its holder closed its session.
    SessionClosed {
        /// The lock.
        name: String,
        /// The former holder.
        session_id: SessionId,
        /// The released grant's token.
        token: FencingToken,
        /// The log index of the change.
        revision: u64,
    },
    /// The lock was released because an admin revoked its holder's session.
    Revoked {
        /// The lock.
        name: String,
        /// The former holder.
        session_id: SessionId,
        /// The released grant's token.
        token: FencingToken,
        /// The log index of the change.
        revision: u64,
    },
    /// A lock-delay started: the grant with `token` ended by expiry or revocation and
    /// had asked for `delay`; nobody is granted the lock until
    /// [`WatchEvent::LockDelayEnded`].
    LockDelayStarted {
        /// The lock.
        name: String,
        /// The ended grant's token.
        token: FencingToken,
        /// The ended grant's session: whose lapse started the delay (`None` from a
        /// server that does not say).
        session_id: Option<SessionId>,
        /// The delay's length.
        delay: std::time::Duration,
        /// The log index of the change.
        revision: u64,
    },
    /// The lock-delay ended: the lock may be granted again.
    LockDelayEnded {
        /// The lock.
        name: String,
        /// The log index of the change.
        revision: u64,
    },
    /// A holder replaced its value without releasing (an election leader's proclaim).
    ValueChanged {
        /// The lock.
        name: String,
        /// The holder.
        session_id: SessionId,
        /// Its grant's token.
        token: FencingToken,
        /// The new value.
        value: Vec<u8>,
        /// The log index of the change.
        revision: u64,
    },
    /// Events may have been missed (the stream started, reconnected to another node, or
    /// fell behind): re-read the state with `describe` / `list`. Events after this one
    /// follow `revision`.
    Resync {
        /// The applied log index the stream continues from.
        revision: u64,
    },
}

impl WatchEvent {
    /// The log index of the change (for `Resync`, the index the stream continues from).
    pub fn revision(&self) -> u64 {
        match self {
            WatchEvent::Acquired { revision, .. }
            | WatchEvent::Released { revision, .. }
            | WatchEvent::Expired { revision, .. }
            | WatchEvent::Forced { revision, .. }
            | WatchEvent::SessionClosed { revision, .. }
            | WatchEvent::Revoked { revision, .. }
            | WatchEvent::LockDelayStarted { revision, .. }
            | WatchEvent::LockDelayEnded { revision, .. }
            | WatchEvent::ValueChanged { revision, .. }
            | WatchEvent::Resync { revision } => *revision,
        }
    }

    /// The event's kind as a word: `acquired`, `released`, `expired`, `forced`,
    /// `session_closed`, `revoked`, `lock_delay_started`, `lock_delay_ended`,
    /// `value_changed` or `resync` (the names the CLI and the JSON API use).
    pub fn kind(&self) -> &'static str {
        match self {
            WatchEvent::Acquired { .. } => "acquired",
            WatchEvent::Released { .. } => "released",
            WatchEvent::Expired { .. } => "expired",
            WatchEvent::Forced { .. } => "forced",
            WatchEvent::SessionClosed { .. } => "session_closed",
            WatchEvent::Revoked { .. } => "revoked",
            WatchEvent::LockDelayStarted { .. } => "lock_delay_started",
            WatchEvent::LockDelayEnded { .. } => "lock_delay_ended",
            WatchEvent::ValueChanged { .. } => "value_changed",
            WatchEvent::Resync { .. } => "resync",
        }
    }

    /// The session the event is about: for a lock-delay's start, the session whose
    /// lapse started it (when the server says); `None` for a delay's end and `Resync`.
    pub fn session_id(&self) -> Option<SessionId> {
        match self {
            WatchEvent::Acquired { session_id, .. }
            | WatchEvent::Released { session_id, .. }
            | WatchEvent::Expired { session_id, .. }
            | WatchEvent::Forced { session_id, .. }
            | WatchEvent::SessionClosed { session_id, .. }
            | WatchEvent::Revoked { session_id, .. }
            | WatchEvent::ValueChanged { session_id, .. } => Some(*session_id),
            WatchEvent::LockDelayStarted { session_id, .. } => *session_id,
            WatchEvent::LockDelayEnded { .. } | WatchEvent::Resync { .. } => None,
        }
    }

    /// The lock the event is about (`None` for `Resync`).
    pub fn name(&self) -> Option<&str> {
        match self {
            WatchEvent::Acquired { name, .. }
            | WatchEvent::Released { name, .. }
            | WatchEvent::Expired { name, .. }
            | WatchEvent::Forced { name, .. }
            | WatchEvent::SessionClosed { name, .. }
            | WatchEvent::Revoked { name, .. }
            | WatchEvent::LockDelayStarted { name, .. }
            | WatchEvent::LockDelayEnded { name, .. }
            | WatchEvent::ValueChanged { name, .. } => Some(name),
            WatchEvent::Resync { .. } => None,
        }
    }

    /// The grant's token (`None` for `Resync`).
    pub fn token(&self) -> Option<FencingToken> {
        match self {
            WatchEvent::Acquired { token, .. }
            | WatchEvent::Released { token, .. }
            | WatchEvent::Expired { token, .. }
            | WatchEvent::Forced { token, .. }
            | WatchEvent::SessionClosed { token, .. }
            | WatchEvent::Revoked { token, .. }
            | WatchEvent::LockDelayStarted { token, .. }
            | WatchEvent::ValueChanged { token, .. } => Some(*token),
            WatchEvent::LockDelayEnded { .. } | WatchEvent::Resync { .. } => None,
        }
    }

    fn from_pb(event: pb::WatchEvent) -> WatchEvent {
        let revision = event.revision;
        if event.resync {
            return WatchEvent::Resync { revision };
        }
        let name = event.name;
        let session_id = SessionId(event.session_id);
        let token = FencingToken(event.token);
        match pb::EventKind::try_from(event.kind) {
            Ok(pb::EventKind::Acquired) => WatchEvent::Acquired {
                name,
                session_id,
                token,
                mode: LockMode::from_pb(event.mode),
                value: event.value,
                revision,
            },
            Ok(pb::EventKind::Released) => WatchEvent::Released {
                name,
                session_id,
                token,
                revision,
            },
            Ok(pb::EventKind::Expired) => WatchEvent::Expired {
                name,
                session_id,
                token,
                revision,
            },
            Ok(pb::EventKind::Forced) => WatchEvent::Forced {
                name,
                session_id,
                token,
                revision,
            },
            Ok(pb::EventKind::SessionClosed) => WatchEvent::SessionClosed {
                name,
                session_id,
                token,
                revision,
            },
            Ok(pb::EventKind::Revoked) => WatchEvent::Revoked {
                name,
                session_id,
                token,
                revision,
            },
            Ok(pb::EventKind::LockDelayStarted) => WatchEvent::LockDelayStarted {
                name,
                token,
                session_id: (session_id.0 != 0).then_some(session_id),
                delay: std::time::Duration::from_millis(event.lock_delay_ms),
                revision,
            },
            Ok(pb::EventKind::LockDelayEnded) => WatchEvent::LockDelayEnded { name, revision },
            Ok(pb::EventKind::ValueChanged) => WatchEvent::ValueChanged {
                name,
                session_id,
                token,
                value: event.value,
                revision,
            },
            // A kind this client does not know: the safe reading is "re-read".
            Err(_) => WatchEvent::Resync { revision },
        }
    }
}

/// A stream of [`WatchEvent`]s from [`Client::watch`] / [`Client::watch_prefix`] (and
/// their `_from` forms).
///
/// Started without a position, it starts with a [`WatchEvent::Resync`]. When the node it
/// watches fails, it reconnects to another node (any node serves watches) with backoff,
/// as long as it takes, and resumes after the last event it received: no event is lost
/// or repeated. Only when no node still holds the events from there (see the module
/// docs) does it yield another `Resync` (events may be missing: re-read); a stream
/// started at a position ends with [`Error::Compacted`] instead. It ends with an error
/// too for a request the server refuses (an invalid name). Dropping it stops the
/// background task.
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct WatchStream {
    events: mpsc::Receiver<Result<(WatchEvent, WatchPosition)>>,
    position: Option<WatchPosition>,
    task: JoinHandle<()>,
}

impl WatchStream {
    /// Where the items yielded so far end: a watch started here with
    /// [`Client::watch_from`] goes on with the next event, none lost or repeated (e.g.
    /// after the program restarts, if it kept the position). `None` before the first
    /// item of a stream started without a position.
    pub fn position(&self) -> Option<WatchPosition> {
        self.position
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.events.poll_recv(cx) {
            Poll::Ready(Some(Ok((event, position)))) => {
                self.position = Some(position);
                Poll::Ready(Some(Ok(event)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn watch_stream(
    client: Client,
    name: String,
    prefix: bool,
    start: Option<WatchPosition>,
) -> WatchStream {
    let (sender, events) = mpsc::channel(WATCH_BUFFER);
    let runtime = client.inner.runtime.clone();
    let task = runtime.spawn(run(client, name, prefix, start, sender));
    WatchStream {
        events,
        position: start,
        task,
    }
}

type Sender = mpsc::Sender<Result<(WatchEvent, WatchPosition)>>;

/// Why a connection's stream ended.
enum Ended {
    /// The node failed or the stream broke: resume on another node.
    Failed(Option<tonic::Status>),
    /// The node no longer holds the events from the position.
    Compacted(Error),
    /// The consumer went away.
    Dropped,
}

async fn run(
    client: Client,
    name: String,
    prefix: bool,
    start: Option<WatchPosition>,
    sender: Sender,
) {
    let transport = client.transport();
    let config = client.config().clone();
    let mut backoff = config.backoff_initial;
    // The position after the last event sent on: where a new connection resumes.
    let mut position = start;
    // Nodes in a row that answered COMPACTED: each holds a history of its own, so every
    // node is asked before the position counts as compacted.
    let mut compacted_answers = 0;
    loop {
        let addr = transport.pick(false);
        let channel = match transport.channel(&addr) {
            Ok(channel) => channel,
            Err(error) => {
                let _ = sender.send(Err(error)).await;
                return;
            }
        };
        let request = pb::WatchRequest {
            name: name.clone(),
            prefix,
            start_revision: position.map_or(0, |p| p.revision),
            start_event: position.map_or(0, |p| p.event),
        };
        let limit = config.connect_timeout + config.call_timeout;
        let opened = tokio::time::timeout(limit, LocksClient::new(channel).watch(request)).await;
        let before = position;
        let ended = match opened {
            Ok(Ok(response)) => follow(response.into_inner(), &sender, &mut position).await,
            Ok(Err(status)) => ended_by(status),
            Err(_) => Ended::Failed(None),
        };
        if position != before {
            // The stream delivered: the node was fine for a while.
            backoff = config.backoff_initial;
            compacted_answers = 0;
        }
        let failure = match ended {
            Ended::Dropped => return,
            Ended::Compacted(error) => {
                compacted_answers += 1;
                transport.demote(&addr);
                if compacted_answers < config.endpoints.len() {
                    continue;
                }
                compacted_answers = 0;
                if start.is_some() {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
                // Started without a position: its contract allows a resync.
                tracing::debug!(%error, "watch position compacted; starting afresh");
                position = None;
                continue;
            }
            Ended::Failed(status) => status,
        };
        if let Some(status) = failure
            && let Failure::Fatal(error) = classify(&status)
            && !matches!(error, Error::Status { .. })
        {
            let _ = sender.send(Err(error)).await;
            return;
        }
        tracing::debug!(node = %addr, "watch stream ended; reconnecting");
        transport.demote(&addr);
        let pause = transport.backoff(&mut backoff);
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = sender.closed() => return,
        }
    }
}

/// Follow one connection's stream, sending each event on with the position after it.
async fn follow(
    mut stream: tonic::Streaming<pb::WatchEvent>,
    sender: &Sender,
    position: &mut Option<WatchPosition>,
) -> Ended {
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            () = sender.closed() => return Ended::Dropped,
        };
        match message {
            Ok(Some(event)) => {
                let after = WatchPosition::after(&event);
                *position = Some(after);
                if sender
                    .send(Ok((WatchEvent::from_pb(event), after)))
                    .await
                    .is_err()
                {
                    return Ended::Dropped;
                }
            }
            Ok(None) => return Ended::Failed(None),
            Err(status) => return ended_by(status),
        }
    }
}

fn ended_by(status: tonic::Status) -> Ended {
    match classify(&status) {
        Failure::Fatal(error @ Error::Compacted { .. }) => Ended::Compacted(error),
        _ => Ended::Failed(Some(status)),
    }
}
