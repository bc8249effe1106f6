//! [`ClientBuilder`]: endpoints, timeouts, retries, backoff and lease accounting.

use crate::clock::LeaseClock;
use crate::error::{Error, Result};
use std::path::Path;
use std::sync::Arc;
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
    pub withdraw_deadline: Duration,
    /// The clock leases are counted on (`crate::clock`).
    pub clock: Arc<dyn LeaseClock>,
    pub tls: Option<Tls>,
    pub authorization: Option<Authorization>,
}

/// The `authorization` metadata sent with every call (never printed).
#[derive(Clone)]
pub(crate) struct Authorization(pub String);

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authorization(..)")
    }
}

/// TLS settings of a client: the CA that the nodes' certificates must chain to, an
/// optional client certificate (for servers that require mutual TLS) and an optional
/// name to check the nodes' certificates against instead of each endpoint's host.
#[derive(Clone)]
pub(crate) struct Tls {
    pub ca_pem: Vec<u8>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    pub domain: Option<String>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Tls")
            .field("client_cert", &self.identity.is_some())
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// tonic's settings for these.
    pub fn to_tonic(&self) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        if let Some((cert, key)) = &self.identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &self.domain {
            tls = tls.domain_name(domain.clone());
        }
        tls
    }
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
    pub(crate) config: Config,
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
                // Short, so a call waiting out an election retries at least every 160 ms
                // and lands soon after a new leader is up.
                backoff_max: Duration::from_millis(160),
                keepalive_safety_margin: None,
                keepalive_interval: None,
                withdraw_deadline: Duration::from_secs(60),
                clock: crate::clock::system_clock(),
                tls: None,
                authorization: None,
            },
        }
    }

    /// Authenticate every call (keepalive streams and watches included) as `user` with
    /// `password`, for a cluster with auth on (`Basic` credentials in the
    /// `authorization` metadata; use TLS so they do not cross the network in clear).
    pub fn credentials(mut self, user: &str, password: &str) -> Self {
        use base64::Engine as _;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.config.authorization = Some(Authorization(format!("Basic {encoded}")));
        self
    }

    /// Authenticate every call with a bearer token (minted by `fencelock auth token`),
    /// for a cluster with auth on.
    pub fn bearer(mut self, token: &str) -> Self {
        self.config.authorization = Some(Authorization(format!("Bearer {token}")));
        self
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

    /// The most rounds of attempts one call makes (default 100). In a round the client
    /// tries the nodes in turn, each at most once: a node that refuses the connection,
    /// drops it or knows no leader is left for the next one at once, and a "not leader"
    /// answer is followed to the leader it names at once. A backoff pause ends each round
    /// that failed.
    pub fn retry_budget(mut self, rounds: u32) -> Self {
        self.config.retry_budget = rounds.max(1);
        self
    }

    /// Exponential backoff between rounds of retries, from `initial` doubling up to
    /// `max`; each pause is drawn at random from the upper half of the current step
    /// (default 20 ms to 160 ms, so a call waiting out an election retries at least every
    /// 160 ms). Keepalive and watch streams reconnect with the same backoff.
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

    /// How long the client keeps trying to withdraw a cancelled acquire (see
    /// [`Session::acquire`](crate::Session::acquire), "Cancel safety") before it closes
    /// the session instead (default 60 s). Until the withdrawal is settled the cluster
    /// may still hold a wait of the session, and grant it; a session that cannot settle
    /// it is ended, so no lock is ever held by a live session that does not know it.
    pub fn withdraw_deadline(mut self, deadline: Duration) -> Self {
        self.config.withdraw_deadline = deadline;
        self
    }

    /// Test support: count leases on `clock` instead of the system's lease clock
    /// (`CLOCK_BOOTTIME` on Linux), e.g. a [`ManualClock`](crate::ManualClock) that
    /// stands still and then jumps, as a suspended machine's clock does.
    #[cfg(feature = "test-support")]
    pub fn lease_clock(mut self, clock: Arc<dyn LeaseClock>) -> Self {
        self.config.clock = clock;
        self
    }

    /// Speak TLS to the nodes (needed when they serve TLS, which refuses plaintext):
    /// trust the CA certificate(s) in `ca_pem`, present `client` (certificate chain and
    /// private key, PEM) to nodes that require client certificates, and check the nodes'
    /// certificates against `domain` instead of each endpoint's host (for nodes reached
    /// by an address their certificates do not name). Endpoints and redirects then use
    /// `https://`; a bare `host:port` or an `http://` endpoint is upgraded.
    ///
    /// ```no_run
    /// # async fn demo() -> fencelock_client::Result<()> {
    /// let ca = b"-----BEGIN CERTIFICATE-----\n...";
    /// let (cert, key) = (b"-----BEGIN CERTIFICATE-----\n...", b"-----BEGIN PRIVATE KEY-----\n...");
    /// let client = fencelock_client::ClientBuilder::new(["127.0.0.1:7001"])
    ///     .tls(ca, Some((cert.as_slice(), key.as_slice())), None)
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn tls(
        mut self,
        ca_pem: impl AsRef<[u8]>,
        client: Option<(&[u8], &[u8])>,
        domain: Option<&str>,
    ) -> Self {
        self.config.tls = Some(Tls {
            ca_pem: ca_pem.as_ref().to_vec(),
            identity: client.map(|(cert, key)| (cert.to_vec(), key.to_vec())),
            domain: domain.map(str::to_owned),
        });
        self
    }

    /// [`ClientBuilder::tls`] with the PEM read from files: the CA certificate, and the
    /// client certificate and key if given.
    ///
    /// ```no_run
    /// # async fn demo() -> fencelock_client::Result<()> {
    /// use std::path::Path;
    /// let client = fencelock_client::ClientBuilder::new(["127.0.0.1:7001"])
    ///     .tls_files(
    ///         "certs/ca.pem",
    ///         Some((Path::new("certs/client-alice.pem"), Path::new("certs/client-alice.key"))),
    ///         None,
    ///     )?
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] naming a file that cannot be read or holds no PEM.
    pub fn tls_files(
        self,
        ca: impl AsRef<Path>,
        client: Option<(&Path, &Path)>,
        domain: Option<&str>,
    ) -> Result<Self> {
        let read = |path: &Path, what: &str| -> Result<Vec<u8>> {
            let bytes = std::fs::read(path).map_err(|e| {
                Error::Config(format!("cannot read the {what} {}: {e}", path.display()))
            })?;
            if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
                return Err(Error::Config(format!(
                    "the {what} {} is not PEM",
                    path.display()
                )));
            }
            Ok(bytes)
        };
        let ca = read(ca.as_ref(), "CA certificate")?;
        let client = match client {
            Some((cert, key)) => {
                Some((read(cert, "client certificate")?, read(key, "client key")?))
            }
            None => None,
        };
        Ok(self.tls(
            ca,
            client.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice())),
            domain,
        ))
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
