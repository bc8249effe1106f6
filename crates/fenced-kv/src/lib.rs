//! The example fenced service of fencelock: a small key-value store over HTTP/1.1 that
//! a lock holder writes through, protected by fencing tokens.
//!
//! Every key is a fenced resource (see `fencelock-fence`): a write carries the holder's
//! fencing token and the name of the lock it was granted under, and is admitted only if
//! the token is at least the highest admitted for that key. The check, the write and the
//! recorded token are one atomic step. Every decision, admitted or refused, goes into a
//! decision log that a checker can read back in full.
//!
//! It serves the `fencelock demo` (the paused-client story) and the fault-injection
//! harness, which checks from the log that no lower token was admitted after a higher
//! one for a key, and that each key's final value is the fold of its admitted writes.
//!
//! # Endpoints
//!
//! | Request | Answer |
//! |---|---|
//! | `PUT /kv/{key}` + headers `Fencing-Token: <u64>`, `Fencing-Lock: <lock>`, body | `200` [`AdmittedWrite`]; `409` [`RefusedWrite`] (`"stale token"` or `"wrong lock"`) |
//! | `POST /kv/{key}/append`, same headers, body | as `PUT`; the body is appended to the value |
//! | `GET /kv/{key}` | `200` [`KvValue`] (value, highest token, version); `404` |
//! | `GET /log?since=<seq>&limit=<n>` | `200` [`LogPage`]: decisions with `seq >= since` |
//! | `GET /health` | `200` [`Health`] |
//!
//! Errors are JSON [`ErrorBody`]s: `400` for a missing or invalid header, key or query,
//! `413` for a body over the limit (default [`DEFAULT_MAX_BODY`]), `404`, `405`, `500`.
//! Keys are one path segment (percent-encode `/`; [`FencedKvClient`] does).
//!
//! An equal token is admitted (the same holder writing again). The first write to a key
//! binds it to the lock it was presented under; a token presented under another lock is
//! refused with `"wrong lock"`.
//!
//! # The decision log
//!
//! Every admitted and refused write gets a [`LogEntry`] with a sequence number (from 1,
//! in the order decided), the key, lock and token, the decision, the highest token seen
//! before it, the body's length and [`body_hash`], and for admitted writes the key's new
//! version and the length and hash of its new value. The newest
//! [`FencedKvOptions::log_capacity`] entries (default [`DEFAULT_LOG_CAPACITY`]) are kept
//! in memory; older ones are dropped and [`LogPage::dropped`] counts them. With
//! [`FencedKvOptions::log_file`] every entry is also appended to a JSON-lines file, which
//! a restarted service continues. Decisions are also logged with `tracing`: admitted at
//! `info`, refused at `warn`.
//!
//! # Backends
//!
//! In memory ([`fencelock_fence::MemoryFence`]) by default; with
//! [`FencedKvOptions::data`], a redb file ([`fencelock_fence::DurableFence`]) where each
//! value and its key's token commit in one transaction and survive restarts. Values live
//! in the fence's resource table, written by the fenced operation of
//! [`Fence::admit`](fencelock_fence::Fence::admit).
//!
//! # Unfenced mode: only to prove the checker can fail
//!
//! [`FencedKvOptions::unfenced`] (`--unfenced`) admits **every** write without comparing
//! its token; the token is still logged (with `fenced: false`). It exists only for the
//! fault-injection harness's control run, to show that its checker does detect a stale
//! write when nothing stops one. It protects nothing; never use it otherwise, and do not
//! open a data file written in unfenced mode in fenced mode (its keys carry no fence).
//!
//! # Example
//!
//! ```
//! use fencelock_fenced_kv::{FencedKvClient, FencedKvOptions, WriteOutcome, serve};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let client = FencedKvClient::new(listener.local_addr()?);
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(serve(listener, FencedKvOptions::default(), async {
//!     let _ = stopped.await;
//! }));
//!
//! client.put("balance", "locks/balance", 8, "500").await?;
//! // A paused holder of the older grant wakes up and writes: refused.
//! let stale = client.put("balance", "locks/balance", 7, "80").await?;
//! assert!(matches!(stale, WriteOutcome::Refused(ref r) if r.highest_seen == Some(8)));
//! assert_eq!(client.get("balance").await?.unwrap().value, b"500");
//!
//! let _ = stop.send(());
//! server.await??;
//! # Ok(())
//! # }
//! ```

mod client;
mod http;
mod log;
mod store;
mod types;

pub use client::{ClientError, DEFAULT_CLIENT_TIMEOUT, FencedKvClient, MAX_RESPONSE_BYTES};
pub use http::{
    DEFAULT_LOG_LIMIT, HEADER_READ_TIMEOUT, LOCK_HEADER, MAX_CONNECTIONS, MAX_HEADER_BYTES,
    MAX_NAME_BYTES, SHUTDOWN_GRACE, TOKEN_HEADER, router, serve, serve_kv,
};
pub use log::MAX_LOG_PAGE;
pub use store::{
    DEFAULT_LOG_CAPACITY, DEFAULT_MAX_BODY, FencedKv, FencedKvOptions, KvError, OpenError,
};
pub use types::{
    AdmittedWrite, ErrorBody, Health, KvValue, LogEntry, LogPage, RefusalReason, RefusedWrite,
    WriteOp, WriteOutcome,
};

/// The hash of a body or value in the decision log: 64-bit FNV-1a, as 16 lowercase
/// hexadecimal digits. Stable across versions and platforms, so a checker can compute it
/// for the bodies it sent; not cryptographic.
#[must_use]
pub fn body_hash(bytes: &[u8]) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = bytes.iter().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
    });
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn body_hash_is_fnv1a_64() {
        assert_eq!(super::body_hash(b""), "cbf29ce484222325");
        assert_eq!(super::body_hash(b"a"), "af63dc4c8601ec8c");
    }
}
