//! Unit tests of `State::apply`, one per behaviour and per error path. Every step runs
//! `check_invariants`, and every refusal is checked to leave the state as it was.

use crate::compact::{Holders, WaitQueue};
use crate::state::State;
use crate::types::*;
use crate::view::{HolderView, WaiterView};

use LockMode::{Exclusive, Shared};
use WaitPolicy::{NoWait, Queue};

/// Limits small enough to reach in a test, with TTLs in [10, 1000] ms.
fn test_limits() -> Limits {
    Limits {
        max_sessions: 8,
        max_locks: 8,
        max_waiters_per_lock: 3,
        max_locks_per_session: 3,
        max_pending_requests_per_session: 16,
        max_name_bytes: 16,
        max_value_bytes: 8,
        min_ttl_ms: 10,
        max_ttl_ms: 1000,
        max_expire_batch: 4,
    }
}

/// A state with the events of the last command.
struct Harness {
    state: State,
    events: Vec<Event>,
}

fn acquire_command(
    session: SessionId,
    seq: u64,
    name: &str,
    mode: LockMode,
    wait: WaitPolicy,
) -> Command {
    Command::Acquire {
        session,
        request: RequestId {
            seq,
            first_unanswered_seq: 1,
        },
        name: name.to_owned(),
        mode,
        wait,
        value: Vec::new(),
    }
}

fn release_command(session: SessionId, seq: u64, name: &str, token: FencingToken) -> Command {
    Command::Release {
        session,
        request: RequestId {
            seq,
            first_unanswered_seq: 1,
        },
        name: name.to_owned(),
        token,
    }
}

fn lease_command(client: u128, name: &str, mode: LockMode, wait: WaitPolicy) -> Command {
    Command::AcquireWithLease {
        client_id: ClientId(client),
        ttl_ms: 100,
        name: name.to_owned(),
        mode,
        wait,
        value: b"v".to_vec(),
    }
}

/// The state without request-id bookkeeping, to compare around remembered refusals.
fn without_answers(state: &State) -> State {
    let mut state = state.clone();
    for record in state.sessions.values_mut() {
        record.answers.clear();
        record.forgotten_below = 1;
    }
    state
}

impl Harness {
    fn new() -> Harness {
        Harness::with(State::new(test_limits()))
    }

    fn with(state: State) -> Harness {
        Harness {
            state,
            events: Vec::new(),
        }
    }

    fn run(&mut self, command: Command) -> Result<Response, Error> {
        self.events.clear();
        let result = self.state.apply(command, &mut self.events);
        self.state.check_invariants().unwrap();
        if result.is_err() {
            assert!(
                self.events.is_empty(),
                "a refusal emitted {:?}",
                self.events
            );
        }
        result
    }

    /// Asserts that `command` is refused with `error`, changing nothing at all.
    fn refuses(&mut self, command: Command, error: Error) {
        let before = self.state.clone();
        assert_eq!(self.run(command), Err(error));
        assert_eq!(self.state, before, "a refusal changed the state");
    }

    /// Asserts that `command` (an `Acquire` or `Release`) is refused with `error`,
    /// changing nothing but request-id bookkeeping.
    fn refuses_request(&mut self, command: Command, error: Error) {
        let before = without_answers(&self.state);
        assert_eq!(self.run(command), Err(error));
        assert_eq!(
            without_answers(&self.state),
            before,
            "a refusal changed the state"
        );
    }

    fn open(&mut self, client: u128) -> SessionId {
        match self.run(Command::OpenSession {
            client_id: ClientId(client),
            ttl_ms: 100,
        }) {
            Ok(Response::SessionOpened { session, .. }) => session,
            other => panic!("open failed: {other:?}"),
        }
    }

    fn acquire(
        &mut self,
        session: SessionId,
        seq: u64,
        name: &str,
        mode: LockMode,
        wait: WaitPolicy,
    ) -> Result<Response, Error> {
        self.run(acquire_command(session, seq, name, mode, wait))
    }

    fn grant(&mut self, session: SessionId, seq: u64, name: &str, mode: LockMode) -> FencingToken {
        match self.acquire(session, seq, name, mode, Queue) {
            Ok(Response::Granted { token, .. }) => token,
            other => panic!("expected a grant, got {other:?}"),
        }
    }

    fn queue(&mut self, session: SessionId, seq: u64, name: &str, mode: LockMode) {
        assert_eq!(
            self.acquire(session, seq, name, mode, Queue),
            Ok(Response::Queued { session })
        );
    }

    fn release(
        &mut self,
        session: SessionId,
        seq: u64,
        name: &str,
        token: FencingToken,
    ) -> Result<Response, Error> {
        self.run(release_command(session, seq, name, token))
    }

    fn holders(&self, name: &str) -> Vec<(SessionId, FencingToken)> {
        self.state.lock(name).map_or_else(Vec::new, |lock| {
            lock.holders.iter().map(|h| (h.session, h.token)).collect()
        })
    }

    fn queue_of(&self, name: &str) -> Vec<SessionId> {
        self.state.lock(name).map_or_else(Vec::new, |lock| {
            lock.waiters.iter().map(|w| w.session).collect()
        })
    }

    fn acquired_events(&self) -> Vec<(SessionId, FencingToken)> {
        self.events
            .iter()
            .filter_map(|event| match event {
                Event::Acquired { session, token, .. } => Some((*session, *token)),
                _ => None,
            })
            .collect()
    }
}

fn acquired(name: &str, session: SessionId, token: u64, mode: LockMode) -> Event {
    Event::Acquired {
        name: name.to_owned(),
        session,
        token: FencingToken(token),
        mode,
        value: Vec::new(),
    }
}

fn released(name: &str, session: SessionId, token: u64, reason: ReleaseReason) -> Event {
    Event::Released {
        name: name.to_owned(),
        session,
        token: FencingToken(token),
        reason,
    }
}

// ----- sessions -------------------------------------------------------------------------

#[test]
fn open_session_assigns_ids_from_one_and_emits_opened() {
    let mut h = Harness::new();
    assert_eq!(
        h.run(Command::OpenSession {
            client_id: ClientId(9),
            ttl_ms: 50
        }),
        Ok(Response::SessionOpened {
            session: SessionId(1),
            ttl_ms: 50
        })
    );
    assert_eq!(
        h.events,
        vec![Event::SessionOpened {
            session: SessionId(1),
            client_id: ClientId(9),
            ttl_ms: 50
        }]
    );
    assert_eq!(h.open(10), SessionId(2));
}

#[test]
fn open_session_again_with_live_client_id_returns_it_and_emits_nothing() {
    let mut h = Harness::new();
    let first = h.run(Command::OpenSession {
        client_id: ClientId(1),
        ttl_ms: 50,
    });
    let before = h.state.clone();
    // A retry with another TTL still gets the session as it was granted.
    assert_eq!(
        h.run(Command::OpenSession {
            client_id: ClientId(1),
            ttl_ms: 70
        }),
        first
    );
    assert!(h.events.is_empty());
    assert_eq!(h.state, before);
}

#[test]
fn session_ids_are_never_reused_and_client_ids_are_freed_on_close() {
    let mut h = Harness::new();
    let first = h.open(1);
    h.run(Command::CloseSession { session: first }).unwrap();
    assert_eq!(h.state.session_for_client(ClientId(1)), None);
    assert_eq!(h.open(1), SessionId(2));
}

#[test]
fn error_invalid_ttl_below_minimum() {
    let mut h = Harness::new();
    h.refuses(
        Command::OpenSession {
            client_id: ClientId(1),
            ttl_ms: 9,
        },
        Error::InvalidTtl {
            ttl_ms: 9,
            min_ttl_ms: 10,
            max_ttl_ms: 1000,
        },
    );
}

#[test]
fn error_invalid_ttl_above_maximum() {
    let mut h = Harness::new();
    h.refuses(
        Command::OpenSession {
            client_id: ClientId(1),
            ttl_ms: 1001,
        },
        Error::InvalidTtl {
            ttl_ms: 1001,
            min_ttl_ms: 10,
            max_ttl_ms: 1000,
        },
    );
}

#[test]
fn error_invalid_ttl_even_for_a_live_client_id() {
    let mut h = Harness::new();
    h.open(1);
    h.refuses(
        Command::OpenSession {
            client_id: ClientId(1),
            ttl_ms: 0,
        },
        Error::InvalidTtl {
            ttl_ms: 0,
            min_ttl_ms: 10,
            max_ttl_ms: 1000,
        },
    );
}

#[test]
fn error_limit_sessions() {
    let mut h = Harness::new();
    for client in 0..8 {
        h.open(client);
    }
    h.refuses(
        Command::OpenSession {
            client_id: ClientId(8),
            ttl_ms: 100,
        },
        Error::LimitReached(LimitKind::Sessions),
    );
    // A live client id is still answered: nothing new is admitted.
    assert!(
        h.run(Command::OpenSession {
            client_id: ClientId(3),
            ttl_ms: 100
        })
        .is_ok()
    );
}

#[test]
fn error_session_not_found_on_close() {
    let mut h = Harness::new();
    h.refuses(
        Command::CloseSession {
            session: SessionId(1),
        },
        Error::SessionNotFound(SessionId(1)),
    );
    let session = h.open(1);
    h.run(Command::CloseSession { session }).unwrap();
    h.refuses(
        Command::CloseSession { session },
        Error::SessionNotFound(session),
    );
}

#[test]
fn close_session_releases_cancels_and_grants_in_one_apply() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    let c = h.open(3);
    let t1 = h.grant(a, 1, "x", Exclusive);
    let t2 = h.grant(b, 1, "y", Exclusive);
    h.queue(a, 2, "y", Exclusive);
    h.queue(c, 1, "x", Shared);
    h.queue(b, 2, "x", Shared);
    assert_eq!(
        h.run(Command::CloseSession { session: a }),
        Ok(Response::SessionClosed)
    );
    assert_eq!(
        h.events,
        vec![
            released("x", a, t1.0, ReleaseReason::SessionClosed),
            Event::WaitCancelled {
                name: "y".to_owned(),
                session: a
            },
            acquired("x", c, 3, Shared),
            acquired("x", b, 4, Shared),
            Event::SessionEnded {
                session: a,
                reason: EndReason::Closed
            },
        ]
    );
    assert_eq!(
        h.holders("x"),
        vec![(c, FencingToken(3)), (b, FencingToken(4))]
    );
    assert_eq!(h.holders("y"), vec![(b, t2)]);
    assert!(h.state.session(a).is_none());
}

#[test]
fn close_session_forgets_locks_nobody_else_wants() {
    let mut h = Harness::new();
    let a = h.open(1);
    h.grant(a, 1, "x", Exclusive);
    h.grant(a, 2, "y", Shared);
    h.run(Command::CloseSession { session: a }).unwrap();
    assert_eq!(h.state.stats().locks, 0);
    assert_eq!(h.state.stats().held_grants, 0);
}

#[test]
fn expire_sessions_ends_live_ones_in_order_and_skips_absent_ones() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    let c = h.open(3);
    let ta = h.grant(a, 1, "x", Exclusive);
    h.queue(b, 1, "x", Exclusive);
    h.queue(c, 1, "x", Exclusive);
    // a's expiry hands x to b, whose expiry in the same entry hands it to c.
    assert_eq!(
        h.run(Command::ExpireSessions {
            sessions: vec![a, SessionId(99), b, a]
        }),
        Ok(Response::SessionsExpired { count: 2 })
    );
    assert_eq!(
        h.events,
        vec![
            released("x", a, ta.0, ReleaseReason::SessionExpired),
            acquired("x", b, 2, Exclusive),
            Event::SessionEnded {
                session: a,
                reason: EndReason::Expired
            },
            released("x", b, 2, ReleaseReason::SessionExpired),
            acquired("x", c, 3, Exclusive),
            Event::SessionEnded {
                session: b,
                reason: EndReason::Expired
            },
        ]
    );
    assert_eq!(h.holders("x"), vec![(c, FencingToken(3))]);
    assert_eq!(h.state.stats().total_expired_sessions, 2);
}

#[test]
fn expire_sessions_of_none_is_a_no_op() {
    let mut h = Harness::new();
    assert_eq!(
        h.run(Command::ExpireSessions { sessions: vec![] }),
        Ok(Response::SessionsExpired { count: 0 })
    );
    assert!(h.events.is_empty());
}

#[test]
fn error_limit_expire_batch() {
    let mut h = Harness::new();
    let a = h.open(1);
    h.refuses(
        Command::ExpireSessions {
            sessions: vec![a; 5],
        },
        Error::LimitReached(LimitKind::ExpireBatch),
    );
    assert_eq!(
        h.run(Command::ExpireSessions {
            sessions: vec![a; 4]
        }),
        Ok(Response::SessionsExpired { count: 1 })
    );
}

// ----- acquire --------------------------------------------------------------------------

#[test]
fn acquire_free_lock_grants_the_first_token() {
    let mut h = Harness::new();
    let a = h.open(1);
    let command = Command::Acquire {
        session: a,
        request: RequestId {
            seq: 1,
            first_unanswered_seq: 1,
        },
        name: "jobs/billing".to_owned(),
        mode: Exclusive,
        wait: NoWait,
        value: b"addr".to_vec(),
    };
    assert_eq!(
        h.run(command),
        Ok(Response::Granted {
            session: a,
            token: FencingToken(1)
        })
    );
    assert_eq!(
        h.events,
        vec![Event::Acquired {
            name: "jobs/billing".to_owned(),
            session: a,
            token: FencingToken(1),
            mode: Exclusive,
            value: b"addr".to_vec()
        }]
    );
    assert_eq!(
        h.state.lock("jobs/billing").unwrap().holders,
        vec![HolderView {
            session: a,
            token: FencingToken(1),
            mode: Exclusive,
            value: b"addr".to_vec(),
            client_id: ClientId(1),
            granted_at_ms: 0,
            weight: 1,
            hold_count: 1,
            lock_delay_ms: 0,
        }]
    );
}

#[test]
fn error_session_not_found_on_acquire() {
    let mut h = Harness::new();
    h.refuses(
        acquire_command(SessionId(3), 1, "x", Exclusive, Queue),
        Error::SessionNotFound(SessionId(3)),
    );
}

#[test]
fn error_invalid_name_empty() {
    let mut h = Harness::new();
    let a = h.open(1);
    let before = without_answers(&h.state);
    assert!(matches!(
        h.acquire(a, 1, "", Exclusive, Queue),
        Err(Error::InvalidName(reason)) if reason.contains("empty")
    ));
    assert_eq!(without_answers(&h.state), before);
}

#[test]
fn error_invalid_name_too_long() {
    let mut h = Harness::new();
    let a = h.open(1);
    assert!(matches!(
        h.acquire(a, 1, &"n".repeat(17), Exclusive, Queue),
        Err(Error::InvalidName(reason)) if reason.contains("17 bytes")
    ));
    assert!(matches!(
        h.acquire(a, 2, &"n".repeat(16), Exclusive, Queue),
        Ok(Response::Granted { .. })
    ));
}

#[test]
fn error_invalid_name_control_character() {
    let mut h = Harness::new();
    let a = h.open(1);
    assert!(matches!(
        h.acquire(a, 1, "bad\tname", Exclusive, Queue),
        Err(Error::InvalidName(reason)) if reason.contains("control")
    ));
    assert_eq!(h.state.stats().locks, 0);
}

#[test]
fn error_value_too_large() {
    let mut h = Harness::new();
    let a = h.open(1);
    let command = Command::Acquire {
        session: a,
        request: RequestId {
            seq: 1,
            first_unanswered_seq: 1,
        },
        name: "x".to_owned(),
        mode: Exclusive,
        wait: Queue,
        value: vec![0; 9],
    };
    h.refuses_request(command, Error::ValueTooLarge { len: 9, max: 8 });
}

#[test]
fn error_already_held() {
    let mut h = Harness::new();
    let a = h.open(1);
    h.grant(a, 1, "x", Shared);
    h.refuses_request(
        acquire_command(a, 2, "x", Shared, Queue),
        Error::AlreadyHeldOrQueued("x".to_owned()),
    );
}

#[test]
fn error_already_queued() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    h.grant(a, 1, "x", Exclusive);
    h.queue(b, 1, "x", Exclusive);
    h.refuses_request(
        acquire_command(b, 2, "x", Exclusive, NoWait),
        Error::AlreadyHeldOrQueued("x".to_owned()),
    );
    assert_eq!(h.queue_of("x"), vec![b]);
}

#[test]
fn acquire_no_wait_on_a_held_lock_would_block_and_leaves_no_trace() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    h.grant(a, 1, "x", Exclusive);
    let before = without_answers(&h.state);
    assert_eq!(
        h.acquire(b, 1, "x", Exclusive, NoWait),
        Ok(Response::WouldBlock { session: b })
    );
    assert!(h.events.is_empty());
    assert_eq!(without_answers(&h.state), before);
}

#[test]
fn acquire_queues_and_release_grants_the_next_waiter_in_the_same_apply() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    let t1 = h.grant(a, 1, "x", Exclusive);
    h.queue(b, 1, "x", Exclusive);
    assert!(h.events.is_empty());
    assert_eq!(h.release(a, 2, "x", t1), Ok(Response::Released));
    assert_eq!(
        h.events,
        vec![
            released("x", a, 1, ReleaseReason::Released),
            acquired("x", b, 2, Exclusive)
        ]
    );
    assert_eq!(h.holders("x"), vec![(b, FencingToken(2))]);
}

#[test]
fn waiters_are_granted_in_fifo_order() {
    let mut h = Harness::new();
    let sessions: Vec<SessionId> = (0..4).map(|client| h.open(client)).collect();
    let mut token = h.grant(sessions[0], 1, "x", Exclusive);
    for &session in &sessions[1..] {
        h.queue(session, 1, "x", Exclusive);
    }
    for pair in sessions.windows(2) {
        h.release(pair[0], 2, "x", token).unwrap();
        assert_eq!(
            h.acquired_events(),
            vec![(pair[1], FencingToken(token.0 + 1))]
        );
        token = FencingToken(token.0 + 1);
    }
}

#[test]
fn shared_holders_coexist_and_an_exclusive_request_waits_for_all() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    let c = h.open(3);
    let ta = h.grant(a, 1, "x", Shared);
    let tb = h.grant(b, 1, "x", Shared);
    h.queue(c, 1, "x", Exclusive);
    h.release(a, 2, "x", ta).unwrap();
    assert!(h.acquired_events().is_empty(), "b still holds x shared");
    h.release(b, 2, "x", tb).unwrap();
    assert_eq!(h.acquired_events(), vec![(c, FencingToken(3))]);
}

#[test]
fn a_shared_request_does_not_jump_a_queued_writer() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    let c = h.open(3);
    h.grant(a, 1, "x", Shared);
    h.queue(b, 1, "x", Exclusive);
    assert_eq!(
        h.acquire(c, 1, "x", Shared, NoWait),
        Ok(Response::WouldBlock { session: c })
    );
    h.queue(c, 2, "x", Shared);
    assert_eq!(h.queue_of("x"), vec![b, c]);
}

#[test]
fn consecutive_shared_waiters_are_granted_together_up_to_an_exclusive_one() {
    let mut h = Harness::new();
    let ids: Vec<SessionId> = (0..5).map(|client| h.open(client)).collect();
    let t = h.grant(ids[0], 1, "x", Exclusive);
    h.queue(ids[1], 1, "x", Shared);
    h.queue(ids[2], 1, "x", Shared);
    h.queue(ids[3], 1, "x", Exclusive);
    h.run(Command::SetLimits(Limits {
        max_waiters_per_lock: 4,
        ..test_limits()
    }))
    .unwrap();
    h.queue(ids[4], 1, "x", Shared);
    h.release(ids[0], 2, "x", t).unwrap();
    assert_eq!(
        h.acquired_events(),
        vec![(ids[1], FencingToken(2)), (ids[2], FencingToken(3))]
    );
    assert_eq!(h.queue_of("x"), vec![ids[3], ids[4]]);
}

#[test]
fn error_limit_locks() {
    let mut h = Harness::new();
    let sessions: Vec<SessionId> = (0..3).map(|client| h.open(client)).collect();
    for (i, name) in ["a", "b", "c", "d", "e", "f", "g", "h"].iter().enumerate() {
        h.grant(sessions[i / 3], 1 + i as u64 % 3, name, Shared);
    }
    h.refuses_request(
        acquire_command(sessions[2], 3, "i", Shared, Queue),
        Error::LimitReached(LimitKind::Locks),
    );
    // A lock that is already known is not a new one.
    assert!(matches!(
        h.acquire(sessions[2], 4, "a", Shared, Queue),
        Ok(Response::Granted { .. })
    ));
}

#[test]
fn error_limit_locks_per_session_when_granting() {
    let mut h = Harness::new();
    let a = h.open(1);
    for (seq, name) in [(1, "a"), (2, "b"), (3, "c")] {
        h.grant(a, seq, name, Exclusive);
    }
    h.refuses_request(
        acquire_command(a, 4, "d", Exclusive, Queue),
        Error::LimitReached(LimitKind::LocksPerSession),
    );
}

#[test]
fn error_limit_locks_per_session_when_queueing() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    h.grant(b, 1, "d", Exclusive);
    h.grant(a, 1, "a", Exclusive);
    h.grant(a, 2, "b", Exclusive);
    h.queue(a, 3, "d", Shared);
    h.refuses_request(
        acquire_command(a, 4, "c", Exclusive, Queue),
        Error::LimitReached(LimitKind::LocksPerSession),
    );
    h.grant(b, 2, "e", Exclusive);
    h.refuses_request(
        acquire_command(a, 5, "e", Exclusive, Queue),
        Error::LimitReached(LimitKind::LocksPerSession),
    );
    // WouldBlock leaves no trace, so no limit applies to it.
    assert_eq!(
        h.acquire(a, 6, "e", Exclusive, NoWait),
        Ok(Response::WouldBlock { session: a })
    );
}

#[test]
fn error_limit_waiters_per_lock() {
    let mut h = Harness::new();
    let ids: Vec<SessionId> = (0..5).map(|client| h.open(client)).collect();
    h.grant(ids[0], 1, "x", Exclusive);
    for &session in &ids[1..4] {
        h.queue(session, 1, "x", Exclusive);
    }
    h.refuses_request(
        acquire_command(ids[4], 1, "x", Exclusive, Queue),
        Error::LimitReached(LimitKind::WaitersPerLock),
    );
}

// ----- release --------------------------------------------------------------------------

#[test]
fn release_forgets_an_idle_lock() {
    let mut h = Harness::new();
    let a = h.open(1);
    let t = h.grant(a, 1, "x", Exclusive);
    h.release(a, 2, "x", t).unwrap();
    assert!(h.state.lock("x").is_none());
    assert_eq!(h.state.session(a).unwrap().held, vec![]);
}

#[test]
fn error_session_not_found_on_release() {
    let mut h = Harness::new();
    h.refuses(
        release_command(SessionId(1), 1, "x", FencingToken(1)),
        Error::SessionNotFound(SessionId(1)),
    );
}

#[test]
fn error_not_held_unknown_lock() {
    let mut h = Harness::new();
    let a = h.open(1);
    h.refuses_request(
        release_command(a, 1, "x", FencingToken(1)),
        Error::NotHeld("x".to_owned()),
    );
}

#[test]
fn error_not_held_lock_of_another_session() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    let t = h.grant(a, 1, "x", Exclusive);
    h.refuses_request(
        release_command(b, 1, "x", t),
        Error::NotHeld("x".to_owned()),
    );
    // Invariant 8: only the holder with its token releases.
    assert!(h.state.is_current_grant("x", t));
}

#[test]
fn error_not_held_while_only_queued() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    h.grant(a, 1, "x", Exclusive);
    h.queue(b, 1, "x", Exclusive);
    h.refuses_request(
        release_command(b, 2, "x", FencingToken(1)),
        Error::NotHeld("x".to_owned()),
    );
}

#[test]
fn error_invalid_name_on_release_of_a_name_not_held() {
    let mut h = Harness::new();
    let a = h.open(1);
    let before = without_answers(&h.state);
    assert!(matches!(
        h.release(a, 1, &"x".repeat(100), FencingToken(1)),
        Err(Error::InvalidName(_))
    ));
    assert_eq!(without_answers(&h.state), before);
}

#[test]
fn error_stale_token() {
    let mut h = Harness::new();
    let a = h.open(1);
    let old = h.grant(a, 1, "x", Exclusive);
    h.release(a, 2, "x", old).unwrap();
    let current = h.grant(a, 3, "x", Exclusive);
    h.refuses_request(
        release_command(a, 4, "x", old),
        Error::StaleToken {
            name: "x".to_owned(),
            given: old,
            current,
        },
    );
}

#[test]
fn a_lock_held_under_a_lowered_name_limit_can_still_be_released() {
    let mut h = Harness::new();
    let a = h.open(1);
    let t = h.grant(a, 1, "long-name", Exclusive);
    h.run(Command::SetLimits(Limits {
        max_name_bytes: 2,
        ..test_limits()
    }))
    .unwrap();
    assert!(matches!(
        h.acquire(a, 2, "long-name2", Exclusive, Queue),
        Err(Error::InvalidName(_))
    ));
    assert_eq!(h.release(a, 3, "long-name", t), Ok(Response::Released));
}

// ----- cancel wait ----------------------------------------------------------------------

#[test]
fn cancel_wait_withdraws_the_wait_and_updates_the_remembered_answer() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    let t = h.grant(a, 1, "x", Exclusive);
    h.queue(b, 7, "x", Exclusive);
    assert_eq!(
        h.run(Command::CancelWait {
            session: b,
            name: "x".to_owned()
        }),
        Ok(Response::WaitCancelled)
    );
    assert_eq!(
        h.events,
        vec![Event::WaitCancelled {
            name: "x".to_owned(),
            session: b
        }]
    );
    assert_eq!(h.queue_of("x"), vec![]);
    // The retried Acquire learns the truth and does not queue again.
    assert_eq!(
        h.acquire(b, 7, "x", Exclusive, Queue),
        Ok(Response::WaitCancelled)
    );
    assert_eq!(h.queue_of("x"), vec![]);
    h.release(a, 2, "x", t).unwrap();
    assert!(h.state.lock("x").is_none());
}

#[test]
fn cancel_wait_after_the_grant_answers_granted() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    let t = h.grant(a, 1, "x", Exclusive);
    h.queue(b, 1, "x", Exclusive);
    h.release(a, 2, "x", t).unwrap();
    let before = h.state.clone();
    assert_eq!(
        h.run(Command::CancelWait {
            session: b,
            name: "x".to_owned()
        }),
        Ok(Response::Granted {
            session: b,
            token: FencingToken(2)
        })
    );
    assert!(h.events.is_empty());
    assert_eq!(h.state, before);
}

#[test]
fn cancelling_a_queued_writer_lets_shared_waiters_behind_it_in() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    let c = h.open(3);
    h.grant(a, 1, "x", Shared);
    h.queue(b, 1, "x", Exclusive);
    h.queue(c, 1, "x", Shared);
    h.run(Command::CancelWait {
        session: b,
        name: "x".to_owned(),
    })
    .unwrap();
    assert_eq!(h.acquired_events(), vec![(c, FencingToken(2))]);
    assert_eq!(
        h.acquire(c, 1, "x", Shared, Queue),
        Ok(Response::Granted {
            session: c,
            token: FencingToken(2)
        })
    );
}

#[test]
fn error_not_waiting() {
    let mut h = Harness::new();
    let a = h.open(1);
    h.refuses(
        Command::CancelWait {
            session: a,
            name: "x".to_owned(),
        },
        Error::NotWaiting("x".to_owned()),
    );
}

#[test]
fn error_session_not_found_on_cancel_wait() {
    let mut h = Harness::new();
    h.refuses(
        Command::CancelWait {
            session: SessionId(5),
            name: "x".to_owned(),
        },
        Error::SessionNotFound(SessionId(5)),
    );
}

#[test]
fn error_invalid_name_on_cancel_wait() {
    let mut h = Harness::new();
    let a = h.open(1);
    let before = h.state.clone();
    assert!(matches!(
        h.run(Command::CancelWait {
            session: a,
            name: String::new()
        }),
        Err(Error::InvalidName(_))
    ));
    assert_eq!(h.state, before);
}

// ----- force release --------------------------------------------------------------------

#[test]
fn force_release_ends_every_grant_and_hands_the_lock_on() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    let c = h.open(3);
    h.grant(b, 1, "x", Shared);
    h.grant(a, 1, "x", Shared);
    h.queue(c, 1, "x", Exclusive);
    assert_eq!(
        h.run(Command::ForceRelease {
            name: "x".to_owned()
        }),
        Ok(Response::ForceReleased { count: 2 })
    );
    assert_eq!(
        h.events,
        vec![
            released("x", b, 1, ReleaseReason::Forced),
            released("x", a, 2, ReleaseReason::Forced),
            acquired("x", c, 3, Exclusive),
        ]
    );
    assert_eq!(h.state.session(a).unwrap().held, vec![]);
    // The old holders' releases are now refused: their grant ended.
    assert_eq!(
        h.release(a, 2, "x", FencingToken(2)),
        Err(Error::NotHeld("x".to_owned()))
    );
}

#[test]
fn force_release_of_an_unknown_lock_releases_nothing() {
    let mut h = Harness::new();
    let before = h.state.clone();
    assert_eq!(
        h.run(Command::ForceRelease {
            name: "x".to_owned()
        }),
        Ok(Response::ForceReleased { count: 0 })
    );
    assert_eq!(h.state, before);
}

#[test]
fn error_invalid_name_on_force_release() {
    let mut h = Harness::new();
    let before = h.state.clone();
    assert!(matches!(
        h.run(Command::ForceRelease {
            name: "a\u{0}".to_owned()
        }),
        Err(Error::InvalidName(_))
    ));
    assert_eq!(h.state, before);
}

// ----- limits ---------------------------------------------------------------------------

#[test]
fn error_invalid_limits() {
    let mut h = Harness::new();
    h.refuses(
        Command::SetLimits(Limits {
            max_locks: 0,
            ..test_limits()
        }),
        Error::InvalidLimits("max_locks must be at least 1".to_owned()),
    );
    h.refuses(
        Command::SetLimits(Limits {
            max_name_bytes: Limits::NAME_BYTES_CEILING + 1,
            ..test_limits()
        }),
        Error::InvalidLimits("max_name_bytes 4097 is above the ceiling of 4096".to_owned()),
    );
}

#[test]
fn lowered_limits_keep_existing_state_and_refuse_new_admissions() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    h.grant(a, 1, "x", Exclusive);
    h.grant(a, 2, "y", Exclusive);
    let lowered = Limits {
        max_sessions: 1,
        max_locks: 1,
        max_locks_per_session: 1,
        min_ttl_ms: 500,
        ..test_limits()
    };
    assert_eq!(
        h.run(Command::SetLimits(lowered.clone())),
        Ok(Response::LimitsSet)
    );
    assert_eq!(h.state.limits(), &lowered);
    assert_eq!(h.state.stats().sessions, 2);
    assert_eq!(h.state.stats().locks, 2);
    assert_eq!(
        h.run(Command::OpenSession {
            client_id: ClientId(3),
            ttl_ms: 600
        }),
        Err(Error::LimitReached(LimitKind::Sessions))
    );
    assert_eq!(
        h.acquire(b, 1, "z", Exclusive, Queue),
        Err(Error::LimitReached(LimitKind::Locks))
    );
}

// ----- tokens ---------------------------------------------------------------------------

#[test]
fn tokens_keep_increasing_after_a_lock_is_forgotten() {
    let mut h = Harness::new();
    let a = h.open(1);
    let first = h.grant(a, 1, "x", Exclusive);
    h.release(a, 2, "x", first).unwrap();
    assert!(h.state.lock("x").is_none());
    let second = h.grant(a, 3, "x", Exclusive);
    assert!(second > first);
    assert_eq!(h.state.last_token(), second);
    // ... and after a snapshot.
    let bytes = postcard::to_allocvec(&h.state).unwrap();
    let mut restored = Harness::with(postcard::from_bytes(&bytes).unwrap());
    restored.release(a, 4, "x", second).unwrap();
    assert!(restored.grant(a, 5, "x", Exclusive) > second);
}

#[test]
fn starting_after_continues_from_the_given_token() {
    let mut h = Harness::with(State::starting_after(test_limits(), FencingToken(41)));
    let a = h.open(1);
    assert_eq!(h.grant(a, 1, "x", Exclusive), FencingToken(42));
}

/// A state whose counter has `left` tokens before `u64::MAX`.
fn near_exhaustion(left: u64) -> Harness {
    Harness::with(State::starting_after(
        test_limits(),
        FencingToken(u64::MAX - left),
    ))
}

#[test]
fn error_token_overflow_on_acquire() {
    let mut h = near_exhaustion(1);
    let a = h.open(1);
    assert_eq!(h.grant(a, 1, "x", Exclusive), FencingToken(u64::MAX));
    h.refuses_request(
        acquire_command(a, 2, "y", Exclusive, Queue),
        Error::TokenOverflow,
    );
    // Remembered like any answer.
    assert_eq!(
        h.acquire(a, 2, "y", Exclusive, Queue),
        Err(Error::TokenOverflow)
    );
}

#[test]
fn error_token_overflow_on_release_that_would_grant_refuses_the_whole_release() {
    let mut h = near_exhaustion(1);
    let a = h.open(1);
    let b = h.open(2);
    let t = h.grant(a, 1, "x", Exclusive);
    h.queue(b, 1, "x", Exclusive);
    h.refuses_request(release_command(a, 2, "x", t), Error::TokenOverflow);
    assert!(h.state.is_current_grant("x", t));
}

#[test]
fn release_at_the_last_token_without_waiters_succeeds() {
    let mut h = near_exhaustion(2);
    let a = h.open(1);
    let b = h.open(2);
    let t = h.grant(a, 1, "x", Shared);
    h.grant(b, 1, "y", Exclusive);
    h.queue(a, 2, "y", Exclusive); // a waiter elsewhere forces the careful path
    assert_eq!(h.release(a, 3, "x", t), Ok(Response::Released));
    assert!(h.state.lock("x").is_none());
}

#[test]
fn error_token_overflow_on_close_session() {
    let mut h = near_exhaustion(1);
    let a = h.open(1);
    let b = h.open(2);
    h.grant(a, 1, "x", Exclusive);
    h.queue(b, 1, "x", Exclusive);
    h.refuses(Command::CloseSession { session: a }, Error::TokenOverflow);
    // Closing the waiter mints nothing, so it works.
    assert_eq!(
        h.run(Command::CloseSession { session: b }),
        Ok(Response::SessionClosed)
    );
}

#[test]
fn error_token_overflow_on_expire_sessions() {
    let mut h = near_exhaustion(2);
    let ids: Vec<SessionId> = (0..3).map(|client| h.open(client)).collect();
    h.grant(ids[0], 1, "x", Exclusive);
    h.queue(ids[1], 1, "x", Exclusive);
    h.queue(ids[2], 1, "x", Exclusive);
    // Ending 0 grants to 1 (the last token); ending 1 would need one more.
    h.refuses(
        Command::ExpireSessions {
            sessions: vec![ids[0], ids[1]],
        },
        Error::TokenOverflow,
    );
    assert_eq!(
        h.run(Command::ExpireSessions {
            sessions: vec![ids[0]]
        }),
        Ok(Response::SessionsExpired { count: 1 })
    );
    assert_eq!(h.holders("x"), vec![(ids[1], FencingToken(u64::MAX))]);
}

#[test]
fn error_token_overflow_on_cancel_wait() {
    let mut h = near_exhaustion(1);
    let ids: Vec<SessionId> = (0..3).map(|client| h.open(client)).collect();
    h.grant(ids[0], 1, "x", Shared);
    h.queue(ids[1], 1, "x", Exclusive);
    h.queue(ids[2], 1, "x", Shared);
    h.refuses(
        Command::CancelWait {
            session: ids[1],
            name: "x".to_owned(),
        },
        Error::TokenOverflow,
    );
}

#[test]
fn error_token_overflow_on_force_release() {
    let mut h = near_exhaustion(1);
    let a = h.open(1);
    let b = h.open(2);
    h.grant(a, 1, "x", Exclusive);
    h.queue(b, 1, "x", Exclusive);
    h.refuses(
        Command::ForceRelease {
            name: "x".to_owned(),
        },
        Error::TokenOverflow,
    );
}

// ----- request ids ----------------------------------------------------------------------

#[test]
fn a_retried_request_gets_the_first_answer_and_acts_once() {
    let mut h = Harness::new();
    let a = h.open(1);
    let first = h.acquire(a, 1, "x", Exclusive, Queue);
    let before = h.state.clone();
    assert_eq!(h.acquire(a, 1, "x", Exclusive, Queue), first);
    assert!(h.events.is_empty());
    assert_eq!(h.state, before);
    let Ok(Response::Granted { token, .. }) = first else {
        panic!("granted")
    };
    assert_eq!(h.release(a, 2, "x", token), Ok(Response::Released));
    // The retried release answers Released again; it does not fail as NotHeld.
    assert_eq!(h.release(a, 2, "x", token), Ok(Response::Released));
    assert!(h.events.is_empty());
}

#[test]
fn a_retried_refused_request_gets_the_same_refusal() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    let t = h.grant(b, 1, "x", Exclusive);
    assert_eq!(h.release(a, 1, "x", t), Err(Error::NotHeld("x".to_owned())));
    // Even when the retry would now be answered differently, the first answer wins.
    h.release(b, 2, "x", t).unwrap();
    h.grant(a, 2, "x", Exclusive);
    assert_eq!(
        h.release(a, 1, "x", FencingToken(2)),
        Err(Error::NotHeld("x".to_owned()))
    );
}

#[test]
fn a_retried_acquire_that_was_queued_then_granted_answers_granted_with_the_same_token() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    let t = h.grant(a, 1, "x", Exclusive);
    h.queue(b, 1, "x", Exclusive);
    // Still queued: the retry re-attaches, no second wait.
    assert_eq!(
        h.acquire(b, 1, "x", Exclusive, Queue),
        Ok(Response::Queued { session: b })
    );
    assert_eq!(h.queue_of("x"), vec![b]);
    h.release(a, 2, "x", t).unwrap();
    let granted = Ok(Response::Granted {
        session: b,
        token: FencingToken(2),
    });
    assert_eq!(h.acquire(b, 1, "x", Exclusive, Queue), granted);
    assert!(h.events.is_empty());
}

#[test]
fn error_request_too_old_after_acknowledgement() {
    let mut h = Harness::new();
    let a = h.open(1);
    let t = h.grant(a, 1, "x", Exclusive);
    // Request 2 acknowledges the answer to 1, which is forgotten.
    let release = Command::Release {
        session: a,
        request: RequestId {
            seq: 2,
            first_unanswered_seq: 2,
        },
        name: "x".to_owned(),
        token: t,
    };
    h.run(release).unwrap();
    h.refuses(
        acquire_command(a, 1, "x", Exclusive, Queue),
        Error::RequestTooOld {
            seq: 1,
            first_remembered: 2,
        },
    );
    assert_eq!(h.state.lock("x"), None, "the old acquire did not act again");
}

#[test]
fn error_request_too_old_for_sequence_zero() {
    let mut h = Harness::new();
    let a = h.open(1);
    h.refuses(
        acquire_command(a, 0, "x", Exclusive, Queue),
        Error::RequestTooOld {
            seq: 0,
            first_remembered: 1,
        },
    );
}

#[test]
fn an_acknowledgement_is_recorded_even_by_a_request_refused_as_too_old() {
    let mut h = Harness::new();
    let a = h.open(1);
    h.grant(a, 1, "x", Exclusive);
    let command = Command::Acquire {
        session: a,
        request: RequestId {
            seq: 1,
            first_unanswered_seq: 3,
        },
        name: "x".to_owned(),
        mode: Exclusive,
        wait: Queue,
        value: vec![],
    };
    assert_eq!(
        h.run(command),
        Err(Error::RequestTooOld {
            seq: 1,
            first_remembered: 3
        })
    );
    assert!(h.state.sessions[&a].answers.is_empty());
}

#[test]
fn error_limit_pending_requests_per_session() {
    let mut h = Harness::with(State::new(Limits {
        max_pending_requests_per_session: 4,
        ..test_limits()
    }));
    let a = h.open(1);
    for (seq, name) in [(1, "a"), (2, "b"), (3, "c")] {
        h.grant(a, seq, name, Shared);
    }
    assert!(h.acquire(a, 4, "d", Shared, Queue).is_err()); // a remembered refusal
    h.refuses_request(
        acquire_command(a, 5, "e", Shared, Queue),
        Error::LimitReached(LimitKind::PendingRequestsPerSession),
    );
    // Not remembered: once the client acknowledges answers, the request goes through.
    let release = Command::Release {
        session: a,
        request: RequestId {
            seq: 5,
            first_unanswered_seq: 5,
        },
        name: "a".to_owned(),
        token: FencingToken(1),
    };
    assert_eq!(h.run(release), Ok(Response::Released));
}

// ----- acquire with lease ---------------------------------------------------------------

#[test]
fn acquire_with_lease_opens_a_session_and_grants() {
    let mut h = Harness::new();
    assert_eq!(
        h.run(lease_command(5, "x", Exclusive, Queue)),
        Ok(Response::Granted {
            session: SessionId(1),
            token: FencingToken(1)
        })
    );
    assert_eq!(
        h.events,
        vec![
            Event::SessionOpened {
                session: SessionId(1),
                client_id: ClientId(5),
                ttl_ms: 100
            },
            Event::Acquired {
                name: "x".to_owned(),
                session: SessionId(1),
                token: FencingToken(1),
                mode: Exclusive,
                value: b"v".to_vec()
            },
        ]
    );
}

#[test]
fn acquire_with_lease_retried_returns_the_first_answer() {
    let mut h = Harness::new();
    let first = h.run(lease_command(5, "x", Exclusive, Queue));
    let before = h.state.clone();
    assert_eq!(h.run(lease_command(5, "x", Exclusive, Queue)), first);
    assert!(h.events.is_empty());
    assert_eq!(h.state, before);
}

#[test]
fn acquire_with_lease_queued_then_granted_retry_answers_granted() {
    let mut h = Harness::new();
    let a = h.open(1);
    let t = h.grant(a, 1, "x", Exclusive);
    assert_eq!(
        h.run(lease_command(5, "x", Exclusive, Queue)),
        Ok(Response::Queued {
            session: SessionId(2)
        })
    );
    h.release(a, 2, "x", t).unwrap();
    assert_eq!(
        h.run(lease_command(5, "x", Exclusive, Queue)),
        Ok(Response::Granted {
            session: SessionId(2),
            token: FencingToken(2)
        })
    );
}

#[test]
fn acquire_with_lease_that_would_block_leaves_no_session() {
    let mut h = Harness::new();
    let a = h.open(1);
    h.grant(a, 1, "x", Exclusive);
    let before = h.state.clone();
    assert_eq!(
        h.run(lease_command(5, "x", Exclusive, NoWait)),
        Ok(Response::WouldBlock {
            session: SessionId(0)
        })
    );
    assert!(h.events.is_empty());
    assert_eq!(h.state, before);
}

#[test]
fn acquire_with_lease_refused_leaves_no_session() {
    let mut h = Harness::new();
    let a = h.open(1);
    h.grant(a, 1, "x", Exclusive);
    h.refuses(
        lease_command(5, "", Exclusive, Queue),
        Error::InvalidName("the name is empty".to_owned()),
    );
    let mut big = lease_command(5, "y", Exclusive, Queue);
    if let Command::AcquireWithLease { value, .. } = &mut big {
        *value = vec![0; 9];
    }
    h.refuses(big, Error::ValueTooLarge { len: 9, max: 8 });
    h.run(Command::SetLimits(Limits {
        max_waiters_per_lock: 1,
        ..test_limits()
    }))
    .unwrap();
    let b = h.open(2);
    h.queue(b, 1, "x", Exclusive);
    h.refuses(
        lease_command(5, "x", Exclusive, Queue),
        Error::LimitReached(LimitKind::WaitersPerLock),
    );
    assert_eq!(h.state.session_for_client(ClientId(5)), None);
}

#[test]
fn error_invalid_ttl_on_acquire_with_lease() {
    let mut h = Harness::new();
    let mut command = lease_command(5, "x", Exclusive, Queue);
    if let Command::AcquireWithLease { ttl_ms, .. } = &mut command {
        *ttl_ms = 5;
    }
    h.refuses(
        command,
        Error::InvalidTtl {
            ttl_ms: 5,
            min_ttl_ms: 10,
            max_ttl_ms: 1000,
        },
    );
}

#[test]
fn error_limit_sessions_on_acquire_with_lease() {
    let mut h = Harness::new();
    for client in 0..8 {
        h.open(client);
    }
    h.refuses(
        lease_command(8, "x", Exclusive, Queue),
        Error::LimitReached(LimitKind::Sessions),
    );
}

#[test]
fn acquire_with_lease_for_a_live_session_is_its_request_one() {
    let mut h = Harness::new();
    let a = h.open(5);
    assert_eq!(
        h.run(lease_command(5, "x", Shared, Queue)),
        Ok(Response::Granted {
            session: a,
            token: FencingToken(1)
        })
    );
    assert_eq!(
        h.acquire(a, 1, "other", Shared, Queue),
        Ok(Response::Granted {
            session: a,
            token: FencingToken(1)
        })
    );
}

// ----- views ----------------------------------------------------------------------------

#[test]
fn views_show_sessions_holders_and_waiters() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    let t = h.grant(a, 1, "x", Exclusive);
    h.queue(b, 1, "x", Shared);
    let tb = h.grant(b, 2, "w", Shared);
    let view = h.state.session(b).unwrap();
    assert_eq!(view.client_id, ClientId(2));
    assert_eq!(view.ttl_ms, 100);
    assert_eq!(view.held, vec![("w".to_owned(), tb)]);
    assert_eq!(view.waiting, vec!["x".to_owned()]);
    let lock = h.state.lock("x").unwrap();
    assert_eq!(lock.name, "x");
    assert_eq!(lock.holders[0].token, t);
    assert_eq!(
        lock.waiters,
        vec![WaiterView {
            session: b,
            mode: Shared,
            queued_at_ms: 0,
            weight: 1,
            names: Vec::new(),
        }]
    );
    assert_eq!(
        h.state.sessions().collect::<Vec<_>>(),
        vec![(a, 100), (b, 100)]
    );
    assert!(h.state.is_current_grant("x", t));
    assert!(!h.state.is_current_grant("x", tb));
    assert!(!h.state.is_current_grant("nope", t));
}

#[test]
fn stats_count_everything() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    let t = h.grant(a, 1, "x", Exclusive);
    h.queue(b, 1, "x", Exclusive);
    h.release(a, 2, "x", t).unwrap();
    h.run(Command::ExpireSessions { sessions: vec![b] })
        .unwrap();
    let stats = h.state.stats();
    assert_eq!(stats.sessions, 1);
    assert_eq!(stats.locks, 0);
    assert_eq!(stats.held_grants, 0);
    assert_eq!(stats.waiters, 0);
    assert_eq!(stats.last_token, 2);
    assert_eq!(stats.total_grants, 2);
    assert_eq!(stats.total_expired_sessions, 1);
}

#[test]
fn locks_with_prefix_pages_through_matching_names() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    for (seq, name) in [(1, "a"), (2, "a/1"), (3, "a/2")] {
        h.grant(a, seq, name, Shared);
    }
    for (seq, name) in [(1, "a/3"), (2, "ab"), (3, "b")] {
        h.grant(b, seq, name, Shared);
    }
    let names = |(views, more): (Vec<crate::LockView>, bool)| {
        (views.into_iter().map(|v| v.name).collect::<Vec<_>>(), more)
    };
    assert_eq!(
        names(h.state.locks_with_prefix("a/", None, 2)),
        (vec!["a/1".to_owned(), "a/2".to_owned()], true)
    );
    assert_eq!(
        names(h.state.locks_with_prefix("a/", Some("a/2"), 2)),
        (vec!["a/3".to_owned()], false)
    );
    assert_eq!(
        names(h.state.locks_with_prefix("a/", Some("a"), 10))
            .0
            .len(),
        3
    );
    assert_eq!(names(h.state.locks_with_prefix("", None, 10)).0.len(), 6);
    assert_eq!(
        names(h.state.locks_with_prefix("a/", None, 0)),
        (vec![], true)
    );
    assert_eq!(
        names(h.state.locks_with_prefix("c", None, 5)),
        (vec![], false)
    );
    assert_eq!(
        names(h.state.locks_with_prefix("a/", Some("z"), 5)),
        (vec![], false)
    );
}

// ----- serde ----------------------------------------------------------------------------

#[test]
fn state_survives_a_postcard_round_trip() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    h.grant(a, 1, "x", Exclusive);
    h.queue(b, 1, "x", Shared);
    assert!(h.release(b, 2, "y", FencingToken(9)).is_err());
    h.run(Command::SetLimits(Limits {
        max_sessions: 3,
        ..test_limits()
    }))
    .unwrap();
    let bytes = postcard::to_allocvec(&h.state).unwrap();
    let restored: State = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(restored, h.state);
    restored.check_invariants().unwrap();
}

#[test]
fn every_command_survives_a_postcard_round_trip() {
    let commands = vec![
        Command::OpenSession {
            client_id: ClientId(u128::MAX),
            ttl_ms: 5,
        },
        Command::CloseSession {
            session: SessionId(3),
        },
        acquire_command(SessionId(1), 7, "é/x", Shared, NoWait),
        lease_command(3, "x", Exclusive, Queue),
        release_command(SessionId(1), 8, "x", FencingToken(u64::MAX)),
        Command::CancelWait {
            session: SessionId(1),
            name: "x".to_owned(),
        },
        Command::ExpireSessions {
            sessions: vec![SessionId(1), SessionId(2)],
        },
        Command::ForceRelease {
            name: "x".to_owned(),
        },
        Command::SetLimits(Limits::default()),
    ];
    for command in commands {
        let bytes = postcard::to_allocvec(&command).unwrap();
        assert_eq!(postcard::from_bytes::<Command>(&bytes).unwrap(), command);
    }
}

// ----- the invariant checker itself -----------------------------------------------------

#[test]
fn check_invariants_catches_corruption() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    let t = h.grant(a, 1, "x", Exclusive);
    h.queue(b, 1, "x", Exclusive);
    let good = h.state.clone();
    type Corruption = (&'static str, fn(&mut State));
    let corruptions: Vec<Corruption> = vec![
        ("token above the counter", |s| s.last_token = 0),
        ("counter of grants", |s| s.held_grants += 1),
        ("counter of waiters", |s| s.waiters = 0),
        ("ended holder", |s| {
            let id = SessionId(1);
            let record = s.sessions.remove(&id).unwrap();
            s.sessions_by_client.remove(&record.client_id);
        }),
        ("grantable queue head", |s| {
            s.locks.get_mut("x").unwrap().holders = Holders::None;
            s.held_grants = 0;
            s.sessions.get_mut(&SessionId(1)).unwrap().held.clear();
        }),
        ("session index", |s| {
            s.sessions.get_mut(&SessionId(2)).unwrap().waiting.clear();
        }),
        ("client index", |s| {
            s.sessions_by_client.insert(ClientId(1), SessionId(2));
        }),
        ("idle lock", |s| {
            s.locks.insert("idle".into(), Default::default());
        }),
        ("a held name not shared with the lock", |s| {
            let record = s.sessions.get_mut(&SessionId(1)).unwrap();
            let token = record.held.remove("x").unwrap();
            record.held.insert("x".into(), token);
        }),
        ("a waited-for name not shared with the lock", |s| {
            let record = s.sessions.get_mut(&SessionId(2)).unwrap();
            record.waiting.remove("x");
            record.waiting.insert("x".into());
        }),
        ("a holder map for one holder", |s| {
            let lock = s.locks.get_mut("x").unwrap();
            let Holders::One(token, holder) = std::mem::take(&mut lock.holders) else {
                panic!("one holder")
            };
            lock.holders = Holders::Many([(token, holder)].into());
        }),
        ("a buffer kept for an empty queue", |s| {
            s.locks.get_mut("x").unwrap().waiters = WaitQueue::empty_with_buffer();
            s.sessions.get_mut(&SessionId(2)).unwrap().waiting.clear();
            s.waiters = 0;
        }),
        ("remembered answer of a waiter", |s| {
            let record = s.sessions.get_mut(&SessionId(2)).unwrap();
            record.answers.insert(1, Ok(Response::WaitCancelled));
        }),
    ];
    for (what, corrupt) in corruptions {
        let mut state = good.clone();
        corrupt(&mut state);
        assert!(state.check_invariants().is_err(), "missed: {what}");
    }
    assert!(good.check_invariants().is_ok());
    let _ = t;
}

#[test]
fn revoke_session_ends_it_like_expiry_and_hands_its_locks_on() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    let held = h.grant(a, 1, "x", Exclusive);
    let other = h.grant(a, 2, "y", Exclusive);
    h.queue(b, 1, "x", Exclusive);
    assert_eq!(
        h.run(Command::RevokeSession { session: a }),
        Ok(Response::SessionRevoked { released: 2 })
    );
    assert_eq!(
        h.events,
        vec![
            released("x", a, held.0, ReleaseReason::Revoked),
            released("y", a, other.0, ReleaseReason::Revoked),
            acquired("x", b, 3, Exclusive),
            Event::SessionEnded {
                session: a,
                reason: EndReason::Revoked,
            },
        ]
    );
    assert!(h.state.session(a).is_none());
    assert_eq!(h.holders("x"), vec![(b, FencingToken(3))]);
    assert!(h.state.lock("y").is_none());
    assert_eq!(h.state.stats().total_expired_sessions, 0);
    h.refuses(
        Command::RevokeSession { session: a },
        Error::SessionNotFound(a),
    );
}

#[test]
fn sessions_page_in_id_order_and_busiest_locks_are_bounded() {
    let mut h = Harness::new();
    let a = h.open(1);
    let b = h.open(2);
    let c = h.open(3);
    h.grant(a, 1, "p", Exclusive);
    h.grant(a, 2, "q", Exclusive);
    h.grant(a, 3, "r", Exclusive);
    h.queue(b, 1, "q", Exclusive);
    h.queue(c, 1, "q", Exclusive);
    h.queue(b, 2, "r", Exclusive);

    let (page, more) = h.state.sessions_after(None, 2);
    assert_eq!(page.iter().map(|s| s.session).collect::<Vec<_>>(), [a, b]);
    assert!(more);
    assert_eq!(page[0].held.len(), 3);
    assert_eq!(page[1].waiting, ["q", "r"]);
    let (rest, more) = h.state.sessions_after(Some(b), 2);
    assert_eq!(rest.iter().map(|s| s.session).collect::<Vec<_>>(), [c]);
    assert!(!more);

    let busiest = h.state.busiest_locks(5, 100);
    assert_eq!(
        busiest
            .iter()
            .map(|l| (l.name.as_str(), l.waiters))
            .collect::<Vec<_>>(),
        [("q", 2), ("r", 1)]
    );
    assert_eq!(busiest[0].holders, vec![(a, FencingToken(2))]);
    assert_eq!(h.state.busiest_locks(1, 100).len(), 1);
    assert_eq!(h.state.busiest_locks(0, 100).len(), 0);
    // Only the first `scan` locks in name order are looked at.
    assert!(h.state.busiest_locks(5, 1).is_empty());
    let held = h.state.held_locks_sample(2);
    assert_eq!(
        held.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
        ["p", "q"]
    );
}
