//! The workload: clients that take locks, read and append to the fenced service with
//! their token, and release; plus plain try-lock, verify and describe calls; the
//! paused-holder scenario; and the watch observer. Every operation is recorded as an
//! invocation and a completion (`ok`, `fail`, or `info` when the outcome is unknown).
//! Every loop is bounded in count and in time.

use crate::check::durability::BEFORE_DEADLINE;
use crate::history::{Event, Kind, Op, Recorder};
use fencelock_client::{
    AcquireOptions, Acquisition, Client, Error, LockGuard, LostReason, MultiAcquisition, Session,
    Wait, WatchEvent,
};
use fencelock_fenced_kv::{ClientError, FencedKvClient, WriteOutcome};
use futures::StreamExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every lock of a run starts with this prefix (the observer watches it).
pub const LOCK_PREFIX: &str = "harness/";

/// The contended locks of the semaphore workload are named `harness/sem{N}-...`: a
/// counting semaphore of N permits. The name carries the limit, so that client processes
/// acquire with it and the checkers read it from the history alone.
const SEMAPHORE_PREFIX: &str = "harness/sem";

/// The name of contended lock `i`: an ordinary exclusive lock, or with `permits` a
/// semaphore of that many permits (see [`permits_of`]).
pub fn contended_lock(i: usize, permits: Option<u32>) -> String {
    match permits {
        Some(n) => format!("{SEMAPHORE_PREFIX}{n}-l{i}"),
        None => format!("{LOCK_PREFIX}l{i}"),
    }
}

/// The permit limit of `lock` when it is a semaphore of the semaphore workload
/// (`None`: an ordinary lock).
pub fn permits_of(lock: &str) -> Option<u32> {
    let rest = lock.strip_prefix(SEMAPHORE_PREFIX)?;
    let (n, _) = rest.split_once('-')?;
    n.parse().ok().filter(|&n| n > 0)
}

/// The contended and scenario locks of the lock-delay workload are named
/// `harness/delay{MS}-...`: each acquire of such a lock asks for a lock-delay of MS
/// milliseconds. As with semaphores, the name carries the setting, so every process
/// acquires with it and the checkers read it from the history alone.
const DELAY_PREFIX: &str = "harness/delay";

/// `lock` (a name under [`LOCK_PREFIX`]) with a lock-delay of `delay_ms` when given (see
/// [`lock_delay_of`]); unchanged otherwise.
pub fn with_lock_delay(lock: &str, delay_ms: Option<u64>) -> String {
    match (delay_ms, lock.strip_prefix(LOCK_PREFIX)) {
        (Some(ms), Some(rest)) => format!("{DELAY_PREFIX}{ms}-{rest}"),
        _ => lock.to_string(),
    }
}

/// The lock-delay, in ms, that every acquire of `lock` asks for in the lock-delay
/// workload (`None`: none).
pub fn lock_delay_of(lock: &str) -> Option<u64> {
    let rest = lock.strip_prefix(DELAY_PREFIX)?;
    let (ms, _) = rest.split_once('-')?;
    ms.parse().ok().filter(|&ms| ms > 0)
}

/// The options of an acquire of `lock`: its permits and its lock-delay, from its name.
fn options_for(lock: &str, wait: Wait) -> AcquireOptions {
    AcquireOptions::exclusive()
        .wait(wait)
        .permits(permits_of(lock))
        .lock_delay(Duration::from_millis(lock_delay_of(lock).unwrap_or(0)))
}

/// One client's settings.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Its name in the history (`c0`, `p0`, ...).
    pub name: String,
    /// The nodes' client addresses.
    pub endpoints: Vec<String>,
    /// The fenced service.
    pub kv: SocketAddr,
    /// The contended locks it picks from.
    pub locks: Vec<String>,
    /// Session TTL.
    pub ttl: Duration,
    /// At most this many operations.
    pub max_ops: u64,
    /// Stop starting operations after this long.
    pub duration: Duration,
    /// The seed of its choices.
    pub seed: u64,
    /// A lock to take at the start and hold to the end (the durability check).
    pub hold: Option<String>,
    /// Close the session at the end (a client process that exits).
    pub close_at_end: bool,
    /// Control runs only (zero otherwise): how much longer than its client library
    /// says the client trusts its lease — a client that counts its lease wrongly, which
    /// the `lease` checker must catch.
    pub lease_slack: Duration,
    /// Also take two of `locks` at once now and then, in one atomic multi-lock.
    pub multi_lock: bool,
}

/// What a client leaves open at the end: sessions and held locks, kept until the final
/// state is read.
#[derive(Default)]
pub struct Leftovers {
    /// Open sessions.
    pub sessions: Vec<Arc<Session>>,
    /// Held locks.
    pub guards: Vec<LockGuard>,
}

/// A client of the cluster with the harness's timeouts.
///
/// # Errors
/// No node answered within the retry deadline.
pub async fn connect(endpoints: &[String]) -> fencelock_client::Result<Client> {
    Client::builder(endpoints.to_vec())
        .connect_timeout(Duration::from_millis(500))
        .call_timeout(Duration::from_secs(2))
        .retry_deadline(Duration::from_secs(8))
        .connect()
        .await
}

/// Records one operation.
struct Recording<'a> {
    recorder: &'a Recorder,
    process: &'a str,
    op_id: u64,
    op: Op,
    lock: Option<String>,
    session: Option<u64>,
}

impl<'a> Recording<'a> {
    fn start(
        recorder: &'a Recorder,
        process: &'a str,
        op: Op,
        f: impl FnOnce(Event) -> Event,
    ) -> Self {
        let op_id = recorder.next_op_id();
        let event = f(Event::new(Kind::Invoke, process, op_id, op));
        let lock = event.lock.clone();
        let session = event.session;
        recorder.record(event);
        Recording {
            recorder,
            process,
            op_id,
            op,
            lock,
            session,
        }
    }

    fn finish(self, kind: Kind, f: impl FnOnce(Event) -> Event) {
        let mut event = Event::new(kind, self.process, self.op_id, self.op);
        event.lock = self.lock;
        event.session = self.session;
        self.recorder.record(f(event));
    }
}

/// How a client error completes an operation: the kind and the outcome word.
fn classify(error: &Error, mutation: bool) -> (Kind, &'static str) {
    match error {
        Error::SessionNotFound(_) => (Kind::Fail, "session_not_found"),
        Error::NotHeld(_) => (Kind::Fail, "not_held"),
        Error::StaleToken(_) => (Kind::Fail, "stale_token"),
        // The client may have noticed the loss during a wait that was already sent.
        Error::SessionLost(_) if mutation => (Kind::Info, "session_lost"),
        Error::SessionLost(_) => (Kind::Fail, "session_lost"),
        e if e.is_transient() && mutation => (Kind::Info, "unavailable"),
        e if e.is_transient() => (Kind::Fail, "unavailable"),
        _ => (Kind::Fail, "error"),
    }
}

/// Open a session, recorded, and watch it for loss.
pub(crate) async fn open_session(
    client: &Client,
    ttl: Duration,
    recorder: &Recorder,
    process: &str,
) -> Option<Arc<Session>> {
    let rec = Recording::start(recorder, process, Op::OpenSession, |e| e);
    match client.session(ttl).await {
        Ok(session) => {
            let id = session.id().0;
            rec.finish(Kind::Ok, |e| e.session(id));
            let session = Arc::new(session);
            watch_loss(&session, recorder.clone(), process.to_string());
            Some(session)
        }
        Err(error) => {
            let (kind, outcome) = classify(&error, true);
            rec.finish(kind, |e| e.outcome(outcome).error(&error));
            None
        }
    }
}

/// Sessions the harness is closing: their loss is not news.
static CLOSING: std::sync::Mutex<std::collections::BTreeSet<u64>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn closing(session: u64) -> bool {
    CLOSING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&session)
}

/// Record when `session` is lost, and whether the client's lease had run out by then.
/// Holds the session only weakly, so that closing it is not delayed.
fn watch_loss(session: &Arc<Session>, recorder: Recorder, process: String) {
    let lost = session.lost();
    let id = session.id().0;
    let weak = Arc::downgrade(session);
    tokio::spawn(async move {
        let reason = lost.await;
        if reason == LostReason::Closed || closing(id) {
            return;
        }
        let Some(session) = weak.upgrade() else {
            return;
        };
        let before_deadline = Instant::now() < session.lease_deadline();
        let outcome = match reason {
            LostReason::LeaseExpired => "lease_expired",
            LostReason::SessionNotFound => "session_not_found",
            LostReason::Closed => "closed",
            _ => "lost",
        };
        let op_id = recorder.next_op_id();
        let mut event = Event::new(Kind::Ok, &process, op_id, Op::SessionLost)
            .session(session.id().0)
            .outcome(outcome);
        event.value = Some(if before_deadline {
            BEFORE_DEADLINE.to_string()
        } else {
            "after the client's lease deadline".to_string()
        });
        recorder.record(event);
    });
}

/// Until when `session`'s lease is valid as its client library counts it, in history
/// time, or `None` when it has run out: what a careful holder checks before each write.
/// A control run's `slack` makes the client trust the lease that much longer, and
/// ignore the library's own verdict.
pub(crate) fn lease_until_ns(
    session: &Session,
    recorder: &Recorder,
    slack: Duration,
) -> Option<u64> {
    let now = Instant::now();
    let now_ns = recorder.now_ns();
    let deadline = session.lease_deadline() + slack;
    if deadline <= now || (slack.is_zero() && session.is_lost()) {
        return None;
    }
    let left = u64::try_from(deadline.duration_since(now).as_nanos()).unwrap_or(u64::MAX);
    Some(now_ns.saturating_add(left))
}

/// Acquire `lock`, recorded. `Some(guard)` when granted.
pub(crate) async fn acquire(
    session: &Session,
    lock: &str,
    wait: Wait,
    recorder: &Recorder,
    process: &str,
) -> Option<LockGuard> {
    let wait_text = match wait {
        Wait::NoWait => "none".to_string(),
        Wait::Timeout(t) => format!("timeout:{}", t.as_millis()),
        Wait::Forever => "forever".to_string(),
    };
    let rec = Recording::start(recorder, process, Op::Acquire, |mut e| {
        e.wait = Some(wait_text);
        e.lock(lock).session(session.id().0)
    });
    match session.acquire(lock, options_for(lock, wait)).await {
        Ok(Acquisition::Granted(guard)) => {
            let token = guard.token().0;
            rec.finish(Kind::Ok, |e| e.token(token).outcome("granted"));
            Some(guard)
        }
        Ok(Acquisition::WouldBlock) => {
            rec.finish(Kind::Ok, |e| e.outcome("would_block"));
            None
        }
        Ok(Acquisition::TimedOut) => {
            rec.finish(Kind::Ok, |e| e.outcome("timed_out"));
            None
        }
        Err(error) => {
            let (kind, outcome) = classify(&error, true);
            rec.finish(kind, |e| e.outcome(outcome).error(&error));
            None
        }
    }
}

/// Acquire every lock of `locks` in one atomic multi-lock, waiting up to `wait`,
/// recorded as one acquire per lock, all invoked before the request and completed with
/// its answer, marked with one `multi` group. `Some(guards)`, in the order of `locks`,
/// when granted.
pub(crate) async fn acquire_all(
    session: &Session,
    locks: &[&str],
    wait: Duration,
    recorder: &Recorder,
    process: &str,
) -> Option<Vec<LockGuard>> {
    let group = recorder.next_op_id();
    let wait_text = format!("timeout:{}", wait.as_millis());
    let recs: Vec<Recording<'_>> = locks
        .iter()
        .map(|lock| {
            Recording::start(recorder, process, Op::Acquire, |mut e| {
                e.wait = Some(wait_text.clone());
                e.multi = Some(group);
                e.lock(lock).session(session.id().0)
            })
        })
        .collect();
    let options = options_for(
        locks.first().copied().unwrap_or_default(),
        Wait::Timeout(wait),
    );
    let in_group = |mut e: Event| {
        e.multi = Some(group);
        e
    };
    match session.acquire_all(locks, options).await {
        Ok(MultiAcquisition::Granted(guards)) => {
            for (rec, guard) in recs.into_iter().zip(&guards) {
                let token = guard.token().0;
                rec.finish(Kind::Ok, |e| in_group(e).token(token).outcome("granted"));
            }
            Some(guards)
        }
        Ok(MultiAcquisition::WouldBlock | MultiAcquisition::TimedOut) => {
            for rec in recs {
                rec.finish(Kind::Ok, |e| in_group(e).outcome("timed_out"));
            }
            None
        }
        Err(error) => {
            let (kind, outcome) = classify(&error, true);
            for rec in recs {
                rec.finish(kind, |e| in_group(e).outcome(outcome).error(&error));
            }
            None
        }
    }
}

/// Release `guard`, recorded.
pub(crate) async fn release(guard: LockGuard, recorder: &Recorder, process: &str) {
    let token = guard.token().0;
    let rec = Recording::start(recorder, process, Op::Release, |e| {
        e.lock(guard.name())
            .session(guard.session_id().0)
            .token(token)
    });
    match guard.release().await {
        Ok(()) => rec.finish(Kind::Ok, |e| e.token(token)),
        Err(error) => {
            let (kind, outcome) = classify(&error, true);
            rec.finish(kind, |e| e.token(token).outcome(outcome).error(&error));
        }
    }
}

/// Read `key` and append `body` with `token`, recorded.
async fn read_and_append(
    kv: &FencedKvClient,
    write: Write<'_>,
    recorder: &Recorder,
    process: &str,
) {
    let lock = write.lock;
    let token = write.token;
    let key = lock.to_string();
    let rec = Recording::start(recorder, process, Op::KvGet, |mut e| {
        e.key = Some(key.clone());
        e.lock(lock).token(token)
    });
    match kv.get(&key).await {
        // The value read, by length and hash: values grow with every append.
        Ok(value) => rec.finish(Kind::Ok, |mut e| {
            e.value = value.map(|v| {
                format!(
                    "len={} hash={} version={} highest_token={}",
                    v.value.len(),
                    fencelock_fenced_kv::body_hash(&v.value),
                    v.version,
                    v.highest_token
                )
            });
            e
        }),
        Err(error) => rec.finish(Kind::Fail, |e| e.error(&error)),
    }
    append(kv, write, recorder, process).await;
}

/// One fenced write: `body` appended to the key of `lock` with `token`.
pub(crate) struct Write<'a> {
    pub(crate) lock: &'a str,
    pub(crate) token: u64,
    pub(crate) body: String,
    /// Until when the writer counted its lease valid, when it checked (history time).
    pub(crate) lease_until_ns: Option<u64>,
}

/// Make a fenced write, recorded. Returns whether admitted.
pub(crate) async fn append(
    kv: &FencedKvClient,
    write: Write<'_>,
    recorder: &Recorder,
    process: &str,
) -> Option<bool> {
    let Write {
        lock,
        token,
        body,
        lease_until_ns,
    } = write;
    let key = lock.to_string();
    let rec = Recording::start(recorder, process, Op::KvAppend, |mut e| {
        e.key = Some(key.clone());
        e.body = Some(body.clone());
        e.lease_until_ns = lease_until_ns;
        e.lock(lock).token(token)
    });
    match kv.append(&key, lock, token, body.clone()).await {
        Ok(outcome) => {
            let admitted = outcome.is_admitted();
            let seq = outcome.seq();
            rec.finish(Kind::Ok, |mut e| {
                e.key = Some(key);
                e.seq = Some(seq);
                e.body = Some(body);
                if let WriteOutcome::Refused(refused) = &outcome {
                    e.holder_token = refused.highest_seen;
                }
                e.token(token)
                    .outcome(if admitted { "admitted" } else { "refused" })
            });
            Some(admitted)
        }
        Err(error @ (ClientError::Transport(_) | ClientError::Timeout(_))) => {
            rec.finish(Kind::Info, |e| e.token(token).error(&error));
            None
        }
        Err(error) => {
            rec.finish(Kind::Fail, |e| e.token(token).error(&error));
            None
        }
    }
}

/// Describe `lock`, recorded.
async fn describe(client: &Client, lock: &str, recorder: &Recorder, process: &str) {
    let rec = Recording::start(recorder, process, Op::Describe, |e| e.lock(lock));
    match client.describe(lock).await {
        Ok(description) => {
            let holder = description
                .lock
                .as_ref()
                .and_then(|l| l.holders.first().cloned());
            rec.finish(Kind::Ok, |mut e| {
                e.holder_session = holder.as_ref().map(|h| h.session_id.0);
                e.holder_token = holder.as_ref().map(|h| h.token.0);
                e.revision = Some(description.revision);
                e
            });
        }
        Err(error) => {
            let (kind, outcome) = classify(&error, false);
            rec.finish(kind, |e| e.outcome(outcome).error(&error));
        }
    }
}

/// Verify `token` of `lock`, recorded.
async fn verify(client: &Client, lock: &str, token: u64, recorder: &Recorder, process: &str) {
    let rec = Recording::start(recorder, process, Op::Verify, |e| e.lock(lock).token(token));
    match client
        .verify(lock, fencelock_client::FencingToken(token))
        .await
    {
        Ok(answer) => rec.finish(Kind::Ok, |mut e| {
            e.holder_token = answer.current_token.map(|t| t.0);
            e.token(token)
                .outcome(if answer.current { "current" } else { "stale" })
        }),
        Err(error) => {
            let (kind, outcome) = classify(&error, false);
            rec.finish(kind, |e| e.outcome(outcome).error(&error));
        }
    }
}

/// Close `session`, recorded.
pub async fn close_session(session: Arc<Session>, recorder: &Recorder, process: &str) {
    let id = session.id().0;
    CLOSING.lock().unwrap_or_else(|e| e.into_inner()).insert(id);
    let rec = Recording::start(recorder, process, Op::CloseSession, |e| e.session(id));
    let result = match Arc::try_unwrap(session) {
        Ok(session) => session.close().await,
        Err(shared) => shared
            .client()
            .close_session(shared.id())
            .await
            .or_else(|e| {
                if matches!(e, Error::SessionNotFound(_)) {
                    Ok(())
                } else {
                    Err(e)
                }
            }),
    };
    match result {
        Ok(()) => rec.finish(Kind::Ok, |e| e),
        Err(error) => {
            let (kind, outcome) = classify(&error, true);
            rec.finish(kind, |e| e.outcome(outcome).error(&error));
        }
    }
}

/// Run one client: a bounded loop of operations. Returns what it leaves open.
pub async fn run_worker(config: WorkerConfig, recorder: Recorder) -> Leftovers {
    let mut leftovers = Leftovers::default();
    let started = Instant::now();
    let deadline = started + config.duration;
    let process = config.name.as_str();
    let mut rng = fastrand::Rng::with_seed(config.seed);
    let kv = FencedKvClient::new(config.kv).with_timeout(Duration::from_secs(3));
    let client = loop {
        match connect(&config.endpoints).await {
            Ok(client) => break client,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => return leftovers,
        }
    };
    let mut session: Option<Arc<Session>> = None;
    let mut held: Option<LockGuard> = None;
    let mut last_token: std::collections::HashMap<String, u64> = Default::default();
    let mut ops = 0u64;
    let mut counter = 0u64;
    while ops < config.max_ops && Instant::now() < deadline {
        ops += 1;
        let current = match &session {
            Some(s) if !s.is_lost() => s.clone(),
            _ => {
                if let Some(old) = session.take() {
                    leftovers.sessions.push(old);
                }
                if let Some(guard) = held.take() {
                    // Its session is lost: the grant is gone or going; keep the guard
                    // (dropping it would release in the background, unrecorded).
                    leftovers.guards.push(guard);
                }
                match open_session(&client, config.ttl, &recorder, process).await {
                    Some(s) => {
                        session = Some(s.clone());
                        if let Some(lock) = &config.hold {
                            held = acquire(
                                &s,
                                lock,
                                Wait::Timeout(Duration::from_secs(2)),
                                &recorder,
                                process,
                            )
                            .await;
                        }
                        s
                    }
                    None => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
        };
        let lock = config.locks[rng.usize(..config.locks.len())].clone();
        let choice = rng.u32(..100);
        if config.multi_lock && config.locks.len() >= 2 && choice < 15 {
            // Two distinct locks at once, in either order.
            let other = (rng.usize(1..config.locks.len())
                + config.locks.iter().position(|l| *l == lock).unwrap_or(0))
                % config.locks.len();
            let pair = [lock.as_str(), config.locks[other].as_str()];
            let wait = Duration::from_millis(rng.u64(300..1500));
            if let Some(guards) = acquire_all(&current, &pair, wait, &recorder, process).await {
                for guard in guards {
                    let token = guard.token().0;
                    counter += 1;
                    let name = guard.name().to_string();
                    last_token.insert(name.clone(), token);
                    let write = Write {
                        lock: &name,
                        token,
                        body: format!("{process}:{counter}:{token};"),
                        lease_until_ns: lease_until_ns(&current, &recorder, config.lease_slack),
                    };
                    append(&kv, write, &recorder, process).await;
                    release(guard, &recorder, process).await;
                }
            }
        } else if choice < 55 {
            let wait = Wait::Timeout(Duration::from_millis(rng.u64(300..1500)));
            if let Some(guard) = acquire(&current, &lock, wait, &recorder, process).await {
                let token = guard.token().0;
                last_token.insert(lock.clone(), token);
                counter += 1;
                let write = Write {
                    lock: &lock,
                    token,
                    body: format!("{process}:{counter}:{token};"),
                    lease_until_ns: lease_until_ns(&current, &recorder, config.lease_slack),
                };
                read_and_append(&kv, write, &recorder, process).await;
                // One grant in a hundred is kept for a while (up to 1.5 TTLs: a long
                // job), with a write now and then, each only if the lease still holds,
                // so faults fall inside leases; rarely, since a held lock stalls its
                // rivals (at one in twenty, a 20-minute run did a sixth of the operations).
                // A control run's holders all do.
                let hold_for = if !config.lease_slack.is_zero() || rng.u32(..100) < 1 {
                    config.ttl.mul_f64(rng.f64() * 1.5)
                } else {
                    Duration::ZERO
                };
                let hold_until = (Instant::now() + hold_for).min(deadline);
                while Instant::now() < hold_until {
                    tokio::time::sleep(Duration::from_millis(rng.u64(100..400))).await;
                    let Some(lease) = lease_until_ns(&current, &recorder, config.lease_slack)
                    else {
                        break;
                    };
                    counter += 1;
                    let write = Write {
                        lock: &lock,
                        token,
                        body: format!("{process}:{counter}:{token};"),
                        lease_until_ns: Some(lease),
                    };
                    append(&kv, write, &recorder, process).await;
                }
                release(guard, &recorder, process).await;
            }
        } else if choice < 65 {
            if let Some(guard) = acquire(&current, &lock, Wait::NoWait, &recorder, process).await {
                last_token.insert(lock.clone(), guard.token().0);
                release(guard, &recorder, process).await;
            }
        } else if choice < 82 {
            let token = last_token.get(&lock).copied().unwrap_or(1);
            verify(&client, &lock, token, &recorder, process).await;
        } else {
            describe(&client, &lock, &recorder, process).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.u64(0..30))).await;
    }
    if config.close_at_end {
        if let Some(guard) = held.take() {
            release(guard, &recorder, process).await;
        }
        if let Some(s) = session.take() {
            close_session(s, &recorder, process).await;
        }
    }
    leftovers.sessions.extend(session);
    leftovers.guards.extend(held);
    leftovers
}

/// What the holder of a [`holder_scenario`] does once its keepalives stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolderFault {
    /// It sleeps past its TTL (a GC pause), then writes with its old token without
    /// checking: the pause fell between its check and its write. The fenced service must
    /// refuse that write.
    Paused,
    /// Its keepalives stop reaching the cluster (held back in its client library, as a
    /// one-way cut of its link would) while it keeps running, writing now and then, each
    /// time only if its lease still holds. The `lease` checker must find every such
    /// write sent before the rival's grant was seen.
    CutOff,
}

/// A holder takes `lock` and writes, then its keepalives stop for longer than its TTL
/// (see [`HolderFault`]); meanwhile a rival waits for the lock, gets it once the holder's
/// session expired, and writes with its newer token. `slack` is the control runs' lease
/// slack (see [`WorkerConfig::lease_slack`]). Returns the fault's window (start, end) in
/// history time, when the holder got the lock.
#[allow(clippy::too_many_arguments)]
pub async fn holder_scenario(
    fault: HolderFault,
    name: &str,
    endpoints: &[String],
    kv: SocketAddr,
    lock: &str,
    ttl: Duration,
    slack: Duration,
    recorder: &Recorder,
) -> Option<(u64, u64)> {
    let holder_name = format!("{name}-holder");
    let rival_name = format!("{name}-rival");
    let kv = FencedKvClient::new(kv).with_timeout(Duration::from_secs(3));
    let client = connect(endpoints).await.ok()?;
    let holder = open_session(&client, ttl, recorder, &holder_name).await?;
    let Some(guard) = acquire(
        &holder,
        lock,
        Wait::Timeout(Duration::from_secs(3)),
        recorder,
        &holder_name,
    )
    .await
    else {
        close_session(holder, recorder, &holder_name).await;
        return None;
    };
    let token = guard.token().0;
    let mut writes = 1;
    let first = Write {
        lock,
        token,
        body: format!("{holder_name}:{writes}:{token};"),
        lease_until_ns: lease_until_ns(&holder, recorder, slack),
    };
    append(&kv, first, recorder, &holder_name).await;
    let stall = ttl + Duration::from_millis(1500);
    let started = recorder.now_ns();
    holder.pause_keepalive_for_test(stall * 2);
    let rival = rival_takes_over(
        &rival_name,
        endpoints,
        &kv,
        lock,
        ttl,
        slack,
        stall * 2,
        recorder,
    );
    let holder_side = async {
        match fault {
            HolderFault::Paused => {
                tokio::time::sleep(stall).await;
                writes += 1;
                let stale = Write {
                    lock,
                    token,
                    body: format!("{holder_name}:{writes}:{token};"),
                    lease_until_ns: None,
                };
                append(&kv, stale, recorder, &holder_name).await;
            }
            HolderFault::CutOff => {
                let until = Instant::now() + stall;
                while Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    let Some(lease) = lease_until_ns(&holder, recorder, slack) else {
                        break;
                    };
                    writes += 1;
                    let write = Write {
                        lock,
                        token,
                        body: format!("{holder_name}:{writes}:{token};"),
                        lease_until_ns: Some(lease),
                    };
                    append(&kv, write, recorder, &holder_name).await;
                }
            }
        }
    };
    let ((), ()) = tokio::join!(rival, holder_side);
    release(guard, recorder, &holder_name).await;
    let ended = recorder.now_ns();
    drop(holder);
    Some((started, ended))
}

/// The rival of a holder scenario: opens a session, waits up to `wait` for `lock`, writes
/// once with its token when granted, releases and closes. Every step recorded as
/// `name`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn rival_takes_over(
    name: &str,
    endpoints: &[String],
    kv: &FencedKvClient,
    lock: &str,
    ttl: Duration,
    slack: Duration,
    wait: Duration,
    recorder: &Recorder,
) {
    let Ok(client) = connect(endpoints).await else {
        return;
    };
    let Some(session) = open_session(&client, ttl, recorder, name).await else {
        return;
    };
    if let Some(guard) = acquire(&session, lock, Wait::Timeout(wait), recorder, name).await {
        let token = guard.token().0;
        let write = Write {
            lock,
            token,
            body: format!("{name}:1:{token};"),
            lease_until_ns: lease_until_ns(&session, recorder, slack),
        };
        append(kv, write, recorder, name).await;
        release(guard, recorder, name).await;
    }
    close_session(session, recorder, name).await;
}

/// Watch every lock of the run and record each event, until `stop` resolves.
pub async fn observe(client: Client, recorder: Recorder, stop: tokio::sync::watch::Receiver<bool>) {
    let mut stream = client.watch_prefix(LOCK_PREFIX);
    let mut stop = stop;
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            _ = stop.changed() => return,
        };
        let Some(Ok(event)) = item else {
            if item.is_none() {
                return;
            }
            continue;
        };
        let op_id = recorder.next_op_id();
        let (what, session) = match &event {
            WatchEvent::Acquired { session_id, .. } => ("acquired", Some(session_id.0)),
            WatchEvent::Released { session_id, .. } => ("released", Some(session_id.0)),
            WatchEvent::Expired { session_id, .. } => ("expired", Some(session_id.0)),
            WatchEvent::Forced { session_id, .. } => ("forced", Some(session_id.0)),
            WatchEvent::SessionClosed { session_id, .. } => ("closed", Some(session_id.0)),
            WatchEvent::Revoked { session_id, .. } => ("revoked", Some(session_id.0)),
            WatchEvent::LockDelayStarted { session_id, .. } => {
                ("lock_delay_started", session_id.map(|s| s.0))
            }
            WatchEvent::LockDelayEnded { .. } => ("lock_delay_ended", None),
            WatchEvent::ValueChanged { session_id, .. } => ("value_changed", Some(session_id.0)),
            WatchEvent::Resync { .. } => ("resync", None),
            other => (other.kind(), other.session_id().map(|s| s.0)),
        };
        let mut recorded = Event::new(Kind::Ok, "observer", op_id, Op::Watch).outcome(what);
        recorded.lock = event.name().map(str::to_string);
        recorded.session = session;
        recorded.token = event.token().map(|t| t.0);
        recorded.revision = Some(event.revision());
        if let WatchEvent::LockDelayStarted { delay, .. } = &event {
            recorded.value = Some(format!("delay_ms={}", delay.as_millis()));
        }
        recorder.record(recorded);
    }
}
