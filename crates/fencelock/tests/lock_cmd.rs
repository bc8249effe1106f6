//! `fencelock lock` and `fencelock elect`, run as a real process against an in-process
//! cluster: the environment CMD gets, exit codes, lease loss, signals, and the lock
//! being released on every exit path.

mod cli_client_common;

use cli_client_common::*;
use fencelock_client::election;
use nix::sys::signal::Signal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_runs_cmd_with_the_env_and_passes_its_exit_code() {
    let cluster = TestCluster::start(1).await;
    let endpoints = cluster.endpoints();
    let client = connect(&cluster).await;
    let run = fencelock(
        &endpoints,
        &[
            "lock",
            "jobs/env",
            "--",
            "sh",
            "-c",
            "echo \"$FENCELOCK_TOKEN|$FENCELOCK_LOCK|$FENCELOCK_SESSION|$FENCELOCK_ENDPOINTS\"; exit 7",
        ],
    )
    .await;
    assert_eq!(run.code, 7, "{run:?}");
    let fields: Vec<&str> = run.stdout.trim().split('|').collect();
    assert_eq!(fields.len(), 4, "{run:?}");
    assert!(fields[0].parse::<u64>().unwrap() > 0, "token: {run:?}");
    assert_eq!(fields[1], "jobs/env");
    assert!(fields[2].parse::<u64>().unwrap() > 0, "session: {run:?}");
    assert_eq!(fields[3], endpoints.join(","));
    // Released and the session closed.
    wait_free(&client, "jobs/env").await;
    let status = client.status().await.unwrap();
    assert_eq!(status.sessions, 0, "the session was closed");

    // Success, and a CMD killed by a signal (128 + N).
    let ok = fencelock(&endpoints, &["lock", "jobs/env", "--", "true"]).await;
    assert_eq!(ok.code, 0, "{ok:?}");
    let killed = fencelock(
        &endpoints,
        &["lock", "jobs/env", "--", "sh", "-c", "kill -TERM $$"],
    )
    .await;
    assert_eq!(killed.code, 128 + 15, "{killed:?}");
    // A CMD that does not exist.
    let missing = fencelock(&endpoints, &["lock", "jobs/env", "--", "/no/such/command"]).await;
    assert_eq!(missing.code, 127, "{missing:?}");
    assert_eq!(missing.stderr.lines().count(), 1, "{missing:?}");
    wait_free(&client, "jobs/env").await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_gives_would_block_or_timed_out_and_leaves_no_waiter() {
    let cluster = TestCluster::start(1).await;
    let endpoints = cluster.endpoints();
    let client = connect(&cluster).await;
    let session = client.session(Duration::from_secs(10)).await.unwrap();
    let guard = session.lock("jobs/held").await.unwrap();

    let blocked = fencelock(
        &endpoints,
        &["lock", "jobs/held", "--no-wait", "--", "true"],
    )
    .await;
    assert_eq!(blocked.code, 3, "{blocked:?}");
    assert_eq!(blocked.stderr.lines().count(), 1, "one line: {blocked:?}");
    assert!(blocked.stderr.contains("held"), "{blocked:?}");

    let started = Instant::now();
    let timed_out = fencelock(
        &endpoints,
        &["lock", "jobs/held", "--wait", "200ms", "--", "true"],
    )
    .await;
    assert_eq!(timed_out.code, 4, "{timed_out:?}");
    assert_eq!(
        timed_out.stderr.lines().count(),
        1,
        "one line: {timed_out:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // `lock` closed its sessions on both paths: only the test's own is left.
    assert_eq!(client.status().await.unwrap().sessions, 1);

    // acquire's convenience form has the same codes. (A timed-out convenience wait
    // leaves its empty one-lock session until the TTL; the server does not close it.)
    let acquire = fencelock(&endpoints, &["acquire", "jobs/held", "--no-wait"]).await;
    assert_eq!(acquire.code, 3, "{acquire:?}");
    let acquire = fencelock(&endpoints, &["acquire", "jobs/held", "--wait", "200ms"]).await;
    assert_eq!(acquire.code, 4, "{acquire:?}");

    let info = lock_info(&client, "jobs/held").await.unwrap();
    assert_eq!(info.holders.len(), 1);
    assert!(info.waiters.is_empty(), "no waiter left behind: {info:?}");
    guard.release().await.unwrap();
    session.close().await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_terminates_cmd_and_exits_5() {
    let mut cluster = TestCluster::start(1).await;
    let endpoints = cluster.endpoints();
    let client = connect(&cluster).await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let script = format!("echo $$ > {}; exec sleep 30", pid_file.display());
    let child = command(
        &endpoints,
        &[
            "lock",
            "jobs/lost",
            "--ttl",
            "1s",
            "--",
            "sh",
            "-c",
            &script,
        ],
    )
    .spawn()
    .unwrap();
    wait_held(&client, "jobs/lost").await;
    eventually(Duration::from_secs(5), "CMD started", || async {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    // Keepalives now fail: the client's lease runs out.
    drop(client);
    cluster.stop(0).await;
    let started = Instant::now();
    let run = finish(child).await;
    assert_eq!(run.code, 5, "{run:?}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    assert!(run.stderr.contains("lost"), "says why: {run:?}");
    assert!(run.stderr.contains("SIGTERM"), "{run:?}");
    assert!(!alive(pid), "CMD was terminated");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cmd_that_ignores_sigterm_gets_sigkill_after_the_grace_period() {
    let mut cluster = TestCluster::start(1).await;
    let endpoints = cluster.endpoints();
    let client = connect(&cluster).await;
    let child = command(
        &endpoints,
        &[
            "lock",
            "jobs/stubborn",
            "--ttl",
            "1s",
            "--kill-after",
            "500ms",
            "--",
            "sh",
            "-c",
            "trap '' TERM; while :; do sleep 0.1; done",
        ],
    )
    .spawn()
    .unwrap();
    wait_held(&client, "jobs/stubborn").await;
    drop(client);
    cluster.stop(0).await;
    let run = finish(child).await;
    assert_eq!(run.code, 5, "{run:?}");
    assert!(run.stderr.contains("SIGKILL"), "{run:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_are_forwarded_and_the_lock_is_released() {
    let cluster = TestCluster::start(1).await;
    let endpoints = cluster.endpoints();
    let client = connect(&cluster).await;

    // SIGTERM to fencelock reaches CMD; fencelock exits as CMD did and releases.
    let child = command(&endpoints, &["lock", "jobs/signal", "--", "sleep", "30"])
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    wait_held(&client, "jobs/signal").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(pid, Signal::SIGTERM);
    let run = finish(child).await;
    assert_eq!(run.code, 128 + 15, "{run:?}");
    wait_free(&client, "jobs/signal").await;

    // Ctrl-C while waiting withdraws the wait and exits 130.
    let session = client.session(Duration::from_secs(10)).await.unwrap();
    let guard = session.lock("jobs/signal").await.unwrap();
    let waiting = command(&endpoints, &["lock", "jobs/signal", "--", "true"])
        .spawn()
        .unwrap();
    let pid = waiting.id().unwrap();
    eventually(Duration::from_secs(10), "queued", || async {
        lock_info(&client, "jobs/signal")
            .await
            .is_some_and(|l| l.waiters.len() == 1)
    })
    .await;
    signal(pid, Signal::SIGINT);
    let run = finish(waiting).await;
    assert_eq!(run.code, 130, "{run:?}");
    eventually(Duration::from_secs(5), "waiter withdrawn", || async {
        lock_info(&client, "jobs/signal")
            .await
            .is_some_and(|l| l.waiters.is_empty())
    })
    .await;
    guard.release().await.unwrap();
    session.close().await.unwrap();
    wait_free(&client, "jobs/signal").await;
    eventually(Duration::from_secs(5), "no session left", || async {
        client.status().await.unwrap().sessions == 0
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_runs_cmd_while_leading_and_resigns_when_it_exits() {
    let cluster = TestCluster::start(1).await;
    let endpoints = cluster.endpoints();
    let client = connect(&cluster).await;
    let child = command(
        &endpoints,
        &[
            "elect",
            "svc/leader",
            "--value",
            "node-a:9000",
            "--",
            "sh",
            "-c",
            "echo $FENCELOCK_TOKEN; sleep 1",
        ],
    )
    .spawn()
    .unwrap();
    eventually(Duration::from_secs(10), "leading", || async {
        election::leader(&client, "svc/leader")
            .await
            .unwrap()
            .is_some_and(|l| l.value == b"node-a:9000")
    })
    .await;
    let run = finish(child).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.trim().parse::<u64>().unwrap() > 0, "{run:?}");
    assert_eq!(election::leader(&client, "svc/leader").await.unwrap(), None);
    cluster.shutdown().await;
}
