//! Channels to the nodes, the leader hint, and the retry loop every call goes through.

use crate::config::Config;
use crate::error::{Error, Failure, Result, classify};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
#[cfg(feature = "test-support")]
use std::sync::atomic::AtomicU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tonic::Status;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Adds the configured `authorization` metadata to every call.
#[derive(Clone)]
pub(crate) struct Credentials(Option<tonic::metadata::AsciiMetadataValue>);

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A channel that authenticates every call.
pub(crate) type AuthChannel = InterceptedService<Channel, Credentials>;

/// An error and its sources, joined by ": ".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Redirect targets outside the configured endpoints that one round may try on top of
/// the endpoints, so a chain of redirects to ever new addresses cannot spin the loop.
const EXTRA_NODES_PER_ROUND: usize = 3;

/// What kind of call the retry loop runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct CallSpec {
    /// Only the leader can answer (every call but `Status` and `Watch`).
    pub leader_only: bool,
    /// Per-attempt timeout; `None` for waits that may last as long as they like.
    pub timeout: Option<Duration>,
    /// The call may legitimately run long (a queued acquire): the retry deadline counts
    /// from the start of the current run of failures, not from the start of the call.
    pub waits: bool,
    /// The call changes state: a lost answer makes its outcome unknown.
    pub mutation: bool,
}

impl CallSpec {
    /// A leader-only read.
    pub fn read(config: &Config) -> CallSpec {
        CallSpec {
            leader_only: true,
            timeout: Some(config.call_timeout),
            waits: false,
            mutation: false,
        }
    }

    /// A leader-only mutation.
    pub fn mutation(config: &Config) -> CallSpec {
        CallSpec {
            mutation: true,
            ..CallSpec::read(config)
        }
    }
}

/// Add `http://` (or `https://` with TLS) to a bare `host:port`; with TLS, an
/// `http://` address becomes `https://`.
pub(crate) fn normalize(addr: &str, tls: bool) -> String {
    match (addr.split_once("://"), tls) {
        (Some(("http", rest)), true) => format!("https://{rest}"),
        (Some(_), _) => addr.to_string(),
        (None, false) => format!("http://{addr}"),
        (None, true) => format!("https://{addr}"),
    }
}

/// The nodes a client talks to: one lazily connected HTTP/2 channel per node address,
/// shared by every call, session and stream of the client (so a 3-node cluster costs 3
/// connections), plus the best guess of which node leads.
pub(crate) struct Transport {
    pub config: Config,
    endpoints: Vec<String>,
    channels: Mutex<HashMap<String, AuthChannel>>,
    leader: watch::Sender<Option<String>>,
    next_endpoint: AtomicUsize,
    /// Test support: drop the answers of this many successful mutation attempts, as if
    /// the connection broke after the server acted.
    #[cfg(feature = "test-support")]
    lose_answers: AtomicU32,
}

impl Transport {
    pub fn new(config: Config) -> Result<Transport> {
        if config.endpoints.is_empty() {
            return Err(Error::Config("no endpoints".into()));
        }
        let tls = config.tls.is_some();
        let endpoints: Vec<String> = config.endpoints.iter().map(|e| normalize(e, tls)).collect();
        for endpoint in &endpoints {
            let parsed = Endpoint::from_shared(endpoint.clone())
                .map_err(|e| Error::Config(format!("bad endpoint {endpoint:?}: {e}")))?;
            if let Some(settings) = &config.tls {
                parsed
                    .tls_config(settings.to_tonic())
                    .map_err(|e| Error::Config(format!("TLS settings: {}", error_chain(&e))))?;
            }
        }
        Ok(Transport {
            config,
            endpoints,
            channels: Mutex::new(HashMap::new()),
            leader: watch::channel(None).0,
            next_endpoint: AtomicUsize::new(0),
            #[cfg(feature = "test-support")]
            lose_answers: AtomicU32::new(0),
        })
    }

    /// `addr` as a URI with this client's scheme (see [`normalize`]).
    pub fn normalize(&self, addr: &str) -> String {
        normalize(addr, self.config.tls.is_some())
    }

    /// The channel to `addr`, created (not yet connected) on first use.
    pub fn channel(&self, addr: &str) -> Result<AuthChannel> {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let mut endpoint = Endpoint::from_shared(addr.to_string())
            .map_err(|e| Error::Config(format!("bad address {addr:?}: {e}")))?;
        if let Some(tls) = &self.config.tls {
            endpoint = endpoint.tls_config(tls.to_tonic()).map_err(|e| {
                Error::Config(format!("TLS settings for {addr}: {}", error_chain(&e)))
            })?;
        }
        let endpoint = endpoint
            .connect_timeout(self.config.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let credentials = Credentials(
            self.config
                .authorization
                .as_ref()
                .and_then(|auth| auth.0.parse().ok()),
        );
        let channel = InterceptedService::new(endpoint.connect_lazy(), credentials);
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// Where to send the next attempt: the leader if known (for leader-only calls),
    /// otherwise the next endpoint in turn.
    pub fn pick(&self, leader_only: bool) -> String {
        if leader_only && let Some(leader) = self.leader.borrow().clone() {
            return leader;
        }
        self.current_endpoint()
    }

    fn current_endpoint(&self) -> String {
        let index = self.next_endpoint.load(Ordering::Relaxed) % self.endpoints.len();
        self.endpoints[index].clone()
    }

    /// `addr` answered as the leader.
    pub fn set_leader(&self, addr: &str) {
        let addr = self.normalize(addr);
        self.leader.send_if_modified(|leader| {
            if leader.as_deref() == Some(addr.as_str()) {
                false
            } else {
                *leader = Some(addr);
                true
            }
        });
    }

    /// `addr` failed: forget it as the leader and move on to the next endpoint.
    pub fn demote(&self, addr: &str) {
        self.leader.send_if_modified(|leader| {
            if leader.as_deref() == Some(addr) {
                *leader = None;
                true
            } else {
                false
            }
        });
        if self.current_endpoint() == addr || !self.endpoints.iter().any(|e| e == addr) {
            self.next_endpoint.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The leader hint, for tasks that follow leadership changes.
    pub fn leader_watch(&self) -> watch::Receiver<Option<String>> {
        self.leader.subscribe()
    }

    /// Test support: lose the answers of the next `count` successful mutation attempts.
    #[cfg(feature = "test-support")]
    pub fn lose_answers(&self, count: u32) {
        self.lose_answers.store(count, Ordering::SeqCst);
    }

    /// Test support: `result`, or a lost answer while [`Transport::lose_answers`] says so.
    #[cfg(feature = "test-support")]
    fn maybe_lose_answer<T>(
        &self,
        mutation: bool,
        result: std::result::Result<T, Status>,
    ) -> std::result::Result<T, Status> {
        let lose = mutation
            && result.is_ok()
            && self
                .lose_answers
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if lose {
            Err(Status::unknown("test: answer lost after the server acted"))
        } else {
            result
        }
    }

    /// A randomized exponential backoff step: a duration in `[b/2, b]`, then doubles `b`
    /// up to the configured maximum.
    pub fn backoff(&self, current: &mut Duration) -> Duration {
        let base = *current;
        *current = (base * 2).min(self.config.backoff_max);
        let half = base / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Run `attempt` against the cluster until it answers, following redirects and
    /// retrying transient failures, within the retry budget and deadline. Each attempt
    /// gets the node's channel and address; a mutation must send the same request id in
    /// every attempt.
    ///
    /// Attempts go in rounds. Within a round a node that failed on its own account
    /// (refused or broken connection, no leader known, see [`Failure::Retry`]) is left
    /// for the next node at once, and a "not leader" redirect is followed at once; the
    /// round ends, with a backoff pause, when the next node to try already failed in it
    /// (a whole pass failed, or two nodes name each other), or when the failure was the
    /// leader's (it answered "unavailable" or "queue full"). The retry budget counts
    /// rounds.
    pub async fn call<T, F, Fut>(&self, spec: CallSpec, mut attempt: F) -> Result<T>
    where
        F: FnMut(AuthChannel, String) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let mut streak_start = started;
        let mut rounds: u32 = 1;
        // The nodes that failed in this round.
        let mut failed: Vec<String> = Vec::new();
        let mut backoff = self.config.backoff_initial;
        let mut maybe_acted = false;
        loop {
            let addr = self.pick(spec.leader_only);
            let channel = self.channel(&addr)?;
            let attempt_started = Instant::now();
            let future = attempt(channel, addr.clone());
            let (result, timed_out) = match spec.timeout {
                Some(limit) => match tokio::time::timeout(limit, future).await {
                    Ok(result) => (result, false),
                    Err(_) => (Err(Status::deadline_exceeded("client call timeout")), true),
                },
                None => (future.await, false),
            };
            #[cfg(feature = "test-support")]
            let result = self.maybe_lose_answer(spec.mutation, result);
            let status = match result {
                Ok(response) => {
                    if spec.leader_only {
                        self.set_leader(&addr);
                    }
                    return Ok(response.into_inner());
                }
                Err(status) => status,
            };
            let (last_error, next_node) = match classify(&status) {
                Failure::Fatal(error) => return Err(error),
                Failure::Redirect(leader) => {
                    let leader = self.normalize(&leader);
                    tracing::debug!(from = %addr, to = %leader, "following not-leader redirect");
                    self.set_leader(&leader);
                    let error = Error::NotLeader {
                        leader_addr: Some(leader),
                        message: status.message().to_string(),
                    };
                    (error, true)
                }
                Failure::Retry {
                    error,
                    maybe_acted: acted,
                    next_node,
                } => {
                    tracing::debug!(node = %addr, %error, "retrying");
                    maybe_acted |= acted || timed_out;
                    self.demote(&addr);
                    (error, next_node)
                }
            };
            // A long wait that then failed starts a new run of failures.
            if spec.waits && attempt_started.elapsed() > self.config.call_timeout {
                streak_start = attempt_started.max(Instant::now() - self.config.call_timeout);
                rounds = 1;
                failed.clear();
            }
            if !failed.contains(&addr) {
                failed.push(addr);
            }
            let round_over = !next_node
                || failed.len() >= self.endpoints.len() + EXTRA_NODES_PER_ROUND
                || failed.contains(&self.pick(spec.leader_only));
            let elapsed = streak_start.elapsed();
            let deadline = self.config.retry_deadline;
            if elapsed >= deadline || (round_over && rounds >= self.config.retry_budget) {
                let outcome_unknown = maybe_acted && spec.mutation;
                return Err(match last_error {
                    _ if timed_out => Error::Timeout {
                        elapsed: started.elapsed(),
                        outcome_unknown,
                    },
                    Error::Unavailable { message, .. } => Error::Unavailable {
                        outcome_unknown,
                        message,
                    },
                    other => other,
                });
            }
            if round_over {
                rounds += 1;
                failed.clear();
                let pause = self.backoff(&mut backoff).min(deadline - elapsed);
                tokio::time::sleep(pause).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientBuilder;
    use fencelock_proto::v1::{ErrorDetail, ErrorReason};
    use prost::Message;
    use tonic::Code;

    /// A transport of `endpoints` whose pauses are 50–100 ms, and at most `rounds`.
    fn transport(endpoints: &[&str], rounds: u32) -> Transport {
        let config = ClientBuilder::new(endpoints.iter().copied())
            .backoff(Duration::from_millis(100), Duration::from_millis(100))
            .retry_budget(rounds)
            .config;
        Transport::new(config).unwrap()
    }

    fn refused() -> Status {
        Status::unavailable("tcp connect error: Connection refused (os error 111)")
    }

    fn with_reason(reason: ErrorReason, leader_addr: &str) -> Status {
        let detail = ErrorDetail {
            reason: reason as i32,
            leader_addr: leader_addr.into(),
            ..Default::default()
        };
        Status::with_details(Code::Unavailable, "m", detail.encode_to_vec().into())
    }

    /// Run one leader-only call whose attempt on `addr` (the `n`th attempt there)
    /// answers `answer(addr, n)`. Returns the result, the addresses tried in order, and
    /// when each was tried on the paused clock (which only pauses advance).
    async fn run_timed(
        transport: &Transport,
        answer: impl Fn(&str, usize) -> Result<(), Status>,
    ) -> (Result<()>, Vec<(String, Duration)>) {
        let tried = std::cell::RefCell::new(Vec::<(String, Duration)>::new());
        let start = tokio::time::Instant::now();
        let result = transport
            .call(CallSpec::mutation(&transport.config), |_, addr| {
                let n = tried.borrow().iter().filter(|(a, _)| *a == addr).count();
                tried.borrow_mut().push((addr.clone(), start.elapsed()));
                let answer = answer(&addr, n).map(tonic::Response::new);
                async move { answer }
            })
            .await;
        (result, tried.into_inner())
    }

    /// [`run_timed`], with the addresses tried and the whole time spent in pauses
    /// (zero when the loop never paused).
    async fn run(
        transport: &Transport,
        answer: impl Fn(&str, usize) -> Result<(), Status>,
    ) -> (Result<()>, Vec<String>, Duration) {
        let start = tokio::time::Instant::now();
        let (result, tried) = run_timed(transport, answer).await;
        let addrs = tried.into_iter().map(|(addr, _)| addr).collect();
        (result, addrs, start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn refused_nodes_are_left_for_the_next_at_once() {
        let transport = transport(&["a:1", "b:2", "c:3"], 100);
        let (result, tried, paused) = run(&transport, |addr, _| match addr {
            "http://c:3" => Ok(()),
            _ => Err(refused()),
        })
        .await;
        result.unwrap();
        assert_eq!(tried, ["http://a:1", "http://b:2", "http://c:3"]);
        assert_eq!(
            paused,
            Duration::ZERO,
            "no pause before a whole round failed"
        );
        assert_eq!(
            transport.pick(true),
            "http://c:3",
            "c is now the leader hint"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn redirects_are_followed_at_once() {
        let transport = transport(&["b:2"], 1);
        let (result, tried, paused) = run(&transport, |addr, _| match addr {
            "http://l:9" => Ok(()),
            _ => Err(with_reason(ErrorReason::NotLeader, "l:9")),
        })
        .await;
        result.unwrap();
        assert_eq!(tried, ["http://b:2", "http://l:9"]);
        assert_eq!(paused, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_round_pauses_once_then_starts_again() {
        let transport = transport(&["a:1", "b:2"], 100);
        // During an election: nobody knows a leader, then `a` wins.
        let (result, tried, paused) = run(&transport, |addr, n| match (addr, n) {
            ("http://a:1", 1) => Ok(()),
            _ => Err(with_reason(ErrorReason::NoLeader, "")),
        })
        .await;
        result.unwrap();
        assert_eq!(tried, ["http://a:1", "http://b:2", "http://a:1"]);
        assert!(
            (Duration::from_millis(50)..=Duration::from_millis(100)).contains(&paused),
            "one pause of the first backoff step, not {paused:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_redirect_to_a_dead_leader_does_not_spin() {
        // `a` led and died; `b` still names it until the election ends.
        let transport = transport(&["a:1", "b:2"], 3);
        let (result, tried, paused) = run(&transport, |addr, _| match addr {
            "http://b:2" => Err(with_reason(ErrorReason::NotLeader, "a:1")),
            _ => Err(refused()),
        })
        .await;
        assert!(result.unwrap_err().is_transient());
        // Three rounds of two attempts, with a pause between rounds.
        assert_eq!(tried.len(), 6, "{tried:?}");
        assert!(
            paused >= Duration::from_millis(100),
            "two pauses, not {paused:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_leaders_own_failures_pause_before_the_retry() {
        let transport = transport(&["a:1", "b:2"], 100);
        // The leader timed out the request: after a pause, retried by way of `b`'s
        // redirect (the leader hint was dropped).
        let (result, tried) = run_timed(&transport, |addr, n| match (addr, n) {
            ("http://a:1", 0) => Err(with_reason(ErrorReason::Unavailable, "")),
            ("http://a:1", _) => Ok(()),
            _ => Err(with_reason(ErrorReason::NotLeader, "a:1")),
        })
        .await;
        result.unwrap();
        let addrs: Vec<&str> = tried.iter().map(|(addr, _)| addr.as_str()).collect();
        assert_eq!(addrs, ["http://a:1", "http://b:2", "http://a:1"]);
        assert!(
            tried[1].1 >= Duration::from_millis(50),
            "b tried at once: {tried:?}"
        );
        assert_eq!(
            tried[2].1, tried[1].1,
            "the redirect followed at once: {tried:?}"
        );
    }

    #[test]
    fn the_default_backoff_stays_short() {
        let transport = Transport::new(ClientBuilder::new(["a:1"]).config).unwrap();
        let mut step = transport.config.backoff_initial;
        for _ in 0..20 {
            let pause = transport.backoff(&mut step);
            assert!(pause <= Duration::from_millis(160), "{pause:?}");
        }
        assert!(transport.backoff(&mut step) >= Duration::from_millis(80));
    }

    #[test]
    fn addresses_get_the_scheme_of_the_client() {
        assert_eq!(normalize("a:1", false), "http://a:1");
        assert_eq!(normalize("a:1", true), "https://a:1");
        assert_eq!(normalize("http://a:1", true), "https://a:1");
        assert_eq!(normalize("http://a:1", false), "http://a:1");
        assert_eq!(normalize("https://a:1", true), "https://a:1");
        assert_eq!(normalize("https://a:1", false), "https://a:1");
    }
}
