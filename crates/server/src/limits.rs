//! The server's fixed limits, and the defaults of the tunable ones, in one place: each
//! bounds memory, work or time that a client, a peer or a full disk could otherwise make
//! grow without end. An operator tunes the configurable ones through
//! [`crate::config::ServerConfig`] (each component's options struct takes its default
//! from here); the replicated limits are `fencelock_core::Limits`. Relations between
//! them are checked at compile time at the end of this file.

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

// The lock API (`crate::api::locks`).

/// The longest finite wait an `Acquire` may ask for (one day): a longer deadline is a
/// client's mistake, and a waiter's deadline timer must not outlive any sane lease.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);
/// Keepalives of one stream queued together on the read barrier at most, so one busy
/// stream's round carries a bounded batch.
pub const KEEPALIVE_BATCH: usize = 4_096;

/// Calls that wait at once for their node to catch up with the leader before an unknown
/// bearer token or user is refused (`auth.rs`); more are refused at once. Each wait is a
/// read-index call to the leader (its quorum rounds are shared), bounded by
/// `request_timeout`: this bounds what a flood of made-up tokens can cost.
pub const AUTH_CATCH_UPS_IN_FLIGHT: usize = 64;
/// Keepalives of one stream waiting for their rounds at most; reading pauses beyond, so
/// a client that sends faster than quorum rounds end cannot queue without end.
pub const KEEPALIVE_QUEUED: usize = 4 * KEEPALIVE_BATCH;

// The Raft log (`crate::store::log`): defaults of `LogStoreOptions`.

/// Newest log entries kept decoded for replication by default: a follower a little
/// behind is served from memory instead of the database.
pub const DEFAULT_LOG_CACHE_ENTRIES: usize = 256;
/// Encoded bytes of those cached entries by default, so large entries cannot fill memory.
pub const DEFAULT_LOG_CACHE_BYTES: usize = 4 << 20;
/// redb's page cache for the log file by default: the log's working set, not the disk.
pub const DEFAULT_LOG_PAGE_CACHE_BYTES: usize = 16 << 20;
/// The write-ahead file by default: big enough that checkpoints into redb are rare,
/// small enough that one takes little time and disk.
pub const DEFAULT_WAL_BYTES: u64 = 4 << 20;
/// Appends synced by openraft's core task itself by default, at most (bigger ones go to
/// the blocking pool, so the core task never waits long on one sync).
pub const DEFAULT_INLINE_APPEND_MAX_BYTES: u64 = 64 << 10;
/// Free space kept beyond an append's own bytes before the log database is written, for
/// redb's own pages: a write that would fill the disk is refused before it starts.
pub const LOG_ROOM_MARGIN_BYTES: u64 = 1 << 20;
/// Problems a log scan lists (it counts them all), so a badly damaged file yields a
/// readable report.
pub const LISTED_PROBLEMS_MAX: usize = 100;

// The Raft links (`crate::raft::link`).

/// Largest Raft message between nodes by default (a snapshot chunk plus framing, or a
/// batch of entries): `max_peer_message_bytes`.
pub const DEFAULT_MAX_PEER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Links from peers served at once by default: `max_peer_links`.
pub const DEFAULT_MAX_PEER_LINKS: usize = 256;
/// How long dialing a peer may take, so a dead peer costs a heartbeat, not a hang.
pub const LINK_CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Idle links kept per peer address (more are closed after use): enough for the
/// requests one peer has in flight, without a socket per past burst.
pub const MAX_IDLE_LINKS_PER_PEER: usize = 4;

// TLS (`crate::tls`, `crate::raft::link`).

/// How long a TLS handshake on a listener (or a link's first bytes) may take before the
/// connection is dropped, so a silent client cannot hold a connection slot.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

// The data disk (`crate::space`).

/// Free bytes below which the NO_SPACE alarm is up, by default (`disk_reserve_bytes`):
/// room for a checkpoint of the default write-ahead file into the log database and a
/// few snapshots of a modest state.
pub const DEFAULT_DISK_RESERVE_BYTES: u64 = 256 << 20;
/// How often the free space is read by default (`disk_check_interval`).
pub const DEFAULT_DISK_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// The first wait before a write refused for lack of space is tried again; it doubles
/// up to [`SPACE_RETRY_WAIT_MAX`], so a freed disk is noticed soon.
pub const SPACE_RETRY_WAIT_FIRST: Duration = Duration::from_millis(20);
/// The longest wait between two tries of a write refused for lack of space, so a
/// waiting write does not spin.
pub const SPACE_RETRY_WAIT_MAX: Duration = Duration::from_secs(1);
/// How often a write still waiting for space is logged again, so the log says why the
/// node stalls without filling with the same line.
pub const SPACE_STILL_WAITING_LOG_EVERY: Duration = Duration::from_secs(30);

// Relations the code relies on.
const _: () = {
    // A keepalive batch fits in what a stream may queue.
    assert!(KEEPALIVE_BATCH <= KEEPALIVE_QUEUED);
    // An inline append is one write into the write-ahead file.
    assert!(DEFAULT_INLINE_APPEND_MAX_BYTES <= DEFAULT_WAL_BYTES);
    // The reserve holds a checkpoint of the write-ahead file (about twice its size).
    assert!(DEFAULT_DISK_RESERVE_BYTES >= 2 * DEFAULT_WAL_BYTES + LOG_ROOM_MARGIN_BYTES);
    // The backoff grows, and a still-waiting write is logged less often than retried.
    assert!(SPACE_RETRY_WAIT_FIRST.as_millis() <= SPACE_RETRY_WAIT_MAX.as_millis());
    assert!(SPACE_RETRY_WAIT_MAX.as_millis() < SPACE_STILL_WAITING_LOG_EVERY.as_millis());
    // Within the range the configuration accepts for `max_peer_message_bytes`.
    assert!(DEFAULT_MAX_PEER_MESSAGE_BYTES >= 64 * 1024);
    assert!(DEFAULT_MAX_PEER_MESSAGE_BYTES <= 1 << 30);
};
