//! The client subcommands of `fencelock`: `lock` and `elect` (run a command while holding
//! a lock, see [`run_cmd`]), and the one-call commands `acquire`, `release`, `verify`,
//! `describe`, `list`, `watch`, `force-release` and `cluster status|add|remove`.
//!
//! Every client command reads the global client options ([`ClientOpts`]): the endpoints
//! (`--endpoints A,B,C`, else `FENCELOCK_ENDPOINTS`, else `127.0.0.1:7001`, the
//! single-node default), the output format (`--output human|json`) and the time a call
//! may take, retries included (`--timeout`). Durations are written the humantime way:
//! `500ms`, `10s`, `1m`. Exit codes are in [`crate::exit`].

pub mod auth_cmd;
mod observe;
pub mod run_cmd;

use crate::cli::Command;
use crate::exit::{self, Exit};
use crate::output::{self, Output, print_json};
use anyhow::Context;
use clap::{ArgGroup, Args, Subcommand};
use fencelock_client::{
    AcquireOptions, Client, FencingToken, LockMode, SessionId, Wait, WatchPosition,
};
use futures::StreamExt;
use serde_json::json;
use std::time::Duration;

/// The single-node default client address (`fencelock serve` with no flags).
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:7001";

/// The options every client command takes (they may be given before or after the
/// subcommand).
#[derive(Debug, Clone, Args)]
pub struct ClientOpts {
    /// Client (gRPC) addresses of the cluster's nodes, comma-separated; any node will do,
    /// the client finds the leader.
    #[arg(
        long,
        global = true,
        env = "FENCELOCK_ENDPOINTS",
        value_name = "HOST:PORT,...",
        value_delimiter = ',',
        default_value = DEFAULT_ENDPOINT,
        help_heading = "Client options"
    )]
    pub endpoints: Vec<String>,
    /// Output format: aligned text, or JSON for scripts (one document; one line per event
    /// for `watch`).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = Output::Human,
        help_heading = "Client options"
    )]
    pub output: Output,
    /// How long one call may take, retries and leader changes included (e.g. `500ms`,
    /// `10s`). Waiting for a lock is governed by `--wait` instead.
    #[arg(
        long,
        global = true,
        value_name = "DURATION",
        value_parser = parse_duration,
        default_value = "10s",
        help_heading = "Client options"
    )]
    pub timeout: Duration,
    /// The user to authenticate as, for a cluster with auth on.
    #[arg(
        long,
        global = true,
        env = "FENCELOCK_USER",
        value_name = "NAME",
        help_heading = "Client options"
    )]
    pub user: Option<String>,
    /// The password of --user (prefer FENCELOCK_PASSWORD or --password-file: a flag is
    /// visible to other local users).
    #[arg(
        long,
        global = true,
        env = "FENCELOCK_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD",
        help_heading = "Client options"
    )]
    pub password: Option<String>,
    /// Read the password of --user from FILE (its first line).
    #[arg(
        long,
        global = true,
        env = "FENCELOCK_PASSWORD_FILE",
        value_name = "FILE",
        help_heading = "Client options"
    )]
    pub password_file: Option<std::path::PathBuf>,
    /// Authenticate with a bearer token (from `fencelock auth token USER`); when given,
    /// --user and its password are not used. (`--token` is a lock's fencing token.)
    #[arg(
        long,
        global = true,
        env = "FENCELOCK_AUTH_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = "Client options"
    )]
    pub auth_token: Option<String>,
}

impl Default for ClientOpts {
    fn default() -> Self {
        ClientOpts {
            endpoints: vec![DEFAULT_ENDPOINT.to_owned()],
            output: Output::Human,
            timeout: Duration::from_secs(10),
            user: None,
            password: None,
            password_file: None,
            auth_token: None,
        }
    }
}

/// Parses a humantime duration such as `250ms`, `10s` or `1m 30s`.
///
/// # Errors
/// A message saying what is wrong with it.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration such as 500ms, 10s or 1m: {e}"))
}

/// How long to wait for a held lock: `--wait DURATION` or `--no-wait`; neither means as
/// long as it takes.
#[derive(Debug, Clone, Default, Args)]
pub struct WaitArgs {
    /// Wait at most this long for a held lock, then exit 4 (default: as long as it
    /// takes).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "no_wait")]
    pub wait: Option<Duration>,
    /// Do not wait: exit 3 at once if the lock is held.
    #[arg(long)]
    pub no_wait: bool,
}

impl WaitArgs {
    /// The client library's wait policy.
    pub fn to_wait(&self) -> Wait {
        match (self.no_wait, self.wait) {
            (true, _) => Wait::NoWait,
            (false, Some(timeout)) => Wait::Timeout(timeout),
            (false, None) => Wait::Forever,
        }
    }
}

/// The options of `lock` and `acquire` for the primitives beyond a plain lock.
#[derive(Debug, Clone, Default, Args)]
pub struct PrimitiveArgs {
    /// A counting semaphore of N permits: at most N holders (by weight) at once, each
    /// with its own token. Every user of the name must give the same N while it is in
    /// use.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub permits: Option<u32>,
    /// Permits this holder takes (with --permits) [default: 1].
    #[arg(long, value_name = "W", requires = "permits", value_parser = clap::value_parser!(u32).range(1..))]
    pub weight: Option<u32>,
    /// Lock-delay: if this holder's session expires or is revoked (not on a normal
    /// release), nobody gets the lock for this long (e.g. `10s`; at most the cluster's
    /// max_lock_delay_ms).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lock_delay: Option<Duration>,
    /// Reentrant: if this session already holds the (exclusive) lock, count one more
    /// hold and get the same token instead of a refusal.
    #[arg(long, conflicts_with = "permits")]
    pub reentrant: bool,
}

impl PrimitiveArgs {
    /// `options` with these flags applied.
    pub fn apply(&self, mut options: AcquireOptions) -> AcquireOptions {
        options.permits = self.permits;
        options.weight = self.weight.unwrap_or(0);
        options.lock_delay = self.lock_delay.unwrap_or_default();
        options.reentrant = self.reentrant;
        options
    }
}

/// `fencelock acquire`.
#[derive(Debug, Clone, Args)]
pub struct AcquireArgs {
    /// The lock's name.
    pub name: String,
    /// How long the lock lives: the server opens a one-lock session with this TTL that
    /// nobody keeps alive (release it earlier with `fencelock release`). The TTL counts
    /// from the request, so a wait for the lock uses part of it; the output says what
    /// is left.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub ttl: Duration,
    /// Take a shared (read) lock instead of an exclusive one.
    #[arg(long)]
    pub shared: bool,
    /// A holder value shown by `describe` and `watch` (e.g. who holds it).
    #[arg(long, value_name = "V")]
    pub value: Option<String>,
    /// How long to wait (a wait ends anyway when the one-lock session's TTL runs out).
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Semaphore, lock-delay and reentrancy.
    #[command(flatten)]
    pub primitive: PrimitiveArgs,
}

/// `fencelock release`.
#[derive(Debug, Clone, Args)]
pub struct ReleaseArgs {
    /// The lock's name.
    pub name: String,
    /// The grant's fencing token (as printed by `acquire`).
    #[arg(long, value_name = "T")]
    pub token: u64,
    /// The one-lock session `acquire` printed; releasing closes it (so do not pass the
    /// session of a program holding several locks).
    #[arg(long, value_name = "S")]
    pub session: u64,
}

/// `fencelock verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// The lock's name.
    pub name: String,
    /// The fencing token to check.
    #[arg(long, value_name = "T")]
    pub token: u64,
}

/// `fencelock describe`.
#[derive(Debug, Clone, Args)]
pub struct DescribeArgs {
    /// The lock's name.
    pub name: String,
    /// Exit 7 when no one holds the lock.
    #[arg(long)]
    pub fail_if_free: bool,
}

/// `fencelock list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Only locks whose name starts with this (default: all).
    #[arg(default_value = "")]
    pub prefix: String,
    /// At most this many locks.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub limit: usize,
}

/// `fencelock watch`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["name", "prefix"])))]
pub struct WatchArgs {
    /// The lock to watch.
    pub name: Option<String>,
    /// Watch every lock whose name starts with P instead (`--prefix ""`: all locks).
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
    /// Stop after N lock events (`resync` markers do not count). Default: until Ctrl-C.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Start at revision R (e.g. one more than a `describe`'s revision): first the events
    /// of R and later that the cluster still holds, then live ones, with no `resync`.
    /// Fails (COMPACTED, naming the oldest revision held) when R is older than that.
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u64).range(1..))]
    pub start_revision: Option<u64>,
}

/// `fencelock force-release`.
#[derive(Debug, Clone, Args)]
pub struct ForceReleaseArgs {
    /// The lock's name: every holder is released (a `forced` event) and the next
    /// waiters are granted. An admin operation; the former holders are not told.
    pub name: String,
}

/// `fencelock sessions`.
#[derive(Debug, Clone, Args)]
pub struct SessionsArgs {
    /// At most this many sessions.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub limit: usize,
}

/// `fencelock revoke-session`.
#[derive(Debug, Clone, Args)]
pub struct RevokeSessionArgs {
    /// The session's id (see `fencelock sessions`).
    pub id: u64,
}

/// `fencelock cluster`.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// The `cluster` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ClusterCommand {
    /// Members, leader, term, commit index and counts, as one node sees them.
    Status,
    /// Add a node (started with `serve --join`) as a voter; it is caught up first.
    Add {
        /// The new node's id (>= 1).
        id: u64,
        /// Its peer (Raft) address, HOST:PORT.
        peer_addr: String,
    },
    /// Remove a node from the membership.
    Remove {
        /// The node's id.
        id: u64,
    },
}

/// The log filter of a client command when neither `--log-level` nor `RUST_LOG` is
/// given: quiet, so that stderr carries only the command's own messages.
pub const CLIENT_LOG_FILTER: &str = "warn";
/// The demo's log filter by default (its in-process nodes and fenced service would
/// otherwise log every decision, and openraft reports the nodes' concurrent first start
/// as errors).
pub const DEMO_LOG_FILTER: &str = "error,openraft=off";

/// Whether `command` is one of this module's (or the demo).
pub fn is_client_command(command: &Command) -> bool {
    matches!(
        command,
        Command::Lock(_)
            | Command::Acquire(_)
            | Command::Release(_)
            | Command::Verify(_)
            | Command::Describe(_)
            | Command::List(_)
            | Command::Watch(_)
            | Command::Elect(_)
            | Command::Cluster(_)
            | Command::ForceRelease(_)
            | Command::Sessions(_)
            | Command::RevokeSession(_)
            | Command::Auth(_)
            | Command::User(_)
            | Command::Role(_)
            | Command::Demo(_)
    )
}

/// The log filter to install: `--log-level`, else (with no `RUST_LOG`) a quiet default
/// for client commands and the demo; `None` leaves the choice to
/// [`crate::cli::init_logging`].
pub fn log_filter(log_level: Option<&str>, command: &Command) -> Option<String> {
    if let Some(level) = log_level {
        return Some(level.to_owned());
    }
    let rust_log = std::env::var("RUST_LOG").is_ok_and(|v| !v.trim().is_empty());
    match command {
        _ if rust_log => None,
        Command::Demo(_) => Some(DEMO_LOG_FILTER.to_owned()),
        command if is_client_command(command) || matches!(command, Command::Snapshot(_)) => {
            Some(CLIENT_LOG_FILTER.to_owned())
        }
        _ => None,
    }
}

/// Runs a client command (or the demo) on a fresh async runtime.
///
/// # Errors
/// What the command failed with; an [`Exit`] carries a specific exit code.
pub fn run(opts: ClientOpts, command: Command) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("fencelock-client")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(dispatch(opts, command));
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn dispatch(opts: ClientOpts, command: Command) -> anyhow::Result<()> {
    if let Command::Demo(args) = &command {
        return crate::demo::run(&opts, args).await;
    }
    let client = connect(&opts).await?;
    match command {
        Command::Lock(args) => run_cmd::lock(&client, &opts, &args).await,
        Command::Elect(args) => run_cmd::elect(&client, &opts, &args).await,
        Command::Acquire(args) => acquire(&client, &opts, &args).await,
        Command::Release(args) => release(&client, &opts, &args).await,
        Command::Verify(args) => verify(&client, &opts, &args).await,
        Command::Describe(args) => describe(&client, &opts, &args).await,
        Command::List(args) => list(&client, &opts, &args).await,
        Command::Watch(args) => watch(&client, &opts, &args).await,
        Command::ForceRelease(args) => force_release(&client, &opts, &args).await,
        Command::Sessions(args) => sessions(&client, &opts, &args).await,
        Command::RevokeSession(args) => revoke_session(&client, &opts, &args).await,
        Command::Cluster(args) => cluster(&client, &opts, &args).await,
        Command::Auth(args) => auth_cmd::auth(&client, &opts, &args).await,
        Command::User(args) => auth_cmd::user(&client, &opts, &args).await,
        Command::Role(args) => auth_cmd::role(&client, &opts, &args).await,
        other => anyhow::bail!("not a client command: {other:?}"),
    }
}

/// Connects to the cluster with `opts`' endpoints and timeout.
///
/// # Errors
/// No endpoints (exit 2), or no node answered within `--timeout`.
pub async fn connect(opts: &ClientOpts) -> anyhow::Result<Client> {
    let endpoints: Vec<String> = opts
        .endpoints
        .iter()
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .collect();
    if endpoints.is_empty() {
        return Err(Exit::with(
            exit::USAGE,
            "no endpoints given (--endpoints or FENCELOCK_ENDPOINTS)",
        )
        .into());
    }
    let timeout = opts.timeout.max(Duration::from_millis(100));
    let mut builder = Client::builder(endpoints.clone())
        .connect_timeout(timeout.min(Duration::from_secs(2)))
        .call_timeout(timeout.min(Duration::from_secs(5)))
        .retry_deadline(timeout);
    if let Some(token) = &opts.auth_token {
        builder = builder.bearer(token);
    } else if let Some(user) = &opts.user {
        let password = match (&opts.password, &opts.password_file) {
            (_, Some(file)) => std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the password file {}", file.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned(),
            (Some(password), None) => password.clone(),
            (None, None) => {
                return Err(Exit::with(
                    exit::USAGE,
                    "--user needs --password, FENCELOCK_PASSWORD or --password-file",
                )
                .into());
            }
        };
        builder = builder.credentials(user, &password);
    }
    builder
        .connect()
        .await
        .with_context(|| format!("cannot reach the cluster at {}", endpoints.join(",")))
}

fn mode_of(shared: bool) -> LockMode {
    if shared {
        LockMode::Shared
    } else {
        LockMode::Exclusive
    }
}

fn wait_text(wait: Wait) -> String {
    match wait {
        Wait::Timeout(timeout) => humantime::format_duration(timeout).to_string(),
        Wait::NoWait => "0s".to_owned(),
        Wait::Forever => "ever".to_owned(),
    }
}

/// `duration` rounded down to whole milliseconds, for display.
fn whole_millis(duration: Duration) -> Duration {
    Duration::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
}

async fn acquire(client: &Client, opts: &ClientOpts, args: &AcquireArgs) -> anyhow::Result<()> {
    let wait = args.wait.to_wait();
    let options = args.primitive.apply(
        AcquireOptions::exclusive()
            .mode(mode_of(args.shared))
            .wait(wait)
            .value(args.value.clone().unwrap_or_default()),
    );
    let mut signals = run_cmd::Signals::new()?;
    let acquired = run_cmd::waiting(
        format!("waiting for lock {}", args.name),
        &mut signals,
        client.acquire_with_lease(&args.name, args.ttl, options),
    )
    .await;
    let lease = match acquired {
        Err(signal) => {
            return Err(Exit::with(
                exit::SIGNAL_BASE + signal as u8,
                format!("interrupted while waiting for lock {}", args.name),
            )
            .into());
        }
        Ok(result) => result.with_context(|| format!("cannot acquire lock {}", args.name))?,
    };
    let Some(lease) = lease else {
        return Err(match wait {
            Wait::NoWait => Exit::with(
                exit::WOULD_BLOCK,
                format!("lock {} is held (--no-wait)", args.name),
            ),
            _ => Exit::with(
                exit::TIMED_OUT,
                format!(
                    "lock {} was still held after waiting {}",
                    args.name,
                    wait_text(wait)
                ),
            ),
        }
        .into());
    };
    match opts.output {
        Output::Json => print_json(
            &json!({
                "name": lease.name,
                "token": lease.token.0,
                "session": lease.session_id.0,
                "ttl_ms": u64::try_from(lease.ttl.as_millis()).unwrap_or(u64::MAX),
                "remaining_ms": u64::try_from(lease.remaining.as_millis()).unwrap_or(u64::MAX),
                "mode": output::mode_name(mode_of(args.shared)),
                "client_id": lease.client_id.to_string(),
            }),
            false,
        ),
        Output::Human => {
            println!("acquired {}", lease.name);
            println!("token:   {}", lease.token);
            println!("session: {}", lease.session_id);
            println!(
                "held:    at least {} more (the {} TTL counts from the request, so a wait \
                 used part of it, and a safety margin is kept); the cluster releases it when \
                 the TTL runs out, unless released earlier",
                humantime::format_duration(whole_millis(lease.remaining)),
                humantime::format_duration(lease.ttl)
            );
            println!(
                "release: fencelock release {} --token {} --session {}",
                shell_word(&lease.name),
                lease.token,
                lease.session_id
            );
        }
    }
    Ok(())
}

/// `word` quoted for a POSIX shell when it needs it.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

async fn release(client: &Client, opts: &ClientOpts, args: &ReleaseArgs) -> anyhow::Result<()> {
    let description = client
        .describe(&args.name)
        .await
        .with_context(|| format!("cannot read lock {}", args.name))?;
    let holds = description.lock.as_ref().is_some_and(|lock| {
        lock.holders
            .iter()
            .any(|h| h.session_id.0 == args.session && h.token.0 == args.token)
    });
    if !holds {
        return Err(Exit::with(
            exit::ERROR,
            format!(
                "lock {} is not held by session {} with token {} (expired, released, or a wrong token)",
                args.name, args.session, args.token
            ),
        )
        .into());
    }
    client
        .close_session(SessionId(args.session))
        .await
        .with_context(|| format!("cannot release lock {}", args.name))?;
    match opts.output {
        Output::Json => print_json(
            &json!({
                "name": args.name,
                "released": true,
                "token": args.token,
                "session": args.session,
            }),
            false,
        ),
        Output::Human => println!(
            "released {} (token {}, session {} closed)",
            args.name, args.token, args.session
        ),
    }
    Ok(())
}

/// What `verify` says about itself.
pub const VERIFY_ADVISORY: &str = "verify is advisory: the lock can pass on right after this answer (a paused holder is stale without knowing it); the protected resource must check the token itself";

async fn verify(client: &Client, opts: &ClientOpts, args: &VerifyArgs) -> anyhow::Result<()> {
    let verification = client
        .verify(&args.name, FencingToken(args.token))
        .await
        .with_context(|| format!("cannot verify lock {}", args.name))?;
    match opts.output {
        Output::Json => print_json(
            &json!({
                "name": args.name,
                "token": args.token,
                "current": verification.current,
                "current_token": verification.current_token.map(|t| t.0),
                "advisory": true,
                "note": VERIFY_ADVISORY,
            }),
            false,
        ),
        Output::Human => {
            if verification.current {
                println!("token {} is the current grant of {}", args.token, args.name);
            } else {
                match verification.current_token {
                    Some(current) => println!(
                        "token {} is stale: {} is now held with token {current}",
                        args.token, args.name
                    ),
                    None => println!("token {} is stale: {} is free", args.token, args.name),
                }
            }
            eprintln!("note: {VERIFY_ADVISORY}");
        }
    }
    if verification.current {
        Ok(())
    } else {
        Err(Exit::quiet(exit::STALE).into())
    }
}

async fn describe(client: &Client, opts: &ClientOpts, args: &DescribeArgs) -> anyhow::Result<()> {
    let description = client
        .describe(&args.name)
        .await
        .with_context(|| format!("cannot describe lock {}", args.name))?;
    match opts.output {
        Output::Json => print_json(&output::description_json(&args.name, &description), false),
        Output::Human => print!("{}", output::description_text(&args.name, &description)),
    }
    let held = description
        .lock
        .as_ref()
        .is_some_and(|lock| !lock.holders.is_empty());
    if args.fail_if_free && !held {
        return Err(Exit::quiet(exit::NOT_FOUND).into());
    }
    Ok(())
}

async fn list(client: &Client, opts: &ClientOpts, args: &ListArgs) -> anyhow::Result<()> {
    let locks = client
        .list(&args.prefix, args.limit)
        .await
        .context("cannot list locks")?;
    match opts.output {
        Output::Json => print_json(
            &json!({
                "prefix": args.prefix,
                "count": locks.len(),
                "locks": locks.iter().map(output::lock_json).collect::<Vec<_>>(),
            }),
            false,
        ),
        Output::Human => print!("{}", output::locks_text(&locks)),
    }
    Ok(())
}

async fn watch(client: &Client, opts: &ClientOpts, args: &WatchArgs) -> anyhow::Result<()> {
    let start = args.start_revision.map(WatchPosition::at_revision);
    let mut stream = match (&args.name, &args.prefix, start) {
        (_, Some(prefix), None) => client.watch_prefix(prefix),
        (_, Some(prefix), Some(start)) => client.watch_prefix_from(prefix, start),
        (Some(name), None, None) => client.watch(name),
        (Some(name), None, Some(start)) => client.watch_from(name, start),
        (None, None, _) => unreachable!("clap requires a name or --prefix"),
    };
    let mut signals = run_cmd::Signals::new()?;
    let mut seen = 0u64;
    if args.count == Some(0) {
        return Ok(());
    }
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = signals.recv() => return Ok(()),
        };
        let event = match next {
            None => return Ok(()),
            Some(event) => event.context("the watch failed")?,
        };
        match opts.output {
            Output::Json => print_json(&output::event_json(&event), true),
            Output::Human => println!("{}", output::event_text(&event)),
        }
        if event.name().is_some() {
            seen += 1;
            if args.count.is_some_and(|count| seen >= count) {
                return Ok(());
            }
        }
    }
}

async fn force_release(
    client: &Client,
    opts: &ClientOpts,
    args: &ForceReleaseArgs,
) -> anyhow::Result<()> {
    let released = client
        .force_release(&args.name)
        .await
        .with_context(|| format!("cannot force-release lock {}", args.name))?;
    match opts.output {
        Output::Json => print_json(&json!({ "name": args.name, "released": released }), false),
        Output::Human => println!(
            "force-released {released} grant{} of {}",
            if released == 1 { "" } else { "s" },
            args.name
        ),
    }
    Ok(())
}

async fn sessions(client: &Client, opts: &ClientOpts, args: &SessionsArgs) -> anyhow::Result<()> {
    let sessions = client
        .list_sessions(args.limit)
        .await
        .context("cannot list the sessions")?;
    match opts.output {
        Output::Json => print_json(
            &json!({
                "count": sessions.len(),
                "sessions": sessions.iter().map(output::session_json).collect::<Vec<_>>(),
            }),
            false,
        ),
        Output::Human => print!("{}", output::sessions_text(&sessions)),
    }
    Ok(())
}

async fn revoke_session(
    client: &Client,
    opts: &ClientOpts,
    args: &RevokeSessionArgs,
) -> anyhow::Result<()> {
    let released = client
        .revoke_session(SessionId(args.id))
        .await
        .with_context(|| format!("cannot revoke session {}", args.id))?;
    match opts.output {
        Output::Json => print_json(&json!({ "session": args.id, "released": released }), false),
        Output::Human => println!(
            "revoked session {}; released {released} lock{}",
            args.id,
            if released == 1 { "" } else { "s" }
        ),
    }
    Ok(())
}

async fn cluster(client: &Client, opts: &ClientOpts, args: &ClusterArgs) -> anyhow::Result<()> {
    let (members, what) = match &args.command {
        ClusterCommand::Status => {
            let status = client
                .status()
                .await
                .context("cannot read the cluster status")?;
            match opts.output {
                Output::Json => print_json(&output::status_json(&status), false),
                Output::Human => print!("{}", output::status_text(&status)),
            }
            return Ok(());
        }
        ClusterCommand::Add { id, peer_addr } => (
            client
                .add_member(*id, peer_addr)
                .await
                .with_context(|| format!("cannot add node {id} at {peer_addr}"))?,
            format!("added node {id}"),
        ),
        ClusterCommand::Remove { id } => (
            client
                .remove_member(*id)
                .await
                .with_context(|| format!("cannot remove node {id}"))?,
            format!("removed node {id}"),
        ),
    };
    match opts.output {
        Output::Json => print_json(
            &json!({
                "ok": true,
                "members": members.iter().map(output::member_json).collect::<Vec<_>>(),
            }),
            false,
        ),
        Output::Human => {
            println!("{what}; the members are now:");
            print!("{}", output::members_text(&members, None));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_the_humantime_way() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("ten").is_err());
    }

    #[test]
    fn shell_words_are_quoted_when_needed() {
        assert_eq!(shell_word("jobs/billing"), "jobs/billing");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }
}
