//! A client in a network namespace of the run's own, so the nemesis can cut it off from
//! the whole cluster while every other client and every node carry on.
//!
//! The namespace has its own loopback. Inside it, on the very addresses the nodes and the
//! fenced service listen on outside (`127.0.0.1:PORT`), listen the harness's proxies
//! ([`ProxyNet`]), which forward to the real ones: the client needs no other endpoints,
//! and a "not leader" redirect, which names a node's real address, leads into a proxy
//! too. No connection of the client can go around them.
//!
//! The client's tasks run on a one-thread runtime on a thread that moved into the
//! namespace (a network namespace belongs to a thread, and a socket to the namespace it
//! was made in); the proxies run on the caller's runtime, outside. Creating a namespace
//! needs root (`CAP_SYS_ADMIN`); dropping the [`ClientNetns`] ends its tasks, its thread
//! and the namespace with it.

use crate::proxy::{LinkMode, ProxyNet};
use anyhow::{Context, bail};
use futures::future::BoxFuture;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use tokio::sync::{mpsc, oneshot};

/// The key of the link to node `id` in [`ClientNetns`]'s proxies: `(CLIENT, id)`.
const CLIENT: u64 = 0;

/// A network namespace with one client in it, and the proxies between it and the nodes.
pub struct ClientNetns {
    /// One proxy per node, `(CLIENT, node)`: the ones a cut acts on.
    nodes: ProxyNet,
    /// The proxy to the fenced service: always up (the client keeps writing).
    _resource: ProxyNet,
    tasks: Option<mpsc::UnboundedSender<BoxFuture<'static, ()>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClientNetns {
    /// A fresh namespace whose client reaches every node of `nodes` (id → client
    /// address) and the fenced service at `resource`, each through a proxy.
    ///
    /// # Errors
    /// Not root, no `ip` to bring its loopback up, or a listener cannot be bound.
    pub async fn create(
        nodes: &BTreeMap<u64, SocketAddr>,
        resource: SocketAddr,
    ) -> anyhow::Result<ClientNetns> {
        crate::disk::require_root("the client-partition nemesis")?;
        let mut addresses: Vec<SocketAddr> = nodes.values().copied().collect();
        addresses.push(resource);
        let (ready, listeners) = oneshot::channel();
        let (tasks, mut queue) = mpsc::unbounded_channel::<BoxFuture<'static, ()>>();
        let thread = std::thread::Builder::new()
            .name("harness-netns".into())
            .spawn(move || {
                let setup = enter_new_namespace().and_then(|()| {
                    let listeners = addresses
                        .iter()
                        .map(|addr| {
                            let listener = std::net::TcpListener::bind(addr)
                                .with_context(|| format!("binding {addr} in the namespace"))?;
                            listener.set_nonblocking(true)?;
                            Ok(listener)
                        })
                        .collect::<anyhow::Result<Vec<_>>>()?;
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    Ok((listeners, runtime))
                });
                let runtime = match setup {
                    Ok((bound, runtime)) => {
                        let _ = ready.send(Ok(bound));
                        runtime
                    }
                    Err(error) => {
                        let _ = ready.send(Err(error));
                        return;
                    }
                };
                runtime.block_on(async move {
                    while let Some(task) = queue.recv().await {
                        tokio::spawn(task);
                    }
                });
                // Dropping the runtime here cancels what is left of the client's tasks.
            })?;
        let mut bound = listeners
            .await
            .context("the namespace's thread ended early")??
            .into_iter();
        let mut links = Vec::new();
        for (&id, &target) in nodes {
            let listener = bound.next().context("a listener per node")?;
            links.push((
                (CLIENT, id),
                tokio::net::TcpListener::from_std(listener)?,
                target,
            ));
        }
        let resource_listener = bound.next().context("a listener for the resource")?;
        let resource_proxy = ProxyNet::from_listeners(vec![(
            (CLIENT, 0),
            tokio::net::TcpListener::from_std(resource_listener)?,
            resource,
        )]);
        Ok(ClientNetns {
            nodes: ProxyNet::from_listeners(links),
            _resource: resource_proxy,
            tasks: Some(tasks),
            thread: Some(thread),
        })
    }

    /// Run `task` inside the namespace; its output comes back through the receiver
    /// (which yields an error if the namespace ended first).
    pub fn spawn<T: Send + 'static>(
        &self,
        task: impl Future<Output = T> + Send + 'static,
    ) -> oneshot::Receiver<T> {
        let (done, output) = oneshot::channel();
        if let Some(tasks) = &self.tasks {
            let _ = tasks.send(Box::pin(async move {
                let _ = done.send(task.await);
            }));
        }
        output
    }

    /// Cut the client off from every node (its open connections closed), in `mode`.
    pub fn cut(&self, mode: LinkMode) {
        for (from, to) in self.nodes.links() {
            self.nodes.set_mode(from, to, mode);
        }
    }

    /// Reconnect the client to every node.
    pub fn heal(&self) {
        self.nodes.heal();
    }
}

impl Drop for ClientNetns {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop; its runtime then drops the tasks.
        self.tasks = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Move the calling thread into a new network namespace and bring its loopback up.
fn enter_new_namespace() -> anyhow::Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .context("creating a network namespace (unshare CLONE_NEWNET)")?;
    // A child started from this thread runs in its namespace.
    let status = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .stdin(std::process::Stdio::null())
        .status()
        .context("running `ip link set lo up` in the namespace (is iproute2 installed?)")?;
    if !status.success() {
        bail!("`ip link set lo up` in the namespace failed: {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on 127.0.0.1 that answers each connection with `reply`.
    async fn server(reply: &'static [u8]) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let _ = stream.write_all(reply).await;
            }
        });
        addr
    }

    async fn fetch(addr: SocketAddr) -> Option<Vec<u8>> {
        let attempt = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
            let mut buffer = vec![0u8; 4];
            stream.read_exact(&mut buffer).await.ok()?;
            Some(buffer)
        };
        tokio::time::timeout(std::time::Duration::from_secs(2), attempt)
            .await
            .ok()
            .flatten()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_in_the_namespace_reaches_the_same_addresses_until_cut() {
        if !crate::disk::is_root() {
            eprintln!("skipped: a network namespace needs root");
            return;
        }
        let node = server(b"node").await;
        let resource = server(b"kvkv").await;
        let netns = ClientNetns::create(&BTreeMap::from([(1, node)]), resource)
            .await
            .unwrap();
        let inside = |addr| netns.spawn(fetch(addr));
        assert_eq!(inside(node).await.unwrap().as_deref(), Some(&b"node"[..]));
        netns.cut(LinkMode::Refuse);
        assert_eq!(inside(node).await.unwrap(), None, "cut off from the node");
        assert_eq!(
            inside(resource).await.unwrap().as_deref(),
            Some(&b"kvkv"[..]),
            "the resource stays reachable"
        );
        // Outside the namespace, nothing changed.
        assert_eq!(fetch(node).await.as_deref(), Some(&b"node"[..]));
        netns.heal();
        assert_eq!(inside(node).await.unwrap().as_deref(), Some(&b"node"[..]));
    }
}
