//! The admin HTTP port: `/health`, `/metrics` (Prometheus text), `/status` (JSON) and a
//! small self-refreshing HTML status page at `/`.
//!
//! The port is served by hyper's HTTP/1 connection driver directly (the routes are an
//! axum router) so that hostile input stays cheap: headers must arrive within
//! [`HEADER_READ_TIMEOUT`] and fit in [`MAX_HEADER_BYTES`], request bodies over
//! [`MAX_BODY_BYTES`] are refused, at most [`MAX_CONNECTIONS`] connections are served at
//! once, and no connection or accept error ends the server.

use crate::node::NodeStatus;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// A request's headers must be read completely within this time, or the connection is
/// closed (also bounds how long an idle keep-alive connection is kept).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head (request line and headers) accepted, in bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest request body accepted, in bytes. No route reads a body.
pub const MAX_BODY_BYTES: usize = 4 * 1024;
/// Connections served at once; further clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a graceful stop waits for open connections to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Content type of `/metrics`.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Whether the node can serve: it is running, knows a leader, and is a member (voter or
/// learner) of the cluster. `Ok` carries the leader's id.
///
/// # Errors
/// A short human-readable reason why the node cannot serve.
pub fn health(status: &NodeStatus) -> Result<u64, &'static str> {
    if status.state == "Shutdown" {
        return Err("node is shutting down");
    }
    if !status.members.iter().any(|m| m.id == status.node_id) {
        return Err("node is not a member of the cluster (waiting to be added)");
    }
    status.leader_id.ok_or("no known leader")
}

/// What the admin port needs from a node. Implemented by `Node`; tests implement it on
/// fakes.
pub trait AdminSource: Send + Sync + 'static {
    /// The node's current status.
    fn status(&self) -> NodeStatus;
}

/// The `/health` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `"ok"` or `"unavailable"`.
    pub status: String,
    /// The answering node.
    pub node_id: u64,
    /// The leader, when known.
    pub leader_id: Option<u64>,
    /// Why the node is unavailable; absent when it is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The admin routes over `source`, without connection handling (see [`serve`]).
pub fn router<S: AdminSource>(source: Arc<S>) -> Router {
    Router::new()
        .route("/", get(page::<S>))
        .route("/health", get(health_route::<S>))
        .route("/metrics", get(prometheus::<S>))
        .route("/status", get(status::<S>))
        .layer(middleware::from_fn(refuse_large_bodies))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(source)
}

/// Serves the admin port on `listener` until `shutdown` completes, then finishes the
/// requests in flight (for at most [`SHUTDOWN_GRACE`]) and returns.
///
/// Accept errors (such as running out of file descriptors) are logged and retried, and
/// a bad connection only ends itself, so this returns `Ok` unless the listener cannot
/// report its address.
///
/// # Errors
/// Only if the listener's local address cannot be read.
pub async fn serve<S: AdminSource>(
    listener: TcpListener,
    source: Arc<S>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let service = TowerToHyperService::new(router(source));
    let (stop_tx, stop_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    tracing::debug!(%local, "admin HTTP serving");

    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => {
                permit.expect("the connection semaphore is never closed")
            }
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, "admin accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let conn = http.serve_connection(TokioIo::new(stream), service.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(conn);
            let stopping = async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            };
            let result = tokio::select! {
                result = conn.as_mut() => result,
                () = stopping => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(err) = result {
                tracing::debug!(%peer, %err, "admin connection ended with an error");
            }
        });
    }

    drop(listener);
    let _ = stop_tx.send(true);
    let all = u32::try_from(MAX_CONNECTIONS).expect("connection limit fits u32");
    if tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::debug!("admin connections still open after the grace period; leaving them");
    }
    tracing::debug!(%local, "admin HTTP stopped");
    Ok(())
}

async fn refuse_large_bodies(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        let mut response = (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body over {MAX_BODY_BYTES} bytes\n"),
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return response;
    }
    next.run(request).await
}

async fn health_route<S: AdminSource>(State(source): State<Arc<S>>) -> Response {
    let status = source.status();
    let (code, reason) = match health(&status) {
        Ok(_) => (StatusCode::OK, None),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, Some(reason.to_owned())),
    };
    let body = Health {
        status: if reason.is_none() {
            "ok"
        } else {
            "unavailable"
        }
        .into(),
        node_id: status.node_id,
        leader_id: status.leader_id,
        reason,
    };
    (code, Json(body)).into_response()
}

async fn prometheus<S: AdminSource>(State(source): State<Arc<S>>) -> Response {
    let text = crate::metrics::render(&source.status());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
        )],
        text,
    )
        .into_response()
}

async fn status<S: AdminSource>(State(source): State<Arc<S>>) -> Json<NodeStatus> {
    Json(source.status())
}

async fn page<S: AdminSource>(State(source): State<Arc<S>>) -> Html<String> {
    Html(render_page(&source.status()))
}

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn or_dash(value: Option<&str>) -> String {
    value.map_or_else(|| "-".to_owned(), escape)
}

/// The HTML status page: plain markup that reloads itself every two seconds.
fn render_page(s: &NodeStatus) -> String {
    let health = match health(s) {
        Ok(_) => "ok".to_owned(),
        Err(reason) => format!("unavailable: {reason}"),
    };
    let leader = s
        .leader_id
        .map_or_else(|| "-".to_owned(), |id| id.to_string());
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"2\">\
         <title>fencelock node {id}</title>\
         <style>body{{font-family:sans-serif;margin:2em}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}</style>\
         </head><body>\n<h1>fencelock node {id}</h1>\n\
         <p>{state}, term {term}; health: {health}</p>\n<table>\n\
         <tr><th>leader</th><td>{leader} ({leader_addr})</td></tr>\n\
         <tr><th>last log / committed / applied</th><td>{last} / {commit} / {applied}</td></tr>\n\
         <tr><th>sessions</th><td>{sessions}</td></tr>\n\
         <tr><th>locks</th><td>{locks}</td></tr>\n\
         <tr><th>held grants</th><td>{held}</td></tr>\n\
         <tr><th>waiters</th><td>{waiters}</td></tr>\n\
         <tr><th>last token</th><td>{token}</td></tr>\n\
         <tr><th>grants / expired sessions (total)</th><td>{grants} / {expired}</td></tr>\n\
         </table>\n<h2>members</h2>\n<table>\n\
         <tr><th>id</th><th>role</th><th>peer address</th><th>client address</th></tr>\n",
        id = s.node_id,
        state = escape(&s.state),
        term = s.term,
        health = escape(&health),
        leader = leader,
        leader_addr = or_dash(s.leader_client_addr.as_deref()),
        last = s.last_log_index,
        commit = s.commit_index,
        applied = s.applied_index,
        sessions = s.sessions,
        locks = s.locks,
        held = s.held_grants,
        waiters = s.waiters,
        token = s.last_token,
        grants = s.total_grants,
        expired = s.total_expired_sessions,
    );
    for m in &s.members {
        let mut role = if m.voter { "voter" } else { "learner" }.to_owned();
        if Some(m.id) == s.leader_id {
            role.push_str(", leader");
        }
        if m.id == s.node_id {
            role.push_str(", this node");
        }
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            m.id,
            role,
            escape(&m.peer_addr),
            or_dash(m.client_addr.as_deref()),
        );
    }
    html.push_str(
        "</table>\n<p><a href=\"/status\">/status</a> · <a href=\"/metrics\">/metrics</a> · \
         <a href=\"/health\">/health</a></p>\n</body></html>\n",
    );
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::MemberStatus;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    struct Fake(Mutex<NodeStatus>);

    impl AdminSource for Fake {
        fn status(&self) -> NodeStatus {
            self.0.lock().expect("not poisoned").clone()
        }
    }

    fn member(id: u64, voter: bool) -> MemberStatus {
        MemberStatus {
            id,
            peer_addr: format!("127.0.0.1:710{id}"),
            client_addr: Some(format!("127.0.0.1:700{id}")),
            voter,
        }
    }

    fn leader_status() -> NodeStatus {
        NodeStatus {
            node_id: 1,
            state: "Leader".into(),
            leader_id: Some(1),
            leader_client_addr: Some("127.0.0.1:7001".into()),
            term: 3,
            last_log_index: 10,
            commit_index: 10,
            applied_index: 10,
            members: vec![member(1, true), member(2, true), member(3, false)],
            sessions: 1,
            locks: 1,
            held_grants: 1,
            waiters: 0,
            last_token: 5,
            total_grants: 5,
            total_expired_sessions: 0,
        }
    }

    struct Server {
        addr: std::net::SocketAddr,
        source: Arc<Fake>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    async fn start(status: NodeStatus) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let source = Arc::new(Fake(Mutex::new(status)));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, source.clone(), async move {
            let _ = rx.await;
        }));
        Server {
            addr,
            source,
            stop: Some(tx),
            task,
        }
    }

    /// Sends raw bytes, reads until the server closes, returns (status code, headers+body).
    async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String) {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request).await.expect("write");
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
            .await
            .expect("server answers in time")
            .expect("read");
        let text = String::from_utf8_lossy(&buf).into_owned();
        let code = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (code, text)
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        raw(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
    }

    fn body(response: &str) -> &str {
        response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }

    #[tokio::test]
    async fn health_is_ok_only_for_a_member_that_knows_a_leader() {
        let server = start(leader_status()).await;
        let (code, text) = get(server.addr, "/health").await;
        assert_eq!(code, 200, "{text}");
        let health: Health = serde_json::from_str(body(&text)).expect("json");
        assert_eq!(health.status, "ok");
        assert_eq!(health.reason, None);
        assert_eq!(health.leader_id, Some(1));

        server.source.0.lock().expect("lock").leader_id = None;
        let (code, text) = get(server.addr, "/health").await;
        assert_eq!(code, 503, "{text}");
        let health: Health = serde_json::from_str(body(&text)).expect("json");
        assert_eq!(health.reason.as_deref(), Some("no known leader"));

        {
            let mut s = server.source.0.lock().expect("lock");
            s.leader_id = Some(1);
            s.node_id = 4;
            s.state = "Learner".into();
        }
        let (code, text) = get(server.addr, "/health").await;
        assert_eq!(code, 503, "{text}");
        assert!(text.contains("not a member"), "{text}");

        // A learner that is in the membership is healthy.
        server.source.0.lock().expect("lock").node_id = 3;
        assert_eq!(get(server.addr, "/health").await.0, 200);
    }

    #[tokio::test]
    async fn status_metrics_and_page() {
        let mut status = leader_status();
        status.members[1].peer_addr = "<script>".into();
        let server = start(status.clone()).await;

        let (code, text) = get(server.addr, "/status").await;
        assert_eq!(code, 200);
        let parsed: serde_json::Value = serde_json::from_str(body(&text)).expect("json");
        assert_eq!(parsed, serde_json::to_value(&status).expect("serializable"));

        let (code, text) = get(server.addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(
            text.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{text}"
        );
        assert!(text.contains("fencelock_raft_term{node=\"1\"} 3"), "{text}");

        let (code, text) = get(server.addr, "/").await;
        assert_eq!(code, 200);
        assert!(text.contains("http-equiv=\"refresh\""));
        assert!(text.contains("&lt;script&gt;"));
        assert!(!text.contains("<script>"));

        assert_eq!(get(server.addr, "/nope").await.0, 404);
    }

    #[tokio::test]
    async fn garbage_and_oversized_requests_do_not_stop_the_server() {
        let server = start(leader_status()).await;

        // Random bytes (a fixed-seed xorshift, so failures reproduce).
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..20 {
            let mut bytes = vec![0u8; 64 + round * 1000];
            for b in &mut bytes {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            let (code, _) = raw(server.addr, &bytes).await;
            assert!(code == 0 || code >= 400, "garbage got {code}");
        }

        // Headers larger than the limit.
        let mut huge = b"GET /health HTTP/1.1\r\nX-Big: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEADER_BYTES * 2));
        huge.extend_from_slice(b"\r\n\r\n");
        let (code, _) = raw(server.addr, &huge).await;
        assert!(
            code == 0 || code == 431 || code == 400,
            "huge header got {code}"
        );

        // A declared body over the limit.
        let (code, _) = raw(
            server.addr,
            b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\nabc",
        )
        .await;
        assert_eq!(code, 413);

        // A client that never finishes its headers is cut off.
        let mut slow = TcpStream::connect(server.addr).await.expect("connect");
        slow.write_all(b"GET /health HTTP/1.1\r\n")
            .await
            .expect("write");
        let mut buf = Vec::new();
        let read = tokio::time::timeout(
            HEADER_READ_TIMEOUT + Duration::from_secs(5),
            slow.read_to_end(&mut buf),
        )
        .await
        .expect("the server closes a slow client");
        assert!(read.is_err() || buf.is_empty() || buf.starts_with(b"HTTP/1.1 408"));

        assert_eq!(get(server.addr, "/health").await.0, 200);
    }

    #[tokio::test]
    async fn stops_on_shutdown() {
        let mut server = start(leader_status()).await;
        // An idle keep-alive connection must not hold the stop up past the grace period.
        let _idle = TcpStream::connect(server.addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = server.stop.take().expect("stop").send(());
        let result = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(2), server.task)
            .await
            .expect("serve returns")
            .expect("no panic");
        assert!(result.is_ok());
        assert!(TcpStream::connect(server.addr).await.is_err());
    }
}
