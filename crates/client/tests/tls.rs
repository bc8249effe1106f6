//! TLS: the client speaks TLS to a cluster that serves it (redirects included), a
//! plaintext client is refused, and with client mTLS only a client presenting a
//! certificate of the configured CA gets in.

mod common;
use common::*;
use fencelock_server::testing::{TestPki, fast};
use std::path::Path;
use std::sync::Arc;

/// A cluster of `n` nodes serving TLS to clients (requiring client certificates when
/// `client_mtls`) and mutual TLS between peers, with the certificates in `pki`.
async fn tls_cluster(n: u64, pki: &Arc<TestPki>, client_mtls: bool) -> TestCluster {
    let pki = pki.clone();
    TestCluster::start_with_configs(n, move |config| {
        fast(config);
        config.tls = Some(pki.node_tls(config.node_id, client_mtls));
    })
    .await
}

fn builder(endpoints: Vec<String>) -> ClientBuilder {
    Client::builder(endpoints)
        .connect_timeout(Duration::from_millis(500))
        .call_timeout(Duration::from_secs(2))
        .retry_deadline(Duration::from_secs(10))
}

fn ca_pem(pki: &TestPki) -> Vec<u8> {
    pki.read(&pki.ca())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_locks_and_follows_redirects() {
    let pki = Arc::new(TestPki::new(&[1, 2, 3], &[]));
    let cluster = tls_cluster(3, &pki, false).await;
    let leader = cluster.leader().await;
    // Only a follower is given, as `http://`: the client upgrades it to https, and the
    // leader's redirect address (bare host:port) too.
    let follower = (leader + 1) % 3;
    let endpoint = format!("http://{}", cluster.slots[follower].client);
    let client = builder(vec![endpoint])
        .tls(ca_pem(&pki), None, None)
        .connect()
        .await
        .expect("TLS client connects");
    let session = client.session(Duration::from_secs(5)).await.unwrap();
    let guard = session.lock("tls/a").await.unwrap();
    assert!(client.verify("tls/a", guard.token()).await.unwrap().current);
    guard.release().await.unwrap();
    let status = client.status().await.unwrap();
    assert_eq!(status.members.len(), 3);
    session.close().await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_client_is_refused_where_tls_is_on() {
    let pki = Arc::new(TestPki::new(&[1], &[]));
    let cluster = tls_cluster(1, &pki, false).await;
    cluster.leader().await;
    let refused = builder(cluster.endpoints())
        .retry_deadline(Duration::from_secs(1))
        .connect()
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::Unavailable { .. } | Error::Timeout { .. })
        ),
        "{refused:?}"
    );
    // A client that trusts another CA refuses the node.
    let other = TestPki::new(&[1], &[]);
    let refused = builder(cluster.endpoints())
        .retry_deadline(Duration::from_secs(1))
        .tls(ca_pem(&other), None, None)
        .connect()
        .await;
    assert!(refused.is_err(), "{refused:?}");
    // The right CA, and a name override that the certificate carries.
    let client = builder(cluster.endpoints())
        .tls(ca_pem(&pki), None, Some("localhost"))
        .connect()
        .await
        .expect("TLS client connects");
    client.status().await.unwrap();
    // A name the certificate does not carry is refused.
    let refused = builder(cluster.endpoints())
        .retry_deadline(Duration::from_secs(1))
        .tls(ca_pem(&pki), None, Some("elsewhere.example"))
        .connect()
        .await;
    assert!(refused.is_err(), "{refused:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_mtls_only_a_certificate_of_the_ca_gets_in() {
    let pki = Arc::new(TestPki::new(&[1], &["alice"]));
    let cluster = tls_cluster(1, &pki, true).await;
    cluster.leader().await;

    let (cert, key) = pki.client("alice");
    let client = builder(cluster.endpoints())
        .tls_files(pki.ca(), Some((cert.as_path(), key.as_path())), None)
        .unwrap()
        .connect()
        .await
        .expect("alice connects");
    let session = client.session(Duration::from_secs(5)).await.unwrap();
    session
        .lock("mtls/a")
        .await
        .unwrap()
        .release()
        .await
        .unwrap();

    let no_cert = builder(cluster.endpoints())
        .retry_deadline(Duration::from_secs(1))
        .tls(ca_pem(&pki), None, None)
        .connect()
        .await;
    assert!(no_cert.is_err(), "{no_cert:?}");

    let rogue = TestPki::new(&[], &["mallory"]);
    let (cert, key) = rogue.client("mallory");
    let forged = builder(cluster.endpoints())
        .retry_deadline(Duration::from_secs(1))
        .tls(
            ca_pem(&pki),
            Some((&rogue.read(&cert), &rogue.read(&key))),
            None,
        )
        .connect()
        .await;
    assert!(forged.is_err(), "{forged:?}");

    let missing =
        builder(cluster.endpoints()).tls_files(Path::new("/nonexistent/ca.pem"), None, None);
    match missing {
        Err(Error::Config(message)) => {
            assert!(message.contains("/nonexistent/ca.pem"), "{message}")
        }
        other => panic!("expected a config error, got {:?}", other.map(|_| ())),
    }
    session.close().await.unwrap();
    cluster.shutdown().await;
}
