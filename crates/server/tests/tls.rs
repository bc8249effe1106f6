//! TLS on the client and peer listeners: TLS clients are served and plaintext ones
//! refused; with client mTLS, clients without a certificate of the configured CA are
//! refused; a cluster with peer mTLS forms, replicates and elects; a node whose
//! certificate comes from another CA never joins, is not counted, and its Raft messages
//! (gRPC or Raft links on the peer port) are refused at the handshake.

mod common;

use common::*;
use fencelock_proto::peer::peer_client::PeerClient;
use fencelock_proto::v1 as pb;
use fencelock_proto::v1::cluster_client::ClusterClient;
use fencelock_proto::v1::locks_client::LocksClient;
use fencelock_server::config::{NetworkConfig, TlsConfig};
use fencelock_server::raft::NodeId;
use fencelock_server::raft::link::{FrameKind, LinkClientTls, LinkError, LinkPool, encode_frame};
use fencelock_server::startup::StartError;
use fencelock_server::tls::NodeTls;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// A one-node cluster whose client listener speaks TLS (requiring client certificates
/// when `client_mtls`) and whose peer listener speaks mutual TLS.
async fn tls_node(pki: &Arc<TestPki>, client_mtls: bool) -> TestCluster {
    let pki = pki.clone();
    TestCluster::start_with_configs(1, move |config| {
        fast(config);
        config.tls = Some(pki.node_tls(config.node_id, client_mtls));
    })
    .await
}

/// How a call failed.
#[derive(Debug, PartialEq)]
enum Failure {
    /// The connection or its TLS handshake failed: the service never saw the call.
    Transport(String),
    /// The service answered with an error.
    Service(String),
}

impl From<tonic::transport::Error> for Failure {
    fn from(error: tonic::transport::Error) -> Failure {
        Failure::Transport(format!("connect: {error:?}"))
    }
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Failure {
        // A status made on this side from a transport error (a refused handshake, or a
        // TLS alert read as HTTP/2 by a plaintext client) carries that error as its
        // source; one received from the server has none.
        use std::error::Error;
        if status.source().is_some() {
            Failure::Transport(format!("call: {status:?}"))
        } else {
            Failure::Service(format!("{status:?}"))
        }
    }
}

fn assert_refused<T: std::fmt::Debug>(result: Result<T, Failure>, who: &str) {
    match result {
        Err(Failure::Transport(_)) => {}
        other => panic!("{who}: expected a refused connection, got {other:?}"),
    }
}

/// A `Status` call over a fresh TLS connection with `tls`.
async fn tls_status(addr: SocketAddr, tls: ClientTlsConfig) -> Result<u64, Failure> {
    let channel = tls_channel(addr, tls).await?;
    let mut client = ClusterClient::new(channel);
    let mut request = tonic::Request::new(pb::StatusRequest {});
    request.set_timeout(Duration::from_secs(3));
    Ok(client.status(request).await?.into_inner().node_id)
}

/// A `Status` call over a plaintext connection.
async fn plaintext_status(addr: SocketAddr) -> Result<u64, Failure> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(3))
        .connect()
        .await?;
    Ok(ClusterClient::new(channel)
        .status(pb::StatusRequest {})
        .await?
        .into_inner()
        .node_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_is_served_and_plaintext_client_refused() {
    let pki = Arc::new(TestPki::new(&[1], &[]));
    let cluster = tls_node(&pki, false).await;
    cluster.leader().await;
    let addr = cluster.slots[0].client;

    assert_eq!(tls_status(addr, pki.client_tls(None)).await, Ok(1));
    // A session over TLS works end to end.
    let channel = tls_channel(addr, pki.client_tls(None)).await.unwrap();
    let mut locks = LocksClient::new(channel);
    let session = open_session(&mut locks, 1, 5_000).await;
    assert!(try_lock(&mut locks, session, "tls/a", 1).await.is_some());

    assert_refused(plaintext_status(addr).await, "plaintext client");
    // Neither the peer listener takes plaintext: not gRPC, not a Raft link.
    let peer = cluster.slots[0].peer;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{peer}"))
        .unwrap()
        .timeout(Duration::from_secs(3))
        .connect_lazy();
    let info = PeerClient::new(channel)
        .node_info(fencelock_proto::peer::NodeInfoRequest {})
        .await;
    assert_refused(info.map_err(Failure::from), "plaintext peer");
    assert_link_refused(peer, None).await;
    // A TLS link with a node certificate of the CA is served (the control).
    assert_link_served(peer, link_tls(&pki, &pki.node(1))).await;

    // A client that does not trust the node's CA refuses the node.
    let other = TestPki::new(&[1], &[]);
    assert_refused(
        tls_status(addr, other.client_tls(None)).await,
        "client not trusting the node's CA",
    );
    // The server still serves after all that.
    assert_eq!(tls_status(addr, pki.client_tls(None)).await, Ok(1));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mtls_refuses_clients_without_a_certificate_of_the_ca() {
    let pki = Arc::new(TestPki::new(&[1], &["alice"]));
    let cluster = tls_node(&pki, true).await;
    cluster.leader().await;
    let addr = cluster.slots[0].client;

    assert_eq!(tls_status(addr, pki.client_tls(Some("alice"))).await, Ok(1));

    assert_refused(
        tls_status(addr, pki.client_tls(None)).await,
        "client without a certificate",
    );

    // A certificate from another CA (trusting the right server CA) is refused too.
    let rogue = TestPki::new(&[], &["mallory"]);
    let (cert, key) = rogue.client("mallory");
    let forged = pki
        .client_tls(None)
        .identity(Identity::from_pem(rogue.read(&cert), rogue.read(&key)));
    assert_refused(
        tls_status(addr, forged).await,
        "client with a certificate of another CA",
    );
    assert_refused(plaintext_status(addr).await, "plaintext client");

    assert_eq!(tls_status(addr, pki.client_tls(Some("alice"))).await, Ok(1));
    cluster.shutdown().await;
}

/// Every running node has applied at least `index`.
async fn wait_applied(cluster: &TestCluster, indexes: &[usize], index: u64) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let behind: Vec<usize> = indexes
            .iter()
            .copied()
            .filter(|i| cluster.running(*i).node().status().applied_index < index)
            .collect();
        if behind.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nodes {behind:?} did not apply {index}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_with_peer_mtls_form_replicate_and_elect() {
    let pki = Arc::new(TestPki::new(&[1, 2, 3], &[]));
    let tls_pki = pki.clone();
    let mut cluster = TestCluster::start_with_configs(3, move |config| {
        fast(config);
        config.tls = Some(tls_pki.node_tls(config.node_id, false));
    })
    .await;
    let leader = cluster.leader().await;
    let addr = cluster.slots[leader].client;
    let mut locks = LocksClient::new(tls_channel(addr, pki.client_tls(None)).await.unwrap());
    let session = open_session(&mut locks, 7, 10_000).await;
    assert!(try_lock(&mut locks, session, "mtls/x", 1).await.is_some());
    let applied = cluster.running(leader).node().status().applied_index;
    wait_applied(&cluster, &[0, 1, 2], applied).await;

    // A new election over mTLS: stop the leader, the others elect one of themselves.
    cluster.stop(leader).await;
    let next = cluster.leader().await;
    assert_ne!(next, leader);
    // And the old leader rejoins over mTLS and catches up.
    cluster.restart(leader).await;
    let applied = cluster.running(next).node().status().applied_index;
    wait_applied(&cluster, &[0, 1, 2], applied).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_a_certificate_of_another_ca_cannot_join_or_send_raft_messages() {
    let pki = Arc::new(TestPki::new(&[1, 2, 3], &[]));
    let rogue = Arc::new(TestPki::new(&[3], &[]));
    let (tls_pki, tls_rogue) = (pki.clone(), rogue.clone());
    // Node 3 trusts the cluster's CA but presents a certificate from another one.
    let mut cluster = TestCluster::start_with_configs(3, move |config| {
        fast(config);
        let mut tls = tls_pki.node_tls(config.node_id, false);
        if config.node_id == 3 {
            let (cert, key) = tls_rogue.node(3);
            tls.peer_cert = Some(cert);
            tls.peer_key = Some(key);
        }
        config.tls = Some(tls);
    })
    .await;

    // Nodes 1 and 2 form a quorum of the three and elect one of themselves.
    let leader = wait_for_leader_among(&cluster, &[0, 1]).await;
    assert_ne!(leader, 2);
    let mut locks = LocksClient::new(
        tls_channel(cluster.slots[leader].client, pki.client_tls(None))
            .await
            .unwrap(),
    );
    let session = open_session(&mut locks, 9, 10_000).await;
    assert!(try_lock(&mut locks, session, "rogue/x", 1).await.is_some());
    wait_applied(&cluster, &[0, 1], 1).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    // Node 3 never receives an entry and knows no leader; the leader has matched none of
    // its log.
    let rogue_status = cluster.running(2).node().status();
    assert_eq!(rogue_status.last_log_index, 0, "{rogue_status:?}");
    assert_eq!(rogue_status.applied_index, 0, "{rogue_status:?}");
    assert_ne!(rogue_status.state, "Leader");
    let metrics = cluster
        .running(leader)
        .node()
        .raft()
        .metrics()
        .borrow()
        .clone();
    let matched = metrics
        .replication
        .as_ref()
        .and_then(|r| r.get(&3).cloned())
        .flatten();
    assert_eq!(matched, None, "the leader replicated to the rogue node");

    // Its Raft messages are refused at the handshake, on every node.
    let (cert, key) = rogue.node(3);
    let rogue_identity = Identity::from_pem(rogue.read(&cert), rogue.read(&key));
    let cluster_ca = Certificate::from_pem(pki.read(&pki.ca()));
    for index in [0, 1] {
        let peer = cluster.slots[index].peer;
        let tls = ClientTlsConfig::new()
            .ca_certificate(cluster_ca.clone())
            .identity(rogue_identity.clone());
        assert_peer_refused(peer, tls).await;
        assert_link_refused(peer, Some(link_tls(&pki, &rogue.node(3)))).await;
        // Nor is a caller without any certificate served.
        let tls = ClientTlsConfig::new().ca_certificate(cluster_ca.clone());
        assert_peer_refused(peer, tls).await;
        assert_link_refused(peer, Some(link_tls_without_certificate(&pki))).await;
        // A link from a cluster node's certificate is (the control).
        assert_link_served(peer, link_tls(&pki, &pki.node(1))).await;
    }
    // A caller with a node certificate of the cluster's CA is served (the control).
    let (cert, key) = pki.node(1);
    let good = ClientTlsConfig::new()
        .ca_certificate(cluster_ca.clone())
        .identity(Identity::from_pem(pki.read(&cert), pki.read(&key)));
    let channel = tls_channel(cluster.slots[leader].peer, good).await.unwrap();
    let info = PeerClient::new(channel)
        .node_info(fencelock_proto::peer::NodeInfoRequest {})
        .await
        .expect("a cluster node is served")
        .into_inner();
    assert_eq!(info.node_id, cluster.slots[leader].id);

    // The cluster does not count node 3: with the other good node down, the leader has
    // no quorum and steps down from serving.
    let other = 1 - leader;
    cluster.stop(other).await;
    let lost = tokio::time::timeout(SETTLE, cluster.running(leader).node().leadership_lost()).await;
    assert!(lost.is_ok(), "leader kept a quorum with the rogue node");
    assert_eq!(cluster.running(2).node().status().last_log_index, 0);
    cluster.shutdown().await;
}

/// The index of the node that the nodes at `indexes` agree leads.
async fn wait_for_leader_among(cluster: &TestCluster, indexes: &[usize]) -> usize {
    let deadline = Instant::now() + SETTLE;
    loop {
        let leaders: Vec<Option<u64>> = indexes
            .iter()
            .map(|i| cluster.running(*i).node().status().leader_id)
            .collect();
        if let Some(Some(leader)) = leaders.first()
            && leaders.iter().all(|l| *l == Some(*leader))
        {
            let index = cluster.slots.iter().position(|s| s.id == *leader).unwrap();
            if cluster.running(index).node().status().state == "Leader" {
                return index;
            }
        }
        assert!(Instant::now() < deadline, "no leader among {indexes:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `NodeInfo` call to the peer listener at `addr` with `tls` fails at the handshake,
/// before the service sees it.
async fn assert_peer_refused(addr: SocketAddr, tls: ClientTlsConfig) {
    let result: Result<_, Failure> = async {
        let channel = tls_channel(addr, tls).await?;
        let mut request = tonic::Request::new(fencelock_proto::peer::NodeInfoRequest {});
        request.set_timeout(Duration::from_secs(3));
        Ok(PeerClient::new(channel).node_info(request).await?)
    }
    .await;
    assert_refused(result, "peer with a foreign or no certificate");
}

/// Link TLS as a node with `identity` (certificate, key) that trusts `pki`'s CA.
fn link_tls(pki: &TestPki, identity: &(std::path::PathBuf, std::path::PathBuf)) -> LinkClientTls {
    let config = TlsConfig {
        peer_cert: Some(identity.0.clone()),
        peer_key: Some(identity.1.clone()),
        peer_ca: Some(pki.ca()),
        ..TlsConfig::default()
    };
    NodeTls::load(&config)
        .expect("TLS settings")
        .peer_link_client
        .expect("peer TLS")
}

/// Link TLS that trusts `pki`'s CA but presents no certificate.
fn link_tls_without_certificate(pki: &TestPki) -> LinkClientTls {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&pki.read(&pki.ca())) {
        roots.add(ca.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    LinkClientTls {
        config: Arc::new(config),
        server_name: None,
    }
}

/// A vote over a new Raft link to `addr`, with `tls` (plaintext when `None`).
async fn link_vote(addr: SocketAddr, tls: Option<LinkClientTls>) -> Result<Vec<u8>, LinkError> {
    let vote = openraft::raft::VoteRequest::<NodeId> {
        vote: openraft::Vote::new(1, 9),
        last_log_id: None,
    };
    LinkPool::new(tls, 1 << 20)
        .call(
            &addr.to_string(),
            &encode_frame(FrameKind::Vote, &vote).unwrap(),
            Duration::from_secs(3),
        )
        .await
}

/// A Raft link to `addr` with `tls` is refused before the node reads a message.
async fn assert_link_refused(addr: SocketAddr, tls: Option<LinkClientTls>) {
    match link_vote(addr, tls).await {
        Err(LinkError::Unreachable { .. }) => {}
        other => panic!("expected the link to be refused at the handshake, got {other:?}"),
    }
}

/// A Raft link to `addr` with `tls` is served: the vote gets Raft's answer.
async fn assert_link_served(addr: SocketAddr, tls: LinkClientTls) {
    let reply = link_vote(addr, Some(tls)).await.expect("a served link");
    let answer: Result<openraft::raft::VoteResponse<NodeId>, openraft::error::RaftError<NodeId>> =
        postcard::from_bytes(&reply).expect("Raft's answer");
    answer.expect("a vote response");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_stop_start_up_naming_the_file() {
    let pki = TestPki::new(&[1], &[]);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let (cert, key) = pki.node(1);
    let cases = [
        (
            TlsConfig {
                cert: Some(missing.clone()),
                key: Some(key.clone()),
                ..TlsConfig::default()
            },
            "missing.pem",
        ),
        (
            TlsConfig {
                cert: Some(cert.clone()),
                key: Some(not_pem.clone()),
                ..TlsConfig::default()
            },
            "not.pem",
        ),
        (
            TlsConfig {
                cert: Some(cert.clone()),
                key: Some(key.clone()),
                peer_ca: Some(not_pem.clone()),
                ..TlsConfig::default()
            },
            "not.pem",
        ),
    ];
    for (tls, named) in cases {
        let config = fencelock_server::config::ServerConfig {
            network: NetworkConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                peer_listen: "127.0.0.1:0".parse().unwrap(),
                admin_listen: None,
                ..NetworkConfig::default()
            },
            data_dir: dir.path().join("data"),
            tls: Some(tls),
            ..Default::default()
        };
        match fencelock_server::startup::start(config).await {
            Err(StartError::Tls(message)) => assert!(message.contains(named), "{message}"),
            Err(other) => panic!("expected a TLS error naming {named}, got {other}"),
            Ok(_) => panic!("started with a bad TLS file ({named})"),
        }
    }
    // Settings that do not go together are a configuration error.
    let half = fencelock_server::config::ServerConfig {
        tls: Some(TlsConfig {
            cert: Some(cert),
            ..TlsConfig::default()
        }),
        ..Default::default()
    };
    assert!(
        half.validate()
            .unwrap_err()
            .contains("tls.cert and tls.key")
    );
}
