//! The admin HTTP port: `/health`, `/metrics` (Prometheus text), `/status` (JSON),
//! `/status/locks` (the locks with the longest queues and a sample of held locks, JSON),
//! `/status/events` (the most recent applied events, JSON) and a self-refreshing HTML
//! status page at `/` (plain HTML and a little inline JavaScript that re-reads the three
//! JSON routes every two seconds; no external assets).
//!
//! The port is served by hyper's HTTP/1 connection driver directly (the routes are an
//! axum router) so that hostile input stays cheap: headers must arrive within
//! [`HEADER_READ_TIMEOUT`] and fit in [`MAX_HEADER_BYTES`], request bodies over
//! [`MAX_BODY_BYTES`] are refused, at most [`MAX_CONNECTIONS`] connections are served at
//! once, and no connection or accept error ends the server.
//!
//! [`AdminSecurity`] secures the port: TLS with the client listener's certificate and
//! key (and its client CA, when one is set), and, while auth is on in the replicated
//! state, credentials on every route but `/health`: `/`, `/status` and `/status/*`
//! (lock names and holder values) need a user with `read` on every lock, sent as HTTP
//! Basic or a bearer token, the same credentials as the gRPC API; `/metrics` needs the
//! same, unless it is open (`metrics_open`) or the request carries the bearer token
//! configured for Prometheus (`metrics_token_file`).

use crate::auth::{AuthError, Authenticator, token_hash};
use crate::config::ServerConfig;
use crate::events::RecentEvent;
use crate::limits::{
    HEADER_READ_TIMEOUT, MAX_BODY_BYTES, MAX_CONNECTIONS, MAX_HEADER_BYTES, SHUTDOWN_GRACE,
};
use crate::status::NodeStatus;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use fencelock_core::{Access, LockSummary, Right};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

/// How often the status page refreshes itself, in milliseconds.
pub const STATUS_REFRESH_MS: u64 = 2_000;

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
    if status.disk.no_space_alarm {
        // etcd's /health does the same: the node serves reads, but refuses writes.
        return Err(
            "NO_SPACE alarm: the data disk is full; writes are refused until space is freed",
        );
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

    /// The locks with the longest queues and a sample of held locks, from the applied
    /// state (bounded; see [`STATUS_LOCK_SCAN`]).
    fn locks_overview(&self) -> LocksOverview {
        LocksOverview::default()
    }

    /// The most recent applied events, oldest first (bounded).
    fn recent_events(&self) -> Vec<RecentEvent> {
        Vec::new()
    }
}

/// The `/status/locks` answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocksOverview {
    /// Up to [`STATUS_TOP_QUEUES`] locks with waiters, longest queue first.
    pub top_queues: Vec<LockSummary>,
    /// Up to [`STATUS_HELD_SAMPLE`] held locks, in name order.
    pub held: Vec<LockSummary>,
    /// Up to [`STATUS_TOP_QUEUES`] held locks, held longest first (by the earliest
    /// grant in force, as the log recorded it), so a stuck holder is found at a glance.
    /// Exact over every lock: read from the state's index of grants by time, with no
    /// scan cap.
    #[serde(default)]
    pub longest_held: Vec<LockSummary>,
    /// Up to [`STATUS_TOP_QUEUES`] lock-delays in force, in name order.
    #[serde(default)]
    pub lock_delays: Vec<DelayInForce>,
    /// This node's wall clock when the overview was read (ms since the Unix epoch), to
    /// which "held for" and "delay left" are counted.
    #[serde(default)]
    pub now_ms: u64,
}

/// A lock-delay in force, as the status page shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelayInForce {
    /// The lock: granted to nobody until the delay ends.
    pub name: String,
    /// The delay's length.
    pub delay_ms: u64,
    /// When it started (the leader's wall clock as the log recorded it; 0: unknown).
    pub started_at_ms: u64,
    /// The token of the grant whose loss started it.
    pub token: u64,
    /// The session whose grant's loss (expiry or revocation) started it (0: not known
    /// to this node, which did not see the delay start).
    #[serde(default)]
    pub session: u64,
}

/// The grant whose loss started `delay`, for people: "session 7 token 41".
fn lost_grant_text(delay: &DelayInForce) -> String {
    if delay.session == 0 {
        format!("token {}", delay.token)
    } else {
        format!("session {} token {}", delay.session, delay.token)
    }
}

/// How long from `since_ms` to `now_ms`, for people ("-" when `since_ms` is unknown).
fn since_text(since_ms: Option<u64>, now_ms: u64) -> String {
    match since_ms {
        Some(since) if since != 0 => {
            let secs = now_ms.saturating_sub(since) / 1000;
            match secs {
                0..60 => format!("{secs}s"),
                60..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
                _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
            }
        }
        _ => "-".to_owned(),
    }
}

/// About how much of `delay` is left at `now_ms`, in seconds, for people.
fn delay_left_text(delay: &DelayInForce, now_ms: u64) -> String {
    let elapsed = if delay.started_at_ms == 0 {
        0
    } else {
        now_ms.saturating_sub(delay.started_at_ms)
    };
    format!(
        "about {}s of {}s",
        delay.delay_ms.saturating_sub(elapsed).div_ceil(1000),
        delay.delay_ms.div_ceil(1000)
    )
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

/// Who may read the admin port, and whether it speaks TLS. The default is today's open,
/// plaintext port.
#[derive(Clone, Default)]
pub struct AdminSecurity {
    /// Checks credentials against the replicated users while auth is on; `None`: every
    /// route is open.
    pub auth: Option<Authenticator>,
    /// `/metrics` is open to anyone, even with auth on.
    pub metrics_open: bool,
    /// The hash ([`token_hash`]) of a bearer token that may read `/metrics`.
    pub metrics_token_hash: Option<String>,
    /// TLS, when on.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for AdminSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSecurity")
            .field("auth", &self.auth.is_some())
            .field("metrics_open", &self.metrics_open)
            .field("metrics_token", &self.metrics_token_hash.is_some())
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl AdminSecurity {
    /// The admin port's security as `config` sets it, with credentials checked by
    /// `auth`.
    ///
    /// # Errors
    /// A message naming the setting: `admin_tls` without `tls.cert`/`tls.key`, an
    /// unreadable or empty metrics token file, or unusable certificate files.
    pub fn from_config(config: &ServerConfig, auth: Authenticator) -> Result<Self, String> {
        let metrics_token_hash = match &config.network.metrics_token_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!("cannot read metrics_token_file {}: {e}", path.display())
                })?;
                let token = text.lines().next().unwrap_or_default().trim();
                if token.len() < MIN_METRICS_TOKEN_CHARS {
                    return Err(format!(
                        "metrics_token_file {}: the token must be at least \
                         {MIN_METRICS_TOKEN_CHARS} characters",
                        path.display()
                    ));
                }
                Some(token_hash(token))
            }
        };
        let tls = if config.network.admin_tls {
            let tls = config.tls.as_ref();
            let (Some(cert), Some(key)) = (
                tls.and_then(|t| t.cert.as_deref()),
                tls.and_then(|t| t.key.as_deref()),
            ) else {
                return Err("admin_tls needs tls.cert and tls.key (--tls-cert, --tls-key)".into());
            };
            let client_ca = tls.and_then(|t| t.client_ca.as_deref());
            Some(server_tls(cert, key, client_ca)?)
        } else {
            None
        };
        Ok(AdminSecurity {
            auth: Some(auth),
            metrics_open: config.network.metrics_open,
            metrics_token_hash,
            tls,
        })
    }
}

/// The shortest bearer token accepted for `/metrics`.
pub const MIN_METRICS_TOKEN_CHARS: usize = 32;

/// The admin port's rustls configuration: `cert`/`key`, HTTP/1.1, and client
/// certificates of `client_ca` required when it is given.
fn server_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let what = "admin TLS (tls.cert, tls.key, tls.client_ca)";
    let cert_pem = crate::tls::read_pem(cert, "tls.cert", "CERTIFICATE")?;
    let key_pem = crate::tls::read_pem(key, "tls.key", "PRIVATE KEY")?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| format!("{what}: key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{what}: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let ca_pem = crate::tls::read_pem(path, "tls.client_ca", "CERTIFICATE")?;
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(&ca_pem) {
                roots
                    .add(ca.map_err(|e| format!("{what}: CA: {e}"))?)
                    .map_err(|e| format!("{what}: CA: {e}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("{what}: CA: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("{what}: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The admin routes over `source`, open to anyone, without connection handling (see
/// [`serve`]).
pub fn router<S: AdminSource>(source: Arc<S>) -> Router {
    router_secured(source, &AdminSecurity::default())
}

/// The admin routes over `source`, with the credential checks of `security`.
pub fn router_secured<S: AdminSource>(source: Arc<S>, security: &AdminSecurity) -> Router {
    Router::new()
        .route("/", get(page::<S>))
        .route("/health", get(health_route::<S>))
        .route("/metrics", get(prometheus::<S>))
        .route("/status", get(status::<S>))
        .route("/status/locks", get(status_locks::<S>))
        .route("/status/events", get(status_events::<S>))
        .layer(middleware::from_fn_with_state(
            Arc::new(security.clone()),
            require_credentials,
        ))
        .layer(middleware::from_fn(refuse_large_bodies))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(source)
}

/// What a route needs while auth is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Needs {
    /// Nothing (`/health`).
    Nothing,
    /// `/metrics`: open, the metrics token, or `read`.
    Metrics,
    /// A user with `read` on every lock (every other route).
    Read,
}

fn needs(path: &str) -> Needs {
    match path {
        "/health" => Needs::Nothing,
        "/metrics" => Needs::Metrics,
        _ => Needs::Read,
    }
}

async fn require_credentials(
    State(security): State<Arc<AdminSecurity>>,
    request: Request,
    next: Next,
) -> Response {
    let needed = needs(request.uri().path());
    let Some(auth) = &security.auth else {
        return next.run(request).await;
    };
    if needed == Needs::Nothing || (needed == Needs::Metrics && security.metrics_open) {
        return next.run(request).await;
    }
    if needed == Needs::Metrics
        && let Some(expected) = &security.metrics_token_hash
        && bearer(request.headers()).is_some_and(|token| token_hash(token) == *expected)
    {
        return next.run(request).await;
    }
    let metadata = tonic::metadata::MetadataMap::from_headers(request.headers().clone());
    let checked = match auth.authenticate(&metadata).await {
        Ok(caller) => auth.check(&caller, Access::Lock("", Right::Read)),
        Err(error) => Err(error),
    };
    match checked {
        Ok(()) => next.run(request).await,
        Err(AuthError::Unauthenticated(reason)) => {
            let mut response = (StatusCode::UNAUTHORIZED, format!("{reason}\n")).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"fencelock admin\", charset=\"UTF-8\""),
            );
            response
        }
        Err(error) => (
            StatusCode::FORBIDDEN,
            format!("{error}: the admin port's status routes need `read` on every lock\n"),
        )
            .into_response(),
    }
}

fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
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
    serve_secured(listener, source, AdminSecurity::default(), shutdown).await
}

/// [`serve`], secured by `security`: a TLS handshake that fails or takes longer than
/// [`crate::limits::TLS_HANDSHAKE_TIMEOUT`] ends only its connection.
///
/// # Errors
/// Only if the listener's local address cannot be read.
pub async fn serve_secured<S: AdminSource>(
    listener: TcpListener,
    source: Arc<S>,
    security: AdminSecurity,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let tls = security.tls.clone().map(TlsAcceptor::from);
    let service = TowerToHyperService::new(router_secured(source, &security));
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
        let (http, service, stop, tls) =
            (http.clone(), service.clone(), stop_rx.clone(), tls.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tls {
                None => drive(&http, stream, service, stop, peer).await,
                Some(acceptor) => {
                    match tokio::time::timeout(
                        crate::limits::TLS_HANDSHAKE_TIMEOUT,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(stream)) => drive(&http, stream, service, stop, peer).await,
                        Ok(Err(err)) => tracing::debug!(%peer, %err, "admin TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "admin TLS handshake timed out"),
                    }
                }
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

/// Serve one connection until it ends, or gracefully end it when the port stops.
async fn drive<I>(
    http: &hyper::server::conn::http1::Builder,
    io: I,
    service: TowerToHyperService<Router>,
    mut stop: watch::Receiver<bool>,
    peer: std::net::SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = http.serve_connection(TokioIo::new(io), service);
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

async fn status_locks<S: AdminSource>(State(source): State<Arc<S>>) -> Json<LocksOverview> {
    Json(source.locks_overview())
}

async fn status_events<S: AdminSource>(State(source): State<Arc<S>>) -> Json<Vec<RecentEvent>> {
    Json(source.recent_events())
}

async fn page<S: AdminSource>(State(source): State<Arc<S>>) -> Html<String> {
    Html(render_page(
        &source.status(),
        &source.locks_overview(),
        &source.recent_events(),
    ))
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

/// The status page's script: re-reads `/status`, `/status/locks` and `/status/events`
/// every [`STATUS_REFRESH_MS`] and re-renders, escaping every string.
const STATUS_SCRIPT: &str = r#"<script>
"use strict";
// Refreshes the page from /status, /status/locks and /status/events every 2 s.
// Every string from the server goes through esc() before it reaches innerHTML.
const $ = (id) => document.getElementById(id);
function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}
async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(path + " answered " + response.status);
  return response.json();
}
function rows(list, render, columns) {
  if (list.length === 0) return '<tr><td colspan="' + columns + '" class="none">none</td></tr>';
  return list.map(render).join("");
}
function holders(lock) {
  return lock.holders.map((h) => "session " + esc(h[0]) + " token " + esc(h[1])).join(", ");
}
function eventText(e) {
  const parts = [];
  if (e.name !== null) parts.push("lock " + esc(e.name));
  if (e.session !== null) parts.push("session " + esc(e.session));
  if (e.token !== null) parts.push("token " + esc(e.token));
  if (e.reason !== null) parts.push(esc(e.reason));
  return parts.join(", ");
}
function since(ms, now) {
  if (ms === null || ms === undefined || ms === 0) return "-";
  const secs = Math.floor(Math.max(0, now - ms) / 1000);
  if (secs < 60) return secs + "s";
  if (secs < 3600) return Math.floor(secs / 60) + "m" + String(secs % 60).padStart(2, "0") + "s";
  return Math.floor(secs / 3600) + "h" + String(Math.floor(secs % 3600 / 60)).padStart(2, "0") + "m";
}
function delayLeft(d, now) {
  const elapsed = d.started_at_ms === 0 ? 0 : Math.max(0, now - d.started_at_ms);
  return "about " + Math.ceil(Math.max(0, d.delay_ms - elapsed) / 1000) + "s of "
    + Math.ceil(d.delay_ms / 1000) + "s";
}
function render(s, l, ev) {
  document.title = "fencelock node " + s.node_id;
  $("title").textContent = "fencelock node " + s.node_id;
  $("state").textContent = s.state;
  $("term").textContent = s.term;
  $("leader").textContent = s.leader_id === null ? "none known"
    : "node " + s.leader_id + (s.leader_client_addr ? " (" + s.leader_client_addr + ")" : "");
  $("indexes").textContent = s.last_log_index + " / " + s.commit_index + " / " + s.applied_index;
  $("sessions").textContent = s.sessions;
  $("locks").textContent = s.locks;
  $("held").textContent = s.held_grants;
  $("waiters").textContent = s.waiters;
  $("token").textContent = s.last_token;
  $("cluster-version").textContent = s.cluster_version;
  $("totals").textContent = s.total_grants + " / " + s.total_expired_sessions;
  $("members").innerHTML = rows(s.members, (m) => {
    const role = [m.voter ? "voter" : "learner"];
    if (m.id === s.leader_id) role.push("leader");
    if (m.id === s.node_id) role.push("this node");
    return "<tr><td>" + esc(m.id) + "</td><td>" + esc(role.join(", ")) + "</td><td>"
      + esc(m.peer_addr) + "</td><td>" + esc(m.client_addr === null ? "-" : m.client_addr)
      + "</td></tr>";
  }, 4);
  $("queues").innerHTML = rows(l.top_queues, (lock) =>
    "<tr><td>" + esc(lock.name) + "</td><td>" + esc(lock.waiters) + "</td><td>"
    + holders(lock) + "</td></tr>", 3);
  $("held-locks").innerHTML = rows(l.held, (lock) =>
    "<tr><td>" + esc(lock.name) + "</td><td>" + holders(lock) + "</td><td>"
    + esc(lock.waiters) + "</td></tr>", 3);
  $("longest-held").innerHTML = rows(l.longest_held || [], (lock) =>
    "<tr><td>" + esc(lock.name) + "</td><td>" + esc(since(lock.held_since_ms, l.now_ms))
    + "</td><td>" + holders(lock) + "</td><td>" + esc(lock.waiters) + "</td></tr>", 4);
  $("lock-delays").innerHTML = rows(l.lock_delays || [], (d) =>
    "<tr><td>" + esc(d.name) + "</td><td>" + esc(delayLeft(d, l.now_ms)) + "</td><td>"
    + esc((d.session ? "session " + d.session + " " : "") + "token " + d.token)
    + "</td></tr>", 3);
  $("events").innerHTML = rows(ev.slice().reverse(), (e) =>
    "<tr><td>" + esc(e.index) + "</td><td>" + esc(e.kind) + "</td><td>" + eventText(e)
    + "</td></tr>", 3);
}
async function refresh() {
  try {
    const [s, l, ev] = await Promise.all(
      [getJson("/status"), getJson("/status/locks"), getJson("/status/events")]);
    render(s, l, ev);
    $("error").textContent = "";
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.rendered = "js";
  } catch (error) {
    $("error").textContent = "refresh failed: " + error.message;
  }
}
refresh();
setInterval(refresh, 2000);
</script>"#;

fn holders_text(lock: &LockSummary) -> String {
    lock.holders
        .iter()
        .map(|(session, token)| format!("session {session} token {token}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn event_text(event: &RecentEvent) -> String {
    let mut parts = Vec::new();
    if let Some(name) = &event.name {
        parts.push(format!("lock {}", escape(name)));
    }
    if let Some(session) = event.session {
        parts.push(format!("session {session}"));
    }
    if let Some(token) = event.token {
        parts.push(format!("token {token}"));
    }
    if let Some(reason) = event.reason {
        parts.push(escape(reason));
    }
    parts.join(", ")
}

/// The HTML status page: rendered here in full (so it reads without JavaScript, and then
/// reloads itself every two seconds), and refreshed in place by [`STATUS_SCRIPT`].
fn render_page(s: &NodeStatus, locks: &LocksOverview, events: &[RecentEvent]) -> String {
    let health = match health(s) {
        Ok(_) => "ok".to_owned(),
        Err(reason) => format!("unavailable: {reason}"),
    };
    let leader = s.leader_id.map_or_else(
        || "none known".to_owned(),
        |id| match &s.leader_client_addr {
            Some(addr) => format!("node {id} ({})", escape(addr)),
            None => format!("node {id}"),
        },
    );
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">\
         <noscript><meta http-equiv=\"refresh\" content=\"2\"></noscript>\
         <title>fencelock node {id}</title>\
         <style>body{{font-family:sans-serif;margin:2em;color:#222}}\
         h2{{margin-top:1.4em;font-size:1.15em}}#error{{color:#b00}}.none{{color:#888}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}\
         th{{background:#f3f3f3}}</style>\
         </head><body>\n<h1 id=\"title\">fencelock node {id}</h1>\n\
         <p><span id=\"state\">{state}</span>, term <span id=\"term\">{term}</span>; \
         health: {health} <span id=\"updated\" class=\"none\"></span> \
         <span id=\"error\"></span></p>\n<table>\n\
         <tr><th>leader</th><td id=\"leader\">{leader}</td></tr>\n\
         <tr><th>last log / committed / applied</th><td id=\"indexes\">{last} / {commit} / {applied}</td></tr>\n\
         <tr><th>sessions</th><td id=\"sessions\">{sessions}</td></tr>\n\
         <tr><th>locks</th><td id=\"locks\">{locks}</td></tr>\n\
         <tr><th>held grants</th><td id=\"held\">{held}</td></tr>\n\
         <tr><th>waiters</th><td id=\"waiters\">{waiters}</td></tr>\n\
         <tr><th>last token</th><td id=\"token\">{token}</td></tr>\n\
         <tr><th>cluster version</th><td id=\"cluster-version\">{cluster_version}</td></tr>\n\
         <tr><th>grants / expired sessions (total)</th><td id=\"totals\">{grants} / {expired}</td></tr>\n\
         </table>\n<h2>members</h2>\n<table>\n\
         <thead><tr><th>id</th><th>role</th><th>peer address</th><th>client address</th></tr></thead>\n\
         <tbody id=\"members\">\n",
        id = s.node_id,
        state = escape(&s.state),
        term = s.term,
        health = escape(&health),
        leader = leader,
        last = s.last_log_index,
        commit = s.commit_index,
        applied = s.applied_index,
        sessions = s.sessions,
        locks = s.locks,
        held = s.held_grants,
        waiters = s.waiters,
        token = s.last_token,
        cluster_version = s.cluster_version,
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
        "</tbody></table>\n<h2>longest queues</h2>\n<table>\n\
         <thead><tr><th>lock</th><th>waiters</th><th>holders</th></tr></thead>\n\
         <tbody id=\"queues\">\n",
    );
    if locks.top_queues.is_empty() {
        html.push_str("<tr><td colspan=\"3\" class=\"none\">none</td></tr>\n");
    }
    for lock in &locks.top_queues {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&lock.name),
            lock.waiters,
            holders_text(lock),
        );
    }
    html.push_str(
        "</tbody></table>\n<h2>longest-held locks</h2>\n<table>\n\
         <thead><tr><th>lock</th><th>held for</th><th>holders</th><th>waiters</th></tr></thead>\n\
         <tbody id=\"longest-held\">\n",
    );
    if locks.longest_held.is_empty() {
        html.push_str("<tr><td colspan=\"4\" class=\"none\">none</td></tr>\n");
    }
    for lock in &locks.longest_held {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&lock.name),
            since_text(lock.held_since_ms, locks.now_ms),
            holders_text(lock),
            lock.waiters,
        );
    }
    html.push_str(
        "</tbody></table>\n<h2>lock-delays in force (granted to nobody)</h2>\n<table>\n\
         <thead><tr><th>lock</th><th>delay left</th><th>lost grant</th></tr></thead>\n\
         <tbody id=\"lock-delays\">\n",
    );
    if locks.lock_delays.is_empty() {
        html.push_str("<tr><td colspan=\"3\" class=\"none\">none</td></tr>\n");
    }
    for delay in &locks.lock_delays {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&delay.name),
            delay_left_text(delay, locks.now_ms),
            lost_grant_text(delay),
        );
    }
    html.push_str(
        "</tbody></table>\n<h2>held locks (first in name order)</h2>\n<table>\n\
         <thead><tr><th>lock</th><th>holders</th><th>waiters</th></tr></thead>\n\
         <tbody id=\"held-locks\">\n",
    );
    if locks.held.is_empty() {
        html.push_str("<tr><td colspan=\"3\" class=\"none\">none</td></tr>\n");
    }
    for lock in &locks.held {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&lock.name),
            holders_text(lock),
            lock.waiters,
        );
    }
    html.push_str(
        "</tbody></table>\n<h2>recent events (newest first)</h2>\n<table>\n\
         <thead><tr><th>index</th><th>event</th><th>details</th></tr></thead>\n\
         <tbody id=\"events\">\n",
    );
    if events.is_empty() {
        html.push_str("<tr><td colspan=\"3\" class=\"none\">none</td></tr>\n");
    }
    for event in events.iter().rev() {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            event.index,
            escape(event.kind),
            event_text(event),
        );
    }
    html.push_str(
        "</tbody></table>\n<p><a href=\"/status\">/status</a> · \
         <a href=\"/status/locks\">/status/locks</a> · \
         <a href=\"/status/events\">/status/events</a> · <a href=\"/metrics\">/metrics</a> · \
         <a href=\"/health\">/health</a></p>\n",
    );
    html.push_str(STATUS_SCRIPT);
    html.push_str("\n</body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::MemberStatus;
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
            disk: crate::status::DiskStatus::default(),
            oldest_grant: crate::status::OldestGrant::default(),
            cluster_version: 1,
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

        // The NO_SPACE alarm makes it unhealthy (it refuses writes), until it clears.
        server.source.0.lock().expect("lock").disk.no_space_alarm = true;
        let (code, text) = get(server.addr, "/health").await;
        assert_eq!(code, 503, "{text}");
        assert!(text.contains("NO_SPACE"), "{text}");
        server.source.0.lock().expect("lock").disk.no_space_alarm = false;
        assert_eq!(get(server.addr, "/health").await.0, 200);
    }

    #[test]
    fn the_page_lists_the_longest_held_locks_and_the_delays_in_force() {
        let now_ms = 1_800_000_000_000;
        let locks = LocksOverview {
            longest_held: vec![LockSummary {
                name: "jobs/<stuck>".into(),
                holders: vec![(
                    fencelock_core::SessionId(7),
                    fencelock_core::FencingToken(42),
                )],
                waiters: 3,
                held_since_ms: Some(now_ms - 192_000),
            }],
            lock_delays: vec![DelayInForce {
                name: "printers/3".into(),
                delay_ms: 10_000,
                started_at_ms: now_ms - 4_000,
                token: 41,
                session: 7,
            }],
            now_ms,
            ..LocksOverview::default()
        };
        let page = render_page(&leader_status(), &locks, &[]);
        assert!(page.contains("<h2>longest-held locks</h2>"), "{page}");
        assert!(
            page.contains(
                "<td>jobs/&lt;stuck&gt;</td><td>3m12s</td><td>session 7 token 42</td><td>3</td>"
            ),
            "{page}"
        );
        assert!(
            page.contains("<td>printers/3</td><td>about 6s of 10s</td><td>session 7 token 41</td>"),
            "{page}"
        );
    }

    #[tokio::test]
    async fn status_metrics_and_page() {
        let mut status = leader_status();
        status.members[1].peer_addr = "<script>".into();
        status.cluster_version = 2;
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
        assert!(
            text.contains("fencelock_cluster_version{node=\"1\"} 2"),
            "{text}"
        );

        let (code, text) = get(server.addr, "/").await;
        assert_eq!(code, 200);
        assert!(text.contains("<td id=\"cluster-version\">2</td>"), "{text}");
        assert!(text.contains("http-equiv=\"refresh\""));
        assert!(text.contains("&lt;script&gt;"));
        // The page's own script is the only one: the hostile address is escaped.
        assert_eq!(text.matches("<script>").count(), 1, "{text}");
        assert!(text.contains("setInterval(refresh, 2000)"));

        let (code, text) = get(server.addr, "/status/locks").await;
        assert_eq!(code, 200);
        let parsed: LocksOverview = serde_json::from_str(body(&text)).expect("json");
        assert_eq!(parsed, LocksOverview::default());
        let (code, text) = get(server.addr, "/status/events").await;
        assert_eq!(code, 200);
        assert_eq!(body(&text), "[]");

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
