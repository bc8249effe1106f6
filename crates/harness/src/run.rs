//! One run, start to end: start the cluster and the fenced service, run the workload
//! (client tasks, client processes, the watch observer) while the nemesis injects faults,
//! end the faults, measure liveness, read the final state, and check.

use crate::check::{self, Evidence, FinalLock, LivenessReport, Verdict};
use crate::clock::HolderClock;
use crate::cluster::{Cluster, ClusterConfig};
use crate::history::{Event, Kind, Op, Recorder, monotonic_ns, read_history};
use crate::nemesis::{FaultKind, Nemesis, fault_windows};
use crate::report;
use crate::scenarios::HolderProcess;
use crate::workload::{self, LOCK_PREFIX, WorkerConfig};
use anyhow::Context;
use fencelock_fenced_kv::FencedKvClient;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// How long the workload runs (faults stop a little before).
    pub time: Duration,
    /// Cluster size.
    pub nodes: usize,
    /// The seed of every random choice of the harness.
    pub seed: u64,
    /// The fault kinds to inject (empty: none).
    pub nemesis: Vec<FaultKind>,
    /// Run the fenced service unfenced (the control run).
    pub unfenced: bool,
    /// The output directory (history, logs, data dirs, plot, summary).
    pub out: PathBuf,
    /// The `fencelock` binary.
    pub fencelock_bin: PathBuf,
    /// The `fenced-kv` binary.
    pub fenced_kv_bin: PathBuf,
    /// This binary (for client processes), if they are wanted.
    pub harness_bin: Option<PathBuf>,
    /// Client tasks.
    pub clients: usize,
    /// Client processes.
    pub client_processes: usize,
    /// Contended locks.
    pub locks: usize,
    /// Session TTL of the workload.
    pub ttl: Duration,
    /// Longest node pause.
    pub max_pause: Duration,
    /// Show a progress bar.
    pub progress: bool,
    /// Raft election timeout (lower bound), ms.
    pub election_timeout_ms: u64,
    /// Operations per client at most.
    pub max_ops_per_client: u64,
    /// Control runs only (zero otherwise): clients trust their lease this much longer
    /// than their client library says, which the lease checker must catch.
    pub lease_slack: Duration,
    /// The clock suspended holders count their lease on (the suspend nemesis).
    pub holder_clock: HolderClock,
    /// Size of each node's tmpfs data directory (the disk-full nemesis), bytes.
    pub disk_bytes: u64,
    /// The semaphore workload: the contended locks are counting semaphores of this many
    /// permits (`None`: exclusive locks).
    pub permits: Option<u32>,
    /// The multi-lock workload: client tasks also take two contended locks at once in
    /// one atomic multi-lock.
    pub multi_lock: bool,
    /// The lock-delay workload: every acquire of a contended or scenario lock asks for
    /// this lock-delay, and the `lockdelay` checker holds the cluster to it.
    pub lock_delay: Option<Duration>,
}

/// What a run produced.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The seed.
    pub seed: u64,
    /// Every checker's verdict.
    pub verdicts: Vec<Verdict>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, usize>,
    /// The summary table.
    pub summary: String,
    /// The output directory.
    pub out: PathBuf,
    /// How long the run took in all.
    pub elapsed: Duration,
}

impl RunReport {
    /// Whether every checker passed.
    pub fn valid(&self) -> bool {
        self.verdicts.iter().all(|v| v.valid)
    }

    /// The verdict of `checker`.
    pub fn verdict(&self, checker: &str) -> Option<&Verdict> {
        self.verdicts.iter().find(|v| v.checker == checker)
    }
}

/// Run the harness once.
///
/// # Errors
/// The cluster could not be started, or the output could not be written. A failing
/// checker is not an error: see [`RunReport::valid`].
pub async fn run(options: RunOptions) -> anyhow::Result<RunReport> {
    let started = Instant::now();
    for kind in &options.nemesis {
        if kind.needs_root() {
            crate::disk::require_root(&format!("the {kind} nemesis"))?;
        }
    }
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("creating {}", options.out.display()))?;
    let base_ns = monotonic_ns();
    let history_path = options.out.join("history.jsonl");
    let recorder = Recorder::new(base_ns, Some(&history_path))?;
    let mut rng = fastrand::Rng::with_seed(options.seed);

    let cluster = Arc::new(
        Cluster::start(ClusterConfig {
            nodes: options.nodes,
            fencelock_bin: options.fencelock_bin.clone(),
            fenced_kv_bin: options.fenced_kv_bin.clone(),
            dir: options.out.clone(),
            election_timeout_ms: options.election_timeout_ms,
            heartbeat_ms: (options.election_timeout_ms / 5).max(20),
            unfenced: options.unfenced,
            tmpfs_bytes: options
                .nemesis
                .contains(&FaultKind::DiskFull)
                .then_some(options.disk_bytes),
        })
        .await?,
    );
    let endpoints = cluster.endpoints();

    // The observer.
    let (stop_observer, observer_stop) = tokio::sync::watch::channel(false);
    let observer = {
        let client = workload::connect(&endpoints).await?;
        tokio::spawn(workload::observe(client, recorder.clone(), observer_stop))
    };

    // The workload.
    let lock_delay_ms = options
        .lock_delay
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1));
    let locks: Vec<String> = (0..options.locks)
        .map(|i| {
            workload::with_lock_delay(&workload::contended_lock(i, options.permits), lock_delay_ms)
        })
        .collect();
    let mut workers = Vec::new();
    for i in 0..options.clients {
        let config = WorkerConfig {
            name: format!("c{i}"),
            endpoints: endpoints.clone(),
            kv: cluster.kv_addr,
            locks: locks.clone(),
            ttl: options.ttl,
            max_ops: options.max_ops_per_client,
            duration: options.time,
            seed: rng.u64(..),
            hold: Some(format!("{LOCK_PREFIX}hold-c{i}")),
            close_at_end: false,
            lease_slack: options.lease_slack,
            multi_lock: options.multi_lock,
        };
        workers.push(tokio::spawn(workload::run_worker(config, recorder.clone())));
    }
    let client_pids = Arc::new(Mutex::new(Vec::new()));
    let mut children = Vec::new();
    if let Some(bin) = &options.harness_bin {
        for i in 0..options.client_processes {
            let history = options.out.join(format!("history-p{i}.jsonl"));
            let child = tokio::process::Command::new(bin)
                .arg("client")
                .arg("--name")
                .arg(format!("p{i}"))
                .arg("--endpoints")
                .arg(endpoints.join(","))
                .arg("--kv")
                .arg(cluster.kv_addr.to_string())
                .arg("--locks")
                .arg(locks.join(","))
                .arg("--ttl-ms")
                .arg(options.ttl.as_millis().to_string())
                .arg("--time-ms")
                .arg(options.time.as_millis().to_string())
                .arg("--max-ops")
                .arg(options.max_ops_per_client.to_string())
                .arg("--seed")
                .arg(rng.u64(..).to_string())
                .arg("--base-ns")
                .arg(base_ns.to_string())
                .arg("--history")
                .arg(&history)
                .arg("--lease-slack-ms")
                .arg(options.lease_slack.as_millis().to_string())
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(
                    options.out.join(format!("client-p{i}.log")),
                )?)
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("spawning the client process {}", bin.display()))?;
            if let Some(pid) = child.id() {
                client_pids
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(pid);
            }
            children.push((child, history));
        }
    }

    // The nemesis, ending before the healed phase.
    let heal_margin = (options.time / 8).clamp(Duration::from_secs(3), Duration::from_secs(30));
    let faults_until = Instant::now() + options.time.saturating_sub(heal_margin);
    let nemesis = Nemesis {
        cluster: cluster.clone(),
        recorder: recorder.clone(),
        kinds: options.nemesis.clone(),
        rng: fastrand::Rng::with_seed(rng.u64(..)),
        ttl: options.ttl,
        client_pids: client_pids.clone(),
        max_pause: options.max_pause,
        lease_slack: options.lease_slack,
        lock_delay_ms,
        holder_process: options.harness_bin.clone().map(|bin| HolderProcess {
            bin,
            base_ns,
            out: options.out.clone(),
            clock: options.holder_clock,
        }),
        notes: Mutex::default(),
    };
    let nemesis = tokio::spawn(async move {
        if nemesis.kinds.is_empty() {
            BTreeMap::new()
        } else {
            nemesis.run(faults_until).await
        }
    });

    // Progress.
    let bar = if options.progress {
        let bar = ProgressBar::new(options.time.as_secs().max(1));
        bar.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len}s {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let workload_started = Instant::now();
    let mut all_done = futures::future::join_all(workers);
    let leftovers = loop {
        tokio::select! {
            done = &mut all_done => break done,
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                let (completed, faults, current) = recorder.progress();
                bar.set_position(workload_started.elapsed().as_secs().min(options.time.as_secs()));
                bar.set_message(format!("{completed} ops, {faults} faults; {current}"));
            }
        }
    };
    let faults = nemesis.await.unwrap_or_default();
    bar.set_message("workload done; waiting for client processes");
    for (mut child, history) in children {
        let waited =
            tokio::time::timeout(options.time + Duration::from_secs(60), child.wait()).await;
        if waited.is_err() {
            let _ = child.kill().await;
            bar.println(format!(
                "a client process did not finish in time and was killed; {} keeps every event it recorded",
                history.display()
            ));
        }
        match read_history(&history) {
            Ok(events) => {
                for event in events {
                    recorder.record_stamped(event);
                }
            }
            // Checking without a client's history would report its effects as phantoms.
            Err(e) => anyhow::bail!("cannot read a client process's history: {e:#}"),
        }
    }

    // Healed phase: every link up, every node running.
    cluster.net.heal();
    cluster.revive_all()?;
    bar.set_message("healed; checking liveness");
    let liveness = liveness(&cluster, &recorder).await;

    // The final state.
    bar.set_message("reading the final state");
    let mut used: BTreeSet<String> = recorder
        .events()
        .iter()
        .filter_map(|e| e.lock.clone())
        .filter(|l| l.starts_with(LOCK_PREFIX))
        .collect();
    used.extend(locks.iter().cloned());
    let (final_locks, final_locks_read) = final_describe(&endpoints, &used, &recorder).await;
    let kv = FencedKvClient::new(cluster.kv_addr).with_timeout(Duration::from_secs(10));
    let (kv_log, kv_log_missed) = kv.log_all(1).await.context("reading the decision log")?;
    let keys: BTreeSet<String> = kv_log.iter().map(|e| e.key.clone()).collect();
    let mut kv_final = BTreeMap::new();
    for key in keys {
        let value = kv.get(&key).await.context("reading a final value")?;
        kv_final.insert(key, value.map(|v| v.value));
    }
    drop(leftovers);
    let _ = stop_observer.send(true);
    let _ = observer.await;
    cluster.shutdown(true).await;
    recorder.flush();
    bar.finish_and_clear();

    // Check.
    let history = recorder.events();
    let evidence = Evidence {
        history: history.clone(),
        kv_log,
        kv_log_missed,
        kv_final,
        final_locks,
        final_locks_read,
        liveness: Some(liveness),
    };
    let verdicts = check::check_all(&evidence);
    let faults: BTreeMap<String, usize> = faults
        .into_iter()
        .map(|(k, n)| (k.name().to_string(), n))
        .collect();
    let summary = report::summary(options.seed, &history, &faults, &verdicts);
    let windows = fault_windows(&history);
    std::fs::write(
        options.out.join("latency.svg"),
        report::latency_svg(&history, &windows),
    )?;
    std::fs::write(options.out.join("summary.txt"), &summary)?;
    std::fs::write(
        options.out.join("verdicts.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "seed": options.seed,
            "valid": verdicts.iter().all(|v| v.valid),
            "faults": faults,
            "fault_windows": windows,
            "verdicts": verdicts,
            "liveness": evidence.liveness,
        }))?,
    )?;
    Ok(RunReport {
        seed: options.seed,
        verdicts,
        faults,
        summary,
        out: options.out,
        elapsed: started.elapsed(),
    })
}

/// Liveness: wait for every node to agree, then time a fresh acquire.
async fn liveness(cluster: &Cluster, recorder: &Recorder) -> LivenessReport {
    let converge_bound = Duration::from_secs(30);
    let acquire_bound = Duration::from_secs(10);
    let started = Instant::now();
    let mut converged_after_ms = None;
    let mut views = Vec::new();
    let mut unreachable = Vec::new();
    while started.elapsed() < converge_bound {
        views.clear();
        unreachable.clear();
        for id in cluster.ids() {
            match cluster.status(id).await {
                Some(view) => views.push(view),
                None => unreachable.push(id),
            }
        }
        let agree = unreachable.is_empty()
            && views.first().is_some_and(|first| {
                first.leader_id.is_some()
                    && views.iter().all(|v| {
                        (
                            v.leader_id,
                            v.applied_index,
                            v.last_token,
                            v.sessions,
                            v.locks,
                        ) == (
                            first.leader_id,
                            first.applied_index,
                            first.last_token,
                            first.sessions,
                            first.locks,
                        )
                    })
            });
        if agree {
            converged_after_ms = Some(started.elapsed().as_millis() as u64);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let acquire_started = Instant::now();
    let lock = format!("{LOCK_PREFIX}liveness");
    let attempt = async {
        let client = workload::connect(&cluster.endpoints())
            .await
            .map_err(|e| e.to_string())?;
        let session = client
            .session(Duration::from_secs(10))
            .await
            .map_err(|e| e.to_string())?;
        let op_id = recorder.next_op_id();
        recorder.record(
            Event::new(Kind::Invoke, "liveness", op_id, Op::Acquire)
                .lock(&lock)
                .session(session.id().0),
        );
        let result = session.lock_timeout(&lock, acquire_bound).await;
        let granted = match &result {
            Ok(Some(guard)) => {
                recorder.record(
                    Event::new(Kind::Ok, "liveness", op_id, Op::Acquire)
                        .lock(&lock)
                        .session(session.id().0)
                        .token(guard.token().0)
                        .outcome("granted"),
                );
                true
            }
            Ok(None) => {
                recorder.record(
                    Event::new(Kind::Ok, "liveness", op_id, Op::Acquire)
                        .lock(&lock)
                        .session(session.id().0)
                        .outcome("timed_out"),
                );
                false
            }
            Err(error) => {
                recorder.record(
                    Event::new(Kind::Info, "liveness", op_id, Op::Acquire)
                        .lock(&lock)
                        .session(session.id().0)
                        .error(error),
                );
                false
            }
        };
        let elapsed = acquire_started.elapsed().as_millis() as u64;
        if let Ok(Some(guard)) = result {
            let release_id = recorder.next_op_id();
            let token = guard.token().0;
            recorder.record(
                Event::new(Kind::Invoke, "liveness", release_id, Op::Release)
                    .lock(&lock)
                    .session(session.id().0)
                    .token(token),
            );
            let kind = if guard.release().await.is_ok() {
                Kind::Ok
            } else {
                Kind::Info
            };
            recorder.record(
                Event::new(kind, "liveness", release_id, Op::Release)
                    .lock(&lock)
                    .session(session.id().0)
                    .token(token),
            );
        }
        let close_id = recorder.next_op_id();
        recorder.record(
            Event::new(Kind::Invoke, "liveness", close_id, Op::CloseSession)
                .session(session.id().0),
        );
        let id = session.id().0;
        let kind = if session.close().await.is_ok() {
            Kind::Ok
        } else {
            Kind::Info
        };
        recorder.record(Event::new(kind, "liveness", close_id, Op::CloseSession).session(id));
        if granted {
            Ok(elapsed)
        } else {
            Err(format!("not granted within {acquire_bound:?}"))
        }
    };
    let acquire = tokio::time::timeout(acquire_bound * 3, attempt)
        .await
        .unwrap_or_else(|_| Err("no answer".into()));
    LivenessReport {
        converge_bound_ms: converge_bound.as_millis() as u64,
        converged_after_ms,
        views,
        unreachable,
        acquire_bound_ms: acquire_bound.as_millis() as u64,
        acquire,
    }
}

/// Describe every lock, recorded as operations of the process `final`.
async fn final_describe(
    endpoints: &[String],
    locks: &BTreeSet<String>,
    recorder: &Recorder,
) -> (BTreeMap<String, Option<FinalLock>>, bool) {
    let Ok(client) = workload::connect(endpoints).await else {
        return (BTreeMap::new(), false);
    };
    let mut out = BTreeMap::new();
    for lock in locks {
        let op_id = recorder.next_op_id();
        recorder.record(Event::new(Kind::Invoke, "final", op_id, Op::Describe).lock(lock));
        match client.describe(lock).await {
            Ok(description) => {
                let state = description.lock.map(|info| FinalLock {
                    holders: info
                        .holders
                        .iter()
                        .map(|h| (h.session_id.0, h.token.0))
                        .collect(),
                    waiters: info.waiters.iter().map(|w| w.session_id.0).collect(),
                });
                let holder = state.as_ref().and_then(|s| s.holders.first().copied());
                let mut event = Event::new(Kind::Ok, "final", op_id, Op::Describe).lock(lock);
                event.holder_session = holder.map(|h| h.0);
                event.holder_token = holder.map(|h| h.1);
                event.revision = Some(description.revision);
                recorder.record(event);
                out.insert(lock.clone(), state);
            }
            Err(error) => {
                recorder.record(
                    Event::new(Kind::Fail, "final", op_id, Op::Describe)
                        .lock(lock)
                        .error(&error),
                );
                return (out, false);
            }
        }
    }
    (out, true)
}
