//! Prometheus metrics: one process-wide recorder, the names of every metric the server
//! exports, and the helpers the rest of the server calls to record them.
//!
//! The recorder is built on first use and also installed as the `metrics` crate's global
//! recorder (unless another one already is), so `metrics::counter!` anywhere in the
//! process reaches it. The helpers here always record into this recorder, whatever the
//! global one is.
//!
//! Node-level gauges (term, indexes, state-machine sizes) are set from a
//! [`NodeStatus`] by [`render`] right before the text is produced, and carry a
//! `node="<id>"` label, because tests run several nodes in one process.

use crate::status::NodeStatus;
use crate::store::{Applied, ApplyObserver};
use fencelock_core::{Event, FencingToken, SessionId};
use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    describe_counter, describe_gauge, describe_histogram,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::sync::{Once, OnceLock};
use std::time::Duration;

/// Counter: client requests answered, by gRPC `method` and status `code`.
pub const REQUESTS_TOTAL: &str = "fencelock_requests_total";
/// Histogram: time to answer a client request, by gRPC `method`, in seconds.
pub const REQUEST_DURATION_SECONDS: &str = "fencelock_request_duration_seconds";
/// Counter: lock grants (fencing tokens minted).
pub const GRANTS_TOTAL: &str = "fencelock_grants_total";
/// Counter: sessions ended by expiry.
pub const SESSIONS_EXPIRED_TOTAL: &str = "fencelock_sessions_expired_total";
/// Counter: Raft entries proposed by this node's proposer.
pub const RAFT_ENTRIES_PROPOSED_TOTAL: &str = "fencelock_raft_entries_proposed_total";
/// Histogram: commands packed into one proposed Raft entry.
pub const PROPOSAL_BATCH_SIZE: &str = "fencelock_proposal_batch_size";
/// Histogram: how long grants were held when they ended, in seconds, by lock-name
/// `prefix` (see [`NamePrefixes`]). Recorded on every node from the applied log.
pub const LOCK_HOLD_SECONDS: &str = "fencelock_lock_hold_seconds";
/// Histogram: how long granted waits had waited, in seconds, by lock-name `prefix`.
/// Recorded on every node from the applied log.
pub const LOCK_WAIT_SECONDS: &str = "fencelock_lock_wait_seconds";

/// Gauge: the node's current Raft term.
pub const RAFT_TERM: &str = "fencelock_raft_term";
/// Gauge: the leader this node knows of (0 when it knows none).
pub const RAFT_LEADER_ID: &str = "fencelock_raft_leader_id";
/// Gauge: 1 when this node is the leader, else 0.
pub const IS_LEADER: &str = "fencelock_is_leader";
/// Gauge: the highest log index known committed.
pub const RAFT_COMMIT_INDEX: &str = "fencelock_raft_commit_index";
/// Gauge: the highest log index applied to the state machine.
pub const RAFT_APPLIED_INDEX: &str = "fencelock_raft_applied_index";
/// Gauge: the highest log index in this node's log.
pub const RAFT_LAST_LOG_INDEX: &str = "fencelock_raft_last_log_index";
/// Gauge: live sessions in the applied state.
pub const SESSIONS: &str = "fencelock_sessions";
/// Gauge: locks known (held or waited for) in the applied state.
pub const LOCKS: &str = "fencelock_locks";
/// Gauge: grants currently held in the applied state.
pub const HELD_GRANTS: &str = "fencelock_held_grants";
/// Gauge: age in seconds of the oldest grant in force (0: none).
pub const OLDEST_GRANT_AGE_SECONDS: &str = "fencelock_oldest_grant_age_seconds";
/// Gauge: when the oldest grant in force was granted, Unix seconds (0: none).
pub const OLDEST_GRANT_TIMESTAMP_SECONDS: &str = "fencelock_oldest_grant_timestamp_seconds";
/// Gauge: grants in force of unknown age (granted before the log carried a wall clock).
pub const UNSTAMPED_GRANTS: &str = "fencelock_unstamped_grants";
/// Gauge: queued waiters in the applied state.
pub const WAITERS: &str = "fencelock_waiters";
/// Gauge: the last fencing token minted.
pub const LAST_TOKEN: &str = "fencelock_last_token";
/// Gauge: cluster members (voters and learners) in the membership this node knows.
pub const MEMBERS: &str = "fencelock_members";
/// Gauge: the cluster version in force in this node's applied state.
pub const CLUSTER_VERSION: &str = "fencelock_cluster_version";
/// Gauge: free bytes on the data disk at the last check.
pub const DISK_FREE_BYTES: &str = "fencelock_disk_free_bytes";
/// Gauge: the configured reserve of free bytes below which the NO_SPACE alarm goes up.
pub const DISK_RESERVE_BYTES: &str = "fencelock_disk_reserve_bytes";
/// Gauge: 1 while the NO_SPACE alarm is up (writes refused), else 0.
pub const DISK_NO_SPACE_ALARM: &str = "fencelock_disk_no_space_alarm";
/// Gauge: storage writes waiting for space right now.
pub const DISK_WRITES_WAITING: &str = "fencelock_disk_writes_waiting_for_space";
/// Gauge: storage writes that had to wait for space since start-up.
pub const DISK_WRITES_REFUSED_TOTAL: &str = "fencelock_disk_writes_refused_for_space";

/// Bucket bounds of [`REQUEST_DURATION_SECONDS`]: 100 µs to 10 s.
pub const REQUEST_DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Bucket bounds of [`PROPOSAL_BATCH_SIZE`]: 1 to 4096 commands.
pub const PROPOSAL_BATCH_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// Bucket bounds of [`LOCK_HOLD_SECONDS`] and [`LOCK_WAIT_SECONDS`]: 1 ms to a day.
pub const LOCK_TIME_BUCKETS: &[f64] = &[
    0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0,
];

/// The `prefix` label that hold and wait times carry, cut from lock names: the first
/// `depth` segments of the name split at `/` (depth 1, the default: the part before the
/// first `/`; depth 0: one series for every lock). At most `max` distinct labels are
/// handed out, so a service with many unrelated names cannot grow the metrics without
/// bound; names past it share the label `(other)`.
#[derive(Debug)]
pub struct NamePrefixes {
    depth: usize,
    max: usize,
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// The label of names past [`NamePrefixes`]'s bound.
pub const OTHER_PREFIX: &str = "(other)";

impl NamePrefixes {
    /// Labels of `depth` segments, at most `max` distinct.
    pub fn new(depth: usize, max: usize) -> NamePrefixes {
        NamePrefixes {
            depth,
            max,
            seen: std::sync::Mutex::default(),
        }
    }

    /// The label of lock `name`.
    pub fn label(&self, name: &str) -> String {
        let prefix = match self.depth {
            0 => "",
            depth => match name.match_indices('/').nth(depth - 1) {
                Some((end, _)) => &name[..end],
                None => name,
            },
        };
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(prefix) {
            return prefix.to_owned();
        }
        if seen.len() >= self.max {
            return OTHER_PREFIX.to_owned();
        }
        seen.insert(prefix.to_owned());
        prefix.to_owned()
    }
}

/// An apply observer that records hold times into [`LOCK_HOLD_SECONDS`] and wait times
/// into [`LOCK_WAIT_SECONDS`] on every node, from the applied log alone, then hands
/// every change on to `inner` (the node's event hub). A grant's time is the wall clock
/// its entry carries (the state's clock after the entry: the leader puts its clock
/// first in each entry); when the grant ends, the clock of the entry that ended it
/// minus that is how long it was held. Likewise a wait's: the clock when its acquire
/// queued, and the clock of the entry that granted it (a wait that ends without a
/// grant is not a sample). It keeps one number per grant in force and per queued wait,
/// dropped when the grant or the wait ends (and rebuilt from the state when a snapshot
/// replaces it), so it is bounded by the state's own limits. Every node records each
/// grant and wait once, whoever served the call and across leader changes.
pub struct HoldTimes<O> {
    inner: Arc<O>,
    /// Token of each grant in force → the wall clock (ms) when it was granted.
    granted_at_ms: Mutex<HashMap<FencingToken, u64>>,
    /// Each queued wait, by session and lock → the wall clock (ms) when it queued.
    queued_at_ms: Mutex<HashMap<SessionId, HashMap<String, u64>>>,
}

impl<O> HoldTimes<O> {
    /// Record hold times, then tell `inner`.
    pub fn new(inner: Arc<O>) -> Arc<Self> {
        Arc::new(HoldTimes {
            inner,
            granted_at_ms: Mutex::default(),
            queued_at_ms: Mutex::default(),
        })
    }
}

impl<O: ApplyObserver> ApplyObserver for HoldTimes<O> {
    fn applied(&self, index: u64, events: &[Event], applied: &Applied) {
        let now_ms = applied.state.clock_ms();
        let mut granted = self.granted_at_ms.lock().unwrap_or_else(|e| e.into_inner());
        let mut queued = self.queued_at_ms.lock().unwrap_or_else(|e| e.into_inner());
        for event in events {
            match event {
                Event::Acquired {
                    name,
                    session,
                    token,
                    ..
                } => {
                    granted.insert(*token, now_ms);
                    if let Some(waits) = queued.get_mut(session)
                        && let Some(at_ms) = waits.remove(name.as_str())
                    {
                        if waits.is_empty() {
                            queued.remove(session);
                        }
                        if at_ms != 0 && now_ms != 0 {
                            record_wait(name, Duration::from_millis(now_ms.saturating_sub(at_ms)));
                        }
                    }
                }
                Event::WaitCancelled { name, session } => {
                    if let Some(waits) = queued.get_mut(session) {
                        waits.remove(name.as_str());
                        if waits.is_empty() {
                            queued.remove(session);
                        }
                    }
                }
                Event::SessionEnded { session, .. } => {
                    queued.remove(session);
                }
                Event::Released { name, token, .. } => {
                    if let Some(at_ms) = granted.remove(token)
                        && at_ms != 0
                        && now_ms != 0
                    {
                        let held = Duration::from_millis(now_ms.saturating_sub(at_ms));
                        record_hold(name, held);
                    }
                }
                _ => {}
            }
        }
        drop(queued);
        drop(granted);
        self.inner.applied(index, events, applied);
    }

    fn queued(&self, session: SessionId, applied: &Applied) {
        let Some(view) = applied.state.session(session) else {
            return;
        };
        let now_ms = applied.state.clock_ms();
        let mut queued = self.queued_at_ms.lock().unwrap_or_else(|e| e.into_inner());
        let waits = queued.entry(session).or_default();
        // A wait already known keeps its time: this command added the others (a retry
        // answered from memory adds none).
        for name in view.waiting {
            waits.entry(name).or_insert(now_ms);
        }
        self.inner.queued(session, applied);
    }

    fn reset(&self, applied: &Applied) {
        let mut granted = self.granted_at_ms.lock().unwrap_or_else(|e| e.into_inner());
        let mut queued = self.queued_at_ms.lock().unwrap_or_else(|e| e.into_inner());
        granted.clear();
        queued.clear();
        // Page through the locks, so a large state is not copied at once.
        let mut after: Option<String> = None;
        loop {
            let (page, more) = applied
                .state
                .locks_with_prefix("", after.as_deref(), RESET_PAGE);
            for lock in &page {
                for holder in &lock.holders {
                    granted.insert(holder.token, holder.granted_at_ms);
                }
                for waiter in &lock.waiters {
                    queued
                        .entry(waiter.session)
                        .or_default()
                        .insert(lock.name.clone(), waiter.queued_at_ms);
                }
            }
            match page.last() {
                Some(last) if more => after = Some(last.name.clone()),
                _ => break,
            }
        }
        drop(queued);
        drop(granted);
        self.inner.reset(applied);
    }
}

/// Locks read per page when [`HoldTimes`] rebuilds from a replaced state.
const RESET_PAGE: usize = 1_000;

/// How often buffered histogram samples are folded in when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

struct Exporter {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();
static INSTALL: Once = Once::new();

fn build() -> Exporter {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(REQUEST_DURATION_SECONDS.to_owned()),
            REQUEST_DURATION_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(PROPOSAL_BATCH_SIZE.to_owned()),
                PROPOSAL_BATCH_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(LOCK_HOLD_SECONDS.to_owned()),
                LOCK_TIME_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(LOCK_WAIT_SECONDS.to_owned()),
                LOCK_TIME_BUCKETS,
            )
        })
        .expect("bucket lists are constant and non-empty")
        .build_recorder();
    let handle = recorder.handle();
    Exporter { recorder, handle }
}

fn exporter() -> &'static Exporter {
    let exporter = EXPORTER.get_or_init(build);
    INSTALL.call_once(|| {
        metrics::with_local_recorder(&exporter.recorder, describe_all);
        if metrics::set_global_recorder(Forward).is_err() {
            tracing::warn!(
                "another metrics recorder is installed globally; only fencelock's own \
                 metrics helpers reach /metrics"
            );
        }
        let handle = exporter.handle.clone();
        let spawned = std::thread::Builder::new()
            .name("fencelock-metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    handle.run_upkeep();
                }
            });
        if let Err(err) = spawned {
            tracing::warn!(%err, "could not start the metrics upkeep thread; histograms are folded in at each scrape only");
        }
    });
    exporter
}

/// Runs `f` with fencelock's recorder as the current one, whatever the global one is.
fn with_ours<T>(f: impl FnOnce() -> T) -> T {
    metrics::with_local_recorder(&exporter().recorder, f)
}

/// The global recorder: forwards everything to fencelock's Prometheus recorder.
struct Forward;

impl Recorder for Forward {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        exporter().recorder.describe_counter(key, unit, description);
    }
    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        exporter().recorder.describe_gauge(key, unit, description);
    }
    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        exporter()
            .recorder
            .describe_histogram(key, unit, description);
    }
    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        exporter().recorder.register_counter(key, metadata)
    }
    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        exporter().recorder.register_gauge(key, metadata)
    }
    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        exporter().recorder.register_histogram(key, metadata)
    }
}

fn describe_all() {
    describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "Client requests answered, by gRPC method and status code."
    );
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time to answer a client request, by gRPC method."
    );
    describe_counter!(
        GRANTS_TOTAL,
        Unit::Count,
        "Lock grants made (fencing tokens minted)."
    );
    describe_counter!(
        SESSIONS_EXPIRED_TOTAL,
        Unit::Count,
        "Sessions ended because their lease expired."
    );
    describe_counter!(
        RAFT_ENTRIES_PROPOSED_TOTAL,
        Unit::Count,
        "Raft entries proposed by this node."
    );
    describe_histogram!(
        PROPOSAL_BATCH_SIZE,
        Unit::Count,
        "Commands packed into one proposed Raft entry."
    );
    describe_histogram!(
        LOCK_HOLD_SECONDS,
        Unit::Seconds,
        "How long grants were held when they ended, by lock-name prefix (leader's wall clock as recorded in the log)."
    );
    describe_histogram!(
        LOCK_WAIT_SECONDS,
        Unit::Seconds,
        "How long granted waits had waited, by lock-name prefix (leader's wall clock as recorded in the log)."
    );
    describe_gauge!(RAFT_TERM, Unit::Count, "The node's current Raft term.");
    describe_gauge!(
        RAFT_LEADER_ID,
        Unit::Count,
        "Id of the leader this node knows of; 0 when it knows none."
    );
    describe_gauge!(
        IS_LEADER,
        Unit::Count,
        "1 when this node is the leader, else 0."
    );
    describe_gauge!(
        RAFT_COMMIT_INDEX,
        Unit::Count,
        "Highest Raft log index known committed."
    );
    describe_gauge!(
        RAFT_APPLIED_INDEX,
        Unit::Count,
        "Highest Raft log index applied to the state machine."
    );
    describe_gauge!(
        RAFT_LAST_LOG_INDEX,
        Unit::Count,
        "Highest Raft log index in this node's log."
    );
    describe_gauge!(SESSIONS, Unit::Count, "Live sessions in the applied state.");
    describe_gauge!(
        LOCKS,
        Unit::Count,
        "Locks held or waited for in the applied state."
    );
    describe_gauge!(
        HELD_GRANTS,
        Unit::Count,
        "Grants currently held in the applied state."
    );
    describe_gauge!(
        OLDEST_GRANT_AGE_SECONDS,
        Unit::Seconds,
        "Age of the oldest grant in force, 0 when none: this node's wall clock (or the log's, if later) minus the leader's wall clock recorded with the grant."
    );
    describe_gauge!(
        OLDEST_GRANT_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "When the oldest grant in force was granted (leader's wall clock in the log, Unix seconds), 0 when none."
    );
    describe_gauge!(
        UNSTAMPED_GRANTS,
        Unit::Count,
        "Grants in force made before the log carried a wall clock; their age is unknown."
    );
    describe_gauge!(
        WAITERS,
        Unit::Count,
        "Queued lock waiters in the applied state."
    );
    describe_gauge!(
        CLUSTER_VERSION,
        Unit::Count,
        "The cluster version in force in this node's applied state."
    );
    describe_gauge!(
        LAST_TOKEN,
        Unit::Count,
        "The last fencing token minted (exact up to 2^53)."
    );
    describe_gauge!(
        MEMBERS,
        Unit::Count,
        "Cluster members (voters and learners) this node knows."
    );
    describe_gauge!(
        DISK_FREE_BYTES,
        Unit::Bytes,
        "Free bytes on the data disk at the last check."
    );
    describe_gauge!(
        DISK_RESERVE_BYTES,
        Unit::Bytes,
        "Below this many free bytes the NO_SPACE alarm goes up."
    );
    describe_gauge!(
        DISK_NO_SPACE_ALARM,
        Unit::Count,
        "1 while the NO_SPACE alarm is up and writes that add state are refused."
    );
    describe_gauge!(
        DISK_WRITES_WAITING,
        Unit::Count,
        "Storage writes the full disk refused, waiting for space to be written again."
    );
    describe_gauge!(
        DISK_WRITES_REFUSED_TOTAL,
        Unit::Count,
        "Storage writes that had to wait for space since start-up."
    );
}

/// The process-wide Prometheus handle; builds and installs the recorder on first call.
pub fn handle() -> &'static PrometheusHandle {
    &exporter().handle
}

/// Records one answered client request: counts it under `method` and `code` (the gRPC
/// status code name, e.g. `"Ok"`, `"Unavailable"`) and observes its duration.
pub fn record_request(method: &'static str, code: &'static str, elapsed: Duration) {
    with_ours(|| {
        metrics::counter!(REQUESTS_TOTAL, "method" => method, "code" => code).increment(1);
        metrics::histogram!(REQUEST_DURATION_SECONDS, "method" => method)
            .record(elapsed.as_secs_f64());
    });
}

/// Counts `count` lock grants. Call it where the grants are decided once per cluster
/// (on the leader, from the applied results of its own proposals), so that summing over
/// nodes does not count a grant once per replica.
pub fn record_grants(count: usize) {
    with_ours(|| metrics::counter!(GRANTS_TOTAL).increment(count as u64));
}

/// Counts `count` sessions ended by expiry (on the leader, which decides expiry).
pub fn record_expired(count: usize) {
    with_ours(|| metrics::counter!(SESSIONS_EXPIRED_TOTAL).increment(count as u64));
}

/// The process's name-prefix labels (the metrics are process-wide too): set by the
/// first node started, from its `metrics_name_depth` and `metrics_max_name_prefixes`.
static NAME_PREFIXES: OnceLock<NamePrefixes> = OnceLock::new();

/// Label hold and wait times by the first `depth` segments of lock names, at most `max`
/// labels. The first call in a process decides (later ones are ignored: the labels
/// already handed out stay).
pub fn set_name_prefixes(depth: usize, max: usize) {
    let _ = NAME_PREFIXES.set(NamePrefixes::new(depth, max));
}

fn name_label(name: &str) -> String {
    NAME_PREFIXES
        .get_or_init(|| NamePrefixes::new(1, 1_000))
        .label(name)
}

/// Records how long a grant of lock `name` was held.
pub fn record_hold(name: &str, held: Duration) {
    let prefix = name_label(name);
    with_ours(|| {
        metrics::histogram!(LOCK_HOLD_SECONDS, "prefix" => prefix).record(held.as_secs_f64());
    });
}

/// Records how long a granted wait for lock `name` waited.
pub fn record_wait(name: &str, waited: Duration) {
    let prefix = name_label(name);
    with_ours(|| {
        metrics::histogram!(LOCK_WAIT_SECONDS, "prefix" => prefix).record(waited.as_secs_f64());
    });
}

/// Records one proposed Raft entry that packs `batch_size` commands.
pub fn record_batch(batch_size: usize) {
    with_ours(|| {
        metrics::counter!(RAFT_ENTRIES_PROPOSED_TOTAL).increment(1);
        metrics::histogram!(PROPOSAL_BATCH_SIZE).record(batch_size as f64);
    });
}

/// Sets the node gauges from `status` (labelled `node="<id>"`) and renders every metric
/// of the process in the Prometheus text format (version 0.0.4).
pub fn render(status: &NodeStatus) -> String {
    let node = status.node_id.to_string();
    with_ours(|| {
        let set = |name: &'static str, value: u64| {
            metrics::gauge!(name, "node" => node.clone()).set(value as f64);
        };
        set(RAFT_TERM, status.term);
        set(RAFT_LEADER_ID, status.leader_id.unwrap_or(0));
        set(IS_LEADER, u64::from(status.state == "Leader"));
        set(RAFT_COMMIT_INDEX, status.commit_index);
        set(RAFT_APPLIED_INDEX, status.applied_index);
        set(RAFT_LAST_LOG_INDEX, status.last_log_index);
        set(SESSIONS, status.sessions);
        set(LOCKS, status.locks);
        set(HELD_GRANTS, status.held_grants);
        set(WAITERS, status.waiters);
        let seconds = |ms: u64| Duration::from_millis(ms).as_secs_f64();
        let oldest = &status.oldest_grant;
        let gauge = |name: &'static str, value: f64| {
            metrics::gauge!(name, "node" => node.clone()).set(value);
        };
        gauge(OLDEST_GRANT_AGE_SECONDS, seconds(oldest.age_ms));
        gauge(
            OLDEST_GRANT_TIMESTAMP_SECONDS,
            seconds(oldest.granted_at_ms.unwrap_or(0)),
        );
        set(UNSTAMPED_GRANTS, oldest.unstamped);
        set(LAST_TOKEN, status.last_token);
        set(MEMBERS, status.members.len() as u64);
        set(CLUSTER_VERSION, u64::from(status.cluster_version));
        set(DISK_FREE_BYTES, status.disk.free_bytes);
        set(DISK_RESERVE_BYTES, status.disk.reserve_bytes);
        set(DISK_NO_SPACE_ALARM, u64::from(status.disk.no_space_alarm));
        set(DISK_WRITES_WAITING, status.disk.writes_waiting_for_space);
        set(
            DISK_WRITES_REFUSED_TOTAL,
            status.disk.writes_refused_for_space_total,
        );
    });
    handle().render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::MemberStatus;

    fn status(node_id: u64, state: &str) -> NodeStatus {
        NodeStatus {
            node_id,
            state: state.into(),
            leader_id: Some(1),
            leader_client_addr: Some("127.0.0.1:7001".into()),
            term: 7,
            last_log_index: 42,
            commit_index: 41,
            applied_index: 40,
            members: vec![MemberStatus {
                id: 1,
                peer_addr: "127.0.0.1:7101".into(),
                client_addr: Some("127.0.0.1:7001".into()),
                voter: true,
            }],
            sessions: 3,
            locks: 2,
            held_grants: 2,
            waiters: 1,
            last_token: 99,
            total_grants: 99,
            total_expired_sessions: 0,
            disk: crate::status::DiskStatus {
                no_space_alarm: node_id == 2,
                free_bytes: 1000,
                reserve_bytes: 500,
                ..Default::default()
            },
            oldest_grant: crate::status::OldestGrant {
                granted_at_ms: Some(1_700_000_000_000),
                age_ms: 90_500,
                unstamped: 0,
            },
            cluster_version: 3,
        }
    }

    #[test]
    fn name_prefixes_cut_at_the_depth_and_stay_bounded() {
        let one = NamePrefixes::new(1, 3);
        assert_eq!(one.label("db/users/42"), "db");
        assert_eq!(one.label("jobs"), "jobs");
        assert_eq!(one.label("db/orders"), "db");
        let two = NamePrefixes::new(2, 100);
        assert_eq!(two.label("db/users/42"), "db/users");
        assert_eq!(two.label("db/users"), "db/users");
        assert_eq!(two.label("db"), "db");
        assert_eq!(NamePrefixes::new(0, 1).label("db/users"), "");
        // The bound: a third and fourth new prefix; the fourth is folded into "(other)",
        // while a prefix seen before keeps its label.
        assert_eq!(one.label("cron/x"), "cron");
        assert_eq!(one.label("mail/x"), OTHER_PREFIX);
        assert_eq!(one.label("db/x"), "db");
    }

    #[test]
    fn hold_and_wait_times_reach_the_exporter() {
        record_hold("holdtest/a", Duration::from_secs(3));
        record_wait("holdtest/b", Duration::from_millis(250));
        let text = handle().render();
        assert!(
            text.contains("fencelock_lock_hold_seconds_bucket{prefix=\"holdtest\""),
            "{text}"
        );
        assert!(
            text.contains("fencelock_lock_wait_seconds_count{prefix=\"holdtest\"}"),
            "{text}"
        );
    }

    #[test]
    fn render_sets_labelled_gauges_per_node() {
        let _ = render(&status(1, "Leader"));
        let text = render(&status(2, "Follower"));
        assert!(text.contains("fencelock_raft_term{node=\"1\"} 7"), "{text}");
        assert!(text.contains("fencelock_is_leader{node=\"1\"} 1"), "{text}");
        assert!(text.contains("fencelock_is_leader{node=\"2\"} 0"), "{text}");
        assert!(
            text.contains("fencelock_last_token{node=\"2\"} 99"),
            "{text}"
        );
        assert!(text.contains("fencelock_members{node=\"2\"} 1"), "{text}");
        assert!(
            text.contains("fencelock_cluster_version{node=\"2\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("fencelock_oldest_grant_age_seconds{node=\"2\"} 90.5"),
            "{text}"
        );
        assert!(
            text.contains("fencelock_oldest_grant_timestamp_seconds{node=\"2\"} 1700000000"),
            "{text}"
        );
        assert!(
            text.contains("fencelock_unstamped_grants{node=\"2\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("fencelock_disk_no_space_alarm{node=\"2\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("fencelock_disk_no_space_alarm{node=\"1\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("fencelock_disk_free_bytes{node=\"1\"} 1000"),
            "{text}"
        );
        assert!(text.contains("# HELP fencelock_waiters"), "{text}");
    }

    #[test]
    fn request_helpers_reach_the_exporter() {
        record_request("Acquire", "Ok", Duration::from_micros(300));
        record_request("Acquire", "Ok", Duration::from_millis(3));
        record_batch(5);
        record_grants(2);
        record_expired(1);
        let text = handle().render();
        assert!(
            text.contains("fencelock_requests_total{method=\"Acquire\",code=\"Ok\"}"),
            "{text}"
        );
        assert!(
            text.contains(
                "fencelock_request_duration_seconds_bucket{method=\"Acquire\",le=\"0.0001\"} 0"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "fencelock_request_duration_seconds_bucket{method=\"Acquire\",le=\"10\"}"
            ),
            "{text}"
        );
        assert!(
            text.contains("fencelock_proposal_batch_size_bucket{le=\"8\"}"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE fencelock_grants_total counter"),
            "{text}"
        );
    }

    #[test]
    fn plain_macros_reach_the_exporter_through_the_global_recorder() {
        let _ = handle();
        metrics::counter!("fencelock_test_global_total").increment(3);
        assert!(handle().render().contains("fencelock_test_global_total 3"));
    }
}
