//! The lock state machine driven by a few clients and a leader: an exhaustive,
//! depth-bounded check of docs/design.md invariants 1, 2, 3, 4, 7 and 8, of
//! [`State::check_invariants`], and of request deduplication.
//!
//! The model's state is the real [`fencelock_core::State`] (every step calls the real
//! [`State::apply`]), starting with every client's session open, plus what the clients
//! know (their session, their last request and
//! the answer a retry of it must get) and a history of every grant ever made. Each
//! action is one command a client or the leader could get committed:
//!
//! | action | command | who |
//! |---|---|---|
//! | [`LockAction::Open`] | `OpenSession` again: a retry, which must return the same session | client |
//! | [`LockAction::Acquire`] | `Acquire`, exclusive or shared, queue or no-wait, fresh request id | client |
//! | [`LockAction::Release`] | `Release` with the session's own current token | client |
//! | [`LockAction::ReleaseStale`] | `Release` with the lock's newest token that is not this session's current grant (an old grant of its own, or another session's) | client |
//! | [`LockAction::Cancel`] | `CancelWait` (deadline passed) | server, for the client |
//! | [`LockAction::Close`] | `CloseSession` | client |
//! | [`LockAction::Expire`] | `ExpireSessions` of one session | leader |
//! | [`LockAction::ExpireAll`] | `ExpireSessions` of every live session in one entry | leader |
//! | [`LockAction::Retry`] | the client's last `Acquire`/`Release` again, same request id | client after a lost answer or a leader change |
//!
//! Properties checked on every reachable state are listed in [`LockModel::properties`].
//! Those about a step (FIFO, liveness of grantees, who may release, dedup) are checked
//! in [`LockModel::next_state`] against the state before the step, and a failure is kept
//! in [`LockState::violation`] so that the `always` property reports it with its path.

use std::collections::BTreeSet;

use fencelock_core::{
    ClientId, Command, Error, Event, FencingToken, Limits, LockMode, ReleaseReason, RequestId,
    Response, SessionId, State, WaitPolicy,
};
use stateright::{Model, Property};

use crate::hashed::Hashed;

/// Lock names used by the model, by index.
pub const LOCK_NAMES: [&str; 3] = ["a", "b", "c"];

/// The TTL every session is opened with (time is not modelled here: the leader may expire
/// any live session at any step, which covers every timing).
pub const TTL_MS: u64 = 1_000;

/// The scope of a check: how many clients, how many locks, how deep.
#[derive(Clone, Debug)]
pub struct LockModel {
    /// Clients, each with one session, open from the start (1 to 3).
    pub clients: usize,
    /// Lock names used (1 to [`LOCK_NAMES`]`.len()`).
    pub locks: usize,
    /// Whether clients may ask for shared locks (off halves the branching).
    pub shared: bool,
    /// Whether clients may use `WaitPolicy::NoWait`.
    pub no_wait: bool,
    /// A fault for testing the check itself: retries carry a fresh request id, so the
    /// state machine cannot recognise them and the dedup property must fail.
    pub retry_with_fresh_request_id: bool,
}

/// One step of the model: a command that gets committed and applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockAction {
    /// Client opens its session (or retries the open).
    Open {
        /// The client.
        client: u8,
    },
    /// Client acquires a lock with a fresh request id.
    Acquire {
        /// The client.
        client: u8,
        /// Index into [`LOCK_NAMES`].
        lock: u8,
        /// Exclusive or shared.
        mode: LockMode,
        /// `true`: queue; `false`: no-wait.
        queue: bool,
    },
    /// Client releases a lock it holds, with its current token.
    Release {
        /// The client.
        client: u8,
        /// Index into [`LOCK_NAMES`].
        lock: u8,
        /// The token sent.
        token: u64,
    },
    /// Client releases a lock with a token that is not its current grant of it.
    ReleaseStale {
        /// The client.
        client: u8,
        /// Index into [`LOCK_NAMES`].
        lock: u8,
        /// The token sent.
        token: u64,
    },
    /// The wait of the client's session for a lock is withdrawn.
    Cancel {
        /// The client.
        client: u8,
        /// Index into [`LOCK_NAMES`].
        lock: u8,
    },
    /// Client closes its session.
    Close {
        /// The client.
        client: u8,
    },
    /// The leader expires the client's session.
    Expire {
        /// The client.
        client: u8,
    },
    /// The leader expires every live session in one entry.
    ExpireAll,
    /// Client retries its last `Acquire` or `Release` with the same request id.
    Retry {
        /// The client.
        client: u8,
    },
}

/// One grant, as recorded in [`LockState::history`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Grant {
    /// Index into [`LOCK_NAMES`].
    pub lock: u8,
    /// The session granted.
    pub session: u64,
    /// Its token.
    pub token: u64,
    /// Exclusive or shared.
    pub mode: LockMode,
    /// Granted from the wait queue (a handoff), not at once.
    pub from_queue: bool,
}

/// What a client knows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientState {
    /// Its session, once opened.
    pub session: Option<SessionId>,
    /// Its session was closed or expired.
    pub ended: bool,
    /// The sequence number of its next request.
    pub next_seq: u64,
    /// Its last `Acquire` or `Release`, with the answer a retry must get (the first
    /// answer, kept current as the state machine keeps it: a `Queued` answer becomes
    /// `Granted` or `WaitCancelled`; after the session ended, `SessionNotFound`).
    pub last: Option<(Hashed<Command>, Hashed<Answer>)>,
}

/// A command's answer, as `State::apply` returns it.
pub type Answer = Result<Response, Error>;

/// A state of the model.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LockState {
    /// The replicated state machine.
    pub core: Hashed<State>,
    /// The clients.
    pub clients: Vec<ClientState>,
    /// Every grant ever made, in order.
    pub history: Vec<Grant>,
    /// Some step released a held lock by expiring its holder.
    pub expiry_released_held: bool,
    /// Some step granted two or more shared waiters together.
    pub shared_heads_together: bool,
    /// The first step-property violation seen on the path, described.
    pub violation: Option<String>,
}

impl LockModel {
    /// A scope: `clients` clients over `locks` lock names, shared and no-wait included.
    pub fn new(clients: usize, locks: usize) -> LockModel {
        assert!((1..=3).contains(&clients), "1 to 3 clients");
        assert!((1..=LOCK_NAMES.len()).contains(&locks), "1 to 3 locks");
        LockModel {
            clients,
            locks,
            shared: true,
            no_wait: true,
            retry_with_fresh_request_id: false,
        }
    }

    /// The limits the state machine runs with: defaults, which no small scope reaches.
    pub fn limits() -> Limits {
        Limits::default()
    }

    fn command(&self, state: &LockState, action: LockAction) -> Option<Command> {
        let session_of = |client: u8| state.clients[usize::from(client)].session;
        let fresh = |client: u8| {
            let seq = state.clients[usize::from(client)].next_seq;
            RequestId {
                seq,
                first_unanswered_seq: seq,
            }
        };
        Some(match action {
            LockAction::Open { client } => Command::OpenSession {
                client_id: ClientId(u128::from(client) + 1),
                ttl_ms: TTL_MS,
            },
            LockAction::Acquire {
                client,
                lock,
                mode,
                queue,
            } => Command::Acquire {
                session: session_of(client)?,
                request: fresh(client),
                name: LOCK_NAMES[usize::from(lock)].to_owned(),
                mode,
                wait: if queue {
                    WaitPolicy::Queue
                } else {
                    WaitPolicy::NoWait
                },
                value: vec![client],
            },
            LockAction::Release {
                client,
                lock,
                token,
            }
            | LockAction::ReleaseStale {
                client,
                lock,
                token,
            } => Command::Release {
                session: session_of(client)?,
                request: fresh(client),
                name: LOCK_NAMES[usize::from(lock)].to_owned(),
                token: FencingToken(token),
            },
            LockAction::Cancel { client, lock } => Command::CancelWait {
                session: session_of(client)?,
                name: LOCK_NAMES[usize::from(lock)].to_owned(),
            },
            LockAction::Close { client } => Command::CloseSession {
                session: session_of(client)?,
            },
            LockAction::Expire { client } => Command::ExpireSessions {
                sessions: vec![session_of(client)?],
            },
            LockAction::ExpireAll => Command::ExpireSessions {
                sessions: state.core.0.sessions().map(|(s, _)| s).collect(),
            },
            LockAction::Retry { client } => {
                let mut command = state.clients[usize::from(client)]
                    .last
                    .as_ref()?
                    .0
                    .0
                    .clone();
                if self.retry_with_fresh_request_id
                    && let Command::Acquire { request, .. } | Command::Release { request, .. } =
                        &mut command
                {
                    *request = fresh(client);
                }
                command
            }
        })
    }
}

/// Index of a lock name in [`LOCK_NAMES`].
fn lock_index(name: &str) -> u8 {
    let index = LOCK_NAMES
        .iter()
        .position(|n| *n == name)
        .expect("model lock name");
    u8::try_from(index).expect("few locks")
}

/// The sessions queued on lock `name`, in order.
fn queue_of(core: &State, name: &str) -> Vec<SessionId> {
    core.lock(name)
        .map(|lock| lock.waiters.iter().map(|w| w.session).collect())
        .unwrap_or_default()
}

/// Whether `session` holds `name` with `token` in `core`.
fn holds(core: &State, session: SessionId, name: &str, token: FencingToken) -> bool {
    core.session(session)
        .is_some_and(|view| view.held.iter().any(|(n, t)| n == name && *t == token))
}

/// The step properties: checks one applied command against the state before it.
struct StepCheck<'a> {
    before: &'a State,
    after: &'a State,
    command: &'a Command,
    result: &'a Result<Response, Error>,
    events: &'a [Event],
    history: &'a [Grant],
}

impl StepCheck<'_> {
    fn run(&self) -> Result<(), String> {
        self.grants()?;
        self.fifo()?;
        self.releases()?;
        Ok(())
    }

    /// Invariants 2 and 7 for every grant of the step.
    fn grants(&self) -> Result<(), String> {
        let mut ended = BTreeSet::new();
        let mut minted = Vec::new();
        for event in self.events {
            match event {
                Event::SessionEnded { session, .. } => {
                    ended.insert(*session);
                }
                Event::Acquired {
                    name,
                    session,
                    token,
                    ..
                } => {
                    if self.before.session(*session).is_none() || ended.contains(session) {
                        return Err(format!(
                            "invariant 7: lock {name:?} granted to ended session {session}"
                        ));
                    }
                    let lock = lock_index(name);
                    let earlier = self.history.iter().chain(&minted);
                    for grant in earlier {
                        if grant.token == token.0 {
                            return Err(format!("invariant 2: token {token} granted twice"));
                        }
                        if grant.lock == lock && grant.token > token.0 {
                            return Err(format!(
                                "invariant 2: lock {name:?} granted token {token} after {}",
                                grant.token
                            ));
                        }
                    }
                    minted.push(Grant {
                        lock,
                        session: session.0,
                        token: token.0,
                        mode: LockMode::Exclusive,
                        from_queue: false,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The grant this command made at once (an `Acquire` answered `Granted`), if any.
    fn immediate_grant(&self) -> Option<(SessionId, &str)> {
        match (self.command, self.result) {
            (Command::Acquire { name, .. }, Ok(Response::Granted { session, .. }))
                if self.events.iter().any(|e| {
                    matches!(e, Event::Acquired { session: s, name: n, .. } if s == session && n == name)
                }) =>
            {
                Some((*session, name.as_str()))
            }
            _ => None,
        }
    }

    /// Invariant 4: per lock, the waiters granted are a prefix of the queue (after the
    /// waits this step withdrew), the rest keep their order, an immediate grant jumps no
    /// queue, and afterwards no queue head could be granted.
    fn fifo(&self) -> Result<(), String> {
        let withdrawn: BTreeSet<(SessionId, &str)> = self
            .events
            .iter()
            .filter_map(|e| match e {
                Event::WaitCancelled { name, session } => Some((*session, name.as_str())),
                _ => None,
            })
            .collect();
        let immediate = self.immediate_grant();
        for name in LOCK_NAMES {
            let before: Vec<SessionId> = queue_of(self.before, name)
                .into_iter()
                .filter(|s| !withdrawn.contains(&(*s, name)))
                .collect();
            let granted: Vec<SessionId> = self
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::Acquired {
                        name: n, session, ..
                    } if n == name => Some(*session),
                    _ => None,
                })
                .filter(|s| immediate != Some((*s, name)))
                .collect();
            if immediate.is_some_and(|(_, n)| n == name) && !before.is_empty() {
                return Err(format!(
                    "invariant 4: lock {name:?} granted at once past a queue of {before:?}"
                ));
            }
            if !before.starts_with(&granted) {
                return Err(format!(
                    "invariant 4: lock {name:?} granted {granted:?} out of queue order {before:?}"
                ));
            }
            let mut expected: Vec<SessionId> = before[granted.len()..].to_vec();
            if let (Command::Acquire { name: n, .. }, Ok(Response::Queued { session })) =
                (self.command, self.result)
                && n == name
                && !queue_of(self.before, name).contains(session)
            {
                expected.push(*session);
            }
            let after = queue_of(self.after, name);
            if after != expected {
                return Err(format!(
                    "invariant 4: queue of {name:?} went from {:?} to {after:?}, expected {expected:?}",
                    queue_of(self.before, name)
                ));
            }
            if let Some(lock) = self.after.lock(name)
                && let Some(head) = lock.waiters.first()
            {
                let admissible = match head.mode {
                    LockMode::Exclusive => lock.holders.is_empty(),
                    LockMode::Shared => lock.holders.iter().all(|h| h.mode == LockMode::Shared),
                };
                if admissible {
                    return Err(format!(
                        "invariant 4: head {} of {name:?}'s queue left waiting though grantable",
                        head.session
                    ));
                }
            }
        }
        Ok(())
    }

    /// Invariant 8: a grant ends by `Release` only for its holder with its token; a
    /// session's end releases only that session's grants; nothing else releases.
    fn releases(&self) -> Result<(), String> {
        let ended: BTreeSet<SessionId> = self
            .events
            .iter()
            .filter_map(|e| match e {
                Event::SessionEnded { session, .. } => Some(*session),
                _ => None,
            })
            .collect();
        for event in self.events {
            let Event::Released {
                name,
                session,
                token,
                reason,
            } = event
            else {
                continue;
            };
            // A grant may end in the entry that made it: expiring a holder and its
            // queued successor in one batch hands the lock on, then releases it.
            let minted_here = self.events.iter().any(|e| {
                matches!(e, Event::Acquired { name: n, session: s, token: t, .. }
                    if n == name && s == session && t == token)
            });
            if !holds(self.before, *session, name, *token) && !minted_here {
                return Err(format!(
                    "invariant 8: released {name:?} token {token} that session {session} did not hold"
                ));
            }
            let allowed = match reason {
                ReleaseReason::Released => matches!(
                    self.command,
                    Command::Release { session: s, name: n, token: t, .. }
                        if s == session && n == name && t == token
                ),
                ReleaseReason::SessionClosed
                | ReleaseReason::SessionExpired
                | ReleaseReason::Revoked => ended.contains(session),
                ReleaseReason::Forced => false,
            };
            if !allowed {
                return Err(format!(
                    "invariant 8: {name:?} token {token} of session {session} released ({reason:?}) by {:?}",
                    self.command
                ));
            }
        }
        if let Command::Release {
            session,
            name,
            token,
            ..
        } = self.command
        {
            let rightful = holds(self.before, *session, name, *token);
            let released = *self.result == Ok(Response::Released);
            // A retry of an answered release replays `Released` and changes nothing.
            let replayed = released && self.before == self.after;
            if released != rightful && !replayed {
                return Err(format!(
                    "invariant 8: release of {name:?} with token {token} by session {session} \
                     answered {:?} (holder with that token: {rightful})",
                    self.result
                ));
            }
            if !rightful
                && self.before.lock(name).map(|l| l.holders)
                    != self.after.lock(name).map(|l| l.holders)
            {
                return Err(format!(
                    "invariant 8: refused release of {name:?} changed its holders"
                ));
            }
        }
        Ok(())
    }
}

impl Model for LockModel {
    type State = LockState;
    type Action = LockAction;

    /// One state: every client has opened its session (the opens are the least
    /// interesting steps, and starting after them leaves the depth bound to the rest).
    fn init_states(&self) -> Vec<LockState> {
        let mut core = State::new(Self::limits());
        let mut events = Vec::new();
        let clients = (0..self.clients)
            .map(|client| {
                let opened = core.apply(
                    Command::OpenSession {
                        client_id: ClientId(client as u128 + 1),
                        ttl_ms: TTL_MS,
                    },
                    &mut events,
                );
                let Ok(Response::SessionOpened { session, .. }) = opened else {
                    panic!("opening session {client} failed: {opened:?}");
                };
                ClientState {
                    session: Some(session),
                    ended: false,
                    next_seq: 1,
                    last: None,
                }
            })
            .collect();
        vec![LockState {
            core: Hashed(core),
            clients,
            history: Vec::new(),
            expiry_released_held: false,
            shared_heads_together: false,
            violation: None,
        }]
    }

    fn actions(&self, state: &LockState, actions: &mut Vec<LockAction>) {
        if state.violation.is_some() {
            return;
        }
        let core = &state.core.0;
        let locks = u8::try_from(self.locks).expect("few locks");
        let mut live = 0;
        for (index, client_state) in state.clients.iter().enumerate() {
            let client = u8::try_from(index).expect("few clients");
            let Some(session) = client_state.session else {
                actions.push(LockAction::Open { client });
                continue;
            };
            if client_state.last.is_some() {
                actions.push(LockAction::Retry { client });
            }
            let Some(view) = core.session(session) else {
                continue;
            };
            live += 1;
            actions.push(LockAction::Open { client });
            for lock in 0..locks {
                let name = LOCK_NAMES[usize::from(lock)];
                let held = view.held.iter().find(|(n, _)| n == name).map(|(_, t)| t.0);
                let waiting = view.waiting.iter().any(|n| n == name);
                if held.is_none() && !waiting {
                    let modes: &[LockMode] = if self.shared {
                        &[LockMode::Exclusive, LockMode::Shared]
                    } else {
                        &[LockMode::Exclusive]
                    };
                    let waits: &[bool] = if self.no_wait {
                        &[true, false]
                    } else {
                        &[true]
                    };
                    for &mode in modes {
                        for &queue in waits {
                            actions.push(LockAction::Acquire {
                                client,
                                lock,
                                mode,
                                queue,
                            });
                        }
                    }
                }
                if let Some(token) = held {
                    actions.push(LockAction::Release {
                        client,
                        lock,
                        token,
                    });
                }
                let stale = state
                    .history
                    .iter()
                    .rev()
                    .find(|g| g.lock == lock && Some(g.token) != held)
                    .map(|g| g.token);
                if let Some(token) = stale {
                    actions.push(LockAction::ReleaseStale {
                        client,
                        lock,
                        token,
                    });
                }
                if waiting || held.is_some() {
                    actions.push(LockAction::Cancel { client, lock });
                }
            }
            actions.push(LockAction::Close { client });
            actions.push(LockAction::Expire { client });
        }
        if live >= 2 {
            actions.push(LockAction::ExpireAll);
        }
    }

    fn next_state(&self, state: &LockState, action: LockAction) -> Option<LockState> {
        let command = self.command(state, action)?;
        let mut next = state.clone();
        let mut events = Vec::new();
        let result = next.core.0.apply(command.clone(), &mut events);
        let before = &state.core.0;
        let check = StepCheck {
            before,
            after: &next.core.0,
            command: &command,
            result: &result,
            events: &events,
            history: &state.history,
        };
        let mut violation = check.run().err();

        // Dedup: a retry gets the remembered answer and changes nothing.
        let retry = match action {
            LockAction::Retry { client } => Some(client),
            LockAction::Open { client } if state.clients[usize::from(client)].session.is_some() => {
                Some(client)
            }
            _ => None,
        };
        if let Some(client) = retry {
            let client_state = &state.clients[usize::from(client)];
            let expected = match action {
                LockAction::Open { .. } => Ok(Response::SessionOpened {
                    session: client_state.session.expect("opened"),
                    ttl_ms: TTL_MS,
                }),
                _ => client_state.last.as_ref().expect("retried").1.0.clone(),
            };
            if result != expected {
                violation.get_or_insert(format!(
                    "dedup: retry of {command:?} answered {result:?}, first answer {expected:?}"
                ));
            }
            if next.core.0 != *before || !events.is_empty() {
                violation.get_or_insert(format!("dedup: retry of {command:?} changed the state"));
            }
        }

        // What the clients learn.
        match action {
            LockAction::Open { client } => {
                let client_state = &mut next.clients[usize::from(client)];
                if let Ok(Response::SessionOpened { session, .. }) = result {
                    client_state.session = Some(session);
                }
            }
            LockAction::Acquire { client, .. }
            | LockAction::Release { client, .. }
            | LockAction::ReleaseStale { client, .. } => {
                let client_state = &mut next.clients[usize::from(client)];
                client_state.next_seq += 1;
                client_state.last = Some((Hashed(command.clone()), Hashed(result.clone())));
            }
            _ => {}
        }
        for event in &events {
            for client_state in &mut next.clients {
                let Some(own) = client_state.session else {
                    continue;
                };
                match event {
                    Event::SessionEnded { session, .. } if *session == own => {
                        client_state.ended = true;
                        if let Some(last) = &mut client_state.last {
                            last.1 = Hashed(Err(Error::SessionNotFound(own)));
                        }
                    }
                    Event::Acquired {
                        name,
                        session,
                        token,
                        ..
                    } if *session == own => {
                        if let Some(last) = &mut client_state.last
                            && matches!(&last.0.0, Command::Acquire { name: n, .. } if n == name)
                            && matches!(last.1.0, Ok(Response::Queued { .. }))
                        {
                            last.1 = Hashed(Ok(Response::Granted {
                                session: own,
                                token: *token,
                            }));
                        }
                    }
                    Event::WaitCancelled { name, session } if *session == own => {
                        if let Some(last) = &mut client_state.last
                            && matches!(&last.0.0, Command::Acquire { name: n, .. } if n == name)
                            && matches!(last.1.0, Ok(Response::Queued { .. }))
                            && matches!(command, Command::CancelWait { .. })
                        {
                            last.1 = Hashed(Ok(Response::WaitCancelled));
                        }
                    }
                    _ => {}
                }
            }
        }

        // History and witnesses.
        let immediate = check.immediate_grant().map(|(s, n)| (s, n.to_owned()));
        let mut queue_grants_this_step: Vec<u8> = Vec::new();
        for event in &events {
            match event {
                Event::Acquired {
                    name,
                    session,
                    token,
                    mode,
                    ..
                } => {
                    let from_queue = immediate.as_ref() != Some(&(*session, name.clone()));
                    if from_queue && *mode == LockMode::Shared {
                        queue_grants_this_step.push(lock_index(name));
                    }
                    next.history.push(Grant {
                        lock: lock_index(name),
                        session: session.0,
                        token: token.0,
                        mode: *mode,
                        from_queue,
                    });
                }
                Event::Released {
                    reason: ReleaseReason::SessionExpired,
                    ..
                } => next.expiry_released_held = true,
                _ => {}
            }
        }
        queue_grants_this_step.sort_unstable();
        if queue_grants_this_step.windows(2).any(|w| w[0] == w[1]) {
            next.shared_heads_together = true;
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
            Property::always("no step violated a property", |_, s: &LockState| {
                s.violation.is_none()
            }),
            Property::always("check_invariants() holds", |_, s: &LockState| {
                s.core.0.check_invariants().is_ok()
            }),
            Property::always(
                "invariant 1: mutual exclusion",
                |model: &LockModel, s: &LockState| {
                    LOCK_NAMES[..model.locks].iter().all(|name| {
                        s.core.0.lock(name).is_none_or(|lock| {
                            let exclusive = lock
                                .holders
                                .iter()
                                .filter(|h| h.mode == LockMode::Exclusive)
                                .count();
                            exclusive == 0 || lock.holders.len() == 1
                        })
                    })
                },
            ),
            Property::always(
                "invariant 2: tokens increase per lock and are unique",
                |_, s: &LockState| {
                    let mut seen = BTreeSet::new();
                    s.history.iter().enumerate().all(|(i, grant)| {
                        seen.insert(grant.token)
                            && s.history[..i]
                                .iter()
                                .filter(|g| g.lock == grant.lock)
                                .all(|g| g.token < grant.token)
                    })
                },
            ),
            Property::always(
                "invariant 3: an ended session holds and waits for nothing",
                |model: &LockModel, s: &LockState| {
                    s.clients.iter().filter(|c| c.ended).all(|c| {
                        let session = c.session.expect("ended sessions were opened");
                        s.core.0.session(session).is_none()
                            && LOCK_NAMES[..model.locks].iter().all(|name| {
                                s.core.0.lock(name).is_none_or(|lock| {
                                    lock.holders.iter().all(|h| h.session != session)
                                        && lock.waiters.iter().all(|w| w.session != session)
                                })
                            })
                    })
                },
            ),
            Property::always(
                "invariant 7: holders and waiters are live sessions",
                |model: &LockModel, s: &LockState| {
                    LOCK_NAMES[..model.locks].iter().all(|name| {
                        s.core.0.lock(name).is_none_or(|lock| {
                            lock.holders
                                .iter()
                                .map(|h| h.session)
                                .chain(lock.waiters.iter().map(|w| w.session))
                                .all(|session| s.core.0.session(session).is_some())
                        })
                    })
                },
            ),
            Property::sometimes("a waiter was handed the lock", |_, s: &LockState| {
                s.history.iter().any(|g| g.from_queue)
            }),
            Property::sometimes("an expiry released a held lock", |_, s: &LockState| {
                s.expiry_released_held
            }),
            Property::sometimes(
                "two shared holders at once",
                |model: &LockModel, s: &LockState| {
                    LOCK_NAMES[..model.locks].iter().any(|name| {
                        s.core.0.lock(name).is_some_and(|lock| {
                            lock.holders.len() >= 2
                                && lock.holders.iter().all(|h| h.mode == LockMode::Shared)
                        })
                    })
                },
            ),
            Property::sometimes(
                "shared waiters at the head granted together",
                |_, s: &LockState| s.shared_heads_together,
            ),
            Property::sometimes("a stale token was refused", |_, s: &LockState| {
                s.clients.iter().any(|c| {
                    c.last.as_ref().is_some_and(|(_, answer)| {
                        matches!(answer.0, Err(Error::StaleToken { .. }))
                    })
                })
            }),
        ]
    }
}
