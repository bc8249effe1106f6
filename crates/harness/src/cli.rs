//! The command line of `fencelock-harness`: a run (the default), and `client`, the
//! workload client as a separate process (spawned by a run).

use crate::clock::HolderClock;
use crate::cluster::locate_binary;
use crate::nemesis::FaultKind;
use crate::run::RunOptions;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Fault-injection harness of fencelock: a cluster of real processes, a seeded nemesis, a
/// workload through a fenced service, a history and checkers. Exit code 0 only when
/// every checker passes.
#[derive(Debug, Parser)]
#[command(
    name = "fencelock-harness",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// A subcommand; without one, a run.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The run's settings.
    #[command(flatten)]
    pub run: RunArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The workload client as a separate process (spawned by a run).
    Client(ClientArgs),
    /// The suspended holder as a separate process (spawned by the `suspend` nemesis).
    Holder(HolderArgs),
    /// Re-check a recorded history file with the checkers that need only the history
    /// (tokens, exclusion, linearizable, lockdelay). Exit code 0 when they pass.
    Check {
        /// The `history.jsonl` of a run.
        history: PathBuf,
    },
}

/// The flags of a run.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// How long the workload runs, e.g. `60s`, `30m` (faults end a little before).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub time: Duration,
    /// Cluster size (3 or 5).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// The seed of the whole run [default: random, printed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Fault kinds, comma-separated: kill, pause, client-pause, partition, bridge, slow,
    /// restart-all, keepalive-loss, client-partition, suspend, disk-full; `all` for every
    /// kind, `none` for none. client-partition and disk-full need root (a network
    /// namespace, tmpfs mounts): without root, `all` leaves them out and naming them is
    /// refused.
    #[arg(long, default_value = "all")]
    pub nemesis: String,
    /// Run the fenced service unfenced: the control run, whose fencing checker must fail
    /// under client pauses.
    #[arg(long)]
    pub unfenced: bool,
    /// Output directory [default: harness-out/seed-<seed>].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The `fencelock` binary [default: beside this one; env FENCELOCK_BIN].
    #[arg(long)]
    pub fencelock_bin: Option<PathBuf>,
    /// The `fenced-kv` binary [default: beside this one; env FENCED_KV_BIN].
    #[arg(long)]
    pub fenced_kv_bin: Option<PathBuf>,
    /// Client tasks.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Client processes.
    #[arg(long, default_value_t = 1)]
    pub client_processes: usize,
    /// Contended locks.
    #[arg(long, default_value_t = 3)]
    pub locks: usize,
    /// Session TTL of the workload.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Longest SIGSTOP of a node.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub max_pause: Duration,
    /// Raft election timeout (lower bound) of the nodes, ms.
    #[arg(long, default_value_t = 500)]
    pub election_timeout_ms: u64,
    /// Operations per client at most.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_ops: u64,
    /// Control run: every client trusts its lease this many ms longer than its client
    /// library says (a client that counts its lease wrongly); with `--nemesis
    /// keepalive-loss` the lease checker must fail.
    #[arg(long, default_value_t = 0)]
    pub lease_slack_ms: u64,
    /// The clock the suspended holders count their lease on: `boottime` (one that counts
    /// the suspend, as the client library's should) or `suspend-blind` (one that missed
    /// it: the control run, whose lease checker must fail with `--nemesis suspend`).
    #[arg(long, value_enum, default_value = "boottime")]
    pub holder_clock: HolderClock,
    /// Size of each node's tmpfs data directory with the disk-full nemesis, MiB.
    #[arg(long, default_value_t = 128)]
    pub disk_mb: u64,
    /// The semaphore workload: the contended locks are counting semaphores of this many
    /// permits, and the exclusion checker allows that many holders at once.
    #[arg(long)]
    pub permits: Option<u32>,
    /// The multi-lock workload: client tasks also take two contended locks at once in one
    /// atomic multi-lock, and the `multilock` checker requires their grants together.
    #[arg(long)]
    pub multi_lock: bool,
    /// The lock-delay workload: every acquire of a contended lock, and of the holder
    /// scenarios' locks, asks for this lock-delay (e.g. `1s`), so holders whose sessions
    /// expire (paused, cut off, partitioned, suspended) start delays, and the `lockdelay`
    /// checker requires that nobody was granted a lock during its delay. Not with
    /// `--permits`.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub lock_delay: Option<Duration>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// The CI run: a short seeded run of every nemesis kind (`--time 75s --seed 1`
    /// unless given).
    #[arg(long)]
    pub ci: bool,
}

impl RunArgs {
    /// The run's options.
    ///
    /// # Errors
    /// A bad nemesis list or a binary that cannot be found.
    pub fn to_options(&self) -> anyhow::Result<RunOptions> {
        let seed = self
            .seed
            .unwrap_or_else(|| if self.ci { 1 } else { fastrand::u64(..) });
        let time = if self.ci && self.time == Duration::from_secs(60) {
            Duration::from_secs(75)
        } else {
            self.time
        };
        anyhow::ensure!(self.nodes >= 1, "--nodes must be at least 1");
        anyhow::ensure!(self.permits != Some(0), "--permits must be at least 1");
        anyhow::ensure!(
            self.permits.is_none() || self.lock_delay.is_none(),
            "--lock-delay and --permits do not go together"
        );
        anyhow::ensure!(
            self.lock_delay
                .is_none_or(|d| d >= Duration::from_millis(1)),
            "--lock-delay must be at least 1ms"
        );
        Ok(RunOptions {
            permits: self.permits,
            multi_lock: self.multi_lock,
            lock_delay: self.lock_delay,
            time,
            nodes: self.nodes,
            seed,
            nemesis: parse_nemesis(&self.nemesis).map_err(anyhow::Error::msg)?,
            holder_clock: self.holder_clock,
            disk_bytes: self.disk_mb.max(8) << 20,
            unfenced: self.unfenced,
            out: self
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("harness-out/seed-{seed}"))),
            fencelock_bin: locate_binary(
                self.fencelock_bin.as_deref(),
                "FENCELOCK_BIN",
                "fencelock",
                "fencelock",
            )?,
            fenced_kv_bin: locate_binary(
                self.fenced_kv_bin.as_deref(),
                "FENCED_KV_BIN",
                "fenced-kv",
                "fencelock-fenced-kv",
            )?,
            harness_bin: std::env::current_exe().ok(),
            clients: self.clients,
            client_processes: self.client_processes,
            locks: self.locks.max(1),
            ttl: self.ttl,
            max_pause: self.max_pause.max(Duration::from_secs(1)),
            progress: !self.quiet,
            election_timeout_ms: self.election_timeout_ms,
            max_ops_per_client: self.max_ops,
            lease_slack: Duration::from_millis(self.lease_slack_ms),
        })
    }
}

/// Parses a nemesis list: kinds separated by commas, or `all`, or `none`. Without root,
/// `all` leaves out the kinds that need it.
///
/// # Errors
/// An unknown kind.
pub fn parse_nemesis(text: &str) -> Result<Vec<FaultKind>, String> {
    match text.trim() {
        "all" => Ok(FaultKind::ALL
            .into_iter()
            .filter(|k| !k.needs_root() || crate::disk::is_root())
            .collect()),
        "none" | "" => Ok(Vec::new()),
        list => {
            let mut kinds = Vec::new();
            for item in list.split(',') {
                let kind: FaultKind = item.trim().parse()?;
                if !kinds.contains(&kind) {
                    kinds.push(kind);
                }
            }
            Ok(kinds)
        }
    }
}

/// The flags of `client`.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Its name in the history.
    #[arg(long)]
    pub name: String,
    /// The nodes' client addresses, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// The fenced service's address.
    #[arg(long)]
    pub kv: std::net::SocketAddr,
    /// The locks, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub locks: Vec<String>,
    /// Session TTL, ms.
    #[arg(long)]
    pub ttl_ms: u64,
    /// How long to run, ms.
    #[arg(long)]
    pub time_ms: u64,
    /// Operations at most.
    #[arg(long)]
    pub max_ops: u64,
    /// The seed of its choices.
    #[arg(long)]
    pub seed: u64,
    /// The run's time base (CLOCK_MONOTONIC ns).
    #[arg(long)]
    pub base_ns: u64,
    /// Where to write its history.
    #[arg(long)]
    pub history: PathBuf,
    /// The control runs' lease slack, ms (see `--lease-slack-ms` of a run).
    #[arg(long, default_value_t = 0)]
    pub lease_slack_ms: u64,
}

/// The flags of `holder`.
#[derive(Debug, Clone, Args)]
pub struct HolderArgs {
    /// Its name in the history.
    #[arg(long)]
    pub name: String,
    /// The nodes' client addresses, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// The fenced service's address.
    #[arg(long)]
    pub kv: std::net::SocketAddr,
    /// The lock it holds.
    #[arg(long)]
    pub lock: String,
    /// Session TTL, ms.
    #[arg(long)]
    pub ttl_ms: u64,
    /// How long to run at most, ms.
    #[arg(long)]
    pub time_ms: u64,
    /// The run's time base (CLOCK_MONOTONIC ns).
    #[arg(long)]
    pub base_ns: u64,
    /// Where to write its history.
    #[arg(long)]
    pub history: PathBuf,
    /// The clock it counts its lease on.
    #[arg(long, value_enum)]
    pub clock: HolderClock,
    /// The control runs' lease slack, ms.
    #[arg(long, default_value_t = 0)]
    pub lease_slack_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nemesis_lists_parse() {
        let all = parse_nemesis("all").unwrap();
        let expected = if crate::disk::is_root() { 11 } else { 9 };
        assert_eq!(all.len(), expected, "{all:?}");
        assert!(parse_nemesis("none").unwrap().is_empty());
        assert_eq!(
            parse_nemesis("kill, client-pause,kill").unwrap(),
            vec![FaultKind::Kill, FaultKind::ClientPause]
        );
        assert!(parse_nemesis("kill,explode").is_err());
        Cli::parse_from(["fencelock-harness", "--time", "30m", "--nodes", "5"]);
    }
}
