//! What the server learns from the apply path: the [`EventHub`] is the state machine's
//! [`ApplyObserver`]. It wakes `Acquire` calls waiting in a queue, feeds `Watch` streams,
//! and tells the leader's lease clock about sessions that opened or ended.
//!
//! It runs under the state's write lock; a waiter registers under the read lock after
//! checking the state, so no grant can slip between the check and the registration.

use crate::leases::LeaseClock;
use crate::limits::RECENT_EVENTS;
use crate::store::{Applied, ApplyObserver, SharedState};
use fencelock_core::{Event, FencingToken, SessionId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, oneshot};

/// The events of one applied entry, as watchers see them.
#[derive(Debug)]
pub struct AppliedEvents {
    /// The entry's log index (the revision).
    pub index: u64,
    /// What changed, in order.
    pub events: Vec<Event>,
    /// The whole state was replaced (a snapshot was installed): watchers must re-read.
    pub resync: bool,
}

/// One applied event as the status page shows it (`/status/events`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RecentEvent {
    /// The log index of the entry that made the change.
    pub index: u64,
    /// `session_opened`, `session_ended`, `acquired`, `released` or `wait_cancelled`.
    pub kind: &'static str,
    /// The lock, for lock events.
    pub name: Option<String>,
    /// The session concerned.
    pub session: Option<u64>,
    /// The grant's token, for `acquired` and `released`.
    pub token: Option<u64>,
    /// Why a grant or session ended: `released`, `session_closed`, `expired`, `forced`,
    /// `revoked` (for `released`); `closed`, `expired`, `revoked` (for `session_ended`).
    pub reason: Option<&'static str>,
}

impl RecentEvent {
    /// The status page's form of `event`, applied at log index `index`.
    pub fn new(index: u64, event: &Event) -> RecentEvent {
        use fencelock_core::{EndReason, ReleaseReason};
        let mut recent = RecentEvent {
            index,
            kind: "",
            name: None,
            session: None,
            token: None,
            reason: None,
        };
        match event {
            Event::SessionOpened { session, .. } => {
                recent.kind = "session_opened";
                recent.session = Some(session.0);
            }
            Event::AuthChanged { .. } => recent.kind = "auth_changed",
            Event::LockDelayStarted { name, token, .. } | Event::LockDelayEnded { name, token } => {
                recent.kind = if matches!(event, Event::LockDelayStarted { .. }) {
                    "lock_delay_started"
                } else {
                    "lock_delay_ended"
                };
                recent.name = Some(name.clone());
                recent.token = Some(token.0);
            }
            Event::HoldCountChanged {
                name,
                session,
                token,
                ..
            }
            | Event::ValueChanged {
                name,
                session,
                token,
                ..
            } => {
                recent.kind = if matches!(event, Event::HoldCountChanged { .. }) {
                    "hold_count_changed"
                } else {
                    "value_changed"
                };
                recent.name = Some(name.clone());
                recent.session = Some(session.0);
                recent.token = Some(token.0);
            }
            Event::SessionEnded { session, reason } => {
                recent.kind = "session_ended";
                recent.session = Some(session.0);
                recent.reason = Some(match reason {
                    EndReason::Closed => "closed",
                    EndReason::Expired => "expired",
                    EndReason::Revoked => "revoked",
                });
            }
            Event::Acquired {
                name,
                session,
                token,
                ..
            } => {
                recent.kind = "acquired";
                recent.name = Some(name.clone());
                recent.session = Some(session.0);
                recent.token = Some(token.0);
            }
            Event::Released {
                name,
                session,
                token,
                reason,
            } => {
                recent.kind = "released";
                recent.name = Some(name.clone());
                recent.session = Some(session.0);
                recent.token = Some(token.0);
                recent.reason = Some(match reason {
                    ReleaseReason::Released => "released",
                    ReleaseReason::SessionClosed => "session_closed",
                    ReleaseReason::SessionExpired => "expired",
                    ReleaseReason::Forced => "forced",
                    ReleaseReason::Revoked => "revoked",
                });
            }
            Event::WaitCancelled { name, session } => {
                recent.kind = "wait_cancelled";
                recent.name = Some(name.clone());
                recent.session = Some(session.0);
            }
        }
        recent
    }
}

/// How a queued wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The lock was granted to the waiting session.
    Granted(FencingToken),
    /// The wait was withdrawn (cancelled, or its session ended).
    Ended,
}

/// The wait registry key.
type WaitKey = (SessionId, String);

struct WaitSlot {
    /// Every `Acquire` call attached to this wait (a retry re-attaches).
    listeners: Vec<(u64, oneshot::Sender<WaitOutcome>)>,
}

/// The apply observer of a node.
pub struct EventHub {
    waits: Mutex<HashMap<WaitKey, WaitSlot>>,
    next_listener: std::sync::atomic::AtomicU64,
    watchers: broadcast::Sender<Arc<AppliedEvents>>,
    leases: Arc<LeaseClock>,
    /// The last [`RECENT_EVENTS`] applied events, oldest first, for the status page.
    recent: Mutex<std::collections::VecDeque<RecentEvent>>,
}

/// The result of [`EventHub::attach_wait`].
#[derive(Debug)]
pub enum Attach {
    /// The session already holds the lock.
    Granted(FencingToken),
    /// The session does not wait for the lock (any more): cancelled, or session gone.
    NotWaiting,
    /// Attached: the receiver resolves when the wait ends.
    Waiting(WaitTicket),
}

/// A registered interest in one queued wait. Dropping it detaches.
#[derive(Debug)]
pub struct WaitTicket {
    key: WaitKey,
    listener: u64,
    /// Resolves when the wait ends.
    pub outcome: oneshot::Receiver<WaitOutcome>,
}

impl WaitTicket {
    /// Detach from the wait; true when no other call is attached to it any more (so the
    /// caller may withdraw the wait on the server).
    pub fn detach(&self, hub: &EventHub) -> bool {
        let mut waits = hub.waits.lock().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = waits.get_mut(&self.key) else {
            return true;
        };
        slot.listeners.retain(|(id, _)| *id != self.listener);
        if slot.listeners.is_empty() {
            waits.remove(&self.key);
            true
        } else {
            false
        }
    }
}

impl EventHub {
    /// A hub whose watch channel buffers `watch_buffer` entries.
    pub fn new(watch_buffer: usize, leases: Arc<LeaseClock>) -> Arc<Self> {
        let (watchers, _) = broadcast::channel(watch_buffer.max(1));
        Arc::new(EventHub {
            waits: Mutex::new(HashMap::new()),
            next_listener: std::sync::atomic::AtomicU64::new(1),
            watchers,
            leases,
            recent: Mutex::new(std::collections::VecDeque::with_capacity(RECENT_EVENTS)),
        })
    }

    /// The most recent applied events (at most [`RECENT_EVENTS`]), oldest first.
    pub fn recent_events(&self) -> Vec<RecentEvent> {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    fn remember_recent(&self, index: u64, events: &[Event]) {
        let skip = events.len().saturating_sub(RECENT_EVENTS);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        for event in &events[skip..] {
            if recent.len() == RECENT_EVENTS {
                recent.pop_front();
            }
            recent.push_back(RecentEvent::new(index, event));
        }
    }

    /// Subscribe to applied events (for `Watch`).
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<AppliedEvents>> {
        self.watchers.subscribe()
    }

    /// How many watch streams are subscribed.
    pub fn watcher_count(&self) -> usize {
        self.watchers.receiver_count()
    }

    /// Attach to `session`'s queued wait for `name`, checking the state under the same
    /// lock as the apply path so no grant is missed.
    pub fn attach_wait(&self, shared: &SharedState, session: SessionId, name: &str) -> Attach {
        shared.read(|applied| {
            if let Some(lock) = applied.state.lock(name) {
                if let Some(holder) = lock.holders.iter().find(|h| h.session == session) {
                    return Attach::Granted(holder.token);
                }
                if lock.waiters.iter().any(|w| w.session == session) {
                    let (sender, outcome) = oneshot::channel();
                    let listener = self
                        .next_listener
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let key = (session, name.to_string());
                    let mut waits = self.waits.lock().unwrap_or_else(|e| e.into_inner());
                    waits
                        .entry(key.clone())
                        .or_insert_with(|| WaitSlot {
                            listeners: Vec::new(),
                        })
                        .listeners
                        .push((listener, sender));
                    return Attach::Waiting(WaitTicket {
                        key,
                        listener,
                        outcome,
                    });
                }
            }
            Attach::NotWaiting
        })
    }

    fn finish_wait(&self, key: &WaitKey, outcome: WaitOutcome) {
        let slot = self
            .waits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        if let Some(slot) = slot {
            for (_, sender) in slot.listeners {
                let _ = sender.send(outcome);
            }
        }
    }
}

impl ApplyObserver for EventHub {
    fn applied(&self, index: u64, events: &[Event], _applied: &Applied) {
        if events.is_empty() {
            return;
        }
        for event in events {
            match event {
                Event::Acquired {
                    name,
                    session,
                    token,
                    ..
                } => self.finish_wait(&(*session, name.clone()), WaitOutcome::Granted(*token)),
                Event::WaitCancelled { name, session } => {
                    self.finish_wait(&(*session, name.clone()), WaitOutcome::Ended)
                }
                Event::SessionOpened {
                    session, ttl_ms, ..
                } => self.leases.session_opened(*session, *ttl_ms),
                Event::SessionEnded { session, .. } => self.leases.session_ended(*session),
                Event::Released { .. }
                | Event::AuthChanged { .. }
                | Event::LockDelayStarted { .. }
                | Event::LockDelayEnded { .. }
                | Event::HoldCountChanged { .. }
                | Event::ValueChanged { .. } => {}
            }
        }
        if self.leases.is_leading() {
            let grants = events
                .iter()
                .filter(|e| matches!(e, Event::Acquired { .. }))
                .count();
            if grants > 0 {
                crate::metrics::record_grants(grants);
            }
        }
        self.remember_recent(index, events);
        // No receivers is fine: nobody watches.
        let _ = self.watchers.send(Arc::new(AppliedEvents {
            index,
            events: events.to_vec(),
            resync: false,
        }));
    }

    fn reset(&self, applied: &Applied) {
        // A snapshot replaced the state: settle every wait from the new state.
        let mut waits = self.waits.lock().unwrap_or_else(|e| e.into_inner());
        let keys: Vec<WaitKey> = waits.keys().cloned().collect();
        for key in keys {
            let outcome = match applied.state.lock(&key.1) {
                Some(lock) => {
                    if let Some(holder) = lock.holders.iter().find(|h| h.session == key.0) {
                        Some(WaitOutcome::Granted(holder.token))
                    } else if lock.waiters.iter().any(|w| w.session == key.0) {
                        None
                    } else {
                        Some(WaitOutcome::Ended)
                    }
                }
                None => Some(WaitOutcome::Ended),
            };
            if let Some(outcome) = outcome
                && let Some(slot) = waits.remove(&key)
            {
                for (_, sender) in slot.listeners {
                    let _ = sender.send(outcome);
                }
            }
        }
        drop(waits);
        self.leases.reset(&applied.state);
        let _ = self.watchers.send(Arc::new(AppliedEvents {
            index: applied.last_applied.map(|l| l.index).unwrap_or(0),
            events: Vec::new(),
            resync: true,
        }));
    }
}
