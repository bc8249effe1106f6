//! The nemesis: faults on a schedule drawn from the run's seed. Each fault is recorded
//! in the history as a `fault` invocation when it starts and an `ok` when it ends; every
//! fault ends (processes resumed and restarted, links healed) before the run's healed
//! phase.

use crate::cluster::Cluster;
use crate::disk;
use crate::history::{Event, Kind, Op, Recorder};
use crate::netns::ClientNetns;
use crate::proxy::LinkMode;
use crate::scenarios::{self, HolderProcess, Scene};
use crate::workload::{self, HolderFault};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The kinds of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// kill -9 the leader or a random node, restart it after 1–5 s.
    Kill,
    /// SIGSTOP the leader or a random node for 1–10 s, then SIGCONT.
    Pause,
    /// Pause a lock holder past its TTL (the paused-holder scenario; client processes are
    /// SIGSTOPped past their TTL too).
    ClientPause,
    /// Isolate the leader, or split the nodes into a majority and a minority.
    Partition,
    /// A bridge: two sides that only a bridge node reaches, with the leader on one side
    /// (openraft#2080).
    Bridge,
    /// Add 50–300 ms of latency to every link, or every link of one node.
    Slow,
    /// Stop every node at once (kill -9, or SIGTERM) and start them all again.
    RestartAll,
    /// A lock holder's keepalives stop reaching the cluster for longer than its TTL
    /// while it keeps running, writing as long as its lease holds; a rival takes the
    /// lock once the lease expired.
    KeepaliveLoss,
    /// A lock holder in a network namespace of its own is cut off from every node
    /// (refused or black-holed) for longer than its TTL while it keeps writing to the
    /// fenced service; a rival takes the lock. Needs root.
    ClientPartition,
    /// A lock holder's process is stopped (SIGSTOP) for longer than its TTL and goes on
    /// (SIGCONT), as after a system suspend; it counts its lease on the run's holder
    /// clock. A rival takes the lock meanwhile.
    Suspend,
    /// One node's, or every node's, data directory (a tmpfs of the run's own) is filled
    /// until "no space", then emptied. Needs root.
    DiskFull,
}

impl FaultKind {
    /// Every kind, in a fixed order.
    pub const ALL: [FaultKind; 11] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::ClientPause,
        FaultKind::Partition,
        FaultKind::Bridge,
        FaultKind::Slow,
        FaultKind::RestartAll,
        FaultKind::KeepaliveLoss,
        FaultKind::ClientPartition,
        FaultKind::Suspend,
        FaultKind::DiskFull,
    ];

    /// Whether the kind needs root (a network namespace, tmpfs mounts).
    pub fn needs_root(self) -> bool {
        matches!(self, FaultKind::ClientPartition | FaultKind::DiskFull)
    }

    /// The name used on the command line and in the history.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::ClientPause => "client-pause",
            FaultKind::Partition => "partition",
            FaultKind::Bridge => "bridge",
            FaultKind::Slow => "slow",
            FaultKind::RestartAll => "restart-all",
            FaultKind::KeepaliveLoss => "keepalive-loss",
            FaultKind::ClientPartition => "client-partition",
            FaultKind::Suspend => "suspend",
            FaultKind::DiskFull => "disk-full",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        FaultKind::ALL
            .into_iter()
            .find(|k| k.name() == text)
            .ok_or_else(|| {
                format!(
                    "unknown nemesis `{text}` (one of: {})",
                    FaultKind::ALL.map(FaultKind::name).join(", ")
                )
            })
    }
}

/// A fault as it happened: kind, window in history time, description.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FaultWindow {
    /// The kind.
    pub kind: String,
    /// Start, ns since the run's base.
    pub start_ns: u64,
    /// End.
    pub end_ns: u64,
    /// What was done.
    pub description: String,
}

/// Read the fault windows back from a history.
pub fn fault_windows(events: &[Event]) -> Vec<FaultWindow> {
    let mut open: BTreeMap<u64, &Event> = BTreeMap::new();
    let mut windows = Vec::new();
    for event in events.iter().filter(|e| e.op == Some(Op::Fault)) {
        match event.kind {
            Some(Kind::Invoke) => {
                open.insert(event.op_id, event);
            }
            _ => {
                if let Some(start) = open.remove(&event.op_id) {
                    windows.push(FaultWindow {
                        kind: start.outcome.clone().unwrap_or_default(),
                        start_ns: start.time_ns,
                        end_ns: event.time_ns,
                        description: start.value.clone().unwrap_or_default(),
                    });
                }
            }
        }
    }
    windows
}

/// The nemesis of one run.
pub struct Nemesis {
    /// The cluster it acts on.
    pub cluster: Arc<Cluster>,
    /// Where faults are recorded.
    pub recorder: Recorder,
    /// The kinds it draws from.
    pub kinds: Vec<FaultKind>,
    /// Its random source (from the run's seed).
    pub rng: fastrand::Rng,
    /// The workload's session TTL (client pauses outlast it).
    pub ttl: Duration,
    /// PIDs of the client processes (SIGSTOPped by client pauses).
    pub client_pids: Arc<Mutex<Vec<u32>>>,
    /// Longest node pause.
    pub max_pause: Duration,
    /// The control runs' lease slack (zero otherwise), for the scenarios' clients.
    pub lease_slack: Duration,
    /// The lock-delay workload's delay, ms: the scenarios' locks ask for it too.
    pub lock_delay_ms: Option<u64>,
    /// Where suspended holders' processes come from (`None`: the suspend nemesis has no
    /// process to stop, and does nothing).
    pub holder_process: Option<HolderProcess>,
    /// What went wrong with the current fault, for its end event.
    pub notes: Mutex<Vec<String>>,
}

impl Nemesis {
    /// Inject faults until `until`; every fault has ended when this returns. Each kind
    /// comes once per round, in an order drawn from the seed, so a short run covers all.
    pub async fn run(mut self, until: Instant) -> BTreeMap<FaultKind, usize> {
        let mut counts = BTreeMap::new();
        let mut round: Vec<FaultKind> = Vec::new();
        let mut serial = 0u64;
        loop {
            let gap = Duration::from_millis(self.rng.u64(500..2000));
            if Instant::now() + gap + Duration::from_secs(2) >= until {
                break;
            }
            tokio::time::sleep(gap).await;
            if round.is_empty() {
                round = self.kinds.clone();
                self.rng.shuffle(&mut round);
            }
            let kind = round.remove(0);
            let remaining = until.saturating_duration_since(Instant::now());
            if remaining < Duration::from_secs(2) {
                break;
            }
            serial += 1;
            self.inject(kind, remaining, serial).await;
            *counts.entry(kind).or_insert(0) += 1;
        }
        self.cluster.net.heal();
        let _ = self.cluster.revive_all();
        counts
    }

    fn start(&self, kind: FaultKind, node: Option<u64>, description: String) -> u64 {
        let op_id = self.recorder.next_op_id();
        let mut event = Event::new(Kind::Invoke, "nemesis", op_id, Op::Fault).outcome(kind.name());
        event.node = node;
        event.value = Some(description);
        self.recorder.record(event);
        op_id
    }

    /// Keep something that went wrong with the current fault: its end event carries it
    /// (the fault still ends).
    fn note(&self, text: &str) {
        self.notes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(text.to_string());
    }

    fn end(&self, kind: FaultKind, op_id: u64) {
        let mut event = Event::new(Kind::Ok, "nemesis", op_id, Op::Fault).outcome(kind.name());
        let notes = std::mem::take(&mut *self.notes.lock().unwrap_or_else(|e| e.into_inner()));
        if !notes.is_empty() {
            event.error = Some(notes.join("; "));
        }
        self.recorder.record(event);
    }

    async fn target(&mut self) -> (u64, &'static str) {
        // Draw both choices first, so the schedule does not depend on what the cluster
        // answers: a seed replays the same faults.
        let ids = self.cluster.ids();
        let want_leader = self.rng.bool();
        let random = ids[self.rng.usize(..ids.len())];
        if want_leader && let Some(leader) = self.cluster.leader().await {
            return (leader, "the leader");
        }
        (random, "a random node")
    }

    fn duration(&mut self, min_ms: u64, max_ms: u64, remaining: Duration) -> Duration {
        let cap = remaining
            .saturating_sub(Duration::from_secs(1))
            .as_millis()
            .max(200) as u64;
        Duration::from_millis(self.rng.u64(min_ms..=max_ms.max(min_ms)).min(cap))
    }

    /// The lock of the holder scenario named `name`, a lock of its own.
    fn scenario_lock(&self, name: &str) -> String {
        workload::with_lock_delay(
            &format!("{}{name}", workload::LOCK_PREFIX),
            self.lock_delay_ms,
        )
    }

    /// The scene of a holder scenario named `name`, on a lock of its own.
    fn scene(&self, name: String) -> Scene {
        Scene {
            lock: self.scenario_lock(&name),
            name,
            endpoints: self.cluster.endpoints(),
            kv: self.cluster.kv_addr,
            ttl: self.ttl,
            slack: self.lease_slack,
        }
    }

    /// The holder scenario of `fault` on a lock of its own, bounded in time.
    async fn holder_scenario(&self, fault: HolderFault, serial: u64) {
        let name = match fault {
            HolderFault::Paused => format!("pause{serial}"),
            HolderFault::CutOff => format!("cut{serial}"),
        };
        let lock = self.scenario_lock(&name);
        let endpoints = self.cluster.endpoints();
        let scenario = workload::holder_scenario(
            fault,
            &name,
            &endpoints,
            self.cluster.kv_addr,
            &lock,
            self.ttl,
            self.lease_slack,
            &self.recorder,
        );
        let _ = tokio::time::timeout(self.ttl * 6 + Duration::from_secs(20), scenario).await;
    }

    async fn inject(&mut self, kind: FaultKind, remaining: Duration, serial: u64) {
        let cluster = self.cluster.clone();
        match kind {
            FaultKind::Kill => {
                let (id, which) = self.target().await;
                let down = self.duration(1_000, 5_000, remaining);
                let op = self.start(
                    kind,
                    Some(id),
                    format!("kill -9 node {id} ({which}) for {down:?}"),
                );
                cluster.kill(id);
                tokio::time::sleep(down).await;
                let _ = cluster.start_node(id);
                self.end(kind, op);
            }
            FaultKind::Pause => {
                let (id, which) = self.target().await;
                let max = self.max_pause.as_millis() as u64;
                let paused = self.duration(1_000, max, remaining);
                let op = self.start(
                    kind,
                    Some(id),
                    format!("SIGSTOP node {id} ({which}) for {paused:?}"),
                );
                cluster.pause(id);
                tokio::time::sleep(paused).await;
                cluster.resume(id);
                self.end(kind, op);
            }
            FaultKind::ClientPause => {
                let pids: Vec<u32> = self
                    .client_pids
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                let op = self.start(
                    kind,
                    None,
                    format!(
                        "a lock holder stops its keepalives and sleeps past its TTL ({:?}); {} client process(es) SIGSTOPped as long",
                        self.ttl,
                        pids.len()
                    ),
                );
                for &pid in &pids {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGSTOP);
                }
                let stop_for = self.ttl + Duration::from_millis(1000);
                let resume = async {
                    tokio::time::sleep(stop_for).await;
                    for &pid in &pids {
                        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
                    }
                };
                let _ = tokio::join!(self.holder_scenario(HolderFault::Paused, serial), resume);
                self.end(kind, op);
            }
            FaultKind::Partition => {
                let ids = cluster.ids();
                let mode = if self.rng.bool() {
                    LinkMode::Refuse
                } else {
                    LinkMode::BlackHole
                };
                let isolate_leader = self.rng.bool();
                let mut shuffled = ids.clone();
                self.rng.shuffle(&mut shuffled);
                shuffled.truncate((ids.len() - 1) / 2);
                let leader = cluster.leader().await;
                let minority: Vec<u64> = match leader {
                    Some(leader) if isolate_leader => vec![leader],
                    _ => shuffled,
                };
                let majority: Vec<u64> = ids
                    .iter()
                    .copied()
                    .filter(|i| !minority.contains(i))
                    .collect();
                let lasting = self.duration(2_000, 8_000, remaining);
                let op = self.start(
                    kind,
                    None,
                    format!(
                        "{mode:?} between {minority:?} and {majority:?} (leader {leader:?}) for {lasting:?}"
                    ),
                );
                for &a in &minority {
                    for &b in &majority {
                        cluster.net.cut(a, b, mode);
                    }
                }
                tokio::time::sleep(lasting).await;
                cluster.net.heal();
                self.end(kind, op);
            }
            FaultKind::Bridge => {
                let mut ids = cluster.ids();
                let leader = cluster.leader().await.unwrap_or(ids[0]);
                ids.retain(|&i| i != leader);
                self.rng.shuffle(&mut ids);
                let bridge = ids.remove(0);
                // The leader's side gets half of the rest (rounded down), the other side
                // the remainder; the bridge reaches both.
                let mut side_a = vec![leader];
                let half = ids.len() / 2;
                side_a.extend(ids.drain(..half));
                let side_b = ids;
                let lasting = self.duration(3_000, 8_000, remaining);
                let op = self.start(
                    kind,
                    Some(bridge),
                    format!("bridge: {side_a:?} <-> node {bridge} <-> {side_b:?} for {lasting:?}"),
                );
                for &a in &side_a {
                    for &b in &side_b {
                        cluster.net.cut(a, b, LinkMode::Refuse);
                    }
                }
                tokio::time::sleep(lasting).await;
                cluster.net.heal();
                self.end(kind, op);
            }
            FaultKind::Slow => {
                let ids = cluster.ids();
                let delay = self.rng.u64(50..=300);
                let one = self.rng.bool().then(|| ids[self.rng.usize(..ids.len())]);
                let lasting = self.duration(2_000, 6_000, remaining);
                let op = self.start(
                    kind,
                    one,
                    match one {
                        Some(node) => {
                            format!("+{delay} ms on every link of node {node} for {lasting:?}")
                        }
                        None => format!("+{delay} ms on every link for {lasting:?}"),
                    },
                );
                for &a in &ids {
                    for &b in &ids {
                        if a != b && one.is_none_or(|n| n == a || n == b) {
                            cluster.net.set_delay(a, b, delay);
                        }
                    }
                }
                tokio::time::sleep(lasting).await;
                cluster.net.heal();
                self.end(kind, op);
            }
            FaultKind::KeepaliveLoss => {
                let op = self.start(
                    kind,
                    None,
                    format!(
                        "a lock holder's keepalives stop reaching the cluster for over its TTL ({:?}) while it keeps writing as long as its lease holds",
                        self.ttl
                    ),
                );
                self.holder_scenario(HolderFault::CutOff, serial).await;
                self.end(kind, op);
            }
            FaultKind::ClientPartition => {
                let mode = if self.rng.bool() {
                    LinkMode::Refuse
                } else {
                    LinkMode::BlackHole
                };
                let scene = self.scene(format!("partitioned{serial}"));
                let op = self.start(
                    kind,
                    None,
                    format!(
                        "{}: {mode:?} between it and every node for {:?} (over its TTL, {:?}) while it keeps writing; {}-rival takes the lock",
                        scene.holder(),
                        scenarios::stall(self.ttl),
                        self.ttl,
                        scene.name
                    ),
                );
                match ClientNetns::create(&cluster.client_addrs(), cluster.kv_addr).await {
                    Ok(netns) => {
                        let bound = scenarios::stall(self.ttl) * 6 + Duration::from_secs(30);
                        let scenario =
                            scenarios::partitioned_holder(&scene, &netns, mode, &self.recorder);
                        let _ = tokio::time::timeout(bound, scenario).await;
                    }
                    Err(error) => self.note(&format!("no namespace: {error:#}")),
                }
                self.end(kind, op);
            }
            FaultKind::Suspend => {
                let scene = self.scene(format!("suspend{serial}"));
                let Some(process) = self.holder_process.clone() else {
                    return;
                };
                let op = self.start(
                    kind,
                    None,
                    format!(
                        "{}: SIGSTOP for {:?} (over its TTL, {:?}), then SIGCONT; it counts its lease on a {:?} clock; {}-rival takes the lock",
                        scene.holder(),
                        scenarios::stall(self.ttl),
                        self.ttl,
                        process.clock,
                        scene.name
                    ),
                );
                let bound = scenarios::stall(self.ttl) * 6 + Duration::from_secs(40);
                let scenario = scenarios::suspended_holder(&scene, &process, &self.recorder);
                match tokio::time::timeout(bound, scenario).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => self.note(&format!("{error:#}")),
                    Err(_) => self.note("did not end in time"),
                }
                self.end(kind, op);
            }
            FaultKind::DiskFull => {
                let ids = cluster.ids();
                let everyone = self.rng.u32(..4) == 0;
                let (targets, which): (Vec<u64>, String) = if everyone {
                    (ids.clone(), "every node".into())
                } else {
                    let (id, which) = self.target().await;
                    (vec![id], format!("node {id} ({which})"))
                };
                let lasting = self.duration(2_000, 8_000, remaining);
                if !cluster.has_tmpfs() {
                    return;
                }
                let op = self.start(
                    kind,
                    (targets.len() == 1).then(|| targets[0]),
                    format!("fill the data directory of {which} to no space for {lasting:?}"),
                );
                let dirs: Vec<std::path::PathBuf> =
                    targets.iter().map(|&id| cluster.data_dir(id)).collect();
                let filling = dirs.clone();
                let filled = tokio::task::spawn_blocking(move || {
                    filling
                        .iter()
                        .map(|dir| disk::fill(dir, 1 << 40))
                        .collect::<Vec<_>>()
                })
                .await;
                if let Ok(results) = filled {
                    for (dir, result) in dirs.iter().zip(results) {
                        if let Err(error) = result {
                            self.note(&format!("filling {}: {error}", dir.display()));
                        }
                    }
                }
                tokio::time::sleep(lasting).await;
                for dir in &dirs {
                    if let Err(error) = disk::empty(dir) {
                        self.note(&format!("emptying {}: {error}", dir.display()));
                    }
                }
                self.end(kind, op);
            }
            FaultKind::RestartAll => {
                let graceful = self.rng.bool();
                let down = self.duration(300, 2_000, remaining);
                let op = self.start(
                    kind,
                    None,
                    format!(
                        "{} every node, start them again after {down:?}",
                        if graceful { "SIGTERM" } else { "kill -9" }
                    ),
                );
                for id in cluster.ids() {
                    if graceful {
                        cluster.terminate(id).await;
                    } else {
                        cluster.kill(id);
                    }
                }
                tokio::time::sleep(down).await;
                for id in cluster.ids() {
                    let _ = cluster.start_node(id);
                }
                self.end(kind, op);
            }
        }
    }
}
