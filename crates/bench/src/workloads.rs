//! The workloads, identical for every system, each bounded in operations and seconds.

use crate::drivers::{Connector, Grant, LockClient_};
use crate::systems::{Cluster, Kind};
use anyhow::{Context, Result, bail};
use futures::StreamExt;
use futures::stream::BoxStream;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A latency histogram in microseconds (1 µs .. 10 min, 3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// What one timed run measured.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Pairs or hand-offs completed.
    pub ops: u64,
    /// Wall time of the run.
    pub secs: f64,
    /// Operations that failed (counted, not timed).
    pub errors: u64,
    /// Latency percentiles, ms: p50, p99, max.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
    /// CPU seconds used by all server processes during the run.
    pub server_cpu_secs: f64,
    /// RSS of each node after the run, bytes.
    pub rss: Vec<u64>,
}

impl Sample {
    /// Operations per second.
    pub fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.ops as f64 / self.secs
        } else {
            0.0
        }
    }

    /// Server CPU microseconds per operation.
    pub fn cpu_us_per_op(&self) -> f64 {
        if self.ops > 0 {
            self.server_cpu_secs * 1e6 / self.ops as f64
        } else {
            0.0
        }
    }

    fn new(
        ops: u64,
        secs: f64,
        errors: u64,
        hist: &Histogram<u64>,
        cpu: f64,
        rss: Vec<u64>,
    ) -> Self {
        let ms = |v: u64| v as f64 / 1000.0;
        Sample {
            ops,
            secs,
            errors,
            p50_ms: ms(hist.value_at_quantile(0.50)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            max_ms: ms(hist.max()),
            server_cpu_secs: cpu,
            rss,
        }
    }
}

/// A lock/unlock loop shared by `seq`, `uncontended` and `contended`.
#[derive(Clone, Debug)]
pub struct PairLoad {
    /// Logical clients.
    pub clients: usize,
    /// Client `i` uses `names[i % names.len()]`.
    pub names: Vec<String>,
    /// Stop after this many lock+unlock pairs in all.
    pub total: u64,
    /// Or after this long.
    pub max_time: Duration,
    /// Busy work while holding the lock.
    pub critical: Option<Duration>,
    /// Time only the acquire (the wait, for `contended`) rather than the pair.
    pub time_acquire_only: bool,
}

/// Runs `load` with `clients` (made beforehand, handed back afterwards).
pub async fn run_pairs(
    clients: Vec<LockClient_>,
    cluster: &Cluster,
    load: &PairLoad,
    bar: &ProgressBar,
) -> Result<(Vec<LockClient_>, Sample)> {
    let claimed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let cpu_before = cluster.cpu_secs();
    let start = Instant::now();
    let deadline = start + load.max_time;
    let mut tasks = Vec::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        let name = load.names[i % load.names.len()].clone();
        let (claimed, errors, bar) = (claimed.clone(), errors.clone(), bar.clone());
        let (total, critical, acquire_only) = (load.total, load.critical, load.time_acquire_only);
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            let mut done = 0u64;
            while claimed.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                let t0 = Instant::now();
                let result = async {
                    let grant = client.lock(&name).await?;
                    let acquired = t0.elapsed();
                    if let Some(work) = critical {
                        let until = Instant::now() + work;
                        while Instant::now() < until {
                            std::hint::spin_loop();
                        }
                    }
                    client.unlock(grant).await?;
                    anyhow::Ok(acquired)
                }
                .await;
                match result {
                    Ok(acquired) => {
                        let took = if acquire_only { acquired } else { t0.elapsed() };
                        hist.saturating_record(took.as_micros() as u64);
                        done += 1;
                        bar.inc(1);
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            bar.println(format!("first error: {e:#}"));
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (client, hist, done)
        }));
    }
    let mut hist = histogram();
    let mut ops = 0;
    let mut clients = Vec::new();
    for task in tasks {
        let (client, h, done) = task.await?;
        hist.add(&h).context("merge histograms")?;
        ops += done;
        clients.push(client);
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cluster.cpu_secs() - cpu_before;
    let sample = Sample::new(
        ops,
        secs,
        errors.load(Ordering::Relaxed),
        &hist,
        cpu,
        cluster.rss_each(),
    );
    Ok((clients, sample))
}

/// Makes `n` logical clients.
pub async fn make_clients(connector: &Connector, n: usize) -> Result<Vec<LockClient_>> {
    let made = futures::stream::iter(0..n)
        .map(|i| connector.client(i))
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    made.into_iter().collect()
}

/// Ends every client's lease / session.
pub async fn close_clients(clients: Vec<LockClient_>) {
    futures::stream::iter(clients)
        .for_each_concurrent(32, LockClient_::close)
        .await;
}

/// The `sessions` workload's results.
#[derive(Clone, Debug, Serialize)]
pub struct SessionsResult {
    /// Sessions (leases) opened and kept alive.
    pub sessions: u64,
    /// Seconds of keepalive traffic measured.
    pub secs: f64,
    /// Keepalives answered OK.
    pub keepalives_ok: u64,
    /// Keepalive round trip, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
    /// Sessions the server reported gone (must be 0).
    pub lost: u64,
    /// Keepalives answered "not leader" or failed.
    pub errors: u64,
    /// The leader's CPU during the keepalive phase, % of one core.
    pub leader_cpu_pct: f64,
    /// The leader's RSS at the end, bytes.
    pub leader_rss: u64,
    /// fencelock only: the live sessions the leader counted at the end, before they were
    /// closed (the cluster held no others, so every one is still alive when this equals
    /// `sessions`).
    pub alive_at_end: Option<u64>,
}

/// How a keepalive was answered.
enum KeepAliveAnswer {
    Ok,
    Lost,
    Error,
}

/// `sessions` leases kept alive (TTL 10 s, a keepalive every TTL/3 per session, spread
/// evenly over 4 streams to the leader) for `duration`. fencelock and etcd only.
pub async fn sessions(
    cluster: &Cluster,
    count: u64,
    duration: Duration,
    bar: &ProgressBar,
) -> Result<SessionsResult> {
    const STREAMS: usize = 4;
    const TTL: Duration = Duration::from_secs(10);
    let leader = cluster.leader().await?.context("no leader")?;
    let addr = format!("http://{}", cluster.client_addrs[leader]);
    let mut channels = Vec::new();
    for _ in 0..STREAMS {
        channels.push(
            tonic::transport::Endpoint::from_shared(addr.clone())?
                .connect()
                .await?,
        );
    }
    let kind = cluster.spec.kind;
    bar.set_message(format!("{}: opening {count} sessions", cluster.spec));

    // One session per stream first: etcd sends a stream's response headers only after
    // its first request.
    let mut first = Vec::new();
    for channel in &channels {
        first.push(open_lease(kind, channel.clone(), TTL).await?);
    }
    // Each stream's sessions; the rest are opened while these are kept alive, so that a
    // session opened first does not expire while the last ones open (100,000 take
    // longer than a TTL).
    let mine: Vec<Arc<Mutex<Vec<u64>>>> = first
        .iter()
        .map(|&id| Arc::new(Mutex::new(vec![id])))
        .collect();

    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let hist = Arc::new(Mutex::new(histogram()));
    let (ok, lost, errors) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let leader_proc = cluster.procs[leader].as_ref().context("leader process")?;
    let mut tasks = Vec::new();
    for (channel, mine) in channels.iter().zip(&mine) {
        let (tx, rx) = tokio::sync::mpsc::channel::<u64>(64 * 1024);
        // The sender: every 10 ms, the next slice of this stream's sessions, so each
        // session is renewed every TTL / 3.
        let (sent_s, stop, mine) = (sent.clone(), stop.clone(), mine.clone());
        tasks.push(tokio::spawn(async move {
            let tick = Duration::from_millis(10);
            let per_round = (TTL / 3).as_millis() as f64 / tick.as_millis() as f64;
            let mut interval = tokio::time::interval(tick);
            let mut next = 0usize;
            while !stop.load(Ordering::Relaxed) {
                interval.tick().await;
                let batch: Vec<u64> = {
                    let mine = mine.lock().expect("sessions");
                    let per_tick = (mine.len() as f64 / per_round).ceil().max(1.0) as usize;
                    (0..per_tick)
                        .map(|i| mine[(next + i) % mine.len()])
                        .collect()
                };
                next += batch.len();
                for id in batch {
                    sent_s.lock().expect("sent map").insert(id, Instant::now());
                    if tx.send(id).await.is_err() {
                        return;
                    }
                }
            }
            // Dropping tx ends the request stream.
        }));
        // etcd sends the response headers only after the first request, so the sender
        // runs before the stream is opened.
        let mut answers = keepalive_stream(kind, channel.clone(), rx).await?;
        let (sent_r, hist, ok, lost, errors) = (
            sent.clone(),
            hist.clone(),
            ok.clone(),
            lost.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while let Some(answer) = answers.next().await {
                let Ok((id, answer)) = answer else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    break;
                };
                if let Some(t) = sent_r.lock().expect("sent map").remove(&id) {
                    hist.lock()
                        .expect("histogram")
                        .saturating_record(t.elapsed().as_micros() as u64);
                }
                match answer {
                    KeepAliveAnswer::Ok => ok.fetch_add(1, Ordering::Relaxed),
                    KeepAliveAnswer::Lost => lost.fetch_add(1, Ordering::Relaxed),
                    KeepAliveAnswer::Error => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    // Open the rest, 64 at a time, each joining its stream's rotation once open.
    bar.set_message(format!("{}: opening {count} sessions", cluster.spec));
    let opened: Vec<Result<()>> = futures::stream::iter(STREAMS as u64..count.max(STREAMS as u64))
        .map(|i| {
            let k = i as usize % STREAMS;
            let (ch, mine) = (channels[k].clone(), mine[k].clone());
            async move {
                let id = open_lease(kind, ch, TTL).await?;
                mine.lock().expect("sessions").push(id);
                Ok(())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    opened.into_iter().collect::<Result<Vec<()>>>()?;
    let ids: Vec<u64> = mine
        .iter()
        .flat_map(|m| m.lock().expect("sessions").clone())
        .collect();
    let count = ids.len() as u64;
    bar.set_message(format!("{}: keeping {count} sessions alive", cluster.spec));
    // Measured from here, with every session open: round trips, answers and CPU (a
    // session lost while the others opened still counts as lost).
    *hist.lock().expect("histogram") = histogram();
    ok.store(0, Ordering::Relaxed);
    let cpu_before = leader_proc.cpu_secs();
    let start = Instant::now();
    while start.elapsed() < duration {
        tokio::time::sleep(Duration::from_millis(250)).await;
        bar.set_message(format!(
            "{}: {count} sessions, {:.0}/{:.0} s, {} keepalives",
            cluster.spec,
            start.elapsed().as_secs_f64(),
            duration.as_secs_f64(),
            ok.load(Ordering::Relaxed)
        ));
    }
    stop.store(true, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    let leader_cpu = leader_proc.cpu_secs() - cpu_before;
    let leader_rss = leader_proc.rss();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for task in tasks {
        task.abort();
    }
    let hist = hist.lock().expect("histogram").clone();
    let ms = |v: u64| v as f64 / 1000.0;
    let alive_at_end = match kind {
        Kind::Fencelock => Some(cluster.status(leader).await?.sessions),
        _ => None,
    };
    // Close them all so later workloads start from a quiet cluster.
    futures::stream::iter(ids)
        .for_each_concurrent(64, |id| {
            let ch = channels[id as usize % STREAMS].clone();
            async move {
                let _ = close_lease(kind, ch, id).await;
            }
        })
        .await;
    Ok(SessionsResult {
        sessions: count,
        secs,
        keepalives_ok: ok.load(Ordering::Relaxed),
        p50_ms: ms(hist.value_at_quantile(0.5)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        max_ms: ms(hist.max()),
        lost: lost.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        leader_cpu_pct: leader_cpu / secs * 100.0,
        leader_rss,
        alive_at_end,
    })
}

async fn open_lease(kind: Kind, ch: tonic::transport::Channel, ttl: Duration) -> Result<u64> {
    match kind {
        Kind::Fencelock => {
            use fencelock_proto::v1::{OpenSessionRequest, locks_client::LocksClient};
            let r = LocksClient::new(ch)
                .open_session(OpenSessionRequest {
                    client_id: uuid::Uuid::new_v4().as_bytes().to_vec(),
                    ttl_ms: ttl.as_millis() as u64,
                })
                .await?;
            Ok(r.into_inner().session_id)
        }
        Kind::Etcd => {
            use crate::etcd_pb::etcdserverpb::{LeaseGrantRequest, lease_client::LeaseClient};
            let r = LeaseClient::new(ch)
                .lease_grant(LeaseGrantRequest {
                    ttl: ttl.as_secs() as i64,
                    id: 0,
                })
                .await?;
            Ok(r.into_inner().id as u64)
        }
        _ => bail!("sessions: fencelock and etcd only"),
    }
}

async fn close_lease(kind: Kind, ch: tonic::transport::Channel, id: u64) -> Result<()> {
    match kind {
        Kind::Fencelock => {
            use fencelock_proto::v1::{CloseSessionRequest, locks_client::LocksClient};
            LocksClient::new(ch)
                .close_session(CloseSessionRequest { session_id: id })
                .await?;
        }
        Kind::Etcd => {
            use crate::etcd_pb::etcdserverpb::{LeaseRevokeRequest, lease_client::LeaseClient};
            LeaseClient::new(ch)
                .lease_revoke(LeaseRevokeRequest { id: id as i64 })
                .await?;
        }
        _ => {}
    }
    Ok(())
}

/// Opens one keepalive stream; ids sent on `rx` are renewed; answers come back as
/// `(id, answer)`.
async fn keepalive_stream(
    kind: Kind,
    ch: tonic::transport::Channel,
    rx: tokio::sync::mpsc::Receiver<u64>,
) -> Result<BoxStream<'static, Result<(u64, KeepAliveAnswer)>>> {
    let ids = tokio_stream::wrappers::ReceiverStream::new(rx);
    match kind {
        Kind::Fencelock => {
            use fencelock_proto::v1::{
                KeepAliveRequest, KeepAliveStatus, locks_client::LocksClient,
            };
            let requests = ids.map(|session_id| KeepAliveRequest { session_id });
            let answers = LocksClient::new(ch)
                .keep_alive(requests)
                .await?
                .into_inner();
            Ok(answers
                .map(|r| {
                    let r = r?;
                    let answer = match KeepAliveStatus::try_from(r.status) {
                        Ok(KeepAliveStatus::Ok) => KeepAliveAnswer::Ok,
                        Ok(KeepAliveStatus::SessionNotFound) => KeepAliveAnswer::Lost,
                        _ => KeepAliveAnswer::Error,
                    };
                    Ok((r.session_id, answer))
                })
                .boxed())
        }
        Kind::Etcd => {
            use crate::etcd_pb::etcdserverpb::{LeaseKeepAliveRequest, lease_client::LeaseClient};
            let requests = ids.map(|id| LeaseKeepAliveRequest { id: id as i64 });
            let answers = LeaseClient::new(ch)
                .lease_keep_alive(requests)
                .await?
                .into_inner();
            Ok(answers
                .map(|r| {
                    let r = r?;
                    let answer = if r.ttl > 0 {
                        KeepAliveAnswer::Ok
                    } else {
                        KeepAliveAnswer::Lost
                    };
                    Ok((r.id as u64, answer))
                })
                .boxed())
        }
        _ => bail!("sessions: fencelock and etcd only"),
    }
}

/// The `held locks` workload's results at one size.
#[derive(Clone, Debug, Serialize)]
pub struct HeldResult {
    /// Locks held at once when measured.
    pub locks: u64,
    /// Seconds it took to take them (from the previous size).
    pub secs: f64,
    /// RSS of each node before any was taken, bytes.
    pub rss_before: Vec<u64>,
    /// RSS of each node with them held, bytes.
    pub rss_after: Vec<u64>,
}

impl HeldResult {
    /// RSS growth per held lock on each node, bytes.
    pub fn bytes_per_lock(&self) -> Vec<f64> {
        self.rss_before
            .iter()
            .zip(&self.rss_after)
            .map(|(&b, &a)| (a as f64 - b as f64) / self.locks.max(1) as f64)
            .collect()
    }
}

/// Takes `sizes` (ascending) locks and holds them all, with 128 clients; measures every
/// node's RSS at each size, then ends the clients' sessions.
pub async fn held_locks(
    connector: &Connector,
    cluster: &Cluster,
    sizes: &[u64],
    max_time: Duration,
    bar: &ProgressBar,
) -> Result<Vec<HeldResult>> {
    const CLIENTS: usize = 128;
    let clients = make_clients(connector, CLIENTS).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = cluster.rss_each();
    let start = Instant::now();
    let deadline = start + max_time;
    let mut results = Vec::new();
    let mut clients: Vec<(LockClient_, Vec<Grant>)> =
        clients.into_iter().map(|c| (c, Vec::new())).collect();
    let mut held = 0u64;
    for &size in sizes {
        let t0 = Instant::now();
        let claimed = Arc::new(AtomicU64::new(held));
        let mut tasks = Vec::new();
        for (i, (mut client, mut grants)) in clients.drain(..).enumerate() {
            let (claimed, bar) = (claimed.clone(), bar.clone());
            tasks.push(tokio::spawn(async move {
                let mut errors = 0;
                loop {
                    let n = claimed.fetch_add(1, Ordering::Relaxed);
                    if n >= size || Instant::now() > deadline {
                        break;
                    }
                    match client.lock(&format!("held/{i}/{n}")).await {
                        Ok(g) => {
                            grants.push(g);
                            bar.inc(1);
                        }
                        Err(e) => {
                            errors += 1;
                            if errors == 1 {
                                bar.println(format!("held locks: {e:#}"));
                            }
                            if errors > 10 {
                                break;
                            }
                        }
                    }
                }
                (client, grants)
            }));
        }
        for task in tasks {
            clients.push(task.await?);
        }
        held = clients.iter().map(|(_, g)| g.len() as u64).sum();
        tokio::time::sleep(Duration::from_secs(2)).await;
        results.push(HeldResult {
            locks: held,
            secs: t0.elapsed().as_secs_f64(),
            rss_before: rss_before.clone(),
            rss_after: cluster.rss_each(),
        });
        if held < size {
            break; // out of time: the next size would not be reached either
        }
    }
    let clients: Vec<LockClient_> = clients
        .into_iter()
        .map(|(c, grants)| {
            // Ending the session releases everything at once; a fencelock guard would
            // otherwise send one release each when dropped.
            for g in grants {
                std::mem::forget(g);
            }
            c
        })
        .collect();
    close_clients(clients).await;
    Ok(results)
}

/// The `failover` workload's results.
#[derive(Clone, Debug, Serialize)]
pub struct FailoverResult {
    /// The node killed (1-based).
    pub killed_node: usize,
    /// From the kill to the first acquire, issued after it, that succeeded; ms.
    pub recovery_ms: Option<f64>,
    /// Pairs completed during the run.
    pub ops: u64,
    /// Failed operations during the run.
    pub errors: u64,
    /// Locks held across the kill that were still held afterwards.
    pub held_kept: usize,
    /// Locks held across the kill.
    pub held: usize,
}

/// Under the uncontended load (`load_clients` clients, own names), with `holders`
/// locks held across it, `kill -9` the leader after `kill_after`; run `total` in all.
pub async fn failover(
    connector: &Connector,
    cluster: &mut Cluster,
    load_clients: usize,
    holders: usize,
    kill_after: Duration,
    total: Duration,
    bar: &ProgressBar,
) -> Result<FailoverResult> {
    let mut holding = Vec::new();
    for (i, mut c) in make_clients(connector, holders)
        .await?
        .into_iter()
        .enumerate()
    {
        let g = c.lock(&format!("failover/held/{i}")).await?;
        holding.push((c, g));
    }
    let clients = make_clients(connector, load_clients).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        let (stop, errors, bar) = (stop.clone(), errors.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let name = format!("failover/load/{i}");
            let mut done = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                match client.lock(&name).await {
                    Ok(g) => {
                        done.push((t0, Instant::now()));
                        if client.unlock(g).await.is_err() {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                        bar.inc(1);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (client, done)
        }));
    }
    tokio::time::sleep(kill_after).await;
    let leader = cluster.leader().await?.context("no leader to kill")?;
    let killed_at = Instant::now();
    if let Some(mut p) = cluster.procs[leader].take() {
        p.kill9();
    }
    bar.set_message(format!(
        "{}: killed leader node {}",
        cluster.spec,
        leader + 1
    ));
    tokio::time::sleep(total.saturating_sub(kill_after)).await;
    stop.store(true, Ordering::Relaxed);
    let mut recovery: Option<Duration> = None;
    let mut ops = 0;
    let mut clients = Vec::new();
    for task in tasks {
        let (client, done) = task.await?;
        ops += done.len() as u64;
        for (start, end) in done {
            if start >= killed_at {
                let r = end - killed_at;
                recovery = Some(recovery.map_or(r, |m| m.min(r)));
            }
        }
        clients.push(client);
    }
    let mut kept = 0;
    let held = holding.len();
    let mut holder_clients = Vec::new();
    for (mut c, g) in holding {
        if c.still_held(&g).await.unwrap_or(false) {
            kept += 1;
        }
        let _ = c.unlock(g).await;
        holder_clients.push(c);
    }
    close_clients(clients).await;
    close_clients(holder_clients).await;
    Ok(FailoverResult {
        killed_node: leader + 1,
        recovery_ms: recovery.map(|d| d.as_secs_f64() * 1000.0),
        ops,
        errors: errors.load(Ordering::Relaxed),
        held_kept: kept,
        held,
    })
}

/// The disk's write + fdatasync latency, measured now in `dir`: (p50, p99) in µs.
pub fn fsync_latency(dir: &std::path::Path, rounds: usize) -> Result<(f64, f64)> {
    use std::io::{Seek, SeekFrom, Write};
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = vec![0x5a_u8; 4096];
    let mut hist = histogram();
    for i in 0..rounds {
        file.seek(SeekFrom::Start((i % 256) as u64 * 4096))?;
        file.write_all(&block)?;
        let t = Instant::now();
        file.sync_data()?;
        hist.saturating_record(t.elapsed().as_micros().max(1) as u64);
    }
    drop(file);
    let _ = std::fs::remove_file(path);
    Ok((
        hist.value_at_quantile(0.5) as f64,
        hist.value_at_quantile(0.99) as f64,
    ))
}
