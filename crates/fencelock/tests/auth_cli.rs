//! `fencelock user add`, `role ...`, `auth enable`, then calls refused without or with
//! wrong credentials and accepted with them (flags, environment, password file).

mod cli_client_common;

use cli_client_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_auth_enable_then_credentials_are_required() {
    let cluster = TestCluster::start(1).await;
    let e = cluster.endpoints();
    for args in [
        &["user", "add", "root", "--new-password", "rootpw"][..],
        &["user", "add", "alice", "--new-password", "alicepw"],
        &["role", "add", "jobs"],
        &["role", "grant", "jobs", "jobs/", "acquire,release,read"],
        &["user", "grant-role", "alice", "jobs"],
        &["auth", "enable"],
    ] {
        let run = fencelock(&e, args).await;
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
    }

    // Refused without credentials and with a wrong password: a one-line message.
    let refused = fencelock(&e, &["acquire", "jobs/a", "--ttl", "30s"]).await;
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(refused.stderr.contains("unauthenticated"), "{refused:?}");
    let wrong = fencelock(
        &e,
        &[
            "--user",
            "alice",
            "--password",
            "nope",
            "describe",
            "jobs/a",
        ],
    )
    .await;
    assert_ne!(wrong.code, 0, "{wrong:?}");
    assert!(wrong.stderr.contains("unauthenticated"), "{wrong:?}");

    // Accepted with the flags; refused outside alice's prefix.
    let ok = fencelock(
        &e,
        &[
            "--user",
            "alice",
            "--password",
            "alicepw",
            "describe",
            "jobs/a",
        ],
    )
    .await;
    assert_eq!(ok.code, 0, "{ok:?}");
    let denied = fencelock(
        &e,
        &[
            "--user",
            "alice",
            "--password",
            "alicepw",
            "describe",
            "billing/a",
        ],
    )
    .await;
    assert_ne!(denied.code, 0, "{denied:?}");
    assert!(denied.stderr.contains("permission denied"), "{denied:?}");

    // From the environment and from a password file.
    let from_env = command(&e, &["--output", "json", "auth", "status"])
        .env("FENCELOCK_USER", "root")
        .env("FENCELOCK_PASSWORD", "rootpw")
        .spawn()
        .expect("spawn");
    let status = finish(from_env).await;
    assert_eq!(status.code, 0, "{status:?}");
    let status = status.json();
    assert_eq!(status["enabled"], true);
    assert_eq!(status["user"], "root");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "alicepw\n").unwrap();
    let from_file = fencelock(
        &e,
        &[
            "--user",
            "alice",
            "--password-file",
            file.to_str().unwrap(),
            "describe",
            "jobs/a",
        ],
    )
    .await;
    assert_eq!(from_file.code, 0, "{from_file:?}");
    cluster.shutdown().await;
}
