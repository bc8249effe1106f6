//! Timestamps at each hop of the write path, to break a commit's latency down into its
//! stages (`fencelock serve --commit-trace PREFIX`; `fencelock-bench --commit-trace`
//! turns it on for its nodes and reports the breakdown).
//!
//! A [`CommitTrace`] is handed to the components that mark points (the log store, the
//! state machine, the Raft network and links, the API's write path) when the node starts;
//! off, a mark is one branch. When on, [`CommitTrace::mark`] records (wall-clock nanoseconds, point, argument) in memory and a thread appends the
//! records to `<PREFIX>.<node id>` every 200 ms as text lines `<ns> <point> <arg>`. The
//! clock is the wall clock so that the files of nodes on one machine line up. At most
//! [`MAX_PENDING`] records wait between two writes; more are dropped and counted in a
//! `dropped` line. The benchmark (`crates/bench`, `commit_breakdown.rs`) reads such
//! files back and measures each stage.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Records kept in memory between two writes to the file, at most.
pub const MAX_PENDING: usize = 1 << 20;

/// How often the records are appended to the file.
const WRITE_EVERY: Duration = Duration::from_millis(200);

/// The argument bit of an AppendEntries mark that carries no entries (only a commit index).
pub const EMPTY: u64 = 1 << 40;

/// Where a mark is taken. The argument is a log index unless said otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Point {
    /// A client's write was handed to the proposer (argument 0).
    Proposed,
    /// Its result came back to the client's handler (argument 0).
    Answered,
    /// openraft asked the log to append entries up to the index.
    AppendCalled,
    /// The append began writing: on the calling task, or on the blocking pool for big ones.
    AppendStarted,
    /// The append is durable.
    AppendFlushed,
    /// The leader sent an AppendEntries ([`append_tag`] with the target).
    AppendSent,
    /// The leader read its reply ([`append_tag`] with the target).
    AppendReplied,
    /// A follower read an AppendEntries ([`append_tag`] without a target).
    AppendReceived,
    /// A follower wrote its reply ([`append_tag`] without a target).
    AppendAnswered,
    /// The state machine applied the entry at the index.
    Applied,
}

impl Point {
    /// Every point, in the order of a commit.
    pub const ALL: [Point; 10] = [
        Point::Proposed,
        Point::AppendCalled,
        Point::AppendStarted,
        Point::AppendFlushed,
        Point::AppendSent,
        Point::AppendReceived,
        Point::AppendAnswered,
        Point::AppendReplied,
        Point::Applied,
        Point::Answered,
    ];

    /// The point's name in the file.
    pub fn name(self) -> &'static str {
        match self {
            Point::Proposed => "proposed",
            Point::Answered => "answered",
            Point::AppendCalled => "append_called",
            Point::AppendStarted => "append_started",
            Point::AppendFlushed => "append_flushed",
            Point::AppendSent => "append_sent",
            Point::AppendReplied => "append_replied",
            Point::AppendReceived => "append_received",
            Point::AppendAnswered => "append_answered",
            Point::Applied => "applied",
        }
    }

    /// The point named `name` in the file.
    pub fn from_name(name: &str) -> Option<Point> {
        Point::ALL.into_iter().find(|point| point.name() == name)
    }
}

/// The argument of the AppendEntries marks: the last entry's index, or [`EMPTY`] plus the
/// commit index for a message without entries; on the leader, the target node's id in the
/// top 16 bits (ids beyond 16 bits are not told apart).
pub fn append_tag(target: Option<u64>, last_entry: Option<u64>, commit: Option<u64>) -> u64 {
    let index = match last_entry {
        Some(index) => index & (EMPTY - 1),
        None => EMPTY | (commit.unwrap_or(0) & (EMPTY - 1)),
    };
    (target.unwrap_or(0) & 0xffff) << 48 | index
}

/// The commit trace a node's components mark their points on: handed to each of them at
/// start-up ([`crate::startup::start_traced`]), a no-op when off ([`CommitTrace::off`],
/// the default). Cheap to clone: clones record to the same file.
#[derive(Clone, Default)]
pub struct CommitTrace(Option<Arc<Recorder>>);

impl std::fmt::Debug for CommitTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.enabled() { "on" } else { "off" };
        write!(f, "CommitTrace({state})")
    }
}

/// Two traces are equal when both are off or both record to the same file (so that
/// options structs that carry one keep their `PartialEq`).
impl PartialEq for CommitTrace {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for CommitTrace {}

impl CommitTrace {
    /// No recording: every mark is a branch on `None`.
    pub fn off() -> CommitTrace {
        CommitTrace(None)
    }

    /// Record to `<prefix>.<node_id>` (created, or appended to); a thread appends what
    /// was recorded every 200 ms while any clone of the trace is alive, and the last
    /// records are written when the last clone goes (or at [`flush`](Self::flush)).
    ///
    /// # Errors
    /// The file cannot be opened, or the writing thread cannot start.
    pub fn to_file(prefix: &Path, node_id: u64) -> std::io::Result<CommitTrace> {
        let path = trace_file(prefix, node_id);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let recorder = Arc::new(Recorder {
            pending: Mutex::default(),
            file: Mutex::new(file),
            path,
        });
        let writer = Arc::downgrade(&recorder);
        std::thread::Builder::new()
            .name("commit-trace".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(WRITE_EVERY);
                    let Some(recorder) = writer.upgrade() else {
                        return;
                    };
                    if let Err(error) = recorder.write() {
                        tracing::warn!(%error, "commit trace: cannot write; stopped");
                        return;
                    }
                }
            })?;
        Ok(CommitTrace(Some(recorder)))
    }

    /// The file this trace records to, when on.
    pub fn path(&self) -> Option<&Path> {
        self.0.as_deref().map(|recorder| recorder.path.as_path())
    }

    /// Whether recording is on (to skip computing a mark's argument when it is not).
    #[inline]
    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Record `point` now, if recording is on.
    #[inline]
    pub fn mark(&self, point: Point, arg: u64) {
        if let Some(recorder) = &self.0 {
            recorder.record(point, arg);
        }
    }

    /// Write what is recorded so far (the background thread does every 200 ms; a
    /// stopping node once more).
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn flush(&self) -> std::io::Result<()> {
        self.0.as_deref().map_or(Ok(()), Recorder::write)
    }
}

struct Recorder {
    pending: Mutex<Pending>,
    file: Mutex<std::fs::File>,
    path: PathBuf,
}

#[derive(Default)]
struct Pending {
    records: Vec<(u64, Point, u64)>,
    dropped: u64,
}

impl Recorder {
    fn record(&self, point: Point, arg: u64) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.records.len() < MAX_PENDING {
            pending.records.push((now, point, arg));
        } else {
            pending.dropped += 1;
        }
    }

    /// Append what is recorded so far to the file.
    fn write(&self) -> std::io::Result<()> {
        // The file's lock first, so that two writers keep the records in order.
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if taken.records.is_empty() && taken.dropped == 0 {
            return Ok(());
        }
        let mut text = String::with_capacity(taken.records.len() * 40);
        for (ns, point, arg) in taken.records {
            let _ = writeln!(text, "{ns} {} {arg}", point.name());
        }
        if taken.dropped > 0 {
            let _ = writeln!(text, "0 dropped {}", taken.dropped);
        }
        file.write_all(text.as_bytes())
    }
}

impl Drop for Recorder {
    /// The last clone is gone: what is still in memory goes to the file.
    fn drop(&mut self) {
        if let Err(error) = self.write() {
            tracing::warn!(%error, "commit trace: the last records were not written");
        }
    }
}

/// The file a node with `node_id` records to under `prefix`.
pub fn trace_file(prefix: &Path, node_id: u64) -> PathBuf {
    let mut path = prefix.as_os_str().to_owned();
    path.push(format!(".{node_id}"));
    PathBuf::from(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_tags_keep_target_index_and_emptiness_apart() {
        assert_eq!(append_tag(None, Some(7), Some(5)), 7);
        assert_eq!(append_tag(Some(3), Some(7), None), (3 << 48) | 7);
        assert_eq!(append_tag(Some(3), None, Some(5)), (3 << 48) | EMPTY | 5);
        assert_eq!(append_tag(None, None, None), EMPTY);
        for point in Point::ALL {
            assert_eq!(Point::from_name(point.name()), Some(point));
        }
    }

    #[test]
    fn marks_reach_the_file_when_the_last_clone_goes_and_nothing_when_off() {
        let off = CommitTrace::off();
        off.mark(Point::Applied, 1);
        assert!(!off.enabled() && off.flush().is_ok() && off.path().is_none());

        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().join("trace");
        let trace = CommitTrace::to_file(&prefix, 2).unwrap();
        assert_eq!(trace.path(), Some(trace_file(&prefix, 2).as_path()));
        let clone = trace.clone();
        assert_eq!(clone, trace);
        assert_ne!(off, trace);
        trace.mark(Point::Proposed, 0);
        clone.mark(Point::Applied, 7);
        drop(trace);
        drop(clone);
        let text = std::fs::read_to_string(trace_file(&prefix, 2)).unwrap();
        let points: Vec<(&str, &str)> = text
            .lines()
            .map(|line| {
                let mut fields = line.split(' ').skip(1);
                (fields.next().unwrap(), fields.next().unwrap())
            })
            .collect();
        assert_eq!(points, [("proposed", "0"), ("applied", "7")]);
    }
}
