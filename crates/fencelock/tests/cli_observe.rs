//! `fencelock elect --observe NAME` and `watch --start-revision R`, run as a real process:
//! observe prints the current leader first ("no leader" included), then every change, one
//! JSON object a line; a watch from a revision replays what happened since, no resync.

mod cli_client_common;

use cli_client_common::*;
use fencelock_client::election::Election;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::ChildStdout;

async fn next_json(lines: &mut Lines<BufReader<ChildStdout>>) -> serde_json::Value {
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("a line in time")
        .expect("stdout readable")
        .expect("a line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_observe_prints_the_leader_and_every_change_in_json() {
    let cluster = TestCluster::start(1).await;
    let e = cluster.endpoints();
    let client = connect(&cluster).await;
    let name = "elections/primary";
    let mut child = command(
        &e,
        &[
            "--output",
            "json",
            "elect",
            "--observe",
            name,
            "--count",
            "5",
        ],
    )
    .spawn()
    .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = next_json(&mut lines).await;
    assert_eq!(first["election"], name);
    assert!(first["leader"].is_null(), "{first}");

    let mut terms = Vec::new();
    for value in ["node-a", "node-b"] {
        let session = client.session(Duration::from_secs(10)).await.unwrap();
        let leadership = Election::new(&session, name)
            .campaign(value.as_bytes().to_vec())
            .await
            .unwrap();
        let leading = next_json(&mut lines).await;
        assert_eq!(leading["leader"]["value"], value, "{leading}");
        assert_eq!(leading["leader"]["session"], session.id().0);
        assert_eq!(leading["leader"]["token"], leadership.token().0);
        terms.push(leadership.token().0);
        leadership.resign().await.unwrap();
        let nobody = next_json(&mut lines).await;
        assert!(nobody["leader"].is_null(), "{nobody}");
        session.close().await.unwrap();
    }
    assert!(terms[1] > terms[0]);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_without_observe_still_needs_a_value_and_a_command() {
    let e = vec!["127.0.0.1:1".to_string()];
    let run = fencelock(&e, &["elect", "elections/primary"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    let run = fencelock(&e, &["elect", "--observe", "x", "--value", "v"]).await;
    assert_eq!(run.code, 2, "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_start_revision_replays_past_events_without_a_resync() {
    let cluster = TestCluster::start(1).await;
    let e = cluster.endpoints();
    let client = connect(&cluster).await;
    let before = client.describe("jobs/past").await.unwrap().revision;
    let session = client.session(Duration::from_secs(10)).await.unwrap();
    let guard = session.lock("jobs/past").await.unwrap();
    let token = guard.token().0;
    guard.release().await.unwrap();
    session.close().await.unwrap();

    let start = (before + 1).to_string();
    let run = fencelock(
        &e,
        &[
            "--output",
            "json",
            "watch",
            "jobs/past",
            "--start-revision",
            &start,
            "--count",
            "2",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["event"], "acquired");
    assert_eq!(events[0]["token"], token);
    assert_eq!(events[1]["event"], "released");
    cluster.shutdown().await;
}
