//! The service over real HTTP, in-process: fencing decisions, the decision log, the
//! durable backend, unfenced mode and bad input.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fencelock_fenced_kv::{
    ClientError, FencedKv, FencedKvClient, FencedKvOptions, LogEntry, RefusalReason, WriteOp,
    WriteOutcome, body_hash, serve_kv,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const LOCK: &str = "locks/kv";

/// A service running in this process.
struct Running {
    address: SocketAddr,
    client: FencedKvClient,
    kv: Arc<FencedKv>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn start(options: FencedKvOptions) -> Self {
        let kv = Arc::new(FencedKv::open(options).expect("the store opens"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_kv(listener, Arc::clone(&kv), async {
            let _ = stopped.await;
        }));
        let client = FencedKvClient::new(address).with_timeout(Duration::from_secs(10));
        Self {
            address,
            client,
            kv,
            stop: Some(stop),
            server,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.server.await.unwrap().unwrap();
        // The durable fence's file is released only when the last handle is gone.
        drop(self.client);
        assert_eq!(
            Arc::strong_count(&self.kv),
            1,
            "the server let go of the store"
        );
    }
}

fn admitted(outcome: &WriteOutcome) -> &fencelock_fenced_kv::AdmittedWrite {
    match outcome {
        WriteOutcome::Admitted(admitted) => admitted,
        WriteOutcome::Refused(refused) => panic!("expected an admission, got {refused:?}"),
    }
}

fn refused(outcome: &WriteOutcome) -> &fencelock_fenced_kv::RefusedWrite {
    match outcome {
        WriteOutcome::Refused(refused) => refused,
        WriteOutcome::Admitted(admitted) => panic!("expected a refusal, got {admitted:?}"),
    }
}

/// What the fault-injection checker checks on one key's decisions: no token admitted
/// after a higher one. Returns the offending entries.
fn fencing_violations(entries: &[LogEntry]) -> Vec<LogEntry> {
    let mut highest: HashMap<&str, u64> = HashMap::new();
    let mut violations = Vec::new();
    for entry in entries.iter().filter(|entry| entry.admitted) {
        let seen = highest.entry(&entry.key).or_insert(entry.token);
        if entry.token < *seen {
            violations.push(entry.clone());
        }
        *seen = (*seen).max(entry.token);
    }
    violations
}

#[tokio::test]
async fn admits_equal_and_higher_tokens_and_refuses_lower() {
    let service = Running::start(FencedKvOptions::default()).await;
    let client = &service.client;

    let first = client.put("k", LOCK, 5, "a").await.unwrap();
    let first = admitted(&first);
    assert_eq!((first.token, first.previous, first.version), (5, None, 1));

    let again = client.put("k", LOCK, 5, "b").await.unwrap();
    assert_eq!(
        (admitted(&again).previous, admitted(&again).version),
        (Some(5), 2)
    );

    let stale = client.put("k", LOCK, 4, "stale").await.unwrap();
    let stale = refused(&stale);
    assert_eq!(stale.reason, RefusalReason::StaleToken);
    assert_eq!((stale.token, stale.highest_seen), (4, Some(5)));

    let value = client.get("k").await.unwrap().unwrap();
    assert_eq!(value.value, b"b");
    assert_eq!((value.highest_token, value.version), (5, 2));

    let higher = client.append("k", LOCK, 9, "c").await.unwrap();
    assert_eq!(admitted(&higher).previous, Some(5));
    let value = client.get("k").await.unwrap().unwrap();
    assert_eq!(
        (value.value.as_slice(), value.highest_token),
        (&b"bc"[..], 9)
    );
    assert!(client.get("absent").await.unwrap().is_none());

    // The refusal left everything as it was, and the log has all four decisions.
    let page = client.log(0, 100).await.unwrap();
    let decisions: Vec<(u64, u64, bool)> = page
        .entries
        .iter()
        .map(|entry| (entry.seq, entry.token, entry.admitted))
        .collect();
    assert_eq!(
        decisions,
        [(1, 5, true), (2, 5, true), (3, 4, false), (4, 9, true)]
    );
    let stale_entry = &page.entries[2];
    assert_eq!(stale_entry.reason, Some(RefusalReason::StaleToken));
    assert_eq!(stale_entry.highest_seen, Some(5));
    assert_eq!(stale_entry.body_hash, body_hash(b"stale"));
    assert_eq!(stale_entry.body_len, 5);
    assert_eq!(page.entries[3].op, WriteOp::Append);
    assert_eq!(
        page.entries[3].value_hash.as_deref(),
        Some(&*body_hash(b"bc"))
    );
    service.stop().await;
}

#[tokio::test]
async fn keys_are_fenced_independently_and_keys_may_hold_any_character() {
    let service = Running::start(FencedKvOptions::default()).await;
    let client = &service.client;
    assert!(client.put("a", LOCK, 100, "x").await.unwrap().is_admitted());
    // A low token on another key is that key's first, so it is admitted.
    assert!(client.put("b", LOCK, 1, "y").await.unwrap().is_admitted());
    assert!(!client.put("a", LOCK, 99, "z").await.unwrap().is_admitted());
    assert!(client.put("b", LOCK, 2, "y2").await.unwrap().is_admitted());

    let odd = "users/42 é?&#%";
    assert!(client.put(odd, LOCK, 1, "odd").await.unwrap().is_admitted());
    let value = client.get(odd).await.unwrap().unwrap();
    assert_eq!(
        (value.key.as_str(), value.value.as_slice()),
        (odd, &b"odd"[..])
    );
    service.stop().await;
}

#[tokio::test]
async fn a_token_of_another_lock_is_refused() {
    let service = Running::start(FencedKvOptions::default()).await;
    let client = &service.client;
    client.put("k", "locks/one", 3, "one").await.unwrap();
    let wrong = client.put("k", "locks/two", 50, "two").await.unwrap();
    let wrong = refused(&wrong);
    assert_eq!(wrong.reason, RefusalReason::WrongLock);
    assert_eq!(wrong.bound_lock.as_deref(), Some("locks/one"));
    assert_eq!(wrong.highest_seen, Some(3));
    assert_eq!(client.get("k").await.unwrap().unwrap().value, b"one");
    let entry = client.log(wrong.seq, 1).await.unwrap().entries.remove(0);
    assert_eq!(
        (entry.admitted, entry.reason, entry.lock.as_str()),
        (false, Some(RefusalReason::WrongLock), "locks/two")
    );
    service.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_fold_to_the_final_value_in_log_order() {
    const TASKS: usize = 16;
    const APPENDS: usize = 25;
    let service = Running::start(FencedKvOptions::default()).await;
    let tokens = Arc::new(AtomicU64::new(1));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let client = service.client.clone();
        let tokens = Arc::clone(&tokens);
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for _ in 0..APPENDS {
                let token = tokens.fetch_add(1, Ordering::SeqCst);
                let body = format!("t{token}\n");
                let outcome = client.append("fold", LOCK, token, body).await.unwrap();
                outcomes.push((token, outcome));
            }
            outcomes
        }));
    }
    let mut sent = HashMap::new();
    let mut admitted_by_client = 0;
    for task in tasks {
        for (token, outcome) in task.await.unwrap() {
            admitted_by_client += usize::from(outcome.is_admitted());
            sent.insert(token, format!("t{token}\n"));
        }
    }

    let (entries, missed) = service.client.log_all(0).await.unwrap();
    assert_eq!(missed, 0);
    assert_eq!(entries.len(), TASKS * APPENDS, "every decision is logged");
    assert!(
        entries
            .windows(2)
            .all(|pair| pair[1].seq == pair[0].seq + 1),
        "sequence numbers have no gaps"
    );
    assert!(fencing_violations(&entries).is_empty());

    let mut fold = Vec::new();
    let mut highest = 0;
    for entry in &entries {
        let body = &sent[&entry.token];
        assert_eq!(entry.body_hash, body_hash(body.as_bytes()));
        if entry.admitted {
            assert!(entry.token >= highest);
            highest = entry.token;
            fold.extend_from_slice(body.as_bytes());
            assert_eq!(entry.value_hash.as_deref(), Some(&*body_hash(&fold)));
        } else {
            assert!(entry.highest_seen.unwrap() > entry.token);
        }
    }
    let admitted_count = entries.iter().filter(|entry| entry.admitted).count();
    eprintln!("{admitted_count} of {} appends admitted", entries.len());
    assert_eq!(admitted_count, admitted_by_client);
    let value = service.client.get("fold").await.unwrap().unwrap();
    assert_eq!(
        value.value, fold,
        "the final value is the fold of admitted appends"
    );
    assert_eq!(value.version, admitted_count as u64);
    assert_eq!(value.highest_token, highest);
    service.stop().await;
}

#[tokio::test]
async fn the_durable_backend_keeps_values_tokens_and_the_log_across_restarts() {
    let directory = tempfile::tempdir().unwrap();
    let options = FencedKvOptions {
        data: Some(directory.path().join("kv.redb")),
        log_file: Some(directory.path().join("decisions.jsonl")),
        ..FencedKvOptions::default()
    };
    let service = Running::start(options.clone()).await;
    service.client.put("k", LOCK, 7, "seven").await.unwrap();
    service.client.append("k", LOCK, 8, "+eight").await.unwrap();
    service.client.put("k", LOCK, 6, "stale").await.unwrap();
    assert_eq!(service.client.health().await.unwrap().backend, "durable");
    service.stop().await;

    let service = Running::start(options).await;
    let value = service.client.get("k").await.unwrap().unwrap();
    assert_eq!(value.value, b"seven+eight");
    assert_eq!((value.highest_token, value.version), (8, 2));
    let stale = service.client.put("k", LOCK, 7, "late").await.unwrap();
    assert_eq!(refused(&stale).highest_seen, Some(8));
    let equal = service.client.append("k", LOCK, 8, "!").await.unwrap();
    assert_eq!(admitted(&equal).version, 3);
    assert_eq!(equal.seq(), 5, "the log file's sequence is continued");
    let (entries, _) = service.client.log_all(0).await.unwrap();
    assert_eq!(
        entries
            .iter()
            .map(|entry| (entry.token, entry.admitted))
            .collect::<Vec<_>>(),
        [(7, true), (8, true), (6, false), (7, false), (8, true)]
    );
    service.stop().await;

    let file = std::fs::read_to_string(directory.path().join("decisions.jsonl")).unwrap();
    let lines: Vec<LogEntry> = file
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines, entries);
}

#[tokio::test]
async fn unfenced_mode_admits_a_stale_write_and_logs_it() {
    let options = FencedKvOptions {
        unfenced: true,
        ..FencedKvOptions::default()
    };
    let service = Running::start(options).await;
    let client = &service.client;
    assert!(!client.health().await.unwrap().fenced);
    client.put("k", LOCK, 10, "new holder").await.unwrap();
    let stale = client.put("k", LOCK, 5, "paused holder").await.unwrap();
    assert_eq!(admitted(&stale).previous, Some(10));
    let other_lock = client.append("k", "locks/other", 1, "!").await.unwrap();
    assert!(other_lock.is_admitted());
    let value = client.get("k").await.unwrap().unwrap();
    assert_eq!(value.value, b"paused holder!");
    assert_eq!(value.highest_token, 10);

    let (entries, _) = client.log_all(0).await.unwrap();
    assert!(entries.iter().all(|entry| entry.admitted && !entry.fenced));
    let violations = fencing_violations(&entries);
    assert_eq!(
        violations
            .iter()
            .map(|entry| entry.token)
            .collect::<Vec<_>>(),
        [5, 1],
        "the checker sees the stale writes"
    );
    service.stop().await;
}

#[tokio::test]
async fn the_log_pages_and_keeps_only_the_newest_entries() {
    let options = FencedKvOptions {
        log_capacity: 5,
        ..FencedKvOptions::default()
    };
    let service = Running::start(options).await;
    let client = &service.client;
    for token in 1..=12 {
        client.put("k", LOCK, token, "v").await.unwrap();
    }
    let page = client.log(0, 100).await.unwrap();
    assert_eq!(
        page.entries
            .iter()
            .map(|entry| entry.seq)
            .collect::<Vec<_>>(),
        [8, 9, 10, 11, 12]
    );
    assert_eq!((page.dropped, page.missed, page.first_seq), (7, 7, 8));
    assert_eq!((page.next, page.next_seq), (13, 13));

    let first = client.log(9, 2).await.unwrap();
    assert_eq!(
        first
            .entries
            .iter()
            .map(|entry| entry.seq)
            .collect::<Vec<_>>(),
        [9, 10]
    );
    assert_eq!((first.next, first.missed), (11, 0));
    let second = client.log(first.next, 2).await.unwrap();
    assert_eq!(
        second
            .entries
            .iter()
            .map(|entry| entry.seq)
            .collect::<Vec<_>>(),
        [11, 12]
    );
    let empty = client.log(second.next, 2).await.unwrap();
    assert!(empty.entries.is_empty());
    assert_eq!(empty.next, 13);
    let (all, missed) = client.log_all(0).await.unwrap();
    assert_eq!((all.len(), missed), (5, 7));
    assert_eq!(client.health().await.unwrap().decisions, 12);
    service.stop().await;
}

/// Sends raw bytes, half-closes, and reads the whole answer.
async fn raw(address: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request).await.unwrap();
    let _ = stream.shutdown().await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

fn status_code(error: &ClientError) -> (u16, &str) {
    match error {
        ClientError::Status { status, code, .. } => (*status, code.as_str()),
        other => panic!("expected an error status, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_the_service_stays_healthy() {
    let options = FencedKvOptions {
        max_body: 1024,
        ..FencedKvOptions::default()
    };
    let service = Running::start(options).await;
    let address = service.address;

    let missing = raw(
        address,
        b"PUT /kv/k HTTP/1.1\r\nHost: x\r\nFencing-Lock: l\r\nContent-Length: 1\r\nConnection: close\r\n\r\nv",
    )
    .await;
    assert!(missing.starts_with("HTTP/1.1 400"), "{missing}");
    assert!(missing.contains("\"missing_header\""), "{missing}");
    assert!(missing.contains("Fencing-Token"), "{missing}");

    let no_lock = raw(
        address,
        b"PUT /kv/k HTTP/1.1\r\nHost: x\r\nFencing-Token: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(no_lock.contains("\"missing_header\""), "{no_lock}");

    for token in ["abc", "-1", "18446744073709551616", "", "1.5"] {
        let request = format!(
            "POST /kv/k/append HTTP/1.1\r\nHost: x\r\nFencing-Token: {token}\r\nFencing-Lock: l\r\nContent-Length: 1\r\nConnection: close\r\n\r\nv"
        );
        let answer = raw(address, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{token}: {answer}");
        assert!(answer.contains("\"invalid_header\""), "{token}: {answer}");
    }

    // Declared too large: refused before the body is read.
    let declared = raw(
        address,
        b"PUT /kv/k HTTP/1.1\r\nHost: x\r\nFencing-Token: 1\r\nFencing-Lock: l\r\nContent-Length: 100000000\r\n\r\n",
    )
    .await;
    assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
    assert!(declared.contains("\"body_too_large\""), "{declared}");

    // Chunked, found too large while reading.
    let big = vec![b'x'; 4096];
    let mut chunked = format!(
        "PUT /kv/k HTTP/1.1\r\nHost: x\r\nFencing-Token: 1\r\nFencing-Lock: l\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n",
        big.len()
    )
    .into_bytes();
    chunked.extend_from_slice(&big);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let chunked = raw(address, &chunked).await;
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");

    // Through the client too.
    let error = service
        .client
        .put("k", LOCK, 1, vec![0_u8; 2048])
        .await
        .unwrap_err();
    assert_eq!(status_code(&error), (413, "body_too_large"));
    let error = service.client.log(0, 0).await.map(|_| ());
    assert!(error.is_ok(), "a zero limit is raised to one");

    let query = raw(
        address,
        b"GET /log?since=abc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(query.starts_with("HTTP/1.1 400"), "{query}");
    assert!(query.contains("\"invalid_query\""), "{query}");

    let unknown = raw(
        address,
        b"GET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    let method = raw(
        address,
        b"DELETE /kv/k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(method.starts_with("HTTP/1.1 405"), "{method}");

    // Garbage: an HTTP error or a closed connection, never a dead service.
    let mut noise = Vec::new();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..64 * 1024 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        noise.push(state.to_le_bytes()[0]);
    }
    for garbage in [
        &b"\x00\x01\x02\xff\xfe garbage\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"PUT /kv/k HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\n",
        &noise,
    ] {
        let answer = raw(address, garbage).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{answer}"
        );
    }
    // A connection that sends half a request and goes quiet does not block others.
    let mut idle = TcpStream::connect(address).await.unwrap();
    idle.write_all(b"PUT /kv/k HTTP/1.1\r\n").await.unwrap();

    assert_eq!(service.client.health().await.unwrap().status, "ok");
    assert!(
        service
            .client
            .put("k", LOCK, 1, "fine")
            .await
            .unwrap()
            .is_admitted()
    );
    assert_eq!(
        service.client.log_all(0).await.unwrap().0.len(),
        1,
        "bad requests make no decisions"
    );
    drop(idle);
    service.stop().await;
}
