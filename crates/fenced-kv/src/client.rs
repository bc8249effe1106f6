//! [`FencedKvClient`]: a small typed HTTP/1.1 client of the service.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::de::DeserializeOwned;

use crate::http::{LOCK_HEADER, TOKEN_HEADER};
use crate::types::{ErrorBody, Health, KvValue, LogPage, WriteOp, WriteOutcome};

/// Default time a request may take, connection included.
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body the client reads, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Why a request did not get a decision or an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL is not `http://host:port`.
    #[error("invalid base URL {0:?}: expected http://host:port")]
    InvalidUrl(String),
    /// The request could not be sent or its answer not received (connection refused,
    /// reset, ...). The write may or may not have been decided.
    #[error("request failed: {0}")]
    Transport(String),
    /// No answer within the timeout. The write may or may not have been decided.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The service answered with an error status (400, 404, 413, 500, ...).
    #[error("service answered {status}: {message} ({code})")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The service's error code (see [`ErrorBody::code`]), or empty.
        code: String,
        /// The service's message, or the raw body.
        message: String,
    },
    /// The answer's body is not what the service sends.
    #[error("cannot decode the answer: {0}")]
    Decode(String),
}

/// A typed client of the fenced key-value service, over a pool of HTTP/1.1 connections.
/// Cheap to clone; clones share the pool.
#[derive(Clone, Debug)]
pub struct FencedKvClient {
    base: String,
    client: Client<HttpConnector, Body>,
    timeout: Duration,
}

impl FencedKvClient {
    /// A client of the service listening on `address`.
    #[must_use]
    pub fn new(address: SocketAddr) -> Self {
        Self::with_base(format!("http://{address}"))
    }

    /// A client of the service at `base`, such as `http://127.0.0.1:7301` (a trailing
    /// slash is ignored).
    ///
    /// # Errors
    /// [`ClientError::InvalidUrl`] if `base` is not `http://host[:port]`.
    pub fn from_url(base: &str) -> Result<Self, ClientError> {
        let base = base.trim_end_matches('/');
        let authority = base
            .strip_prefix("http://")
            .ok_or_else(|| ClientError::InvalidUrl(base.to_owned()))?;
        if authority.is_empty() || authority.contains('/') {
            return Err(ClientError::InvalidUrl(base.to_owned()));
        }
        Ok(Self::with_base(base.to_owned()))
    }

    fn with_base(base: String) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(5))
            .build_http();
        Self {
            base,
            client,
            timeout: DEFAULT_CLIENT_TIMEOUT,
        }
    }

    /// The same client with another per-request timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The base URL, such as `http://127.0.0.1:7301`.
    #[must_use]
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `PUT /kv/{key}`: replaces the value of `key` with `body` if `token` (granted under
    /// `lock`) is not stale. A refusal is `Ok(WriteOutcome::Refused)`.
    ///
    /// # Errors
    /// [`ClientError`] when no decision was received.
    pub async fn put(
        &self,
        key: &str,
        lock: &str,
        token: u64,
        body: impl Into<Bytes>,
    ) -> Result<WriteOutcome, ClientError> {
        self.write(WriteOp::Put, key, lock, token, body.into())
            .await
    }

    /// `POST /kv/{key}/append`: appends `body` to the value of `key` if `token` (granted
    /// under `lock`) is not stale. A refusal is `Ok(WriteOutcome::Refused)`.
    ///
    /// # Errors
    /// [`ClientError`] when no decision was received.
    pub async fn append(
        &self,
        key: &str,
        lock: &str,
        token: u64,
        body: impl Into<Bytes>,
    ) -> Result<WriteOutcome, ClientError> {
        self.write(WriteOp::Append, key, lock, token, body.into())
            .await
    }

    /// Sends one write.
    ///
    /// # Errors
    /// [`ClientError`] when no decision was received.
    pub async fn write(
        &self,
        op: WriteOp,
        key: &str,
        lock: &str,
        token: u64,
        body: Bytes,
    ) -> Result<WriteOutcome, ClientError> {
        let (method, path) = match op {
            WriteOp::Put => (Method::PUT, format!("/kv/{}", encode_segment(key))),
            WriteOp::Append => (Method::POST, format!("/kv/{}/append", encode_segment(key))),
        };
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(TOKEN_HEADER, token.to_string())
            .header(LOCK_HEADER, lock)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(Body::from(body))
            .map_err(|error| ClientError::Transport(error.to_string()))?;
        let (status, bytes) = self.send(request).await?;
        match status {
            StatusCode::OK => decode(&bytes).map(WriteOutcome::Admitted),
            StatusCode::CONFLICT => decode(&bytes).map(WriteOutcome::Refused),
            status => Err(status_error(status, &bytes)),
        }
    }

    /// `GET /kv/{key}`: the value of `key`, or `None` if it was never written.
    ///
    /// # Errors
    /// [`ClientError`] when no answer was received.
    pub async fn get(&self, key: &str) -> Result<Option<KvValue>, ClientError> {
        let (status, bytes) = self
            .send_get(&format!("/kv/{}", encode_segment(key)))
            .await?;
        match status {
            StatusCode::OK => decode(&bytes).map(Some),
            StatusCode::NOT_FOUND => Ok(None),
            status => Err(status_error(status, &bytes)),
        }
    }

    /// `GET /log?since=&limit=`: the decision log's entries with `seq >= since`, at most
    /// `limit` of them (the service caps pages at
    /// [`MAX_LOG_PAGE`](crate::MAX_LOG_PAGE)).
    ///
    /// # Errors
    /// [`ClientError`] when no answer was received.
    pub async fn log(&self, since: u64, limit: usize) -> Result<LogPage, ClientError> {
        let (status, bytes) = self
            .send_get(&format!("/log?since={since}&limit={limit}"))
            .await?;
        match status {
            StatusCode::OK => decode(&bytes),
            status => Err(status_error(status, &bytes)),
        }
    }

    /// The whole decision log still kept by the service, from `since` on, page by page.
    /// Returns the entries and how many entries asked for were dropped by the service.
    ///
    /// # Errors
    /// [`ClientError`] when a page was not received.
    pub async fn log_all(
        &self,
        since: u64,
    ) -> Result<(Vec<crate::types::LogEntry>, u64), ClientError> {
        let mut entries = Vec::new();
        let mut since = since;
        let mut missed = None;
        loop {
            let page = self.log(since, crate::MAX_LOG_PAGE).await?;
            missed.get_or_insert(page.missed);
            let done = page.entries.is_empty() || page.next >= page.next_seq;
            since = page.next;
            entries.extend(page.entries);
            if done {
                return Ok((entries, missed.unwrap_or(0)));
            }
        }
    }

    /// `GET /health`.
    ///
    /// # Errors
    /// [`ClientError`] when no healthy answer was received.
    pub async fn health(&self) -> Result<Health, ClientError> {
        let (status, bytes) = self.send_get("/health").await?;
        match status {
            StatusCode::OK => decode(&bytes),
            status => Err(status_error(status, &bytes)),
        }
    }

    async fn send_get(&self, path: &str) -> Result<(StatusCode, Bytes), ClientError> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(format!("{}{path}", self.base))
            .body(Body::empty())
            .map_err(|error| ClientError::Transport(error.to_string()))?;
        self.send(request).await
    }

    async fn send(&self, request: Request<Body>) -> Result<(StatusCode, Bytes), ClientError> {
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| ClientError::Transport(error_chain(&error)))?;
            let status = response.status();
            let bytes = axum::body::to_bytes(Body::new(response.into_body()), MAX_RESPONSE_BYTES)
                .await
                .map_err(|error| ClientError::Transport(error_chain(&error)))?;
            Ok((status, bytes))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))?
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(bytes).map_err(|error| ClientError::Decode(error.to_string()))
}

fn status_error(status: StatusCode, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => ClientError::Status {
            status: status.as_u16(),
            code: body.code,
            message: body.error,
        },
        Err(_) => ClientError::Status {
            status: status.as_u16(),
            code: String::new(),
            message: String::from_utf8_lossy(bytes).into_owned(),
        },
    }
}

/// Percent-encodes everything but the unreserved characters, for one path segment.
fn encode_segment(segment: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("a-b_c.d~1"), "a-b_c.d~1");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }

    #[test]
    fn base_urls_are_checked() {
        assert!(FencedKvClient::from_url("http://127.0.0.1:7301/").is_ok());
        assert!(FencedKvClient::from_url("https://x").is_err());
        assert!(FencedKvClient::from_url("http://").is_err());
        assert!(FencedKvClient::from_url("http://a/b").is_err());
    }
}
