//! [`LockGuard`]: a held lock.

use crate::error::Result;
use crate::keepalive::Lost;
use crate::session::SessionInner;
use crate::types::{FencingToken, LockMode, SessionId};
use std::sync::Arc;

/// What [`crate::Session::acquire`] got.
#[derive(Debug)]
#[must_use]
pub enum Acquisition {
    /// The lock is held.
    Granted(LockGuard),
    /// [`crate::Wait::NoWait`] and the lock is taken.
    WouldBlock,
    /// The wait's deadline passed and the cluster withdrew the wait (its state machine
    /// decided: no grant was made, and no waiter is left behind).
    TimedOut,
}

impl Acquisition {
    /// The guard, if granted.
    pub fn granted(self) -> Option<LockGuard> {
        match self {
            Acquisition::Granted(guard) => Some(guard),
            _ => None,
        }
    }
}

/// What [`crate::Session::acquire_all`] got.
#[derive(Debug)]
#[must_use]
pub enum MultiAcquisition {
    /// Every lock is held: one guard per name, in the order asked.
    Granted(Vec<LockGuard>),
    /// [`crate::Wait::NoWait`] and some lock is taken (none was granted).
    WouldBlock,
    /// The wait's deadline passed and the cluster withdrew the wait (none was granted).
    TimedOut,
}

impl MultiAcquisition {
    /// The guards, if granted.
    pub fn granted(self) -> Option<Vec<LockGuard>> {
        match self {
            MultiAcquisition::Granted(guards) => Some(guards),
            _ => None,
        }
    }
}

/// A held lock. Pass [`LockGuard::token`] to the protected resource with every write,
/// and stop when [`LockGuard::lost`] fires.
///
/// Dropping the guard releases the lock in the background (spawned on the client's
/// runtime; `Drop` never blocks). [`LockGuard::release`] releases it and reports the
/// result. The guard keeps its session open: a session closes on drop only when it and
/// all its guards are gone.
#[derive(Debug)]
#[must_use = "dropping the guard releases the lock at once"]
pub struct LockGuard {
    session: Arc<SessionInner>,
    name: String,
    token: FencingToken,
    mode: LockMode,
    hold_count: u32,
    released: bool,
}

impl LockGuard {
    pub(crate) fn new(
        session: Arc<SessionInner>,
        name: String,
        token: FencingToken,
        mode: LockMode,
        hold_count: u32,
    ) -> LockGuard {
        LockGuard {
            session,
            name,
            token,
            mode,
            hold_count,
            released: false,
        }
    }

    /// How many holds the session had on this grant when this guard got it: 1, or more
    /// for a reentrant acquire of a lock the session already held (the guards of one
    /// grant share its token; each guard's release gives one hold back).
    pub fn hold_count(&self) -> u32 {
        self.hold_count
    }

    /// Replace the holder value that `describe` and `watch` show, without releasing the
    /// lock (watchers see a `ValueChanged` event). An election leader's proclaim.
    ///
    /// # Errors
    ///
    /// [`crate::Error::NotHeld`] / [`crate::Error::StaleToken`] /
    /// [`crate::Error::SessionNotFound`] when the grant is gone,
    /// [`crate::Error::ValueTooLarge`], or a transient error once retries ran out.
    ///
    /// # Cancel safety
    ///
    /// The request carries a request id, so a retry acts once; a dropped future may
    /// still have acted.
    pub async fn set_value(&self, value: impl Into<Vec<u8>>) -> Result<()> {
        self.session
            .set_value(&self.name, self.token, value.into())
            .await
    }

    /// The grant's fencing token.
    pub fn token(&self) -> FencingToken {
        self.token
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Exclusive or shared.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// The holding session's id.
    pub fn session_id(&self) -> SessionId {
        self.session.id
    }

    /// Resolves when the holding session is lost (see [`crate::Session::lost`]): from
    /// then on the lock may be granted to someone else once the server expires the
    /// session, so stop using the resource.
    pub fn lost(&self) -> Lost {
        self.session.lease.lost()
    }

    /// Whether the holding session is lost.
    pub fn is_lost(&self) -> bool {
        self.session.lease.lost_reason().is_some()
    }

    /// Release the lock.
    ///
    /// # Errors
    ///
    /// [`crate::Error::NotHeld`] / [`crate::Error::SessionNotFound`] when the session
    /// already lost the lock (expired, closed, force-released), or a transient error once
    /// retries ran out (the lock is then released when its session ends).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before the answer, the release is sent
    /// again in the background.
    pub async fn release(mut self) -> Result<()> {
        let result = self.session.release(&self.name, self.token).await;
        self.released = true;
        result
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let ticket = self.session.background_ticket(&self.name);
        let session = self.session.clone();
        let name = std::mem::take(&mut self.name);
        let token = self.token;
        self.session.client.inner.runtime.spawn(async move {
            if let Err(error) = session.release(&name, token).await {
                tracing::debug!(lock = %name, %token, %error, "background release failed");
            }
            drop(ticket);
        });
    }
}
