//! `fencelock demo`: the paused-client problem and how fencing tokens solve it, in about
//! ten seconds, with nothing to set up.
//!
//! The demo starts, inside this process, a 3-node fencelock cluster on free loopback
//! ports (temporary data directories, fast timings) and the example fenced key-value
//! service (`fencelock-fenced-kv`). Then several workers contend for one lock,
//! `demo/ledger`; each holder appends a few records to the key `ledger` through the
//! fence, presenting its fencing token. One holder, picked by the seed, is *paused* (as a
//! stop-the-world GC pause would) right after its first write: its keepalives stop and
//! it sleeps past its TTL. The cluster expires its session and hands the lock to the next
//! waiter, who writes with a higher token. The paused holder wakes up still believing it
//! holds the lock and writes: the fence refuses it (409, stale token).
//!
//! The timeline is printed as it happens (elapsed ms, who, token, what), then a summary:
//! the grants and their tokens, the writes admitted and refused, and three invariants
//! checked against the cluster's watch events and the fenced service's decision log:
//!
//! 1. grant tokens strictly increase;
//! 2. the fence never admitted a write with a lower token after one with a higher token;
//! 3. the key's final value is the fold (concatenation, in decision order) of the
//!    admitted appends.
//!
//! The demo exits 0 only if the story happened as told (the paused holder's session
//! expired, the lock passed on, the paused write was refused as stale) and every
//! invariant held. `--output json` prints one JSON document at the end instead of the
//! live timeline; `--seed` replays a worker schedule.

use crate::client_cmd::ClientOpts;
use crate::exit::{self, Exit};
use crate::output::{Output, print_json};
use anyhow::Context;
use clap::Args;
use fencelock_client::{Client, WatchEvent};
use fencelock_fenced_kv::{
    FencedKv, FencedKvClient, FencedKvOptions, RefusalReason, WriteOutcome, serve_kv,
};
use fencelock_server::config::{
    Bootstrap, NetworkConfig, RaftConfig, ServerConfig, WritePathConfig,
};
use fencelock_server::startup::{Listeners, RunningNode, start_with_listeners};
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The lock the workers contend for.
pub const LOCK: &str = "demo/ledger";
/// The fenced service's key they append to.
pub const KEY: &str = "ledger";
/// The workers' session TTL.
pub const TTL: Duration = Duration::from_secs(2);
/// How long the paused holder sleeps at least (its session expires during it).
pub const PAUSE: Duration = Duration::from_millis(3_000);
/// Grants each worker that is not paused takes.
pub const ROUNDS: usize = 3;
/// The cluster's size.
pub const NODES: u64 = 3;

/// `fencelock demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Seed of the worker schedule (think times, writes per grant, who is paused);
    /// default: a random one, printed so that a run can be replayed.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// How many workers contend for the lock.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(2..=8))]
    pub workers: u64,
}

/// One line of the timeline.
#[derive(Debug, Clone)]
struct Entry {
    ms: u64,
    who: String,
    token: Option<u64>,
    what: String,
}

/// The timeline, printed live in human mode.
struct Timeline {
    start: Instant,
    live: bool,
    entries: Mutex<Vec<Entry>>,
}

impl Timeline {
    fn note(&self, who: &str, token: Option<u64>, what: impl Into<String>) {
        let entry = Entry {
            ms: u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX),
            who: who.to_owned(),
            token,
            what: what.into(),
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if self.live {
            println!("{}", entry_line(&entry));
        }
        entries.push(entry);
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

fn entry_line(entry: &Entry) -> String {
    let token = entry
        .token
        .map_or_else(|| "-".to_owned(), |t| t.to_string());
    format!(
        "{:>7}ms  {:<8} {:>5}  {}",
        entry.ms, entry.who, token, entry.what
    )
}

/// A write a worker sent, and what the fence decided.
#[derive(Debug, Clone)]
struct Write {
    worker: String,
    token: u64,
    body: String,
    admitted: bool,
}

/// What the paused holder went through.
#[derive(Debug, Clone, Default)]
struct Paused {
    worker: String,
    token: u64,
    session: u64,
    /// Its write after waking: refused as stale, and the highest token seen then.
    refused_stale: bool,
    highest_seen: Option<u64>,
    paused_ms: u64,
}

/// Everything the workers and the watcher record.
#[derive(Default)]
struct Records {
    /// Worker grants: (worker, token).
    grants: Vec<(String, u64)>,
    /// Writes by decision sequence number.
    writes: BTreeMap<u64, Write>,
    paused: Option<Paused>,
    /// Session id → worker name.
    sessions: HashMap<u64, String>,
    /// Grants seen on the watch: (revision, token, session).
    watched_grants: Vec<(u64, u64, u64)>,
    /// Sessions the cluster expired: (session, token).
    expired: Vec<(u64, u64)>,
    /// Resyncs after the first (events may have been missed).
    extra_resyncs: u64,
    /// Workers that stopped early, with why.
    failures: Vec<String>,
}

struct Shared {
    client: Client,
    kv: FencedKvClient,
    timeline: Timeline,
    records: Mutex<Records>,
}

impl Shared {
    fn records(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs the demo.
///
/// # Errors
/// The cluster or the service could not start, or the story or an invariant failed
/// (exit 1, after the summary).
pub async fn run(opts: &ClientOpts, args: &DemoArgs) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..1_000_000));
    let human = opts.output == Output::Human;
    let dir = tempfile::tempdir().context("cannot create a temporary data directory")?;

    let nodes = start_cluster(dir.path()).await?;
    let endpoints: Vec<String> = nodes.iter().map(|n| n.client_addr().to_string()).collect();

    let kv_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind the fenced service")?;
    let kv_addr = kv_listener.local_addr()?;
    let store = tokio::task::spawn_blocking(|| FencedKv::open(FencedKvOptions::default()))
        .await?
        .context("cannot open the fenced store")?;
    let (stop_kv, kv_stopped) = tokio::sync::oneshot::channel::<()>();
    let kv_server = tokio::spawn(serve_kv(kv_listener, Arc::new(store), async move {
        let _ = kv_stopped.await;
    }));

    let result = story(args, seed, human, endpoints, kv_addr).await;

    let _ = stop_kv.send(());
    let _ = tokio::time::timeout(Duration::from_secs(3), kv_server).await;
    futures::future::join_all(nodes.into_iter().map(|node| async move {
        let _ = tokio::time::timeout(Duration::from_secs(3), node.shutdown()).await;
    }))
    .await;
    drop(dir);
    result
}

/// Starts the 3-node cluster on free loopback ports with fast timings.
async fn start_cluster(dir: &Path) -> anyhow::Result<Vec<RunningNode>> {
    let mut bound = Vec::new();
    for _ in 0..NODES {
        let client = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
        let peer = TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
        bound.push((client, peer));
    }
    let members: BTreeMap<u64, String> = bound
        .iter()
        .zip(1..)
        .map(|((_, peer), id)| Ok((id, peer.local_addr()?.to_string())))
        .collect::<std::io::Result<_>>()?;
    let mut nodes = Vec::new();
    for ((client, peer), id) in bound.into_iter().zip(1..) {
        let config = ServerConfig {
            node_id: id,
            network: NetworkConfig {
                listen: client.local_addr()?,
                peer_listen: peer.local_addr()?,
                admin_listen: None,
                ..NetworkConfig::default()
            },
            data_dir: dir.join(format!("node-{id}")),
            bootstrap: Bootstrap::Members(members.clone()),
            raft: RaftConfig {
                heartbeat_interval: Duration::from_millis(50),
                election_timeout: Duration::from_millis(300),
                ..RaftConfig::default()
            },
            write_path: WritePathConfig {
                expiry_tick: Duration::from_millis(20),
                request_timeout: Duration::from_secs(3),
                ..WritePathConfig::default()
            },
            ..ServerConfig::default()
        };
        let node = start_with_listeners(
            config,
            Listeners {
                client,
                peer,
                admin: None,
            },
        )
        .await
        .with_context(|| format!("node {id} could not start"))?;
        nodes.push(node);
    }
    Ok(nodes)
}

async fn story(
    args: &DemoArgs,
    seed: u64,
    human: bool,
    endpoints: Vec<String>,
    kv_addr: std::net::SocketAddr,
) -> anyhow::Result<()> {
    let client = Client::builder(endpoints.clone())
        .connect_timeout(Duration::from_secs(1))
        .call_timeout(Duration::from_secs(3))
        .retry_deadline(Duration::from_secs(10))
        .connect()
        .await
        .context("cannot reach the demo cluster")?;
    let timeline = Timeline {
        start: Instant::now(),
        live: human,
        entries: Mutex::new(Vec::new()),
    };
    let mut rng = fastrand::Rng::with_seed(seed);
    let paused_index = rng.usize(0..args.workers as usize);
    if human {
        println!(
            "fencelock demo (seed {seed}): {NODES} nodes at {}, fenced service at http://{kv_addr}",
            endpoints.join(" ")
        );
        println!(
            "{} workers contend for lock {LOCK} (session TTL {}) and append to key {KEY:?} through the fence.",
            args.workers,
            humantime::format_duration(TTL)
        );
        println!(
            "w{} will be paused while it holds the lock, as a long GC pause would.\n",
            paused_index + 1
        );
        println!("{:>9}  {:<8} {:>5}  what", "elapsed", "who", "token");
    }
    let shared = Arc::new(Shared {
        client: client.clone(),
        kv: FencedKvClient::new(kv_addr).with_timeout(Duration::from_secs(5)),
        timeline,
        records: Mutex::new(Records::default()),
    });

    let leader = wait_for_leader(&client).await?;
    shared.timeline.note(
        "cluster",
        None,
        format!("{NODES}-node cluster up; node {leader} leads"),
    );

    // The watcher: the cluster's side of the story.
    let mut events = client.watch(LOCK);
    // Wait for the stream's opening resync, so no grant is missed.
    match tokio::time::timeout(Duration::from_secs(5), events.next()).await {
        Ok(Some(Ok(WatchEvent::Resync { .. }))) => {}
        other => anyhow::bail!("the watch on {LOCK} did not start: {other:?}"),
    }
    let watcher = tokio::spawn(watch_events(shared.clone(), events));

    let workers: Vec<_> = (0..args.workers as usize)
        .map(|i| {
            let shared = shared.clone();
            let rng = fastrand::Rng::with_seed(rng.u64(..));
            let name = format!("w{}", i + 1);
            tokio::spawn(async move {
                if let Err(error) = worker(&shared, &name, rng, i == paused_index).await {
                    shared
                        .timeline
                        .note(&name, None, format!("stops: {error:#}"));
                    shared.records().failures.push(format!("{name}: {error:#}"));
                }
            })
        })
        .collect();
    let deadline = Duration::from_secs(25);
    for handle in workers {
        let left = deadline.saturating_sub(shared.timeline.start.elapsed());
        if tokio::time::timeout(left, handle).await.is_err() {
            shared
                .records()
                .failures
                .push("a worker did not finish in time".to_owned());
        }
    }
    // Let the watcher catch up with the last grants.
    let granted = shared.records().grants.len();
    let catch_up = Instant::now();
    while shared.records().watched_grants.len() < granted
        && catch_up.elapsed() < Duration::from_secs(2)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watcher.abort();

    let check = check(&shared).await?;
    let elapsed_ms = shared.timeline.elapsed_ms();
    if human {
        print!("{}", check.text(elapsed_ms));
    } else {
        let entries = shared
            .timeline
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut summary = check.json(seed, elapsed_ms);
        summary["timeline"] = entries
            .iter()
            .map(|e| json!({ "ms": e.ms, "who": e.who, "token": e.token, "what": e.what }))
            .collect();
        print_json(&summary, false);
    }
    if check.ok() {
        Ok(())
    } else {
        Err(Exit::with(
            exit::ERROR,
            format!(
                "the demo did not go as told: {}",
                check.problems().join("; ")
            ),
        )
        .into())
    }
}

async fn wait_for_leader(client: &Client) -> anyhow::Result<u64> {
    let start = Instant::now();
    loop {
        if let Ok(status) = client.status().await
            && let Some(leader) = status.leader_id
        {
            return Ok(leader);
        }
        if start.elapsed() > Duration::from_secs(10) {
            anyhow::bail!("the demo cluster elected no leader within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn watch_events(shared: Arc<Shared>, mut events: fencelock_client::WatchStream) {
    while let Some(event) = events.next().await {
        let Ok(event) = event else { return };
        match event {
            WatchEvent::Acquired {
                session_id,
                token,
                revision,
                ..
            } => shared
                .records()
                .watched_grants
                .push((revision, token.0, session_id.0)),
            WatchEvent::Expired {
                session_id, token, ..
            } => {
                let who = shared
                    .records()
                    .sessions
                    .get(&session_id.0)
                    .cloned()
                    .unwrap_or_else(|| format!("session {session_id}"));
                shared.records().expired.push((session_id.0, token.0));
                shared.timeline.note(
                    "cluster",
                    Some(token.0),
                    format!(
                        "{who}'s session {session_id} expired (no keepalive for its TTL): the lock is taken back and passes on"
                    ),
                );
            }
            WatchEvent::Resync { .. } => shared.records().extra_resyncs += 1,
            _ => {}
        }
    }
}

async fn worker(
    shared: &Shared,
    name: &str,
    mut rng: fastrand::Rng,
    pause: bool,
) -> anyhow::Result<()> {
    let note = |token: Option<u64>, what: String| shared.timeline.note(name, token, what);
    let session = shared
        .client
        .session(TTL)
        .await
        .context("cannot open a session")?;
    shared
        .records()
        .sessions
        .insert(session.id().0, name.to_owned());
    for round in 0..ROUNDS {
        tokio::time::sleep(Duration::from_millis(rng.u64(0..120))).await;
        let guard = session.lock(LOCK).await.context("cannot take the lock")?;
        let token = guard.token().0;
        shared.records().grants.push((name.to_owned(), token));
        // Tell the grant once the cluster's event stream has, so that the timeline shows
        // the expiry that made it (the same applied entry) first.
        let seen = Instant::now();
        while !shared.records().watched_grants.iter().any(|g| g.1 == token)
            && seen.elapsed() < Duration::from_millis(500)
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        note(Some(token), format!("granted {LOCK}"));
        let writes = rng.usize(1..=3);
        for j in 0..writes {
            let body = format!("{name}:{token}.{j} ");
            let written = append(shared, name, token, &body).await?;
            note(Some(token), describe_write(&body, &written));
            if pause && round == 0 && j == 0 {
                return paused(shared, name, session, guard, token).await;
            }
            tokio::time::sleep(Duration::from_millis(rng.u64(20..60))).await;
        }
        note(Some(token), "releases the lock".to_owned());
        guard.release().await.context("cannot release the lock")?;
    }
    session.close().await.context("cannot close the session")?;
    Ok(())
}

/// The paused holder: stops its keepalives, sleeps past its TTL, wakes and writes.
async fn paused(
    shared: &Shared,
    name: &str,
    session: fencelock_client::Session,
    guard: fencelock_client::LockGuard,
    token: u64,
) -> anyhow::Result<()> {
    let note = |what: String| shared.timeline.note(name, Some(token), what);
    let started = Instant::now();
    note(format!(
        "PAUSED (stop-the-world GC): no keepalives, no progress for {}+, still holding token {token}",
        humantime::format_duration(PAUSE)
    ));
    session.stop_keepalive();
    tokio::time::sleep(PAUSE).await;
    // Stage direction: the pause lasts until someone else has written with a newer token
    // (which takes about a TTL), so that the story is the same on a slow machine.
    let limit = Instant::now() + Duration::from_secs(10);
    while Instant::now() < limit {
        match shared.kv.get(KEY).await {
            Ok(Some(value)) if value.highest_token > token => break,
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let paused_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    note(format!(
        "wakes up after {paused_ms} ms, unaware of the pause, and writes with its old token"
    ));
    let body = format!("{name}:{token}.after-pause ");
    let written = append(shared, name, token, &body).await?;
    note(describe_write(&body, &written));
    let (refused_stale, highest_seen) = match &written {
        WriteOutcome::Refused(refused) => (
            refused.reason == RefusalReason::StaleToken,
            refused.highest_seen,
        ),
        WriteOutcome::Admitted(_) => (false, None),
    };
    shared.records().paused = Some(Paused {
        worker: name.to_owned(),
        token,
        session: session.id().0,
        refused_stale,
        highest_seen,
        paused_ms,
    });
    let reason = if session.is_lost() {
        "its lease was lost"
    } else {
        "the fence refused it"
    };
    note(format!("notices {reason}; stops writing and gives up"));
    drop(guard);
    // Closing a session the cluster already ended is not an error.
    let _ = tokio::time::timeout(Duration::from_secs(2), session.close()).await;
    Ok(())
}

async fn append(
    shared: &Shared,
    name: &str,
    token: u64,
    body: &str,
) -> anyhow::Result<WriteOutcome> {
    let written = shared
        .kv
        .append(KEY, LOCK, token, body.to_owned())
        .await
        .context("the fenced service did not answer")?;
    let (seq, write) = match &written {
        WriteOutcome::Admitted(admitted) => (
            admitted.seq,
            Write {
                worker: name.to_owned(),
                token,
                body: body.to_owned(),
                admitted: true,
            },
        ),
        WriteOutcome::Refused(refused) => (
            refused.seq,
            Write {
                worker: name.to_owned(),
                token,
                body: body.to_owned(),
                admitted: false,
            },
        ),
    };
    shared.records().writes.insert(seq, write);
    Ok(written)
}

fn describe_write(body: &str, written: &WriteOutcome) -> String {
    match written {
        WriteOutcome::Admitted(admitted) => format!(
            "append {:?} -> admitted by the fence (version {})",
            body.trim_end(),
            admitted.version
        ),
        WriteOutcome::Refused(refused) => format!(
            "append {:?} -> REFUSED by the fence: 409 {} (highest token seen {})",
            body.trim_end(),
            refused.reason.as_str(),
            refused
                .highest_seen
                .map_or_else(|| "none".to_owned(), |t| t.to_string())
        ),
    }
}

/// The outcome of the checks.
struct Check {
    grants: Vec<(String, u64)>,
    watched_tokens: Vec<u64>,
    admitted: usize,
    refused: usize,
    paused: Option<Paused>,
    paused_expired: bool,
    passed_on_to: Option<(String, u64)>,
    tokens_increasing: bool,
    fence_monotonic: bool,
    fold_matches: bool,
    final_len: usize,
    failures: Vec<String>,
    notes: Vec<String>,
}

impl Check {
    fn story_ok(&self) -> bool {
        self.paused
            .as_ref()
            .is_some_and(|p| p.refused_stale && p.highest_seen.is_some_and(|h| h > p.token))
            && self.paused_expired
            && self.passed_on_to.is_some()
    }

    fn ok(&self) -> bool {
        self.story_ok()
            && self.tokens_increasing
            && self.fence_monotonic
            && self.fold_matches
            && self.failures.is_empty()
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.story_ok() {
            problems.push(
                "the paused holder's write was not refused as stale after its session expired"
                    .to_owned(),
            );
        }
        if !self.tokens_increasing {
            problems.push("grant tokens did not strictly increase".to_owned());
        }
        if !self.fence_monotonic {
            problems.push("the fence admitted a lower token after a higher one".to_owned());
        }
        if !self.fold_matches {
            problems.push("the final value is not the fold of the admitted appends".to_owned());
        }
        problems.extend(self.failures.iter().cloned());
        problems.extend(self.notes.iter().cloned());
        problems
    }

    fn json(&self, seed: u64, elapsed_ms: u64) -> Value {
        json!({
            "ok": self.ok(),
            "seed": seed,
            "elapsed_ms": elapsed_ms,
            "nodes": NODES,
            "lock": LOCK,
            "key": KEY,
            "ttl_ms": TTL.as_millis() as u64,
            "grants": self.grants.len(),
            "grant_tokens": self.watched_tokens,
            "grants_by_worker": self.grants.iter().map(|(w, t)| json!({"worker": w, "token": t})).collect::<Vec<_>>(),
            "writes_admitted": self.admitted,
            "writes_refused": self.refused,
            "paused": self.paused.as_ref().map(|p| json!({
                "worker": p.worker,
                "token": p.token,
                "session": p.session,
                "paused_ms": p.paused_ms,
                "session_expired": self.paused_expired,
                "lock_passed_to": self.passed_on_to.as_ref().map(|(w, t)| json!({"worker": w, "token": t})),
                "write_refused": p.refused_stale,
                "refusal": if p.refused_stale { Some("stale token") } else { None },
                "highest_seen": p.highest_seen,
            })),
            "story_ok": self.story_ok(),
            "invariants": {
                "tokens_strictly_increasing": self.tokens_increasing,
                "no_lower_token_admitted_after_higher": self.fence_monotonic,
                "final_value_is_fold_of_admitted_appends": self.fold_matches,
            },
            "final_value_len": self.final_len,
            "problems": self.problems(),
        })
    }

    fn text(&self, elapsed_ms: u64) -> String {
        use std::fmt::Write as _;
        let mark = |ok: bool| if ok { "[ok]    " } else { "[FAILED]" };
        let mut out = String::from("\nsummary\n");
        let tokens = self
            .watched_tokens
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            out,
            "  grants:     {} (tokens in grant order: {tokens})",
            self.grants.len()
        );
        let _ = writeln!(
            out,
            "  writes:     {} admitted, {} refused by the fence",
            self.admitted, self.refused
        );
        if let Some(p) = &self.paused {
            let _ = writeln!(
                out,
                "  paused:     {} held token {} and was paused {} ms; its session {}",
                p.worker,
                p.token,
                p.paused_ms,
                if self.paused_expired {
                    "expired on the cluster"
                } else {
                    "did NOT expire"
                }
            );
            if let Some((worker, token)) = &self.passed_on_to {
                let _ = writeln!(
                    out,
                    "              the lock passed on to {worker} with token {token}"
                );
            }
            let _ = writeln!(
                out,
                "              its write after the pause was {}",
                if p.refused_stale {
                    format!(
                        "REFUSED by the fence (stale token {} < {})",
                        p.token,
                        p.highest_seen.unwrap_or_default()
                    )
                } else {
                    "NOT refused".to_owned()
                }
            );
        }
        let _ = writeln!(out, "  invariants:");
        let _ = writeln!(
            out,
            "    {} grant tokens strictly increase",
            mark(self.tokens_increasing)
        );
        let _ = writeln!(
            out,
            "    {} the fence never admitted a lower token after a higher one",
            mark(self.fence_monotonic)
        );
        let _ = writeln!(
            out,
            "    {} the final value ({} bytes) is the fold of the admitted appends in the decision log",
            mark(self.fold_matches),
            self.final_len
        );
        let _ = writeln!(
            out,
            "    {} the paused holder's write was refused after the lock passed on",
            mark(self.story_ok())
        );
        for problem in self.failures.iter().chain(&self.notes) {
            let _ = writeln!(out, "  problem: {problem}");
        }
        let _ = writeln!(
            out,
            "  result:     {} in {:.1} s",
            if self.ok() {
                "OK: the fencing token stopped the paused client"
            } else {
                "FAILED"
            },
            elapsed_ms as f64 / 1000.0
        );
        out
    }
}

async fn check(shared: &Shared) -> anyhow::Result<Check> {
    let (entries, missed) = shared
        .kv
        .log_all(1)
        .await
        .context("cannot read the fenced service's decision log")?;
    let value = shared
        .kv
        .get(KEY)
        .await
        .context("cannot read the final value")?
        .map(|v| v.value)
        .unwrap_or_default();
    let records = shared.records();
    let mut notes = Vec::new();

    // 1. Grant tokens strictly increase, in the order the cluster applied them.
    let mut watched = records.watched_grants.clone();
    watched.sort_unstable();
    let watched_tokens: Vec<u64> = watched.iter().map(|(_, t, _)| *t).collect();
    let mut tokens_increasing = watched_tokens.windows(2).all(|w| w[0] < w[1]);
    let mut worker_tokens: Vec<u64> = records.grants.iter().map(|(_, t)| *t).collect();
    worker_tokens.sort_unstable();
    if worker_tokens != watched_tokens {
        notes.push(format!(
            "the watch saw grants {watched_tokens:?} but the workers were granted {worker_tokens:?}"
        ));
        tokens_increasing = false;
    }
    if records.extra_resyncs > 0 {
        notes.push("the watch resynced: some events may be missing".to_owned());
    }

    // 2. No admitted write with a lower token after a higher one; refusals are stale.
    let mut fence_monotonic = missed == 0;
    let mut highest = 0;
    let (mut admitted, mut refused) = (0, 0);
    let mut fold = Vec::new();
    let mut fold_matches = missed == 0;
    for entry in &entries {
        let ours = records.writes.get(&entry.seq);
        if entry.admitted {
            admitted += 1;
            if entry.token < highest {
                fence_monotonic = false;
            }
            highest = highest.max(entry.token);
            match ours {
                Some(write)
                    if write.admitted
                        && write.token == entry.token
                        && fencelock_fenced_kv::body_hash(write.body.as_bytes())
                            == entry.body_hash =>
                {
                    fold.extend_from_slice(write.body.as_bytes());
                }
                _ => fold_matches = false,
            }
        } else {
            refused += 1;
            if entry.highest_seen.is_none_or(|h| h <= entry.token) {
                fence_monotonic = false;
            }
        }
    }
    if entries.len() != records.writes.len() {
        notes.push(format!(
            "the decision log has {} entries for {} writes sent",
            entries.len(),
            records.writes.len()
        ));
        fold_matches = false;
    }
    // 3. The final value is the fold of the admitted appends.
    fold_matches &= fold == value;

    let paused = records.paused.clone();
    let paused_expired = paused.as_ref().is_some_and(|p| {
        records
            .expired
            .iter()
            .any(|(session, token)| *session == p.session && *token == p.token)
    });
    let passed_on_to = paused.as_ref().and_then(|p| {
        records
            .grants
            .iter()
            .filter(|(worker, token)| *worker != p.worker && *token > p.token)
            .min_by_key(|(_, token)| *token)
            .cloned()
    });
    let refused_others = records
        .writes
        .values()
        .filter(|w| !w.admitted)
        .filter(|w| paused.as_ref().is_none_or(|p| p.worker != w.worker))
        .count();
    if refused_others > 0 {
        notes.push(format!(
            "{refused_others} other write(s) were refused too (a worker's lease lapsed on a slow machine; the fence did its job)"
        ));
    }
    Ok(Check {
        grants: records.grants.clone(),
        watched_tokens,
        admitted,
        refused,
        paused,
        paused_expired,
        passed_on_to,
        tokens_increasing,
        fence_monotonic,
        fold_matches,
        final_len: value.len(),
        failures: records.failures.clone(),
        notes,
    })
}
