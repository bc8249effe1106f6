//! The server's fixed limits in one place: each bounds memory, work or time that a
//! client or a peer could otherwise make grow without end. Limits an operator tunes live
//! in [`crate::config::ServerConfig`]; the replicated ones in `fencelock_core::Limits`.

use std::time::Duration;

// The admin HTTP port (`crate::admin`).

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

// The status page (`crate::admin`, `crate::events`).

/// Locks with the longest queues shown on the status page.
pub const STATUS_TOP_QUEUES: usize = 10;
/// Held locks shown on the status page.
pub const STATUS_HELD_SAMPLE: usize = 20;
/// The status page looks for long queues among at most this many locks (in name order),
/// so one page view costs at most this much work under the state's read lock.
pub const STATUS_LOCK_SCAN: usize = 100_000;
/// How many applied events the hub remembers for the status page.
pub const RECENT_EVENTS: usize = 50;
