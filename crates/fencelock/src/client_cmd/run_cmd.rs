//! `fencelock lock NAME -- CMD` and `fencelock elect NAME --value V -- CMD`: run a
//! command while holding a lock (or leading an election).
//!
//! The sequence:
//!
//! 1. Open a session with `--ttl` (kept alive in the background) and acquire the lock
//!    (or campaign), with a spinner on stderr while waiting if stderr is a terminal.
//!    `--no-wait` on a held lock exits 3, a `--wait` that runs out exits 4, and Ctrl-C /
//!    SIGTERM while waiting withdraw the wait and exit 128+N.
//! 2. Run CMD with `FENCELOCK_TOKEN`, `FENCELOCK_LOCK`, `FENCELOCK_SESSION` and
//!    `FENCELOCK_ENDPOINTS` in its environment. SIGINT, SIGTERM and SIGHUP sent to
//!    fencelock are forwarded to CMD.
//! 3. If the session is lost while CMD runs ([`fencelock_client::Session::lost`]: the
//!    lease ran out on the client's lease clock, which is before the server can expire
//!    it, and which counts a suspend of the machine, so CMD is stopped on waking),
//!    CMD gets SIGTERM, then SIGKILL after `--kill-after`, the reason goes to stderr, and
//!    fencelock exits 5.
//! 4. On every exit path the lock is released and the session closed (a lost session is
//!    closed on a best-effort basis: the server expires it anyway).
//!
//! Which processes get signals: CMD runs in a process group of its own when stdin is not
//! a terminal, and signals go to that group (so `sh -c '...'` and its children all get
//! them). When stdin is a terminal CMD stays in fencelock's foreground group, so that it
//! can read the terminal, and signals go to CMD's PID (Ctrl-C at the terminal reaches
//! the whole foreground group anyway). Only processes fencelock started are signalled.
//!
//! Exit status: CMD's exit code, or 128+N when CMD was killed by signal N; see
//! [`crate::exit`] for the codes of fencelock's own outcomes.

use super::{ClientOpts, PrimitiveArgs, WaitArgs, mode_of, parse_duration, wait_text};
use crate::exit::{self, Exit};
use anyhow::Context;
use clap::Args;
use fencelock_client::election::Election;
use fencelock_client::{
    AcquireOptions, Acquisition, Client, Lost, LostReason, MultiAcquisition, Session,
};
use indicatif::{ProgressBar, ProgressStyle};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::ffi::OsString;
use std::future::Future;
use std::io::IsTerminal;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};

/// `fencelock lock`.
#[derive(Debug, Clone, Args)]
pub struct LockArgs {
    /// The lock's name; several names take them all at once, all or nothing (an atomic
    /// multi-lock: nothing is held while waiting, so it cannot deadlock). CMD then gets
    /// FENCELOCK_LOCK and FENCELOCK_TOKEN as comma-separated lists in the same order.
    #[arg(required = true, num_args = 1.., value_name = "NAME")]
    pub names: Vec<String>,
    /// The session's lease: if fencelock cannot renew it for this long (the cluster is
    /// unreachable, the machine was paused), the lock is lost and CMD is terminated.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub ttl: Duration,
    /// How long to wait for a held lock.
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Take a shared (read) lock instead of an exclusive one.
    #[arg(long)]
    pub shared: bool,
    /// A holder value shown by `describe` and `watch` (e.g. the host name).
    #[arg(long, value_name = "V")]
    pub value: Option<String>,
    /// Semaphore, lock-delay and reentrancy.
    #[command(flatten)]
    pub primitive: PrimitiveArgs,
    /// After the lease is lost, how long CMD has to exit after SIGTERM before SIGKILL.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5s")]
    pub kill_after: Duration,
    /// The command to run while holding the lock, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// `fencelock elect`.
#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("announced").args(["value", "value_file"])))]
pub struct ElectArgs {
    /// The election's name (an exclusive lock).
    pub name: String,
    /// Do not campaign: print who leads now and every change ("no leader" included)
    /// until Ctrl-C; with `--output json`, one JSON object per line.
    #[arg(long, conflicts_with_all = ["value", "value_file", "command"])]
    pub observe: bool,
    /// With --observe: stop after N lines.
    #[arg(long, value_name = "N", requires = "observe")]
    pub count: Option<u64>,
    /// The value announced to observers while leading (e.g. this node's address); shown
    /// by `describe` and `watch`.
    #[arg(long, value_name = "V", required_unless_present_any = ["observe", "value_file"])]
    pub value: Option<String>,
    /// Announce the content of FILE instead (its first line), and while leading proclaim
    /// its new content whenever it changes (checked every second): the leader updates
    /// its value without resigning, and observers see a `value_changed` event. CMD may
    /// write the file itself.
    #[arg(long, value_name = "FILE")]
    pub value_file: Option<std::path::PathBuf>,
    /// The session's lease (see `lock --ttl`): leadership is lost when it cannot be
    /// renewed for this long, and CMD is terminated.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub ttl: Duration,
    /// After leadership is lost, how long CMD has to exit after SIGTERM before SIGKILL.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5s")]
    pub kill_after: Duration,
    /// The command to run while leading, after `--`; fencelock resigns when it exits.
    #[arg(last = true, required_unless_present = "observe", value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// The stop signals fencelock forwards to CMD (and that interrupt a wait).
pub struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts listening for SIGINT, SIGTERM and SIGHUP (from now on they no longer kill
    /// fencelock).
    ///
    /// # Errors
    /// A handler cannot be installed.
    pub fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            hangup: signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?,
        })
    }

    /// The next stop signal.
    pub async fn recv(&mut self) -> Signal {
        tokio::select! {
            _ = self.interrupt.recv() => Signal::SIGINT,
            _ = self.terminate.recv() => Signal::SIGTERM,
            _ = self.hangup.recv() => Signal::SIGHUP,
        }
    }
}

/// Runs `future` with a spinner showing `message` on stderr (only when stderr is a
/// terminal). A stop signal abandons it (dropping it: a lock wait is withdrawn) and is
/// returned as `Err`.
pub async fn waiting<F: Future>(
    message: String,
    signals: &mut Signals,
    future: F,
) -> Result<F::Output, Signal> {
    let spinner = std::io::stderr().is_terminal().then(|| {
        let spinner = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            spinner.set_style(style);
        }
        spinner.set_message(message);
        spinner.enable_steady_tick(Duration::from_millis(100));
        spinner
    });
    let result = tokio::select! {
        output = future => Ok(output),
        signal = signals.recv() => Err(signal),
    };
    if let Some(spinner) = spinner {
        spinner.finish_and_clear();
    }
    result
}

/// `fencelock lock`: see the module docs.
///
/// # Errors
/// An [`Exit`] with the code to exit with, or what failed.
pub async fn lock(client: &Client, opts: &ClientOpts, args: &LockArgs) -> anyhow::Result<()> {
    let mut signals = Signals::new()?;
    let session = client
        .session(args.ttl)
        .await
        .context("cannot open a session")?;
    let wait = args.wait.to_wait();
    let options = args.primitive.apply(
        AcquireOptions::exclusive()
            .mode(mode_of(args.shared))
            .wait(wait)
            .value(args.value.clone().unwrap_or_default()),
    );
    let label = args.names.join(",");
    let what = if args.names.len() == 1 {
        format!("lock {label}")
    } else {
        format!("locks {label}")
    };
    let acquired = waiting(
        format!("waiting for {what}"),
        &mut signals,
        take(&session, &args.names, options),
    )
    .await;
    let guards = match acquired {
        Ok(Ok(MultiAcquisition::Granted(guards))) => guards,
        other => {
            let error: anyhow::Error = match other {
                Err(signal) => Exit::with(
                    exit::SIGNAL_BASE + signal as u8,
                    format!("interrupted by {signal} while waiting for {what}"),
                )
                .into(),
                Ok(Ok(MultiAcquisition::WouldBlock)) => {
                    Exit::with(exit::WOULD_BLOCK, format!("{what} is held (--no-wait)")).into()
                }
                Ok(Ok(_)) => Exit::with(
                    exit::TIMED_OUT,
                    format!("{what} was still held after waiting {}", wait_text(wait)),
                )
                .into(),
                Ok(Err(error)) => {
                    anyhow::Error::new(error).context(format!("cannot acquire {what}"))
                }
            };
            close_quietly(session, opts.timeout).await;
            return Err(error);
        }
    };
    let tokens: Vec<String> = guards.iter().map(|g| g.token().0.to_string()).collect();
    let env = Env {
        token: tokens.join(","),
        lock: label,
        session: session.id().0,
        endpoints: opts.endpoints.join(","),
    };
    let ended = supervise(
        &args.command,
        &env,
        session.lost(),
        args.kill_after,
        &mut signals,
    )
    .await;
    match &ended {
        Ended::Lost { .. } | Ended::CannotStart(..) => drop(guards),
        Ended::Exited(_) => {
            let release = futures::future::join_all(guards.into_iter().map(|guard| async move {
                let name = guard.name().to_owned();
                (name, guard.release().await)
            }));
            match tokio::time::timeout(opts.timeout, release).await {
                Ok(results) => {
                    for (name, result) in results {
                        if let Err(error) = result {
                            eprintln!("fencelock: releasing lock {name}: {error}");
                        }
                    }
                }
                Err(_) => eprintln!(
                    "fencelock: releasing {what} took over {}; closing the session",
                    humantime::format_duration(opts.timeout)
                ),
            }
        }
    }
    finish(ended, session, opts, &what).await
}

/// Take one lock (`acquire`) or several at once (`acquire_all`), as the same outcome.
async fn take(
    session: &Session,
    names: &[String],
    options: AcquireOptions,
) -> fencelock_client::Result<MultiAcquisition> {
    if let [name] = names {
        return Ok(match session.acquire(name, options).await? {
            Acquisition::Granted(guard) => MultiAcquisition::Granted(vec![guard]),
            Acquisition::WouldBlock => MultiAcquisition::WouldBlock,
            Acquisition::TimedOut => MultiAcquisition::TimedOut,
        });
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    session.acquire_all(&names, options).await
}

/// `fencelock elect`: campaign, run CMD while leading, resign when it exits.
///
/// # Errors
/// An [`Exit`] with the code to exit with, or what failed.
pub async fn elect(client: &Client, opts: &ClientOpts, args: &ElectArgs) -> anyhow::Result<()> {
    if args.observe {
        return super::observe::observe(client, opts, &args.name, args.count).await;
    }
    let mut signals = Signals::new()?;
    let session = client
        .session(args.ttl)
        .await
        .context("cannot open a session")?;
    let election = Election::new(&session, args.name.clone());
    let value = match (&args.value, &args.value_file) {
        (Some(value), _) => value.clone(),
        (None, Some(path)) => read_value_file(path)
            .with_context(|| format!("cannot read --value-file {}", path.display()))?,
        (None, None) => String::new(),
    };
    let campaign = waiting(
        format!("campaigning for {}", args.name),
        &mut signals,
        election.campaign(value.clone().into_bytes()),
    )
    .await;
    let leadership = match campaign {
        Ok(Ok(leadership)) => leadership,
        Ok(Err(error)) => {
            close_quietly(session, opts.timeout).await;
            return Err(
                anyhow::Error::new(error).context(format!("cannot campaign for {}", args.name))
            );
        }
        Err(signal) => {
            close_quietly(session, opts.timeout).await;
            return Err(Exit::with(
                exit::SIGNAL_BASE + signal as u8,
                format!(
                    "interrupted by {signal} while campaigning for {}",
                    args.name
                ),
            )
            .into());
        }
    };
    let env = Env {
        token: leadership.token().0.to_string(),
        lock: args.name.clone(),
        session: session.id().0,
        endpoints: opts.endpoints.join(","),
    };
    let supervised = supervise(
        &args.command,
        &env,
        leadership.lost(),
        args.kill_after,
        &mut signals,
    );
    let ended = match &args.value_file {
        Some(path) => {
            tokio::select! {
                ended = supervised => ended,
                never = proclaim_changes(&leadership, path, value) => match never {},
            }
        }
        None => supervised.await,
    };
    match &ended {
        Ended::Lost { .. } | Ended::CannotStart(..) => drop(leadership),
        Ended::Exited(_) => match tokio::time::timeout(opts.timeout, leadership.resign()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("fencelock: resigning from {}: {error}", args.name),
            Err(_) => eprintln!("fencelock: resigning from {} timed out", args.name),
        },
    }
    finish(
        ended,
        session,
        opts,
        &format!("leadership of {}", args.name),
    )
    .await
}

/// How often `elect --value-file` looks at its file.
const VALUE_FILE_POLL: Duration = Duration::from_secs(1);

/// The value in `path`: its first line, without the line end.
fn read_value_file(path: &std::path::Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

/// Proclaim the value of `path` whenever it differs from the one announced (`announced`
/// at first). Runs until dropped; a file that cannot be read, or a proclaim the cluster
/// refuses, is reported on stderr and tried again at the next look.
async fn proclaim_changes(
    leadership: &fencelock_client::election::Leadership,
    path: &std::path::Path,
    mut announced: String,
) -> std::convert::Infallible {
    loop {
        tokio::time::sleep(VALUE_FILE_POLL).await;
        let value = match read_value_file(path) {
            Ok(value) => value,
            Err(error) => {
                eprintln!("fencelock: reading {}: {error}", path.display());
                continue;
            }
        };
        if value == announced {
            continue;
        }
        match leadership.proclaim(value.clone().into_bytes()).await {
            Ok(()) => announced = value,
            Err(error) => eprintln!("fencelock: proclaiming {value:?}: {error}"),
        }
    }
}

/// Closes the session (bounded by the timeout) and turns how CMD ended into the exit.
async fn finish(
    ended: Ended,
    session: Session,
    opts: &ClientOpts,
    what: &str,
) -> anyhow::Result<()> {
    let lost = matches!(ended, Ended::Lost { .. });
    // A lost session is gone or about to be: do not wait long for the cluster.
    let limit = if lost {
        opts.timeout.min(Duration::from_secs(1))
    } else {
        opts.timeout
    };
    close_quietly(session, limit).await;
    match ended {
        Ended::Exited(status) => match status_code(status) {
            0 => Ok(()),
            code => Err(Exit::quiet(code).into()),
        },
        Ended::Lost {
            reason,
            status,
            killed,
        } => Err(Exit::with(
            exit::LOST,
            format!(
                "{what} lost ({reason}): CMD was sent SIGTERM{}; it {}",
                if killed { " and then SIGKILL" } else { "" },
                describe_status(status)
            ),
        )
        .into()),
        Ended::CannotStart(code, message) => Err(Exit::with(code, message).into()),
    }
}

/// Closes `session` within `limit`, reporting a failure on stderr.
async fn close_quietly(session: Session, limit: Duration) {
    let id = session.id();
    match tokio::time::timeout(limit, session.close()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => eprintln!("fencelock: closing session {id}: {error}"),
        Err(_) => eprintln!(
            "fencelock: closing session {id} took over {}; the cluster expires it after its TTL",
            humantime::format_duration(limit)
        ),
    }
}

/// What CMD is told about its grant.
struct Env {
    /// The token, or the tokens of a multi-lock, comma-separated in `lock`'s order.
    token: String,
    lock: String,
    session: u64,
    endpoints: String,
}

/// How CMD ended.
enum Ended {
    /// It exited (or was killed by a signal someone else sent, or that fencelock
    /// forwarded).
    Exited(ExitStatus),
    /// The lease was lost and fencelock terminated it.
    Lost {
        reason: LostReason,
        status: ExitStatus,
        killed: bool,
    },
    /// It could not be started: the exit code and the message.
    CannotStart(u8, String),
}

/// Where signals for CMD go.
#[derive(Clone, Copy)]
struct Target {
    pid: Pid,
    group: bool,
}

impl Target {
    fn send(self, signal: Signal) {
        let result = if self.group {
            killpg(self.pid, signal)
        } else {
            kill(self.pid, signal)
        };
        if let Err(error) = result {
            tracing::debug!(pid = %self.pid, %signal, %error, "cannot signal CMD");
        }
    }
}

/// Starts CMD and waits for it, forwarding stop signals, and terminating it if `lost`
/// fires first.
async fn supervise(
    command: &[OsString],
    env: &Env,
    lost: Lost,
    kill_after: Duration,
    signals: &mut Signals,
) -> Ended {
    let (program, arguments) = command.split_first().expect("clap requires CMD");
    let group = !std::io::stdin().is_terminal();
    let mut cmd = Command::new(program);
    cmd.args(arguments)
        .env("FENCELOCK_TOKEN", &env.token)
        .env("FENCELOCK_LOCK", &env.lock)
        .env("FENCELOCK_SESSION", env.session.to_string())
        .env("FENCELOCK_ENDPOINTS", &env.endpoints);
    if group {
        cmd.process_group(0);
    }
    let shown = program.to_string_lossy();
    let mut child: Child = match cmd.spawn() {
        Ok(child) => child,
        Err(error) => {
            let code = match error.kind() {
                std::io::ErrorKind::NotFound => exit::COMMAND_NOT_FOUND,
                _ => exit::CANNOT_EXECUTE,
            };
            return Ended::CannotStart(code, format!("cannot run {shown}: {error}"));
        }
    };
    let Some(pid) = child.id() else {
        // Already reaped: it exited at once.
        return match child.wait().await {
            Ok(status) => Ended::Exited(status),
            Err(error) => Ended::CannotStart(exit::ERROR, format!("waiting for {shown}: {error}")),
        };
    };
    let target = Target {
        pid: Pid::from_raw(pid as i32),
        group,
    };
    let mut lost = lost;
    loop {
        tokio::select! {
            status = child.wait() => {
                return match status {
                    Ok(status) => Ended::Exited(status),
                    Err(error) => Ended::CannotStart(exit::ERROR, format!("waiting for {shown}: {error}")),
                };
            }
            reason = &mut lost => {
                eprintln!(
                    "fencelock: lease lost ({reason}): stop using the resource; sending SIGTERM to {shown} (SIGKILL in {})",
                    humantime::format_duration(kill_after)
                );
                target.send(Signal::SIGTERM);
                let (status, killed) = match tokio::time::timeout(kill_after, child.wait()).await {
                    Ok(status) => (status, false),
                    Err(_) => {
                        target.send(Signal::SIGKILL);
                        (child.wait().await, true)
                    }
                };
                return match status {
                    Ok(status) => Ended::Lost { reason, status, killed },
                    Err(error) => Ended::CannotStart(exit::LOST, format!("waiting for {shown}: {error}")),
                };
            }
            signal = signals.recv() => {
                tracing::debug!(%signal, "forwarding to CMD");
                target.send(signal);
            }
        }
    }
}

/// The exit code that reflects `status`: its code, or 128+N for signal N.
fn status_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code & 0xff) as u8,
        (None, Some(signal)) => exit::SIGNAL_BASE.saturating_add((signal & 0x7f) as u8),
        (None, None) => exit::ERROR,
    }
}

fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with {code}"),
        (None, Some(signal)) => match Signal::try_from(signal) {
            Ok(signal) => format!("was killed by {signal}"),
            Err(_) => format!("was killed by signal {signal}"),
        },
        (None, None) => "ended".to_owned(),
    }
}
