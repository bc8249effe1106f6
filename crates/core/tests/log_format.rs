//! Log entries written before the newer primitives (semaphores, multi-locks, lock-delay,
//! the wall clock) still decode to the same commands and apply: the new `Command`
//! variants were added at the end and no existing one changed.

use fencelock_core::{
    Caller, ClientId, Command, FencingToken, Limits, LockMode, RequestId, SessionId, State,
    WaitPolicy,
};

/// A batch of every kind of older command, postcard-encoded by the build before the
/// newer primitives.
const OLD_LOG: &str = concat!(
    "0a0007904e03088827066a6f62732f610100017602010101066a6f62732f610001046164647204020101",
    "066a6f62732f61010501066a6f62732f610601020d420a07066a6f62732f6108c0843d80897a904e904e",
    "800880048008e80780dddb0180200c000b010101",
);

fn old_log() -> Vec<Command> {
    let req = |seq| RequestId {
        seq,
        first_unanswered_seq: 1,
    };
    vec![
        Command::OpenSession {
            client_id: ClientId(7),
            ttl_ms: 10_000,
        },
        Command::AcquireWithLease {
            client_id: ClientId(8),
            ttl_ms: 5_000,
            name: "jobs/a".into(),
            mode: LockMode::Shared,
            wait: WaitPolicy::NoWait,
            value: b"v".to_vec(),
        },
        Command::Acquire {
            session: SessionId(1),
            request: req(1),
            name: "jobs/a".into(),
            mode: LockMode::Exclusive,
            wait: WaitPolicy::Queue,
            value: b"addr".to_vec(),
        },
        Command::Release {
            session: SessionId(2),
            request: req(1),
            name: "jobs/a".into(),
            token: FencingToken(1),
        },
        Command::CancelWait {
            session: SessionId(1),
            name: "jobs/a".into(),
        },
        Command::ExpireSessions {
            sessions: vec![SessionId(2)],
        },
        Command::Once {
            request: 0x42,
            remember: 10,
            command: Box::new(Command::ForceRelease {
                name: "jobs/a".into(),
            }),
        },
        Command::SetLimits(Limits::default()),
        Command::Authorized {
            caller: Caller::Anyone,
            command: Box::new(Command::RevokeSession {
                session: SessionId(1),
            }),
        },
        Command::CloseSession {
            session: SessionId(1),
        },
    ]
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn an_older_log_decodes_to_the_same_commands_and_applies() {
    let decoded: Vec<Command> = postcard::from_bytes(&unhex(OLD_LOG)).unwrap();
    assert_eq!(decoded, old_log());
    assert_eq!(postcard::to_allocvec(&decoded).unwrap(), unhex(OLD_LOG));
    let mut state = State::default();
    let mut events = Vec::new();
    let results: Vec<_> = decoded
        .into_iter()
        .map(|command| state.apply(command, &mut events))
        .collect();
    state.check_invariants().unwrap();
    assert!(results[..3].iter().all(Result::is_ok), "{results:?}");
    assert_eq!(state.clock_ms(), 0, "an older log carries no wall clock");
}
