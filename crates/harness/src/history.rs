//! The history of a run: one JSON line per event (an operation's invocation, its
//! completion as `ok`, `fail` or `info` — outcome unknown — an observed watch event, a
//! fault), with monotonic timestamps shared by every process of the run.
//!
//! Timestamps are `CLOCK_MONOTONIC` nanoseconds minus the run's base, so the harness and
//! the client processes it spawns write comparable times.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Nanoseconds of `CLOCK_MONOTONIC` (the same clock in every process of the machine).
pub fn monotonic_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always available on Linux");
    let seconds = u64::try_from(now.tv_sec()).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec()).unwrap_or(0);
    seconds * 1_000_000_000 + nanos
}

/// What an event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An operation started.
    Invoke,
    /// It completed and took effect as answered.
    Ok,
    /// It completed and certainly did not take effect.
    Fail,
    /// Its outcome is unknown: it may or may not have taken effect.
    Info,
}

/// The operations the workload, the observer and the nemesis record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Open a session (`session` in the completion).
    OpenSession,
    /// Close a session: every lock it holds is released.
    CloseSession,
    /// Acquire a lock (`wait` says how); `outcome` is `granted`, `would_block` or
    /// `timed_out`, `token` the grant's token.
    Acquire,
    /// Release the grant `token` of `lock`.
    Release,
    /// Verify `token` of `lock`: `outcome` `current` or `stale`, `holder_token` the
    /// current grant's token.
    Verify,
    /// Describe `lock`: `holder_session` / `holder_token` of its exclusive holder.
    Describe,
    /// Read `key` of the fenced service (`body` holds the value read).
    KvGet,
    /// Append `body` to `key` of the fenced service with `token` under `lock`;
    /// `outcome` is `admitted` or `refused`, `seq` the decision's sequence number.
    KvAppend,
    /// The client saw its session lost (`outcome` is the reason; `error` says whether
    /// the client's own lease deadline had passed).
    SessionLost,
    /// The watch observer saw an event (`outcome`: `acquired`, `released`, `expired`,
    /// `closed`, `forced` or `resync`), with `revision`.
    Watch,
    /// A fault started (`invoke`) or ended (`ok`); `outcome` names its kind, `value`
    /// describes it.
    Fault,
}

/// One line of the history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Nanoseconds since the run's base (monotonic).
    pub time_ns: u64,
    /// Invoke, ok, fail or info.
    #[serde(rename = "type")]
    pub kind: Option<Kind>,
    /// Who acted: `c0`, `c1`... (client tasks), `p0`... (client processes),
    /// `pause1-holder`, `cut2-rival`, `partitioned3-holder`, `suspend4-rival`... (the
    /// holder scenarios), `observer`, `nemesis`,
    /// `final`.
    pub process: String,
    /// Pairs an invocation with its completion (unique per process).
    pub op_id: u64,
    /// The operation.
    pub op: Option<Op>,
    /// The node the fault acted on, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<u64>,
    /// The lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    /// The session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<u64>,
    /// The fencing token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u64>,
    /// How an acquire waits: `none`, `timeout:MS` or `forever`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<String>,
    /// The answer, in a word (see [`Op`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// For describe: the exclusive holder's session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_session: Option<u64>,
    /// For describe and verify: the current grant's token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder_token: Option<u64>,
    /// The fenced service's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// A body written or a value read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The fenced service's decision sequence number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The cluster's revision (applied log index) of a watch event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// A description (faults) or detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The error of a `fail` or `info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For a fenced write by a holder that checked its lease first: until when its client
    /// library held the lease valid, read just before the write (history time). Absent
    /// when the writer did not check, or found the lease already run out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until_ns: Option<u64>,
    /// For an acquire that was one name of an atomic multi-lock: the request's group (the
    /// same number on the acquire of every name of the request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multi: Option<u64>,
}

impl Event {
    /// An event of `process` about `op` of kind `kind`, stamped later by the recorder.
    pub fn new(kind: Kind, process: &str, op_id: u64, op: Op) -> Event {
        Event {
            kind: Some(kind),
            process: process.to_string(),
            op_id,
            op: Some(op),
            ..Event::default()
        }
    }

    /// With `lock`.
    #[must_use]
    pub fn lock(mut self, lock: &str) -> Event {
        self.lock = Some(lock.to_string());
        self
    }

    /// With `session`.
    #[must_use]
    pub fn session(mut self, session: u64) -> Event {
        self.session = Some(session);
        self
    }

    /// With `token`.
    #[must_use]
    pub fn token(mut self, token: u64) -> Event {
        self.token = Some(token);
        self
    }

    /// With `outcome`.
    #[must_use]
    pub fn outcome(mut self, outcome: &str) -> Event {
        self.outcome = Some(outcome.to_string());
        self
    }

    /// With `error`.
    #[must_use]
    pub fn error(mut self, error: impl ToString) -> Event {
        self.error = Some(error.to_string());
        self
    }

    /// With `time_ns`.
    #[must_use]
    pub fn at(mut self, time_ns: u64) -> Event {
        self.time_ns = time_ns;
        self
    }

    /// Whether this is the kind `kind` of op `op`.
    pub fn is(&self, kind: Kind, op: Op) -> bool {
        self.kind == Some(kind) && self.op == Some(op)
    }
}

/// One operation: an invocation paired with its completion (`None` when the history
/// ended before it completed, which counts as unknown).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The invocation.
    pub invoke: Event,
    /// The completion.
    pub complete: Option<Event>,
}

impl Operation {
    /// The completion's kind; `Info` when it never completed.
    pub fn kind(&self) -> Kind {
        self.complete
            .as_ref()
            .and_then(|c| c.kind)
            .unwrap_or(Kind::Info)
    }

    /// The operation.
    pub fn op(&self) -> Op {
        self.invoke.op.unwrap_or(Op::Fault)
    }

    /// The lock (from the invocation, else the completion).
    pub fn lock(&self) -> Option<&str> {
        self.invoke
            .lock
            .as_deref()
            .or_else(|| self.complete.as_ref().and_then(|c| c.lock.as_deref()))
    }

    /// The session (from the completion, else the invocation).
    pub fn session(&self) -> Option<u64> {
        self.complete
            .as_ref()
            .and_then(|c| c.session)
            .or(self.invoke.session)
    }

    /// The token (from the completion, else the invocation).
    pub fn token(&self) -> Option<u64> {
        self.complete
            .as_ref()
            .and_then(|c| c.token)
            .or(self.invoke.token)
    }

    /// The completion's outcome word.
    pub fn outcome(&self) -> Option<&str> {
        self.complete.as_ref().and_then(|c| c.outcome.as_deref())
    }

    /// When it started.
    pub fn start_ns(&self) -> u64 {
        self.invoke.time_ns
    }

    /// When it completed; `u64::MAX` when unknown (it may take effect at any later time).
    pub fn end_ns(&self) -> u64 {
        match &self.complete {
            Some(c) if c.kind != Some(Kind::Info) => c.time_ns,
            _ => u64::MAX,
        }
    }
}

/// Pair invocations with completions (by process and op id), in invocation order.
/// Observer and fault events are single events; they are returned as operations whose
/// invocation is the event itself and whose completion is a copy of it.
pub fn operations(events: &[Event]) -> Vec<Operation> {
    let mut open: std::collections::HashMap<(String, u64), usize> =
        std::collections::HashMap::new();
    let mut operations: Vec<Operation> = Vec::new();
    for event in events {
        match event.kind {
            Some(Kind::Invoke) => {
                open.insert((event.process.clone(), event.op_id), operations.len());
                operations.push(Operation {
                    invoke: event.clone(),
                    complete: None,
                });
            }
            Some(_) => match open.remove(&(event.process.clone(), event.op_id)) {
                Some(index) => operations[index].complete = Some(event.clone()),
                None => operations.push(Operation {
                    invoke: event.clone(),
                    complete: Some(event.clone()),
                }),
            },
            None => {}
        }
    }
    operations
}

/// Writes the history: JSON lines to a file, and keeps every event in memory for the
/// checkers. Cheap to clone; clones share the file.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<RecorderInner>,
}

struct RecorderInner {
    base_ns: u64,
    events: Mutex<Vec<Event>>,
    /// Line-buffered: every event reaches the kernel before `record` returns, so a client
    /// process killed at the end of a run (it did not finish in time) loses no event it
    /// recorded: an invocation is recorded before its call is sent, so a write the fenced
    /// service admitted always has its invocation in the history.
    file: Mutex<Option<std::io::LineWriter<std::fs::File>>>,
    next_op: AtomicU64,
    completed: AtomicU64,
    faults: AtomicU64,
    last_fault: Mutex<String>,
}

impl Recorder {
    /// A recorder whose times count from `base_ns` (a [`monotonic_ns`] reading), writing
    /// to `path` when given.
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn new(base_ns: u64, path: Option<&Path>) -> std::io::Result<Recorder> {
        let file = match path {
            Some(path) => Some(std::io::LineWriter::new(std::fs::File::create(path)?)),
            None => None,
        };
        Ok(Recorder {
            inner: Arc::new(RecorderInner {
                base_ns,
                events: Mutex::new(Vec::new()),
                file: Mutex::new(file),
                next_op: AtomicU64::new(1),
                completed: AtomicU64::new(0),
                faults: AtomicU64::new(0),
                last_fault: Mutex::new(String::new()),
            }),
        })
    }

    /// The base of the run's times.
    pub fn base_ns(&self) -> u64 {
        self.inner.base_ns
    }

    /// Nanoseconds since the base, now.
    pub fn now_ns(&self) -> u64 {
        monotonic_ns().saturating_sub(self.inner.base_ns)
    }

    /// A fresh op id.
    pub fn next_op_id(&self) -> u64 {
        self.inner.next_op.fetch_add(1, Ordering::Relaxed)
    }

    /// Record `event`, stamped with the current time.
    pub fn record(&self, event: Event) {
        let stamped = event.at(self.now_ns());
        self.record_stamped(stamped);
    }

    /// Completed client operations and faults started so far, and the latest fault
    /// (`healed` once it ended), for the progress bar.
    pub fn progress(&self) -> (u64, u64, String) {
        (
            self.inner.completed.load(Ordering::Relaxed),
            self.inner.faults.load(Ordering::Relaxed),
            self.inner
                .last_fault
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }

    /// Record `event` with the time it carries (events from client processes).
    pub fn record_stamped(&self, event: Event) {
        match (event.op, event.kind) {
            (Some(Op::Fault), Some(kind)) => {
                let mut last = self
                    .inner
                    .last_fault
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if kind == Kind::Invoke {
                    self.inner.faults.fetch_add(1, Ordering::Relaxed);
                    *last = event.value.clone().unwrap_or_default();
                } else {
                    *last = "healed".into();
                }
            }
            (Some(Op::Watch | Op::SessionLost), _) | (_, Some(Kind::Invoke)) | (_, None) => {}
            _ => {
                self.inner.completed.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut events = self.inner.events.lock().unwrap_or_else(|e| e.into_inner());
        let mut file = self.inner.file.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(file), Ok(line)) = (file.as_mut(), serde_json::to_string(&event)) {
            let _ = writeln!(file, "{line}");
        }
        events.push(event);
    }

    /// Every event so far, sorted by time (stable: equal times keep recording order).
    pub fn events(&self) -> Vec<Event> {
        let mut events = self
            .inner
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        events.sort_by_key(|e| e.time_ns);
        events
    }

    /// Flush the file.
    pub fn flush(&self) {
        if let Some(file) = self
            .inner
            .file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            let _ = file.flush();
        }
    }
}

/// Read a history file back (one JSON event per line; blank lines skipped). A last line
/// without its newline that does not parse is the write a killed process was cut off in:
/// it is skipped.
///
/// # Errors
/// The file cannot be read or a complete line is not an event.
pub fn read_history(path: &Path) -> anyhow::Result<Vec<Event>> {
    let text = std::fs::read_to_string(path)?;
    let cut_short = !text.is_empty() && !text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut events = Vec::new();
    for (number, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(line) {
            Ok(event) => events.push(event),
            Err(_) if cut_short && number + 1 == lines.len() => {}
            Err(e) => anyhow::bail!("{}:{}: {e}", path.display(), number + 1),
        }
    }
    events.sort_by_key(|e| e.time_ns);
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let recorder = Recorder::new(monotonic_ns(), Some(&path)).unwrap();
        recorder.record(Event::new(Kind::Invoke, "c0", 1, Op::Acquire).lock("l0"));
        recorder.record(
            Event::new(Kind::Ok, "c0", 1, Op::Acquire)
                .lock("l0")
                .token(7)
                .outcome("granted"),
        );
        recorder.flush();
        let back = read_history(&path).unwrap();
        assert_eq!(back, recorder.events());
        let ops = operations(&back);
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].token(), Some(7));
        assert!(ops[0].end_ns() >= ops[0].start_ns());
    }

    #[test]
    fn every_event_is_on_disk_before_record_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let recorder = Recorder::new(monotonic_ns(), Some(&path)).unwrap();
        recorder.record(Event::new(Kind::Invoke, "c0", 1, Op::KvAppend).lock("l0"));
        // No flush: what a process killed right now would leave behind.
        let back = read_history(&path).unwrap();
        assert_eq!(back, recorder.events());
    }

    #[test]
    fn a_last_line_cut_short_is_skipped_and_a_bad_complete_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let event = Event::new(Kind::Invoke, "c0", 1, Op::Acquire).lock("l0");
        let line = serde_json::to_string(&event).unwrap();
        std::fs::write(&path, format!("{line}\n{}", &line[..line.len() / 2])).unwrap();
        assert_eq!(read_history(&path).unwrap(), vec![event.clone()]);
        std::fs::write(&path, format!("{}\n{line}\n", &line[..line.len() / 2])).unwrap();
        assert!(read_history(&path).is_err());
        std::fs::write(&path, format!("{line}\n{}\n", &line[..line.len() / 2])).unwrap();
        assert!(
            read_history(&path).is_err(),
            "a cut line with its newline is damage"
        );
    }
}
