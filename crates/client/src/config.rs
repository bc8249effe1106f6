//! [`ClientBuilder`]: endpoints, timeouts, retries, backoff and lease accounting.

use crate::Client;
use crate::error::Result;
use std::time::Duration;

/// The settings a [`Client`] runs with (see [`ClientBuilder`] for each default).
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub endpoints: Vec<String>,
    pub connect_timeout: Duration,
    pub call_timeout: Duration,
    pub retry_deadline: Duration,
    pub retry_budget: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub keepalive_safety_margin: Option<Duration>,
    pub keepalive_interval: Option<Duration>,
}

impl Config {
    /// The margin subtracted from each lease: configured, else `max(ttl / 10, 200 ms)`,
    /// and never more than half the TTL.
    pub fn safety_margin(&self, ttl: Duration) -> Duration {
        self.keepalive_safety_margin
            .unwrap_or_else(|| (ttl / 10).max(Duration::from_millis(200)))
            .min(ttl / 2)
    }

    /// How often a session sends a keepalive: configured, else `ttl / 3`.
    pub fn keepalive_interval(&self, ttl: Duration) -> Duration {
        self.keepalive_interval
            .unwrap_or(ttl / 3)
            .max(Duration::from_millis(10))
    }
}

/// Builds a [`Client`].
///
/// ```no_run
/// # async fn demo() -> fencelock_client::Result<()> {
/// use std::time::Duration;
/// let client = fencelock_client::ClientBuilder::new(["10.0.0.1:7070", "10.0.0.2:7070"])
///     .call_timeout(Duration::from_secs(3))
///     .retry_deadline(Duration::from_secs(20))
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct ClientBuilder {
    config: Config,
}

impl ClientBuilder {
    /// A builder for a client of the nodes at `endpoints` (`host:port` or a URI such as
    /// `http://host:port`). Any node will do: the client finds the leader.
    pub fn new<I, S>(endpoints: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder {
            config: Config {
                endpoints: endpoints.into_iter().map(Into::into).collect(),
                connect_timeout: Duration::from_secs(2),
                call_timeout: Duration::from_secs(5),
                retry_deadline: Duration::from_secs(15),
                retry_budget: 100,
                backoff_initial: Duration::from_millis(20),
                backoff_max: Duration::from_millis(500),
                keepalive_safety_margin: None,
                keepalive_interval: None,
            },
        }
    }

    /// How long to wait for a TCP + HTTP/2 connection to one node (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// How long one attempt of a call may take before it is abandoned and retried
    /// (default 5 s). Waiting acquires are not cut by it.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.config.call_timeout = timeout;
        self
    }

    /// How long a call keeps retrying (redirects, elections, unreachable nodes) before it
    /// fails (default 15 s).
    pub fn retry_deadline(mut self, deadline: Duration) -> Self {
        self.config.retry_deadline = deadline;
        self
    }

    /// The most attempts one call makes (default 100).
    pub fn retry_budget(mut self, attempts: u32) -> Self {
        self.config.retry_budget = attempts.max(1);
        self
    }

    /// Exponential backoff between retries, from `initial` doubling up to `max`; each
    /// pause is drawn at random from the upper half of the current step (default 20 ms
    /// to 500 ms).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.backoff_initial = initial.max(Duration::from_millis(1));
        self.config.backoff_max = max.max(self.config.backoff_initial);
        self
    }

    /// The margin by which the client's lease ends before the TTL counted from the send
    /// of the last answered keepalive (default `max(ttl / 10, 200 ms)`, capped at half
    /// the TTL). It covers clock-rate differences and the time between the lease running
    /// out and the application noticing.
    pub fn keepalive_safety_margin(mut self, margin: Duration) -> Self {
        self.config.keepalive_safety_margin = Some(margin);
        self
    }

    /// How often each session sends a keepalive (default a third of its TTL).
    pub fn keepalive_interval(mut self, interval: Duration) -> Self {
        self.config.keepalive_interval = Some(interval);
        self
    }

    /// Connect: reach any node and learn the leader.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] for no or malformed endpoints;
    /// [`crate::Error::Unavailable`] / [`crate::Error::Timeout`] when no node answered
    /// within the retry deadline.
    pub async fn connect(self) -> Result<Client> {
        Client::from_config(self.config).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_defaults_and_caps() {
        let config = ClientBuilder::new(["a:1"]).config;
        assert_eq!(
            config.safety_margin(Duration::from_secs(1)),
            Duration::from_millis(200)
        );
        assert_eq!(
            config.safety_margin(Duration::from_secs(30)),
            Duration::from_secs(3)
        );
        let tiny = ClientBuilder::new(["a:1"])
            .keepalive_safety_margin(Duration::from_secs(9))
            .config;
        assert_eq!(
            tiny.safety_margin(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
        assert_eq!(
            config.keepalive_interval(Duration::from_secs(3)),
            Duration::from_secs(1)
        );
    }
}
