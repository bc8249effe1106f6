//! The one-call client commands, run as a real process against an in-process cluster:
//! their JSON output parses and has the right fields, and each error case gives its
//! documented exit code with a one-line message.

mod cli_client_common;

use cli_client_common::*;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_verify_describe_list_release_in_json() {
    let cluster = TestCluster::start(1).await;
    let e = cluster.endpoints();
    let json = ["--output", "json"];

    let acquired = fencelock(
        &e,
        &[
            &json[..],
            &[
                "acquire",
                "jobs/report",
                "--ttl",
                "30s",
                "--value",
                "cron@a",
            ],
        ]
        .concat(),
    )
    .await;
    assert_eq!(acquired.code, 0, "{acquired:?}");
    let acquired = acquired.json();
    let token = acquired["token"].as_u64().expect("token");
    let session = acquired["session"].as_u64().expect("session");
    assert_eq!(acquired["name"], "jobs/report");
    assert_eq!(acquired["mode"], "exclusive");
    assert_eq!(acquired["ttl_ms"], 30_000);
    // Counted from the request, less the 3 s safety margin.
    let remaining = acquired["remaining_ms"].as_u64().expect("remaining_ms");
    assert!(remaining > 0 && remaining <= 27_000, "{remaining}");
    let (t, s) = (token.to_string(), session.to_string());

    let verified = fencelock(
        &e,
        &[&json[..], &["verify", "jobs/report", "--token", &t]].concat(),
    )
    .await;
    assert_eq!(verified.code, 0, "{verified:?}");
    let verified = verified.json();
    assert_eq!(verified["current"], true);
    assert_eq!(verified["current_token"], token);
    assert_eq!(verified["advisory"], true);

    let described = fencelock(&e, &[&json[..], &["describe", "jobs/report"]].concat()).await;
    assert_eq!(described.code, 0, "{described:?}");
    let described = described.json();
    assert_eq!(described["held"], true);
    assert_eq!(described["holders"][0]["token"], token);
    assert_eq!(described["holders"][0]["session"], session);
    assert_eq!(described["holders"][0]["value"], "cron@a");
    assert!(described["revision"].as_u64().unwrap() > 0);

    let listed = fencelock(&e, &[&json[..], &["list", "jobs/"]].concat()).await;
    assert_eq!(listed.code, 0, "{listed:?}");
    let listed = listed.json();
    assert_eq!(listed["count"], 1);
    assert_eq!(listed["locks"][0]["name"], "jobs/report");
    assert_eq!(listed["locks"][0]["holders"][0]["token"], token);
    let none = fencelock(&e, &[&json[..], &["list", "other/"]].concat()).await;
    assert_eq!(none.json()["count"], 0);

    // Human output is aligned text, not JSON.
    let human = fencelock(&e, &["describe", "jobs/report"]).await;
    assert!(human.stdout.contains("state:    held"), "{human:?}");
    assert!(human.stdout.contains("SESSION"), "{human:?}");

    // A wrong token is refused with exit 1 and one line.
    let wrong = fencelock(
        &e,
        &[
            "release",
            "jobs/report",
            "--token",
            "999999",
            "--session",
            &s,
        ],
    )
    .await;
    assert_eq!(wrong.code, 1, "{wrong:?}");
    assert_eq!(wrong.stderr.lines().count(), 1, "{wrong:?}");

    let released = fencelock(
        &e,
        &[
            &json[..],
            &["release", "jobs/report", "--token", &t, "--session", &s],
        ]
        .concat(),
    )
    .await;
    assert_eq!(released.code, 0, "{released:?}");
    assert_eq!(released.json()["released"], true);

    // Now the token is stale (exit 6) and the lock free (describe --fail-if-free: 7).
    let stale = fencelock(
        &e,
        &[&json[..], &["verify", "jobs/report", "--token", &t]].concat(),
    )
    .await;
    assert_eq!(stale.code, 6, "{stale:?}");
    assert_eq!(stale.json()["current"], false);
    let human_stale = fencelock(&e, &["verify", "jobs/report", "--token", &t]).await;
    assert_eq!(human_stale.code, 6);
    assert!(human_stale.stderr.contains("advisory"), "{human_stale:?}");
    let free = fencelock(&e, &[&json[..], &["describe", "jobs/report"]].concat()).await;
    assert_eq!(free.code, 0);
    assert_eq!(free.json()["held"], false);
    let fail = fencelock(&e, &["describe", "jobs/report", "--fail-if-free"]).await;
    assert_eq!(fail.code, 7, "{fail:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_json_lines_and_stops_after_count() {
    let cluster = TestCluster::start(1).await;
    let e = cluster.endpoints();
    let client = connect(&cluster).await;
    let mut child = command(
        &e,
        &["--output", "json", "watch", "jobs/watched", "--count", "2"],
    )
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The stream opens with a resync marker; after it, nothing is missed.
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .expect("a first line");
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first["event"], "resync");

    let session = client.session(Duration::from_secs(10)).await.unwrap();
    let guard = session.lock("jobs/watched").await.unwrap();
    let token = guard.token().0;
    guard.release().await.unwrap();

    let mut events = Vec::new();
    while let Some(line) = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .unwrap()
        .unwrap()
    {
        events.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["event"], "acquired");
    assert_eq!(events[0]["name"], "jobs/watched");
    assert_eq!(events[0]["token"], token);
    assert_eq!(events[0]["session"], session.id().0);
    assert_eq!(events[1]["event"], "released");
    assert_eq!(events[1]["token"], token);
    assert!(events[1]["revision"].as_u64() > events[0]["revision"].as_u64());
    session.close().await.unwrap();
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_and_force_release_in_json() {
    let cluster = TestCluster::start(3).await;
    cluster.leader().await;
    let e = cluster.endpoints();
    let status = fencelock(&e, &["--output", "json", "cluster", "status"]).await;
    assert_eq!(status.code, 0, "{status:?}");
    let status = status.json();
    assert_eq!(status["members"].as_array().unwrap().len(), 3);
    assert!(status["leader_id"].as_u64().is_some(), "{status}");
    assert!(status["term"].as_u64().unwrap() >= 1);
    for field in [
        "node_id",
        "state",
        "commit_index",
        "applied_index",
        "sessions",
        "locks",
        "last_token",
    ] {
        assert!(!status[field].is_null(), "{field} in {status}");
    }
    let version = status["cluster_version"]
        .as_u64()
        .expect("a cluster version");
    assert!(version >= 1, "{status}");
    let human = fencelock(&e, &["cluster", "status"]).await;
    assert!(human.stdout.contains("leader"), "{human:?}");
    assert!(human.stdout.contains("cluster version: "), "{human:?}");

    let acquired = fencelock(&e, &["--output", "json", "acquire", "admin/stuck"]).await;
    assert_eq!(acquired.code, 0, "{acquired:?}");
    let forced = fencelock(&e, &["--output", "json", "force-release", "admin/stuck"]).await;
    assert_eq!(forced.code, 0, "{forced:?}");
    assert_eq!(forced.json()["released"], 1);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_their_exit_codes_and_one_line() {
    // Usage errors: clap's exit 2.
    let none: Vec<String> = vec!["127.0.0.1:1".into()];
    let no_cmd = fencelock(&none, &["lock", "x"]).await;
    assert_eq!(no_cmd.code, 2, "{no_cmd:?}");
    let both = fencelock(
        &none,
        &["lock", "x", "--wait", "1s", "--no-wait", "--", "true"],
    )
    .await;
    assert_eq!(both.code, 2, "{both:?}");
    let bad_duration = fencelock(&none, &["acquire", "x", "--ttl", "soon"]).await;
    assert_eq!(bad_duration.code, 2, "{bad_duration:?}");

    // No node answers: exit 1 (or 4 when a call timed out), one line.
    let unreachable = fencelock(&none, &["--timeout", "500ms", "describe", "x"]).await;
    assert!(matches!(unreachable.code, 1 | 4), "{unreachable:?}");
    assert_eq!(unreachable.stderr.lines().count(), 1, "{unreachable:?}");
    assert!(unreachable.stderr.starts_with("error: "), "{unreachable:?}");

    // An invalid lock name is refused by the server: exit 1, one line.
    let cluster = TestCluster::start(1).await;
    let e = cluster.endpoints();
    let invalid = fencelock(&e, &["describe", "bad\u{7}name"]).await;
    assert_eq!(invalid.code, 1, "{invalid:?}");
    assert_eq!(invalid.stderr.lines().count(), 1, "{invalid:?}");

    // Endpoints from the environment.
    let mut env_command = tokio::process::Command::new(env!("CARGO_BIN_EXE_fencelock"));
    let env_run = env_command
        .args(["--output", "json", "cluster", "status"])
        .env("FENCELOCK_ENDPOINTS", e.join(","))
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    assert_eq!(env_run.status.code(), Some(0), "{env_run:?}");
    let status: serde_json::Value = serde_json::from_slice(&env_run.stdout).unwrap();
    assert!(status["node_id"].as_u64().is_some());

    // The exit codes are in --help.
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_fencelock"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("Exit codes"), "{help}");
    assert!(help.contains("would block"), "{help}");
    cluster.shutdown().await;
}
