//! The stage-by-stage breakdown of a commit's latency, read from the commit-trace files
//! of one cluster's nodes (`fencelock serve --commit-trace PREFIX`, written by
//! `fencelock_server::commit_trace`; `fencelock-bench --commit-trace` turns it on).

use fencelock_server::commit_trace::{EMPTY, Point, append_tag};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;

/// One stage of a commit, measured over the entries of a window.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Stage {
    /// What it is, e.g. "follower: write + sync".
    pub name: &'static str,
    /// Measurements.
    pub samples: usize,
    /// Median, µs.
    pub p50_us: f64,
    /// 90th percentile, µs.
    pub p90_us: f64,
}

/// Where the commits of a window spent their time, from the trace files of one cluster.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Breakdown {
    /// The node that sent the AppendEntries (the leader).
    pub leader: u64,
    /// Entries the leader appended in the window.
    pub entries: usize,
    /// Records the nodes dropped (memory bound), over the whole files.
    pub dropped: u64,
    /// The stages, in the order of a commit; a stage without samples is left out.
    pub stages: Vec<Stage>,
}

impl Breakdown {
    /// A Markdown table: stage, p50, p90, samples.
    pub fn markdown(&self) -> String {
        let mut out = String::from("| stage | p50 µs | p90 µs | samples |\n|---|---|---|---|\n");
        for stage in &self.stages {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {:.0} | {} |",
                stage.name, stage.p50_us, stage.p90_us, stage.samples
            );
        }
        out
    }
}

/// Why trace files could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A line is not `<ns> <point> <arg>`.
    #[error("{path}:{line}: not a commit-trace record")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// The line's number (from 1).
        line: usize,
    },
    /// No node sent an AppendEntries with entries in the window.
    #[error("no replicated entries in the window")]
    NoCommits,
}

/// The records of one node, each point's first time per argument within the window.
#[derive(Default)]
struct NodeMarks {
    first: HashMap<(Point, u64), u64>,
    sent: usize,
    dropped: u64,
    /// Proposed and Answered marks (all of them: their argument tells nothing apart).
    writes: Vec<(u64, Point)>,
}

impl NodeMarks {
    /// Every time `point` was marked, in order.
    fn times(&self, point: Point) -> Vec<u64> {
        let mut times: Vec<u64> = self
            .writes
            .iter()
            .filter(|(_, marked)| *marked == point)
            .map(|(ns, _)| *ns)
            .collect();
        times.sort_unstable();
        times
    }

    fn at(&self, point: Point, arg: u64) -> Option<u64> {
        self.first.get(&(point, arg)).copied()
    }
}

/// Measure each stage of the commits made within `windows` (`[from, to)` wall-clock
/// nanoseconds), from the trace files of one cluster's nodes (`node id -> file`).
///
/// # Errors
/// A file that cannot be read or holds something else, or no commit in the window.
pub fn breakdown(
    files: &BTreeMap<u64, PathBuf>,
    windows: &[(u64, u64)],
) -> Result<Breakdown, TraceError> {
    let mut nodes = BTreeMap::new();
    for (&node, path) in files {
        let text = std::fs::read_to_string(path).map_err(|error| TraceError::Read {
            path: path.clone(),
            error,
        })?;
        let mut marks = NodeMarks::default();
        for (number, line) in text.lines().enumerate() {
            let malformed = || TraceError::Malformed {
                path: path.clone(),
                line: number + 1,
            };
            let mut fields = line.split(' ');
            let (Some(ns), Some(name), Some(arg), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(malformed());
            };
            let (ns, arg) = match (ns.parse::<u64>(), arg.parse::<u64>()) {
                (Ok(ns), Ok(arg)) => (ns, arg),
                _ => return Err(malformed()),
            };
            if name == "dropped" {
                marks.dropped += arg;
                continue;
            }
            let point = Point::from_name(name).ok_or_else(malformed)?;
            if !windows.iter().any(|(from, to)| (*from..*to).contains(&ns)) {
                continue;
            }
            if point == Point::AppendSent && arg & EMPTY == 0 {
                marks.sent += 1;
            }
            if matches!(point, Point::Proposed | Point::Answered) {
                marks.writes.push((ns, point));
                continue;
            }
            marks.first.entry((point, arg)).or_insert(ns);
        }
        nodes.insert(node, marks);
    }
    let dropped = nodes.values().map(|marks| marks.dropped).sum();
    let (&leader, _) = nodes
        .iter()
        .filter(|(_, marks)| marks.sent > 0)
        .max_by_key(|(_, marks)| marks.sent)
        .ok_or(TraceError::NoCommits)?;
    let mut stages = StageSamples::default();
    let lead = &nodes[&leader];
    let mut appended: Vec<(u64, u64)> = lead
        .first
        .iter()
        .filter(|((point, _), _)| *point == Point::AppendCalled)
        .map(|((_, index), ns)| (*ns, *index))
        .collect();
    appended.sort_unstable();
    let followers: Vec<u64> = nodes.keys().copied().filter(|n| *n != leader).collect();
    for &(called, index) in &appended {
        let started = lead.at(Point::AppendStarted, index);
        let flushed = lead.at(Point::AppendFlushed, index);
        stages.add_opt(
            "leader: append called -> write started",
            Some(called),
            started,
        );
        stages.add_opt("leader: write + sync", started, flushed);
        let sent: Vec<(u64, u64)> = followers
            .iter()
            .filter_map(|&f| {
                lead.at(Point::AppendSent, append_tag(Some(f), Some(index), None))
                    .map(|ns| (f, ns))
            })
            .collect();
        let first_sent = sent.iter().map(|(_, ns)| *ns).min();
        stages.add_opt(
            "leader: flushed -> first AppendEntries sent",
            flushed,
            first_sent,
        );
        let first_reply = followers
            .iter()
            .filter_map(|&f| lead.at(Point::AppendReplied, append_tag(Some(f), Some(index), None)))
            .min();
        stages.add_opt(
            "AppendEntries: first sent -> first reply",
            first_sent,
            first_reply,
        );
        let applied = lead.at(Point::Applied, index);
        stages.add_opt("leader: first reply -> applied", first_reply, applied);
        for (follower, sent_ns) in sent {
            let theirs = &nodes[&follower];
            let tag = append_tag(None, Some(index), None);
            let received = theirs.at(Point::AppendReceived, tag);
            let called = theirs.at(Point::AppendCalled, index);
            let started = theirs.at(Point::AppendStarted, index);
            let flushed = theirs.at(Point::AppendFlushed, index);
            let answered = theirs.at(Point::AppendAnswered, tag);
            let replied = lead.at(
                Point::AppendReplied,
                append_tag(Some(follower), Some(index), None),
            );
            stages.add_opt("follower: AppendEntries in flight", Some(sent_ns), received);
            stages.add_opt("follower: received -> append called", received, called);
            stages.add_opt("follower: append called -> write started", called, started);
            stages.add_opt("follower: write + sync", started, flushed);
            stages.add_opt("follower: flushed -> reply written", flushed, answered);
            stages.add_opt("follower: reply in flight", answered, replied);
        }
        stages.add_opt(
            "commit: append called -> applied on the leader",
            Some(called),
            applied,
        );
    }
    for pair in appended.windows(2) {
        stages.add("leader: between two appends", pair[0].0, pair[1].0);
    }
    one_write_at_a_time(lead, &appended, &mut stages);
    for ((point, tag), sent_ns) in &lead.first {
        if *point == Point::AppendSent && tag & EMPTY != 0 {
            let replied = lead.at(Point::AppendReplied, *tag);
            stages.add_opt(
                "commit-index-only AppendEntries round trip",
                Some(*sent_ns),
                replied,
            );
        }
    }
    Ok(Breakdown {
        leader,
        entries: appended.len(),
        dropped,
        stages: stages.finish(),
    })
}

/// With one write in flight at a time (seq: every write is answered before the next is
/// handed over), the stages around the commit: the handler to the append, the apply to
/// the answer, and the answer to the next write (the answer's way out over gRPC, the
/// client, the next request's way in). Left out when writes overlap.
fn one_write_at_a_time(lead: &NodeMarks, appended: &[(u64, u64)], stages: &mut StageSamples) {
    let proposed = lead.times(Point::Proposed);
    let answered = lead.times(Point::Answered);
    if proposed.is_empty() || proposed.len() != answered.len() {
        return;
    }
    let sequential = proposed.iter().zip(&answered).all(|(p, a)| p <= a)
        && answered
            .iter()
            .zip(proposed.iter().skip(1))
            .all(|(a, next)| a <= next);
    if !sequential {
        return;
    }
    let called: Vec<u64> = appended.iter().map(|(ns, _)| *ns).collect();
    let mut applied: Vec<u64> = lead
        .first
        .iter()
        .filter(|((point, _), _)| *point == Point::Applied)
        .map(|(_, ns)| *ns)
        .collect();
    applied.sort_unstable();
    // The first mark in `times` at or after `from`, if before `to`.
    let first_in = |times: &[u64], from: u64, to: u64| {
        let at = times.partition_point(|ns| *ns < from);
        times.get(at).copied().filter(|ns| *ns <= to)
    };
    // The last mark in `times` at or before `to`, if after `from`.
    let last_in = |times: &[u64], from: u64, to: u64| {
        let at = times.partition_point(|ns| *ns <= to);
        at.checked_sub(1)
            .map(|at| times[at])
            .filter(|ns| *ns >= from)
    };
    for (i, (&write, &answer)) in proposed.iter().zip(&answered).enumerate() {
        stages.add_opt(
            "one write at a time: handed to the proposer -> append called",
            Some(write),
            first_in(&called, write, answer),
        );
        stages.add_opt(
            "one write at a time: applied -> answered",
            last_in(&applied, write, answer),
            Some(answer),
        );
        if let Some(&next) = proposed.get(i + 1) {
            stages.add(
                "one write at a time: answered -> next write handed over (gRPC out and in, the client)",
                answer,
                next,
            );
        }
    }
}

/// Samples per stage, in the order stages were first seen.
#[derive(Default)]
struct StageSamples {
    order: Vec<&'static str>,
    samples: HashMap<&'static str, Vec<u64>>,
}

impl StageSamples {
    fn add(&mut self, name: &'static str, from: u64, to: u64) {
        self.add_opt(name, Some(from), Some(to));
    }

    /// A sample when both ends were seen, in order (clocks of different processes are
    /// the same wall clock; a negative span is a mark from another entry).
    fn add_opt(&mut self, name: &'static str, from: Option<u64>, to: Option<u64>) {
        if !self.samples.contains_key(name) {
            self.order.push(name);
            self.samples.insert(name, Vec::new());
        }
        if let (Some(from), Some(to)) = (from, to)
            && to >= from
        {
            self.samples
                .get_mut(name)
                .expect("inserted")
                .push(to - from);
        }
    }

    fn finish(mut self) -> Vec<Stage> {
        self.order
            .iter()
            .filter_map(|name| {
                let mut samples = self.samples.remove(name)?;
                if samples.is_empty() {
                    return None;
                }
                samples.sort_unstable();
                let at = |q: f64| {
                    samples[((samples.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0
                };
                Some(Stage {
                    name,
                    samples: samples.len(),
                    p50_us: at(0.5),
                    p90_us: at(0.9),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fencelock_server::commit_trace::trace_file;
    use std::path::Path;

    /// Writes `records` (`(ns, point, arg)`) as node `node`'s file in `dir`.
    fn write(dir: &Path, node: u64, records: &[(u64, Point, u64)]) -> PathBuf {
        let path = trace_file(&dir.join("t"), node);
        let text: String = records
            .iter()
            .map(|(ns, point, arg)| format!("{ns} {} {arg}\n", point.name()))
            .collect();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn stage<'a>(breakdown: &'a Breakdown, name: &str) -> &'a Stage {
        breakdown
            .stages
            .iter()
            .find(|stage| stage.name == name)
            .unwrap_or_else(|| panic!("no stage {name:?} in {breakdown:?}"))
    }

    /// One commit of entry 7 on a 3-node cluster, node 1 leading, every hop 1 µs apart
    /// but the syncs (100 µs on the leader, 150 on node 2, 200 on node 3); the client's
    /// write is handed over 10 µs before the append and answered 8 µs after the apply,
    /// and `writes` more marks follow on the leader.
    fn one_commit(dir: &Path, base: u64, writes: &[(u64, Point, u64)]) -> BTreeMap<u64, PathBuf> {
        let us = 1_000;
        let to = |node| append_tag(Some(node), Some(7), None);
        let theirs = append_tag(None, Some(7), None);
        let mut leader = vec![
            (base - 10 * us, Point::Proposed, 0),
            (base + 270 * us, Point::Answered, 0),
            (base, Point::AppendCalled, 7),
            (base + us, Point::AppendStarted, 7),
            (base + 101 * us, Point::AppendFlushed, 7),
            (base + 102 * us, Point::AppendSent, to(2)),
            (base + 103 * us, Point::AppendSent, to(3)),
            (base + 260 * us, Point::AppendReplied, to(2)),
            (base + 311 * us, Point::AppendReplied, to(3)),
            (base + 262 * us, Point::Applied, 7),
        ];
        leader.extend_from_slice(writes);
        let follower = |received: u64, sync: u64| {
            [
                (received, Point::AppendReceived, theirs),
                (received + us, Point::AppendCalled, 7),
                (received + 2 * us, Point::AppendStarted, 7),
                (received + (2 + sync) * us, Point::AppendFlushed, 7),
                (received + (3 + sync) * us, Point::AppendAnswered, theirs),
            ]
        };
        BTreeMap::from([
            (1, write(dir, 1, &leader)),
            (2, write(dir, 2, &follower(base + 104 * us, 150))),
            (3, write(dir, 3, &follower(base + 105 * us, 200))),
        ])
    }

    #[test]
    fn a_commit_is_measured_hop_by_hop_on_every_node() {
        let dir = tempfile::tempdir().unwrap();
        let base = 1_000_000_000;
        let files = one_commit(dir.path(), base, &[]);
        let breakdown = breakdown(&files, &[(base - 1_000_000, base + 1_000_000)]).unwrap();
        assert_eq!(breakdown.leader, 1);
        assert_eq!(breakdown.entries, 1);
        assert_eq!(stage(&breakdown, "leader: write + sync").p50_us, 100.0);
        assert_eq!(
            stage(&breakdown, "leader: flushed -> first AppendEntries sent").p50_us,
            1.0
        );
        // Node 2: sent at 102, received at 104; node 3: sent at 103, received at 105.
        let in_flight = stage(&breakdown, "follower: AppendEntries in flight");
        assert_eq!((in_flight.samples, in_flight.p50_us), (2, 2.0));
        let sync = stage(&breakdown, "follower: write + sync");
        assert_eq!((sync.samples, sync.p50_us, sync.p90_us), (2, 200.0, 200.0));
        assert_eq!(
            stage(&breakdown, "AppendEntries: first sent -> first reply").p50_us,
            158.0
        );
        assert_eq!(
            stage(&breakdown, "commit: append called -> applied on the leader").p50_us,
            262.0
        );
        assert_eq!(
            stage(
                &breakdown,
                "one write at a time: handed to the proposer -> append called"
            )
            .p50_us,
            10.0
        );
        assert_eq!(
            stage(&breakdown, "one write at a time: applied -> answered").p50_us,
            8.0
        );
        // Outside the window, nothing counts.
        let before = super::breakdown(&files, &[(0, base - 1_000_000)]);
        assert!(matches!(before, Err(TraceError::NoCommits)));
    }

    #[test]
    fn overlapping_writes_leave_out_the_one_write_at_a_time_stages() {
        let dir = tempfile::tempdir().unwrap();
        let base = 1_000_000_000;
        // A second write handed over before the first is answered.
        let second = [
            (base - 5_000, Point::Proposed, 0),
            (base + 300_000, Point::Answered, 0),
        ];
        let files = one_commit(dir.path(), base, &second);
        let breakdown = breakdown(&files, &[(0, u64::MAX)]).unwrap();
        assert!(
            breakdown
                .stages
                .iter()
                .all(|stage| !stage.name.starts_with("one write at a time")),
            "{breakdown:?}"
        );
        assert_eq!(stage(&breakdown, "leader: write + sync").samples, 1);
    }

    #[test]
    fn a_line_that_is_not_a_record_is_refused_with_its_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.1");
        std::fs::write(&path, "1 applied 3\n2 applied\n").unwrap();
        let files = BTreeMap::from([(1, path)]);
        let error = breakdown(&files, &[(0, u64::MAX)]).unwrap_err();
        assert!(
            matches!(error, TraceError::Malformed { line: 2, .. }),
            "{error}"
        );
        std::fs::write(&files[&1], "1 no_such_point 3\n").unwrap();
        let error = breakdown(&files, &[(0, u64::MAX)]).unwrap_err();
        assert!(
            matches!(error, TraceError::Malformed { line: 1, .. }),
            "{error}"
        );
    }
}
