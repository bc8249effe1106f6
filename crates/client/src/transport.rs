//! Channels to the nodes, the leader hint, and the retry loop every call goes through.

use crate::config::Config;
use crate::error::{Error, Failure, Result, classify};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
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

/// Consecutive redirects followed without a pause; past this the loop backs off, so two
/// nodes that name each other cannot spin it.
const FREE_REDIRECTS: u32 = 3;

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
    pub fn lose_answers(&self, count: u32) {
        self.lose_answers.store(count, Ordering::SeqCst);
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
    /// retrying transient failures with backoff, within the retry budget and deadline.
    /// Each attempt gets the node's channel and address; a mutation must send the same
    /// request id in every attempt.
    pub async fn call<T, F, Fut>(&self, spec: CallSpec, mut attempt: F) -> Result<T>
    where
        F: FnMut(AuthChannel, String) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let mut streak_start = started;
        let mut attempts: u32 = 0;
        let mut redirects: u32 = 0;
        let mut backoff = self.config.backoff_initial;
        let mut maybe_acted = false;
        loop {
            attempts += 1;
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
            let lose = spec.mutation
                && result.is_ok()
                && self
                    .lose_answers
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
            let result = if lose {
                Err(Status::unknown("test: answer lost after the server acted"))
            } else {
                result
            };
            let status = match result {
                Ok(response) => {
                    if spec.leader_only {
                        self.set_leader(&addr);
                    }
                    return Ok(response.into_inner());
                }
                Err(status) => status,
            };
            let mut pause = true;
            let last_error = match classify(&status) {
                Failure::Fatal(error) => return Err(error),
                Failure::Redirect(leader) => {
                    let leader = self.normalize(&leader);
                    tracing::debug!(from = %addr, to = %leader, "following not-leader redirect");
                    self.set_leader(&leader);
                    redirects += 1;
                    pause = redirects > FREE_REDIRECTS;
                    Error::NotLeader {
                        leader_addr: Some(leader),
                        message: status.message().to_string(),
                    }
                }
                Failure::Retry {
                    error,
                    maybe_acted: acted,
                } => {
                    tracing::debug!(node = %addr, %error, "retrying");
                    maybe_acted |= acted || timed_out;
                    self.demote(&addr);
                    error
                }
            };
            // A long wait that then failed starts a new run of failures.
            if spec.waits && attempt_started.elapsed() > self.config.call_timeout {
                streak_start = attempt_started.max(Instant::now() - self.config.call_timeout);
                attempts = 1;
            }
            let elapsed = streak_start.elapsed();
            let deadline = self.config.retry_deadline;
            if elapsed >= deadline || attempts >= self.config.retry_budget {
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
            if pause {
                let pause = self.backoff(&mut backoff).min(deadline - elapsed);
                tokio::time::sleep(pause).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

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
