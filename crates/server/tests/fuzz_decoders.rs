//! Fuzzing, as property tests, of every decoder that reads bytes a node does not trust:
//! peer payloads (openraft's requests and results, postcard-encoded in Raft link frames,
//! decoded by the link server exactly as here), snapshot files and received snapshots
//! (`snapshot::decode`), log records (`record::decode_entry`, `record::decode`), the
//! write-ahead file's records (`wal::parse_records`), and the
//! core's `Command` and `State`.
//!
//! Random bytes and mutated valid encodings must give an error or a value, never a panic.
//! Decoding must stay within bounded memory: length prefixes claiming gigabytes are
//! planted at every position of valid encodings and decoded in a child process whose
//! address space is capped at 1 GiB (`prlimit --as`), so an allocation that trusts such a
//! prefix aborts the child and fails the test. (postcard preallocates at most serde's
//! cautious size hint, 1 MiB per collection, and checks string and byte lengths against
//! the input, so no cap beyond the peer transport's message limit and the record size
//! limit is needed.)
//!
//! Last, a real node gets garbage on its peer port — undecodable requests, which it
//! refuses with a message, and broken framing, on which it closes the link — and stays up.

use fencelock_core::{ClientId, Command, LockMode, RequestId, SessionId, State, WaitPolicy};
use fencelock_proto::peer::peer_client::PeerClient;
use fencelock_server::raft::link::{
    FrameKind, LINK_MAGIC, LINK_MAGIC_VERSIONED, LinkError, LinkPool, encode_frame,
};
use fencelock_server::raft::{CommandBatch, LogId, NodeId, PeerNode, TypeConfig};
use fencelock_server::store::snapshot::{self, SnapshotMeta};
use fencelock_server::store::{record, wal};
use fencelock_server::testing::TestCluster;
use openraft::error::{Fatal, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{CommittedLeaderId, Entry, EntryPayload, Membership, StoredMembership, Vote};
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

// ---------------------------------------------------------------------------------------
// Valid samples of every decoded type.

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn members() -> Membership<NodeId, PeerNode> {
    let nodes: BTreeMap<NodeId, PeerNode> = (1..=3)
        .map(|id| {
            (
                id,
                PeerNode {
                    peer_addr: format!("127.0.0.1:{}", 7100 + id),
                },
            )
        })
        .collect();
    Membership::new(vec![nodes.keys().copied().collect()], nodes)
}

fn commands() -> Vec<Command> {
    vec![
        Command::OpenSession {
            client_id: ClientId(0xfeed),
            ttl_ms: 10_000,
        },
        Command::Acquire {
            session: SessionId(1),
            request: RequestId {
                seq: 1,
                first_unanswered_seq: 1,
            },
            name: "jobs/nightly".to_owned(),
            mode: LockMode::Exclusive,
            wait: WaitPolicy::Queue,
            value: b"worker-7".to_vec(),
        },
        Command::ExpireSessions {
            sessions: vec![SessionId(2), SessionId(3)],
        },
        Command::ForceRelease {
            name: "x".to_owned(),
        },
    ]
}

fn entries() -> Vec<Entry<TypeConfig>> {
    vec![
        Entry {
            log_id: log_id(2, 5),
            payload: EntryPayload::Membership(members()),
        },
        Entry {
            log_id: log_id(2, 6),
            payload: EntryPayload::Normal(CommandBatch(commands())),
        },
        Entry {
            log_id: log_id(2, 7),
            payload: EntryPayload::Blank,
        },
    ]
}

fn state() -> State {
    let mut state = State::default();
    let mut events = Vec::new();
    for command in commands().into_iter().take(2) {
        let _ = state.apply(command, &mut events);
    }
    state
}

fn snapshot_meta() -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: Some(log_id(2, 7)),
        last_membership: StoredMembership::new(Some(log_id(2, 5)), members()),
        snapshot_id: "2-7-1".to_owned(),
    }
}

fn snapshot_bytes() -> Vec<u8> {
    snapshot::encode(&snapshot_meta(), &state()).expect("encode snapshot")
}

fn enc<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("encode")
}

/// A decoder under test: its name and a function that decodes bytes (the result is
/// dropped; only "no panic, bounded memory" is checked).
type Decoder = (&'static str, fn(&[u8]));

/// The generation the write-ahead sample is written under.
const WAL_GENERATION: wal::Generation = wal::Generation {
    number: 1,
    salt: 42,
};

/// The records region of a write-ahead file holding the sample entries in three appends
/// (with a committed log id), as a node writes it.
fn wal_sample() -> &'static [u8] {
    static SAMPLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    SAMPLE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (mut file, _) = wal::Wal::open(dir.path(), wal::MIN_WAL_BYTES * 4, WAL_GENERATION)
            .expect("create a write-ahead file");
        file.start_generation(WAL_GENERATION);
        for (append, entries) in entries().chunks(2).enumerate() {
            let mut batch = file.batch();
            if append > 0 {
                let committed = record::encode(b"committed", &log_id(2, 4), Vec::new());
                batch.push_committed(&committed.expect("encode"));
            }
            for entry in entries {
                batch.push_entry(
                    entry.log_id.index,
                    &record::encode_entry(entry, Vec::new()).expect("encode"),
                );
            }
            file.append(&batch).expect("append");
        }
        let bytes = std::fs::read(dir.path().join(wal::WAL_FILE_NAME)).expect("read");
        let (records, _) =
            wal::parse_records(&bytes[wal::RECORDS_START as usize..], WAL_GENERATION);
        assert!(records.len() >= entries().len(), "the sample verifies");
        let end = wal::RECORDS_START as usize + 3 * wal::APPEND_ALIGN as usize;
        bytes[wal::RECORDS_START as usize..end].to_vec()
    })
}

fn decode_as<T: DeserializeOwned>(bytes: &[u8]) {
    let _ = postcard::from_bytes::<T>(bytes);
}

type AppendResult = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;
type VoteResult = Result<VoteResponse<NodeId>, RaftError<NodeId>>;
type SnapshotResult =
    Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>;

/// Every decoder, with valid samples of its input.
fn decoders() -> Vec<(Decoder, Vec<Vec<u8>>)> {
    let vote = Vote::new_committed(2, 1);
    vec![
        (
            (
                "AppendEntriesRequest",
                decode_as::<AppendEntriesRequest<TypeConfig>>,
            ),
            vec![
                enc(&AppendEntriesRequest::<TypeConfig> {
                    vote,
                    prev_log_id: Some(log_id(2, 4)),
                    entries: entries(),
                    leader_commit: Some(log_id(2, 4)),
                }),
                enc(&AppendEntriesRequest::<TypeConfig> {
                    vote,
                    prev_log_id: None,
                    entries: Vec::new(),
                    leader_commit: None,
                }),
            ],
        ),
        (
            ("VoteRequest", decode_as::<VoteRequest<NodeId>>),
            vec![enc(&VoteRequest::<NodeId> {
                vote: Vote::new(3, 2),
                last_log_id: Some(log_id(2, 7)),
            })],
        ),
        (
            (
                "InstallSnapshotRequest",
                decode_as::<InstallSnapshotRequest<TypeConfig>>,
            ),
            vec![enc(&InstallSnapshotRequest::<TypeConfig> {
                vote,
                meta: snapshot_meta(),
                offset: 0,
                data: snapshot_bytes(),
                done: true,
            })],
        ),
        (
            ("append result", decode_as::<AppendResult>),
            vec![
                enc(&AppendResult::Ok(AppendEntriesResponse::Success)),
                enc(&AppendResult::Ok(AppendEntriesResponse::HigherVote(vote))),
                enc(&AppendResult::Err(RaftError::Fatal(Fatal::Stopped))),
            ],
        ),
        (
            ("vote result", decode_as::<VoteResult>),
            vec![enc(&VoteResult::Ok(VoteResponse {
                vote,
                vote_granted: true,
                last_log_id: Some(log_id(2, 7)),
            }))],
        ),
        (
            ("install snapshot result", decode_as::<SnapshotResult>),
            vec![enc(&SnapshotResult::Ok(InstallSnapshotResponse { vote }))],
        ),
        (
            ("snapshot file", |bytes| {
                let _ = snapshot::decode(bytes);
            }),
            vec![snapshot_bytes()],
        ),
        (
            ("log entry record", |bytes| {
                let _ = record::decode_entry(6, bytes);
            }),
            entries()
                .iter()
                .map(|entry| {
                    // Re-keyed to index 6 so every sample can verify.
                    let mut entry = entry.clone();
                    entry.log_id.index = 6;
                    record::encode_entry(&entry, Vec::new()).expect("encode")
                })
                .collect(),
        ),
        (
            ("vote record", |bytes| {
                let _ = record::decode::<Vote<NodeId>>(b"vote", bytes);
            }),
            vec![record::encode(b"vote", &Vote::<NodeId>::new(2, 1), Vec::new()).unwrap()],
        ),
        (
            ("log id record", |bytes| {
                let _ = record::decode::<LogId>(b"committed", bytes);
            }),
            vec![record::encode(b"committed", &log_id(2, 7), Vec::new()).unwrap()],
        ),
        (
            ("write-ahead records", |bytes| {
                let _ = wal::parse_records(bytes, WAL_GENERATION);
            }),
            vec![wal_sample().to_vec()],
        ),
        (
            ("Command", decode_as::<Command>),
            commands().iter().map(enc).collect(),
        ),
        (("State", decode_as::<State>), vec![enc(&state())]),
        (
            (
                "entry payload (unchecked postcard)",
                decode_as::<Entry<TypeConfig>>,
            ),
            entries().iter().map(enc).collect(),
        ),
    ]
}

/// A mutation of a valid encoding.
#[derive(Clone, Debug)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Set { at: usize, byte: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Remove { at: usize, len: usize },
    Truncate { len: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..12))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        (any::<usize>(), 1..16usize).prop_map(|(at, len)| Mutation::Remove { at, len }),
        any::<usize>().prop_map(|len| Mutation::Truncate { len }),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let n = bytes.len().max(1);
    match mutation {
        Mutation::Flip { at, mask } => {
            if let Some(b) = bytes.get_mut(at % n) {
                *b ^= mask;
            }
        }
        Mutation::Set { at, byte } => {
            if let Some(b) = bytes.get_mut(at % n) {
                *b = *byte;
            }
        }
        Mutation::Insert { at, bytes: new } => {
            let at = at % (bytes.len() + 1);
            bytes.splice(at..at, new.iter().copied());
        }
        Mutation::Remove { at, len } => {
            let at = at % n;
            let end = (at + len).min(bytes.len());
            if at < end {
                bytes.drain(at..end);
            }
        }
        Mutation::Truncate { len } => bytes.truncate(len % n),
    }
}

/// Decode (a panic fails the test).
fn check(decoder: &Decoder, bytes: &[u8]) {
    let (_name, decode) = decoder;
    decode(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic_any_decoder(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        for (decoder, _) in decoders() {
            check(&decoder, &bytes);
        }
    }

    #[test]
    fn mutated_valid_encodings_never_panic_any_decoder(
        mutations in prop::collection::vec(mutation(), 1..6),
        pick in any::<usize>(),
    ) {
        for (decoder, samples) in decoders() {
            let mut bytes = samples[pick % samples.len()].clone();
            for mutation in &mutations {
                apply(&mut bytes, mutation);
            }
            check(&decoder, &bytes);
        }
    }
}

/// postcard's varint of `value`.
fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Set in the child processes of the memory tests: which child to be.
const CHILD_VAR: &str = "FENCELOCK_FUZZ_MEMORY_CHILD";

/// The address space the memory-test children get.
const CHILD_ADDRESS_SPACE: u64 = 1 << 30;

/// Run test `name` of this binary as a child with its address space capped; whether it
/// succeeded, and its stderr.
fn run_capped_child(name: &str) -> (bool, String) {
    let output = std::process::Command::new("prlimit")
        .arg(format!("--as={CHILD_ADDRESS_SPACE}"))
        .arg(std::env::current_exe().expect("test binary"))
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_VAR, name)
        .output()
        .expect("run prlimit (util-linux)");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn is_child(name: &str) -> bool {
    std::env::var(CHILD_VAR).is_ok_and(|child| child == name)
}

/// The child of [`huge_length_prefixes_do_not_allocate_gigabytes`].
#[test]
fn huge_length_prefixes_child() {
    if !is_child("huge_length_prefixes_child") {
        return;
    }
    // At every position of every valid sample, plant a length prefix claiming 2^28, 2^32 or
    // 2^62 elements, both replacing the byte there and inserted before it.
    let mut decoded = 0;
    for (decoder, samples) in decoders() {
        for sample in samples {
            for at in 0..sample.len() {
                for claim in [1 << 28, u64::from(u32::MAX), 1 << 62] {
                    let prefix = varint(claim);
                    let mut inserted = sample.clone();
                    inserted.splice(at..at, prefix.iter().copied());
                    check(&decoder, &inserted);
                    let mut replaced = sample.clone();
                    replaced.splice(at..=at, prefix.iter().copied());
                    check(&decoder, &replaced);
                    decoded += 2;
                }
            }
        }
    }
    eprintln!("decoded {decoded} inputs with planted length prefixes");
    assert!(decoded > 3_000, "{decoded}");
}

#[test]
fn huge_length_prefixes_do_not_allocate_gigabytes() {
    let (ok, stderr) = run_capped_child("huge_length_prefixes_child");
    assert!(
        stderr.contains("decoded ") || !ok,
        "the child did not run its loop:\n{stderr}"
    );
    assert!(
        ok,
        "decoding inputs with huge length prefixes failed within {CHILD_ADDRESS_SPACE} bytes \
         of address space:\n{stderr}"
    );
}

/// The child of [`the_memory_cap_catches_a_gigabyte_allocation`].
#[test]
fn gigabyte_allocation_child() {
    if !is_child("gigabyte_allocation_child") {
        return;
    }
    let claim = std::hint::black_box(4usize << 30);
    let big = vec![1u8; claim];
    std::hint::black_box(&big);
}

/// The cap the memory test relies on does stop a decoder that would trust a length.
#[test]
fn the_memory_cap_catches_a_gigabyte_allocation() {
    let (ok, _) = run_capped_child("gigabyte_allocation_child");
    assert!(!ok, "a 4 GiB allocation must fail under the cap");
}

#[test]
fn valid_samples_decode() {
    // The samples are what the mutations start from: they must be valid.
    let content = snapshot::decode(&snapshot_bytes()).expect("the snapshot sample decodes");
    assert_eq!(content.meta, snapshot_meta());
    for (index, entry) in entries().into_iter().enumerate() {
        let bytes = record::encode_entry(&entry, Vec::new()).unwrap();
        assert_eq!(
            record::decode_entry(entry.log_id.index, &bytes).unwrap(),
            entry,
            "entry {index}"
        );
    }
    let request: AppendEntriesRequest<TypeConfig> =
        postcard::from_bytes(&enc(&AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(2, 1),
            prev_log_id: None,
            entries: entries(),
            leader_commit: None,
        }))
        .unwrap();
    assert_eq!(request.entries, entries());
    assert_eq!(
        postcard::from_bytes::<State>(&enc(&state())).unwrap(),
        state()
    );
}

// ---------------------------------------------------------------------------------------
// Garbage on a real node's peer port.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_raft_payloads_are_refused_and_the_node_stays_up() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let timeout = std::time::Duration::from_secs(5);
    let cluster = TestCluster::start(1).await;
    cluster.leader().await;
    let peer = cluster.running(0).peer_addr().to_string();
    let links = LinkPool::new(None, 1 << 20);
    let valid_vote = enc(&VoteRequest::<NodeId> {
        vote: Vote::new(1, 2),
        last_log_id: None,
    });
    // Bodies that cannot decode as any of the three requests: empty, a varint that
    // overflows, a truncated valid vote request, a huge length prefix.
    let mut garbage = vec![
        Vec::new(),
        vec![0xff; 64],
        valid_vote[..valid_vote.len() - 1].to_vec(),
    ];
    let mut huge = enc(&Vote::<NodeId>::new_committed(1, 1));
    huge.extend(varint(1 << 62));
    garbage.push(huge);
    for data in &garbage {
        for kind in [
            FrameKind::AppendEntries,
            FrameKind::Vote,
            FrameKind::InstallSnapshot,
        ] {
            let mut frame = encode_frame(kind, &()).unwrap();
            frame.extend(data);
            let length = u32::try_from(frame.len() - 4).unwrap();
            frame[..4].copy_from_slice(&length.to_be_bytes());
            match links.call(&peer, &frame, timeout).await {
                Err(LinkError::Refused { message, .. }) => {
                    assert!(message.contains("undecodable"), "{kind:?}: {message}");
                }
                other => panic!("{kind:?} with {data:?}: expected a refusal, got {other:?}"),
            }
        }
    }
    // Broken framing: the node closes the connection (after reading the magic, if any).
    let oversized = [&LINK_MAGIC[..], &[0x7f, 0xff, 0xff, 0xff, 1][..]].concat();
    let unknown_kind = [&LINK_MAGIC[..], &[0, 0, 0, 1, 0x42][..]].concat();
    let a_reply_as_request = [
        &LINK_MAGIC[..],
        &encode_frame(FrameKind::Reply, &0u8).unwrap()[..],
    ]
    .concat();
    let wrong_magic = b"FLRAFT\x00\x09 and more".to_vec();
    // A versioned opening whose range is upside down (2..=1) is no handshake: no answer.
    let mut bad_range = LINK_MAGIC_VERSIONED.to_vec();
    bad_range.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 1, 0]);
    bad_range.extend_from_slice(&[0; 16]);
    for bytes in [
        oversized,
        unknown_kind,
        a_reply_as_request,
        wrong_magic,
        bad_range,
    ] {
        let mut stream = tokio::net::TcpStream::connect(&peer).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(timeout, stream.read_to_end(&mut rest)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "{bytes:?}: the link must be closed without an answer, got {closed:?} {rest:?}"
        );
    }
    // Still up, still leading, answering a valid vote over a link and gRPC on the
    // same port.
    let leader = cluster.leader().await;
    assert_eq!(leader, 0);
    let reply = links
        .call(
            &peer,
            &encode_frame(
                FrameKind::Vote,
                &VoteRequest::<NodeId> {
                    vote: Vote::new(1, 2),
                    last_log_id: None,
                },
            )
            .unwrap(),
            timeout,
        )
        .await
        .expect("a valid vote is answered");
    let answer: Result<VoteResponse<NodeId>, RaftError<NodeId>> =
        postcard::from_bytes(&reply).expect("a decodable answer");
    assert!(!answer.expect("a vote response").vote_granted, "stale term");
    let mut client = PeerClient::connect(format!("http://{peer}"))
        .await
        .expect("connect to the peer port");
    let info = client
        .node_info(fencelock_proto::peer::NodeInfoRequest {})
        .await
        .expect("node info");
    assert_eq!(info.into_inner().node_id, 1);
    cluster.shutdown().await;
}
