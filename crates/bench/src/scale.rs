//! The `scale` part: how the cost of a restart, of a new member's catch-up and of
//! keepalives grows with the data a 3-node fencelock cluster holds.
//!
//! At each point (locks, sessions), on a fresh 3-node cluster:
//! 1. `sessions` sessions (TTL 10 s) are kept alive for `keepalive_secs` over a few
//!    multiplexed keepalive streams (the `sessions` workload), then closed;
//! 2. `sessions` sessions (TTL 1 h, so no restart below ends one) open and take
//!    `locks` locks between them;
//! 3. `runs` times, a follower is stopped (SIGTERM) and started again on its data: from
//!    its start to its `Status` naming a leader with itself a member (what `/health`
//!    checks), and to its applied index reaching the leader's commit index;
//! 4. `runs` times, the whole cluster is stopped and started again: from the start to
//!    a known leader, the first write (`OpenSession`) and the first linearizable read
//!    (`Describe` of a held lock) that succeed;
//! 5. `runs` times, a new node joins with `serve --join-via` and catches up through a
//!    snapshot; it is removed again (`RemoveMember`) and its data deleted.
//!
//! Every node logs how its start-up went ("data restored": the log's opening, the
//! snapshot's load, the replay of the committed entries after it) and each snapshot it
//! installs, one JSON line each; the part reads them back from the node logs. Every
//! step is bounded in time; the cluster's data is deleted after each point.

use crate::procs::{Proc, free_port};
use crate::systems::{Binaries, Cluster, Kind, Spec, fencelock_status};
use crate::workloads::{self, SessionsResult};
use anyhow::{Context, Result, bail};
use fencelock_proto::v1::{
    AcquireOutcome, AcquireRequest, CloseSessionRequest, DescribeRequest, OpenSessionRequest,
    RemoveMemberRequest, RequestId, cluster_client::ClusterClient, locks_client::LocksClient,
};
use futures::StreamExt;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// One size the part is run at.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Size {
    /// Locks held.
    pub locks: u64,
    /// Sessions open (holding the locks between them), and kept alive in step 1.
    pub sessions: u64,
}

impl std::str::FromStr for Size {
    type Err = String;

    /// `LOCKS:SESSIONS`, e.g. `1000000:100000`.
    fn from_str(s: &str) -> Result<Size, String> {
        let (locks, sessions) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected LOCKS:SESSIONS"))?;
        let parse = |v: &str| {
            v.trim()
                .replace('_', "")
                .parse::<u64>()
                .map_err(|e| format!("{v:?}: {e}"))
        };
        let size = Size {
            locks: parse(locks)?,
            sessions: parse(sessions)?,
        };
        if size.sessions == 0 {
            return Err(format!("{s:?}: at least one session"));
        }
        Ok(size)
    }
}

/// How the part is run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The sizes, in order.
    pub sizes: Vec<Size>,
    /// Restarts and joins per size (medians are reported).
    pub runs: usize,
    /// How long the sessions of step 1 are kept alive; 0 skips the step.
    pub keepalive_secs: f64,
    /// Upper bound of taking the locks, seconds.
    pub populate_secs: f64,
    /// Upper bound of one restart or join, seconds.
    pub ready_secs: f64,
    /// The nodes' `--snapshot-every` (`None`: the server's default).
    pub snapshot_every: Option<u64>,
}

/// TTL of the sessions that hold the locks: long enough that none ends while the
/// cluster is down (a new leader restarts every deadline at a full TTL).
const HOLDER_TTL: Duration = Duration::from_secs(3600);
/// Connections the locks are taken over.
const CHANNELS: usize = 8;
/// Sessions taking their locks at once.
const CONCURRENT_SESSIONS: usize = 256;
/// Failed calls one session's lock-taking may retry.
const MAX_TRIES: u32 = 50;
/// How long a step waits for a leader before it fails.
const LEADER_WAIT: Duration = Duration::from_secs(60);
/// How often a start-up is probed.
const PROBE_EVERY: Duration = Duration::from_millis(50);
/// Log filter of the nodes: warnings, and the start-up and snapshot-install lines.
pub const LOG_FILTER: &str =
    "warn,fencelock_server::startup=info,fencelock_server::store::state_machine=info";

/// What one node logged about restoring its data at start-up ("data restored").
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Restored {
    /// Opening the log (files verified, the write-ahead file read), ms.
    pub log_open_ms: u64,
    /// Reading, checking and decoding the newest snapshot, ms.
    pub snapshot_load_ms: u64,
    /// The snapshot's last index.
    pub snapshot_index: u64,
    /// Applying the committed entries after the snapshot (inside openraft's start), ms.
    pub log_replay_ms: u64,
    /// How many entries that was.
    pub entries_replayed: u64,
    /// Locks in the restored state.
    pub locks: u64,
    /// Sessions in the restored state.
    pub sessions: u64,
}

/// What a node logged when it installed a snapshot from the leader.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Installed {
    /// Snapshot size, bytes.
    pub bytes: u64,
    /// Checking and decoding it, ms.
    pub decode_ms: u64,
    /// Decoding, writing and syncing it and replacing the state, ms.
    pub install_ms: u64,
}

/// One restart of one node or of the whole cluster.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Restart {
    /// From the process start(s) to serving: a node naming a leader with itself a
    /// member (what `/health` checks); for the whole cluster, a leader known to all.
    pub serving_ms: f64,
    /// One node: until its applied index reached the leader's commit index at its start.
    pub caught_up_ms: Option<f64>,
    /// Whole cluster: until the first write (`OpenSession`) that succeeded.
    pub write_ms: Option<f64>,
    /// Whole cluster: until the first linearizable read (`Describe`) that succeeded.
    pub read_ms: Option<f64>,
    /// What each restarted node logged (the slowest node's load first).
    pub restored: Vec<Restored>,
}

/// One new member's catch-up.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Join {
    /// The leader's commit index when the new node started.
    pub target_index: u64,
    /// From the start of `serve --join-via` to its applied index reaching that target.
    pub caught_up_ms: f64,
    /// From its start to its own membership naming it a voter.
    pub voter_ms: Option<f64>,
    /// The snapshot it installed, as it logged it.
    pub installed: Option<Installed>,
}

/// The results at one size.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Point {
    /// Locks asked for.
    pub locks: u64,
    /// Sessions asked for.
    pub sessions: u64,
    /// Step 1.
    pub keepalive: Option<SessionsResult>,
    /// Locks held after step 2 (the leader's count).
    pub locks_held: u64,
    /// Sessions open after step 2.
    pub sessions_open: u64,
    /// Seconds step 2 took.
    pub populate_secs: f64,
    /// Each node's data directory on disk after step 2 (allocated blocks), bytes.
    pub disk_bytes: Vec<u64>,
    /// The largest snapshot file of node 1, bytes.
    pub snapshot_bytes: u64,
    /// The oldest of the nodes' newest snapshots, by last index, after step 2.
    pub snapshot_index: u64,
    /// Step 3.
    pub node_restarts: Vec<Restart>,
    /// Step 4.
    pub cluster_restarts: Vec<Restart>,
    /// Step 5.
    pub joins: Vec<Join>,
    /// Steps that failed, with why.
    pub errors: Vec<String>,
}

/// Runs the part at every size, each on a fresh cluster under `root`, whose data is
/// deleted afterwards (unless `bins.keep_data`).
pub async fn run(
    options: &Options,
    bins: &Binaries,
    root: &Path,
    bar: &ProgressBar,
    mut progress: impl FnMut(String),
) -> Result<Vec<Point>> {
    let mut bins = bins.clone();
    bins.fencelock_log_level = LOG_FILTER.to_owned();
    bins.fencelock_extra_args = vec!["--log-format".into(), "json".into()];
    if let Some(every) = options.snapshot_every {
        bins.fencelock_extra_args
            .extend(["--snapshot-every".into(), every.to_string()]);
    }
    let mut points = Vec::new();
    for &size in &options.sizes {
        progress(format!(
            "scale {} locks / {} sessions: starting",
            size.locks, size.sessions
        ));
        let mut cluster = Cluster::start(Spec::new(Kind::Fencelock, 3), &bins, root).await?;
        let mut point = Point {
            locks: size.locks,
            sessions: size.sessions,
            ..Point::default()
        };
        let outcome = measure(
            options,
            &bins,
            &mut cluster,
            size,
            &mut point,
            bar,
            &mut progress,
        )
        .await;
        if let Err(e) = outcome {
            point.errors.push(format!("{e:#}"));
        }
        cluster.stop();
        points.push(point);
    }
    Ok(points)
}

async fn measure(
    options: &Options,
    bins: &Binaries,
    cluster: &mut Cluster,
    size: Size,
    point: &mut Point,
    bar: &ProgressBar,
    progress: &mut impl FnMut(String),
) -> Result<()> {
    let ready = Duration::from_secs_f64(options.ready_secs);
    if options.keepalive_secs > 0.0 {
        progress(format!("scale: {} sessions kept alive", size.sessions));
        let secs = Duration::from_secs_f64(options.keepalive_secs);
        let r = tokio::time::timeout(
            secs + Duration::from_secs(600),
            workloads::sessions(cluster, size.sessions, secs, bar),
        )
        .await
        .context("keepalive step did not finish")??;
        progress(format!(
            "scale: keepalive p50 {:.2} ms, p99 {:.2} ms, leader CPU {:.1}%, lost {}, alive at end {:?}",
            r.p50_ms, r.p99_ms, r.leader_cpu_pct, r.lost, r.alive_at_end
        ));
        point.keepalive = Some(r);
    }

    progress(format!(
        "scale: taking {} locks in {} sessions",
        size.locks, size.sessions
    ));
    let started = Instant::now();
    populate(
        cluster,
        size,
        Duration::from_secs_f64(options.populate_secs),
        bar,
    )
    .await?;
    point.populate_secs = started.elapsed().as_secs_f64();
    let leader = wait_leader(cluster).await?;
    let status = cluster.status(leader).await?;
    point.locks_held = status.locks;
    point.sessions_open = status.sessions;
    progress(format!(
        "scale: {} locks, {} sessions in {:.0} s",
        status.locks, status.sessions, point.populate_secs
    ));
    if status.locks < size.locks {
        bail!(
            "only {} of {} locks taken within {} s",
            status.locks,
            size.locks,
            options.populate_secs
        );
    }
    // A node takes a snapshot every `snapshot_every` entries: small writes until every
    // node's newest snapshot holds all the locks, so that restarts load them from a
    // snapshot and a new member receives them in one.
    progress("scale: waiting for snapshots that hold every lock".into());
    point.snapshot_index = settle_snapshots(
        cluster,
        status.commit_index,
        Duration::from_secs_f64(options.ready_secs),
    )
    .await?;
    point.disk_bytes = (1..=3)
        .map(|n| disk_bytes(&cluster.dir().join(format!("node-{n}"))))
        .collect();
    point.snapshot_bytes = largest_file(&cluster.dir().join("node-1/snapshots"));

    for run in 0..options.runs {
        progress(format!(
            "scale: one node restart {}/{}",
            run + 1,
            options.runs
        ));
        let r = restart_one(cluster, ready).await;
        record(
            &mut point.node_restarts,
            &mut point.errors,
            "node restart",
            r,
            progress,
        );
    }
    for run in 0..options.runs {
        progress(format!(
            "scale: cluster restart {}/{}",
            run + 1,
            options.runs
        ));
        let r = restart_all(cluster, ready).await;
        record(
            &mut point.cluster_restarts,
            &mut point.errors,
            "cluster restart",
            r,
            progress,
        );
    }
    for run in 0..options.runs {
        progress(format!("scale: new member {}/{}", run + 1, options.runs));
        let r = join(cluster, bins, 4 + run as u64, ready).await;
        record(&mut point.joins, &mut point.errors, "join", r, progress);
    }
    Ok(())
}

fn record<T: std::fmt::Debug>(
    into: &mut Vec<T>,
    errors: &mut Vec<String>,
    what: &str,
    result: Result<T>,
    progress: &mut impl FnMut(String),
) {
    match result {
        Ok(r) => {
            progress(format!("scale: {what}: {r:?}"));
            into.push(r);
        }
        Err(e) => {
            progress(format!("scale: {what} failed: {e:#}"));
            errors.push(format!("{what}: {e:#}"));
        }
    }
}

/// Opens `size.sessions` sessions and takes `size.locks` locks between them (lock `k`
/// in session `k % sessions`, each session's locks one after the other), over raw
/// gRPC calls to the leader.
async fn populate(cluster: &Cluster, size: Size, limit: Duration, bar: &ProgressBar) -> Result<()> {
    let deadline = Instant::now() + limit;
    let leader = wait_leader(cluster).await?;
    let addr = format!("http://{}", cluster.client_addrs[leader]);
    let mut channels = Vec::new();
    for _ in 0..CHANNELS {
        channels.push(
            tonic::transport::Endpoint::from_shared(addr.clone())?
                .connect()
                .await?,
        );
    }
    bar.reset();
    bar.set_length(size.locks);
    let results: Vec<Result<()>> = futures::stream::iter(0..size.sessions)
        .map(|s| {
            let ch = channels[s as usize % CHANNELS].clone();
            let bar = bar.clone();
            async move {
                let mut client = LocksClient::new(ch);
                // Both calls are safe to repeat (the client id makes the open
                // idempotent, the request id the acquire): a call that failed, say
                // because the leader changed, is sent again to the leader.
                let open = OpenSessionRequest {
                    client_id: uuid::Uuid::new_v4().as_bytes().to_vec(),
                    ttl_ms: HOLDER_TTL.as_millis() as u64,
                };
                let mut tries = 0;
                let session = loop {
                    match client.open_session(open.clone()).await {
                        Ok(answer) => break answer.into_inner().session_id,
                        Err(e) => retry(cluster, &mut client, &mut tries, deadline, e).await?,
                    }
                };
                // Request ids count from 1; each answer arrives before the next request.
                for (seq, k) in (1..).zip((s..size.locks).step_by(size.sessions as usize)) {
                    let acquire = AcquireRequest {
                        session_id: session,
                        name: format!("scale/{k}"),
                        request: Some(RequestId {
                            seq,
                            first_unanswered_seq: seq,
                        }),
                        ..AcquireRequest::default()
                    };
                    let answer = loop {
                        match client.acquire(acquire.clone()).await {
                            Ok(answer) => break answer.into_inner(),
                            Err(e) => retry(cluster, &mut client, &mut tries, deadline, e).await?,
                        }
                    };
                    if answer.outcome != AcquireOutcome::Granted as i32 {
                        bail!("lock scale/{k}: {:?}", answer.outcome());
                    }
                    bar.inc(1);
                }
                Ok(())
            }
        })
        .buffer_unordered(CONCURRENT_SESSIONS)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(())
}

/// After a failed call: gives up after [`MAX_TRIES`] failures of one session's calls or
/// past `deadline`; otherwise waits a moment and points `client` at the leader.
async fn retry(
    cluster: &Cluster,
    client: &mut LocksClient<tonic::transport::Channel>,
    tries: &mut u32,
    deadline: Instant,
    error: tonic::Status,
) -> Result<()> {
    *tries += 1;
    if *tries > MAX_TRIES || Instant::now() > deadline {
        bail!("giving up after {tries} tries: {error}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    if let Ok(Some(leader)) = cluster.leader().await
        && let Ok(c) =
            LocksClient::connect(format!("http://{}", cluster.client_addrs[leader])).await
    {
        *client = c;
    }
    Ok(())
}

/// The last index of the newest snapshot file in `dir` (0 if none).
fn newest_snapshot(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (_term, index) = name
                .strip_prefix("snapshot-")?
                .strip_suffix(".bin")?
                .split_once('-')?;
            index.parse::<u64>().ok()
        })
        .max()
        .unwrap_or(0)
}

/// Sends small writes (a session opened and closed, one at a time, so each is an entry
/// of its own) until every node's newest snapshot reaches `index`; returns the oldest
/// of those snapshots' indexes.
async fn settle_snapshots(cluster: &Cluster, index: u64, limit: Duration) -> Result<u64> {
    let deadline = Instant::now() + limit;
    let leader = wait_leader(cluster).await?;
    let mut client =
        LocksClient::connect(format!("http://{}", cluster.client_addrs[leader])).await?;
    loop {
        let oldest = (1..=3)
            .map(|n| newest_snapshot(&cluster.dir().join(format!("node-{n}/snapshots"))))
            .min()
            .unwrap_or(0);
        if oldest >= index {
            return Ok(oldest);
        }
        if Instant::now() > deadline {
            bail!("no snapshot at index {index} on every node within {limit:?} (oldest {oldest})");
        }
        let mut tries = 0;
        for _ in 0..100 {
            let open = client
                .open_session(OpenSessionRequest {
                    client_id: uuid::Uuid::new_v4().as_bytes().to_vec(),
                    ttl_ms: 10_000,
                })
                .await;
            let closed = match open {
                Ok(answer) => {
                    let session_id = answer.into_inner().session_id;
                    client
                        .close_session(CloseSessionRequest { session_id })
                        .await
                        .map(drop)
                }
                Err(e) => Err(e),
            };
            if let Err(e) = closed {
                retry(cluster, &mut client, &mut tries, deadline, e).await?;
            }
        }
    }
}

/// Stops a follower and starts it again on its data.
async fn restart_one(cluster: &mut Cluster, limit: Duration) -> Result<Restart> {
    let leader = wait_leader(cluster).await?;
    let node = (leader + 1) % 3;
    cluster.stop_node(node, Duration::from_secs(30));
    let target = cluster.status(leader).await?.commit_index;
    let log_from = file_len(cluster.log_path(node));
    let started = Instant::now();
    let deadline = started + limit;
    cluster.spawn(node)?;
    let mut restart = Restart::default();
    loop {
        check_alive(cluster)?;
        if let Ok(s) = cluster.status(node).await {
            let member = s.members.iter().any(|m| m.id == s.node_id);
            if s.leader_id != 0 && member && restart.serving_ms == 0.0 {
                restart.serving_ms = ms(started);
            }
            if restart.serving_ms > 0.0 && s.applied_index >= target {
                restart.caught_up_ms = Some(ms(started));
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("node {} not caught up after {limit:?}", node + 1);
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
    restart.restored = logged(cluster.log_path(node), log_from, "data restored")
        .into_iter()
        .collect();
    Ok(restart)
}

/// Stops every node, starts them all again on their data, and times the first leader,
/// write and read.
async fn restart_all(cluster: &mut Cluster, limit: Duration) -> Result<Restart> {
    for node in 0..3 {
        cluster.stop_node(node, Duration::from_secs(30));
    }
    let log_from: Vec<u64> = (0..3).map(|n| file_len(cluster.log_path(n))).collect();
    let started = Instant::now();
    let deadline = started + limit;
    for node in 0..3 {
        cluster.spawn(node)?;
    }
    let mut restart = Restart::default();
    while restart.serving_ms == 0.0 || restart.write_ms.is_none() || restart.read_ms.is_none() {
        check_alive(cluster)?;
        if restart.serving_ms == 0.0 && matches!(cluster.leader().await, Ok(Some(_))) {
            restart.serving_ms = ms(started);
        }
        for addr in &cluster.client_addrs {
            if restart.write_ms.is_none() && try_write(addr).await.is_ok() {
                restart.write_ms = Some(ms(started));
            }
            if restart.read_ms.is_none() && try_read(addr).await.is_ok() {
                restart.read_ms = Some(ms(started));
            }
        }
        if Instant::now() > deadline {
            bail!("cluster not serving after {limit:?}: {restart:?}");
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
    restart.restored = (0..3)
        .filter_map(|n| logged(cluster.log_path(n), log_from[n], "data restored"))
        .collect();
    restart
        .restored
        .sort_by_key(|r: &Restored| std::cmp::Reverse(r.snapshot_load_ms + r.log_replay_ms));
    Ok(restart)
}

/// One write: a session opened and closed again.
async fn try_write(addr: &str) -> Result<()> {
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut client = LocksClient::connect(format!("http://{addr}")).await?;
        let session = client
            .open_session(OpenSessionRequest {
                client_id: uuid::Uuid::new_v4().as_bytes().to_vec(),
                ttl_ms: 10_000,
            })
            .await?
            .into_inner()
            .session_id;
        let _ = client
            .close_session(CloseSessionRequest {
                session_id: session,
            })
            .await;
        anyhow::Ok(())
    })
    .await?
}

/// One linearizable read of a lock the cluster holds.
async fn try_read(addr: &str) -> Result<()> {
    tokio::time::timeout(Duration::from_secs(5), async {
        let mut client = LocksClient::connect(format!("http://{addr}")).await?;
        let answer = client
            .describe(DescribeRequest {
                name: "scale/0".into(),
            })
            .await?
            .into_inner();
        if answer.lock.is_none() {
            bail!("scale/0 is not held");
        }
        anyhow::Ok(())
    })
    .await?
}

/// Starts node `id` with `serve --join-via`, waits until it has caught up and is a
/// voter, then removes it and deletes its data.
async fn join(cluster: &mut Cluster, bins: &Binaries, id: u64, limit: Duration) -> Result<Join> {
    let leader = wait_leader(cluster).await?;
    let target = cluster.status(leader).await?.commit_index;
    let dir = cluster.dir().join(format!("node-{id}"));
    let log = cluster.dir().join(format!("node-{id}.log"));
    let client = format!("127.0.0.1:{}", free_port()?);
    let mut cmd = Command::new(&bins.fencelock);
    cmd.arg("serve")
        .args(["--worker-threads", "1"])
        .args(["--id", &id.to_string()])
        .args(["--listen", &client])
        .args(["--peer-listen", &format!("127.0.0.1:{}", free_port()?)])
        .args(["--admin", &format!("127.0.0.1:{}", free_port()?)])
        .arg("--data-dir")
        .arg(&dir)
        .args(["--join-via", &cluster.client_addrs.join(",")])
        .args(["--log-level", &bins.fencelock_log_level])
        .args(&bins.fencelock_extra_args);
    let started = Instant::now();
    let deadline = started + limit;
    let mut proc = Proc::spawn(format!("scale node {id}"), cmd, &log)?;
    let mut join = Join {
        target_index: target,
        ..Join::default()
    };
    let outcome = async {
        loop {
            if !proc.alive() {
                bail!("node {id} exited; its log is {}", log.display());
            }
            if let Ok(s) = fencelock_status(&client).await {
                if join.voter_ms.is_none() && s.members.iter().any(|m| m.id == id && m.voter) {
                    join.voter_ms = Some(ms(started));
                }
                if join.caught_up_ms == 0.0 && s.applied_index >= target {
                    join.caught_up_ms = ms(started);
                }
                if join.caught_up_ms > 0.0 && join.voter_ms.is_some() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!("node {id} did not catch up within {limit:?}: {join:?}");
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }
    .await;
    join.installed = logged(&log, 0, "snapshot installed");
    // Back to three voters, whatever happened.
    let removed = remove_member(cluster, id).await;
    proc.stop(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&dir);
    outcome?;
    removed?;
    Ok(join)
}

async fn remove_member(cluster: &Cluster, id: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = async {
            let leader = wait_leader(cluster).await?;
            let mut client =
                ClusterClient::connect(format!("http://{}", cluster.client_addrs[leader])).await?;
            client.remove_member(RemoveMemberRequest { id }).await?;
            anyhow::Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) if Instant::now() > deadline => return Err(e),
            Err(_) if Instant::now() > deadline => bail!("removing node {id} timed out"),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// The leader (0-based), waiting up to [`LEADER_WAIT`] for one: an election may be
/// under way on a loaded machine.
async fn wait_leader(cluster: &Cluster) -> Result<usize> {
    let deadline = Instant::now() + LEADER_WAIT;
    loop {
        if let Ok(Some(leader)) = cluster.leader().await {
            return Ok(leader);
        }
        if Instant::now() > deadline {
            bail!("no leader within {LEADER_WAIT:?}");
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

fn check_alive(cluster: &mut Cluster) -> Result<()> {
    for p in cluster.procs.iter_mut().flatten() {
        if !p.alive() {
            bail!("{} exited", p.label);
        }
    }
    Ok(())
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The fields of the last JSON log line at or after byte `from` of `path` whose message
/// is `message`.
fn logged<T: for<'de> Deserialize<'de>>(path: &Path, from: u64, message: &str) -> Option<T> {
    let text = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(text.get(from as usize..)?);
    parse_logged(&text, message)
}

fn parse_logged<T: for<'de> Deserialize<'de>>(text: &str, message: &str) -> Option<T> {
    text.lines().rev().find_map(|line| {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        // `--log-format json` nests an event's fields under "fields"; a flattened line
        // has them at the top.
        let fields = value.get("fields").unwrap_or(&value);
        if fields.get("message")?.as_str()? != message {
            return None;
        }
        serde_json::from_value(fields.clone()).ok()
    })
}

/// Bytes a directory tree takes on disk (allocated blocks, as `du` counts them).
fn disk_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    walk(dir).iter().map(|m| m.blocks() * 512).sum()
}

/// The largest file directly in `dir`, bytes.
fn largest_file(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(std::fs::Metadata::is_file)
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
}

fn walk(dir: &Path) -> Vec<std::fs::Metadata> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                out.push(meta);
            }
        }
    }
    out
}

/// The median of `values` (the upper one of an even count); `None` when empty.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// The part's Markdown report: one table row per size, medians over the runs.
pub fn markdown(points: &[Point]) -> String {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let fmt = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{:.0}", v));
    let mut md = String::from(
        "## scale: restarts, a new member's catch-up and keepalives, by size (fencelock-3, medians)\n\n\
         | locks / sessions | data per node MiB (snapshot MiB) | one node: serving / caught up ms (snapshot load + replay ms) | whole cluster: leader / write / read ms (slowest node's load + replay ms) | new member caught up ms (snapshot install ms) | keepalive p50 / p99 ms | leader CPU % | sessions lost / alive at end |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for p in points {
        let node = |f: &dyn Fn(&Restart) -> Option<f64>| {
            median(p.node_restarts.iter().filter_map(f).collect())
        };
        let all = |f: &dyn Fn(&Restart) -> Option<f64>| {
            median(p.cluster_restarts.iter().filter_map(f).collect())
        };
        let load = |r: &Restart| r.restored.first().map(|x| x.snapshot_load_ms as f64);
        let replay = |r: &Restart| r.restored.first().map(|x| x.log_replay_ms as f64);
        let disk = p.disk_bytes.iter().copied().max().unwrap_or(0);
        let (keepalive, cpu, lost) = match &p.keepalive {
            Some(k) => (
                format!("{:.2} / {:.2}", k.p50_ms, k.p99_ms),
                format!("{:.1}", k.leader_cpu_pct),
                format!(
                    "{} / {}",
                    k.lost,
                    k.alive_at_end.map_or("?".to_owned(), |a| a.to_string())
                ),
            ),
            None => ("–".into(), "–".into(), "–".into()),
        };
        md.push_str(&format!(
            "| {} / {} | {:.0} ({:.0}) | {} / {} ({} + {}) | {} / {} / {} ({} + {}) | {} ({}) | {} | {} | {} |\n",
            p.locks_held,
            p.sessions_open,
            mib(disk),
            mib(p.snapshot_bytes),
            fmt(node(&|r| Some(r.serving_ms))),
            fmt(node(&|r| r.caught_up_ms)),
            fmt(node(&load)),
            fmt(node(&replay)),
            fmt(all(&|r| Some(r.serving_ms))),
            fmt(all(&|r| r.write_ms)),
            fmt(all(&|r| r.read_ms)),
            fmt(all(&load)),
            fmt(all(&replay)),
            fmt(median(p.joins.iter().map(|j| j.caught_up_ms).collect())),
            fmt(median(
                p.joins
                    .iter()
                    .filter_map(|j| j.installed.as_ref().map(|i| i.install_ms as f64))
                    .collect()
            )),
            keepalive,
            cpu,
            lost,
        ));
    }
    for p in points {
        for e in &p.errors {
            md.push_str(&format!("\n{} locks: {e}\n", p.locks));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_refuse_nonsense() {
        let size: Size = "1_000_000:100000".parse().expect("parses");
        assert_eq!((size.locks, size.sessions), (1_000_000, 100_000));
        assert!("1000".parse::<Size>().is_err());
        assert!("1000:0".parse::<Size>().is_err());
        assert!("x:1".parse::<Size>().is_err());
    }

    #[test]
    fn the_last_matching_log_line_is_read() {
        let text = r#"{"timestamp":"t","level":"INFO","fields":{"message":"data restored","log_open_ms":1,"snapshot_load_ms":2,"snapshot_index":3,"log_replay_ms":4,"entries_replayed":5,"applied_index":8,"sessions":6,"locks":7},"target":"fencelock_server::startup"}
not json
{"timestamp":"t","level":"INFO","fields":{"message":"data restored","log_open_ms":10,"snapshot_load_ms":20,"snapshot_index":30,"log_replay_ms":40,"entries_replayed":50,"applied_index":80,"sessions":60,"locks":70},"target":"fencelock_server::startup"}
{"timestamp":"t","level":"INFO","fields":{"message":"snapshot installed","bytes":9,"index":1,"decode_ms":2,"install_ms":3},"target":"x"}
"#;
        let restored: Restored = parse_logged(text, "data restored").expect("found");
        assert_eq!(restored.snapshot_load_ms, 20);
        assert_eq!(restored.locks, 70);
        let installed: Installed = parse_logged(text, "snapshot installed").expect("found");
        assert_eq!((installed.bytes, installed.install_ms), (9, 3));
        assert!(parse_logged::<Restored>(text, "something else").is_none());
    }

    #[test]
    fn the_median_is_the_middle_value() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(Vec::new()), None);
    }
}
