//! The admin port's security: every route with and without credentials, with auth off
//! and on, the `/metrics` token and `metrics_open`, and the same over TLS.

use base64::Engine as _;
use fencelock_proto::v1 as pb;
use fencelock_proto::v1::auth_client::AuthClient;
use fencelock_server::config::{NetworkConfig, ServerConfig};
use fencelock_server::startup::{Listeners, RunningNode, start_with_listeners};
use fencelock_server::testing::{TestPki, channel, fast, tls_channel};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls;
use tonic::transport::Channel;

const STATUS_ROUTES: [&str; 4] = ["/", "/status", "/status/locks", "/status/events"];
const METRICS_TOKEN: &str = "prometheus-scrape-token-0123456789abcdef";

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

struct Node {
    running: RunningNode,
    admin: SocketAddr,
    tls: Option<TlsConnector>,
    _dir: tempfile::TempDir,
    _pki: Option<TestPki>,
}

async fn start(tls: bool, metrics_open: bool) -> (Node, Channel) {
    let dir = tempfile::tempdir().expect("temp dir");
    let token_file = dir.path().join("metrics-token");
    std::fs::write(&token_file, format!("{METRICS_TOKEN}\n")).expect("write token");
    let pki = tls.then(|| TestPki::new(&[1], &[]));
    let mut config = ServerConfig {
        network: NetworkConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            peer_listen: "127.0.0.1:0".parse().expect("address"),
            admin_listen: Some("127.0.0.1:0".parse().expect("address")),
            metrics_open,
            metrics_token_file: Some(token_file),
            ..NetworkConfig::default()
        },
        data_dir: dir.path().join("data"),
        ..ServerConfig::default()
    };
    fast(&mut config);
    if let Some(pki) = &pki {
        config.tls = Some(pki.node_tls(1, false));
        config.network.admin_tls = true;
    }
    let listeners = Listeners::bind(&config).expect("bind");
    let running = start_with_listeners(config, listeners)
        .await
        .expect("node starts");
    let admin = running.admin_addr().expect("admin port");
    let client_addr = running.client_addr();
    let connector = pki.as_ref().map(|pki| {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(pki.ca()).expect("CA");
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
            roots.add(cert.expect("CA certificate")).expect("add CA");
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_root_certificates(roots)
        .with_no_client_auth();
        TlsConnector::from(Arc::new(config))
    });
    let grpc = match &pki {
        Some(pki) => tls_channel(client_addr, pki.client_tls(None))
            .await
            .expect("TLS channel"),
        None => channel(client_addr).await,
    };
    let node = Node {
        running,
        admin,
        tls: connector,
        _dir: dir,
        _pki: pki,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.get("/health", None).await != Some(200) {
        assert!(Instant::now() < deadline, "the node never became healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (node, grpc)
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &str) -> Option<u16> {
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.ok()?;
    let text = String::from_utf8_lossy(&response);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

impl Node {
    /// The status code of GET `path` with `authorization`; `None` when no HTTP answer came.
    async fn get(&self, path: &str, authorization: Option<&str>) -> Option<u16> {
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        if let Some(value) = authorization {
            request.push_str(&format!("Authorization: {value}\r\n"));
        }
        request.push_str("\r\n");
        let tcp = TcpStream::connect(self.admin).await.ok()?;
        let answer = async {
            match &self.tls {
                None => exchange(tcp, &request).await,
                Some(connector) => {
                    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
                    let stream = connector.connect(name, tcp).await.ok()?;
                    exchange(stream, &request).await
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), answer)
            .await
            .ok()
            .flatten()
    }

    /// A plaintext request to the port (which speaks TLS): `None` if no HTTP answer.
    async fn get_plaintext(&self, path: &str) -> Option<u16> {
        let tcp = TcpStream::connect(self.admin).await.ok()?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tokio::time::timeout(Duration::from_secs(15), exchange(tcp, &request))
            .await
            .ok()
            .flatten()
    }
}

/// root; reader (read on every lock); narrow (read on "jobs/" only); a bearer token for
/// reader; then auth on. Returns reader's token.
async fn enable_auth(grpc: Channel) -> String {
    let mut auth = AuthClient::new(grpc);
    for (name, password) in [
        ("root", "rootpw"),
        ("reader", "readerpw"),
        ("narrow", "narrowpw"),
    ] {
        auth.user_add(pb::UserAddRequest {
            name: name.into(),
            password: password.into(),
            ..Default::default()
        })
        .await
        .expect("user add");
    }
    for (role, prefix, user) in [("all", "", "reader"), ("jobs", "jobs/", "narrow")] {
        auth.role_add(pb::RoleAddRequest {
            name: role.into(),
            ..Default::default()
        })
        .await
        .expect("role add");
        auth.role_grant(pb::RoleGrantRequest {
            role: role.into(),
            prefix: prefix.into(),
            rights: Some(pb::AuthRights {
                read: true,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("role grant");
        auth.user_grant_role(pb::UserGrantRoleRequest {
            user: user.into(),
            role: role.into(),
            ..Default::default()
        })
        .await
        .expect("grant role");
    }
    let token = auth
        .token_create(pb::TokenCreateRequest {
            user: "reader".into(),
            ..Default::default()
        })
        .await
        .expect("token")
        .into_inner()
        .token;
    auth.enable(pb::AuthEnableRequest {})
        .await
        .expect("auth enable");
    token
}

/// With auth on: the answer of every route to every kind of caller.
async fn check_auth_on(node: &Node, reader_token: &str, metrics_open: bool) {
    let reader = basic("reader", "readerpw");
    let bearer = format!("Bearer {reader_token}");
    let metrics_bearer = format!("Bearer {METRICS_TOKEN}");
    let wrong = basic("reader", "wrong");
    let narrow = basic("narrow", "narrowpw");
    assert_eq!(node.get("/health", None).await, Some(200));
    for path in STATUS_ROUTES {
        assert_eq!(
            node.get(path, None).await,
            Some(401),
            "{path} without credentials"
        );
        assert_eq!(
            node.get(path, Some(&wrong)).await,
            Some(401),
            "{path} wrong password"
        );
        assert_eq!(
            node.get(path, Some(&narrow)).await,
            Some(403),
            "{path} read on a prefix only"
        );
        assert_eq!(
            node.get(path, Some(&metrics_bearer)).await,
            Some(401),
            "{path}: the metrics token opens /metrics only"
        );
        assert_eq!(
            node.get(path, Some(&reader)).await,
            Some(200),
            "{path} basic"
        );
        assert_eq!(
            node.get(path, Some(&bearer)).await,
            Some(200),
            "{path} bearer"
        );
    }
    let open = if metrics_open { 200 } else { 401 };
    assert_eq!(
        node.get("/metrics", None).await,
        Some(open),
        "/metrics without credentials"
    );
    assert_eq!(node.get("/metrics", Some(&metrics_bearer)).await, Some(200));
    assert_eq!(node.get("/metrics", Some(&reader)).await, Some(200));
    assert_eq!(node.get("/metrics", Some(&bearer)).await, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_routes_need_read_and_metrics_a_token_once_auth_is_on() {
    let (node, grpc) = start(false, false).await;
    // Auth off: every route open, as before.
    for path in STATUS_ROUTES.iter().chain(&["/metrics", "/health"]) {
        assert_eq!(
            node.get(path, None).await,
            Some(200),
            "{path} with auth off"
        );
    }
    let token = enable_auth(grpc).await;
    check_auth_on(&node, &token, false).await;
    node.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_open_leaves_only_metrics_open() {
    let (node, grpc) = start(false, true).await;
    let token = enable_auth(grpc).await;
    check_auth_on(&node, &token, true).await;
    node.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_same_rules_hold_and_plaintext_gets_no_answer() {
    let (node, grpc) = start(true, false).await;
    for path in STATUS_ROUTES.iter().chain(&["/metrics", "/health"]) {
        assert_eq!(
            node.get(path, None).await,
            Some(200),
            "{path} over TLS, auth off"
        );
    }
    assert_eq!(
        node.get_plaintext("/health").await,
        None,
        "plaintext HTTP answered"
    );
    let token = enable_auth(grpc).await;
    check_auth_on(&node, &token, false).await;
    node.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_tls_without_a_certificate_stops_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = ServerConfig {
        network: NetworkConfig {
            listen: "127.0.0.1:0".parse().expect("address"),
            peer_listen: "127.0.0.1:0".parse().expect("address"),
            admin_listen: Some("127.0.0.1:0".parse().expect("address")),
            admin_tls: true,
            ..NetworkConfig::default()
        },
        data_dir: dir.path().join("data"),
        ..ServerConfig::default()
    };
    let listeners = Listeners::bind(&config).expect("bind");
    let Err(error) = start_with_listeners(config, listeners).await else {
        panic!("started without a certificate for the admin port");
    };
    assert!(
        error.to_string().contains("admin_tls needs tls.cert"),
        "{error}"
    );
}
