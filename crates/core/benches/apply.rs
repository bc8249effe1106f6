//! Micro-benchmarks of the state machine's apply path (`State::apply`), the work every
//! replica does for every committed command. Run with `cargo bench -p fencelock-core`.
//!
//! Allocations are counted too (divan's `AllocProfiler`): unlike the times on a shared
//! machine, they are exact. Per `acquire_release_pair`, 8 allocations (1,682 bytes) while
//! `begin_request` rebuilt the answers with `split_off`, 6 (594 bytes) once it pruned in
//! place, 4 (62 bytes) with one holder inline and shared names.

use fencelock_core::{
    ClientId, Command, FencingToken, LockMode, RequestId, Response, SessionId, State, WaitPolicy,
};

#[global_allocator]
static ALLOC: divan::AllocProfiler = divan::AllocProfiler::system();

fn main() {
    divan::main();
}

/// A state with `sessions` open sessions (ids 1..=sessions).
fn with_sessions(sessions: u64) -> State {
    let mut state = State::default();
    let mut events = Vec::new();
    for i in 0..sessions {
        state
            .apply(
                Command::OpenSession {
                    client_id: ClientId(u128::from(i) + 1),
                    ttl_ms: 10_000,
                },
                &mut events,
            )
            .expect("open session");
    }
    state
}

fn acquire(session: u64, seq: u64, name: String, wait: WaitPolicy) -> Command {
    Command::Acquire {
        session: SessionId(session),
        request: RequestId {
            seq,
            first_unanswered_seq: seq,
        },
        name,
        mode: LockMode::Exclusive,
        wait,
        value: Vec::new(),
    }
}

fn release(session: u64, seq: u64, name: String, token: FencingToken) -> Command {
    Command::Release {
        session: SessionId(session),
        request: RequestId {
            seq,
            first_unanswered_seq: seq,
        },
        name,
        token,
    }
}

/// One acquire + release pair of a free lock (the uncontended workload's unit), with
/// `held` other locks already in the state.
#[divan::bench(args = [0, 10_000, 100_000])]
fn acquire_release_pair(bencher: divan::Bencher, held: u64) {
    // At most 10,000 locks per session (the default limit): spread the held ones.
    let mut state = with_sessions(2 + held / 10_000);
    let mut events = Vec::new();
    for i in 0..held {
        state
            .apply(
                acquire(
                    2 + i / 10_000,
                    i + 1,
                    format!("held/{i}"),
                    WaitPolicy::NoWait,
                ),
                &mut events,
            )
            .expect("fill");
        if i % 1_000 == 999 {
            events.clear();
        }
    }
    let mut seq = 0;
    bencher.bench_local(|| {
        events.clear();
        seq += 2;
        let name = "bench/lock".to_owned();
        let granted = state.apply(
            acquire(1, seq - 1, name.clone(), WaitPolicy::NoWait),
            &mut events,
        );
        let Ok(Response::Granted { token, .. }) = granted else {
            panic!("free lock not granted: {granted:?}")
        };
        state
            .apply(release(1, seq, name, token), &mut events)
            .expect("release")
    });
}

/// A hand-off: the holder releases and the queued waiter is granted in the same apply
/// (the contended workload's unit), then the waiter queues again behind the new holder.
#[divan::bench]
fn handoff(bencher: divan::Bencher) {
    let mut state = with_sessions(2);
    let mut events = Vec::new();
    let name = || "bench/contended".to_owned();
    let Ok(Response::Granted { mut token, .. }) =
        state.apply(acquire(1, 1, name(), WaitPolicy::Queue), &mut events)
    else {
        panic!("first grant")
    };
    state
        .apply(acquire(2, 1, name(), WaitPolicy::Queue), &mut events)
        .expect("queue");
    let mut holder = 1;
    let mut seqs = [0, 1, 1];
    bencher.bench_local(|| {
        events.clear();
        let waiter = 3 - holder;
        seqs[holder as usize] += 1;
        state
            .apply(
                release(holder, seqs[holder as usize], name(), token),
                &mut events,
            )
            .expect("release");
        token = events
            .iter()
            .find_map(|e| match e {
                fencelock_core::Event::Acquired { token, .. } => Some(*token),
                _ => None,
            })
            .expect("hand-off grant");
        seqs[holder as usize] += 1;
        state
            .apply(
                acquire(holder, seqs[holder as usize], name(), WaitPolicy::Queue),
                &mut events,
            )
            .expect("queue again");
        holder = waiter;
    });
}

/// A batch of 32 sessions opened then closed, the shape of a busy entry of session
/// traffic (closing keeps the state bounded however long divan runs).
#[divan::bench]
fn open_close_32_sessions(bencher: divan::Bencher) {
    let mut state = State::default();
    let mut events = Vec::new();
    let mut next = 0u128;
    bencher.bench_local(|| {
        events.clear();
        let mut opened = Vec::with_capacity(32);
        for _ in 0..32 {
            next += 1;
            let Ok(Response::SessionOpened { session, .. }) = state.apply(
                Command::OpenSession {
                    client_id: ClientId(next),
                    ttl_ms: 10_000,
                },
                &mut events,
            ) else {
                panic!("open")
            };
            opened.push(session);
        }
        for session in opened {
            state
                .apply(Command::CloseSession { session }, &mut events)
                .expect("close");
        }
    });
}
