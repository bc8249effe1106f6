//! The HTTP/JSON API over real HTTP/1.1 and HTTP/2 on a node's client port (next to
//! gRPC): every call, errors and their reasons, redirects to the leader, refusals of bad
//! input that leave the node up, the wait of a long poll withdrawn when the client
//! closes it, watch streams, authentication, and `docs/openapi.yaml` against the routes.

mod common;

use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// An answer: status, `Location` header, JSON body.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    location: Option<String>,
    body: Value,
}

fn request(method: Method, path: &str, body: &str, auth: Option<&str>) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "fencelock");
    if let Some(auth) = auth {
        builder = builder.header("authorization", auth);
    }
    builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request")
}

async fn answer(response: hyper::Response<hyper::body::Incoming>) -> Answer {
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().expect("ascii location").to_owned());
    let bytes = tokio::time::timeout(SETTLE, response.into_body().collect())
        .await
        .expect("a body in time")
        .expect("body")
        .to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
    };
    Answer {
        status,
        location,
        body,
    }
}

/// An HTTP/1.1 connection; the returned task drives it.
async fn http1(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    (
        sender,
        tokio::spawn(async move {
            let _ = connection.await;
        }),
    )
}

/// An HTTP/2 connection (prior knowledge, no TLS); the returned task drives it.
async fn http2(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("HTTP/2 handshake");
    (
        sender,
        tokio::spawn(async move {
            let _ = connection.await;
        }),
    )
}

/// One call over a fresh HTTP/1.1 connection.
async fn call_as(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: &str,
    auth: Option<&str>,
) -> Answer {
    let (mut sender, connection) = http1(addr).await;
    let response = tokio::time::timeout(
        SETTLE,
        sender.send_request(request(method, path, body, auth)),
    )
    .await
    .expect("an answer in time")
    .expect("response");
    let answer = answer(response).await;
    connection.abort();
    answer
}

async fn post(addr: SocketAddr, path: &str, body: Value) -> Answer {
    call_as(addr, Method::POST, path, &body.to_string(), None).await
}

/// A POST that must succeed; its body.
async fn ok(addr: SocketAddr, path: &str, body: Value) -> Value {
    let answer = post(addr, path, body.clone()).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{path} {body}: {:?}",
        answer.body
    );
    answer.body
}

fn client_addr(cluster: &TestCluster, index: usize) -> SocketAddr {
    cluster.slots[index].client
}

async fn open(addr: SocketAddr, ttl_ms: u64) -> u64 {
    let opened = ok(
        addr,
        "/v1/sessions/open",
        json!({"client_id": uuid::Uuid::new_v4().to_string(), "ttl_ms": ttl_ms}),
    )
    .await;
    opened["session_id"].as_u64().expect("session id")
}

async fn describe(addr: SocketAddr, name: &str) -> Value {
    ok(addr, "/v1/locks/describe", json!({"name": name})).await
}

/// Wait until `check` holds for the description of lock `name`.
async fn until_described(addr: SocketAddr, name: &str, what: &str, check: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let described = describe(addr, name).await;
        if check(&described) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {described}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn waiters(described: &Value) -> usize {
    described["lock"]["waiters"].as_array().map_or(0, Vec::len)
}

#[tokio::test]
async fn every_call_over_http1_transcodes_the_grpc_call() {
    let cluster = TestCluster::start(3).await;
    let leader = client_addr(&cluster, cluster.leader().await);

    let status = call_as(leader, Method::GET, "/v1/cluster/status", "", None).await;
    assert_eq!(status.status, StatusCode::OK, "{:?}", status.body);
    assert_eq!(status.body["state"], "Leader");
    assert_eq!(status.body["members"].as_array().map(Vec::len), Some(3));

    let client = uuid::Uuid::new_v4().to_string();
    let opened = ok(
        leader,
        "/v1/sessions/open",
        json!({"client_id": client, "ttl_ms": 10_000}),
    )
    .await;
    let a = opened["session_id"].as_u64().expect("session id");
    assert_eq!(opened["ttl_ms"], 10_000);
    // Retrying with the same client id returns the same session.
    let again = ok(
        leader,
        "/v1/sessions/open",
        json!({"client_id": client, "ttl_ms": 10_000}),
    )
    .await;
    assert_eq!(again["session_id"], a);
    let b = open(leader, 10_000).await;

    let value = "aG9zdC1h"; // base64 of "host-a"
    let granted = ok(
        leader,
        "/v1/locks/acquire",
        json!({"session_id": a, "name": "jobs/x", "wait": "NO_WAIT",
               "request": {"seq": 1, "first_unanswered_seq": 1}, "value": value}),
    )
    .await;
    assert_eq!(granted["outcome"], "GRANTED", "{granted}");
    let token = granted["token"].as_u64().expect("token");
    assert!(token > 0);
    // A retry with the same request id answers the first answer.
    let retried = ok(
        leader,
        "/v1/locks/acquire",
        json!({"session_id": a, "name": "jobs/x", "wait": "NO_WAIT",
               "request": {"seq": 1, "first_unanswered_seq": 1}, "value": value}),
    )
    .await;
    assert_eq!(retried["token"], token);

    let blocked = ok(
        leader,
        "/v1/locks/acquire",
        json!({"session_id": b, "name": "jobs/x", "request": {"seq": 1, "first_unanswered_seq": 1}}),
    )
    .await;
    assert_eq!(blocked["outcome"], "WOULD_BLOCK", "{blocked}");
    assert_eq!(blocked["token"], 0);

    let renewed = ok(leader, "/v1/sessions/keepalive", json!({"session_id": a})).await;
    assert_eq!(renewed["session_id"], a);
    assert_eq!(renewed["ttl_ms"], 10_000);

    let verified = ok(
        leader,
        "/v1/locks/verify",
        json!({"name": "jobs/x", "token": token}),
    )
    .await;
    assert_eq!(verified, json!({"current": true, "current_token": token}));

    let described = describe(leader, "jobs/x").await;
    let holder = &described["lock"]["holders"][0];
    assert_eq!(holder["session_id"], a);
    assert_eq!(holder["token"], token);
    assert_eq!(holder["mode"], "EXCLUSIVE");
    assert_eq!(holder["value"], value);
    assert_eq!(holder["client_id"], client);
    assert!(described["revision"].as_u64().expect("revision") > 0);
    assert_eq!(describe(leader, "jobs/free").await["lock"], Value::Null);

    let listed = ok(leader, "/v1/locks/list", json!({"prefix": "jobs/"})).await;
    assert_eq!(listed["locks"][0]["name"], "jobs/x");
    assert_eq!(listed["next_start_after"], "");

    let sessions = ok(leader, "/v1/sessions/list", json!({})).await;
    let held: Vec<&Value> = sessions["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .filter(|s| s["session_id"] == a)
        .collect();
    assert_eq!(held[0]["held"], json!([{"name": "jobs/x", "token": token}]));

    // A stale token is refused with the service's reason.
    let stale = post(
        leader,
        "/v1/locks/release",
        json!({"session_id": a, "name": "jobs/x", "token": token + 100,
               "request": {"seq": 2, "first_unanswered_seq": 2}}),
    )
    .await;
    assert_eq!(stale.status, StatusCode::CONFLICT, "{:?}", stale.body);
    assert_eq!(stale.body["reason"], "STALE_TOKEN");
    ok(
        leader,
        "/v1/locks/release",
        json!({"session_id": a, "name": "jobs/x", "token": token,
               "request": {"seq": 3, "first_unanswered_seq": 3}}),
    )
    .await;
    assert_eq!(describe(leader, "jobs/x").await["lock"], Value::Null);

    // Shared locks, then the admin calls.
    for (session, seq) in [(a, 4), (b, 2)] {
        let shared = ok(
            leader,
            "/v1/locks/acquire",
            json!({"session_id": session, "name": "jobs/shared", "mode": "SHARED",
                   "request": {"seq": seq, "first_unanswered_seq": seq}}),
        )
        .await;
        assert_eq!(shared["outcome"], "GRANTED", "{shared}");
    }
    let forced = ok(
        leader,
        "/v1/locks/force-release",
        json!({"name": "jobs/shared", "request_id": uuid::Uuid::new_v4().to_string()}),
    )
    .await;
    assert_eq!(forced["released"], 2);
    let revoked = ok(
        leader,
        "/v1/sessions/revoke",
        json!({"session_id": b, "request_id": uuid::Uuid::new_v4().to_string()}),
    )
    .await;
    assert_eq!(revoked["released"], 0);
    let gone = post(leader, "/v1/sessions/keepalive", json!({"session_id": b})).await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{:?}", gone.body);
    assert_eq!(gone.body["reason"], "SESSION_NOT_FOUND");

    assert_eq!(
        ok(leader, "/v1/sessions/close", json!({"session_id": a})).await,
        json!({})
    );
    let closed = post(leader, "/v1/sessions/keepalive", json!({"session_id": a})).await;
    assert_eq!(closed.body["reason"], "SESSION_NOT_FOUND");

    // The gRPC API on the same port still answers.
    let mut grpc = cluster.locks(cluster.leader().await).await;
    grpc.describe(fencelock_proto::v1::DescribeRequest {
        name: "jobs/x".into(),
    })
    .await
    .expect("gRPC on the client port");
    cluster.shutdown().await;
}

#[tokio::test]
async fn http2_in_the_clear_serves_the_same_routes() {
    let cluster = TestCluster::start(1).await;
    let addr = client_addr(&cluster, cluster.leader().await);
    let (mut sender, connection) = http2(addr).await;
    let opened = answer(
        sender
            .send_request(request(
                Method::POST,
                &format!("http://{addr}/v1/sessions/open"),
                r#"{"ttl_ms": 5000}"#,
                None,
            ))
            .await
            .expect("response"),
    )
    .await;
    assert_eq!(opened.status, StatusCode::OK, "{:?}", opened.body);
    let session = opened.body["session_id"].as_u64().expect("session id");
    let granted = answer(
        sender
            .send_request(request(
                Method::POST,
                &format!("http://{addr}/v1/locks/acquire"),
                &json!({"session_id": session, "name": "h2",
                        "request": {"seq": 1, "first_unanswered_seq": 1}})
                .to_string(),
                None,
            ))
            .await
            .expect("response"),
    )
    .await;
    assert_eq!(granted.body["outcome"], "GRANTED", "{:?}", granted.body);
    connection.abort();
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_convenience_form_and_a_timed_wait() {
    let cluster = TestCluster::start(1).await;
    let addr = client_addr(&cluster, cluster.leader().await);
    // No session, no client id: the node opens a one-lock session.
    let granted = ok(
        addr,
        "/v1/locks/acquire",
        json!({"name": "jobs/nightly", "wait": "TIMEOUT", "wait_timeout_ms": 30_000,
               "lease_ttl_ms": 60_000}),
    )
    .await;
    assert_eq!(granted["outcome"], "GRANTED", "{granted}");
    assert_eq!(granted["ttl_ms"], 60_000);
    let holder = granted["session_id"].as_u64().expect("session");

    let waiter = open(addr, 10_000).await;
    let timed_out = ok(
        addr,
        "/v1/locks/acquire",
        json!({"session_id": waiter, "name": "jobs/nightly", "wait": "TIMEOUT",
               "wait_timeout_ms": 200, "request": {"seq": 1, "first_unanswered_seq": 1}}),
    )
    .await;
    assert_eq!(timed_out["outcome"], "TIMED_OUT", "{timed_out}");
    assert_eq!(waiters(&describe(addr, "jobs/nightly").await), 0);

    ok(
        addr,
        "/v1/locks/release",
        json!({"session_id": holder, "name": "jobs/nightly", "token": granted["token"],
               "request": {"seq": 1, "first_unanswered_seq": 1}}),
    )
    .await;
    ok(addr, "/v1/sessions/close", json!({"session_id": holder})).await;
    cluster.shutdown().await;
}

/// Bad input of every kind is a 4xx with a reason, and the node keeps serving.
#[tokio::test]
async fn bad_input_is_refused_with_a_reason_and_the_node_stays_up() {
    let cluster = TestCluster::start_with(1, |config| {
        fast(config);
        config.api_limits.max_message_bytes = 4 * 1024;
    })
    .await;
    let addr = client_addr(&cluster, cluster.leader().await);
    let cases: Vec<(&str, Method, &str, String, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            Method::POST,
            "/v1/locks/describe",
            r#"{"name": "#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            "not an object",
            Method::POST,
            "/v1/locks/describe",
            "[1, 2]".into(),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            "an unknown field",
            Method::POST,
            "/v1/locks/describe",
            r#"{"name": "a", "nmae": "b"}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            "a wrong type",
            Method::POST,
            "/v1/locks/verify",
            r#"{"name": "a", "token": "seven"}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            "a negative number",
            Method::POST,
            "/v1/sessions/keepalive",
            r#"{"session_id": -1}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            "an unknown enum value",
            Method::POST,
            "/v1/locks/acquire",
            r#"{"session_id": 1, "name": "a", "mode": "BOTH"}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            "a bad client id",
            Method::POST,
            "/v1/sessions/open",
            r#"{"client_id": "not-a-uuid", "ttl_ms": 1000}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            "a value that is not base64",
            Method::POST,
            "/v1/locks/acquire",
            r#"{"session_id": 1, "name": "a", "value": "%%%"}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            "an oversized body",
            Method::POST,
            "/v1/locks/describe",
            format!(r#"{{"name": "{}"}}"#, "x".repeat(8 * 1024)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "LIMIT_REACHED",
        ),
        (
            "an invalid lock name (the service's own check)",
            Method::POST,
            "/v1/locks/describe",
            r#"{"name": ""}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_NAME",
        ),
        (
            "a missing request id (the service's own check)",
            Method::POST,
            "/v1/locks/release",
            r#"{"session_id": 1, "name": "a", "token": 1}"#.into(),
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
        ),
        (
            "an unknown route",
            Method::POST,
            "/v1/locks/steal",
            "{}".into(),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            "a path outside /v1/",
            Method::GET,
            "/",
            String::new(),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
        ),
        (
            "a wrong method",
            Method::GET,
            "/v1/locks/describe",
            String::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
        ),
    ];
    for (what, method, path, body, status, reason) in cases {
        let answer = call_as(addr, method, path, &body, None).await;
        assert_eq!(answer.status, status, "{what}: {:?}", answer.body);
        assert_eq!(answer.body["reason"], reason, "{what}: {:?}", answer.body);
        assert!(
            answer.body["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {:?}",
            answer.body
        );
    }
    // Still up: a session opens and a lock is taken.
    let session = open(addr, 5_000).await;
    let granted = ok(
        addr,
        "/v1/locks/acquire",
        json!({"session_id": session, "name": "still-up",
               "request": {"seq": 1, "first_unanswered_seq": 1}}),
    )
    .await;
    assert_eq!(granted["outcome"], "GRANTED");
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_follower_redirects_to_the_leader_with_307_and_names_it() {
    let cluster = TestCluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let leader_addr = client_addr(&cluster, leader);
    let answer = post(
        client_addr(&cluster, follower),
        "/v1/locks/describe",
        json!({"name": "jobs/x"}),
    )
    .await;
    assert_eq!(
        answer.status,
        StatusCode::TEMPORARY_REDIRECT,
        "{:?}",
        answer.body
    );
    assert_eq!(answer.body["reason"], "NOT_LEADER");
    assert_eq!(answer.body["leader"], leader_addr.to_string());
    assert_eq!(answer.body["leader_id"], cluster.slots[leader].id);
    assert_eq!(
        answer.location.as_deref(),
        Some(format!("http://{leader_addr}/v1/locks/describe").as_str())
    );
    // A keepalive on a follower is refused the same way, without renewing.
    let renew = post(
        client_addr(&cluster, follower),
        "/v1/sessions/keepalive",
        json!({"session_id": 1}),
    )
    .await;
    assert_eq!(
        renew.status,
        StatusCode::TEMPORARY_REDIRECT,
        "{:?}",
        renew.body
    );
    assert_eq!(renew.body["reason"], "NOT_LEADER");
    // Any node answers the status.
    let status = call_as(
        client_addr(&cluster, follower),
        Method::GET,
        "/v1/cluster/status",
        "",
        None,
    )
    .await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.body["leader_addr"], leader_addr.to_string());
    cluster.shutdown().await;
}

/// Two sessions, the first holding `name`: (holder, waiter).
async fn hold_and_queue(addr: SocketAddr, name: &str) -> (u64, u64) {
    // Leases far longer than the test waits: an expiry must not end the wait for it.
    let holder = open(addr, 120_000).await;
    let waiter = open(addr, 120_000).await;
    let granted = ok(
        addr,
        "/v1/locks/acquire",
        json!({"session_id": holder, "name": name, "request": {"seq": 1, "first_unanswered_seq": 1}}),
    )
    .await;
    assert_eq!(granted["outcome"], "GRANTED");
    (holder, waiter)
}

fn waiting_acquire(addr: SocketAddr, session: u64, name: &str) -> Request<Full<Bytes>> {
    request(
        Method::POST,
        &format!("http://{addr}/v1/locks/acquire"),
        &json!({"session_id": session, "name": name, "wait": "FOREVER",
                "request": {"seq": 1, "first_unanswered_seq": 1}})
        .to_string(),
        None,
    )
}

#[tokio::test]
async fn closing_an_http1_connection_withdraws_its_waiting_acquire() {
    let cluster = TestCluster::start(3).await;
    let addr = client_addr(&cluster, cluster.leader().await);
    let (_holder, waiter) = hold_and_queue(addr, "jobs/poll").await;

    let (mut sender, connection) = http1(addr).await;
    let pending = tokio::spawn(sender.send_request(waiting_acquire(addr, waiter, "jobs/poll")));
    until_described(addr, "jobs/poll", "the long poll queues", |d| {
        waiters(d) == 1
    })
    .await;
    // The client goes away: the connection closes with the request unanswered.
    pending.abort();
    connection.abort();
    until_described(
        addr,
        "jobs/poll",
        "the closed long poll is withdrawn",
        |d| waiters(d) == 0,
    )
    .await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn resetting_an_http2_stream_withdraws_its_waiting_acquire() {
    let cluster = TestCluster::start(1).await;
    let addr = client_addr(&cluster, cluster.leader().await);
    let (_holder, waiter) = hold_and_queue(addr, "jobs/h2poll").await;

    let (mut sender, connection) = http2(addr).await;
    let pending = tokio::spawn(sender.send_request(waiting_acquire(addr, waiter, "jobs/h2poll")));
    until_described(addr, "jobs/h2poll", "the long poll queues", |d| {
        waiters(d) == 1
    })
    .await;
    // Dropping the response future resets the stream; the connection stays open.
    pending.abort();
    until_described(
        addr,
        "jobs/h2poll",
        "the reset long poll is withdrawn",
        |d| waiters(d) == 0,
    )
    .await;
    assert!(!connection.is_finished(), "the connection stayed open");
    connection.abort();
    cluster.shutdown().await;
}

#[tokio::test]
async fn a_long_poll_is_answered_when_the_lock_is_handed_over() {
    let cluster = TestCluster::start(1).await;
    let addr = client_addr(&cluster, cluster.leader().await);
    let (holder, waiter) = hold_and_queue(addr, "jobs/handover").await;
    let (mut sender, connection) = http1(addr).await;
    let pending = tokio::spawn(sender.send_request(waiting_acquire(addr, waiter, "jobs/handover")));
    until_described(addr, "jobs/handover", "the long poll queues", |d| {
        waiters(d) == 1
    })
    .await;
    let first = describe(addr, "jobs/handover").await["lock"]["holders"][0]["token"]
        .as_u64()
        .expect("token");
    ok(
        addr,
        "/v1/locks/release",
        json!({"session_id": holder, "name": "jobs/handover", "token": first,
               "request": {"seq": 2, "first_unanswered_seq": 2}}),
    )
    .await;
    let granted = answer(
        tokio::time::timeout(SETTLE, pending)
            .await
            .expect("answered in time")
            .expect("task")
            .expect("response"),
    )
    .await;
    assert_eq!(granted.body["outcome"], "GRANTED", "{:?}", granted.body);
    assert!(granted.body["token"].as_u64().expect("token") > first);
    connection.abort();
    cluster.shutdown().await;
}

/// The next complete line of a watch body, or panic after [`SETTLE`].
async fn next_line(body: &mut hyper::body::Incoming, buffer: &mut Vec<u8>) -> String {
    let deadline = Instant::now() + SETTLE;
    loop {
        if let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            return String::from_utf8(line)
                .expect("UTF-8")
                .trim_end()
                .to_owned();
        }
        let frame = tokio::time::timeout_at(deadline.into(), body.frame())
            .await
            .expect("a line in time")
            .expect("the stream goes on")
            .expect("frame");
        if let Ok(data) = frame.into_data() {
            buffer.extend_from_slice(&data);
        }
    }
}

#[tokio::test]
async fn watch_streams_json_lines_and_server_sent_events() {
    let cluster = TestCluster::start(1).await;
    let addr = client_addr(&cluster, cluster.leader().await);
    let (mut sender, connection) = http1(addr).await;
    let response = sender
        .send_request(request(
            Method::POST,
            "/v1/locks/watch",
            r#"{"name": "watched/", "prefix": true}"#,
            None,
        ))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let mut body = response.into_body();
    let mut buffer = Vec::new();
    let first: Value =
        serde_json::from_str(&next_line(&mut body, &mut buffer).await).expect("JSON");
    assert_eq!(first["kind"], "RESYNC", "{first}");

    let session = open(addr, 10_000).await;
    let granted = ok(
        addr,
        "/v1/locks/acquire",
        json!({"session_id": session, "name": "watched/a", "value": "dg==",
               "request": {"seq": 1, "first_unanswered_seq": 1}}),
    )
    .await;
    // A lock outside the prefix is not reported.
    ok(
        addr,
        "/v1/locks/acquire",
        json!({"session_id": session, "name": "other", "request": {"seq": 2, "first_unanswered_seq": 2}}),
    )
    .await;
    ok(
        addr,
        "/v1/locks/release",
        json!({"session_id": session, "name": "watched/a", "token": granted["token"],
               "request": {"seq": 3, "first_unanswered_seq": 3}}),
    )
    .await;
    let acquired: Value =
        serde_json::from_str(&next_line(&mut body, &mut buffer).await).expect("JSON");
    assert_eq!(acquired["kind"], "ACQUIRED", "{acquired}");
    assert_eq!(acquired["name"], "watched/a");
    assert_eq!(acquired["token"], granted["token"]);
    assert_eq!(acquired["session_id"], session);
    assert_eq!(acquired["value"], "dg==");
    let released: Value =
        serde_json::from_str(&next_line(&mut body, &mut buffer).await).expect("JSON");
    assert_eq!(released["kind"], "RELEASED", "{released}");
    assert!(released["revision"].as_u64() > acquired["revision"].as_u64());
    connection.abort();

    // Server-sent events on request.
    let (mut sender, connection) = http1(addr).await;
    let mut events = request(
        Method::POST,
        "/v1/locks/watch",
        r#"{"name": "watched/a"}"#,
        None,
    );
    events
        .headers_mut()
        .insert("accept", "text/event-stream".parse().expect("header"));
    let response = sender.send_request(events).await.expect("response");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let mut buffer = Vec::new();
    let line = next_line(&mut body, &mut buffer).await;
    let data = line.strip_prefix("data: ").expect("an SSE data line");
    assert_eq!(
        serde_json::from_str::<Value>(data).expect("JSON")["kind"],
        "RESYNC"
    );
    assert_eq!(
        next_line(&mut body, &mut buffer).await,
        "",
        "events end with a blank line"
    );
    connection.abort();

    // A watch that starts at a position replays the node's history from there, with no
    // RESYNC line, then goes on live.
    let (mut sender, connection) = http1(addr).await;
    let from = json!({"name": "watched/a", "start_revision": acquired["revision"],
                      "start_event": acquired["event_index"]});
    let response = sender
        .send_request(request(
            Method::POST,
            "/v1/locks/watch",
            &from.to_string(),
            None,
        ))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut buffer = Vec::new();
    for expected in [&acquired, &released] {
        let replayed: Value =
            serde_json::from_str(&next_line(&mut body, &mut buffer).await).expect("JSON");
        assert_eq!(&replayed, expected, "replayed as first sent");
    }
    connection.abort();
    // After the last event received: nothing before it comes again.
    let (mut sender, connection) = http1(addr).await;
    let after = json!({"name": "watched/a", "start_revision": released["revision"],
                       "start_event": released["event_index"].as_u64().expect("index") + 1});
    let response = sender
        .send_request(request(
            Method::POST,
            "/v1/locks/watch",
            &after.to_string(),
            None,
        ))
        .await
        .expect("response");
    let mut body = response.into_body();
    let mut buffer = Vec::new();
    let again = ok(
        addr,
        "/v1/locks/acquire",
        json!({"session_id": session, "name": "watched/a",
               "request": {"seq": 4, "first_unanswered_seq": 4}}),
    )
    .await;
    let live: Value = serde_json::from_str(&next_line(&mut body, &mut buffer).await).expect("JSON");
    assert_eq!(live["kind"], "ACQUIRED", "{live}");
    assert_eq!(live["token"], again["token"]);
    connection.abort();
    cluster.shutdown().await;
}

#[tokio::test]
async fn the_authorization_header_works_as_in_grpc() {
    use base64::Engine as _;
    let cluster = TestCluster::start(1).await;
    let addr = client_addr(&cluster, cluster.leader().await);
    let mut auth = fencelock_proto::v1::auth_client::AuthClient::new(channel(addr).await);
    use fencelock_proto::v1 as pb;
    for (name, password) in [("root", "rootpw"), ("alice", "alicepw")] {
        auth.user_add(pb::UserAddRequest {
            name: name.into(),
            password: password.into(),
            ..Default::default()
        })
        .await
        .expect("user add");
    }
    auth.role_add(pb::RoleAddRequest {
        name: "jobs".into(),
        ..Default::default()
    })
    .await
    .expect("role add");
    auth.role_grant(pb::RoleGrantRequest {
        role: "jobs".into(),
        prefix: "jobs/".into(),
        rights: Some(pb::AuthRights {
            acquire: true,
            release: true,
            read: true,
            admin: false,
        }),
        ..Default::default()
    })
    .await
    .expect("role grant");
    auth.user_grant_role(pb::UserGrantRoleRequest {
        user: "alice".into(),
        role: "jobs".into(),
        ..Default::default()
    })
    .await
    .expect("grant role");
    auth.enable(pb::AuthEnableRequest {}).await.expect("enable");

    let alice = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:alicepw")
    );
    let anonymous = call_as(
        addr,
        Method::POST,
        "/v1/sessions/open",
        r#"{"ttl_ms": 5000}"#,
        None,
    )
    .await;
    assert_eq!(
        anonymous.status,
        StatusCode::UNAUTHORIZED,
        "{:?}",
        anonymous.body
    );
    assert_eq!(anonymous.body["reason"], "UNAUTHENTICATED");
    let wrong = call_as(
        addr,
        Method::POST,
        "/v1/sessions/open",
        r#"{"ttl_ms": 5000}"#,
        Some("Bearer no-such-token-no-such-token-no-such"),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{:?}", wrong.body);

    let opened = call_as(
        addr,
        Method::POST,
        "/v1/sessions/open",
        r#"{"ttl_ms": 5000}"#,
        Some(&alice),
    )
    .await;
    assert_eq!(opened.status, StatusCode::OK, "{:?}", opened.body);
    let session = opened.body["session_id"].as_u64().expect("session");
    let acquire = |name: &str, seq: u64| {
        json!({"session_id": session, "name": name, "request": {"seq": seq, "first_unanswered_seq": seq}})
            .to_string()
    };
    let granted = call_as(
        addr,
        Method::POST,
        "/v1/locks/acquire",
        &acquire("jobs/a", 1),
        Some(&alice),
    )
    .await;
    assert_eq!(granted.body["outcome"], "GRANTED", "{:?}", granted.body);
    let denied = call_as(
        addr,
        Method::POST,
        "/v1/locks/acquire",
        &acquire("other/a", 2),
        Some(&alice),
    )
    .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{:?}", denied.body);
    assert_eq!(denied.body["reason"], "PERMISSION_DENIED");
    let admin = call_as(addr, Method::POST, "/v1/sessions/list", "{}", Some(&alice)).await;
    assert_eq!(admin.status, StatusCode::FORBIDDEN, "{:?}", admin.body);
    cluster.shutdown().await;
}

/// `docs/openapi.yaml` lists exactly the served routes, with their methods; each is
/// served (no `NOT_FOUND`), and other methods on a documented path are refused.
#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let document = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/openapi.yaml"
    ))
    .expect("docs/openapi.yaml");
    let mut documented = Vec::new();
    let mut in_paths = false;
    let mut path = None;
    for line in document.lines() {
        if !line.starts_with(' ') {
            in_paths = line == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':'))
            && !p.starts_with(' ')
        {
            path = Some(p.to_owned());
        } else if let Some(method) = line.strip_prefix("    ").and_then(|l| l.strip_suffix(':'))
            && !method.starts_with(' ')
        {
            let path = path.clone().expect("a method under a path");
            documented.push((path, method.to_uppercase()));
        }
    }
    let mut served: Vec<(String, String)> = fencelock_server::api::http::routes()
        .into_iter()
        .map(|(path, method)| (path.to_owned(), method.to_string()))
        .collect();
    documented.sort();
    served.sort();
    assert!(!served.is_empty());
    assert_eq!(
        documented, served,
        "docs/openapi.yaml differs from the served routes"
    );

    let cluster = TestCluster::start(1).await;
    let addr = client_addr(&cluster, cluster.leader().await);
    let is_watch = |path: &str| path.ends_with("/watch");
    for (path, method) in &documented {
        if is_watch(path) {
            continue; // a stream: covered by its own test
        }
        let method: Method = method.parse().expect("method");
        let answer = call_as(addr, method.clone(), path, "{}", None).await;
        assert_ne!(answer.body["reason"], "NOT_FOUND", "{method} {path}");
        assert_ne!(
            answer.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let other = if method == Method::GET {
            Method::POST
        } else {
            Method::GET
        };
        let answer = call_as(addr, other.clone(), path, "{}", None).await;
        assert_eq!(
            answer.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{other} {path}"
        );
    }
    cluster.shutdown().await;
}

/// The JSON API speaks the client listener's TLS: `curl` with the cluster's CA is
/// served (HTTP/2 by ALPN, or HTTP/1.1 without ALPN), a plaintext request is not.
#[tokio::test]
async fn the_json_api_is_served_over_the_listeners_tls() {
    let pki = std::sync::Arc::new(TestPki::new(&[1], &[]));
    let node_pki = pki.clone();
    let cluster = TestCluster::start_with_configs(1, move |config| {
        fast(config);
        config.tls = Some(node_pki.node_tls(config.node_id, false));
    })
    .await;
    let addr = client_addr(&cluster, cluster.leader().await);
    let ca = pki.ca();
    // (scheme, extra curl flags): whether it is served.
    let cases: [(&str, &[&str], bool); 4] = [
        ("https", &[], true),
        // HTTP/1.1 without ALPN is served; offering only http/1.1 is refused, as the
        // listener's ALPN is h2 only (docs/http-api.md, "Authentication").
        ("https", &["--http1.1", "--no-alpn"], true),
        ("https", &["--http1.1"], false),
        ("http", &[], false),
    ];
    for (scheme, flags, expected) in cases {
        let mut command = std::process::Command::new("curl");
        command
            .args(["-s", "--max-time", "10", "--cacert"])
            .arg(&ca)
            .args(flags)
            .args(["-d", r#"{"ttl_ms": 5000}"#])
            .arg(format!("{scheme}://{addr}/v1/sessions/open"));
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .expect("curl task")
            .expect("run curl (.ci/run installs it)");
        let served = output.status.success()
            && serde_json::from_slice::<Value>(&output.stdout)
                .is_ok_and(|answer| answer["session_id"].as_u64().is_some_and(|s| s > 0));
        assert_eq!(served, expected, "{scheme} {flags:?}: {output:?}");
    }
    cluster.shutdown().await;
}

/// The JSON renew is the gRPC keepalive: a leader cut off from its quorum answers it
/// `NOT_LEADER` (after its quorum round fails), never with a renewed lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_leader_does_not_renew_a_lease_over_json() {
    let cluster = TestCluster::start(3).await;
    let old = cluster.leader().await;
    let addr = client_addr(&cluster, old);
    let session = open(addr, 10_000).await;
    let renewed = post(
        addr,
        "/v1/sessions/keepalive",
        json!({"session_id": session}),
    )
    .await;
    assert_eq!(renewed.status, StatusCode::OK, "{:?}", renewed.body);

    cluster.isolate(old);
    let refused = post(
        addr,
        "/v1/sessions/keepalive",
        json!({"session_id": session}),
    )
    .await;
    assert_ne!(refused.status, StatusCode::OK, "{:?}", refused.body);
    assert_eq!(refused.body["reason"], "NOT_LEADER", "{:?}", refused.body);
    assert!(refused.body.get("ttl_ms").is_none(), "{:?}", refused.body);
    cluster.heal();
    cluster.shutdown().await;
}

#[tokio::test]
async fn semaphores_and_multi_locks_over_json() {
    let cluster = TestCluster::start(1).await;
    let addr = client_addr(&cluster, cluster.leader().await);
    let mut tokens = Vec::new();
    for seq in 1..=2u64 {
        let session = open(addr, 60_000).await;
        let granted = ok(
            addr,
            "/v1/locks/acquire",
            json!({"session_id": session, "name": "pool", "mode": "SHARED", "permits": 2,
                   "request": {"seq": seq, "first_unanswered_seq": seq}}),
        )
        .await;
        assert_eq!(granted["outcome"], "GRANTED", "{granted}");
        assert_eq!(granted["grants"][0]["name"], "pool", "{granted}");
        tokens.push(granted["grants"][0]["token"].as_u64().expect("token"));
    }
    assert!(
        tokens[0] < tokens[1],
        "each permit has its own token: {tokens:?}"
    );
    let third = open(addr, 60_000).await;
    let blocked = ok(
        addr,
        "/v1/locks/acquire",
        json!({"session_id": third, "name": "pool", "mode": "SHARED", "permits": 2,
               "request": {"seq": 1, "first_unanswered_seq": 1}}),
    )
    .await;
    assert_eq!(blocked["outcome"], "WOULD_BLOCK", "{blocked}");
    let mismatch = post(
        addr,
        "/v1/locks/acquire",
        json!({"session_id": third, "name": "pool", "mode": "SHARED", "permits": 3,
               "request": {"seq": 2, "first_unanswered_seq": 2}}),
    )
    .await;
    assert_eq!(
        mismatch.body["reason"], "PERMITS_MISMATCH",
        "{:?}",
        mismatch.body
    );
    assert!(mismatch.status.is_client_error(), "{}", mismatch.status);

    // Several names in one request: all granted, each with its own token, in the order asked.
    let multi = ok(
        addr,
        "/v1/locks/acquire",
        json!({"session_id": third, "locks": [{"name": "b"}, {"name": "a"}],
               "request": {"seq": 3, "first_unanswered_seq": 3}}),
    )
    .await;
    assert_eq!(multi["outcome"], "GRANTED", "{multi}");
    let names: Vec<&str> = multi["grants"]
        .as_array()
        .expect("grants")
        .iter()
        .map(|grant| grant["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["b", "a"]);
    cluster.shutdown().await;
}

/// Elections slow enough that a follower cut off from the leader for half a second
/// stays a follower.
fn slow_elections(config: &mut fencelock_server::config::ServerConfig) {
    fast(config);
    config.raft.heartbeat_interval = Duration::from_millis(100);
    config.raft.election_timeout = Duration::from_secs(3);
}

/// Credentials are checked on the applied state of the node a call reaches: a bearer
/// token created through the leader moments before is not yet applied on a follower the
/// leader's entries have not reached. The follower catches up with the leader's read
/// index before it refuses an unknown token, over gRPC and over the JSON API alike (the
/// call, authenticated, is then redirected to the leader as every write on a follower).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_created_through_the_leader_works_at_once_on_a_lagging_follower() {
    use base64::Engine as _;
    use fencelock_proto::v1 as pb;
    let cluster = TestCluster::start_with(3, slow_elections).await;
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let (leader_addr, follower_addr) = (
        client_addr(&cluster, leader),
        client_addr(&cluster, follower),
    );
    let mut auth = fencelock_proto::v1::auth_client::AuthClient::new(channel(leader_addr).await);
    auth.user_add(pb::UserAddRequest {
        name: "root".into(),
        password: "rootpw".into(),
        ..Default::default()
    })
    .await
    .expect("user add");
    auth.enable(pb::AuthEnableRequest {}).await.expect("enable");
    let root = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("root:rootpw")
    );
    // The follower has applied "auth on" (and knows root) before it is held back.
    let deadline = Instant::now() + SETTLE;
    loop {
        let anonymous = call_as(
            follower_addr,
            Method::POST,
            "/v1/sessions/open",
            r#"{"ttl_ms": 5000}"#,
            None,
        )
        .await;
        if anonymous.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the follower never turned auth on"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leader_node = cluster.running(leader).node().clone();
    let follower_id = cluster.slots[follower].id;
    for json in [false, true] {
        // Hold the follower back: the leader's entries stop reaching it (the other
        // follower makes the quorum), until the links heal half a second later.
        leader_node.cut_links_to([follower_id]);
        let mut create = tonic::Request::new(pb::TokenCreateRequest {
            user: "root".into(),
            ..Default::default()
        });
        create
            .metadata_mut()
            .insert("authorization", root.parse().unwrap());
        let token = auth
            .token_create(create)
            .await
            .expect("token")
            .into_inner()
            .token;
        let bearer = format!("Bearer {token}");
        let healer = leader_node.clone();
        let heal = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            healer.cut_links_to([]);
        });
        if json {
            let opened = call_as(
                follower_addr,
                Method::POST,
                "/v1/sessions/open",
                r#"{"ttl_ms": 5000}"#,
                Some(&bearer),
            )
            .await;
            // Authenticated, then redirected to the leader as any write on a follower.
            assert_eq!(
                opened.status,
                StatusCode::TEMPORARY_REDIRECT,
                "JSON: {:?}",
                opened.body
            );
        } else {
            let mut open = tonic::Request::new(pb::OpenSessionRequest {
                client_id: client_id(1),
                ttl_ms: 5_000,
            });
            open.metadata_mut()
                .insert("authorization", bearer.parse().unwrap());
            let mut locks =
                fencelock_proto::v1::locks_client::LocksClient::new(channel(follower_addr).await);
            let status = locks.open_session(open).await.expect_err("a follower");
            assert_eq!(
                reason_of(&status),
                pb::ErrorReason::NotLeader,
                "gRPC: {status:?}"
            );
        }
        heal.await.unwrap();
    }
    cluster.shutdown().await;
}
