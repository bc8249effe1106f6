//! Per-link TCP proxies, run in-process: node `i` reaches node `j`'s peer (Raft) port
//! through the proxy of link `(i, j)`, so the nemesis can cut, black-hole or slow every
//! direction of every link on its own.
//!
//! - [`LinkMode::Up`]: bytes flow, each chunk held back by the link's delay.
//! - [`LinkMode::Refuse`]: open connections are closed and new ones closed at once (a
//!   fast failure, as a REJECT rule gives).
//! - [`LinkMode::BlackHole`]: open connections are closed, new ones are accepted and
//!   then never answered (as a DROP rule gives: the peer only learns by timeouts).
//!
//! Every change of mode closes the link's open connections, so that no HTTP/2 stream or
//! Raft link ever sees a gap in its bytes; nodes reconnect by themselves.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// How a link treats traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    /// Traffic flows (with the link's delay).
    Up,
    /// Connections are refused (closed at once).
    Refuse,
    /// Connections hang: accepted, never answered.
    BlackHole,
}

/// A link's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkSettings {
    /// Up, refused or black-holed.
    pub mode: LinkMode,
    /// Added one-way latency per chunk, in ms.
    pub delay_ms: u64,
    /// Bumped on every change of mode: connections of an older epoch close.
    pub epoch: u64,
}

struct Link {
    listen: SocketAddr,
    settings: watch::Sender<LinkSettings>,
    task: JoinHandle<()>,
}

/// The proxies of every ordered pair of nodes.
pub struct ProxyNet {
    links: BTreeMap<(u64, u64), Link>,
}

impl Drop for ProxyNet {
    fn drop(&mut self) {
        for link in self.links.values() {
            link.task.abort();
        }
    }
}

impl ProxyNet {
    /// Start a proxy for every ordered pair `(i, j)`, `i != j`, forwarding to
    /// `targets[j]` (node `j`'s peer listener).
    ///
    /// # Errors
    /// A listener cannot be bound.
    pub async fn start(targets: &BTreeMap<u64, SocketAddr>) -> std::io::Result<ProxyNet> {
        let mut links = Vec::new();
        for &from in targets.keys() {
            for (&to, &target) in targets {
                if from == to {
                    continue;
                }
                let listener = TcpListener::bind("127.0.0.1:0").await?;
                links.push(((from, to), listener, target));
            }
        }
        Ok(ProxyNet::from_listeners(links))
    }

    /// Proxies on listeners bound by the caller: link `(from, to)` accepts on its
    /// listener and forwards to its target. Call from within a Tokio runtime.
    pub fn from_listeners(listeners: Vec<((u64, u64), TcpListener, SocketAddr)>) -> ProxyNet {
        let mut links = BTreeMap::new();
        for (key, listener, target) in listeners {
            // A listener that cannot say its address is not reachable by address anyway.
            let listen = listener
                .local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
            let (settings, _) = watch::channel(LinkSettings {
                mode: LinkMode::Up,
                delay_ms: 0,
                epoch: 0,
            });
            let task = tokio::spawn(accept_loop(listener, target, settings.subscribe()));
            links.insert(
                key,
                Link {
                    listen,
                    settings,
                    task,
                },
            );
        }
        ProxyNet { links }
    }

    /// The links, as `(from, to)`.
    pub fn links(&self) -> Vec<(u64, u64)> {
        self.links.keys().copied().collect()
    }

    /// The address node `from` uses for node `to`.
    pub fn address(&self, from: u64, to: u64) -> Option<SocketAddr> {
        self.links.get(&(from, to)).map(|l| l.listen)
    }

    /// Set the mode of the one-way link `from → to` (closing its open connections when
    /// the mode changes).
    pub fn set_mode(&self, from: u64, to: u64, mode: LinkMode) {
        if let Some(link) = self.links.get(&(from, to)) {
            link.settings.send_modify(|s| {
                if s.mode != mode {
                    s.mode = mode;
                    s.epoch += 1;
                }
            });
        }
    }

    /// Set the delay of the one-way link `from → to`.
    pub fn set_delay(&self, from: u64, to: u64, delay_ms: u64) {
        if let Some(link) = self.links.get(&(from, to)) {
            link.settings.send_modify(|s| s.delay_ms = delay_ms);
        }
    }

    /// Cut both directions between `a` and `b`.
    pub fn cut(&self, a: u64, b: u64, mode: LinkMode) {
        self.set_mode(a, b, mode);
        self.set_mode(b, a, mode);
    }

    /// Every link up, without delay.
    pub fn heal(&self) {
        for &(from, to) in self.links.keys() {
            self.set_mode(from, to, LinkMode::Up);
            self.set_delay(from, to, 0);
        }
    }

    /// Whether every link is up without delay.
    pub fn is_healed(&self) -> bool {
        self.links.values().all(|l| {
            let s = *l.settings.borrow();
            s.mode == LinkMode::Up && s.delay_ms == 0
        })
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    settings: watch::Receiver<LinkSettings>,
) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = inbound.set_nodelay(true);
        let current = *settings.borrow();
        let settings = settings.clone();
        match current.mode {
            LinkMode::Refuse => drop(inbound),
            LinkMode::BlackHole => {
                tokio::spawn(hold(inbound, settings, current.epoch));
            }
            LinkMode::Up => {
                tokio::spawn(forward(inbound, target, settings, current.epoch));
            }
        }
    }
}

/// Keep a black-holed connection open, unanswered, until the link changes.
async fn hold(inbound: TcpStream, mut settings: watch::Receiver<LinkSettings>, epoch: u64) {
    // Read nothing: the sender's window fills and its writes stall, as under packet loss.
    while settings.borrow().epoch == epoch {
        if settings.changed().await.is_err() {
            break;
        }
    }
    drop(inbound);
}

async fn forward(
    inbound: TcpStream,
    target: SocketAddr,
    settings: watch::Receiver<LinkSettings>,
    epoch: u64,
) {
    let outbound =
        match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(target)).await {
            Ok(Ok(stream)) => stream,
            _ => return,
        };
    let _ = outbound.set_nodelay(true);
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    let settings = Arc::new(settings);
    let a = pump(in_read, out_write, settings.as_ref().clone(), epoch);
    let b = pump(out_read, in_write, settings.as_ref().clone(), epoch);
    // When either direction ends, close both.
    tokio::select! {
        () = a => {}
        () = b => {}
    }
}

/// Copy one direction, holding each chunk back by the link's delay, until either side
/// closes or the link's epoch changes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut settings: watch::Receiver<LinkSettings>,
    epoch: u64,
) {
    let (chunks, mut queued) = mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(256);
    let writer = async move {
        while let Some((due, bytes)) = queued.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    let reader = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                read = from.read(&mut buffer) => {
                    let n = match read {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let delay = Duration::from_millis(settings.borrow().delay_ms);
                    let due = tokio::time::Instant::now() + delay;
                    if chunks.send((due, buffer[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
                changed = settings.changed() => {
                    if changed.is_err() || settings.borrow().epoch != epoch {
                        return false;
                    }
                }
            }
        }
        true
    };
    tokio::pin!(writer);
    tokio::select! {
        graceful = reader => {
            if graceful {
                // Let the queued bytes out before closing.
                let _ = tokio::time::timeout(Duration::from_secs(5), &mut writer).await;
            }
        }
        () = &mut writer => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buffer).await {
                        if n == 0 || stream.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(addr: SocketAddr) -> Option<Duration> {
        let started = std::time::Instant::now();
        let attempt = async {
            let mut stream = TcpStream::connect(addr).await.ok()?;
            stream.write_all(b"ping").await.ok()?;
            let mut buffer = [0u8; 4];
            stream.read_exact(&mut buffer).await.ok()?;
            (&buffer == b"ping").then_some(())
        };
        tokio::time::timeout(Duration::from_millis(1500), attempt)
            .await
            .ok()
            .flatten()
            .map(|()| started.elapsed())
    }

    #[tokio::test]
    async fn links_pass_refuse_black_hole_and_delay() {
        let echo = echo_server().await;
        let targets = BTreeMap::from([(1, echo), (2, echo)]);
        let net = ProxyNet::start(&targets).await.unwrap();
        let link = net.address(1, 2).unwrap();
        assert!(round_trip(link).await.is_some());

        net.set_mode(1, 2, LinkMode::Refuse);
        assert!(round_trip(link).await.is_none());
        // The other direction is untouched.
        assert!(round_trip(net.address(2, 1).unwrap()).await.is_some());

        net.set_mode(1, 2, LinkMode::BlackHole);
        assert!(round_trip(link).await.is_none());

        net.heal();
        assert!(net.is_healed());
        assert!(round_trip(link).await.is_some());

        net.set_delay(1, 2, 200);
        let slow = round_trip(link).await.expect("delayed, not lost");
        assert!(slow >= Duration::from_millis(380), "{slow:?}");
    }
}
