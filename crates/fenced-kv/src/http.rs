//! The HTTP routes ([`router`]) and the connection handling ([`serve`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::store::{FencedKv, FencedKvOptions, KvError};
use crate::types::{ErrorBody, Health, WriteOp, WriteOutcome};

/// The header carrying the writer's fencing token, a decimal `u64`.
pub const TOKEN_HEADER: &str = "Fencing-Token";
/// The header carrying the name of the lock the token was granted under.
pub const LOCK_HEADER: &str = "Fencing-Lock";
/// Longest key and lock name accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 1024;
/// A request's headers must be read completely within this time, or the connection is
/// closed (this also bounds how long an idle keep-alive connection is kept).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers) accepted, in bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Connections served at once; further clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a graceful stop waits for open connections to finish.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// `GET /log` page size when `limit` is not given.
pub const DEFAULT_LOG_LIMIT: usize = 1000;

/// The service's routes over `state`, without connection handling (see [`serve`]).
///
/// - `PUT /kv/{key}`: replace the value (headers [`TOKEN_HEADER`], [`LOCK_HEADER`]).
/// - `POST /kv/{key}/append`: append the body to the value (same headers).
/// - `GET /kv/{key}`: the value, its highest token and version.
/// - `GET /log?since=&limit=`: a page of the decision log.
/// - `GET /health`.
pub fn router(state: Arc<FencedKv>) -> Router {
    let max_body = state.options().max_body;
    Router::new()
        .route("/health", get(health))
        .route("/kv/{key}", get(read).put(put))
        .route("/kv/{key}/append", post(append))
        .route("/log", get(log))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(
            max_body,
            refuse_declared_large_bodies,
        ))
        .with_state(state)
}

/// Opens a [`FencedKv`] with `options` and serves it on `listener` until `shutdown`
/// completes (see [`serve_kv`]).
///
/// # Errors
/// If the store cannot be opened, or the listener's address cannot be read.
pub async fn serve(
    listener: TcpListener,
    options: FencedKvOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let kv = tokio::task::spawn_blocking(move || FencedKv::open(options))
        .await
        .map_err(std::io::Error::other)?
        .map_err(std::io::Error::other)?;
    serve_kv(listener, Arc::new(kv), shutdown).await
}

/// Serves `kv` on `listener` until `shutdown` completes, then finishes the requests in
/// flight (for at most [`SHUTDOWN_GRACE`]) and returns.
///
/// Hostile input stays cheap: headers must arrive within [`HEADER_READ_TIMEOUT`] and fit
/// in [`MAX_HEADER_BYTES`], bodies over the configured limit get `413`, at most
/// [`MAX_CONNECTIONS`] connections are served at once, and no connection or accept error
/// ends the server.
///
/// # Errors
/// Only if the listener's local address cannot be read.
pub async fn serve_kv(
    listener: TcpListener,
    kv: Arc<FencedKv>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let service = TowerToHyperService::new(router(kv));
    let (stop_tx, stop_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES);
    tracing::info!(%local, "fenced-kv serving");

    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&slots).acquire_owned() => {
                permit.expect("the connection semaphore is never closed")
            }
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let connection = http.serve_connection(TokioIo::new(stream), service.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(connection);
            let stopping = async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            };
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stopping => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }

    drop(listener);
    let _ = stop_tx.send(true);
    let all = u32::try_from(MAX_CONNECTIONS).expect("the connection limit fits a u32");
    if tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::debug!("connections still open after the grace period; leaving them");
    }
    tracing::info!(%local, "fenced-kv stopped");
    Ok(())
}

/// An error answer: an [`ErrorBody`] with a status.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Close the connection after answering (the body was not read).
    close: bool,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            close: false,
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn body_too_large(max_body: usize) -> Self {
        Self {
            close: true,
            ..Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body over {max_body} bytes"),
            )
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            code: self.code.to_owned(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// Refuses a body whose declared length is over the limit before reading it.
async fn refuse_declared_large_bodies(
    State(max_body): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > max_body as u64) {
        return ApiError::body_too_large(max_body).into_response();
    }
    next.run(request).await
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

async fn health(State(kv): State<Arc<FencedKv>>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        fenced: !kv.options().unfenced,
        backend: kv.backend_name().into(),
        decisions: kv.decision_count(),
    })
}

fn key_of(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(key) = path.map_err(|rejection| {
        ApiError::bad_request(
            "invalid_key",
            format!("invalid key: {}", rejection.body_text()),
        )
    })?;
    if key.is_empty() || key.len() > MAX_NAME_BYTES {
        return Err(ApiError::bad_request(
            "invalid_key",
            format!("a key is 1 to {MAX_NAME_BYTES} bytes"),
        ));
    }
    Ok(key)
}

/// The writer's token and lock, from the headers.
fn fencing_headers(headers: &HeaderMap) -> Result<(u64, String), ApiError> {
    let header_text = |name: &str| -> Result<&str, ApiError> {
        let value = headers.get(name).ok_or_else(|| {
            ApiError::bad_request("missing_header", format!("missing header {name}"))
        })?;
        value.to_str().map(str::trim).map_err(|_| {
            ApiError::bad_request(
                "invalid_header",
                format!("header {name} is not visible ASCII"),
            )
        })
    };
    let token_text = header_text(TOKEN_HEADER)?;
    let token = if token_text.is_empty() || !token_text.bytes().all(|byte| byte.is_ascii_digit()) {
        None
    } else {
        token_text.parse::<u64>().ok()
    };
    let token = token.ok_or_else(|| {
        ApiError::bad_request(
            "invalid_header",
            format!("header {TOKEN_HEADER} must be a decimal unsigned 64-bit integer"),
        )
    })?;
    let lock = header_text(LOCK_HEADER)?;
    if lock.is_empty() || lock.len() > MAX_NAME_BYTES {
        return Err(ApiError::bad_request(
            "invalid_header",
            format!("header {LOCK_HEADER} must be 1 to {MAX_NAME_BYTES} bytes"),
        ));
    }
    Ok((token, lock.to_owned()))
}

fn body_of(body: Result<Bytes, BytesRejection>, max_body: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::body_too_large(max_body)
        } else {
            ApiError::new(
                rejection.status(),
                "bad_body",
                format!("cannot read the body: {}", rejection.body_text()),
            )
        }
    })
}

fn kv_error(error: &KvError) -> ApiError {
    tracing::error!(%error, "storage failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "storage",
        error.to_string(),
    )
}

fn internal(join: &tokio::task::JoinError) -> ApiError {
    tracing::error!(error = %join, "request task failed");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the request failed inside the service",
    )
}

async fn write(
    op: WriteOp,
    kv: Arc<FencedKv>,
    path: Result<Path<String>, PathRejection>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let key = key_of(path)?;
    let (token, lock) = fencing_headers(headers)?;
    let body = body_of(body, kv.options().max_body)?;
    let outcome = tokio::task::spawn_blocking(move || kv.write(op, &key, &lock, token, &body))
        .await
        .map_err(|join| internal(&join))?
        .map_err(|error| kv_error(&error))?;
    Ok(match outcome {
        WriteOutcome::Admitted(admitted) => (StatusCode::OK, Json(admitted)).into_response(),
        WriteOutcome::Refused(refused) => (StatusCode::CONFLICT, Json(refused)).into_response(),
    })
}

async fn put(
    State(kv): State<Arc<FencedKv>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    write(WriteOp::Put, kv, path, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn append(
    State(kv): State<Arc<FencedKv>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    write(WriteOp::Append, kv, path, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn read(
    State(kv): State<Arc<FencedKv>>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let key = match key_of(path) {
        Ok(key) => key,
        Err(error) => return error.into_response(),
    };
    let result = tokio::task::spawn_blocking({
        let key = key.clone();
        move || kv.get(&key)
    })
    .await;
    match result {
        Ok(Ok(Some(value))) => Json(value).into_response(),
        Ok(Ok(None)) => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no value for key {key:?}"),
        )
        .into_response(),
        Ok(Err(error)) => kv_error(&error).into_response(),
        Err(join) => internal(&join).into_response(),
    }
}

/// The query of `GET /log`.
#[derive(Debug, Deserialize)]
struct LogQuery {
    #[serde(default)]
    since: u64,
    limit: Option<usize>,
}

async fn log(
    State(kv): State<Arc<FencedKv>>,
    query: Result<Query<LogQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(query) => query,
        Err(rejection) => {
            return ApiError::bad_request(
                "invalid_query",
                format!(
                    "since and limit must be unsigned integers: {}",
                    rejection.body_text()
                ),
            )
            .into_response();
        }
    };
    let limit = query.limit.unwrap_or(DEFAULT_LOG_LIMIT);
    match tokio::task::spawn_blocking(move || kv.log_page(query.since, limit)).await {
        Ok(page) => Json(page).into_response(),
        Err(join) => internal(&join).into_response(),
    }
}
