//! `fencelock serve`'s flags, config file and `--peers` become the right `ServerConfig`,
//! and every mistake is a clear error.

use clap::{CommandFactory, Parser};
use fencelock::cli::{Cli, Command, ServeArgs, parse_config, parse_peers};
use fencelock_server::config::{
    Bootstrap, DEFAULT_ADMIN_LISTEN, DEFAULT_DATA_DIR, DEFAULT_LISTEN, DEFAULT_PEER_LISTEN,
    ServerConfig,
};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

fn serve_args(flags: &[&str]) -> ServeArgs {
    let argv = ["fencelock", "serve"].iter().chain(flags);
    match Cli::try_parse_from(argv).expect("flags parse").command {
        Command::Serve(args) => *args,
        other => panic!("not `serve`: {other:?}"),
    }
}

fn config(flags: &[&str]) -> ServerConfig {
    serve_args(flags).to_config().expect("valid configuration")
}

fn config_err(flags: &[&str]) -> String {
    format!(
        "{:#}",
        serve_args(flags)
            .to_config()
            .expect_err("configuration must be refused")
    )
}

fn parse_err(flags: &[&str]) -> String {
    let argv = ["fencelock", "serve"].iter().chain(flags);
    Cli::try_parse_from(argv)
        .expect_err("flags must be refused")
        .to_string()
}

fn toml_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("write");
    file
}

fn members(pairs: &[(u64, &str)]) -> BTreeMap<u64, String> {
    pairs.iter().map(|(id, a)| (*id, (*a).to_owned())).collect()
}

#[test]
fn no_flags_is_the_single_node_quick_start() {
    let c = config(&[]);
    assert_eq!(c.node_id, 1);
    assert_eq!(c.network.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(c.network.peer_listen.to_string(), DEFAULT_PEER_LISTEN);
    assert_eq!(
        c.network.admin_listen.map(|a| a.to_string()).as_deref(),
        Some(DEFAULT_ADMIN_LISTEN)
    );
    assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    assert_eq!(c.bootstrap, Bootstrap::Members(BTreeMap::new()));
    assert_eq!(DEFAULT_LISTEN, "127.0.0.1:7001");
    assert_eq!(DEFAULT_PEER_LISTEN, "127.0.0.1:7101");
    assert_eq!(DEFAULT_ADMIN_LISTEN, "127.0.0.1:7201");
    assert_eq!(DEFAULT_DATA_DIR, "fencelock-data");
}

#[test]
fn every_flag_lands_in_the_config() {
    let c = config(&[
        "--id",
        "2",
        "--listen",
        "127.0.0.1:8002",
        "--peer-listen",
        "0.0.0.0:8102",
        "--admin",
        "127.0.0.1:8202",
        "--advertise-client",
        "node2.example:8002",
        "--advertise-peer",
        "node2.example:8102",
        "--data-dir",
        "/tmp/fl2",
        "--peers",
        "1=127.0.0.1:8101,2=127.0.0.1:8102,3=127.0.0.1:8103",
        "--heartbeat-ms",
        "50",
        "--election-timeout-ms",
        "300",
        "--snapshot-every",
        "777",
    ]);
    assert_eq!(c.node_id, 2);
    assert_eq!(c.network.listen.to_string(), "127.0.0.1:8002");
    assert_eq!(c.network.peer_listen.to_string(), "0.0.0.0:8102");
    assert_eq!(
        c.network.admin_listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:8202")
    );
    assert_eq!(c.client_advertise_addr(), "node2.example:8002");
    assert_eq!(c.peer_advertise_addr(), "node2.example:8102");
    assert_eq!(c.data_dir, PathBuf::from("/tmp/fl2"));
    assert_eq!(
        c.bootstrap,
        Bootstrap::Members(members(&[
            (1, "127.0.0.1:8101"),
            (2, "127.0.0.1:8102"),
            (3, "127.0.0.1:8103")
        ]))
    );
    assert_eq!(c.raft.heartbeat_interval, Duration::from_millis(50));
    assert_eq!(c.raft.election_timeout, Duration::from_millis(300));
    assert_eq!(c.raft.snapshot_every_entries, 777);
}

#[test]
fn peer_listener_defaults_to_this_nodes_address_in_peers() {
    let c = config(&[
        "--id",
        "3",
        "--peers",
        "1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103",
    ]);
    assert_eq!(c.network.peer_listen.to_string(), "127.0.0.1:7103");
    // A host name cannot be bound: the default stays.
    let c = config(&["--id", "2", "--peers", "1=a.example:7101,2=b.example:7102"]);
    assert_eq!(c.network.peer_listen.to_string(), DEFAULT_PEER_LISTEN);
}

#[test]
fn join_and_no_admin() {
    let c = config(&["--id", "4", "--join", "--no-admin"]);
    assert_eq!(c.bootstrap, Bootstrap::Join);
    assert_eq!(c.network.admin_listen, None);
    assert!(parse_err(&["--join", "--peers", "1=127.0.0.1:7101"]).contains("cannot be used with"));
    assert!(parse_err(&["--no-admin", "--admin", "127.0.0.1:1"]).contains("cannot be used with"));
}

#[test]
fn peers_errors_are_clear() {
    let missing_self = config_err(&["--id", "4", "--peers", "1=127.0.0.1:7101,2=127.0.0.1:7102"]);
    assert!(
        missing_self.contains("does not name this node (id 4)"),
        "{missing_self}"
    );

    let bad_id = parse_err(&["--peers", "x=127.0.0.1:7101"]);
    assert!(
        bad_id.contains("`x` in `x=127.0.0.1:7101` is not a node id"),
        "{bad_id}"
    );
    let zero = parse_err(&["--peers", "0=127.0.0.1:7101"]);
    assert!(zero.contains("ids start at 1"), "{zero}");

    let no_port = parse_err(&["--peers", "1=127.0.0.1"]);
    assert!(no_port.contains("has no port"), "{no_port}");
    let bad_port = parse_err(&["--peers", "1=127.0.0.1:99999"]);
    assert!(bad_port.contains("bad port `99999`"), "{bad_port}");
    let bad_host = parse_err(&["--peers", "1=bad host:7101"]);
    assert!(bad_host.contains("bad host `bad host`"), "{bad_host}");

    assert!(
        parse_peers("1=127.0.0.1:7101,1=127.0.0.1:7102")
            .expect_err("duplicate id")
            .contains("given twice")
    );
    assert!(
        parse_peers("1=127.0.0.1:7101,2=127.0.0.1:7101")
            .expect_err("duplicate address")
            .contains("same address")
    );
    assert!(
        parse_peers("1=127.0.0.1:7101,,2=127.0.0.1:7102")
            .expect_err("empty item")
            .contains("empty item")
    );
    assert!(
        parse_peers("127.0.0.1:7101")
            .expect_err("no id")
            .contains("not ID=HOST:PORT")
    );

    let ok = parse_peers(" 1=127.0.0.1:7101, 2=[::1]:7102,3=db-3.internal:7103").expect("valid");
    assert_eq!(
        ok.0,
        members(&[
            (1, "127.0.0.1:7101"),
            (2, "[::1]:7102"),
            (3, "db-3.internal:7103")
        ])
    );
}

#[test]
fn other_flag_errors() {
    assert!(parse_err(&["--listen", "nowhere"]).contains("invalid value 'nowhere'"));
    assert!(parse_err(&["--id", "two"]).contains("invalid value 'two' for '--id <ID>'"));
    assert!(config_err(&["--id", "0"]).contains("node id must be >= 1"));
    let timing = config_err(&["--heartbeat-ms", "300", "--election-timeout-ms", "500"]);
    assert!(
        timing.contains("election timeout must exceed twice the heartbeat"),
        "{timing}"
    );
    assert!(parse_err(&["--advertise-client", "no-port"]).contains("has no port"));
}

#[test]
fn config_file_then_flags() {
    let file = toml_file(
        r#"
node_id = 2
listen = "127.0.0.1:9002"
peer_listen = "127.0.0.1:9102"
admin_listen = "127.0.0.1:9202"
data_dir = "/var/lib/fencelock"
heartbeat_interval = 40
election_timeout = 200
snapshot_every_entries = 500

[bootstrap.Members]
1 = "127.0.0.1:9101"
2 = "127.0.0.1:9102"
"#,
    );
    let path = file.path().to_str().expect("utf-8 path");

    let c = config(&["--config", path]);
    assert_eq!(c.node_id, 2);
    assert_eq!(c.network.listen.to_string(), "127.0.0.1:9002");
    assert_eq!(
        c.network.admin_listen.map(|a| a.to_string()).as_deref(),
        Some("127.0.0.1:9202")
    );
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/fencelock"));
    assert_eq!(c.raft.heartbeat_interval, Duration::from_millis(40));
    assert_eq!(c.raft.election_timeout, Duration::from_millis(200));
    assert_eq!(c.raft.snapshot_every_entries, 500);
    assert_eq!(
        c.bootstrap,
        Bootstrap::Members(members(&[(1, "127.0.0.1:9101"), (2, "127.0.0.1:9102")]))
    );

    // Flags win over the file; the file's peer listener is kept even with --peers.
    let c = config(&[
        "--config",
        path,
        "--id",
        "1",
        "--listen",
        "127.0.0.1:9001",
        "--no-admin",
        "--heartbeat-ms",
        "20",
    ]);
    assert_eq!(c.node_id, 1);
    assert_eq!(c.network.listen.to_string(), "127.0.0.1:9001");
    assert_eq!(c.network.peer_listen.to_string(), "127.0.0.1:9102");
    assert_eq!(c.network.admin_listen, None);
    assert_eq!(c.raft.heartbeat_interval, Duration::from_millis(20));
    assert_eq!(c.raft.election_timeout, Duration::from_millis(200));

    let c = config(&["--config", path, "--join"]);
    assert_eq!(c.bootstrap, Bootstrap::Join);
}

#[test]
fn config_file_join_form() {
    let c = parse_config("bootstrap = \"Join\"\n").expect("valid");
    assert_eq!(c.bootstrap, Bootstrap::Join);
}

#[test]
fn config_file_errors_are_clear() {
    let file = toml_file("node_id = 1\nlisten_addr = \"127.0.0.1:1\"\n");
    let path = file.path().to_str().expect("utf-8 path");
    let err = config_err(&["--config", path]);
    assert!(err.contains("in config file"), "{err}");
    assert!(err.contains(path), "{err}");
    assert!(err.contains("unknown field `listen_addr`"), "{err}");
    assert!(err.contains("line 2"), "{err}");

    let err = format!(
        "{:#}",
        parse_config("node_id = \"one\"\n").expect_err("wrong type")
    );
    assert!(
        err.contains("node_id") || err.contains("invalid type"),
        "{err}"
    );

    let err = format!(
        "{:#}",
        parse_config("listen = \"nowhere\"\n").expect_err("bad address")
    );
    assert!(err.contains("invalid socket address"), "{err}");

    let err = format!("{:#}", parse_config("node_id = [").expect_err("not TOML"));
    assert!(err.contains("line 1"), "{err}");

    let err = config_err(&["--config", "/nonexistent/fencelock.toml"]);
    assert!(
        err.contains("cannot read config file /nonexistent/fencelock.toml"),
        "{err}"
    );
}

/// The example file documents every key with its default value.
#[test]
fn example_config_lists_every_key_with_its_default() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fencelock.example.toml");
    let text = std::fs::read_to_string(path).expect("example file");
    let parsed = parse_config(&text).expect("example parses");
    let defaults = ServerConfig::default();
    assert_eq!(
        toml::to_string(&parsed).expect("serializes"),
        toml::to_string(&defaults).expect("serializes"),
        "the example's values are the defaults"
    );
    let written: toml::Table = toml::from_str(&text).expect("TOML");
    let all: toml::Table =
        toml::from_str(&toml::to_string(&defaults).expect("serializes")).expect("TOML");
    for key in all.keys() {
        assert!(written.contains_key(key), "example lacks `{key}`");
    }
    for field in ["peer_advertise", "client_advertise"] {
        assert!(
            text.contains(&format!("# {field} = ")),
            "example lacks `{field}`"
        );
    }
}

#[test]
fn help_shows_the_real_defaults() {
    let mut cli = Cli::command();
    let help = cli
        .find_subcommand_mut("serve")
        .expect("serve subcommand")
        .render_long_help()
        .to_string();
    for default in [
        DEFAULT_LISTEN,
        DEFAULT_PEER_LISTEN,
        DEFAULT_ADMIN_LISTEN,
        DEFAULT_DATA_DIR,
    ] {
        assert!(help.contains(default), "help lacks {default}:\n{help}");
    }
    let d = ServerConfig::default();
    for ms in [d.raft.heartbeat_interval, d.raft.election_timeout] {
        assert!(
            help.contains(&format!("[default: {}]", ms.as_millis())),
            "{help}"
        );
    }
    assert!(
        help.contains(&format!("[default: {}]", d.raft.snapshot_every_entries)),
        "{help}"
    );
    Cli::command().debug_assert();
}
