//! The report: Markdown tables (with ratios and the performance targets) and an SVG bar plot,
//! drawn by hand.

use crate::workloads::{FailoverResult, HeldResult, Sample, SessionsResult};
use serde::Serialize;
use std::fmt::Write as _;

/// Facts about the machine, measured in the same run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Machine {
    /// When the run started (UTC).
    pub date: String,
    /// Logical CPUs.
    pub cores: usize,
    /// CPU model.
    pub cpu: String,
    /// Total memory, GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// 4 KiB write + fdatasync: p50 and p99, µs.
    pub fsync_us: (f64, f64),
    /// Server versions.
    pub versions: Vec<(String, String)>,
}

/// Every run of one system on one lock/unlock workload.
#[derive(Clone, Debug, Serialize)]
pub struct SystemRuns {
    /// The system ("etcd-3").
    pub system: String,
    /// Node count, for choosing the fencelock to compare with.
    pub nodes: usize,
    /// One sample per run.
    pub samples: Vec<Sample>,
}

impl SystemRuns {
    fn median(&self, f: impl Fn(&Sample) -> f64) -> f64 {
        let mut v: Vec<f64> = self.samples.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            0.0
        } else {
            v[(v.len() - 1) / 2]
        }
    }

    /// Median rate.
    pub fn rate(&self) -> f64 {
        self.median(Sample::rate)
    }

    fn range(&self) -> (f64, f64) {
        let rates = self.samples.iter().map(Sample::rate);
        let min = rates.clone().fold(f64::INFINITY, f64::min);
        let max = rates.fold(0.0, f64::max);
        (min, max)
    }

    /// Median p99, ms.
    pub fn p99(&self) -> f64 {
        self.median(|s| s.p99_ms)
    }
}

/// One lock/unlock workload across systems.
#[derive(Clone, Debug, Serialize)]
pub struct PairWorkload {
    /// Short name ("seq").
    pub name: String,
    /// What it does, for the heading.
    pub description: String,
    /// "pairs/s" or "hand-offs/s".
    pub unit: String,
    /// Whether the latency is the acquire wait (contended) or the whole pair.
    pub latency_of: String,
    /// Per system.
    pub systems: Vec<SystemRuns>,
}

/// Everything one benchmark run measured.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// The machine.
    pub machine: Machine,
    /// Runs per system and workload.
    pub runs: usize,
    /// The command line, for the record.
    pub command: String,
    /// seq, uncontended, contended.
    pub pairs: Vec<PairWorkload>,
    /// sessions, per system.
    pub sessions: Vec<(String, SessionsResult)>,
    /// held locks, per system.
    pub held: Vec<(String, Vec<HeldResult>)>,
    /// failover, per system.
    pub failover: Vec<(String, FailoverResult)>,
    /// Where the commits went, stage by stage (`--commit-trace`), per fencelock system
    /// and workload.
    pub commit_paths: Vec<CommitPath>,
    /// Things skipped or failed.
    pub notes: Vec<String>,
}

/// One fencelock system's commits under one workload, stage by stage.
#[derive(Clone, Debug, Serialize)]
pub struct CommitPath {
    /// "fencelock-3".
    pub system: String,
    /// "seq".
    pub workload: String,
    /// The runs' wall-clock windows, ns.
    pub windows: Vec<(u64, u64)>,
    /// The stages, once the trace files were read.
    pub breakdown: Option<crate::commit_breakdown::Breakdown>,
    /// Why there is no breakdown.
    pub error: Option<String>,
}

fn mib(bytes: u64) -> String {
    format!("{:.0}", bytes as f64 / (1024.0 * 1024.0))
}

fn num(v: f64) -> String {
    if v >= 100.0 {
        let s = format!("{v:.0}");
        // thousands separators
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

impl Report {
    fn fencelock_rate(&self, workload: &PairWorkload, nodes: usize) -> Option<f64> {
        let nodes = nodes.min(3);
        workload
            .systems
            .iter()
            .find(|s| s.system == format!("fencelock-{nodes}"))
            .map(SystemRuns::rate)
    }

    /// The whole report as Markdown.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        let _ = writeln!(out, "# fencelock benchmark, {}\n", m.date);
        let _ = writeln!(
            out,
            "Machine: {} cores ({}), {:.0} GiB, Linux {}; 4 KiB write + fdatasync p50 {:.0} µs, p99 {:.0} µs (measured in this run). \
             Every system on loopback on this machine, one at a time; fsync on for fencelock, etcd and ZooKeeper (their defaults), \
             Redis without persistence (`redis`) and with `appendfsync always` (`redis-aof`). \
             Each fencelock node runs with `--worker-threads` (cores - 1) / nodes, at least 1 (a core for the benchmark's client, \
             the rest shared by the nodes) unless `--fencelock-worker-threads` says otherwise; the other systems run with their defaults. \
             Throughput is the median of {} runs (min–max); latency and CPU are medians of the runs' values; \
             RSS is each node's after the run; server CPU is all nodes' user+system time per operation. \
             \"fencelock ÷ this\" divides fencelock's median (same node count; 1 node for Redis) by this system's.\n",
            m.cores, m.cpu, m.memory_gib, m.kernel, m.fsync_us.0, m.fsync_us.1, self.runs
        );
        if !m.versions.is_empty() {
            let v: Vec<String> = m
                .versions
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = writeln!(out, "Versions: {}.\n", v.join("; "));
        }
        let _ = writeln!(out, "Command: `{}`\n", self.command);
        for w in &self.pairs {
            let _ = writeln!(out, "## {}: {}\n", w.name, w.description);
            let _ = writeln!(
                out,
                "| system | {} median (min–max) | {} p50 ms | p99 ms | max ms | errors | server CPU µs/op | RSS MiB per node | fencelock ÷ this |",
                w.unit, w.latency_of
            );
            let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
            for s in &w.systems {
                let (min, max) = s.range();
                let rss: Vec<String> = s
                    .samples
                    .last()
                    .map(|x| x.rss.iter().map(|&b| mib(b)).collect())
                    .unwrap_or_default();
                let ratio = if s.system.starts_with("fencelock") {
                    "—".to_owned()
                } else {
                    match self.fencelock_rate(w, s.nodes) {
                        Some(f) if s.rate() > 0.0 => format!("{:.2}×", f / s.rate()),
                        _ => "n/a".to_owned(),
                    }
                };
                let errors: u64 = s.samples.iter().map(|x| x.errors).sum();
                let _ = writeln!(
                    out,
                    "| {} | {} ({}–{}) | {} | {} | {} | {} | {} | {} | {} |",
                    s.system,
                    num(s.rate()),
                    num(min),
                    num(max),
                    num(s.median(|x| x.p50_ms)),
                    num(s.p99()),
                    num(s.median(|x| x.max_ms)),
                    errors,
                    num(s.median(Sample::cpu_us_per_op)),
                    rss.join(" / "),
                    ratio
                );
            }
            out.push('\n');
        }
        if !self.sessions.is_empty() {
            let _ = writeln!(
                out,
                "## sessions: leases (TTL 10 s) kept alive by raw keepalive streams, one renewal per session every 3.3 s\n"
            );
            let _ = writeln!(
                out,
                "| system | sessions | seconds | keepalives OK | keepalive p50 ms | p99 ms | max ms | lost | errors | leader CPU % of one core | leader RSS MiB |"
            );
            let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|");
            for (name, r) in &self.sessions {
                let _ = writeln!(
                    out,
                    "| {name} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {:.1} | {} |",
                    r.sessions,
                    r.secs,
                    r.keepalives_ok,
                    num(r.p50_ms),
                    num(r.p99_ms),
                    num(r.max_ms),
                    r.lost,
                    r.errors,
                    r.leader_cpu_pct,
                    mib(r.leader_rss)
                );
            }
            out.push('\n');
        }
        if !self.held.is_empty() {
            let _ = writeln!(
                out,
                "## held locks: RSS growth per held lock, on each node\n"
            );
            let _ = writeln!(
                out,
                "| system | locks held | seconds to take them | bytes per lock per node | RSS MiB per node |"
            );
            let _ = writeln!(out, "|---|---|---|---|---|");
            for (name, results) in &self.held {
                for r in results {
                    let per: Vec<String> = r
                        .bytes_per_lock()
                        .iter()
                        .map(|b| format!("{b:.0}"))
                        .collect();
                    let rss: Vec<String> = r.rss_after.iter().map(|&b| mib(b)).collect();
                    let _ = writeln!(
                        out,
                        "| {name} | {} | {:.1} | {} | {} |",
                        num(r.locks as f64),
                        r.secs,
                        per.join(" / "),
                        rss.join(" / ")
                    );
                }
            }
            out.push('\n');
        }
        if !self.failover.is_empty() {
            let _ = writeln!(
                out,
                "## failover: kill -9 of the leader under the uncontended load (64 clients)\n"
            );
            let _ = writeln!(
                out,
                "| system | killed node | first successful acquire issued after the kill, ms | pairs done | errors | grants held across the kill still held |"
            );
            let _ = writeln!(out, "|---|---|---|---|---|---|");
            for (name, r) in &self.failover {
                let _ = writeln!(
                    out,
                    "| {name} | {} | {} | {} | {} | {}/{} |",
                    r.killed_node,
                    r.recovery_ms
                        .map_or("none".to_owned(), |v| format!("{v:.0}")),
                    r.ops,
                    r.errors,
                    r.held_kept,
                    r.held
                );
            }
            out.push('\n');
        }
        out.push_str(&self.targets());
        for path in &self.commit_paths {
            let _ = writeln!(
                out,
                "## commit path: {}, {} (`--commit-trace`)\n",
                path.system, path.workload
            );
            match (&path.breakdown, &path.error) {
                (Some(breakdown), _) => {
                    let _ = writeln!(
                        out,
                        "Leader: node {}; {} entries appended over {} runs; times are wall-clock \
                         differences between marks on the nodes (one machine, one clock).{}\n",
                        breakdown.leader,
                        breakdown.entries,
                        path.windows.len(),
                        if breakdown.dropped > 0 {
                            format!(" {} marks were dropped (memory bound).", breakdown.dropped)
                        } else {
                            String::new()
                        }
                    );
                    let _ = writeln!(out, "{}", breakdown.markdown());
                }
                (None, error) => {
                    let _ = writeln!(
                        out,
                        "No breakdown: {}.\n",
                        error.as_deref().unwrap_or("the trace was not read")
                    );
                }
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(out, "## Notes\n");
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
            out.push('\n');
        }
        out
    }

    /// The performance targets for 3-node fencelock, met or missed.
    fn targets(&self) -> String {
        let mut rows: Vec<(String, String, Option<bool>)> = Vec::new();
        let pair = |name: &str| {
            self.pairs
                .iter()
                .find(|w| w.name == name)
                .and_then(|w| w.systems.iter().find(|s| s.system == "fencelock-3"))
        };
        for (name, rate, p99) in [
            ("seq", 2_500.0, 2.0),
            ("uncontended", 15_000.0, 15.0),
            ("contended", 3_000.0, 20.0),
        ] {
            if let Some(s) = pair(name) {
                rows.push((
                    format!("{name}: ≥ {} /s", num(rate)),
                    num(s.rate()),
                    Some(s.rate() >= rate),
                ));
                rows.push((
                    format!("{name}: p99 ≤ {p99} ms"),
                    num(s.p99()),
                    Some(s.p99() <= p99),
                ));
            }
        }
        if let Some((_, r)) = self.sessions.iter().find(|(n, _)| n == "fencelock-3") {
            rows.push((
                "sessions: leader CPU < 25% of a core".into(),
                format!("{:.1}%", r.leader_cpu_pct),
                Some(r.leader_cpu_pct < 25.0),
            ));
            rows.push((
                "sessions: keepalive p99 ≤ 10 ms".into(),
                num(r.p99_ms),
                Some(r.p99_ms <= 10.0),
            ));
            rows.push((
                "sessions: none lost".into(),
                r.lost.to_string(),
                Some(r.lost == 0),
            ));
        }
        if let Some((_, results)) = self.held.iter().find(|(n, _)| n == "fencelock-3") {
            for r in results {
                let worst = r.bytes_per_lock().into_iter().fold(0.0, f64::max);
                rows.push((
                    format!(
                        "held {} locks: ≤ 300 B per lock per node",
                        num(r.locks as f64)
                    ),
                    format!("{worst:.0} B (worst node)"),
                    Some(worst <= 300.0),
                ));
            }
        }
        let kills: Vec<&FailoverResult> = self
            .failover
            .iter()
            .filter(|(n, _)| n == "fencelock-3")
            .map(|(_, r)| r)
            .collect();
        if !kills.is_empty() {
            // Every kill must meet the target: a run that never recovered counts as the worst.
            let mut recovery: Vec<f64> = kills
                .iter()
                .map(|r| r.recovery_ms.unwrap_or(f64::INFINITY))
                .collect();
            recovery.sort_by(f64::total_cmp);
            let worst = recovery[recovery.len() - 1];
            let show = |v: f64| {
                if v.is_finite() {
                    format!("{v:.0} ms")
                } else {
                    "never".to_owned()
                }
            };
            rows.push((
                "failover: acquires succeed ≤ 1.5 s after the kill (every kill)".into(),
                format!(
                    "median {}, worst {} over {} kills",
                    show(recovery[recovery.len() / 2]),
                    show(worst),
                    recovery.len()
                ),
                Some(worst <= 1_500.0),
            ));
            let (kept, held) = kills
                .iter()
                .fold((0, 0), |(k, h), r| (k + r.held_kept, h + r.held));
            rows.push((
                "failover: no grant lost".into(),
                format!("{kept}/{held}"),
                Some(kept == held),
            ));
        }
        if rows.is_empty() {
            return String::new();
        }
        let mut out = String::from(
            "## The performance targets (fencelock-3)\n\n| target | measured | met |\n|---|---|---|\n",
        );
        for (t, v, ok) in rows {
            let ok = match ok {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "?",
            };
            let _ = writeln!(out, "| {t} | {v} | {ok} |");
        }
        out.push('\n');
        out
    }

    /// Throughput and p99 bars of the lock/unlock workloads, as an SVG document.
    pub fn svg(&self) -> String {
        const W: f64 = 1000.0;
        const BAR: f64 = 16.0;
        const GAP: f64 = 4.0;
        const LABEL: f64 = 110.0;
        let colour = |system: &str| match system.split('-').next().unwrap_or("") {
            "fencelock" => "#1b9e77",
            "etcd" => "#7570b3",
            "zookeeper" => "#d95f02",
            _ => "#e7298a",
        };
        let mut body = String::new();
        let mut y = 40.0;
        for w in &self.pairs {
            let rows = w.systems.len() as f64;
            let height = 24.0 + rows * (BAR + GAP);
            let max_rate = w.systems.iter().map(SystemRuns::rate).fold(1.0, f64::max);
            let max_p99 = w.systems.iter().map(SystemRuns::p99).fold(0.001, f64::max);
            let half = W / 2.0;
            let _ = writeln!(
                body,
                r#"<text x="10" y="{:.0}" font-weight="bold">{} — {} (median)</text><text x="{:.0}" y="{:.0}" font-weight="bold">{} — p99 {} latency, ms</text>"#,
                y + 14.0,
                w.name,
                w.unit,
                half + 10.0,
                y + 14.0,
                w.name,
                w.latency_of
            );
            for (i, s) in w.systems.iter().enumerate() {
                let by = y + 24.0 + i as f64 * (BAR + GAP);
                let span = half - LABEL - 90.0;
                let rw = s.rate() / max_rate * span;
                let lw = s.p99() / max_p99 * span;
                let c = colour(&s.system);
                for (x0, width, value) in [(0.0, rw, num(s.rate())), (half, lw, num(s.p99()))] {
                    let _ = writeln!(
                        body,
                        r#"<text x="{:.0}" y="{:.0}" text-anchor="end">{}</text><rect x="{:.0}" y="{:.0}" width="{:.1}" height="{BAR}" fill="{c}"/><text x="{:.0}" y="{:.0}">{}</text>"#,
                        x0 + LABEL - 6.0,
                        by + 12.0,
                        s.system,
                        x0 + LABEL,
                        by,
                        width.max(1.0),
                        x0 + LABEL + width.max(1.0) + 4.0,
                        by + 12.0,
                        value
                    );
                }
            }
            y += height + 16.0;
        }
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W:.0}\" height=\"{:.0}\" viewBox=\"0 0 {W:.0} {:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"10\" y=\"22\" font-size=\"15\" font-weight=\"bold\">fencelock vs etcd, ZooKeeper, Redis — {}</text>\n{body}</svg>\n",
            y, y, self.machine.date
        )
    }
}
