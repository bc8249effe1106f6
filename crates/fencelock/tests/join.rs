//! `serve --join-via`: nodes started empty make themselves voters of a running cluster
//! with no `cluster add`, while a lock stays held; a node restarted half-way through its
//! join (a learner) finishes it and is a member once; a voter asks nothing.

use fencelock_client::Client;
use fencelock_proto::v1 as pb;
use fencelock_server::config::ServerConfig;
use fencelock_server::node::Node;
use fencelock_server::startup::{Listeners, start_with_listeners};
use fencelock_server::testing::TestCluster;
use std::time::{Duration, Instant};

/// The config of the node at `index` with `--join-via` naming the first three nodes.
fn join_config(cluster: &TestCluster, index: usize) -> ServerConfig {
    let mut config = cluster.running(index).node().config().clone();
    config.join_via = cluster.endpoints().into_iter().take(3).collect();
    config.join_timeout = Duration::from_secs(60);
    config
}

/// The members (id, voter) that `node` knows, sorted by id.
fn members(node: &Node) -> Vec<(u64, bool)> {
    let mut members: Vec<(u64, bool)> = node
        .status()
        .members
        .iter()
        .map(|m| (m.id, m.voter))
        .collect();
    members.sort_unstable();
    members
}

/// Wait until every running node of `indexes` knows exactly `expected` as members.
async fn wait_for_members(cluster: &TestCluster, indexes: &[usize], expected: &[(u64, bool)]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = indexes
            .iter()
            .all(|&i| members(cluster.running(i).node()) == expected);
        if all {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "members never became {expected:?}: {:?}",
            indexes
                .iter()
                .map(|&i| members(cluster.running(i).node()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_join_through_the_members_and_become_voters() {
    let mut cluster = TestCluster::start(3).await;
    let client = Client::connect(cluster.endpoints()).await.expect("client");
    let session = client
        .session(Duration::from_secs(30))
        .await
        .expect("session");
    let guard = session.lock("held-throughout").await.expect("lock");
    let token = guard.token();

    // Two nodes, started empty, join through the first three: no AddMember by anyone.
    let fourth = cluster.add_joining_node().await;
    let fifth = cluster.add_joining_node().await;
    let (config4, mut config5) = (join_config(&cluster, fourth), join_config(&cluster, fifth));
    // Node 5 gives a DNS name as its peer address, as a Kubernetes pod does.
    let peer_port = cluster.running(fifth).peer_addr().port();
    config5.network.peer_advertise = Some(format!("localhost:{peer_port}"));
    let (joined4, joined5) = tokio::join!(
        fencelock::join::join(cluster.running(fourth).node(), &config4),
        fencelock::join::join(cluster.running(fifth).node(), &config5),
    );
    joined4.expect("node 4 joins");
    joined5.expect("node 5 joins");
    let five_voters: Vec<(u64, bool)> = (1..=5).map(|id| (id, true)).collect();
    wait_for_members(&cluster, &[0, 1, 2, 3, 4], &five_voters).await;

    // The lock stayed held, with the same grant, and every node says so.
    let verification = client
        .verify("held-throughout", token)
        .await
        .expect("verify");
    assert!(verification.current, "the lock was lost: {verification:?}");
    assert!(!session.is_lost(), "the session was lost");

    // A voter that starts again with --join-via asks nothing and changes nothing.
    fencelock::join::join(
        cluster.running(fourth).node(),
        &join_config(&cluster, fourth),
    )
    .await
    .expect("a voter's join is a no-op");
    wait_for_members(&cluster, &[0, 1, 2, 3, 4], &five_voters).await;

    guard.release().await.expect("release");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_restarted_mid_join_ends_up_a_voter_once() {
    let mut cluster = TestCluster::start(3).await;
    let joining = cluster.add_joining_node().await;
    let id = cluster.running(joining).node().id();
    let peer_addr = cluster.running(joining).peer_addr().to_string();

    // The first half of a join: the node is added as a learner, then it stops before it
    // is made a voter.
    // The node that leads, by the first node's account (the empty node knows none).
    let deadline = Instant::now() + Duration::from_secs(60);
    let leader = loop {
        if let Some(leader) = cluster.running(0).node().leader() {
            break (leader - 1) as usize;
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    cluster
        .cluster(leader)
        .await
        .add_member(pb::AddMemberRequest {
            id,
            peer_addr,
            learner_only: true,
        })
        .await
        .expect("add as a learner");
    let as_learner = [(1, true), (2, true), (3, true), (id, false)];
    wait_for_members(&cluster, &[0, 1, 2, joining], &as_learner).await;
    let config = join_config(&cluster, joining);
    let (client_addr, peer_addr) = {
        let running = cluster.running(joining);
        (running.client_addr(), running.peer_addr())
    };
    cluster.stop(joining).await;

    // Started again (with data now) and --join-via: it is not a voter yet, so it asks.
    let listeners = Listeners {
        client: std::net::TcpListener::bind(client_addr).expect("rebind client port"),
        peer: std::net::TcpListener::bind(peer_addr).expect("rebind peer port"),
        admin: None,
    };
    let restarted = start_with_listeners(config.clone(), listeners)
        .await
        .expect("restarts");
    fencelock::join::join(restarted.node(), &config)
        .await
        .expect("the join finishes");
    let four_voters = [(1, true), (2, true), (3, true), (id, true)];
    wait_for_members(&cluster, &[0, 1, 2], &four_voters).await;
    assert_eq!(members(restarted.node()), four_voters);
    restarted.shutdown().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_join_that_cannot_reach_the_cluster_gives_up_at_its_timeout() {
    let mut cluster = TestCluster::start(1).await;
    let joining = cluster.add_joining_node().await;
    let unreachable = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = unreachable.local_addr().expect("addr");
    drop(unreachable);
    let mut config = join_config(&cluster, joining);
    config.join_via = vec![addr.to_string()];
    config.join_timeout = Duration::from_secs(2);
    let error = fencelock::join::join(cluster.running(joining).node(), &config)
        .await
        .expect_err("no cluster there");
    assert!(
        format!("{error:#}").contains("could not join the cluster"),
        "{error:#}"
    );
    cluster.shutdown().await;
}

/// A `fencelock serve` process, killed (by its own PID) when dropped.
struct Process {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Process {
    fn serve(dir: &std::path::Path, id: u64, client: &str, peer: &str, extra: &[&str]) -> Process {
        let log = dir.join(format!("node-{id}.log"));
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_fencelock"))
            .args(["serve", "--id", &id.to_string(), "--no-admin"])
            .args(["--listen", client, "--peer-listen", peer])
            .arg("--data-dir")
            .arg(dir.join(format!("data-{id}")))
            .args(["--heartbeat-ms", "50", "--election-timeout-ms", "300"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn fencelock");
        Process { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until the cluster reports exactly `expected` as (id, voter) members.
async fn wait_for_status(client: &Client, expected: &[(u64, bool)]) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let seen = match client.status().await {
            Ok(status) => {
                let mut seen: Vec<(u64, bool)> =
                    status.members.iter().map(|m| (m.id, m.voter)).collect();
                seen.sort_unstable();
                seen
            }
            Err(_) => Vec::new(),
        };
        if seen == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "members {seen:?}, not {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_joins_with_join_via_and_ignores_it_once_a_voter() {
    let dir = tempfile::tempdir().expect("temp dir");
    let free = || {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").to_string()
    };
    let clients: Vec<String> = (0..4).map(|_| free()).collect();
    let peers: Vec<String> = (0..4).map(|_| free()).collect();
    let initial = format!("--peers=1={},2={},3={}", peers[0], peers[1], peers[2]);
    let _voters: Vec<Process> = (0..3)
        .map(|i| {
            Process::serve(
                dir.path(),
                i as u64 + 1,
                &clients[i],
                &peers[i],
                &[&initial],
            )
        })
        .collect();
    let client = Client::connect(clients[..3].to_vec())
        .await
        .expect("client");
    wait_for_status(&client, &[(1, true), (2, true), (3, true)]).await;

    let join_via = format!("--join-via={}", clients[..3].join(","));
    let join = [join_via.as_str(), "--join-timeout", "120"];
    let fourth = Process::serve(dir.path(), 4, &clients[3], &peers[3], &join);
    let four_voters = [(1, true), (2, true), (3, true), (4, true)];
    wait_for_status(&client, &four_voters).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !fourth.log().contains("joined the cluster as a voter") {
        assert!(Instant::now() < deadline, "log: {}", fourth.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Started again with the same flags: a voter asks nothing.
    drop(fourth);
    let again = Process::serve(dir.path(), 4, &clients[3], &peers[3], &join);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !again.log().contains("already a voter") {
        assert!(Instant::now() < deadline, "log: {}", again.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_status(&client, &four_voters).await;
}

#[test]
fn join_via_is_checked_and_implies_join() {
    use clap::Parser;
    use fencelock_server::config::Bootstrap;
    // In the config file it needs `bootstrap = "Join"`: a node that would form a cluster
    // of its own instead of joining is refused.
    let config = ServerConfig {
        join_via: vec!["127.0.0.1:7001".into()],
        ..ServerConfig::default()
    };
    let error = config
        .validate()
        .expect_err("join_via with a single-node bootstrap");
    assert!(error.contains("join_via"), "{error}");
    let config = ServerConfig {
        bootstrap: Bootstrap::Join,
        ..config
    };
    config.validate().expect("join_via with Join");

    // The flag implies --join, and cannot go with --peers.
    let parse = |args: &[&str]| {
        fencelock::cli::Cli::try_parse_from(args.iter().copied()).map(|cli| match cli.command {
            fencelock::cli::Command::Serve(serve) => serve.to_config().expect("valid"),
            _ => panic!("not serve"),
        })
    };
    let config = parse(&[
        "fencelock",
        "serve",
        "--id",
        "4",
        "--join-via",
        "a.example:7001,b.example:7001",
        "--join-timeout",
        "30",
    ])
    .expect("parses");
    assert_eq!(config.bootstrap, Bootstrap::Join);
    assert_eq!(config.join_via, ["a.example:7001", "b.example:7001"]);
    assert_eq!(config.join_timeout, Duration::from_secs(30));
    assert!(
        parse(&[
            "fencelock",
            "serve",
            "--join-via",
            "a.example:7001",
            "--peers",
            "1=a.example:7101"
        ])
        .is_err()
    );
    assert!(parse(&["fencelock", "serve", "--join-via", "no-port"]).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_joins_over_tls_with_its_own_certificate() {
    use fencelock_server::testing::{TestPki, fast};
    let pki = std::sync::Arc::new(TestPki::new(&[1, 2, 3, 4], &[]));
    let certs = pki.clone();
    // Client listeners require a certificate of the cluster CA (mutual TLS): the join
    // calls present the node's own.
    let mut cluster = TestCluster::start_with_configs(3, move |config| {
        fast(config);
        config.tls = Some(certs.node_tls(config.node_id, true));
    })
    .await;
    let joining = cluster.add_joining_node().await;
    fencelock::join::join(
        cluster.running(joining).node(),
        &join_config(&cluster, joining),
    )
    .await
    .expect("joins over TLS");
    let four_voters = [(1, true), (2, true), (3, true), (4, true)];
    wait_for_members(&cluster, &[0, 1, 2, joining], &four_voters).await;
    cluster.shutdown().await;
    drop(pki);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_auth_on_a_join_needs_a_token_of_a_superuser() {
    let mut cluster = TestCluster::start(3).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let open = Client::connect(cluster.endpoints()).await.expect("client");
    open.user_add("root", "root-password").await.expect("root");
    open.user_add("alice", "alice-password")
        .await
        .expect("alice");
    open.auth_enable().await.expect("auth on");
    let root = fencelock_client::ClientBuilder::new(cluster.endpoints())
        .credentials("root", "root-password")
        .connect()
        .await
        .expect("root client");
    let token_file = |name: &str, token: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("{token}\n")).expect("write token");
        path
    };
    let joining = cluster.add_joining_node().await;
    let mut config = join_config(&cluster, joining);

    // Without a token, and with a user that may not change the membership, the node
    // stops at once rather than retrying what cannot succeed.
    let error = fencelock::join::join(cluster.running(joining).node(), &config)
        .await
        .expect_err("no credentials");
    assert!(
        format!("{error:#}").contains("--join-token-file"),
        "{error:#}"
    );
    let alice = root.token_create("alice").await.expect("alice's token");
    config.join_token_file = Some(token_file("alice", &alice));
    let error = fencelock::join::join(cluster.running(joining).node(), &config)
        .await
        .expect_err("alice may not");
    assert!(
        format!("{error:#}").contains("--join-token-file"),
        "{error:#}"
    );

    let token = root.token_create("root").await.expect("root's token");
    config.join_token_file = Some(token_file("root", &token));
    fencelock::join::join(cluster.running(joining).node(), &config)
        .await
        .expect("joins with root's token");
    let four_voters = [(1, true), (2, true), (3, true), (4, true)];
    wait_for_members(&cluster, &[0, 1, 2, joining], &four_voters).await;
    cluster.shutdown().await;
}
