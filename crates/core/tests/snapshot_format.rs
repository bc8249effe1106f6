//! The serialized form of [`State`] is the payload of the server's snapshots
//! (crates/server/src/store/snapshot.rs), read back by other nodes and later versions.
//! This pins it: a state with every kind of record encodes to exactly the bytes below.
//!
//! If this test fails, the snapshot format changed: either make the encoding match
//! again, or bump the server's snapshot `FORMAT_VERSION`, add the new bytes here and keep
//! the old ones with a test that they still decode (as [`StateV1`] does for version 1).

use fencelock_core::{
    AuthCommand, Caller, ClientId, Command, FencingToken, LockMode, LockSpec, RequestId, Response,
    SessionId, State, StateV1, StateV2, StateV3, StateV3Ref, WaitPolicy,
};

fn acquire(session: u64, seq: u64, name: &str, mode: LockMode, value: &[u8]) -> Command {
    Command::Acquire {
        session: SessionId(session),
        request: RequestId {
            seq,
            first_unanswered_seq: 1,
        },
        name: name.to_owned(),
        mode,
        wait: WaitPolicy::Queue,
        value: value.to_vec(),
    }
}

/// Three sessions: an exclusive lock with a value, a shared lock with two holders and a
/// queued writer, a lock handed down its queue, remembered answers of every kind.
fn sample() -> State {
    let mut state = State::default();
    let mut events = Vec::new();
    let mut run = |command| state.apply(command, &mut events);
    for client in 1..=3 {
        run(Command::OpenSession {
            client_id: ClientId(client),
            ttl_ms: 5_000,
        })
        .unwrap();
    }
    run(acquire(
        1,
        1,
        "jobs/billing",
        LockMode::Exclusive,
        b"10.0.0.7",
    ))
    .unwrap();
    run(acquire(1, 2, "shared", LockMode::Shared, b"")).unwrap();
    run(acquire(2, 1, "shared", LockMode::Shared, b"r2")).unwrap();
    run(acquire(3, 1, "shared", LockMode::Exclusive, b"w3")).unwrap();
    let Ok(Response::Granted { token, .. }) =
        run(acquire(2, 2, "handed", LockMode::Exclusive, b""))
    else {
        panic!("free lock")
    };
    run(acquire(3, 2, "handed", LockMode::Exclusive, b"next")).unwrap();
    run(acquire(2, 3, "x", LockMode::Exclusive, b"")).unwrap();
    run(Command::Release {
        session: SessionId(2),
        request: RequestId {
            seq: 4,
            first_unanswered_seq: 1,
        },
        name: "handed".to_owned(),
        token,
    })
    .unwrap();
    state
}

/// `sample()`, postcard-encoded, as of snapshot format version 1.
const GOLDEN_V1: &str = concat!(
    "c0843d80897a904e904e800880048008e80780dddb018020c0843d80897a904e904e800880048008",
    "e80780dddb01802004060301018827020c6a6f62732f62696c6c696e670106736861726564020002",
    "01000201010200020102010202882702067368617265640301780500040100020203020002020403",
    "000202050400060103038827010668616e6465640601067368617265640201000303020002030601",
    "03010102020303040668616e64656401060300046e657874000c6a6f62732f62696c6c696e670101",
    "01000831302e302e302e370006736861726564020201010003020102723201030002773301017801",
    "0502000000050106000000000000",
);

/// `sample()` plus a remembered session-less answer, postcard-encoded, as of snapshot
/// format version 2 (version 1's fields, then the auth revision and the remembered
/// answers).
const GOLDEN_V2: &str = concat!(
    "c0843d80897a904e904e800880048008e80780dddb018020c0843d80897a904e904e800880048008",
    "e80780dddb01802004060301018827020c6a6f62732f62696c6c696e670106736861726564020002",
    "01000201010200020102010202882702067368617265640301780500040100020203020002020403",
    "000202050400060103038827010668616e6465640601067368617265640201000303020002030601",
    "03010102020303040668616e64656401060300046e657874000c6a6f62732f62696c6c696e670101",
    "01000831302e302e302e370006736861726564020201010003020102723201030002773301017801",
    "05020000000501060000000101720000000101b424000a01b424",
);

/// `sample_v3()`, postcard-encoded, as of snapshot format version 3 (the locks' records
/// with the newer primitives' fields, then the wall clock, the primitives' limits and
/// the lock-delays in force).
const GOLDEN_V3: &str = concat!(
    "c0843d80897a904e904e800880048008e80780dddb018020c0843d80897a904e904e800880048008",
    "e80780dddb018020050a0301018827040c6a6f62732f62696c6c696e6701027265090373656d0706",
    "73686172656402020466726565017806010002010102000201020a000c01010373656d07010b000c",
    "010102726509010c000c010102726509020d0003010102028827030373656d080673686172656403",
    "01780500050100020203020002020403000202050400060a000c02010373656d0801010303882701",
    "0668616e64656406020373656d06736861726564030100030302000203060a000303010301010202",
    "0303080764656c6179656400000004667265650001010001760de8d795ffbc310100010204667265",
    "650178000668616e64656401060300046e6578740001010000000c6a6f62732f62696c6c696e6701",
    "0101000831302e302e302e37000101000000027265010901000176e8d795ffbc3101020000000373",
    "656d02070101017680d095ffbc31010100080201017680d095ffbc3102010001030101760ae8d795",
    "ffbc31010001010373656d0103067368617265640202010100000101000302010272320001010001",
    "0300027733010001000000017801050200000001010001010001760de8d795ffbc31010001020466",
    "72656501780008040a0100000101720000000101b424000a01b424e8d795ffbc31e0d403c0843d40",
    "c0843d010764656c617965640a9875e8d795ffbc310a",
);

/// `sample()` with one auth command applied through `Once`: the fields of version 2 are
/// not empty.
fn sample_v2() -> State {
    let mut state = sample();
    state
        .apply(
            Command::Authorized {
                caller: Caller::Anyone,
                command: Box::new(Command::Once {
                    request: 0x1234,
                    remember: 10,
                    command: Box::new(Command::Auth(AuthCommand::RoleAdd { name: "r".into() })),
                }),
            },
            &mut Vec::new(),
        )
        .unwrap();
    state
}

/// `sample_v2()` with a record of each newer primitive: a replicated wall clock, a
/// semaphore with two holders of different weights and a waiter, a reentrant hold, a
/// multi-lock queued on a held and a free name, and a lock-delay in force.
fn sample_v3() -> State {
    let mut state = sample_v2();
    let mut events = Vec::new();
    let mut run = |command| state.apply(command, &mut events).unwrap();
    let locks = |session: u64, seq: u64, locks: Vec<LockSpec>| Command::AcquireLocks {
        session: SessionId(session),
        request: RequestId {
            seq,
            first_unanswered_seq: 1,
        },
        locks,
        wait: WaitPolicy::Queue,
        value: b"v".to_vec(),
    };
    run(Command::WallClock {
        unix_ms: 1_700_000_000_000,
    });
    run(locks(1, 10, vec![LockSpec::semaphore("sem", 3)]));
    run(locks(
        2,
        10,
        vec![LockSpec {
            weight: 2,
            ..LockSpec::semaphore("sem", 3)
        }],
    ));
    run(Command::WallClock {
        unix_ms: 1_700_000_001_000,
    });
    run(locks(3, 10, vec![LockSpec::semaphore("sem", 3)]));
    let reentrant = LockSpec {
        reentrant: true,
        ..LockSpec::new("re", LockMode::Exclusive)
    };
    run(locks(1, 11, vec![reentrant.clone()]));
    run(locks(1, 12, vec![reentrant]));
    run(locks(
        1,
        13,
        vec![
            LockSpec::new("x", LockMode::Exclusive),
            LockSpec::new("free", LockMode::Exclusive),
        ],
    ));
    run(Command::OpenSession {
        client_id: ClientId(4),
        ttl_ms: 5_000,
    });
    run(locks(
        4,
        1,
        vec![LockSpec {
            lock_delay_ms: 15_000,
            ..LockSpec::new("delayed", LockMode::Exclusive)
        }],
    ));
    run(Command::ExpireSessions {
        sessions: vec![SessionId(4)],
    });
    state
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

/// `sample_v3()` with the cluster version raised to 2.
fn sample_v4() -> State {
    let mut state = sample_v3();
    state
        .apply(Command::SetClusterVersion { version: 2 }, &mut Vec::new())
        .unwrap();
    state
}

/// `sample_v4()`, postcard-encoded, as of snapshot format version 4: format 3's bytes
/// and the cluster version after them.
fn golden_v4() -> String {
    format!("{GOLDEN_V3}02")
}

#[test]
fn snapshot_encoding_is_unchanged() {
    let state = sample_v4();
    assert_eq!(
        state.lock_delay("delayed").map(|delay| delay.token),
        Some(FencingToken(state.last_token().0))
    );
    state.check_invariants().unwrap();
    let bytes = postcard::to_stdvec(&state).unwrap();
    assert_eq!(
        hex(&bytes),
        golden_v4(),
        "the snapshot encoding changed (see this file's docs)"
    );
    let decoded: State = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(decoded, state);
    assert_eq!(decoded.cluster_version(), 2);
    decoded.check_invariants().unwrap();
}

/// A state at cluster version 1 is still written as format 3 bytes, which the builds
/// before the cluster version read, and those bytes decode, as [`StateV3`], to the
/// same state at cluster version 1.
#[test]
fn version_3_bytes_are_still_written_and_decode() {
    let state = sample_v3();
    assert_eq!(state.cluster_version(), 1);
    let bytes = postcard::to_stdvec(&StateV3Ref(&state)).unwrap();
    assert_eq!(
        hex(&bytes),
        GOLDEN_V3,
        "format 3 as the older builds read it"
    );
    let StateV3(decoded) = postcard::from_bytes(&unhex(GOLDEN_V3)).unwrap();
    decoded.check_invariants().unwrap();
    assert_eq!(decoded, state);
    assert_eq!(decoded.cluster_version(), 1);
    assert!(
        postcard::from_bytes::<State>(&unhex(GOLDEN_V3)).is_err(),
        "version 3 bytes are not a version 4 state"
    );
}

/// Bytes written by format version 1 still decode, as [`StateV1`], to the same state with
/// the fields added since empty.
#[test]
fn version_1_bytes_still_decode() {
    let StateV1(decoded) = postcard::from_bytes(&unhex(GOLDEN_V1)).unwrap();
    decoded.check_invariants().unwrap();
    assert_eq!(decoded, sample());
    assert_eq!(decoded.auth_revision(), 0);
    assert_eq!(decoded.remembered_requests(), 0);
    assert!(
        postcard::from_bytes::<State>(&unhex(GOLDEN_V1)).is_err(),
        "version 1 bytes are not a version 4 state"
    );
}

/// Bytes written by format version 2 still decode, as [`StateV2`], to the same state:
/// plain locks granted and queued at time 0, no wall clock, no lock-delay.
#[test]
fn version_2_bytes_still_decode() {
    let StateV2(decoded) = postcard::from_bytes(&unhex(GOLDEN_V2)).unwrap();
    decoded.check_invariants().unwrap();
    assert_eq!(decoded, sample_v2());
    assert_eq!(decoded.clock_ms(), 0);
    // Its grants predate the wall clock: indexed, but of unknown age.
    assert_eq!(decoded.oldest_stamped_grant_ms(), None);
    assert_eq!(decoded.unstamped_grants(), decoded.stats().held_grants);
    assert!(
        decoded
            .grants_by_age()
            .all(|grant| grant.granted_at_ms == 0)
    );
    assert!(
        postcard::from_bytes::<State>(&unhex(GOLDEN_V2)).is_err(),
        "version 2 bytes are not a version 4 state"
    );
}
