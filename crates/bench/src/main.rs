//! `fencelock-bench`: the same lock workloads on fencelock (1 and 3 nodes), etcd (1 and 3
//! nodes, v3 lock API), ZooKeeper (1 and 3 nodes, ephemeral-sequential recipe) and Redis
//! (`SET NX PX` + compare-and-delete; without persistence and with `appendfsync always`),
//! each started here on loopback ports with its data under a temporary directory and
//! stopped by PID afterwards. Prints a Markdown report (also written to `--out`, with a
//! JSON copy and an SVG plot).
//!
//! ```text
//! fencelock-bench                                  # everything (scripts/bench.sh runs this)
//! fencelock-bench --systems fencelock-1 --workloads seq,uncontended --runs 1 --scale 0.1
//! ```

mod commit_breakdown;
mod drivers;
mod etcd_pb;
mod procs;
mod report;
mod scale;
mod systems;
mod workloads;

use anyhow::{Context, Result, bail};
use clap::Parser;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use report::CommitPath;
use report::{Machine, PairWorkload, Report, SystemRuns};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use systems::{Binaries, Cluster, Kind, Spec};
use workloads::PairLoad;

/// Command-line options.
#[derive(Parser, Debug)]
#[command(
    name = "fencelock-bench",
    about = "Lock workloads on fencelock, etcd, ZooKeeper and Redis, same machine, same run"
)]
struct Args {
    /// Systems, comma-separated: fencelock-1, fencelock-3, etcd-1, etcd-3, zookeeper-1,
    /// zookeeper-3, redis, redis-aof.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "fencelock-1,fencelock-3,etcd-1,etcd-3,zookeeper-1,zookeeper-3,redis,redis-aof"
    )]
    systems: Vec<String>,
    /// Workloads, comma-separated: seq, uncontended, contended, sessions, held, failover,
    /// and `scale` (fencelock-3 only, on clusters of its own, not in the default list:
    /// restarts, a new member's catch-up and keepalives at each of `--scale-sizes`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "seq,uncontended,contended,sessions,held,failover"
    )]
    workloads: Vec<String>,
    /// Runs of each lock/unlock workload (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Multiplies the operation counts of seq, uncontended and contended, and the session
    /// count (1.0 = the sizes of docs/benchmarks.md).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Upper bound of one run of a lock/unlock workload, seconds.
    #[arg(long, default_value_t = 20.0)]
    max_secs: f64,
    /// Sessions kept alive in the `sessions` workload (run on fencelock and etcd with 3
    /// nodes, and on fencelock-1 when it is the only fencelock system).
    #[arg(long, default_value_t = 10_000)]
    sessions: u64,
    /// How long the sessions are kept alive, seconds.
    #[arg(long, default_value_t = 60.0)]
    sessions_secs: f64,
    /// Held-lock counts for every system but fencelock-3 (ascending, comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "100000")]
    held: Vec<u64>,
    /// Held-lock counts for fencelock-3, the system the performance targets (docs/benchmarks.md) are about.
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    held_fencelock: Vec<u64>,
    /// Upper bound of taking the held locks, seconds (per system).
    #[arg(long, default_value_t = 240.0)]
    held_secs: f64,
    /// Failover: the leader is killed after this many seconds of load.
    #[arg(long, default_value_t = 3.0)]
    kill_after_secs: f64,
    /// Failover: the whole run, seconds.
    #[arg(long, default_value_t = 10.0)]
    failover_secs: f64,
    /// Failover: how many leader kills; after each, the killed node is started again on
    /// its data before the next.
    #[arg(long, default_value_t = 3)]
    failover_runs: usize,
    /// The fencelock nodes' `--log-level` (e.g. `warn,openraft=info` to trace elections);
    /// each node's log is `node-N.log` in its system's data directory (see `--keep-data`).
    #[arg(long, default_value = "warn")]
    fencelock_log_level: String,
    /// Each fencelock node's `--worker-threads` (0: one per core). The benchmark runs
    /// every node and its own client on this machine's cores, so by default each node
    /// gets (cores - 1) / nodes threads, at least one: a core for the client, the rest
    /// shared by the nodes.
    #[arg(long)]
    fencelock_worker_threads: Option<usize>,
    /// Leave every system's data directory and node logs under `--data-root` after the run.
    #[arg(long)]
    keep_data: bool,
    /// The `fencelock` binary [default: next to this binary].
    #[arg(long)]
    fencelock_bin: Option<PathBuf>,
    /// Where the systems keep their data (a temporary directory is made inside).
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Where the report goes (`bench-<date>.md`, `.json`, `.svg`, and `latest.*`).
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// No progress bars (CI, logs).
    #[arg(long)]
    quiet: bool,
    /// Scale: the sizes, `LOCKS:SESSIONS` comma-separated, each on a fresh 3-node cluster.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100000:10000,1000000:100000"
    )]
    scale_sizes: Vec<scale::Size>,
    /// Scale: restarts of one node, of the whole cluster, and joins, each this many
    /// times per size (medians are reported).
    #[arg(long, default_value_t = 3)]
    scale_runs: usize,
    /// Scale: how long the size's sessions are kept alive, seconds (0: not measured).
    #[arg(long, default_value_t = 60.0)]
    scale_keepalive_secs: f64,
    /// Scale: upper bound of taking the locks, seconds.
    #[arg(long, default_value_t = 900.0)]
    scale_populate_secs: f64,
    /// Scale: upper bound of one restart or join, seconds.
    #[arg(long, default_value_t = 300.0)]
    scale_ready_secs: f64,
    /// Scale: the nodes' `--snapshot-every` [default: the server's].
    #[arg(long)]
    scale_snapshot_every: Option<u64>,
    /// Run each fencelock node with `--commit-trace` (files under `<out>/commit-trace`)
    /// and report, per workload, where the commits of seq, uncontended and contended spent
    /// their time, stage by stage. The marks cost the nodes some CPU: compare rates only
    /// between runs that both trace, or neither.
    #[arg(long)]
    commit_trace: bool,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        // On Ctrl-C or SIGTERM the run is dropped, and with it every cluster: each
        // process the harness started is stopped by its PID.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = run(args) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            _ = term.recv() => bail!("terminated"),
        }
    })
}

/// Shows `msg` on the progress bar, and as a log line when stderr is not a terminal
/// (CI, `tee`), where the bars are hidden.
fn step(bar: &ProgressBar, msg: String) {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        eprintln!(
            "[{:>6.1}s] {msg}",
            START
                .get_or_init(std::time::Instant::now)
                .elapsed()
                .as_secs_f64()
        );
    }
    bar.set_message(msg);
}

static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn shell(program: &str, args: &[&str]) -> String {
    procs::first_line(program, args)
}

fn machine(data_root: &std::path::Path) -> Result<Machine> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("MemTotal:")
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / (1024.0 * 1024.0);
    let fsync_us = workloads::fsync_latency(data_root, 1000)?;
    Ok(Machine {
        date: shell("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        cpu,
        memory_gib,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        fsync_us,
        versions: Vec::new(),
    })
}

/// The three lock/unlock workloads of the issue, scaled.
fn pair_loads(args: &Args) -> Vec<(PairWorkload, PairLoad)> {
    let n = |v: f64| ((v * args.scale).round() as u64).max(1);
    let max_time = Duration::from_secs_f64(args.max_secs);
    vec![
        (
            PairWorkload {
                name: "seq".into(),
                description: format!("1 client, lock + unlock on one name, {} pairs", n(2_000.0)),
                unit: "pairs/s".into(),
                latency_of: "pair".into(),
                systems: Vec::new(),
            },
            PairLoad {
                clients: 1,
                names: vec!["seq".into()],
                total: n(2_000.0),
                max_time,
                critical: None,
                time_acquire_only: false,
            },
        ),
        (
            PairWorkload {
                name: "uncontended".into(),
                description: format!(
                    "64 clients, each on its own name, {} pairs in all",
                    n(20_000.0)
                ),
                unit: "pairs/s".into(),
                latency_of: "pair".into(),
                systems: Vec::new(),
            },
            PairLoad {
                clients: 64,
                names: (0..64).map(|i| format!("uncontended/{i}")).collect(),
                total: n(20_000.0),
                max_time,
                critical: None,
                time_acquire_only: false,
            },
        ),
        (
            PairWorkload {
                name: "contended".into(),
                description: format!(
                    "16 clients on one name, lock, 10 µs critical section, unlock; {} hand-offs",
                    n(2_000.0)
                ),
                unit: "hand-offs/s".into(),
                latency_of: "acquire wait".into(),
                systems: Vec::new(),
            },
            PairLoad {
                clients: 16,
                names: vec!["contended".into()],
                total: n(2_000.0),
                max_time,
                critical: Some(Duration::from_micros(10)),
                time_acquire_only: true,
            },
        ),
    ]
}

async fn run(args: Args) -> Result<()> {
    let specs: Vec<Spec> = args
        .systems
        .iter()
        .map(|s| Spec::parse(s.trim()))
        .collect::<Result<_>>()?;
    let known = [
        "seq",
        "uncontended",
        "contended",
        "sessions",
        "held",
        "failover",
        "scale",
    ];
    for w in &args.workloads {
        if !known.contains(&w.as_str()) {
            bail!("unknown workload {w:?}; known: {}", known.join(", "));
        }
    }
    let wants = |w: &str| args.workloads.iter().any(|x| x == w);
    let fencelock = match &args.fencelock_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .join("fencelock"),
    };
    if (wants("scale") || specs.iter().any(|s| s.kind == Kind::Fencelock)) && !fencelock.exists() {
        bail!(
            "no fencelock binary at {} (build it, or pass --fencelock-bin)",
            fencelock.display()
        );
    }
    let bins = Binaries {
        fencelock,
        fencelock_log_level: args.fencelock_log_level.clone(),
        fencelock_worker_threads: args.fencelock_worker_threads,
        keep_data: args.keep_data,
        commit_trace: args.commit_trace.then(|| args.out.join("commit-trace")),
        fencelock_extra_args: Vec::new(),
    };
    let root = tempfile::Builder::new()
        .prefix("fencelock-bench-")
        .disable_cleanup(args.keep_data)
        .tempdir_in(args.data_root.clone().unwrap_or_else(std::env::temp_dir))?;

    let mut report = Report {
        machine: machine(root.path())?,
        runs: args.runs,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        ..Report::default()
    };
    let mut versions = Vec::new();
    for s in &specs {
        let (name, v) = match s.kind {
            Kind::Fencelock => {
                let rev = shell("git", &["rev-parse", "--short", "HEAD"]);
                let version = shell(&bins.fencelock.to_string_lossy(), &["--version"]);
                let known = !rev.is_empty() && rev.chars().all(|c| c.is_ascii_hexdigit());
                let v = if known {
                    format!("{version} (git {rev})")
                } else {
                    version
                };
                ("fencelock", v)
            }
            Kind::Etcd => ("etcd", shell("etcd", &["--version"])),
            Kind::Zookeeper => (
                "zookeeper",
                shell("dpkg-query", &["-W", "-f=${Version}", "zookeeper"]),
            ),
            Kind::Redis | Kind::RedisAof => ("redis", shell("redis-server", &["--version"])),
        };
        if !versions.iter().any(|(n, _): &(String, String)| n == name) {
            versions.push((name.to_owned(), v));
        }
    }
    report.machine.versions = versions;
    let mut pairs = pair_loads(&args);
    pairs.retain(|(w, _)| wants(&w.name));

    let multi = MultiProgress::with_draw_target(if args.quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let steps = specs.len() as u64 * (pairs.len() as u64 * args.runs as u64 + 3);
    let overall = multi.add(ProgressBar::new(steps));
    overall.set_style(ProgressStyle::with_template(
        "[{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
    )?);
    let ops = multi.add(ProgressBar::new(0));
    ops.set_style(ProgressStyle::with_template(
        "  {spinner} {pos}/{len} ops {per_sec} {msg}",
    )?);
    ops.enable_steady_tick(Duration::from_millis(200));
    std::fs::create_dir_all(&args.out)?;

    if wants("scale") {
        let options = scale::Options {
            sizes: args.scale_sizes.clone(),
            runs: args.scale_runs,
            keepalive_secs: args.scale_keepalive_secs,
            populate_secs: args.scale_populate_secs,
            ready_secs: args.scale_ready_secs,
            snapshot_every: args.scale_snapshot_every,
        };
        let points = scale::run(&options, &bins, root.path(), &ops, |m| step(&overall, m)).await?;
        let path = write_scale_report(&args, &report, &points)?;
        println!("{}", scale::markdown(&points));
        eprintln!("scale report written to {}", path.display());
        if args.workloads.iter().all(|w| w == "scale") {
            overall.finish_with_message("done");
            ops.finish_and_clear();
            return Ok(());
        }
    }

    for spec in specs {
        step(&overall, format!("{spec}: starting"));
        let mut cluster = match Cluster::start(spec, &bins, root.path()).await {
            Ok(c) => c,
            Err(e) => {
                let note = format!("{spec}: not run: {e:#}");
                multi.println(&note)?;
                report.notes.push(note);
                overall.inc(pairs.len() as u64 * args.runs as u64 + 3);
                continue;
            }
        };
        if let Err(e) =
            bench_system(&args, &mut cluster, &mut pairs, &mut report, &overall, &ops).await
        {
            let note = format!("{spec}: stopped early: {e:#}");
            multi.println(&note)?;
            report.notes.push(note);
        }
        cluster.stop();
        if let Some(dir) = &bins.commit_trace {
            commit_paths(&mut report, &spec.to_string(), dir, spec.nodes);
        }
        report.pairs = pairs.iter().map(|(w, _)| w.clone()).collect();
        write_report(&args, &report)?;
    }
    overall.finish_with_message("done");
    ops.finish_and_clear();
    report.pairs = pairs.into_iter().map(|(w, _)| w).collect();
    let path = write_report(&args, &report)?;
    println!("{}", report.markdown());
    eprintln!("report written to {}", path.display());
    Ok(())
}

async fn bench_system(
    args: &Args,
    cluster: &mut Cluster,
    pairs: &mut [(PairWorkload, PairLoad)],
    report: &mut Report,
    overall: &ProgressBar,
    ops: &ProgressBar,
) -> Result<()> {
    let spec = cluster.spec;
    let connector = drivers::Connector::new(cluster).await?;
    for (workload, load) in pairs.iter_mut() {
        step(overall, format!("{spec}: {}", workload.name));
        let mut clients = workloads::make_clients(&connector, load.clients).await?;
        let mut runs = SystemRuns {
            system: spec.to_string(),
            nodes: spec.nodes,
            samples: Vec::new(),
        };
        let mut window = Vec::new();
        for run in 0..args.runs {
            ops.reset();
            ops.set_length(load.total);
            ops.set_message(format!(
                "{spec} {} run {}/{}",
                workload.name,
                run + 1,
                args.runs
            ));
            let started = wall_clock_ns();
            let (back, sample) = bounded(
                load.max_time + Duration::from_secs(60),
                workloads::run_pairs(clients, cluster, load, ops),
            )
            .await?;
            window.push((started, wall_clock_ns()));
            clients = back;
            step(
                overall,
                format!(
                    "{spec} {} run {}: {:.0}/s, p99 {:.1} ms, {} errors",
                    workload.name,
                    run + 1,
                    sample.rate(),
                    sample.p99_ms,
                    sample.errors
                ),
            );
            runs.samples.push(sample);
            overall.inc(1);
        }
        workloads::close_clients(clients).await;
        workload.systems.push(runs);
        if args.commit_trace && spec.kind == Kind::Fencelock {
            report.commit_paths.push(CommitPath {
                system: spec.to_string(),
                workload: workload.name.clone(),
                windows: window,
                breakdown: None,
                error: None,
            });
        }
    }
    let is_raft_lock = matches!(spec.kind, Kind::Fencelock | Kind::Etcd);
    let only_fencelock_1 = args.systems.iter().all(|s| s.trim() == "fencelock-1");
    if args.workloads.iter().any(|w| w == "sessions")
        && is_raft_lock
        && (spec.nodes == 3 || only_fencelock_1)
    {
        step(overall, format!("{spec}: sessions"));
        let count = ((args.sessions as f64 * args.scale).round() as u64).max(1);
        let secs = Duration::from_secs_f64(args.sessions_secs);
        let r = bounded(
            secs + Duration::from_secs(180),
            workloads::sessions(cluster, count, secs, ops),
        )
        .await?;
        step(
            overall,
            format!(
                "{spec} sessions: keepalive p99 {:.1} ms, leader CPU {:.1}%, lost {}",
                r.p99_ms, r.leader_cpu_pct, r.lost
            ),
        );
        report.sessions.push((spec.to_string(), r));
    }
    overall.inc(1);
    if args.workloads.iter().any(|w| w == "held") {
        step(overall, format!("{spec}: held locks"));
        let sizes = if spec == Spec::new(Kind::Fencelock, 3) {
            &args.held_fencelock
        } else {
            &args.held
        };
        ops.reset();
        ops.set_length(sizes.iter().copied().max().unwrap_or(0));
        ops.set_message(format!("{spec} held locks"));
        let secs = Duration::from_secs_f64(args.held_secs);
        let r = bounded(
            secs + Duration::from_secs(180),
            workloads::held_locks(&connector, cluster, sizes, secs, ops),
        )
        .await?;
        for h in &r {
            let per: Vec<String> = h
                .bytes_per_lock()
                .iter()
                .map(|b| format!("{b:.0}"))
                .collect();
            step(
                overall,
                format!(
                    "{spec} held {}: {} B/lock per node",
                    h.locks,
                    per.join(" / ")
                ),
            );
        }
        report.held.push((spec.to_string(), r));
    }
    overall.inc(1);
    if args.workloads.iter().any(|w| w == "failover") && is_raft_lock && spec.nodes == 3 {
        for run in 0..args.failover_runs {
            step(
                overall,
                format!("{spec}: failover {}/{}", run + 1, args.failover_runs),
            );
            if run > 0 {
                // Bring the node killed last time back, and let it catch up.
                if let Some(killed) = cluster.procs.iter().position(Option::is_none) {
                    cluster.restart(killed, Duration::from_secs(60)).await?;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            ops.reset();
            ops.set_length(0);
            let r = bounded(
                Duration::from_secs_f64(args.failover_secs + 90.0),
                workloads::failover(
                    &connector,
                    cluster,
                    64,
                    8,
                    Duration::from_secs_f64(args.kill_after_secs),
                    Duration::from_secs_f64(args.failover_secs),
                    ops,
                ),
            )
            .await?;
            step(
                overall,
                format!(
                    "{spec} failover {}: {:?} ms, {}/{} held",
                    run + 1,
                    r.recovery_ms,
                    r.held_kept,
                    r.held
                ),
            );
            report.failover.push((spec.to_string(), r));
        }
    }
    overall.inc(1);
    Ok(())
}

/// Runs `work` for at most `limit`.
async fn bounded<T>(limit: Duration, work: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(limit, work)
        .await
        .with_context(|| format!("did not finish within {limit:?}"))?
}

/// The run's date as a file name part ("20261208-0012").
fn stamp(report: &Report) -> String {
    report
        .machine
        .date
        .chars()
        .filter_map(|c| match c {
            '0'..='9' => Some(c),
            ' ' => Some('-'),
            _ => None,
        })
        .collect::<String>()
        .trim_end_matches('-')
        .to_owned()
}

/// Writes `scale-<date>.{md,json}` and `scale-latest.{md,json}`; returns the Markdown path.
fn write_scale_report(args: &Args, report: &Report, points: &[scale::Point]) -> Result<PathBuf> {
    let m = &report.machine;
    let md = format!(
        "# fencelock scale figures\n\n{}, {} cores ({}), {:.0} GiB, kernel {}; 4 KiB write + \
         fdatasync p50 {:.0} µs, p99 {:.0} µs. `{}`\n\n{}",
        m.date,
        m.cores,
        m.cpu,
        m.memory_gib,
        m.kernel,
        m.fsync_us.0,
        m.fsync_us.1,
        report.command,
        scale::markdown(points)
    );
    let json = serde_json::to_string_pretty(&serde_json::json!({
        "machine": m,
        "command": report.command,
        "points": points,
    }))?;
    let mut main_path = PathBuf::new();
    for base in [
        format!("scale-{}", stamp(report)),
        "scale-latest".to_owned(),
    ] {
        let path = args.out.join(format!("{base}.md"));
        std::fs::write(&path, &md)?;
        std::fs::write(args.out.join(format!("{base}.json")), &json)?;
        if main_path.as_os_str().is_empty() {
            main_path = path;
        }
    }
    Ok(main_path)
}

/// Writes `bench-<date>.{md,json,svg}` and `latest.{md,json,svg}`; returns the Markdown path.
fn write_report(args: &Args, report: &Report) -> Result<PathBuf> {
    let stamp = stamp(report);
    let md = report.markdown();
    let json = serde_json::to_string_pretty(report)?;
    let svg = report.svg();
    let mut main_path = PathBuf::new();
    for base in [format!("bench-{stamp}"), "latest".to_owned()] {
        let path = args.out.join(format!("{base}.md"));
        std::fs::write(&path, &md)?;
        std::fs::write(args.out.join(format!("{base}.json")), &json)?;
        std::fs::write(args.out.join(format!("{base}.svg")), &svg)?;
        if main_path.as_os_str().is_empty() {
            main_path = path;
        }
    }
    Ok(main_path)
}

fn wall_clock_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
}

/// Fill in the stage breakdowns of `system`'s traced workloads, from its nodes' files
/// (written out when the nodes stopped).
fn commit_paths(report: &mut Report, system: &str, dir: &std::path::Path, nodes: usize) {
    let prefix = systems::commit_trace_prefix(dir, system);
    let files: BTreeMap<u64, PathBuf> = (1..=nodes as u64)
        .map(|node| {
            (
                node,
                fencelock_server::commit_trace::trace_file(&prefix, node),
            )
        })
        .collect();
    for path in report
        .commit_paths
        .iter_mut()
        .filter(|path| path.system == system)
    {
        match commit_breakdown::breakdown(&files, &path.windows) {
            Ok(breakdown) => path.breakdown = Some(breakdown),
            Err(error) => path.error = Some(error.to_string()),
        }
    }
}
