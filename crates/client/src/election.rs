//! Leader election on a lock: the holder of an exclusive lock leads, its holder value
//! (e.g. its address) says who it is, and the fencing token numbers the terms.
//!
//! ```no_run
//! # async fn demo(client: fencelock_client::Client) -> fencelock_client::Result<()> {
//! use fencelock_client::election::{self, Election};
//! use futures::StreamExt;
//! use std::time::Duration;
//!
//! let session = client.session(Duration::from_secs(10)).await?;
//! let election = Election::new(&session, "services/scheduler/leader");
//! let leadership = election.campaign(b"10.0.0.7:9000".to_vec()).await?; // waits
//! println!("leading in term {}", leadership.token());
//! tokio::select! {
//!     _ = leadership.lost() => println!("lost the session: stop leading now"),
//!     _ = tokio::signal::ctrl_c() => leadership.resign().await?,
//! }
//!
//! // Elsewhere: follow who leads.
//! let mut leaders = election::observe(&client, "services/scheduler/leader");
//! while let Some(leader) = leaders.next().await {
//!     println!("leader now: {:?}", leader?);
//! }
//! # Ok(()) }
//! ```

use crate::client::Client;
use crate::error::{Error, Result};
use crate::keepalive::Lost;
use crate::lock::{Acquisition, LockGuard};
use crate::session::{Session, SessionInner};
use crate::types::{AcquireOptions, FencingToken, LockMode, SessionId, Wait};
use crate::watch::{WatchEvent, WatchPosition};
use futures::{FutureExt, Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A leader as observers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// The leading session.
    pub session_id: SessionId,
    /// Its grant's token: larger for every later leader.
    pub token: FencingToken,
    /// The value it campaigned with.
    pub value: Vec<u8>,
}

/// Campaigns for leadership of `name` with one session.
#[derive(Debug)]
pub struct Election {
    session: Arc<SessionInner>,
    name: String,
}

impl Election {
    /// An election on lock `name`, campaigning with `session`.
    pub fn new(session: &Session, name: impl Into<String>) -> Election {
        Election {
            session: session.inner.clone(),
            name: name.into(),
        }
    }

    /// The election's lock name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Wait until this session leads, announcing `value` (e.g. this node's address) to
    /// observers. Campaigners are served in FIFO order.
    ///
    /// # Errors
    ///
    /// As [`Session::acquire`]; [`Error::AlreadyHeldOrQueued`] when this session already
    /// campaigns.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as [`Session::acquire`]: dropping the future withdraws the candidacy.
    pub async fn campaign(&self, value: impl Into<Vec<u8>>) -> Result<Leadership> {
        let options = AcquireOptions {
            mode: LockMode::Exclusive,
            wait: Wait::Forever,
            value: value.into(),
            ..AcquireOptions::default()
        };
        match self.session.acquire_one(&self.name, options).await? {
            Acquisition::Granted(guard) => Ok(Leadership { guard }),
            other => Err(Error::Internal(format!(
                "a campaign without deadline ended with {other:?}"
            ))),
        }
    }
}

/// Held leadership. Dropping it resigns in the background.
#[derive(Debug)]
#[must_use = "dropping the leadership resigns at once"]
pub struct Leadership {
    guard: LockGuard,
}

impl Leadership {
    /// The term's fencing token; pass it to whatever the leader writes to.
    pub fn token(&self) -> FencingToken {
        self.guard.token()
    }

    /// The leading session.
    pub fn session_id(&self) -> SessionId {
        self.guard.session_id()
    }

    /// Resolves when the session is lost: stop acting as leader.
    pub fn lost(&self) -> Lost {
        self.guard.lost()
    }

    /// Announce a new value (e.g. a new address) without resigning: the term and its
    /// token stay, and observers see the new value (etcd's Proclaim).
    ///
    /// # Errors
    ///
    /// As [`LockGuard::set_value`].
    pub async fn proclaim(&self, value: impl Into<Vec<u8>>) -> Result<()> {
        self.guard.set_value(value).await
    }

    /// Step down; the next campaigner leads.
    ///
    /// # Errors
    ///
    /// As [`LockGuard::release`].
    pub async fn resign(self) -> Result<()> {
        self.guard.release().await
    }
}

/// Who leads election `name` now (`None` when no one does).
///
/// # Errors
///
/// As [`Client::describe`].
pub async fn leader(client: &Client, name: &str) -> Result<Option<Leader>> {
    Ok(leader_at(client, name).await?.0)
}

async fn leader_at(client: &Client, name: &str) -> Result<(Option<Leader>, u64)> {
    let description = client.describe(name).await?;
    let leader = description.lock.and_then(|lock| {
        lock.holders
            .into_iter()
            .find(|h| h.mode == LockMode::Exclusive)
            .map(|h| Leader {
                session_id: h.session_id,
                token: h.token,
                value: h.value,
            })
    });
    Ok((leader, description.revision))
}

/// A stream of the leaders of election `name`: the current one first, then every change
/// (`None` while no one leads), without repeats. It reads the leader, then follows a
/// watch that starts right after the revision of that read ([`Client::watch_from`]), so
/// no change between the two is missed, and the watch resumes after a reconnect without
/// losing one. Only where the watch's position was compacted (the observer was cut off
/// for longer than the nodes' watch history) does it read again. Each item is the leader
/// as of some applied revision; changes applied in one step (a resignation that hands
/// over to the next campaigner) are reported as one.
///
/// A read that fails with a transient error is reported as an `Err` item and tried
/// again; any other error is the stream's last item.
pub fn observe(client: &Client, name: &str) -> Observe {
    let (sender, leaders) = mpsc::channel(64);
    let task = client
        .inner
        .runtime
        .spawn(run_observe(client.clone(), name.to_string(), sender));
    Observe { leaders, task }
}

/// The stream of [`observe`].
#[derive(Debug)]
#[must_use = "streams do nothing unless polled"]
pub struct Observe {
    leaders: mpsc::Receiver<Result<Option<Leader>>>,
    task: JoinHandle<()>,
}

impl Stream for Observe {
    type Item = Result<Option<Leader>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.leaders.poll_recv(cx)
    }
}

impl Drop for Observe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run_observe(client: Client, name: String, sender: mpsc::Sender<Result<Option<Leader>>>) {
    // What was last sent; `None` before the first item.
    let mut reported: Option<Option<Leader>> = None;
    let mut report = async |state: &Option<Leader>| -> bool {
        if reported.as_ref() == Some(state) {
            return true;
        }
        reported = Some(state.clone());
        sender.send(Ok(state.clone())).await.is_ok()
    };
    let pause = client.config().backoff_max;
    loop {
        let (mut state, revision) = match leader_at(&client, &name).await {
            Ok(read) => read,
            Err(error) => {
                let transient = error.is_transient();
                if sender.send(Err(error)).await.is_err() || !transient {
                    return;
                }
                tokio::time::sleep(pause).await;
                continue;
            }
        };
        if !report(&state).await {
            return;
        }
        let mut watch = client.watch_from(&name, WatchPosition::at_revision(revision + 1));
        let mut buffered: Option<Option<Result<WatchEvent>>> = None;
        loop {
            let next = match buffered.take() {
                Some(next) => next,
                None => watch.next().await,
            };
            let event = match next {
                None => return,
                // Cut off for longer than the history: read again.
                Some(Err(Error::Compacted { .. })) => break,
                Some(Err(error)) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
                // Not sent on a watch with a start position; a node too old to resume
                // would: read again.
                Some(Ok(WatchEvent::Resync { .. })) => break,
                Some(Ok(event)) => event,
            };
            // Apply every event of this revision before reporting.
            let revision = event.revision();
            apply(&mut state, event);
            loop {
                match watch.next().now_or_never() {
                    Some(Some(Ok(next)))
                        if next.revision() == revision && next.name().is_some() =>
                    {
                        apply(&mut state, next);
                    }
                    Some(other) => {
                        buffered = Some(other);
                        break;
                    }
                    None => break,
                }
            }
            if !report(&state).await {
                return;
            }
        }
    }
}

fn apply(state: &mut Option<Leader>, event: WatchEvent) {
    match event {
        WatchEvent::Acquired {
            session_id,
            token,
            mode: LockMode::Exclusive,
            value,
            ..
        } => {
            *state = Some(Leader {
                session_id,
                token,
                value,
            });
        }
        WatchEvent::Released { token, .. }
        | WatchEvent::Expired { token, .. }
        | WatchEvent::Forced { token, .. }
        | WatchEvent::SessionClosed { token, .. }
        | WatchEvent::Revoked { token, .. } => {
            if state.as_ref().is_some_and(|leader| leader.token == token) {
                *state = None;
            }
        }
        // The leader proclaimed a new value: same term, same token.
        WatchEvent::ValueChanged { token, value, .. } => {
            if let Some(leader) = state.as_mut().filter(|leader| leader.token == token) {
                leader.value = value;
            }
        }
        WatchEvent::Acquired { .. }
        | WatchEvent::LockDelayStarted { .. }
        | WatchEvent::LockDelayEnded { .. }
        | WatchEvent::Resync { .. } => {}
    }
}
