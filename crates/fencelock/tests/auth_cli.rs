//! `fencelock user add`, `role ...`, `auth enable`, then calls refused without or with
//! wrong credentials and accepted with them (flags, environment, password file).

mod cli_client_common;

use cli_client_common::*;

/// root, and alice with acquire/release/read on "jobs/"; auth on. Set up without
/// credentials while auth is off, as the quick start does.
async fn set_up(e: &[String]) {
    for args in [
        &["user", "add", "root", "--new-password", "rootpw"][..],
        &["user", "add", "alice", "--new-password", "alicepw"],
        &["role", "add", "jobs"],
        &["role", "grant", "jobs", "jobs/", "acquire,release,read"],
        &["user", "grant-role", "alice", "jobs"],
        &["auth", "enable"],
    ] {
        let run = fencelock(e, args).await;
        assert_eq!(run.code, 0, "{args:?}: {run:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_add_auth_enable_then_credentials_are_required() {
    let cluster = TestCluster::start(1).await;
    let e = cluster.endpoints();
    set_up(&e).await;

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

/// `auth token`, then `--auth-token` / `FENCELOCK_AUTH_TOKEN`, `auth revoke-token -` (the token on
/// standard input), `user revoke-role` and `role remove`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_used_and_revoked_and_roles_are_taken_back() {
    use tokio::io::AsyncWriteExt as _;

    let cluster = TestCluster::start(1).await;
    let e = cluster.endpoints();
    set_up(&e).await;
    let as_root = |args: &[&str]| {
        let mut all = vec!["--user", "root", "--password", "rootpw"];
        all.extend_from_slice(args);
        all.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>()
    };
    let run_as_root = |args: &[&str]| {
        let args = as_root(args);
        let e = e.clone();
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            fencelock(&e, &refs).await
        }
    };

    let minted = run_as_root(&["auth", "token", "alice"]).await;
    assert_eq!(minted.code, 0, "{minted:?}");
    let token = minted.stdout.trim().to_owned();
    let with_flag = fencelock(&e, &["--auth-token", &token, "describe", "jobs/a"]).await;
    assert_eq!(with_flag.code, 0, "{with_flag:?}");
    let with_env = command(&e, &["describe", "jobs/a"])
        .env("FENCELOCK_AUTH_TOKEN", &token)
        .spawn()
        .expect("spawn");
    let with_env = finish(with_env).await;
    assert_eq!(with_env.code, 0, "{with_env:?}");
    // The token wins over --user and its password.
    let both = fencelock(
        &e,
        &[
            "--auth-token",
            &token,
            "--user",
            "alice",
            "--password",
            "wrong",
            "describe",
            "jobs/a",
        ],
    )
    .await;
    assert_eq!(both.code, 0, "{both:?}");

    // Revoked through standard input: the next call with the token is refused.
    let mut revoke = command(
        &e,
        &as_root(&["auth", "revoke-token", "-"])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .stdin(std::process::Stdio::piped())
    .spawn()
    .expect("spawn");
    let mut stdin = revoke.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{token}\n").as_bytes())
        .await
        .expect("write the token");
    drop(stdin);
    let revoked = finish(revoke).await;
    assert_eq!(revoked.code, 0, "{revoked:?}");
    let refused = fencelock(&e, &["--auth-token", &token, "describe", "jobs/a"]).await;
    assert_ne!(refused.code, 0, "{refused:?}");
    assert!(refused.stderr.contains("unauthenticated"), "{refused:?}");

    // Taking the role back, then deleting it.
    let alice = ["--user", "alice", "--password", "alicepw"];
    let alice = [&alice[..], &["describe", "jobs/a"]].concat();
    assert_eq!(fencelock(&e, &alice).await.code, 0);
    let taken = run_as_root(&["user", "revoke-role", "alice", "jobs"]).await;
    assert_eq!(taken.code, 0, "{taken:?}");
    let denied = fencelock(&e, &alice).await;
    assert!(denied.stderr.contains("permission denied"), "{denied:?}");
    let removed = run_as_root(&["--output", "json", "role", "remove", "jobs"]).await;
    assert_eq!(removed.code, 0, "{removed:?}");
    assert_eq!(removed.json()["ok"], true);
    let status = run_as_root(&["--output", "json", "auth", "status"])
        .await
        .json();
    assert!(status["roles"].as_array().unwrap().is_empty(), "{status}");
    let again = run_as_root(&["role", "remove", "jobs"]).await;
    assert_ne!(again.code, 0, "removing an unknown role: {again:?}");
    cluster.shutdown().await;
}
