//! `fencelock snapshot save|inspect|restore`: a backup taken from a live 3-node cluster
//! under load, restored into a new 3-node cluster whose tokens continue above every token
//! the old cluster issued, even after the backup; damaged files refused; `save` refused
//! without `admin`.

mod cli_client_common;

use cli_client_common::*;
use fencelock_client::{AcquireOptions, FencingToken, Wait};
use fencelock_fence::{Fence, MemoryFence};
use fencelock_server::config::ServerConfig;
use fencelock_server::store::backup;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const MAX_SESSIONS: u64 = 777;

fn tweak(config: &mut ServerConfig) {
    fencelock_server::testing::fast(config);
    config.limits.max_sessions = MAX_SESSIONS;
}

fn as_root(args: &[&str]) -> Vec<String> {
    ["--user", "root", "--password", "rootpw"]
        .iter()
        .chain(args)
        .map(|a| (*a).to_owned())
        .collect()
}

async fn run(e: &[String], args: &[String]) -> Run {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fencelock(e, &args).await
}

async fn root_client(endpoints: Vec<String>) -> Client {
    Client::builder(endpoints)
        .connect_timeout(Duration::from_millis(500))
        .call_timeout(Duration::from_secs(3))
        .retry_deadline(Duration::from_secs(20))
        .credentials("root", "rootpw")
        .connect()
        .await
        .expect("connect as root")
}

/// One grant of `name` and its release: the token granted.
async fn grant(client: &Client, name: &str) -> FencingToken {
    let lease = client
        .acquire_with_lease(
            name,
            Duration::from_secs(10),
            AcquireOptions::exclusive().wait(Wait::Timeout(Duration::from_secs(10))),
        )
        .await
        .expect("acquire")
        .expect("granted");
    let token = lease.token;
    client
        .close_session(lease.session_id)
        .await
        .expect("release");
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_cluster_keeps_users_and_continues_tokens_above_the_old_cluster() {
    let old = TestCluster::start_with_configs(3, tweak).await;
    let e = old.endpoints();
    for args in [
        &["user", "add", "root", "--new-password", "rootpw"][..],
        &["user", "add", "alice", "--new-password", "alicepw"],
        &["role", "add", "jobs"],
        &["role", "grant", "jobs", "jobs/", "acquire,release,read"],
        &["user", "grant-role", "alice", "jobs"],
        &["auth", "enable"],
    ] {
        let done = fencelock(&e, args).await;
        assert_eq!(done.code, 0, "{args:?}: {done:?}");
    }
    let root = root_client(e.clone()).await;

    // Bounded load while the backup is taken: grants on a few locks, and a session that
    // holds a lock across the backup.
    let held = root
        .acquire_with_lease(
            "jobs/held",
            Duration::from_secs(30),
            AcquireOptions::default(),
        )
        .await
        .expect("acquire")
        .expect("granted");
    let stop = Arc::new(AtomicBool::new(false));
    let highest = Arc::new(AtomicU64::new(held.token.0));
    let load = {
        let (root, stop, highest) = (root.clone(), stop.clone(), highest.clone());
        tokio::spawn(async move {
            for i in 0..2_000u32 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let token = grant(&root, &format!("jobs/load-{}", i % 4)).await;
                highest.fetch_max(token.0, Ordering::Relaxed);
            }
        })
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("backup.flbk");
    let file_arg = file.display().to_string();

    // Without `admin` on every lock, save is refused.
    let refused = fencelock(
        &e,
        &[
            "--user",
            "alice",
            "--password",
            "alicepw",
            "snapshot",
            "save",
            &file_arg,
        ],
    )
    .await;
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(refused.stderr.contains("permission"), "{refused:?}");
    assert!(!file.exists());

    let saved = run(
        &e,
        &as_root(&["--output", "json", "snapshot", "save", &file_arg]),
    )
    .await;
    assert_eq!(saved.code, 0, "{saved:?}");
    let header = saved.json();
    stop.store(true, Ordering::Relaxed);
    load.await.expect("load task");

    // The old cluster goes on granting after the backup; a fence sees its highest token.
    for _ in 0..3 {
        let token = grant(&root, "jobs/after").await;
        highest.fetch_max(token.0, Ordering::Relaxed);
    }
    let highest = highest.load(Ordering::Relaxed);
    assert!(header["last_token"].as_u64().expect("last_token") < highest);
    let fence = MemoryFence::new();
    fence
        .admit_token("resource", "jobs/x", FencingToken(highest))
        .expect("the old cluster's highest token is admitted");
    drop(held);
    old.shutdown().await;

    // inspect: the header and counts, the checksum verified.
    let inspected = fencelock(&e, &["--output", "json", "snapshot", "inspect", &file_arg]).await;
    assert_eq!(inspected.code, 0, "{inspected:?}");
    let inspected = inspected.json();
    assert_eq!(inspected["users"], 2);
    assert_eq!(inspected["roles"], 1);
    assert_eq!(inspected["checksum"], "ok");
    assert_eq!(inspected["last_token"], header["last_token"]);
    assert!(inspected["sessions"].as_u64().expect("sessions") >= 1);
    let bytes = std::fs::read(&file).expect("read the backup");
    let backup = backup::decode(&bytes).expect("a valid backup");
    assert_eq!(backup.content.state.limits().max_sessions, MAX_SESSIONS);

    // Restore into a new 3-node cluster: every node's data directory rebuilt offline.
    let mut new = TestCluster::start_with_configs(3, tweak).await;
    let peers = new
        .members
        .iter()
        .map(|(id, addr)| format!("{id}={addr}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut cluster_ids = Vec::new();
    for index in 0..3 {
        new.stop(index).await;
        let data_dir = new.slots[index].data_dir.clone();
        std::fs::remove_dir_all(&data_dir).expect("empty the data dir");
        let id = new.slots[index].id.to_string();
        let restored = fencelock(
            &e,
            &[
                "--output",
                "json",
                "snapshot",
                "restore",
                &file_arg,
                "--data-dir",
                &data_dir.display().to_string(),
                "--id",
                &id,
                "--peers",
                &peers,
            ],
        )
        .await;
        assert_eq!(restored.code, 0, "{restored:?}");
        let restored = restored.json();
        assert_eq!(restored["sessions"], 0, "sessions are dropped by default");
        assert_eq!(restored["locks"], 0);
        cluster_ids.push(restored["cluster_id"].clone());
        // A non-empty directory is refused.
        let again = fencelock(
            &e,
            &[
                "snapshot",
                "restore",
                &file_arg,
                "--data-dir",
                &data_dir.display().to_string(),
                "--id",
                &id,
                "--peers",
                &peers,
            ],
        )
        .await;
        assert_ne!(again.code, 0, "{again:?}");
        assert!(again.stderr.contains("not empty"), "{again:?}");
    }
    assert!(cluster_ids.iter().all(|id| *id == cluster_ids[0]));
    assert_ne!(cluster_ids[0], header["cluster_id"], "a new cluster id");
    for index in 0..3 {
        new.restart(index).await;
    }
    new.leader().await;

    // Users, roles and auth came along: alice works with her password, in her prefix.
    let alice = Client::builder(new.endpoints())
        .connect_timeout(Duration::from_millis(500))
        .call_timeout(Duration::from_secs(3))
        .retry_deadline(Duration::from_secs(20))
        .credentials("alice", "alicepw")
        .connect()
        .await
        .expect("connect as alice");
    let first = grant(&alice, "jobs/x").await;
    fence
        .admit_token("resource", "jobs/x", first)
        .expect("the fence admits the new cluster's first grant");
    assert!(
        first.0 > highest,
        "the first grant {first:?} is above the old cluster's highest token {highest}"
    );
    let status = run(
        &new.endpoints(),
        &as_root(&["--output", "json", "auth", "status"]),
    )
    .await;
    assert_eq!(status.code, 0, "{status:?}");
    let status = status.json();
    assert_eq!(status["enabled"], true);
    assert_eq!(status["users"].as_array().expect("users").len(), 2);
    assert_eq!(status["roles"].as_array().expect("roles").len(), 1);
    let limits = new
        .running(0)
        .node()
        .shared()
        .read(|applied| applied.state.limits().max_sessions);
    assert_eq!(limits, MAX_SESSIONS);

    // A node that names another cluster (here: node 3 with the old cluster's id, none)
    // is cut off: it applies nothing the others commit; with its id back, it catches up.
    let id_file = new.slots[2].data_dir.join("cluster-id");
    let id_text = std::fs::read_to_string(&id_file).expect("cluster-id");
    new.stop(2).await;
    std::fs::remove_file(&id_file).expect("remove cluster-id");
    new.restart(2).await;
    let applied =
        |new: &TestCluster, index: usize| new.running(index).node().status().applied_index;
    for i in 0..3 {
        grant(&alice, &format!("jobs/while-apart-{i}")).await;
    }
    let committed = (0..2)
        .map(|index| applied(&new, index))
        .max()
        .expect("two nodes");
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert!(
            applied(&new, 2) < committed,
            "a node of another cluster applied the restored cluster's entries"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    new.stop(2).await;
    std::fs::write(&id_file, &id_text).expect("restore cluster-id");
    new.restart(2).await;
    let until = Instant::now() + Duration::from_secs(30);
    while applied(&new, 2) < committed {
        assert!(
            Instant::now() < until,
            "node 3 never caught up with its id back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A backup of the new cluster names the new cluster id.
    let file2 = dir.path().join("backup2.flbk");
    let saved = run(
        &new.endpoints(),
        &as_root(&[
            "--output",
            "json",
            "snapshot",
            "save",
            &file2.display().to_string(),
        ]),
    )
    .await;
    assert_eq!(saved.code, 0, "{saved:?}");
    assert_eq!(saved.json()["cluster_id"], cluster_ids[0]);
    new.shutdown().await;
}

fn damaged_copy(from: &Path, to: &Path, at: usize) {
    let mut bytes = std::fs::read(from).expect("read");
    let at = at.min(bytes.len() - 1);
    bytes[at] ^= 0x55;
    std::fs::write(to, bytes).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_backup_is_refused_by_inspect_and_restore() {
    let cluster = TestCluster::start(1).await;
    let e = cluster.endpoints();
    let client = connect(&cluster).await;
    grant(&client, "a").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("backup.flbk");
    let saved = fencelock(&e, &["snapshot", "save", &file.display().to_string()]).await;
    assert_eq!(saved.code, 0, "{saved:?}");
    assert!(saved.stdout.contains("last token       1"), "{saved:?}");
    cluster.shutdown().await;

    let size = std::fs::metadata(&file).expect("metadata").len() as usize;
    for at in [0, 4, 20, size / 2, size - 1] {
        let damaged = dir.path().join(format!("damaged-{at}"));
        damaged_copy(&file, &damaged, at);
        let damaged_arg = damaged.display().to_string();
        let inspect = fencelock(&e, &["snapshot", "inspect", &damaged_arg]).await;
        assert_eq!(inspect.code, 1, "{inspect:?}");
        assert!(inspect.stderr.contains("not a valid backup"), "{inspect:?}");
        let data_dir = dir.path().join(format!("restored-{at}"));
        let restore = fencelock(
            &e,
            &[
                "snapshot",
                "restore",
                &damaged_arg,
                "--data-dir",
                &data_dir.display().to_string(),
                "--id",
                "1",
                "--peers",
                "1=127.0.0.1:7101",
            ],
        )
        .await;
        assert_eq!(restore.code, 1, "{restore:?}");
        assert!(restore.stderr.contains("not a valid backup"), "{restore:?}");
        assert!(!data_dir.exists(), "nothing written for a damaged backup");
    }
    // Truncated: refused too.
    let bytes = std::fs::read(&file).expect("read");
    let truncated = dir.path().join("truncated");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let inspect = fencelock(
        &e,
        &["snapshot", "inspect", &truncated.display().to_string()],
    )
    .await;
    assert_eq!(inspect.code, 1, "{inspect:?}");
    assert!(inspect.stderr.contains("checksum mismatch"), "{inspect:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_sessions_keeps_a_holder_until_its_lease_runs_out_under_the_new_leader() {
    let old = TestCluster::start(1).await;
    let client = connect(&old).await;
    let lease = client
        .acquire_with_lease("kept", Duration::from_secs(3), AcquireOptions::default())
        .await
        .expect("acquire")
        .expect("granted");
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("backup.flbk");
    let file_arg = file.display().to_string();
    let saved = fencelock(&old.endpoints(), &["snapshot", "save", &file_arg]).await;
    assert_eq!(saved.code, 0, "{saved:?}");
    old.shutdown().await;

    let mut new = TestCluster::start(1).await;
    new.stop(0).await;
    let data_dir = new.slots[0].data_dir.clone();
    std::fs::remove_dir_all(&data_dir).expect("empty the data dir");
    let peers = format!("1={}", new.members[&1]);
    let restored = fencelock(
        &new.endpoints(),
        &[
            "--output",
            "json",
            "snapshot",
            "restore",
            &file_arg,
            "--data-dir",
            &data_dir.display().to_string(),
            "--id",
            "1",
            "--peers",
            &peers,
            "--keep-sessions",
            "--token-margin",
            "1000",
        ],
    )
    .await;
    assert_eq!(restored.code, 0, "{restored:?}");
    let restored = restored.json();
    assert_eq!(restored["sessions"], 1);
    assert_eq!(restored["token_floor"], lease.token.0 + 1000);
    new.restart(0).await;
    let client = connect(&new).await;
    let held = lock_info(&client, "kept").await.expect("the lock is kept");
    assert_eq!(held.holders[0].token, lease.token);
    // Nobody keeps the old session alive: its lease runs out under the new leader, and
    // the next grant is above the floor.
    wait_free(&client, "kept").await;
    let next = grant(&client, "kept").await;
    assert_eq!(next.0, lease.token.0 + 1001);
    new.shutdown().await;
}
