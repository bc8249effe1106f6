//! `lock` with several names, `--permits`, `--reentrant` and `--lock-delay`, and what
//! `describe` shows of them, run as a real process against an in-process cluster.

mod cli_client_common;

use cli_client_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_takes_several_names_at_once_and_gives_cmd_a_token_each() {
    let cluster = TestCluster::start(1).await;
    let endpoints = cluster.endpoints();
    let client = connect(&cluster).await;
    let run = fencelock(
        &endpoints,
        &[
            "lock",
            "acct/b",
            "acct/a",
            "acct/c",
            "--",
            "sh",
            "-c",
            "echo \"$FENCELOCK_LOCK|$FENCELOCK_TOKEN\"",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let (locks, tokens) = run.stdout.trim().split_once('|').expect("two fields");
    assert_eq!(locks, "acct/b,acct/a,acct/c");
    let tokens: Vec<u64> = tokens
        .split(',')
        .map(|t| t.parse().expect("a token"))
        .collect();
    assert_eq!(tokens.len(), 3, "{run:?}");
    assert!(tokens.iter().all(|&t| t > 0));
    for name in ["acct/a", "acct/b", "acct/c"] {
        wait_free(&client, name).await;
    }
    // One of them held elsewhere: --no-wait exits 3 and takes none.
    let session = client.session(Duration::from_secs(30)).await.unwrap();
    let held = session.lock("acct/c").await.unwrap();
    let blocked = fencelock(
        &endpoints,
        &["lock", "acct/a", "acct/c", "--no-wait", "--", "true"],
    )
    .await;
    assert_eq!(blocked.code, 3, "{blocked:?}");
    assert!(
        lock_info(&client, "acct/a").await.is_none(),
        "a was not taken"
    );
    held.release().await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_semaphore_from_the_cli_and_describe_shows_permits_and_hold_times() {
    let cluster = TestCluster::start(1).await;
    let endpoints = cluster.endpoints();
    let client = connect(&cluster).await;
    let holder = client.session(Duration::from_secs(30)).await.unwrap();
    let _permit = holder
        .acquire(
            "pool/db",
            fencelock_client::AcquireOptions::semaphore(3).weight(2),
        )
        .await
        .unwrap()
        .granted()
        .expect("two permits");
    // One permit is left: weight 1 fits, weight 2 does not.
    let fits = fencelock(
        &endpoints,
        &[
            "lock",
            "pool/db",
            "--permits",
            "3",
            "--no-wait",
            "--",
            "true",
        ],
    )
    .await;
    assert_eq!(fits.code, 0, "{fits:?}");
    let too_heavy = fencelock(
        &endpoints,
        &[
            "lock",
            "pool/db",
            "--permits",
            "3",
            "--weight",
            "2",
            "--no-wait",
            "--",
            "true",
        ],
    )
    .await;
    assert_eq!(too_heavy.code, 3, "{too_heavy:?}");
    // Another limit: one line naming both, exit 1.
    let mismatch = fencelock(
        &endpoints,
        &[
            "lock",
            "pool/db",
            "--permits",
            "4",
            "--no-wait",
            "--",
            "true",
        ],
    )
    .await;
    assert_eq!(mismatch.code, 1, "{mismatch:?}");
    assert!(mismatch.stderr.contains("permit"), "{mismatch:?}");

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let described = fencelock(&endpoints, &["--output", "json", "describe", "pool/db"]).await;
    assert_eq!(described.code, 0, "{described:?}");
    let json = described.json();
    assert_eq!(json["permits"], 3);
    assert_eq!(json["permits_used"], 2);
    assert_eq!(json["permits_free"], 1);
    assert_eq!(json["holders"][0]["weight"], 2);
    assert_eq!(json["holders"][0]["hold_count"], 1);
    assert!(
        json["holders"][0]["held_for_ms"].as_u64().unwrap() >= 1_000,
        "{json}"
    );
    assert!(json["lock_delay"].is_null());
    let human = fencelock(&endpoints, &["describe", "pool/db"]).await;
    assert!(
        human.stdout.contains("permits:  2 used, 1 free (of 3)"),
        "{human:?}"
    );
    assert!(human.stdout.contains("held for 1s"), "{human:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_with_a_lock_delay_and_a_reentrant_flag_parses_and_reports() {
    let cluster = TestCluster::start(1).await;
    let endpoints = cluster.endpoints();
    let acquired = fencelock(
        &endpoints,
        &[
            "--output",
            "json",
            "acquire",
            "delay/x",
            "--ttl",
            "30s",
            "--lock-delay",
            "10s",
            "--reentrant",
        ],
    )
    .await;
    assert_eq!(acquired.code, 0, "{acquired:?}");
    let described = fencelock(&endpoints, &["--output", "json", "describe", "delay/x"]).await;
    let json = described.json();
    assert_eq!(json["holders"][0]["lock_delay_ms"], 10_000, "{json}");
    // A bad flag value is a usage error, exit 2.
    let bad = fencelock(
        &endpoints,
        &["lock", "delay/y", "--permits", "0", "--", "true"],
    )
    .await;
    assert_eq!(bad.code, 2, "{bad:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_proclaims_the_value_file_s_new_content_without_resigning() {
    let cluster = TestCluster::start(1).await;
    let endpoints = cluster.endpoints();
    let client = connect(&cluster).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("address");
    std::fs::write(&file, "10.0.0.1:5432\n").unwrap();
    let path = file.to_str().unwrap().to_owned();
    // CMD writes the file (a new address), then waits to be stopped.
    let script = format!("echo $FENCELOCK_TOKEN; echo 10.0.0.2:5432 > {path}; sleep 30");
    let child = command(
        &endpoints,
        &[
            "elect",
            "svc/db",
            "--value-file",
            &path,
            "--",
            "sh",
            "-c",
            &script,
        ],
    )
    .spawn()
    .unwrap();
    let pid = child.id().expect("pid");
    eventually(
        Duration::from_secs(20),
        "the new value proclaimed",
        || async {
            fencelock_client::election::leader(&client, "svc/db")
                .await
                .unwrap()
                .is_some_and(|leader| leader.value == b"10.0.0.2:5432")
        },
    )
    .await;
    let first = fencelock_client::election::leader(&client, "svc/db")
        .await
        .unwrap()
        .expect("a leader")
        .token;
    signal(pid, nix::sys::signal::Signal::SIGTERM);
    let run = finish(child).await;
    assert_eq!(run.code, 128 + 15, "{run:?}");
    // The same term: the token CMD got when it started leading, no resign in between.
    assert_eq!(
        run.stdout.trim().parse::<u64>().ok(),
        Some(first.0),
        "{run:?}"
    );
    wait_free(&client, "svc/db").await;
    cluster.shutdown().await;
}
