//! The newer primitives of the real state machine at small scope: a counting semaphore
//! with weighted permits, an atomic multi-lock crossing single-name acquires, a
//! reentrant lock, and a lock-delay, driven by 2–3 clients and a leader.
//!
//! Each client is either idle (holds nothing, waits for nothing), waiting (one request
//! queued), or holding what one request gave it; an idle client acquires one of
//! [`MENU`], a holder releases (once per hold) or re-enters its reentrant lock, a waiter
//! may withdraw. The leader may expire any client's session (which starts a lock-delay
//! if its grant asked for one) and end any lock-delay at any step (time is not modelled:
//! any moment is a possible end of the delay). A client never holds one request's locks
//! while it waits for another's, so any deadlock would be the state machine's.
//!
//! Checked in every reachable state ([`PrimitivesModel::properties`]):
//!
//! - `check_invariants()`;
//! - never more permits out than the semaphore's limit;
//! - a multi-lock is granted all at once or not at all (a waiting request holds none of
//!   its names, a granted one all);
//! - no grant on a name while its lock-delay is in force;
//! - the state's hold count is the client's own count of holds;
//! - FIFO: a grant at once finds no queue on its names, and grants from a queue take its
//!   head (no barging, so nobody waits forever behind later arrivals);
//! - **no deadlock**: if every holder releases everything and the leader ends every
//!   lock-delay, with no new request, every waiter is granted in finitely many steps.
//!
//! Each rule has a mutant (`fencelock_core::mutants`, a test-only feature) that
//! `tests/primitives_mutants.rs` requires the checker to refute.

use std::collections::BTreeSet;

use fencelock_core::{
    ClientId, Command, Event, LockMode, LockSpec, RequestId, Response, SessionId, State, WaitPolicy,
};
use stateright::{Model, Property};

use crate::hashed::Hashed;

/// The semaphore, the two exclusive names of the multi-lock (one with a lock-delay, one
/// reentrant).
pub const NAMES: [&str; 3] = ["s", "x", "y"];

/// The requests an idle client may make, by index.
pub const MENU: [&str; 6] = [
    "one permit of s (2 permits)",
    "two permits of s",
    "x and y at once",
    "x alone, reentrant",
    "y alone, with a lock-delay",
    "x and y at once, y with a lock-delay",
];

/// The specs of request `index` of [`MENU`].
pub fn request(index: u8) -> Vec<LockSpec> {
    let sem = |weight| LockSpec {
        weight,
        ..LockSpec::semaphore("s", 2)
    };
    let x = LockSpec::new("x", LockMode::Exclusive);
    let y = LockSpec::new("y", LockMode::Exclusive);
    let delayed = LockSpec {
        lock_delay_ms: 1_000,
        ..y.clone()
    };
    match index {
        0 => vec![sem(1)],
        1 => vec![sem(2)],
        2 => vec![x, y],
        3 => vec![LockSpec {
            reentrant: true,
            ..x
        }],
        4 => vec![delayed],
        _ => vec![x, delayed],
    }
}

/// The scope of a check.
#[derive(Clone, Debug)]
pub struct PrimitivesModel {
    /// Clients, each with one session open from the start (1 to 3).
    pub clients: usize,
    /// Which entries of [`MENU`] clients may ask for.
    pub menu: Vec<u8>,
}

/// One step: a command that gets committed and applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PrimitivesAction {
    /// An idle client asks for [`MENU`] entry `request`, queueing.
    Acquire {
        /// The client.
        client: u8,
        /// Index into [`MENU`].
        request: u8,
    },
    /// A holder of a reentrant lock takes it again.
    Reenter {
        /// The client.
        client: u8,
    },
    /// A holder releases one hold of a name it holds.
    Release {
        /// The client.
        client: u8,
        /// Index into [`NAMES`].
        name: u8,
    },
    /// A waiting client withdraws its request.
    Cancel {
        /// The client.
        client: u8,
    },
    /// The leader expires the client's session.
    Expire {
        /// The client.
        client: u8,
    },
    /// The leader ends the lock-delay on a name.
    EndDelay {
        /// Index into [`NAMES`].
        name: u8,
    },
}

/// What a client knows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientState {
    /// Its session (`None` once expired).
    pub session: Option<SessionId>,
    /// Its next request's sequence number.
    pub next_seq: u64,
    /// The names of its request in flight or granted, and whether it was granted.
    pub request: Option<(Vec<String>, bool)>,
    /// How many holds of the reentrant lock it has taken and not released.
    pub holds: u32,
}

/// A state of the model.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PrimitivesState {
    /// The replicated state machine.
    pub core: Hashed<State>,
    /// The clients.
    pub clients: Vec<ClientState>,
    /// The first step-property violation seen on the path.
    pub violation: Option<String>,
    /// Witnesses.
    pub seen: BTreeSet<&'static str>,
}

impl PrimitivesModel {
    /// A scope: `clients` clients, the whole menu.
    pub fn new(clients: usize) -> PrimitivesModel {
        assert!((1..=3).contains(&clients), "1 to 3 clients");
        PrimitivesModel {
            clients,
            menu: (0..MENU.len() as u8).collect(),
        }
    }

    fn command(state: &PrimitivesState, action: PrimitivesAction) -> Option<Command> {
        let client_state = |client: u8| &state.clients[usize::from(client)];
        let fresh = |client: u8| {
            let seq = client_state(client).next_seq;
            RequestId {
                seq,
                first_unanswered_seq: seq,
            }
        };
        Some(match action {
            PrimitivesAction::Acquire { client, request: r } => Command::AcquireLocks {
                session: client_state(client).session?,
                request: fresh(client),
                locks: request(r),
                wait: WaitPolicy::Queue,
                value: vec![client],
            },
            PrimitivesAction::Reenter { client } => Command::AcquireLocks {
                session: client_state(client).session?,
                request: fresh(client),
                locks: request(3),
                wait: WaitPolicy::Queue,
                value: vec![client],
            },
            PrimitivesAction::Release { client, name } => {
                let session = client_state(client).session?;
                let name = NAMES[usize::from(name)];
                let token = state.core.0.held_token(session, name)?;
                Command::Release {
                    session,
                    request: fresh(client),
                    name: name.to_owned(),
                    token,
                }
            }
            PrimitivesAction::Cancel { client } => {
                let (names, _) = client_state(client).request.as_ref()?;
                Command::CancelWait {
                    session: client_state(client).session?,
                    name: names.first()?.clone(),
                }
            }
            PrimitivesAction::Expire { client } => Command::ExpireSessions {
                sessions: vec![client_state(client).session?],
            },
            PrimitivesAction::EndDelay { name } => {
                let name = NAMES[usize::from(name)];
                let delay = state.core.0.lock_delay(name)?;
                Command::EndLockDelay {
                    name: name.to_owned(),
                    token: delay.token,
                }
            }
        })
    }
}

/// Whether `session` holds `name`.
fn holds(core: &State, session: SessionId, name: &str) -> bool {
    core.held_token(session, name).is_some()
}

/// The sessions queued on `name`, in order.
fn queue_of(core: &State, name: &str) -> Vec<SessionId> {
    core.lock(name)
        .map(|lock| lock.waiters.iter().map(|w| w.session).collect())
        .unwrap_or_default()
}

/// Every waiter is granted if every session that waits for nothing releases everything
/// and every lock-delay ends, repeatedly, with no new request: `None`, or the deadlock.
pub fn drains(core: &State) -> Option<String> {
    let mut core = core.clone();
    let mut events = Vec::new();
    let mut seq = 1_000_000;
    for _ in 0..64 {
        let (locks, _) = core.locks_with_prefix("", None, 64);
        if locks.iter().all(|lock| lock.waiters.is_empty()) {
            return None;
        }
        let mut acted = false;
        for lock in &locks {
            if let Some(delay) = lock.delay {
                core.apply(
                    Command::EndLockDelay {
                        name: lock.name.clone(),
                        token: delay.token,
                    },
                    &mut events,
                )
                .expect("ending a delay in force");
                acted = true;
            }
            for holder in &lock.holders {
                let waits = core
                    .session(holder.session)
                    .is_some_and(|view| !view.waiting.is_empty());
                if waits {
                    continue;
                }
                for _ in 0..holder.hold_count {
                    seq += 1;
                    let released = core.apply(
                        Command::Release {
                            session: holder.session,
                            request: RequestId {
                                seq,
                                first_unanswered_seq: seq,
                            },
                            name: lock.name.clone(),
                            token: holder.token,
                        },
                        &mut events,
                    );
                    acted |= released.is_ok();
                }
            }
        }
        if !acted {
            let stuck: Vec<(String, Vec<SessionId>)> = locks
                .iter()
                .filter(|lock| !lock.waiters.is_empty())
                .map(|lock| {
                    (
                        lock.name.clone(),
                        lock.waiters.iter().map(|w| w.session).collect(),
                    )
                })
                .collect();
            return Some(format!("deadlock: waiters {stuck:?} can never be granted"));
        }
    }
    Some("no progress in 64 rounds".to_owned())
}

/// The step properties, against the state before the step.
fn check_step(
    before: &State,
    after: &State,
    command: &Command,
    result: &Result<Response, fencelock_core::Error>,
    events: &[Event],
) -> Result<(), String> {
    let ended: BTreeSet<&str> = events
        .iter()
        .filter_map(|event| match event {
            Event::LockDelayEnded { name, .. } => Some(name.as_str()),
            _ => None,
        })
        .collect();
    let withdrawn: BTreeSet<(SessionId, &str)> = events
        .iter()
        .filter_map(|event| match event {
            Event::WaitCancelled { name, session } => Some((*session, name.as_str())),
            _ => None,
        })
        .collect();
    let at_once = matches!(result, Ok(Response::GrantedLocks { .. }))
        && matches!(command, Command::AcquireLocks { .. });
    for name in NAMES {
        let granted: Vec<SessionId> = events
            .iter()
            .filter_map(|event| match event {
                Event::Acquired {
                    name: n, session, ..
                } if n == name => Some(*session),
                _ => None,
            })
            .collect();
        if granted.is_empty() {
            continue;
        }
        if before.lock_delay(name).is_some() && !ended.contains(name) {
            return Err(format!("lock {name:?} granted during its lock-delay"));
        }
        let queue: Vec<SessionId> = queue_of(before, name)
            .into_iter()
            .filter(|session| !withdrawn.contains(&(*session, name)))
            .collect();
        if at_once {
            if !queue.is_empty() {
                return Err(format!(
                    "lock {name:?} granted at once past the queue {queue:?}"
                ));
            }
        } else if !queue.starts_with(&granted) {
            return Err(format!(
                "lock {name:?} granted {granted:?} out of queue order {queue:?}"
            ));
        }
    }
    let _ = after;
    Ok(())
}

impl Model for PrimitivesModel {
    type State = PrimitivesState;
    type Action = PrimitivesAction;

    fn init_states(&self) -> Vec<PrimitivesState> {
        let mut core = State::default();
        let mut events = Vec::new();
        let clients = (0..self.clients)
            .map(|client| {
                let opened = core.apply(
                    Command::OpenSession {
                        client_id: ClientId(client as u128 + 1),
                        ttl_ms: 1_000,
                    },
                    &mut events,
                );
                let Ok(Response::SessionOpened { session, .. }) = opened else {
                    panic!("opening session {client} failed: {opened:?}");
                };
                ClientState {
                    session: Some(session),
                    next_seq: 1,
                    request: None,
                    holds: 0,
                }
            })
            .collect();
        vec![PrimitivesState {
            core: Hashed(core),
            clients,
            violation: None,
            seen: BTreeSet::new(),
        }]
    }

    fn actions(&self, state: &PrimitivesState, actions: &mut Vec<PrimitivesAction>) {
        for (index, client_state) in state.clients.iter().enumerate() {
            let client = u8::try_from(index).expect("few clients");
            let Some(session) = client_state.session else {
                continue;
            };
            match &client_state.request {
                None => {
                    for &request in &self.menu {
                        actions.push(PrimitivesAction::Acquire { client, request });
                    }
                }
                Some((_, false)) => actions.push(PrimitivesAction::Cancel { client }),
                Some((_, true)) => {
                    if client_state.holds > 0 && client_state.holds < 2 {
                        actions.push(PrimitivesAction::Reenter { client });
                    }
                    for (name_index, name) in NAMES.iter().enumerate() {
                        if holds(&state.core.0, session, name) {
                            actions.push(PrimitivesAction::Release {
                                client,
                                name: u8::try_from(name_index).expect("few names"),
                            });
                        }
                    }
                }
            }
            actions.push(PrimitivesAction::Expire { client });
        }
        for (name_index, name) in NAMES.iter().enumerate() {
            if state.core.0.lock_delay(name).is_some() {
                actions.push(PrimitivesAction::EndDelay {
                    name: u8::try_from(name_index).expect("few names"),
                });
            }
        }
    }

    fn next_state(
        &self,
        state: &PrimitivesState,
        action: PrimitivesAction,
    ) -> Option<PrimitivesState> {
        let command = Self::command(state, action)?;
        let mut next = state.clone();
        let mut events = Vec::new();
        let result = next.core.0.apply(command.clone(), &mut events);
        let mut violation =
            check_step(&state.core.0, &next.core.0, &command, &result, &events).err();

        // What the clients learn.
        match action {
            PrimitivesAction::Acquire { client, request: r } => {
                let client_state = &mut next.clients[usize::from(client)];
                client_state.next_seq += 1;
                let names = request(r).into_iter().map(|spec| spec.name).collect();
                match &result {
                    Ok(Response::GrantedLocks { .. }) => {
                        client_state.request = Some((names, true));
                        if r == 3 {
                            client_state.holds = 1;
                        }
                    }
                    Ok(Response::Queued { .. }) => client_state.request = Some((names, false)),
                    _ => {}
                }
            }
            PrimitivesAction::Reenter { client } => {
                let client_state = &mut next.clients[usize::from(client)];
                client_state.next_seq += 1;
                if matches!(result, Ok(Response::GrantedLocks { .. })) {
                    client_state.holds += 1;
                    next.seen.insert("a reentrant lock held twice");
                }
            }
            PrimitivesAction::Release { client, name } => {
                let client_state = &mut next.clients[usize::from(client)];
                client_state.next_seq += 1;
                if NAMES[usize::from(name)] == "x" && client_state.holds > 0 {
                    client_state.holds -= 1;
                }
            }
            _ => {}
        }
        for event in &events {
            match event {
                Event::SessionEnded { session, .. } => {
                    for client_state in &mut next.clients {
                        if client_state.session == Some(*session) {
                            client_state.session = None;
                            client_state.request = None;
                            client_state.holds = 0;
                        }
                    }
                }
                Event::WaitCancelled { session, .. } => {
                    for client_state in &mut next.clients {
                        if client_state.session == Some(*session)
                            && matches!(client_state.request, Some((_, false)))
                        {
                            client_state.request = None;
                        }
                    }
                }
                Event::Acquired { session, name, .. } => {
                    for client_state in &mut next.clients {
                        if client_state.session == Some(*session)
                            && let Some((names, false)) = &client_state.request
                            && name == "x"
                            && client_state.holds == 0
                            && names.len() == 1
                        {
                            client_state.holds = 1;
                        }
                    }
                }
                Event::LockDelayStarted { .. } => {
                    next.seen.insert("a lock-delay started");
                }
                Event::LockDelayEnded { .. } => {
                    next.seen.insert("a lock-delay ended");
                }
                _ => {}
            }
        }
        if let Some(lock) = next.core.0.lock("s")
            && lock.permits_free() == Some(0)
            && !lock.waiters.is_empty()
        {
            next.seen.insert("a full semaphore with a waiter");
        }
        if violation.is_none()
            && let Some(client) = next.clients.iter().find(|c| {
                c.session.is_some_and(|session| {
                    let held = next.core.0.lock("x").and_then(|lock| {
                        lock.holders
                            .iter()
                            .find(|h| h.session == session)
                            .map(|h| h.hold_count)
                    });
                    c.holds > 0 && held != Some(c.holds)
                })
            })
        {
            violation = Some(format!(
                "hold count: client holds {} times, the state says otherwise ({:?})",
                client.holds,
                next.core.0.lock("x").map(|lock| lock.holders)
            ));
        }
        // A waiting client learns it was granted when it holds every name it asked for.
        for client_state in &mut next.clients {
            if let (Some(session), Some((names, granted @ false))) =
                (client_state.session, &mut client_state.request)
                && names.iter().all(|name| holds(&next.core.0, session, name))
            {
                *granted = true;
                if names.len() > 1 {
                    next.seen.insert("a multi-lock granted from its queues");
                }
            }
        }
        // A client whose every grant is released is idle again.
        for client_state in &mut next.clients {
            if let (Some(session), Some((_, true))) = (client_state.session, &client_state.request)
                && NAMES.iter().all(|name| !holds(&next.core.0, session, name))
            {
                client_state.request = None;
                client_state.holds = 0;
            }
        }
        if let Some(violation) = violation
            && next.violation.is_none()
        {
            next.violation = Some(violation);
        }
        Some(next)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("no step violated a property", |_, s: &PrimitivesState| {
                s.violation.is_none()
            }),
            Property::always("check_invariants() holds", |_, s: &PrimitivesState| {
                s.core.0.check_invariants().is_ok()
            }),
            Property::always(
                "never more permits out than the limit",
                |_, s: &PrimitivesState| {
                    s.core.0.lock("s").is_none_or(|lock| {
                        lock.permits
                            .is_some_and(|permits| lock.permits_used <= u64::from(permits))
                    })
                },
            ),
            Property::always(
                "a multi-lock is granted all at once or not at all",
                |_, s: &PrimitivesState| {
                    s.clients.iter().all(|c| {
                        let (Some(session), Some((names, granted))) = (c.session, &c.request)
                        else {
                            return true;
                        };
                        let held = names
                            .iter()
                            .filter(|name| holds(&s.core.0, session, name))
                            .count();
                        if *granted { true } else { held == 0 }
                    })
                },
            ),
            Property::always(
                "no deadlock: every waiter is granted once holders release",
                |_, s: &PrimitivesState| drains(&s.core.0).is_none(),
            ),
            Property::sometimes(
                "a full semaphore with a waiter",
                |_, s: &PrimitivesState| s.seen.contains("a full semaphore with a waiter"),
            ),
            Property::sometimes(
                "a multi-lock granted from its queues",
                |_, s: &PrimitivesState| s.seen.contains("a multi-lock granted from its queues"),
            ),
            Property::sometimes("a reentrant lock held twice", |_, s: &PrimitivesState| {
                s.seen.contains("a reentrant lock held twice")
            }),
            Property::sometimes("a lock-delay started", |_, s: &PrimitivesState| {
                s.seen.contains("a lock-delay started")
            }),
            Property::sometimes("a lock-delay ended", |_, s: &PrimitivesState| {
                s.seen.contains("a lock-delay ended")
            }),
        ]
    }
}
