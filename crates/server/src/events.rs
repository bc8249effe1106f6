//! What the server learns from the apply path: the [`EventHub`] is the state machine's
//! [`ApplyObserver`]. It wakes `Acquire` calls waiting in a queue, feeds `Watch` streams,
//! keeps the watch history, and tells the leader's lease clock about sessions that
//! opened or ended.
//!
//! It runs under the state's write lock; a waiter registers under the read lock after
//! checking the state, so no grant can slip between the check and the registration. A
//! watch subscribes the same way ([`EventHub::subscribe_from`]): the events it replays
//! from the history and those it then receives live meet without a gap or an overlap.
//!
//! The watch history is the applied events of the newest entries, bounded by
//! [`HistoryBounds`]; it is rebuilt as the node applies (after a restart, from the log
//! entries replayed after the newest snapshot) and starts afresh when a snapshot replaces
//! the state. It is not replicated: each node serves the window it holds.

use crate::leases::LeaseClock;
use crate::limits::RECENT_EVENTS;
use crate::store::{Applied, ApplyObserver, SharedState};
use fencelock_core::{Event, FencingToken, SessionId};
use std::collections::{HashMap, VecDeque};
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

/// A place in the sequence of applied events: the revision (the log index of the entry)
/// and the event's place among that entry's events, from 0. Ordered as the log; the same
/// on every node (apply is deterministic).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventPosition {
    /// The entry's log index.
    pub revision: u64,
    /// The event's place among the entry's events.
    pub event: u32,
}

impl EventPosition {
    /// The first event of `revision`.
    pub fn at_revision(revision: u64) -> EventPosition {
        EventPosition { revision, event: 0 }
    }
}

/// How much of the applied events a node keeps for watches that start at a revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryBounds {
    /// Watchable events held at most (0: none).
    pub events: usize,
    /// Bytes held at most, as estimated by [`entry_bytes`] (0: none).
    pub bytes: usize,
}

/// A start position older than the history: its events are gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compacted {
    /// The oldest revision a watch may start at now.
    pub oldest_revision: u64,
}

/// What [`EventHub::subscribe_from`] hands a new watch.
#[derive(Debug)]
pub struct Subscription {
    /// The held entries with events at or after the start position, oldest first (empty
    /// without a start).
    pub replay: Vec<Arc<AppliedEvents>>,
    /// Every entry applied after the subscription.
    pub live: broadcast::Receiver<Arc<AppliedEvents>>,
    /// The node's applied revision at the subscription.
    pub revision: u64,
}

/// Whether a watch may see `event` (the rest is bookkeeping no watch shows). A kind added
/// later counts as watchable, so the history never drops one a watch shows.
fn watchable(event: &Event) -> bool {
    !matches!(
        event,
        Event::SessionOpened { .. }
            | Event::SessionEnded { .. }
            | Event::AuthChanged { .. }
            | Event::WaitCancelled { .. }
    )
}

/// The memory an entry's events take in the history, roughly: the events themselves and
/// the names and values they own.
pub fn entry_bytes(events: &[Event]) -> usize {
    let owned: usize = events
        .iter()
        .map(|event| match event {
            Event::Acquired { name, value, .. } => name.len() + value.len(),
            Event::Released { name, .. } | Event::WaitCancelled { name, .. } => name.len(),
            _ => 0,
        })
        .sum();
    std::mem::size_of::<AppliedEvents>() + std::mem::size_of_val(events) + owned
}

/// The newest applied entries that hold watchable events, within [`HistoryBounds`].
#[derive(Debug)]
struct History {
    bounds: HistoryBounds,
    entries: VecDeque<Arc<AppliedEvents>>,
    /// Watchable events in `entries`.
    events: usize,
    /// [`entry_bytes`] of `entries`.
    bytes: usize,
    /// Every watchable event at or after this position is held.
    from: EventPosition,
}

impl History {
    fn push(&mut self, entry: &Arc<AppliedEvents>) {
        let count = entry.events.iter().filter(|e| watchable(e)).count();
        if count == 0 {
            return;
        }
        self.entries.push_back(entry.clone());
        self.events += count;
        self.bytes += entry_bytes(&entry.events);
        while self.events > self.bounds.events || self.bytes > self.bounds.bytes {
            let Some(oldest) = self.entries.pop_front() else {
                break;
            };
            self.events -= oldest.events.iter().filter(|e| watchable(e)).count();
            self.bytes -= entry_bytes(&oldest.events);
            self.from = EventPosition::at_revision(oldest.index + 1);
        }
    }

    /// Forget everything: the state was replaced at `revision`.
    fn reset(&mut self, revision: u64) {
        self.entries.clear();
        self.events = 0;
        self.bytes = 0;
        self.from = EventPosition::at_revision(revision + 1);
    }
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
    /// The watch history. Changed only under the state's write lock, and entries are
    /// sent to `watchers` while it is held.
    history: Mutex<History>,
    leases: Arc<LeaseClock>,
    /// The last [`RECENT_EVENTS`] applied events, oldest first, for the status page.
    recent: Mutex<std::collections::VecDeque<RecentEvent>>,
    /// Each lock-delay in force seen start on this node: lock → (the delay's id, the
    /// session whose lost grant started it). The state keeps no session for a delay;
    /// a delay that started before this node's snapshot or restart is not here. Bounded
    /// by the delays in force.
    delay_sessions: Mutex<HashMap<String, (FencingToken, SessionId)>>,
}

/// The session whose lost grant `token` started the lock-delay at `events[at]`: the
/// `Released` event of that grant, which comes just before it in the same entry.
pub fn delay_session(events: &[Event], at: usize, token: FencingToken) -> Option<SessionId> {
    events[..at.min(events.len())]
        .iter()
        .rev()
        .find_map(|event| match event {
            Event::Released {
                session,
                token: released,
                ..
            } if *released == token => Some(*session),
            _ => None,
        })
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
    /// A hub whose watch channel buffers `watch_buffer` entries and whose watch history
    /// keeps what `history` allows.
    pub fn new(watch_buffer: usize, history: HistoryBounds, leases: Arc<LeaseClock>) -> Arc<Self> {
        let (watchers, _) = broadcast::channel(watch_buffer.max(1));
        Arc::new(EventHub {
            waits: Mutex::new(HashMap::new()),
            next_listener: std::sync::atomic::AtomicU64::new(1),
            watchers,
            history: Mutex::new(History {
                bounds: history,
                entries: VecDeque::new(),
                events: 0,
                bytes: 0,
                from: EventPosition::at_revision(0),
            }),
            leases,
            recent: Mutex::new(std::collections::VecDeque::with_capacity(RECENT_EVENTS)),
            delay_sessions: Mutex::new(HashMap::new()),
        })
    }

    /// The session whose lost grant started the lock-delay `token` on `name`, when this
    /// node saw it start (see [`delay_session`]). Read under the state's read lock, so
    /// it agrees with the state read.
    pub fn delay_session_of(&self, name: &str, token: FencingToken) -> Option<SessionId> {
        self.delay_sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .filter(|(id, _)| *id == token)
            .map(|&(_, session)| session)
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

    /// Subscribe to the entries applied from now on and, with `start`, take the held
    /// entries that have events at or after it: under the state's read lock, so no entry
    /// is applied between the two (each entry is in exactly one of them, or in both
    /// never). The caller still skips the events of the first replayed entry before
    /// `start`.
    ///
    /// # Errors
    /// [`Compacted`] when events at or after `start` are no longer held.
    pub fn subscribe_from(
        &self,
        shared: &SharedState,
        start: Option<EventPosition>,
    ) -> Result<Subscription, Compacted> {
        shared.read(|applied| {
            let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
            let replay = match start {
                None => Vec::new(),
                Some(start) if start < history.from => {
                    return Err(Compacted {
                        oldest_revision: history.from.revision,
                    });
                }
                Some(start) => history
                    .entries
                    .iter()
                    .filter(|entry| entry.index >= start.revision)
                    .cloned()
                    .collect(),
            };
            Ok(Subscription {
                replay,
                live: self.watchers.subscribe(),
                revision: applied.last_applied.map(|l| l.index).unwrap_or(0),
            })
        })
    }

    /// The oldest revision a watch may start at, and the watchable events and bytes held.
    pub fn history_span(&self) -> (u64, usize, usize) {
        let history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        (history.from.revision, history.events, history.bytes)
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
        for (at, event) in events.iter().enumerate() {
            match event {
                Event::Acquired {
                    name,
                    session,
                    token,
                    ..
                } => self.finish_wait(&(*session, name.clone()), WaitOutcome::Granted(*token)),
                Event::LockDelayStarted { name, token, .. } => {
                    let mut delays = self
                        .delay_sessions
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    match delay_session(events, at, *token) {
                        Some(session) => delays.insert(name.clone(), (*token, session)),
                        None => delays.remove(name),
                    };
                }
                Event::LockDelayEnded { name, token } => {
                    let mut delays = self
                        .delay_sessions
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    if delays.get(name).is_some_and(|(id, _)| id == token) {
                        delays.remove(name);
                    }
                }
                Event::WaitCancelled { name, session } => {
                    self.finish_wait(&(*session, name.clone()), WaitOutcome::Ended)
                }
                Event::SessionOpened {
                    session, ttl_ms, ..
                } => self.leases.session_opened(*session, *ttl_ms),
                Event::SessionEnded { session, .. } => self.leases.session_ended(*session),
                Event::Released { .. }
                | Event::AuthChanged { .. }
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
        let entry = Arc::new(AppliedEvents {
            index,
            events: events.to_vec(),
            resync: false,
        });
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.push(&entry);
        // No receivers is fine: nobody watches.
        let _ = self.watchers.send(entry);
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
        // Which sessions started the delays now in force is not in the state.
        self.delay_sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.leases.reset(&applied.state);
        let index = applied.last_applied.map(|l| l.index).unwrap_or(0);
        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
        history.reset(index);
        let _ = self.watchers.send(Arc::new(AppliedEvents {
            index,
            events: Vec::new(),
            resync: true,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fencelock_core::{ClientId, LockMode};

    fn hub(bounds: HistoryBounds) -> (Arc<EventHub>, Arc<SharedState>) {
        let hub = EventHub::new(16, bounds, Arc::new(LeaseClock::default()));
        let shared = SharedState::new(hub.clone());
        shared.write(|applied, observer| observer.reset(applied));
        (hub, shared)
    }

    fn acquired(name: &str, token: u64) -> Event {
        Event::Acquired {
            name: name.to_string(),
            session: SessionId(1),
            token: FencingToken(token),
            mode: LockMode::Exclusive,
            value: Vec::new(),
        }
    }

    fn apply(shared: &SharedState, index: u64, events: &[Event]) {
        shared.write(|applied, observer| observer.applied(index, events, applied));
    }

    fn start(hub: &EventHub, shared: &SharedState, revision: u64) -> Result<Vec<u64>, Compacted> {
        hub.subscribe_from(shared, Some(EventPosition::at_revision(revision)))
            .map(|s| s.replay.iter().map(|entry| entry.index).collect())
    }

    #[test]
    fn the_history_keeps_at_most_its_event_bound_and_names_the_oldest_start() {
        let (hub, shared) = hub(HistoryBounds {
            events: 5,
            bytes: 1 << 20,
        });
        for index in 1..=10 {
            apply(&shared, index, &[acquired("a", index)]);
        }
        let (oldest, events, _) = hub.history_span();
        assert_eq!((oldest, events), (6, 5));
        assert_eq!(
            start(&hub, &shared, 5),
            Err(Compacted { oldest_revision: 6 })
        );
        assert_eq!(start(&hub, &shared, 6), Ok(vec![6, 7, 8, 9, 10]));
        assert_eq!(start(&hub, &shared, 9), Ok(vec![9, 10]));
        // Ahead of the node: nothing to replay yet, and not an error.
        assert_eq!(start(&hub, &shared, 50), Ok(vec![]));
    }

    #[test]
    fn the_history_keeps_at_most_its_byte_bound() {
        let one = entry_bytes(&[acquired("a", 1)]);
        let (hub, shared) = hub(HistoryBounds {
            events: 1_000,
            bytes: 3 * one,
        });
        for index in 1..=10 {
            apply(&shared, index, &[acquired("a", index)]);
        }
        let (oldest, events, bytes) = hub.history_span();
        assert!(bytes <= 3 * one, "{bytes} bytes held");
        assert_eq!((oldest, events), (8, 3));
        // An entry larger than the whole bound is not kept at all.
        let big: Vec<Event> = (0..4).map(|i| acquired("b", 20 + i)).collect();
        apply(&shared, 11, &big);
        let (oldest, events, _) = hub.history_span();
        assert_eq!((oldest, events), (12, 0));
    }

    #[test]
    fn bookkeeping_events_take_no_room_and_a_snapshot_starts_the_history_afresh() {
        let (hub, shared) = hub(HistoryBounds {
            events: 2,
            bytes: 1 << 20,
        });
        apply(&shared, 1, &[acquired("a", 1)]);
        let opened = Event::SessionOpened {
            session: SessionId(2),
            client_id: ClientId(2),
            ttl_ms: 1_000,
        };
        for index in 2..=20 {
            apply(&shared, index, std::slice::from_ref(&opened));
        }
        assert_eq!(start(&hub, &shared, 1), Ok(vec![1]));
        shared.write(|applied, observer| {
            applied.last_applied = Some(crate::raft::LogId::new(
                openraft::CommittedLeaderId::new(1, 1),
                30,
            ));
            observer.reset(applied);
        });
        assert_eq!(
            start(&hub, &shared, 30),
            Err(Compacted {
                oldest_revision: 31
            })
        );
        assert_eq!(start(&hub, &shared, 31), Ok(vec![]));
    }
}
