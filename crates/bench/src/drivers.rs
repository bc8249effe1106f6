//! One lock client per system, all with the same two operations: `lock` (wait until
//! granted) and `unlock`. Each logical client has its own lease / session; connections are
//! shared by a few clients, as a real client process would.

use crate::etcd_pb::etcdserverpb::{
    LeaseGrantRequest, LeaseRevokeRequest, RangeRequest, kv_client::KvClient,
    lease_client::LeaseClient,
};
use crate::etcd_pb::v3lockpb::{LockRequest, UnlockRequest, lock_client::LockClient};
use crate::systems::{Cluster, Kind};
use anyhow::{Context, Result, anyhow, bail};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// How many connections (channels) the clients of one system share.
const CONNECTIONS: usize = 4;
/// Lease / session TTL of the lock clients.
const TTL: Duration = Duration::from_secs(10);
/// How long an etcd or ZooKeeper call is retried across nodes (failover).
const RETRY_DEADLINE: Duration = Duration::from_secs(20);

/// Shared connections to one system, from which logical clients are made.
pub enum Connector {
    /// fencelock: a few `fencelock_client::Client`s (each one HTTP/2 channel per node).
    Fencelock(Vec<fencelock_client::Client>),
    /// etcd: a few sets of one channel per member.
    Etcd(Vec<Vec<Channel>>),
    /// ZooKeeper: the connect string (each client is its own ZooKeeper session).
    Zookeeper(String),
    /// Redis: a few multiplexed connections.
    Redis(Vec<redis::aio::MultiplexedConnection>),
}

impl Connector {
    /// Connects to `cluster`.
    pub async fn new(cluster: &Cluster) -> Result<Connector> {
        let addrs = &cluster.client_addrs;
        Ok(match cluster.spec.kind {
            Kind::Fencelock => {
                let mut clients = Vec::new();
                for _ in 0..CONNECTIONS {
                    clients.push(
                        fencelock_client::ClientBuilder::new(addrs.clone())
                            .retry_deadline(RETRY_DEADLINE)
                            .connect()
                            .await?,
                    );
                }
                Connector::Fencelock(clients)
            }
            Kind::Etcd => {
                let mut sets = Vec::new();
                for _ in 0..CONNECTIONS {
                    let set = addrs
                        .iter()
                        .map(|a| {
                            Ok(Endpoint::from_shared(format!("http://{a}"))?
                                .connect_timeout(Duration::from_secs(1))
                                .timeout(Duration::from_secs(5))
                                .connect_lazy())
                        })
                        .collect::<Result<Vec<_>>>()?;
                    sets.push(set);
                }
                Connector::Etcd(sets)
            }
            Kind::Zookeeper => Connector::Zookeeper(addrs.join(",")),
            Kind::Redis | Kind::RedisAof => {
                let client = redis::Client::open(format!("redis://{}/", addrs[0]))?;
                let mut conns = Vec::new();
                for _ in 0..CONNECTIONS {
                    conns.push(client.get_multiplexed_async_connection().await?);
                }
                Connector::Redis(conns)
            }
        })
    }

    /// Makes logical client number `i` (its own lease / session).
    pub async fn client(&self, i: usize) -> Result<LockClient_> {
        Ok(match self {
            Connector::Fencelock(clients) => {
                let session = clients[i % clients.len()].session(TTL).await?;
                LockClient_::Fencelock(session)
            }
            Connector::Etcd(sets) => {
                let channels = sets[i % sets.len()].clone();
                let mut client = EtcdClient {
                    current: i % channels.len(),
                    channels,
                    lease: 0,
                    keeper: None,
                };
                let ttl = TTL.as_secs() as i64;
                let lease = client
                    .retry(|ch| async move {
                        let r = LeaseClient::new(ch)
                            .lease_grant(LeaseGrantRequest { ttl, id: 0 })
                            .await?
                            .into_inner();
                        Ok(r.id)
                    })
                    .await?;
                client.lease = lease;
                client.keeper = Some(tokio::spawn(etcd_keep_alive(
                    client.channels.clone(),
                    lease,
                )));
                LockClient_::Etcd(client)
            }
            Connector::Zookeeper(connect) => {
                let client = zookeeper_client::Client::connector()
                    .with_session_timeout(TTL)
                    .connect(connect)
                    .await
                    .context("ZooKeeper connect")?;
                LockClient_::Zookeeper(ZkClient {
                    client,
                    parents: HashSet::new(),
                })
            }
            Connector::Redis(conns) => LockClient_::Redis(RedisClient {
                conn: conns[i % conns.len()].clone(),
                owner: format!("{}-{i}", uuid::Uuid::new_v4()),
                script: redis::Script::new(RELEASE_SCRIPT),
            }),
        })
    }
}

/// The compare-and-delete release of the Redis lock recipe.
const RELEASE_SCRIPT: &str = r#"if redis.call("get", KEYS[1]) == ARGV[1] then
  return redis.call("del", KEYS[1])
else
  return 0
end"#;

/// A held lock, as each system identifies it.
pub enum Grant {
    /// fencelock: the guard (its token is the fencing token).
    Fencelock(fencelock_client::LockGuard),
    /// etcd: the lock's key (name/lease).
    Etcd(Vec<u8>),
    /// ZooKeeper: the ephemeral-sequential node's path.
    Zookeeper(String),
    /// Redis: the key.
    Redis(String),
}

/// One logical lock client (named with a trailing `_` to keep clear of etcd's generated
/// `LockClient`).
#[allow(clippy::large_enum_variant)]
pub enum LockClient_ {
    /// fencelock: a session.
    Fencelock(fencelock_client::Session),
    /// etcd: a lease.
    Etcd(EtcdClient),
    /// ZooKeeper: a session.
    Zookeeper(ZkClient),
    /// Redis: an owner id on a shared connection.
    Redis(RedisClient),
}

impl LockClient_ {
    /// Takes `name`, waiting as long as it takes.
    pub async fn lock(&mut self, name: &str) -> Result<Grant> {
        match self {
            LockClient_::Fencelock(session) => Ok(Grant::Fencelock(session.lock(name).await?)),
            LockClient_::Etcd(c) => c.lock(name).await.map(Grant::Etcd),
            LockClient_::Zookeeper(c) => c.lock(name).await.map(Grant::Zookeeper),
            LockClient_::Redis(c) => c.lock(name).await.map(Grant::Redis),
        }
    }

    /// Releases a grant this client holds.
    pub async fn unlock(&mut self, grant: Grant) -> Result<()> {
        match (self, grant) {
            (LockClient_::Fencelock(_), Grant::Fencelock(guard)) => Ok(guard.release().await?),
            (LockClient_::Etcd(c), Grant::Etcd(key)) => c.unlock(key).await,
            (LockClient_::Zookeeper(c), Grant::Zookeeper(path)) => {
                Ok(c.client.delete(&path, None).await?)
            }
            (LockClient_::Redis(c), Grant::Redis(key)) => c.unlock(&key).await,
            _ => bail!("grant of another system"),
        }
    }

    /// Whether `grant` is still held, checked on the cluster (failover's "no grant lost").
    pub async fn still_held(&mut self, grant: &Grant) -> Result<bool> {
        match (self, grant) {
            (LockClient_::Fencelock(s), Grant::Fencelock(g)) => {
                Ok(s.client().verify(g.name(), g.token()).await?.current)
            }
            (LockClient_::Etcd(c), Grant::Etcd(key)) => {
                let key = key.clone();
                c.retry(|ch| {
                    let key = key.clone();
                    async move {
                        let r = KvClient::new(ch)
                            .range(RangeRequest {
                                key,
                                ..Default::default()
                            })
                            .await?
                            .into_inner();
                        Ok(!r.kvs.is_empty())
                    }
                })
                .await
            }
            (LockClient_::Zookeeper(c), Grant::Zookeeper(path)) => {
                Ok(c.client.check_stat(path).await?.is_some())
            }
            (LockClient_::Redis(c), Grant::Redis(key)) => {
                let v: Option<String> = redis::cmd("GET").arg(key).query_async(&mut c.conn).await?;
                Ok(v.as_deref() == Some(c.owner.as_str()))
            }
            _ => bail!("grant of another system"),
        }
    }

    /// Ends the lease / session, releasing what it holds (best effort).
    pub async fn close(self) {
        match self {
            LockClient_::Fencelock(s) => {
                let _ = s.close().await;
            }
            LockClient_::Etcd(mut c) => {
                let id = c.lease;
                let _ = c
                    .retry(|ch| async move {
                        LeaseClient::new(ch)
                            .lease_revoke(LeaseRevokeRequest { id })
                            .await?;
                        Ok(())
                    })
                    .await;
            }
            LockClient_::Zookeeper(_) | LockClient_::Redis(_) => {}
        }
    }
}

/// etcd: one lease, Lock/Unlock through the v3lock service of any member (followers
/// forward to the leader), rotating to the next member on an error.
pub struct EtcdClient {
    channels: Vec<Channel>,
    current: usize,
    lease: i64,
    keeper: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for EtcdClient {
    fn drop(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            keeper.abort();
        }
    }
}

/// Keeps an etcd lease alive every TTL / 3 (as etcd's own client does), trying the
/// members in turn.
async fn etcd_keep_alive(channels: Vec<Channel>, lease: i64) {
    use crate::etcd_pb::etcdserverpb::LeaseKeepAliveRequest;
    let mut i = 0;
    loop {
        tokio::time::sleep(TTL / 3).await;
        for _ in 0..channels.len() {
            let request = tokio_stream::once(LeaseKeepAliveRequest { id: lease });
            let sent = LeaseClient::new(channels[i].clone())
                .lease_keep_alive(request)
                .await;
            if let Ok(response) = sent {
                let mut stream = response.into_inner();
                if let Ok(Ok(Some(_))) =
                    tokio::time::timeout(Duration::from_secs(2), stream.message()).await
                {
                    break;
                }
            }
            i = (i + 1) % channels.len();
        }
    }
}

impl EtcdClient {
    /// Runs `call` against the current member, rotating members on errors until the
    /// retry deadline. `Lock` is idempotent per lease (its key is `name/lease`), so a
    /// retry after a lost answer does not take a second place in the queue.
    async fn retry<T, F, Fut>(&mut self, call: F) -> Result<T>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let deadline = Instant::now() + RETRY_DEADLINE;
        loop {
            match call(self.channels[self.current].clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => {
                    self.current = (self.current + 1) % self.channels.len();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    async fn lock(&mut self, name: &str) -> Result<Vec<u8>> {
        let lease = self.lease;
        let name = name.as_bytes().to_vec();
        self.retry(|ch| {
            let name = name.clone();
            async move {
                Ok(LockClient::new(ch)
                    .lock(LockRequest { name, lease })
                    .await?
                    .into_inner()
                    .key)
            }
        })
        .await
    }

    async fn unlock(&mut self, key: Vec<u8>) -> Result<()> {
        self.retry(|ch| {
            let key = key.clone();
            async move {
                LockClient::new(ch).unlock(UnlockRequest { key }).await?;
                Ok(())
            }
        })
        .await
    }
}

/// ZooKeeper: the standard lock recipe. Create `/locks/NAME/lock-` ephemeral and
/// sequential; the lowest sequence holds the lock; every other contender watches only its
/// predecessor (no herd).
pub struct ZkClient {
    client: zookeeper_client::Client,
    parents: HashSet<String>,
}

impl ZkClient {
    async fn lock(&mut self, name: &str) -> Result<String> {
        use zookeeper_client::{Acls, CreateMode, Error};
        let dir = format!("/locks/{}", name.replace('/', "_"));
        if !self.parents.contains(&dir) {
            for path in ["/locks", dir.as_str()] {
                match self
                    .client
                    .create(
                        path,
                        b"",
                        &CreateMode::Persistent.with_acls(Acls::anyone_all()),
                    )
                    .await
                {
                    Ok(_) | Err(Error::NodeExists) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            self.parents.insert(dir.clone());
        }
        let (_, seq) = self
            .client
            .create(
                &format!("{dir}/lock-"),
                b"",
                &CreateMode::EphemeralSequential.with_acls(Acls::anyone_all()),
            )
            .await?;
        let mine = format!("lock-{seq}");
        loop {
            let mut children = self.client.list_children(&dir).await?;
            children.sort();
            let pos = children
                .iter()
                .position(|c| *c == mine)
                .ok_or_else(|| anyhow!("our lock node {dir}/{mine} vanished"))?;
            if pos == 0 {
                return Ok(format!("{dir}/{mine}"));
            }
            let predecessor = format!("{dir}/{}", children[pos - 1]);
            let (stat, watcher) = self.client.check_and_watch_stat(&predecessor).await?;
            if stat.is_some() {
                watcher.changed().await;
            }
        }
    }
}

/// Redis: `SET key owner NX PX ttl`, polled every millisecond while taken; released
/// with a compare-and-delete script.
pub struct RedisClient {
    conn: redis::aio::MultiplexedConnection,
    owner: String,
    script: redis::Script,
}

impl RedisClient {
    async fn lock(&mut self, name: &str) -> Result<String> {
        loop {
            let set: Option<String> = redis::cmd("SET")
                .arg(name)
                .arg(&self.owner)
                .arg("NX")
                .arg("PX")
                .arg(TTL.as_millis() as u64)
                .query_async(&mut self.conn)
                .await?;
            if set.is_some() {
                return Ok(name.to_owned());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn unlock(&mut self, key: &str) -> Result<()> {
        let deleted: i64 = self
            .script
            .key(key)
            .arg(&self.owner)
            .invoke_async(&mut self.conn)
            .await?;
        if deleted != 1 {
            bail!("redis lock {key} was not ours any more");
        }
        Ok(())
    }
}
