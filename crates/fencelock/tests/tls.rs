//! TLS from the command line: `fencelock certs` writes a CA and certificates that work
//! (a node started from `serve`'s TLS flags serves a TLS client with them and refuses a
//! plaintext one), and the TLS flags and the config file's `[tls]` table become the
//! right `TlsConfig`.

use clap::Parser;
use fencelock::cli::{Cli, Command, ServeArgs, parse_config};
use fencelock_client::{Client, Error};
use fencelock_server::config::TlsConfig;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::Duration;

fn serve_args(flags: &[&str]) -> ServeArgs {
    let argv = ["fencelock", "serve"].iter().chain(flags);
    match Cli::try_parse_from(argv).expect("flags parse").command {
        Command::Serve(args) => *args,
        other => panic!("not `serve`: {other:?}"),
    }
}

fn certs(out: &Path, extra: &[&str]) -> std::process::Output {
    Process::new(env!("CARGO_BIN_EXE_fencelock"))
        .arg("certs")
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("run fencelock certs")
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

#[test]
fn certs_writes_and_names_every_file_and_keeps_existing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let run = certs(
        &out,
        &[
            "--nodes",
            "1,2,3",
            "--clients",
            "alice,bob",
            "--hosts",
            "node1.example,10.0.0.1",
        ],
    );
    assert!(run.status.success(), "{run:?}");
    let stdout = String::from_utf8_lossy(&run.stdout);
    for name in [
        "ca.pem",
        "node-1.pem",
        "node-1.key",
        "node-2.pem",
        "node-2.key",
        "node-3.pem",
        "node-3.key",
        "client-alice.pem",
        "client-alice.key",
        "client-bob.pem",
        "client-bob.key",
    ] {
        assert!(out.join(name).is_file(), "{name} missing");
        assert!(
            stdout.contains(&path(&out, name)),
            "{name} not printed:\n{stdout}"
        );
    }
    assert!(stdout.contains("node 2 private key"), "{stdout}");

    let again = certs(&out, &["--nodes", "1"]);
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("already exists"), "{stderr}");
    assert!(certs(&out, &["--nodes", "1", "--force"]).status.success());

    let bad = certs(&out, &["--nodes", "1", "--clients", "../evil", "--force"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bad name"));
    let bad = certs(&out, &["--nodes", "0", "--force"]);
    assert!(!bad.status.success());
}

#[test]
fn tls_flags_override_the_config_files_tls_table() {
    let args = serve_args(&[
        "--tls-cert",
        "/c/node.pem",
        "--tls-key",
        "/c/node.key",
        "--tls-client-ca",
        "/c/ca.pem",
        "--peer-ca",
        "/c/ca.pem",
        "--peer-server-name",
        "node.example",
    ]);
    let tls = args.to_config().unwrap().tls.expect("tls configured");
    assert_eq!(
        tls,
        TlsConfig {
            cert: Some("/c/node.pem".into()),
            key: Some("/c/node.key".into()),
            client_ca: Some("/c/ca.pem".into()),
            peer_ca: Some("/c/ca.pem".into()),
            server_name: Some("node.example".into()),
            ..TlsConfig::default()
        }
    );
    // No TLS flag and no table: plaintext.
    assert_eq!(serve_args(&[]).to_config().unwrap().tls, None);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fencelock.toml");
    std::fs::write(
        &file,
        "[tls]\ncert = \"/f/a.pem\"\nkey = \"/f/a.key\"\npeer_ca = \"/f/ca.pem\"\n\
         peer_cert = \"/f/p.pem\"\npeer_key = \"/f/p.key\"\n",
    )
    .unwrap();
    let file = file.display().to_string();
    let tls = serve_args(&["--config", &file, "--peer-cert", "/x/p.pem"])
        .to_config()
        .unwrap()
        .tls
        .unwrap();
    assert_eq!(tls.cert, Some(PathBuf::from("/f/a.pem")));
    assert_eq!(tls.peer_cert, Some(PathBuf::from("/x/p.pem")));
    assert_eq!(tls.peer_key, Some(PathBuf::from("/f/p.key")));

    // Halves and orphans are clear errors.
    let err = format!(
        "{:#}",
        serve_args(&["--tls-cert", "/c/a.pem"])
            .to_config()
            .unwrap_err()
    );
    assert!(err.contains("tls.cert and tls.key"), "{err}");
    let err = format!(
        "{:#}",
        serve_args(&["--peer-server-name", "x"])
            .to_config()
            .unwrap_err()
    );
    assert!(err.contains("tls.peer_ca"), "{err}");
    let err = format!(
        "{:#}",
        parse_config("[tls]\ncertificate = \"x\"\n").unwrap_err()
    );
    assert!(err.contains("certificate"), "{err}");
}

/// The example config documents every `[tls]` key (commented out: the default is no TLS).
#[test]
fn example_config_documents_every_tls_key() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fencelock.example.toml"
    ))
    .unwrap();
    assert!(text.contains("# [tls]"));
    let all = TlsConfig {
        cert: Some("a".into()),
        key: Some("a".into()),
        client_ca: Some("a".into()),
        peer_cert: Some("a".into()),
        peer_key: Some("a".into()),
        peer_ca: Some("a".into()),
        server_name: Some("a".into()),
    };
    let keys: toml::Table = toml::from_str(&toml::to_string(&all).unwrap()).unwrap();
    for key in keys.keys() {
        assert!(
            text.contains(&format!("# {key} = ")),
            "example lacks tls.{key}"
        );
    }
}

#[test]
fn a_node_started_with_certs_files_serves_tls_clients_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let run = certs(&out, &["--nodes", "1", "--clients", "alice"]);
    assert!(run.status.success(), "{run:?}");
    let data = dir.path().join("data").display().to_string();
    let args = serve_args(&[
        "--listen",
        "127.0.0.1:0",
        "--peer-listen",
        "127.0.0.1:0",
        "--no-admin",
        "--data-dir",
        &data,
        "--tls-cert",
        &path(&out, "node-1.pem"),
        "--tls-key",
        &path(&out, "node-1.key"),
        "--tls-client-ca",
        &path(&out, "ca.pem"),
        "--peer-ca",
        &path(&out, "ca.pem"),
    ]);
    let config = args.to_config().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let node = fencelock_server::startup::start(config)
            .await
            .expect("node starts");
        let endpoint = node.client_addr().to_string();
        let builder = || {
            Client::builder([endpoint.clone()])
                .connect_timeout(Duration::from_millis(500))
                .retry_deadline(Duration::from_secs(10))
        };
        let client = builder()
            .tls_files(
                out.join("ca.pem"),
                Some((&out.join("client-alice.pem"), &out.join("client-alice.key"))),
                None,
            )
            .unwrap()
            .connect()
            .await
            .expect("TLS client with alice's certificate connects");
        let session = client.session(Duration::from_secs(5)).await.unwrap();
        let guard = session.lock("certs/a").await.unwrap();
        assert!(
            client
                .verify("certs/a", guard.token())
                .await
                .unwrap()
                .current
        );
        guard.release().await.unwrap();
        session.close().await.unwrap();

        let plaintext = builder()
            .retry_deadline(Duration::from_secs(1))
            .connect()
            .await;
        assert!(
            matches!(
                plaintext,
                Err(Error::Unavailable { .. } | Error::Timeout { .. })
            ),
            "plaintext client: {plaintext:?}"
        );
        let no_cert = builder()
            .retry_deadline(Duration::from_secs(1))
            .tls_files(out.join("ca.pem"), None, None)
            .unwrap()
            .connect()
            .await;
        assert!(
            no_cert.is_err(),
            "client without a certificate: {no_cert:?}"
        );
        node.shutdown().await;
    });
}
