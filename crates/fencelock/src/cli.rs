//! The command line: clap types for `fencelock` and its subcommands, and how `serve`'s
//! flags, environment variables and config file become a [`ServerConfig`].
//!
//! Precedence for `serve`: a flag (or its `FENCELOCK_*` environment variable) beats the
//! `--config` file, which beats the built-in defaults.
//!
//! # The config file
//!
//! TOML whose keys are [`ServerConfig`]'s field names, those of its groups (network,
//! raft, storage, write path, API limits) at the top level too; every key is optional and
//! an unknown key is an error. Durations are written in milliseconds. The complete list,
//! with the defaults, is `crates/fencelock/fencelock.example.toml`:
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `node_id` | this node's Raft id (>= 1) | `1` |
//! | `listen` | client gRPC listener | `"127.0.0.1:7001"` |
//! | `peer_listen` | peer (Raft) listener | `"127.0.0.1:7101"` |
//! | `peer_advertise` | peer address given to other nodes | `peer_listen` |
//! | `client_advertise` | client address given to clients | `listen` |
//! | `admin_listen` | admin HTTP listener (omit the key for the default; see `--no-admin`) | `"127.0.0.1:7201"` |
//! | `admin_tls` | the admin listener speaks TLS with `tls.cert`/`tls.key` (client certificates of `tls.client_ca` when set) | `false` |
//! | `metrics_open` | with auth on, `/metrics` stays open to anyone | `false` |
//! | `metrics_token_file` | a file holding a bearer token (>= 32 characters) that may read `/metrics` with auth on | none |
//! | `data_dir` | Raft log and snapshots | `"fencelock-data"` |
//! | `bootstrap` | `"Join"`, or `{ Members = { 1 = "host:port", ... } }` (empty: single node) | single node |
//! | `heartbeat_interval` | Raft heartbeat, ms | `50` |
//! | `election_timeout` | Raft election timeout (lower bound), ms | `300` |
//! | `snapshot_every_entries` | applied entries between snapshots | `10000` |
//! | `log_entries_kept_after_snapshot` | log kept behind a snapshot | `5000` |
//! | `log_page_cache_bytes` | redb's page cache for the Raft log file | `16777216` |
//! | `worker_threads` | threads of the node's async runtime (0: one per core) | `0` |
//! | `log_wal_bytes` | size of the Raft log's write-ahead file (0: none) | `4194304` |
//! | `disk_reserve_bytes` | below this many free bytes on the data disk the NO_SPACE alarm refuses writes (0: only a refused write raises it) | `268435456` |
//! | `disk_check_interval` | how often the free space is read, ms | `1000` |
//! | `log_inline_append_max_bytes` | appends up to this size are synced by Raft's own task, not the blocking pool (0: never) | `65536` |
//! | `log_cache_entries`, `log_cache_bytes` | newest log entries kept decoded for replication | `256`, `4194304` |
//! | `max_batch_commands` | commands per Raft entry | `1024` |
//! | `max_queued_commands` | commands queued for the proposer | `100000` |
//! | `max_inflight_entries` | Raft entries proposed and not yet committed (write pipeline depth) | `1` |
//! | `waiting_acquire_delay` | how long an acquire that will queue may wait to share the next write's Raft entry, ms (0: never) | `2` |
//! | `expiry_tick` | how often the leader looks for expired sessions, ms | `50` |
//! | `request_timeout` | how long a request may wait for Raft, ms | `5000` |
//! | `max_message_bytes` | largest client gRPC message | `65536` |
//! | `max_list_page` | largest `List` page | `1000` |
//! | `max_watchers` | open watch streams | `10000` |
//! | `max_remembered_requests` | answers of admin mutations remembered by request id, so a retry acts once | `10000` |
//! | `watch_buffer` | events buffered per watcher | `1024` |
//! | `watch_history_events`, `watch_history_bytes` | lock events kept for watches that start or resume at a revision (older start: `COMPACTED`) | `10000`, `16777216` |
//! | `max_keepalive_streams` | live keepalive streams | `10000` |
//! | `max_peer_links` | Raft links from peers served at once | `256` |
//! | `max_peer_message_bytes` | largest Raft message between nodes (same on every node) | `67108864` |
//! | `metrics_name_depth` | name segments (split at `/`) labelling the hold/wait-time histograms | `1` |
//! | `metrics_max_name_prefixes` | distinct labels of those histograms (more share `(other)`) | `1000` |
//! | `join_via` | client addresses of members to join through (needs `bootstrap = "Join"`) | none |
//! | `join_token_file` | bearer token file for the join calls | none |
//! | `join_timeout` | how long to try joining, ms (0: forever) | `0` |
//! | `[limits]` | the replicated limits (all ten keys must be given when the table is) | see the example |
//! | `[primitive_limits]` | the replicated limits of semaphores, lock-delays, multi-locks and reentrancy (all four keys) | see the example |
//! | `[tls]` | TLS, PEM file paths (see [`TlsConfig`]; omit the table for plaintext): | none |
//! | `tls.cert`, `tls.key` | the client listener's certificate and key: TLS only, plaintext refused | none |
//! | `tls.client_ca` | clients must present a certificate of this CA (mutual TLS) | none |
//! | `tls.peer_ca` | peer traffic in mutual TLS: every peer's certificate must chain to it | none |
//! | `tls.peer_cert`, `tls.peer_key` | this node's certificate on peer traffic | `tls.cert`, `tls.key` |
//! | `tls.server_name` | the name checked in other nodes' certificates when calling them | each peer address's host |

use anyhow::{Context, bail};
use clap::builder::BoolishValueParser;
use clap::{Args, Parser, Subcommand};
use fencelock_server::config::{Bootstrap, ServerConfig, TlsConfig};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// `fencelock`: a distributed lock service with fencing tokens.
#[derive(Debug, Parser)]
#[command(
    name = "fencelock",
    version,
    about,
    long_about = None,
    after_help = crate::exit::HELP
)]
pub struct Cli {
    /// Log filter, e.g. `debug` or `info,fencelock_server=debug` (default: `RUST_LOG`,
    /// else `info,openraft=warn`).
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log line format on stderr: `text` for people, `json` (one JSON object a line)
    /// for log shippers.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        env = "FENCELOCK_LOG_FORMAT",
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// The client commands' options (endpoints, output format, timeout).
    #[command(flatten)]
    pub client: crate::client_cmd::ClientOpts,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a server node (with no flags: a single-node cluster on 127.0.0.1 with its
    /// data in ./fencelock-data).
    Serve(Box<ServeArgs>),
    /// Make a throw-away CA and certificates for a local TLS cluster and its clients:
    /// `ca.pem`, `node-ID.pem` and `node-ID.key` for each of --nodes, `client-NAME.pem`
    /// and `client-NAME.key` for each of --clients. Prints the files written.
    Certs(crate::certs::CertsArgs),
    /// Verify a data directory offline without changing it: every log entry's checksum,
    /// the vote and committed records, every snapshot file. Exit 0 when clean, 1 when
    /// problems are found, 2 on a usage error.
    CheckData(crate::check_data::CheckDataArgs),
    /// Backups: `save FILE` from the live cluster (needs `admin`), `inspect FILE`,
    /// `restore FILE --data-dir DIR --id N --peers ...` into a new cluster's data
    /// directory (offline; tokens moved forward by --token-margin).
    Snapshot(crate::snapshot_cmd::SnapshotArgs),
    /// Run CMD while holding lock NAME: `fencelock lock NAME -- CMD ARGS...` (several
    /// names: all at once; --permits N: a semaphore). CMD gets
    /// FENCELOCK_TOKEN, FENCELOCK_LOCK, FENCELOCK_SESSION and FENCELOCK_ENDPOINTS; its
    /// exit code is fencelock's. If the lease is lost CMD gets SIGTERM (then SIGKILL)
    /// and fencelock exits 5. The lock is released on every exit path.
    Lock(crate::client_cmd::run_cmd::LockArgs),
    /// Take a lock that lives for --ttl without a running process (prints the token and
    /// the session to release it with).
    Acquire(crate::client_cmd::AcquireArgs),
    /// Release a lock taken with `acquire` (closes its one-lock session).
    Release(crate::client_cmd::ReleaseArgs),
    /// Is TOKEN the current grant of NAME? Exit 0 if so, 6 if stale. Advisory only: the
    /// protected resource must check tokens itself.
    Verify(crate::client_cmd::VerifyArgs),
    /// Show a lock's holders (session, token, mode, value) and waiters.
    Describe(crate::client_cmd::DescribeArgs),
    /// List the locks (held or waited for) whose name starts with PREFIX.
    List(crate::client_cmd::ListArgs),
    /// Print a lock's (or a prefix's) events as they happen, until Ctrl-C or --count.
    Watch(crate::client_cmd::WatchArgs),
    /// Run CMD while leading election NAME (campaign with --value, or --value-file whose
    /// changes are proclaimed without resigning; resign when CMD exits; CMD is
    /// terminated if leadership is lost, as with `lock`).
    Elect(crate::client_cmd::run_cmd::ElectArgs),
    /// Cluster membership: `status`, `add ID PEER_ADDR`, `remove ID`.
    Cluster(crate::client_cmd::ClusterArgs),
    /// Admin: release every holder of NAME at once (the holders are not told).
    ForceRelease(crate::client_cmd::ForceReleaseArgs),
    /// Admin: list the live sessions with their client ids, TTLs, held locks (with
    /// tokens) and waits.
    Sessions(crate::client_cmd::SessionsArgs),
    /// Admin: end session ID as if its lease ran out; its locks go to the next waiters
    /// and watchers see `revoked` events.
    RevokeSession(crate::client_cmd::RevokeSessionArgs),
    /// Authentication: `enable`, `disable`, `status`, `token USER`, `revoke-token TOKEN`.
    Auth(crate::client_cmd::auth_cmd::AuthArgs),
    /// Users: `add NAME --new-password P`, `remove`, `passwd`, `grant-role USER ROLE`,
    /// `revoke-role USER ROLE`.
    User(crate::client_cmd::auth_cmd::UserArgs),
    /// Roles: `add NAME`, `remove NAME`, `grant ROLE PREFIX RIGHTS`, `revoke ROLE PREFIX`.
    Role(crate::client_cmd::auth_cmd::RoleArgs),
    /// The paused-client story in ~10 s with no setup: an in-process 3-node cluster and
    /// fenced service, workers contending for one lock, a holder paused past its TTL
    /// whose late write the fence refuses. Exit 0 when the story and invariants held.
    Demo(crate::demo::DemoArgs),
}

/// The flags of `fencelock serve`. Each one overrides the same setting of `--config`.
#[derive(Debug, Default, Clone, Args)]
pub struct ServeArgs {
    /// TOML file of server settings (keys: the `ServerConfig` field names; see
    /// fencelock.example.toml). Flags override it.
    #[arg(long, value_name = "FILE", env = "FENCELOCK_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's id (>= 1) [default: 1].
    #[arg(long, value_name = "ID", env = "FENCELOCK_ID")]
    pub id: Option<u64>,
    /// Client (gRPC) listen address [default: 127.0.0.1:7001].
    #[arg(long, value_name = "ADDR", env = "FENCELOCK_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Peer (Raft) listen address [default: this node's address in --peers, else
    /// 127.0.0.1:7101].
    #[arg(long, value_name = "ADDR", env = "FENCELOCK_PEER_LISTEN")]
    pub peer_listen: Option<SocketAddr>,
    /// Admin HTTP listen address (/health, /metrics, /status, status page) [default:
    /// 127.0.0.1:7201].
    #[arg(
        long,
        value_name = "ADDR",
        env = "FENCELOCK_ADMIN",
        conflicts_with = "no_admin"
    )]
    pub admin: Option<SocketAddr>,
    /// Do not serve the admin HTTP port.
    #[arg(long, env = "FENCELOCK_NO_ADMIN", value_parser = BoolishValueParser::new())]
    pub no_admin: bool,
    /// Serve the admin port over TLS with --tls-cert/--tls-key (and require client
    /// certificates of --tls-client-ca when given). Config: `admin_tls`.
    #[arg(long, env = "FENCELOCK_ADMIN_TLS", value_parser = BoolishValueParser::new())]
    pub admin_tls: bool,
    /// With auth on, leave /metrics open to anyone (otherwise it needs a user with
    /// `read`, or the --metrics-token-file token). Config: `metrics_open`.
    #[arg(long, env = "FENCELOCK_METRICS_OPEN", value_parser = BoolishValueParser::new())]
    pub metrics_open: bool,
    /// A file whose first line is a bearer token (at least 32 characters) that may read
    /// /metrics with auth on, for Prometheus. Config: `metrics_token_file`.
    #[arg(long, value_name = "FILE", env = "FENCELOCK_METRICS_TOKEN_FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// Client address given out to clients (e.g. in "not leader" redirects) [default:
    /// --listen].
    #[arg(long, value_name = "HOST:PORT", env = "FENCELOCK_ADVERTISE_CLIENT", value_parser = parse_host_port)]
    pub advertise_client: Option<String>,
    /// Peer address other nodes use for this one [default: --peer-listen].
    #[arg(long, value_name = "HOST:PORT", env = "FENCELOCK_ADVERTISE_PEER", value_parser = parse_host_port)]
    pub advertise_peer: Option<String>,
    /// Data directory (Raft log and snapshots) [default: ./fencelock-data].
    #[arg(long, value_name = "DIR", env = "FENCELOCK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The initial voters, `ID=HOST:PORT` of each peer listener, comma-separated,
    /// including this node: e.g. `1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103`.
    /// Start every initial node with the same list. Used at first start only.
    #[arg(long, value_name = "ID=ADDR,...", env = "FENCELOCK_PEERS", value_parser = parse_peers,
          conflicts_with = "join")]
    pub peers: Option<Peers>,
    /// Start empty and wait to be added to an existing cluster (`AddMember`).
    #[arg(long, env = "FENCELOCK_JOIN", value_parser = BoolishValueParser::new())]
    pub join: bool,
    /// Join an existing cluster by itself: the client addresses (HOST:PORT) of some of
    /// its members, comma-separated. A node that is not a voter yet asks the leader to
    /// add it (learner, then voter), retrying until it is; a voter ignores the flag.
    /// Implies --join. Config: `join_via`.
    #[arg(long, value_name = "HOST:PORT,...", env = "FENCELOCK_JOIN_VIA", value_delimiter = ',',
          value_parser = parse_host_port, conflicts_with = "peers")]
    pub join_via: Vec<String>,
    /// File holding a bearer token (`fencelock auth token`) for the --join-via calls;
    /// with auth on, its user must be allowed to change the membership. Config:
    /// `join_token_file`.
    #[arg(long, value_name = "FILE", env = "FENCELOCK_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<PathBuf>,
    /// Give up joining through --join-via after this many seconds and stop; 0 keeps
    /// trying forever, logging each failure [default: 0]. Config: `join_timeout` (ms).
    #[arg(long, value_name = "SECONDS", env = "FENCELOCK_JOIN_TIMEOUT")]
    pub join_timeout: Option<u64>,
    /// Raft heartbeat interval in milliseconds [default: 50].
    #[arg(long, value_name = "MS", env = "FENCELOCK_HEARTBEAT_MS")]
    pub heartbeat_ms: Option<u64>,
    /// Raft election timeout (lower bound) in milliseconds; must exceed twice the
    /// heartbeat [default: 300].
    #[arg(long, value_name = "MS", env = "FENCELOCK_ELECTION_TIMEOUT_MS")]
    pub election_timeout_ms: Option<u64>,
    /// Take a snapshot every this many applied entries [default: 10000].
    #[arg(long, value_name = "ENTRIES", env = "FENCELOCK_SNAPSHOT_EVERY")]
    pub snapshot_every: Option<u64>,
    /// Threads of the node's async runtime; 0 for one per core [default: 0]. Nodes that
    /// share a machine's cores (with each other, or with busy clients) do better with
    /// fewer.
    #[arg(long, value_name = "N", env = "FENCELOCK_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// Record a timestamp at each hop of the write path to `PREFIX.<node id>`, to break
    /// commits down into their stages (`fencelock-bench --commit-trace` reads them).
    /// A diagnostic: it costs a little CPU per entry.
    #[arg(long, value_name = "PREFIX")]
    pub commit_trace: Option<std::path::PathBuf>,
    /// TLS for the client and peer listeners.
    #[command(flatten)]
    pub tls: Box<ServeTlsArgs>,
}

/// The TLS flags of `fencelock serve` (each overrides one key of the config file's
/// `[tls]` table).
#[derive(Debug, Default, Clone, Args)]
pub struct ServeTlsArgs {
    /// Certificate chain (PEM) of the client listener: clients must then speak TLS, and
    /// plaintext is refused. Needs --tls-key. Config: `tls.cert`.
    #[arg(
        long,
        value_name = "FILE",
        env = "FENCELOCK_TLS_CERT",
        help_heading = "TLS"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert. Config: `tls.key`.
    #[arg(
        long,
        value_name = "FILE",
        env = "FENCELOCK_TLS_KEY",
        help_heading = "TLS"
    )]
    pub tls_key: Option<PathBuf>,
    /// CA certificate (PEM) that client certificates must chain to: clients without such
    /// a certificate are refused (mutual TLS). Config: `tls.client_ca`.
    #[arg(
        long,
        value_name = "FILE",
        env = "FENCELOCK_TLS_CLIENT_CA",
        help_heading = "TLS"
    )]
    pub tls_client_ca: Option<PathBuf>,
    /// Cluster CA certificate (PEM): peer (Raft) traffic becomes mutual TLS, and a peer
    /// without a certificate of this CA can neither join nor send Raft messages. Use it
    /// on every node. Config: `tls.peer_ca`.
    #[arg(
        long,
        value_name = "FILE",
        env = "FENCELOCK_PEER_CA",
        help_heading = "TLS"
    )]
    pub peer_ca: Option<PathBuf>,
    /// Certificate chain (PEM) this node presents on peer traffic [default: --tls-cert].
    /// Config: `tls.peer_cert`.
    #[arg(
        long,
        value_name = "FILE",
        env = "FENCELOCK_PEER_CERT",
        help_heading = "TLS"
    )]
    pub peer_cert: Option<PathBuf>,
    /// Private key (PEM) of --peer-cert [default: --tls-key]. Config: `tls.peer_key`.
    #[arg(
        long,
        value_name = "FILE",
        env = "FENCELOCK_PEER_KEY",
        help_heading = "TLS"
    )]
    pub peer_key: Option<PathBuf>,
    /// The name checked against other nodes' certificates when this node calls them
    /// [default: the host of each peer address], for peers dialled by an address their
    /// certificates do not name. Config: `tls.server_name`.
    #[arg(
        long,
        value_name = "NAME",
        env = "FENCELOCK_PEER_SERVER_NAME",
        help_heading = "TLS"
    )]
    pub peer_server_name: Option<String>,
}

/// The parsed value of `--peers`: node id → peer address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers(pub BTreeMap<u64, String>);

/// Parses `--peers`: `ID=HOST:PORT` items separated by commas.
///
/// # Errors
/// A message naming the bad item: an id that is not a number >= 1, an address that is
/// not `host:port`, or an id or address given twice.
pub fn parse_peers(text: &str) -> Result<Peers, String> {
    let mut members = BTreeMap::new();
    for item in text.split(',').map(str::trim) {
        if item.is_empty() {
            return Err("empty item in the list (expected ID=HOST:PORT,...)".into());
        }
        let (id, addr) = item
            .split_once('=')
            .ok_or_else(|| format!("`{item}` is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .map_err(|_| format!("`{id}` in `{item}` is not a node id (a number >= 1)"))?;
        if id == 0 {
            return Err(format!("node id 0 in `{item}`: ids start at 1"));
        }
        let addr = parse_host_port(addr.trim()).map_err(|e| format!("`{item}`: {e}"))?;
        if let Some((other, _)) = members.iter().find(|(_, a)| **a == addr) {
            return Err(format!(
                "nodes {other} and {id} have the same address {addr}"
            ));
        }
        if members.insert(id, addr).is_some() {
            return Err(format!("node id {id} is given twice"));
        }
    }
    Ok(Peers(members))
}

/// Checks a `host:port` address (host: a name, an IPv4 address or a bracketed IPv6
/// address; port: 1..=65535).
///
/// # Errors
/// What is wrong with it.
pub fn parse_host_port(text: &str) -> Result<String, String> {
    if text.parse::<SocketAddr>().is_ok() {
        return Ok(text.to_owned());
    }
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("address `{text}` has no port (expected HOST:PORT)"))?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(format!("address `{text}` has a bad port `{port}`")),
    }
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_');
    if !name_ok {
        return Err(format!("address `{text}` has a bad host `{host}`"));
    }
    Ok(text.to_owned())
}

/// A config file: the settings it gives, and which keys it named.
struct FileConfig {
    config: ServerConfig,
    has_peer_listen: bool,
}

/// Reads a TOML config file.
///
/// # Errors
/// The file cannot be read, is not TOML, names an unknown key, or has a value of the
/// wrong type; the message names the file and, from the TOML parser, the line.
pub fn load_config_file(path: &Path) -> anyhow::Result<ServerConfig> {
    Ok(read_config_file(path)?.config)
}

fn read_config_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse_config_text(&text).with_context(|| format!("in config file {}", path.display()))
}

/// Parses the text of a config file (see the module docs for the keys).
///
/// # Errors
/// Not TOML, an unknown key, or a value of the wrong type.
pub fn parse_config(text: &str) -> anyhow::Result<ServerConfig> {
    Ok(parse_config_text(text)?.config)
}

fn parse_config_text(text: &str) -> anyhow::Result<FileConfig> {
    let table: toml::Table = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let config: ServerConfig = toml::from_str(text)
        .map_err(|e| anyhow::anyhow!("{}", locate_key_error(text, &table, e)))?;
    Ok(FileConfig {
        config,
        has_peer_listen: table.contains_key("peer_listen"),
    })
}

/// `ServerConfig`'s groups are flattened into the file's top level, and serde reports a
/// bad value of a grouped key, or an unknown key, against the whole file (line 1). Read
/// each top-level key alone to find the one at fault, and point at its line, as the TOML
/// parser does for every other key.
fn locate_key_error(text: &str, table: &toml::Table, error: toml::de::Error) -> String {
    if error.span().is_some_and(|span| span.start > 0) {
        return error.to_string();
    }
    let Ok(spanned) = toml::de::DeTable::parse(text) else {
        return error.to_string();
    };
    for (key, value) in table {
        let alone = toml::Table::from_iter([(key.clone(), value.clone())]);
        let Err(alone_error) = ServerConfig::deserialize(alone) else {
            continue;
        };
        let Some(span) = spanned
            .get_ref()
            .keys()
            .find(|k| k.get_ref().as_ref() == key.as_str())
            .map(|k| k.span())
        else {
            break;
        };
        let before = &text[..span.start];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = span.start - line_start + 1;
        let source = text[line_start..].lines().next().unwrap_or_default();
        let gutter = " ".repeat(line.to_string().len());
        let marks = "^".repeat((span.end - span.start).max(1));
        return format!(
            "TOML parse error at line {line}, column {column}\n{gutter} |\n{line} | {source}\n\
             {gutter} | {pad}{marks}\n{}\n",
            alone_error.message(),
            pad = " ".repeat(column - 1),
        );
    }
    error.to_string()
}

impl ServeArgs {
    /// The node configuration these flags describe: the defaults, then the `--config`
    /// file, then the flags; checked with [`ServerConfig::validate`].
    ///
    /// When no peer listener is set (by flag or file) and `--peers` gives this node an
    /// IP address, the node listens on that address.
    ///
    /// # Errors
    /// An unreadable or bad config file, or a configuration that does not validate.
    pub fn to_config(&self) -> anyhow::Result<ServerConfig> {
        let (mut config, mut peer_listen_set) = match &self.config {
            Some(path) => {
                let file = read_config_file(path)?;
                (file.config, file.has_peer_listen)
            }
            None => (ServerConfig::default(), false),
        };
        if let Some(id) = self.id {
            config.node_id = id;
        }
        if let Some(listen) = self.listen {
            config.network.listen = listen;
        }
        if let Some(peer_listen) = self.peer_listen {
            config.network.peer_listen = peer_listen;
            peer_listen_set = true;
        }
        if let Some(admin) = self.admin {
            config.network.admin_listen = Some(admin);
        }
        if self.no_admin {
            config.network.admin_listen = None;
        }
        if self.admin_tls {
            config.network.admin_tls = true;
        }
        if self.metrics_open {
            config.network.metrics_open = true;
        }
        if let Some(file) = &self.metrics_token_file {
            config.network.metrics_token_file = Some(file.clone());
        }
        if let Some(addr) = &self.advertise_client {
            config.network.client_advertise = Some(addr.clone());
        }
        if let Some(addr) = &self.advertise_peer {
            config.network.peer_advertise = Some(addr.clone());
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(Peers(members)) = &self.peers {
            config.bootstrap = Bootstrap::Members(members.clone());
        }
        if self.join {
            config.bootstrap = Bootstrap::Join;
        }
        if !self.join_via.is_empty() {
            config.join_via = self.join_via.clone();
            config.bootstrap = Bootstrap::Join;
        }
        if let Some(path) = &self.join_token_file {
            config.join_token_file = Some(path.clone());
        }
        if let Some(seconds) = self.join_timeout {
            config.join_timeout = Duration::from_secs(seconds);
        }
        if let Some(ms) = self.heartbeat_ms {
            config.raft.heartbeat_interval = Duration::from_millis(ms);
        }
        if let Some(ms) = self.election_timeout_ms {
            config.raft.election_timeout = Duration::from_millis(ms);
        }
        if let Some(entries) = self.snapshot_every {
            config.raft.snapshot_every_entries = entries;
        }
        if let Some(threads) = self.worker_threads {
            config.worker_threads = threads;
        }
        self.apply_tls_flags(&mut config);
        let own_peer_addr = match &config.bootstrap {
            Bootstrap::Members(members) if !peer_listen_set => members
                .get(&config.node_id)
                .and_then(|a| a.parse::<SocketAddr>().ok()),
            _ => None,
        };
        if let Some(own) = own_peer_addr {
            config.network.peer_listen = own;
        }
        if let Err(problem) = config.validate() {
            bail!("invalid configuration: {problem}");
        }
        Ok(config)
    }
}

impl ServeArgs {
    /// The TLS flags given, over the config file's `[tls]` table (each flag replaces one
    /// key; no flag leaves the table as it is).
    fn apply_tls_flags(&self, config: &mut ServerConfig) {
        let given = &self.tls;
        let flags = TlsConfig {
            cert: given.tls_cert.clone(),
            key: given.tls_key.clone(),
            client_ca: given.tls_client_ca.clone(),
            peer_cert: given.peer_cert.clone(),
            peer_key: given.peer_key.clone(),
            peer_ca: given.peer_ca.clone(),
            server_name: given.peer_server_name.clone(),
        };
        if flags == TlsConfig::default() {
            return;
        }
        let tls = config.tls.get_or_insert_with(TlsConfig::default);
        fn over<T>(key: &mut Option<T>, flag: Option<T>) {
            if flag.is_some() {
                *key = flag;
            }
        }
        over(&mut tls.cert, flags.cert);
        over(&mut tls.key, flags.key);
        over(&mut tls.client_ca, flags.client_ca);
        over(&mut tls.peer_cert, flags.peer_cert);
        over(&mut tls.peer_key, flags.peer_key);
        over(&mut tls.peer_ca, flags.peer_ca);
        over(&mut tls.server_name, flags.server_name);
    }
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object a line: `timestamp`, `level`, `target`, `fields` (with
    /// `message`), and the enclosing `spans`.
    Json,
}

/// The log filter when neither `--log-level` nor `RUST_LOG` is given: `info`, with
/// openraft's per-message chatter at `warn`.
pub const DEFAULT_LOG_FILTER: &str = "info,openraft=warn";

/// Installs the log subscriber (stderr, in `format`): `filter` if given, else
/// `RUST_LOG`, else [`DEFAULT_LOG_FILTER`].
///
/// # Errors
/// A filter that does not parse.
pub fn init_logging(filter: Option<&str>, format: LogFormat) -> anyhow::Result<()> {
    let filter = match filter {
        Some(f) => EnvFilter::try_new(f).with_context(|| format!("bad --log-level `{f}`"))?,
        None => match std::env::var("RUST_LOG") {
            Ok(f) if !f.trim().is_empty() => {
                EnvFilter::try_new(&f).with_context(|| format!("bad RUST_LOG `{f}`"))?
            }
            _ => EnvFilter::new(DEFAULT_LOG_FILTER),
        },
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        // No colour codes in JSON, whatever stderr is: a shipper parses the strings.
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}
