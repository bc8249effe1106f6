//! The config file's keys and `serve`'s flags are a contract with every deployment:
//! a file that sets every key, and a command line that gives every flag, must produce
//! the same settings whatever shape `ServerConfig` has inside. The expected values
//! below were recorded from the flat `ServerConfig` before its fields were grouped;
//! keys added since then are part of the contract from the version that added them.

use clap::Parser;
use fencelock::cli::{Cli, Command, parse_config};

/// Every key, none at its default.
const EVERY_KEY: &str = r#"
node_id = 3
listen = "127.0.0.1:9001"
peer_listen = "127.0.0.1:9101"
peer_advertise = "node3.example:9101"
client_advertise = "node3.example:9001"
admin_listen = "127.0.0.1:9201"
data_dir = "/var/lib/fencelock/node3"
heartbeat_interval = 40
election_timeout = 400
snapshot_every_entries = 123
log_entries_kept_after_snapshot = 45
log_page_cache_bytes = 1048576
log_wal_bytes = 2097152
log_inline_append_max_bytes = 4096
disk_reserve_bytes = 1000000
disk_check_interval = 250
log_cache_entries = 17
log_cache_bytes = 65537
max_batch_commands = 77
max_queued_commands = 888
worker_threads = 2
max_inflight_entries = 2
waiting_acquire_delay = 5
expiry_tick = 30
request_timeout = 7000
max_message_bytes = 131072
max_list_page = 99
max_watchers = 55
max_remembered_requests = 66
watch_buffer = 44
max_keepalive_streams = 33
max_peer_links = 22
max_peer_message_bytes = 1048576
watch_history_events = 77
watch_history_bytes = 123456
metrics_name_depth = 2
metrics_max_name_prefixes = 50
admin_tls = true
metrics_open = true
metrics_token_file = "/etc/fencelock/metrics-token"
join_via = []
join_timeout = 9000

[bootstrap.Members]
1 = "127.0.0.1:9101"
2 = "127.0.0.1:9102"
3 = "127.0.0.1:9103"

[limits]
max_sessions = 11
max_locks = 12
max_waiters_per_lock = 13
max_locks_per_session = 14
max_pending_requests_per_session = 15
max_name_bytes = 16
max_value_bytes = 17
min_ttl_ms = 1018
max_ttl_ms = 60019
max_expire_batch = 20

[primitive_limits]
max_lock_delay_ms = 30000
max_permits = 1000
max_locks_per_request = 8
max_hold_count = 100

[tls]
cert = "c.pem"
key = "c.key"
client_ca = "ca.pem"
peer_cert = "p.pem"
peer_key = "p.key"
peer_ca = "pca.pem"
server_name = "node3.example"
"#;

/// Every `serve` flag that sets a value, none at its default.
const EVERY_FLAG: &[&str] = &[
    "--id",
    "2",
    "--listen",
    "127.0.0.1:8001",
    "--peer-listen",
    "127.0.0.1:8102",
    "--admin",
    "127.0.0.1:8201",
    "--advertise-client",
    "node2.example:8001",
    "--advertise-peer",
    "node2.example:8102",
    "--data-dir",
    "/srv/fencelock",
    "--peers",
    "1=127.0.0.1:8101,2=127.0.0.1:8102",
    "--heartbeat-ms",
    "30",
    "--election-timeout-ms",
    "250",
    "--snapshot-every",
    "500",
    "--worker-threads",
    "3",
    "--tls-cert",
    "c.pem",
    "--tls-key",
    "c.key",
    "--tls-client-ca",
    "ca.pem",
    "--peer-ca",
    "pca.pem",
    "--peer-cert",
    "p.pem",
    "--peer-key",
    "p.key",
    "--peer-server-name",
    "node2.example",
    "--metrics-open",
];

/// `EVERY_FLAG` over the defaults, as the flat `ServerConfig` serialized it.
const EVERY_FLAG_READ: &str = r#"
node_id = 2
listen = "127.0.0.1:8001"
peer_listen = "127.0.0.1:8102"
peer_advertise = "node2.example:8102"
client_advertise = "node2.example:8001"
admin_listen = "127.0.0.1:8201"
data_dir = "/srv/fencelock"
heartbeat_interval = 30
election_timeout = 250
snapshot_every_entries = 500
log_entries_kept_after_snapshot = 5000
log_page_cache_bytes = 16777216
log_wal_bytes = 4194304
log_inline_append_max_bytes = 65536
disk_reserve_bytes = 268435456
disk_check_interval = 1000
log_cache_entries = 256
log_cache_bytes = 4194304
max_batch_commands = 1024
max_queued_commands = 100000
worker_threads = 3
max_inflight_entries = 1
waiting_acquire_delay = 2
expiry_tick = 50
request_timeout = 5000
max_message_bytes = 65536
max_list_page = 1000
max_watchers = 10000
max_remembered_requests = 10000
watch_buffer = 1024
max_keepalive_streams = 10000
max_peer_links = 256
max_peer_message_bytes = 67108864
watch_history_events = 10000
watch_history_bytes = 16777216
metrics_name_depth = 1
metrics_max_name_prefixes = 1000
admin_tls = false
metrics_open = true
join_via = []
join_timeout = 0

[bootstrap.Members]
1 = "127.0.0.1:8101"
2 = "127.0.0.1:8102"

[limits]
max_sessions = 1000000
max_locks = 2000000
max_waiters_per_lock = 10000
max_locks_per_session = 10000
max_pending_requests_per_session = 1024
max_name_bytes = 512
max_value_bytes = 1024
min_ttl_ms = 1000
max_ttl_ms = 3600000
max_expire_batch = 4096

[primitive_limits]
max_lock_delay_ms = 60000
max_permits = 1000000
max_locks_per_request = 64
max_hold_count = 1000000

[tls]
cert = "c.pem"
key = "c.key"
client_ca = "ca.pem"
peer_cert = "p.pem"
peer_key = "p.key"
peer_ca = "pca.pem"
server_name = "node2.example"
"#;

fn table(text: &str) -> toml::Table {
    toml::from_str(text).expect("TOML")
}

fn serialized(config: &fencelock_server::config::ServerConfig) -> String {
    toml::to_string(config).expect("serializes")
}

#[test]
fn a_file_with_every_key_reads_as_before() {
    let config = parse_config(EVERY_KEY).expect("every key parses");
    let read = serialized(&config);
    // The flat `ServerConfig` gave back exactly the file's keys and values.
    assert_eq!(table(&read), table(EVERY_KEY), "read back:\n{read}");
}

#[test]
fn every_flag_sets_what_it_set_before() {
    let argv = ["fencelock", "serve"].iter().chain(EVERY_FLAG);
    let Command::Serve(args) = Cli::try_parse_from(argv).expect("flags parse").command else {
        panic!("not `serve`");
    };
    let config = args.to_config().expect("valid configuration");
    let read = serialized(&config);
    assert_eq!(table(&read), table(EVERY_FLAG_READ), "read back:\n{read}");
}

/// Grouped keys are read through serde's flattening, which loses the position of a
/// mistake; the error must still point at the key's own line, like any other key's.
#[test]
fn a_mistake_in_a_grouped_key_points_at_its_line() {
    let err = format!(
        "{:#}",
        parse_config("node_id = 1\n\n max_list_page = \"many\"\n").expect_err("bad value")
    );
    assert!(err.contains("line 3, column 2"), "{err}");
    assert!(err.contains("3 |  max_list_page = \"many\""), "{err}");
    assert!(err.contains("invalid type: string \"many\""), "{err}");

    let err = format!(
        "{:#}",
        parse_config("node_id = 1\nlisten_adress = \"127.0.0.1:1\"\n").expect_err("unknown")
    );
    assert!(err.contains("line 2, column 1"), "{err}");
    assert!(err.contains("unknown field `listen_adress`"), "{err}");

    // A top-level key keeps the parser's own message.
    let err = format!(
        "{:#}",
        parse_config("\nnode_id = \"one\"\n").expect_err("bad node id")
    );
    assert!(err.contains("line 2"), "{err}");
}
