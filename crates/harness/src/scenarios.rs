//! Holders that lose the cluster while they hold a lock and keep writing to the fenced
//! service, and a rival that takes the lock over:
//!
//! - [`partitioned_holder`]: the holder lives in a network namespace of its own
//!   ([`ClientNetns`]) and is cut off from every node — keepalives, redirects, every call
//!   — while the fenced service stays reachable; it keeps writing, under its lease while
//!   its client library counts it valid, and then a few writes more without a lease
//!   (writes already on their way), which the fence must refuse once the rival wrote.
//! - [`suspended_holder`]: the holder is a process of its own ([`run_holder`]), stopped
//!   (SIGSTOP) for longer than its TTL and let go on (SIGCONT), as a suspended machine
//!   would be; it checks its lease before each write on the clock its run names
//!   ([`HolderClock`]), with some work between the check and the write, so that a stop
//!   can fall between them.

use crate::cli::HolderArgs;
use crate::clock::{HolderClock, SuspendBlindClock};
use crate::history::{Recorder, read_history};
use crate::netns::ClientNetns;
use crate::proxy::LinkMode;
use crate::workload::{
    Write, acquire, append, close_session, connect, lease_until_ns, open_session, release,
    rival_takes_over,
};
use anyhow::Context;
use fencelock_client::{Session, Wait};
use fencelock_fenced_kv::FencedKvClient;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::sync::oneshot;

/// How long a holder stays cut off or stopped: its TTL and 1.5 s more, so that the
/// cluster expires its session and the rival gets the lock before it comes back.
pub fn stall(ttl: Duration) -> Duration {
    ttl + Duration::from_millis(1500)
}

/// What the cluster-facing side of a holder scenario needs.
#[derive(Clone, Debug)]
pub struct Scene {
    /// The scenario's name (`partitioned3`, `suspend5`): the holder is `<name>-holder`, the rival
    /// `<name>-rival`.
    pub name: String,
    /// The nodes' client addresses.
    pub endpoints: Vec<String>,
    /// The fenced service.
    pub kv: SocketAddr,
    /// The scenario's own lock.
    pub lock: String,
    /// Session TTL.
    pub ttl: Duration,
    /// The control runs' lease slack (zero otherwise).
    pub slack: Duration,
}

impl Scene {
    /// The holder's name.
    pub fn holder(&self) -> String {
        format!("{}-holder", self.name)
    }

    async fn rival(&self, recorder: &Recorder) {
        let kv = FencedKvClient::new(self.kv).with_timeout(Duration::from_secs(3));
        let name = format!("{}-rival", self.name);
        let wait = stall(self.ttl) * 2;
        rival_takes_over(
            &name,
            &self.endpoints,
            &kv,
            &self.lock,
            self.ttl,
            self.slack,
            wait,
            recorder,
        )
        .await;
    }
}

/// The partitioned holder (see the module docs): takes the scene's lock from inside
/// `netns`, is cut off in `mode` for [`stall`], while the rival takes over. Returns
/// whether the holder got the lock (and so was cut off).
pub async fn partitioned_holder(
    scene: &Scene,
    netns: &ClientNetns,
    mode: LinkMode,
    recorder: &Recorder,
) -> bool {
    let (holding, held) = oneshot::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let holder = netns.spawn(holder_in_namespace(
        scene.clone(),
        recorder.clone(),
        holding,
        stopped,
    ));
    let limit = stall(scene.ttl) * 3 + Duration::from_secs(10);
    if !matches!(
        tokio::time::timeout(Duration::from_secs(10), held).await,
        Ok(Ok(()))
    ) {
        drop(stop);
        let _ = tokio::time::timeout(limit, holder).await;
        return false;
    }
    netns.cut(mode);
    let heal = async {
        tokio::time::sleep(stall(scene.ttl)).await;
        netns.heal();
    };
    tokio::join!(scene.rival(recorder), heal);
    let _ = stop.send(());
    let _ = tokio::time::timeout(limit, holder).await;
    true
}

/// How many writes a partitioned holder sends after its lease ran out: the writes the
/// fence must refuse once the rival wrote.
const UNCHECKED_WRITES: u32 = 3;

/// The holder's side of [`partitioned_holder`], run inside the namespace: takes the lock,
/// says so on `holding`, and writes every 150 ms until `stop` (or a bound).
async fn holder_in_namespace(
    scene: Scene,
    recorder: Recorder,
    holding: oneshot::Sender<()>,
    mut stop: oneshot::Receiver<()>,
) {
    let name = scene.holder();
    let kv = FencedKvClient::new(scene.kv).with_timeout(Duration::from_secs(3));
    let Ok(client) = connect(&scene.endpoints).await else {
        return;
    };
    let Some(session) = open_session(&client, scene.ttl, &recorder, &name).await else {
        return;
    };
    let wait = Wait::Timeout(Duration::from_secs(3));
    let Some(guard) = acquire(&session, &scene.lock, wait, &recorder, &name).await else {
        close_session(session, &recorder, &name).await;
        return;
    };
    let token = guard.token().0;
    let mut writes = 0u64;
    let mut unchecked = 0u32;
    let deadline = Instant::now() + stall(scene.ttl) * 3 + Duration::from_secs(5);
    let mut told = Some(holding);
    while Instant::now() < deadline && unchecked < UNCHECKED_WRITES {
        writes += 1;
        // Under the lease while the library counts it valid; after that a few more go
        // out all the same, unchecked (writes already on their way), and then it stops.
        let lease = lease_until_ns(&session, &recorder, scene.slack);
        if lease.is_none() {
            unchecked += 1;
        }
        let write = Write {
            lock: &scene.lock,
            token,
            body: format!("{name}:{writes}:{token};"),
            lease_until_ns: lease,
        };
        append(&kv, write, &recorder, &name).await;
        if let Some(holding) = told.take() {
            let _ = holding.send(());
        }
        let pause = if lease.is_some() { 150 } else { 600 };
        tokio::select! {
            _ = &mut stop => break,
            () = tokio::time::sleep(Duration::from_millis(pause)) => {}
        }
    }
    release(guard, &recorder, &name).await;
    end_session(session, &recorder, &name).await;
}

/// A holder's session at the end: closed if it is still alive; dropped unclosed when its
/// client already saw it lost, since the library answers a close of a session the
/// cluster ended as done, and the history would then claim it alive until the close.
async fn end_session(session: Arc<Session>, recorder: &Recorder, name: &str) {
    if !session.is_lost() {
        close_session(session, recorder, name).await;
    }
}

/// Where a suspended holder's process comes from and writes its history.
#[derive(Clone, Debug)]
pub struct HolderProcess {
    /// This harness's binary (its `holder` subcommand).
    pub bin: PathBuf,
    /// The run's time base.
    pub base_ns: u64,
    /// The run's output directory (the holder's history and log go there).
    pub out: PathBuf,
    /// The clock it counts its lease on.
    pub clock: HolderClock,
}

/// The suspended holder (see the module docs): a holder process takes the scene's lock,
/// is stopped for [`stall`] while the rival takes over, and goes on. Its history is
/// merged into `recorder`. Returns whether it got the lock (and so was stopped).
///
/// # Errors
/// The process cannot be started, or its history cannot be read.
pub async fn suspended_holder(
    scene: &Scene,
    process: &HolderProcess,
    recorder: &Recorder,
) -> anyhow::Result<bool> {
    let holder = scene.holder();
    let history = process.out.join(format!("history-{holder}.jsonl"));
    let run_for = stall(scene.ttl) * 3;
    let mut child = tokio::process::Command::new(&process.bin)
        .arg("holder")
        .args(["--name", &holder])
        .args(["--endpoints", &scene.endpoints.join(",")])
        .args(["--kv", &scene.kv.to_string()])
        .args(["--lock", &scene.lock])
        .args(["--ttl-ms", &scene.ttl.as_millis().to_string()])
        .args(["--time-ms", &run_for.as_millis().to_string()])
        .args(["--base-ns", &process.base_ns.to_string()])
        .args(["--lease-slack-ms", &scene.slack.as_millis().to_string()])
        .arg("--clock")
        .arg(match process.clock {
            HolderClock::Boottime => "boottime",
            HolderClock::SuspendBlind => "suspend-blind",
        })
        .arg("--history")
        .arg(&history)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(
            process.out.join(format!("{holder}.log")),
        )?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawning {}", process.bin.display()))?;
    let pid = Pid::from_raw(child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0));
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("its stdout")?).lines();
    let holding = matches!(
        tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await,
        Ok(Ok(Some(line))) if line.starts_with("holding")
    );
    if holding && pid.as_raw() > 0 {
        let _ = kill(pid, Signal::SIGSTOP);
        let resume = async {
            tokio::time::sleep(stall(scene.ttl)).await;
            let _ = kill(pid, Signal::SIGCONT);
        };
        tokio::join!(scene.rival(recorder), resume);
    }
    if tokio::time::timeout(run_for + Duration::from_secs(20), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
    let events =
        read_history(&history).with_context(|| format!("reading the history of {holder}"))?;
    for event in events {
        recorder.record_stamped(event);
    }
    Ok(holding)
}

/// `fencelock-harness holder`: the suspended holder's process. Takes the lock, prints
/// `holding TOKEN`, then until its time is up checks its lease on its clock, works a
/// little, and writes; it stops writing once its lease has run out on that clock.
///
/// # Errors
/// The history file cannot be created.
pub async fn run_holder(args: HolderArgs) -> anyhow::Result<()> {
    let recorder = Recorder::new(args.base_ns, Some(&args.history))?;
    let slack = Duration::from_millis(args.lease_slack_ms);
    let blind = (args.clock == HolderClock::SuspendBlind).then(SuspendBlindClock::start);
    // A clock that missed the stop trusts the lease that much longer.
    let slack_now = || {
        slack
            + blind
                .as_ref()
                .map_or(Duration::ZERO, SuspendBlindClock::missed)
    };
    let name = args.name.as_str();
    let kv = FencedKvClient::new(args.kv).with_timeout(Duration::from_secs(3));
    let ttl = Duration::from_millis(args.ttl_ms);
    let mut rng = fastrand::Rng::with_seed(args.base_ns);
    let deadline = Instant::now() + Duration::from_millis(args.time_ms);
    let client = connect(&args.endpoints).await?;
    let session = open_session(&client, ttl, &recorder, name).await;
    let wait = Wait::Timeout(Duration::from_secs(3));
    let guard = match &session {
        Some(session) => acquire(session, &args.lock, wait, &recorder, name).await,
        None => None,
    };
    let (Some(session), Some(guard)) = (session, guard) else {
        println!("none");
        recorder.flush();
        return Ok(());
    };
    let token = guard.token().0;
    println!("holding {token}");
    let mut writes = 0u64;
    while Instant::now() < deadline {
        let Some(lease) = lease_until_ns(&session, &recorder, slack_now()) else {
            break;
        };
        // The work between the check and the write: a stop that falls here sends the
        // write after the lease ran out, and the fence must refuse it.
        tokio::time::sleep(Duration::from_millis(rng.u64(0..100))).await;
        writes += 1;
        let write = Write {
            lock: &args.lock,
            token,
            body: format!("{name}:{writes}:{token};"),
            lease_until_ns: Some(lease),
        };
        append(&kv, write, &recorder, name).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    release(guard, &recorder, name).await;
    end_session(session, &recorder, name).await;
    recorder.flush();
    Ok(())
}
