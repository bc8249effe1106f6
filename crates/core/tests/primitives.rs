//! The newer primitives, one behaviour per test: counting semaphores, reentrancy, atomic
//! multi-locks, lock-delay, the replicated wall clock and `SetValue`. Every step checks
//! the state's invariants.

use fencelock_core::{
    ClientId, Command, EndReason, Error, Event, FencingToken, Grant, LimitKind, LockMode, LockSpec,
    PrimitiveLimits, ReleaseReason, RequestId, Response, SessionId, State, WaitPolicy,
};

/// A state, the events of the last command, and each session's next request number.
struct Harness {
    state: State,
    events: Vec<Event>,
    seqs: std::collections::BTreeMap<SessionId, u64>,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            state: State::default(),
            events: Vec::new(),
            seqs: Default::default(),
        }
    }

    fn run(&mut self, command: Command) -> Result<Response, Error> {
        self.events.clear();
        let result = self.state.apply(command, &mut self.events);
        self.state.check_invariants().unwrap();
        result
    }

    fn open(&mut self, client: u128) -> SessionId {
        match self.run(Command::OpenSession {
            client_id: ClientId(client),
            ttl_ms: 10_000,
        }) {
            Ok(Response::SessionOpened { session, .. }) => session,
            other => panic!("open: {other:?}"),
        }
    }

    fn request(&mut self, session: SessionId) -> RequestId {
        let seq = self.seqs.entry(session).or_insert(0);
        *seq += 1;
        RequestId {
            seq: *seq,
            first_unanswered_seq: 1,
        }
    }

    fn locks(
        &mut self,
        session: SessionId,
        locks: Vec<LockSpec>,
        wait: WaitPolicy,
    ) -> Result<Response, Error> {
        let request = self.request(session);
        self.run(Command::AcquireLocks {
            session,
            request,
            locks,
            wait,
            value: Vec::new(),
        })
    }

    /// Acquires and expects every lock granted; returns the tokens in name order.
    fn granted(&mut self, session: SessionId, locks: Vec<LockSpec>) -> Vec<FencingToken> {
        match self.locks(session, locks, WaitPolicy::Queue) {
            Ok(Response::GrantedLocks { grants, .. }) => grants.iter().map(|g| g.token).collect(),
            other => panic!("expected a grant: {other:?}"),
        }
    }

    fn queued(&mut self, session: SessionId, locks: Vec<LockSpec>) -> RequestId {
        let request = self.request(session);
        let result = self.run(Command::AcquireLocks {
            session,
            request,
            locks,
            wait: WaitPolicy::Queue,
            value: Vec::new(),
        });
        assert_eq!(result, Ok(Response::Queued { session }));
        request
    }

    fn release(&mut self, session: SessionId, name: &str, token: FencingToken) -> Response {
        let request = self.request(session);
        self.run(Command::Release {
            session,
            request,
            name: name.to_owned(),
            token,
        })
        .unwrap()
    }

    fn holders(&self, name: &str) -> Vec<SessionId> {
        self.state
            .lock(name)
            .map(|lock| lock.holders.iter().map(|h| h.session).collect())
            .unwrap_or_default()
    }

    fn acquired(&self) -> Vec<(String, SessionId)> {
        self.events
            .iter()
            .filter_map(|event| match event {
                Event::Acquired { name, session, .. } => Some((name.clone(), *session)),
                _ => None,
            })
            .collect()
    }
}

fn sem(name: &str, permits: u32, weight: u32) -> LockSpec {
    LockSpec {
        weight,
        ..LockSpec::semaphore(name, permits)
    }
}

fn ex(name: &str) -> LockSpec {
    LockSpec::new(name, LockMode::Exclusive)
}

fn reentrant(name: &str) -> LockSpec {
    LockSpec {
        reentrant: true,
        ..ex(name)
    }
}

fn delayed(name: &str, lock_delay_ms: u64) -> LockSpec {
    LockSpec {
        lock_delay_ms,
        ..ex(name)
    }
}

// ----- counting semaphores ----------------------------------------------------------------

#[test]
fn a_semaphore_lets_n_permits_out_each_with_its_own_token() {
    let mut h = Harness::new();
    let [a, b, c, d] = [1, 2, 3, 4].map(|client| h.open(client));
    let ta = h.granted(a, vec![sem("s", 3, 1)]);
    let tb = h.granted(b, vec![sem("s", 3, 2)]);
    assert!(ta[0] < tb[0], "one counter, strictly increasing");
    h.queued(c, vec![sem("s", 3, 1)]);
    assert_eq!(
        h.locks(d, vec![sem("s", 3, 1)], WaitPolicy::NoWait),
        Ok(Response::WouldBlock { session: d })
    );
    let lock = h.state.lock("s").unwrap();
    assert_eq!(
        (lock.permits, lock.permits_used, lock.permits_free()),
        (Some(3), 3, Some(0))
    );
    assert_eq!(lock.waiters.len(), 1);
    h.release(a, "s", ta[0]);
    assert_eq!(h.acquired(), vec![("s".to_owned(), c)]);
    assert_eq!(h.holders("s"), vec![b, c]);
}

#[test]
fn a_semaphore_queue_is_fifo_a_head_that_does_not_fit_blocks_later_waiters() {
    let mut h = Harness::new();
    let [a, b, c, d] = [1, 2, 3, 4].map(|client| h.open(client));
    let ta = h.granted(a, vec![sem("s", 3, 2)]);
    h.granted(b, vec![sem("s", 3, 1)]);
    h.queued(c, vec![sem("s", 3, 2)]);
    // One permit would be free for d after a's release of 2... but c is first.
    h.queued(d, vec![sem("s", 3, 1)]);
    h.release(a, "s", ta[0]);
    assert_eq!(h.acquired(), vec![("s".to_owned(), c)]);
    assert_eq!(h.holders("s"), vec![b, c]);
    assert_eq!(h.state.lock("s").unwrap().waiters.len(), 1);
}

#[test]
fn a_different_limit_is_refused_naming_both_values_while_the_name_is_in_use() {
    let mut h = Harness::new();
    let [a, b] = [1, 2].map(|client| h.open(client));
    let ta = h.granted(a, vec![sem("s", 3, 1)]);
    let refused = h.locks(b, vec![sem("s", 5, 1)], WaitPolicy::Queue);
    assert_eq!(
        refused,
        Err(Error::PermitsMismatch {
            name: "s".to_owned(),
            limit: Some(3),
            asked: Some(5),
        })
    );
    let message = refused.unwrap_err().to_string();
    assert!(
        message.contains("3 permits") && message.contains("5 permits"),
        "{message}"
    );
    assert_eq!(
        h.locks(
            b,
            vec![LockSpec::new("s", LockMode::Shared)],
            WaitPolicy::Queue
        ),
        Err(Error::PermitsMismatch {
            name: "s".to_owned(),
            limit: Some(3),
            asked: None,
        })
    );
    let request = h.request(b);
    assert!(matches!(
        h.run(Command::Acquire {
            session: b,
            request,
            name: "s".to_owned(),
            mode: LockMode::Exclusive,
            wait: WaitPolicy::Queue,
            value: Vec::new(),
        }),
        Err(Error::PermitsMismatch { asked: None, .. })
    ));
    // Once the name is forgotten, the next acquire fixes a new limit.
    h.release(a, "s", ta[0]);
    assert!(h.state.lock("s").is_none());
    h.granted(b, vec![sem("s", 5, 5)]);
    assert_eq!(h.state.lock("s").unwrap().permits, Some(5));
}

#[test]
fn bad_semaphore_specs_are_refused_with_a_reason() {
    let mut h = Harness::new();
    let a = h.open(1);
    for spec in [
        sem("s", 0, 1),
        sem("s", 3, 0),
        sem("s", 3, 4),
        LockSpec {
            mode: LockMode::Exclusive,
            ..sem("s", 3, 1)
        },
        LockSpec {
            weight: 2,
            ..ex("s")
        },
        sem("s", PrimitiveLimits::default().max_permits + 1, 1),
    ] {
        assert!(
            matches!(
                h.locks(a, vec![spec.clone()], WaitPolicy::Queue),
                Err(Error::InvalidLockSpec(_))
            ),
            "{spec:?}"
        );
    }
    assert!(h.state.lock("s").is_none());
}

// ----- reentrancy ---------------------------------------------------------------------------

#[test]
fn a_reentrant_acquire_returns_the_same_token_and_counts_holds() {
    let mut h = Harness::new();
    let [a, b] = [1, 2].map(|client| h.open(client));
    let token = h.granted(a, vec![reentrant("r")])[0];
    assert_eq!(
        h.locks(a, vec![reentrant("r")], WaitPolicy::Queue),
        Ok(Response::GrantedLocks {
            session: a,
            grants: vec![Grant {
                name: "r".to_owned(),
                token,
                hold_count: 2,
            }],
        })
    );
    assert!(matches!(
        h.events[..],
        [Event::HoldCountChanged { hold_count: 2, .. }]
    ));
    h.queued(b, vec![ex("r")]);
    assert_eq!(
        h.release(a, "r", token),
        Response::StillHeld { hold_count: 1 }
    );
    assert_eq!(h.holders("r"), vec![a]);
    assert_eq!(h.state.lock("r").unwrap().holders[0].hold_count, 1);
    assert_eq!(h.release(a, "r", token), Response::Released);
    assert_eq!(h.acquired(), vec![("r".to_owned(), b)]);
}

#[test]
fn reentrancy_is_opt_in_and_exclusive_only() {
    let mut h = Harness::new();
    let a = h.open(1);
    h.granted(a, vec![ex("r")]);
    assert_eq!(
        h.locks(a, vec![ex("r")], WaitPolicy::Queue),
        Err(Error::AlreadyHeldOrQueued("r".to_owned()))
    );
    h.granted(a, vec![LockSpec::new("s", LockMode::Shared)]);
    assert!(matches!(
        h.locks(
            a,
            vec![LockSpec {
                reentrant: true,
                ..LockSpec::new("s", LockMode::Shared)
            }],
            WaitPolicy::Queue
        ),
        Err(Error::InvalidLockSpec(_))
    ));
    assert!(matches!(
        h.locks(a, vec![reentrant("r"), ex("z")], WaitPolicy::Queue),
        Err(Error::InvalidLockSpec(_))
    ));
}

#[test]
fn a_reentrant_lock_passes_on_when_its_session_ends_whatever_the_hold_count() {
    let mut h = Harness::new();
    let [a, b] = [1, 2].map(|client| h.open(client));
    h.granted(a, vec![reentrant("r")]);
    h.granted(a, vec![reentrant("r")]);
    h.granted(a, vec![reentrant("r")]);
    h.queued(b, vec![ex("r")]);
    h.run(Command::CloseSession { session: a }).unwrap();
    assert_eq!(h.holders("r"), vec![b]);
}

#[test]
fn hold_counts_are_bounded() {
    let mut h = Harness::new();
    h.run(Command::SetPrimitiveLimits(PrimitiveLimits {
        max_hold_count: 2,
        ..PrimitiveLimits::default()
    }))
    .unwrap();
    let a = h.open(1);
    h.granted(a, vec![reentrant("r")]);
    h.granted(a, vec![reentrant("r")]);
    assert_eq!(
        h.locks(a, vec![reentrant("r")], WaitPolicy::Queue),
        Err(Error::LimitReached(LimitKind::HoldCount))
    );
}

// ----- atomic multi-lock --------------------------------------------------------------------

#[test]
fn a_multi_lock_is_granted_all_at_once_each_name_with_its_own_token() {
    let mut h = Harness::new();
    let a = h.open(1);
    let tokens = h.granted(a, vec![ex("c"), ex("a"), ex("b")]);
    assert_eq!(tokens.len(), 3);
    assert!(tokens.windows(2).all(|pair| pair[0] < pair[1]));
    assert_eq!(
        h.acquired(),
        vec![
            ("a".to_owned(), a),
            ("b".to_owned(), a),
            ("c".to_owned(), a)
        ]
    );
}

#[test]
fn a_blocked_multi_lock_holds_nothing_and_is_granted_in_one_apply() {
    let mut h = Harness::new();
    let [a, b, c] = [1, 2, 3].map(|client| h.open(client));
    let tx = h.granted(a, vec![ex("x")]);
    let request = h.queued(b, vec![ex("x"), ex("y")]);
    // y is free, but reserved for b's multi-lock: a later single waiter queues behind it.
    assert!(h.holders("y").is_empty());
    assert_eq!(
        h.locks(c, vec![ex("y")], WaitPolicy::NoWait),
        Ok(Response::WouldBlock { session: c })
    );
    h.queued(c, vec![ex("y")]);
    assert_eq!(
        h.state.lock("y").unwrap().waiters[0].names,
        vec!["x".to_owned(), "y".to_owned()]
    );
    h.release(a, "x", tx[0]);
    assert_eq!(h.acquired(), vec![("x".to_owned(), b), ("y".to_owned(), b)]);
    let Some(Ok(Response::GrantedLocks { grants, .. })) = h.state.request_answer(b, request.seq)
    else {
        panic!("the remembered answer is the grant");
    };
    assert_eq!(grants.len(), 2);
    assert_eq!(h.state.lock("y").unwrap().waiters[0].session, c);
}

#[test]
fn multi_locks_crossing_in_opposite_orders_do_not_deadlock() {
    let mut h = Harness::new();
    let [a, b, c] = [1, 2, 3].map(|client| h.open(client));
    let tx = h.granted(a, vec![ex("x")]);
    h.queued(b, vec![ex("x"), ex("y")]);
    h.queued(c, vec![ex("y"), ex("x")]);
    h.release(a, "x", tx[0]);
    assert_eq!(h.holders("x"), vec![b]);
    assert_eq!(h.holders("y"), vec![b]);
    h.run(Command::CloseSession { session: b }).unwrap();
    assert_eq!(h.holders("x"), vec![c]);
    assert_eq!(h.holders("y"), vec![c]);
}

#[test]
fn a_multi_lock_never_overtakes_the_head_of_another_of_its_queues() {
    let mut h = Harness::new();
    let [a, b, c] = [1, 2, 3].map(|client| h.open(client));
    let tc = h.granted(a, vec![ex("c")]);
    // b waits for c and reserves the free b-lock; c's request then finds its first name
    // free but b at the head of the other.
    h.queued(b, vec![ex("b"), ex("c")]);
    h.queued(c, vec![ex("a"), ex("b")]);
    assert!(h.holders("a").is_empty() && h.holders("b").is_empty());
    h.release(a, "c", tc[0]);
    assert_eq!(h.acquired(), vec![("b".to_owned(), b), ("c".to_owned(), b)]);
    h.run(Command::CloseSession { session: b }).unwrap();
    assert_eq!(h.acquired(), vec![("a".to_owned(), c), ("b".to_owned(), c)]);
}

#[test]
fn cancelling_one_name_of_a_multi_lock_withdraws_all_of_it() {
    let mut h = Harness::new();
    let [a, b, c] = [1, 2, 3].map(|client| h.open(client));
    h.granted(a, vec![ex("x")]);
    h.queued(b, vec![ex("x"), ex("y")]);
    h.queued(c, vec![ex("y")]);
    assert_eq!(
        h.run(Command::CancelWait {
            session: b,
            name: "x".to_owned(),
        }),
        Ok(Response::WaitCancelled)
    );
    assert!(h.state.session(b).unwrap().waiting.is_empty());
    assert_eq!(h.holders("y"), vec![c], "y's next waiter is granted");
}

#[test]
fn a_multi_lock_that_would_block_leaves_no_trace() {
    let mut h = Harness::new();
    let [a, b] = [1, 2].map(|client| h.open(client));
    h.granted(a, vec![ex("x")]);
    assert_eq!(
        h.locks(b, vec![ex("x"), ex("y")], WaitPolicy::NoWait),
        Ok(Response::WouldBlock { session: b })
    );
    assert!(h.state.lock("y").is_none());
    assert!(matches!(
        h.locks(b, vec![ex("y"), ex("y")], WaitPolicy::Queue),
        Err(Error::InvalidLockSpec(_))
    ));
    assert!(matches!(
        h.locks(b, vec![ex("x"), ex("y")], WaitPolicy::Queue),
        Ok(Response::Queued { .. })
    ));
    assert_eq!(
        h.locks(b, vec![ex("z"), ex("y")], WaitPolicy::Queue),
        Err(Error::AlreadyHeldOrQueued("y".to_owned()))
    );
}

#[test]
fn the_locks_in_one_request_are_bounded() {
    let mut h = Harness::new();
    h.run(Command::SetPrimitiveLimits(PrimitiveLimits {
        max_locks_per_request: 2,
        ..PrimitiveLimits::default()
    }))
    .unwrap();
    let a = h.open(1);
    assert_eq!(
        h.locks(a, vec![ex("a"), ex("b"), ex("c")], WaitPolicy::Queue),
        Err(Error::LimitReached(LimitKind::LocksPerRequest))
    );
    assert!(matches!(
        h.locks(a, vec![], WaitPolicy::Queue),
        Err(Error::InvalidLockSpec(_))
    ));
}

// ----- lock-delay -----------------------------------------------------------------------------

#[test]
fn an_expired_holder_with_a_delay_blocks_the_lock_until_the_leader_ends_it() {
    let mut h = Harness::new();
    let [a, b, c] = [1, 2, 3].map(|client| h.open(client));
    let token = h.granted(a, vec![delayed("d", 15_000)])[0];
    h.run(Command::ExpireSessions { sessions: vec![a] })
        .unwrap();
    assert!(h.events.contains(&Event::LockDelayStarted {
        name: "d".to_owned(),
        token,
        delay_ms: 15_000,
    }));
    let delay = h.state.lock_delay("d").unwrap();
    assert_eq!(delay.token, token);
    assert_eq!(h.state.lock("d").unwrap().delay, Some(delay));
    assert_eq!(
        h.state.lock_delays().collect::<Vec<_>>(),
        vec![("d", delay)]
    );
    assert_eq!(
        h.locks(b, vec![ex("d")], WaitPolicy::NoWait),
        Ok(Response::WouldBlock { session: b })
    );
    h.queued(b, vec![ex("d")]);
    // A stale end (another delay's id) changes nothing.
    assert_eq!(
        h.run(Command::EndLockDelay {
            name: "d".to_owned(),
            token: FencingToken(token.0 + 100),
        }),
        Ok(Response::LockDelayEnded { ended: false })
    );
    assert!(h.holders("d").is_empty());
    assert_eq!(
        h.run(Command::EndLockDelay {
            name: "d".to_owned(),
            token,
        }),
        Ok(Response::LockDelayEnded { ended: true })
    );
    assert_eq!(h.holders("d"), vec![b]);
    assert!(h.state.lock_delay("d").is_none());
    let _ = c;
}

#[test]
fn a_clean_release_or_close_starts_no_delay_but_a_revocation_does() {
    let mut h = Harness::new();
    let [a, b, c] = [1, 2, 3].map(|client| h.open(client));
    let token = h.granted(a, vec![delayed("d", 1_000)])[0];
    h.release(a, "d", token);
    assert!(h.state.lock("d").is_none());
    h.granted(b, vec![delayed("d", 1_000)]);
    h.run(Command::CloseSession { session: b }).unwrap();
    assert!(h.state.lock("d").is_none());
    h.granted(c, vec![delayed("d", 1_000)]);
    h.run(Command::RevokeSession { session: c }).unwrap();
    assert!(h.state.lock_delay("d").is_some());
    assert!(h.events.iter().any(|event| matches!(
        event,
        Event::Released {
            reason: ReleaseReason::Revoked,
            ..
        }
    )));
    assert!(h.events.contains(&Event::SessionEnded {
        session: c,
        reason: EndReason::Revoked,
    }));
}

#[test]
fn a_delay_beyond_the_replicated_limit_is_refused() {
    let mut h = Harness::new();
    let a = h.open(1);
    let max = PrimitiveLimits::default().max_lock_delay_ms;
    assert_eq!(
        h.locks(a, vec![delayed("d", max + 1)], WaitPolicy::Queue),
        Err(Error::LockDelayTooLong {
            asked_ms: max + 1,
            max_ms: max,
        })
    );
    assert!(
        h.run(Command::SetPrimitiveLimits(PrimitiveLimits {
            max_lock_delay_ms: PrimitiveLimits::LOCK_DELAY_CEILING_MS + 1,
            ..PrimitiveLimits::default()
        }))
        .is_err()
    );
}

// ----- time as data and SetValue -------------------------------------------------------------

#[test]
fn grants_and_waits_are_stamped_with_the_replicated_clock_which_never_goes_back() {
    let mut h = Harness::new();
    let [a, b] = [1, 2].map(|client| h.open(client));
    h.run(Command::WallClock { unix_ms: 5_000 }).unwrap();
    assert_eq!(
        h.run(Command::WallClock { unix_ms: 4_000 }),
        Ok(Response::ClockSet { unix_ms: 5_000 })
    );
    let token = h.granted(a, vec![ex("x")])[0];
    h.run(Command::WallClock { unix_ms: 7_000 }).unwrap();
    h.queued(b, vec![ex("x")]);
    let lock = h.state.lock("x").unwrap();
    assert_eq!(lock.holders[0].granted_at_ms, 5_000);
    assert_eq!(lock.waiters[0].queued_at_ms, 7_000);
    assert_eq!(h.state.longest_held_locks(5)[0].held_since_ms, Some(5_000));
    h.run(Command::WallClock { unix_ms: 9_000 }).unwrap();
    h.release(a, "x", token);
    assert_eq!(h.state.lock("x").unwrap().holders[0].granted_at_ms, 9_000);
}

#[test]
fn a_holder_replaces_its_value_without_releasing_once_per_request() {
    let mut h = Harness::new();
    let a = h.open(1);
    let token = h.granted(a, vec![ex("leader")])[0];
    let request = h.request(a);
    let set = Command::SetValue {
        session: a,
        request,
        name: "leader".to_owned(),
        token,
        value: b"node-2".to_vec(),
    };
    assert_eq!(h.run(set.clone()), Ok(Response::ValueSet));
    assert_eq!(
        h.events,
        vec![Event::ValueChanged {
            name: "leader".to_owned(),
            session: a,
            token,
            value: b"node-2".to_vec(),
        }]
    );
    assert_eq!(h.run(set), Ok(Response::ValueSet));
    assert!(h.events.is_empty(), "a retry acts once");
    assert_eq!(h.state.lock("leader").unwrap().holders[0].value, b"node-2");
    let request = h.request(a);
    assert!(matches!(
        h.run(Command::SetValue {
            session: a,
            request,
            name: "leader".to_owned(),
            token: FencingToken(token.0 + 1),
            value: Vec::new(),
        }),
        Err(Error::StaleToken { .. })
    ));
}

// ----- authorization --------------------------------------------------------------------------

#[test]
fn the_leaders_own_new_commands_carry_no_caller_and_clients_new_ones_do() {
    let mut h = Harness::new();
    for command in [
        Command::WallClock { unix_ms: 1 },
        Command::EndLockDelay {
            name: "d".to_owned(),
            token: FencingToken(1),
        },
        Command::SetPrimitiveLimits(PrimitiveLimits::default()),
    ] {
        assert!(matches!(
            h.run(Command::Authorized {
                caller: fencelock_core::Caller::Anyone,
                command: Box::new(command),
            }),
            Err(Error::BadWrapper(_))
        ));
    }
    let granted = h.run(Command::Authorized {
        caller: fencelock_core::Caller::Anyone,
        command: Box::new(Command::AcquireLocksWithLease {
            client_id: ClientId(9),
            ttl_ms: 10_000,
            locks: vec![ex("a"), ex("b")],
            wait: WaitPolicy::Queue,
            value: Vec::new(),
        }),
    });
    assert!(
        matches!(&granted, Ok(Response::GrantedLocks { grants, .. }) if grants.len() == 2),
        "{granted:?}"
    );
}

// ----- the grants in force by age -----------------------------------------------------------

/// `(granted_at_ms, lock)` of every grant in force, oldest first, from the index.
fn by_age(h: &Harness) -> Vec<(u64, String)> {
    h.state
        .grants_by_age()
        .map(|grant| (grant.granted_at_ms, grant.name.to_owned()))
        .collect()
}

#[test]
fn the_oldest_grant_in_force_is_kept_exact_by_every_path_that_grants_or_ends_one() {
    let mut h = Harness::new();
    let [a, b, c, d] = [1, 2, 3, 4].map(|client| h.open(client));
    assert_eq!(h.state.oldest_stamped_grant_ms(), None);
    // A grant before any wall clock is known has no age.
    let old = h.granted(d, vec![ex("old")])[0];
    assert_eq!(h.state.oldest_stamped_grant_ms(), None);
    assert_eq!(h.state.unstamped_grants(), 1);
    h.run(Command::WallClock { unix_ms: 1_000 }).unwrap();
    let x = h.granted(a, vec![reentrant("x")])[0];
    h.run(Command::WallClock { unix_ms: 2_000 }).unwrap();
    // A reentrant hold is the same grant, at its first time.
    h.granted(a, vec![reentrant("x")]);
    // A semaphore's holders are one grant each, whatever their weight.
    h.granted(b, vec![sem("s", 3, 2)]);
    h.granted(c, vec![sem("s", 3, 1)]);
    h.run(Command::WallClock { unix_ms: 3_000 }).unwrap();
    // A multi-lock is one grant per name.
    h.granted(b, vec![ex("m1"), ex("m2")]);
    h.queued(c, vec![ex("x")]);
    assert_eq!(
        by_age(&h),
        [
            (0, "old".to_owned()),
            (1_000, "x".to_owned()),
            (2_000, "s".to_owned()),
            (2_000, "s".to_owned()),
            (3_000, "m1".to_owned()),
            (3_000, "m2".to_owned()),
        ]
    );
    assert_eq!(h.state.oldest_stamped_grant_ms(), Some(1_000));
    let longest: Vec<String> = h
        .state
        .longest_held_locks(3)
        .into_iter()
        .map(|lock| lock.name)
        .collect();
    assert_eq!(longest, ["old", "x", "s"]);

    // Releasing one of two reentrant holds keeps the grant; the second ends it and hands
    // the lock to the waiter, granted now.
    h.run(Command::WallClock { unix_ms: 4_000 }).unwrap();
    h.release(a, "x", x);
    assert_eq!(h.state.oldest_stamped_grant_ms(), Some(1_000));
    h.release(a, "x", x);
    assert_eq!(h.state.oldest_stamped_grant_ms(), Some(2_000));
    assert!(by_age(&h).contains(&(4_000, "x".to_owned())));

    // A forced release ends every grant of the lock.
    h.run(Command::ForceRelease { name: "s".into() }).unwrap();
    assert_eq!(h.state.oldest_stamped_grant_ms(), Some(3_000));
    // An expiry and a revocation end the sessions' grants, a close too.
    h.run(Command::ExpireSessions { sessions: vec![b] })
        .unwrap();
    assert_eq!(h.state.oldest_stamped_grant_ms(), Some(4_000));
    h.run(Command::RevokeSession { session: c }).unwrap();
    assert_eq!(h.state.oldest_stamped_grant_ms(), None);
    assert_eq!(by_age(&h), [(0, "old".to_owned())]);
    h.release(d, "old", old);
    assert_eq!(by_age(&h), []);
    assert_eq!(h.state.unstamped_grants(), 0);
}

#[test]
fn the_grant_index_is_rebuilt_when_a_state_is_decoded() {
    let mut h = Harness::new();
    let [a, b] = [1, 2].map(|client| h.open(client));
    h.run(Command::WallClock { unix_ms: 7_000 }).unwrap();
    h.granted(a, vec![sem("s", 2, 1)]);
    h.run(Command::WallClock { unix_ms: 8_000 }).unwrap();
    h.granted(b, vec![sem("s", 2, 1), ex("y")]);
    let bytes = postcard::to_stdvec(&h.state).unwrap();
    let decoded: State = postcard::from_bytes(&bytes).unwrap();
    decoded.check_invariants().unwrap();
    assert_eq!(decoded, h.state);
    assert_eq!(decoded.oldest_stamped_grant_ms(), Some(7_000));
    assert_eq!(decoded.grants_by_age().count(), 3);
}
