//! `fencelock sessions` and `fencelock revoke-session`, run as a real process against an
//! in-process cluster: the JSON and the table show client ids, TTLs and held locks, and a
//! revoked session's lock is free afterwards.

mod cli_client_common;

use cli_client_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_lists_and_revoke_session_ends_one() {
    let cluster = TestCluster::start(1).await;
    let e = cluster.endpoints();
    let json = ["--output", "json"];

    let acquired = fencelock(
        &e,
        &[&json[..], &["acquire", "ops/stuck", "--ttl", "30s"]].concat(),
    )
    .await;
    assert_eq!(acquired.code, 0, "{acquired:?}");
    let acquired = acquired.json();
    let session = acquired["session"].as_u64().expect("session");
    let token = acquired["token"].as_u64().expect("token");

    let listed = fencelock(&e, &[&json[..], &["sessions"]].concat()).await;
    assert_eq!(listed.code, 0, "{listed:?}");
    let listed = listed.json();
    assert_eq!(listed["count"], 1, "{listed}");
    let one = &listed["sessions"][0];
    assert_eq!(one["session"], session);
    assert_eq!(one["ttl_ms"], 30_000);
    assert_eq!(one["held"][0]["name"], "ops/stuck");
    assert_eq!(one["held"][0]["token"], token);
    let client_id = one["client_id"].as_str().expect("a client id");
    assert_eq!(client_id.len(), 36, "a UUID: {client_id}");

    let table = fencelock(&e, &["sessions"]).await;
    assert_eq!(table.code, 0, "{table:?}");
    assert!(table.stdout.contains("CLIENT"), "{table:?}");
    assert!(table.stdout.contains(client_id), "{table:?}");
    assert!(
        table.stdout.contains(&format!("ops/stuck@{token}")),
        "{table:?}"
    );

    let id = session.to_string();
    let revoked = fencelock(&e, &[&json[..], &["revoke-session", &id]].concat()).await;
    assert_eq!(revoked.code, 0, "{revoked:?}");
    assert_eq!(revoked.json()["released"], 1);
    let described = fencelock(&e, &[&json[..], &["describe", "ops/stuck"]].concat()).await;
    assert_eq!(described.json()["held"], false, "{described:?}");
    let empty = fencelock(&e, &["sessions"]).await;
    assert!(empty.stdout.contains("no sessions"), "{empty:?}");

    let again = fencelock(&e, &["revoke-session", &id]).await;
    assert_ne!(again.code, 0, "{again:?}");
    assert!(again.stderr.contains("cannot revoke session"), "{again:?}");
    cluster.shutdown().await;
}
