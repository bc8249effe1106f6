//! The shared client scenarios (`conformance/scenarios.json`, vocabulary in
//! `conformance/README.md`) run through the Rust client, each against a fresh in-process
//! 3-node cluster. The Go client runs the same table.
//!
//! The cluster is in-process, so `pause` cannot stop a process: as the vocabulary allows,
//! it stops the session's renewals for that long and does nothing else with it meanwhile.
//! `kill_leader` stops the leader node.

mod common;
use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

/// How long an `expect_*` step may take to come true.
const PATIENCE: Duration = Duration::from_secs(60);

fn scenarios() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../conformance/scenarios.json"
    );
    let text = std::fs::read_to_string(path).expect("read conformance/scenarios.json");
    let table: Value = serde_json::from_str(&text).expect("scenarios.json is JSON");
    assert_eq!(table["version"], 1, "a version this runner knows");
    table["scenarios"].as_array().expect("scenarios").clone()
}

fn field<'a>(step: &'a Value, key: &str) -> &'a str {
    step[key]
        .as_str()
        .unwrap_or_else(|| panic!("step {step} lacks string field {key:?}"))
}

fn millis(step: &Value, key: &str) -> Duration {
    Duration::from_millis(
        step[key]
            .as_u64()
            .unwrap_or_else(|| panic!("step {step} lacks number field {key:?}")),
    )
}

/// A grant: its guard while held, its token for ever, when its lost signal fired.
struct Grant {
    lock: String,
    token: FencingToken,
    guard: Option<LockGuard>,
    lost_at: Arc<Mutex<Option<Instant>>>,
}

type Events = Arc<Mutex<Vec<(WatchEvent, Instant)>>>;

/// One scenario's world: the cluster, a client, and everything the steps named.
struct Run {
    prefix: String,
    cluster: TestCluster,
    client: Client,
    killed: Vec<usize>,
    sessions: HashMap<String, Arc<Session>>,
    grants: HashMap<String, Grant>,
    pending: HashMap<String, JoinHandle<Result<Acquisition>>>,
    watches: HashMap<String, (Events, JoinHandle<()>)>,
    fences: HashMap<String, FencingToken>,
}

impl Run {
    fn lock(&self, step: &Value) -> String {
        format!("{}/{}", self.prefix, field(step, "lock"))
    }

    fn session(&self, name: &str) -> Arc<Session> {
        self.sessions
            .get(name)
            .unwrap_or_else(|| panic!("no session {name:?}"))
            .clone()
    }

    fn grant(&self, name: &str) -> &Grant {
        self.grants
            .get(name)
            .unwrap_or_else(|| panic!("no grant {name:?}"))
    }

    fn options(step: &Value) -> AcquireOptions {
        let mode = match step["mode"].as_str().unwrap_or("exclusive") {
            "exclusive" => LockMode::Exclusive,
            "shared" => LockMode::Shared,
            other => panic!("unknown mode {other:?}"),
        };
        let wait = match field(step, "wait") {
            "no_wait" => Wait::NoWait,
            "forever" => Wait::Forever,
            "timeout" => Wait::Timeout(millis(step, "timeout_ms")),
            other => panic!("unknown wait {other:?}"),
        };
        AcquireOptions::exclusive().mode(mode).wait(wait)
    }

    /// Checks an acquire's outcome against `expect` and names a grant `as`.
    fn outcome(&mut self, step: &Value, lock: String, result: Result<Acquisition>) {
        let outcome = result.unwrap_or_else(|e| panic!("{step}: {e}"));
        match (field(step, "expect"), outcome) {
            ("granted", Acquisition::Granted(guard)) => {
                let lost_at = Arc::new(Mutex::new(None));
                let lost = guard.lost();
                let record = lost_at.clone();
                tokio::spawn(async move {
                    lost.await;
                    *record.lock().unwrap() = Some(Instant::now());
                });
                let grant = Grant {
                    lock,
                    token: guard.token(),
                    guard: Some(guard),
                    lost_at,
                };
                self.grants.insert(field(step, "as").to_string(), grant);
            }
            ("would_block", Acquisition::WouldBlock) | ("timed_out", Acquisition::TimedOut) => {}
            (expected, got) => panic!("{step}: expected {expected}, got {got:?}"),
        }
    }

    async fn step(&mut self, step: &Value) {
        match field(step, "op") {
            "session" => {
                let session = self
                    .client
                    .session(millis(step, "ttl_ms"))
                    .await
                    .expect("open session");
                self.sessions
                    .insert(field(step, "as").to_string(), Arc::new(session));
            }
            "close" => {
                let session = self.sessions.remove(field(step, "session")).unwrap();
                let id = session.id();
                match Arc::try_unwrap(session) {
                    Ok(session) => session.close().await.expect("close"),
                    Err(_) => self.client.close_session(id).await.expect("close"),
                }
            }
            "acquire" => {
                let session = self.session(field(step, "session"));
                let lock = self.lock(step);
                let result = session.acquire(&lock, Self::options(step)).await;
                self.outcome(step, lock, result);
            }
            "start_acquire" => {
                let session = self.session(field(step, "session"));
                let lock = self.lock(step);
                let options = Self::options(step);
                let task = tokio::spawn(async move { session.acquire(&lock, options).await });
                self.pending.insert(field(step, "as").to_string(), task);
            }
            "await" => {
                let task = self.pending.remove(field(step, "acquire")).unwrap();
                let result = tokio::time::timeout(PATIENCE, task)
                    .await
                    .unwrap_or_else(|_| panic!("{step}: no outcome within {PATIENCE:?}"))
                    .expect("acquire task");
                // The lock name is the started acquire's; `await` does not repeat it.
                let lock = match &result {
                    Ok(Acquisition::Granted(guard)) => guard.name().to_string(),
                    _ => String::new(),
                };
                self.outcome(step, lock, result);
            }
            "cancel" => {
                let task = self.pending.remove(field(step, "acquire")).unwrap();
                task.abort();
                let joined = task.await;
                assert!(
                    joined.as_ref().is_err_and(|e| e.is_cancelled()),
                    "{step}: the acquire ended before the cancel: {joined:?}"
                );
            }
            "release" => {
                let grant = self.grants.get_mut(field(step, "grant")).unwrap();
                let guard = grant.guard.take().expect("the grant is held");
                guard.release().await.expect("release");
            }
            "stop_renewals" => self.session(field(step, "session")).stop_keepalive(),
            "pause" => {
                let ms = millis(step, "ms");
                self.session(field(step, "session"))
                    .pause_keepalive_for_test(ms);
                tokio::time::sleep(ms).await;
            }
            "kill_leader" => {
                let leader = self.cluster.leader().await;
                self.cluster.stop(leader).await;
                self.killed.push(leader);
            }
            "restart_killed" => {
                for index in std::mem::take(&mut self.killed) {
                    self.cluster.restart(index).await;
                }
                self.cluster.leader().await;
            }
            "watch" => {
                let mut stream = self.client.watch(&self.lock(step));
                let events: Events = Arc::default();
                let record = events.clone();
                let task = tokio::spawn(async move {
                    while let Some(event) = futures::StreamExt::next(&mut stream).await {
                        let event = event.expect("watch event");
                        record.lock().unwrap().push((event, Instant::now()));
                    }
                });
                // Events count from an established stream: its first message is a resync.
                let seen = events.clone();
                eventually(PATIENCE, "the watch is established", || {
                    let seen = seen.clone();
                    async move { !seen.lock().unwrap().is_empty() }
                })
                .await;
                self.watches
                    .insert(field(step, "as").to_string(), (events, task));
            }
            "expect_lock" => self.expect_lock(step).await,
            "expect_tokens_increase" => {
                let tokens: Vec<FencingToken> = names(step, "grants")
                    .iter()
                    .map(|g| self.grant(g).token)
                    .collect();
                assert!(
                    tokens.windows(2).all(|w| w[0] < w[1]),
                    "{step}: tokens {tokens:?}"
                );
            }
            "fence" => {
                let grant = self.grant(field(step, "grant"));
                let (lock, token) = (grant.lock.clone(), grant.token);
                let highest = self.fences.entry(lock).or_insert(FencingToken(0));
                let admitted = token >= *highest;
                if admitted {
                    *highest = token;
                }
                let expected = field(step, "expect") == "admitted";
                assert_eq!(admitted, expected, "{step}: token {token:?}");
            }
            "expect_lost" => {
                let grant = self.grant(field(step, "grant"));
                let guard = grant.guard.as_ref().expect("the grant's guard");
                if step["immediately"].as_bool() == Some(true) {
                    assert!(guard.is_lost(), "{step}: the holder still thinks it holds");
                } else {
                    tokio::time::timeout(PATIENCE, guard.lost())
                        .await
                        .unwrap_or_else(|_| panic!("{step}: not lost"));
                }
            }
            "expect_lost_before" => {
                let grant = self.grant(field(step, "grant"));
                let (token, lost_at) = (grant.token, grant.lost_at.clone());
                let events = self.watches[field(step, "watch")].0.clone();
                let kind = field(step, "event").to_string();
                let found = || {
                    events
                        .lock()
                        .unwrap()
                        .iter()
                        .find(|(e, _)| e.kind() == kind && e.token() == Some(token))
                        .map(|(_, at)| *at)
                };
                eventually(PATIENCE, "lost and the event seen", || {
                    let done = lost_at.lock().unwrap().is_some() && found().is_some();
                    async move { done }
                })
                .await;
                let lost = lost_at.lock().unwrap().unwrap();
                assert!(
                    lost <= found().unwrap(),
                    "{step}: lost after the {kind} event"
                );
            }
            "expect_events" => {
                let events = self.watches[field(step, "watch")].0.clone();
                let wanted: Vec<(String, FencingToken)> = step["events"]
                    .as_array()
                    .expect("events")
                    .iter()
                    .map(|e| {
                        (
                            field(e, "kind").to_string(),
                            self.grant(field(e, "grant")).token,
                        )
                    })
                    .collect();
                let matched = || {
                    let seen = events.lock().unwrap();
                    let mut want = wanted.iter().peekable();
                    for (event, _) in seen.iter() {
                        if let Some((kind, token)) = want.peek()
                            && event.kind() == kind
                            && event.token() == Some(*token)
                        {
                            want.next();
                        }
                    }
                    want.peek().is_none()
                };
                eventually(PATIENCE, &format!("{step}"), || {
                    let done = matched();
                    async move { done }
                })
                .await;
            }
            other => panic!("unknown op {other:?}"),
        }
    }

    async fn expect_lock(&self, step: &Value) {
        let lock = self.lock(step);
        let mut holders: Vec<FencingToken> = names(step, "holders")
            .iter()
            .map(|g| self.grant(g).token)
            .collect();
        holders.sort();
        let waiters: Vec<SessionId> = names(step, "waiters")
            .iter()
            .map(|s| self.session(s).id())
            .collect();
        let client = &self.client;
        eventually(PATIENCE, &format!("{step}"), || {
            let (lock, holders, waiters) = (lock.clone(), holders.clone(), waiters.clone());
            async move {
                let info = lock_info(client, &lock).await;
                let mut held: Vec<FencingToken> = info
                    .iter()
                    .flat_map(|l| l.holders.iter().map(|h| h.token))
                    .collect();
                held.sort();
                let queued: Vec<SessionId> = info
                    .iter()
                    .flat_map(|l| l.waiters.iter().map(|w| w.session_id))
                    .collect();
                held == holders && queued == waiters
            }
        })
        .await;
    }
}

fn names(step: &Value, key: &str) -> Vec<String> {
    step[key]
        .as_array()
        .unwrap_or_else(|| panic!("step {step} lacks list {key:?}"))
        .iter()
        .map(|v| v.as_str().expect("a name").to_string())
        .collect()
}

async fn run(scenario: &Value) {
    let name = field(scenario, "name");
    let cluster = TestCluster::start(3).await;
    let client = connect(&cluster).await;
    let mut run = Run {
        prefix: format!("conformance/{name}"),
        cluster,
        client,
        killed: Vec::new(),
        sessions: HashMap::new(),
        grants: HashMap::new(),
        pending: HashMap::new(),
        watches: HashMap::new(),
        fences: HashMap::new(),
    };
    for (index, step) in scenario["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .enumerate()
    {
        eprintln!("{name} step {index}: {step}");
        run.step(step).await;
    }
    for (_, task) in run.watches.into_values() {
        task.abort();
    }
    drop(run.grants);
    drop(run.sessions);
    run.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_passes_every_conformance_scenario() {
    let scenarios = scenarios();
    assert!(scenarios.len() >= 7, "the table lost scenarios");
    for scenario in &scenarios {
        run(scenario).await;
    }
}
