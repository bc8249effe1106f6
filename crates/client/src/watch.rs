//! Watching locks: typed events over a stream that survives node failures.

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
        watch_stream(self.clone(), name.to_string(), false)
    }

    /// Watch every lock whose name starts with `prefix` (`""` watches everything).
    pub fn watch_prefix(&self, prefix: &str) -> WatchStream {
        watch_stream(self.clone(), prefix.to_string(), true)
    }
}

/// Events buffered between the background task and the consumer.
const WATCH_BUFFER: usize = 256;

/// A change to a watched lock, as the cluster applied it.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// A stream of [`WatchEvent`]s from [`Client::watch`] / [`Client::watch_prefix`].
///
/// It starts with a [`WatchEvent::Resync`]. When the node it watches fails, it reconnects
/// to another node (any node serves watches) with backoff, as long as it takes, and
/// yields another `Resync`: events between the two may be missing, so re-read. It ends
/// with an error only for a request the server refuses (an invalid name). Dropping it
/// stops the background task.
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct WatchStream {
    events: mpsc::Receiver<Result<WatchEvent>>,
    task: JoinHandle<()>,
}

impl Stream for WatchStream {
    type Item = Result<WatchEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn watch_stream(client: Client, name: String, prefix: bool) -> WatchStream {
    let (sender, events) = mpsc::channel(WATCH_BUFFER);
    let runtime = client.inner.runtime.clone();
    let task = runtime.spawn(run(client, pb::WatchRequest { name, prefix }, sender));
    WatchStream { events, task }
}

async fn run(client: Client, request: pb::WatchRequest, sender: mpsc::Sender<Result<WatchEvent>>) {
    let transport = client.transport();
    let config = client.config().clone();
    let mut backoff = config.backoff_initial;
    loop {
        let addr = transport.pick(false);
        let channel = match transport.channel(&addr) {
            Ok(channel) => channel,
            Err(error) => {
                let _ = sender.send(Err(error)).await;
                return;
            }
        };
        let limit = config.connect_timeout + config.call_timeout;
        let opened =
            tokio::time::timeout(limit, LocksClient::new(channel).watch(request.clone())).await;
        let failure = match opened {
            Ok(Ok(response)) => {
                let mut stream = response.into_inner();
                loop {
                    let message = tokio::select! {
                        message = stream.message() => message,
                        () = sender.closed() => return,
                    };
                    match message {
                        Ok(Some(event)) => {
                            backoff = config.backoff_initial;
                            if sender.send(Ok(WatchEvent::from_pb(event))).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break None,
                        Err(status) => break Some(status),
                    }
                }
            }
            Ok(Err(status)) => Some(status),
            Err(_) => None,
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
