//! The deployment files cannot rot: the Dockerfile, `compose.yaml`, the Kubernetes
//! manifests (and their TLS overlay) and the systemd unit only use flags and `FENCELOCK_*` variables that
//! `fencelock serve --help` lists, and each node's command line (with its environment
//! and config file) parses and validates as `fencelock serve` would; its ports are the
//! ones the file publishes and probes, its data directory is on the data volume, and
//! its peers are the names the file gives the nodes. The alert rules and the dashboard
//! only name metrics the server exports (or metrics documented as external). And
//! `serve --log-format json` writes JSON lines.

use fencelock::cli::{Cli, Command as CliCommand};
use fencelock_server::config::{Bootstrap, ServerConfig};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fencelock");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// What `fencelock serve --help` offers: the flags, and each `FENCELOCK_*` variable with
/// the flag it stands for.
struct Help {
    flags: BTreeSet<String>,
    env_to_flag: BTreeMap<String, String>,
}

fn serve_help() -> Help {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .expect("run fencelock serve --help");
    assert!(out.status.success(), "serve --help failed: {out:?}");
    let text = String::from_utf8(out.stdout).expect("utf-8 help");
    let mut flags = BTreeSet::new();
    let mut env_to_flag = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let short = trimmed.starts_with('-') && trimmed.chars().nth(2) == Some(',');
        if trimmed.starts_with("--") || short {
            // `  -h, --help` or `      --listen <ADDR>`: the long name starts the item
            // (`- json: ...`, a possible value, does not).
            current = trimmed
                .split([',', ' ', '='])
                .find(|w| w.starts_with("--"))
                .map(str::to_owned);
            if let Some(flag) = &current {
                flags.insert(flag.clone());
            }
        }
        if let Some(rest) = line.split("[env: ").nth(1) {
            let name = rest.split(['=', ']']).next().unwrap_or_default().to_owned();
            let flag = current.clone().expect("an env var belongs to a flag");
            env_to_flag.insert(name, flag);
        }
    }
    assert!(
        flags.contains("--listen") && flags.contains("--log-format"),
        "{text}"
    );
    assert!(env_to_flag.contains_key("FENCELOCK_DATA_DIR"), "{text}");
    Help { flags, env_to_flag }
}

/// Every `--flag` among `words` is one that `serve --help` lists.
fn assert_flags_exist(help: &Help, words: &[String], origin: &str) {
    for word in words {
        if let Some(flag) = word
            .strip_prefix("--")
            .map(|_| word.split('=').next().unwrap_or(word))
        {
            assert!(
                help.flags.contains(flag),
                "{origin}: `{flag}` is not a flag of `fencelock serve`"
            );
        }
    }
}

/// The node configuration that `fencelock serve ARGS` gets with `env` set: the
/// variables become their flags (a flag given in `args` wins, as with clap), and config
/// files named in `files` are read from the repository instead.
fn serve_config(
    help: &Help,
    args: &[String],
    env: &BTreeMap<String, String>,
    files: &BTreeMap<&str, &str>,
    origin: &str,
) -> ServerConfig {
    assert_flags_exist(help, args, origin);
    let given: BTreeSet<&str> = args
        .iter()
        .filter_map(|a| {
            a.strip_prefix("--")
                .map(|_| a.split('=').next().unwrap_or(a))
        })
        .collect();
    // Global flags (`--log-format`) may follow the subcommand too.
    let mut full = vec!["fencelock".to_owned(), "serve".to_owned()];
    for (name, value) in env {
        let flag = help
            .env_to_flag
            .get(name)
            .unwrap_or_else(|| panic!("{origin}: `{name}` is not a variable of `fencelock serve`"));
        if !given.contains(flag.as_str()) {
            full.push(format!("{flag}={value}"));
        }
    }
    let args = args.strip_prefix(&["serve".to_owned()]).unwrap_or(args);
    for arg in args {
        full.push(match files.get(arg.as_str()) {
            Some(local) => repo().join(local).display().to_string(),
            None => arg.clone(),
        });
    }
    let cli = <Cli as clap::Parser>::try_parse_from(&full)
        .unwrap_or_else(|e| panic!("{origin}: {full:?} does not parse: {e}"));
    let CliCommand::Serve(serve) = cli.command else {
        panic!("{origin}: not a serve command: {full:?}")
    };
    serve
        .to_config()
        .unwrap_or_else(|e| panic!("{origin}: {full:?}: {e:#}"))
}

/// The Dockerfile's instructions, continuation lines joined.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => pending.push_str(part),
            None => {
                pending.push_str(line);
                let joined = std::mem::take(&mut pending);
                let (op, rest) = joined.trim().split_once(' ').expect("INSTRUCTION args");
                out.push((op.to_owned(), rest.trim().to_owned()));
            }
        }
    }
    out
}

/// `ENV A=1 B=2` pairs (values without spaces).
fn docker_env(instructions: &[(String, String)]) -> BTreeMap<String, String> {
    instructions
        .iter()
        .filter(|(op, _)| op == "ENV")
        .flat_map(|(_, rest)| rest.split_whitespace())
        .map(|pair| {
            let (k, v) = pair.split_once('=').expect("ENV KEY=VALUE");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn json_words(text: &str) -> Vec<String> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not a JSON array: {text}: {e}"))
}

fn port(addr: &std::net::SocketAddr) -> u16 {
    addr.port()
}

#[test]
fn dockerfile_runs_serve_with_flags_and_paths_that_exist() {
    let help = serve_help();
    let instructions = dockerfile();
    let get = |op: &str| -> Vec<&String> {
        instructions
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, r)| r)
            .collect()
    };
    let entrypoint = json_words(get("ENTRYPOINT")[0]);
    assert_eq!(entrypoint, ["/usr/local/bin/fencelock"]);
    let cmd = json_words(get("CMD")[0]);
    let env = docker_env(&instructions);
    let config = serve_config(&help, &cmd, &env, &BTreeMap::new(), "Dockerfile");

    // The volume holds the data directory; the runtime user is not root.
    let volume = json_words(get("VOLUME")[0]);
    assert_eq!(volume.len(), 1);
    assert!(
        config.data_dir.starts_with(&volume[0]),
        "data dir {} is not on the volume {}",
        config.data_dir.display(),
        volume[0]
    );
    let user = get("USER").last().expect("a USER").to_string();
    assert!(
        !user.starts_with('0') && !user.starts_with("root"),
        "{user}"
    );
    // Every listener is exposed, and the health check asks the admin port.
    let exposed: BTreeSet<u16> = get("EXPOSE")[0]
        .split_whitespace()
        .map(|p| p.parse().expect("port"))
        .collect();
    let admin = config.network.admin_listen.expect("admin on");
    let wanted: BTreeSet<u16> = [
        port(&config.network.listen),
        port(&config.network.peer_listen),
        port(&admin),
    ]
    .into();
    assert_eq!(exposed, wanted);
    let health = get("HEALTHCHECK")[0];
    assert!(
        health.contains("/dev/tcp/127.0.0.1/${FENCELOCK_ADMIN##*:}")
            && env["FENCELOCK_ADMIN"].ends_with(&format!(":{}", admin.port()))
            && health.contains("GET /health"),
        "{health}"
    );
    // The binary the runtime copies is the one the builder installs.
    let copy = get("COPY")
        .into_iter()
        .find(|c| c.contains("--from=builder"))
        .expect("COPY --from=builder");
    let run: Vec<&str> = get("RUN").into_iter().map(String::as_str).collect();
    let run = run.join(" ");
    let source = copy.split_whitespace().nth(1).expect("COPY source");
    assert!(run.contains(source), "{source} is not built in {run}");
}

/// The YAML documents of a file, with `<<` merge keys applied.
fn yaml_documents(path: &str) -> Vec<Value> {
    let text = read(path);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            let mut value = Value::deserialize(doc).unwrap_or_else(|e| panic!("{path}: {e}"));
            value.apply_merge().expect("merge keys");
            value
        })
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .expect("a list")
        .iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_mapping()
        .expect("a mapping")
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => serde_yaml_ng::to_string(other)
                    .expect("scalar")
                    .trim()
                    .to_owned(),
            };
            (k.as_str().expect("string key").to_owned(), v)
        })
        .collect()
}

fn host_of(addr: &str) -> &str {
    addr.rsplit_once(':').expect("host:port").0
}

#[test]
fn compose_nodes_form_one_cluster_with_published_ports() {
    let help = serve_help();
    let compose = yaml_documents("compose.yaml").remove(0);
    let services = compose["services"].as_mapping().expect("services");
    let volumes = compose["volumes"].as_mapping().expect("volumes");
    assert_eq!(services.len(), 4);
    let mut advertised = BTreeMap::new();
    let mut in_network_clients = Vec::new();
    let mut joining = Vec::new();
    let mut published_client = BTreeSet::new();
    let mut bootstrap = None;
    for (name, service) in services {
        let name = name.as_str().expect("service name");
        let origin = format!("compose.yaml service {name}");
        let env = string_map(&service["environment"]);
        let config = serve_config(
            &help,
            &strings(&service["command"]),
            &env,
            &BTreeMap::new(),
            &origin,
        );
        assert_eq!(service["hostname"].as_str(), Some(name), "{origin}");
        // Peers reach the node by its service name, on its peer port.
        let peer = config.peer_advertise_addr();
        assert_eq!(
            peer,
            format!("{name}:{}", config.network.peer_listen.port()),
            "{origin}"
        );
        // The initial voters share one --peers; a node of the `scale` profile joins
        // by itself through their client addresses in the compose network.
        if service["profiles"].is_null() {
            advertised.insert(config.node_id, peer);
            in_network_clients.push(format!("{name}:{}", config.network.listen.port()));
            match (&bootstrap, &config.bootstrap) {
                (None, b) => bootstrap = Some(b.clone()),
                (Some(first), b) => assert_eq!(first, b, "{origin}: another --peers"),
            }
        } else {
            assert_eq!(config.bootstrap, Bootstrap::Join, "{origin}");
            joining.push((origin.clone(), config.join_via.clone()));
        }
        // Ports: host 127.0.0.1:H -> the container's client and admin listeners; the
        // advertised client address is the published one.
        let ports: Vec<(String, u16)> = strings(&service["ports"])
            .iter()
            .map(|p| {
                let (host, container) = p.rsplit_once(':').expect("HOST:CONTAINER");
                assert!(
                    host.starts_with("127.0.0.1:"),
                    "{origin}: {p} not on loopback"
                );
                (host.to_owned(), container.parse().expect("port"))
            })
            .collect();
        let client_host = ports
            .iter()
            .find(|(_, c)| *c == config.network.listen.port())
            .map(|(h, _)| h.clone())
            .unwrap_or_else(|| panic!("{origin}: client port not published"));
        assert_eq!(config.client_advertise_addr(), client_host, "{origin}");
        assert!(published_client.insert(client_host));
        let admin = config.network.admin_listen.expect("admin on").port();
        assert!(
            ports.iter().any(|(_, c)| *c == admin),
            "{origin}: admin not published"
        );
        // The named volume holds the data directory.
        let mounts = strings(&service["volumes"]);
        let (volume, target) = mounts[0].split_once(':').expect("VOLUME:PATH");
        assert!(
            volumes.contains_key(volume),
            "{origin}: volume {volume} not declared"
        );
        assert!(
            config.data_dir.starts_with(target),
            "{origin}: data dir off the volume"
        );
    }
    let Some(Bootstrap::Members(members)) = bootstrap else {
        panic!("compose.yaml: no --peers")
    };
    assert_eq!(
        members, advertised,
        "--peers names each node as it advertises itself"
    );
    assert_eq!(joining.len(), 1, "one node that joins by itself");
    for (origin, join_via) in joining {
        assert_eq!(join_via, in_network_clients, "{origin}: --join-via");
    }
}

/// The Kubernetes manifests, by kind.
fn kubernetes() -> BTreeMap<String, Value> {
    yaml_documents("deploy/kubernetes/fencelock.yaml")
        .into_iter()
        .map(|doc| {
            let kind = doc["kind"].as_str().expect("kind");
            let name = doc["metadata"]["name"].as_str().expect("name");
            (format!("{kind}/{name}"), doc)
        })
        .collect()
}

/// The Kubernetes manifests as the TLS overlay (`deploy/kubernetes/tls`) makes them: its
/// base, the plain manifests through their kustomization, with its strategic merge
/// patches applied.
fn kubernetes_tls() -> BTreeMap<String, Value> {
    let base = yaml_documents("deploy/kubernetes/kustomization.yaml").remove(0);
    assert_eq!(strings(&base["resources"]), ["fencelock.yaml"]);
    let overlay = yaml_documents("deploy/kubernetes/tls/kustomization.yaml").remove(0);
    assert_eq!(strings(&overlay["resources"]), [".."]);
    let mut k8s = kubernetes();
    for patch in overlay["patches"].as_sequence().expect("patches") {
        let path = patch["path"].as_str().expect("a patch file");
        for doc in yaml_documents(&format!("deploy/kubernetes/tls/{path}")) {
            let kind = doc["kind"].as_str().expect("kind");
            let name = doc["metadata"]["name"].as_str().expect("name");
            let key = format!("{kind}/{name}");
            let target = k8s
                .get_mut(&key)
                .unwrap_or_else(|| panic!("{path} patches {key}, which the base lacks"));
            merge_patch(target, &doc);
        }
    }
    k8s
}

/// Kubernetes' strategic merge for the fields the overlay patches: maps merge key by
/// key; lists of maps merge item by item on their merge key (`name`, or `mountPath` for
/// volume mounts), a patch item with no match is added; other values are replaced.
fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Mapping(target), Value::Mapping(patch)) => {
            for (key, value) in patch {
                match target.get_mut(key) {
                    Some(existing) => merge_patch(existing, value),
                    None => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (Value::Sequence(target), Value::Sequence(patch))
            if patch.iter().all(|item| merge_key(item).is_some()) =>
        {
            for item in patch {
                let key = merge_key(item);
                match target.iter_mut().find(|old| merge_key(old) == key) {
                    Some(old) => merge_patch(old, item),
                    None => target.push(item.clone()),
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

fn merge_key(item: &Value) -> Option<(&'static str, &str)> {
    ["mountPath", "name"]
        .into_iter()
        .find_map(|key| Some((key, item.get(key)?.as_str()?)))
}

/// The `fencelock serve` words of the StatefulSet's start script for pod `ordinal`: the
/// script's shell variables replaced as the script sets them; `tls`: the TLS Secret is
/// mounted, so the script's TLS flags are in.
fn statefulset_args(script: &str, ordinal: u64, initial_voters: u64, tls: bool) -> Vec<String> {
    let id = ordinal + 1;
    let bootstraps: Vec<&str> = script
        .lines()
        .filter_map(|l| l.trim().strip_prefix("bootstrap=\""))
        .map(|v| v.trim_end_matches('"'))
        .collect();
    assert_eq!(
        bootstraps.len(),
        2,
        "an initial and a joining bootstrap: {script}"
    );
    let bootstrap = if id <= initial_voters {
        bootstraps[0]
    } else {
        bootstraps[1]
    };
    let tls_flags: Vec<&str> = script
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tls=\"--"))
        .collect();
    assert_eq!(tls_flags.len(), 1, "one set of TLS flags: {script}");
    let tls_flags = if tls {
        format!("--{}", tls_flags[0].trim_end_matches('"'))
    } else {
        String::new()
    };
    let exec = script
        .split_once("exec /usr/local/bin/fencelock")
        .expect("exec fencelock")
        .1
        .replace("\\\n", " ")
        .replace(" $tls ", &format!(" {tls_flags} "));
    exec.split_whitespace()
        .map(|w| {
            w.replace("\"$bootstrap\"", bootstrap)
                .replace("$id", &id.to_string())
                .replace("\"$id\"", &id.to_string())
                .replace("\"$HOSTNAME", &format!("\"fencelock-{ordinal}"))
                .trim_matches('"')
                .to_owned()
        })
        .collect()
}

#[test]
fn kubernetes_statefulset_nodes_find_each_other_by_stable_names() {
    check_statefulset(&serve_help(), &kubernetes(), false);
}

/// The TLS overlay: the same cluster, and every node serves clients, peers and the admin
/// port with its own certificate from the Secret, mounted read-only where the flags
/// look; the readiness probe and Prometheus speak HTTPS.
#[test]
fn kubernetes_tls_overlay_serves_everything_over_tls_from_a_read_only_secret() {
    let k8s = kubernetes_tls();
    check_statefulset(&serve_help(), &k8s, true);
    let template = &k8s["StatefulSet/fencelock"]["spec"]["template"];
    let container = &template["spec"]["containers"][0];
    assert_eq!(
        container["readinessProbe"]["httpGet"]["scheme"].as_str(),
        Some("HTTPS")
    );
    assert_eq!(
        template["metadata"]["annotations"]["prometheus.io/scheme"].as_str(),
        Some("https")
    );
    let mount = container["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .find(|m| m["name"].as_str() == Some("tls"))
        .expect("the TLS Secret is mounted");
    assert_eq!(mount["readOnly"].as_bool(), Some(true));
    let volume = template["spec"]["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["name"].as_str() == Some("tls"))
        .expect("a tls volume");
    assert_eq!(
        volume["secret"]["secretName"].as_str(),
        Some("fencelock-tls")
    );
    // Readable by the pod's group (fsGroup), not by others: 0440.
    assert_eq!(volume["secret"]["defaultMode"].as_u64(), Some(0o440));
    // The base's other mounts are kept by the merge.
    assert!(
        container["volumeMounts"]
            .as_sequence()
            .expect("mounts")
            .len()
            >= 4
    );
}

/// The StatefulSet of `k8s` (the plain manifests, or with `tls` the TLS overlay's): its
/// pods' command lines parse as `fencelock serve` would, and name each other, the
/// volumes and the ports consistently.
fn check_statefulset(help: &Help, k8s: &BTreeMap<String, Value>, tls: bool) {
    let set = &k8s["StatefulSet/fencelock"];
    let spec = &set["spec"];
    let peer_service = spec["serviceName"].as_str().expect("serviceName");
    let headless = &k8s[&format!("Service/{peer_service}")]["spec"];
    assert_eq!(headless["clusterIP"].as_str(), Some("None"));
    assert_eq!(headless["publishNotReadyAddresses"].as_bool(), Some(true));
    assert_eq!(spec["podManagementPolicy"].as_str(), Some("Parallel"));
    let replicas = spec["replicas"].as_u64().expect("replicas");
    // The budget keeps a quorum of every size this file runs, 3 and 5.
    let budget = &k8s["PodDisruptionBudget/fencelock"]["spec"];
    let unavailable = budget["maxUnavailable"].as_u64().expect("maxUnavailable");
    for voters in [replicas, 5] {
        assert!(
            voters - unavailable > voters / 2,
            "PDB breaks quorum of {voters}"
        );
    }

    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];
    let command = strings(&container["command"]);
    assert_eq!(&command[..2], ["bash", "-c"]);
    let config_map = &k8s["ConfigMap/fencelock"]["data"]["fencelock.toml"];
    fencelock::cli::parse_config(config_map.as_str().expect("toml"))
        .expect("the ConfigMap's fencelock.toml is a valid config");
    // The config file the command names is where the ConfigMap is mounted.
    let mounts: BTreeMap<String, String> = container["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .map(|m| {
            let name = m["name"].as_str().expect("name").to_owned();
            (name, m["mountPath"].as_str().expect("mountPath").to_owned())
        })
        .collect();
    let config_path = format!("{}/fencelock.toml", mounts["config"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let config_file = dir.path().join("fencelock.toml");
    std::fs::write(&config_file, config_map.as_str().expect("toml")).expect("write");
    let config_file = config_file.display().to_string();
    let files = BTreeMap::from([(config_path.as_str(), config_file.as_str())]);
    let claim = spec["volumeClaimTemplates"][0]["metadata"]["name"]
        .as_str()
        .expect("claim");

    let ports: BTreeMap<String, u16> = container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .map(|p| {
            let name = p["name"].as_str().expect("port name").to_owned();
            (name, p["containerPort"].as_u64().expect("port") as u16)
        })
        .collect();
    let mut members_seen = None;
    for ordinal in 0..5 {
        let origin = format!("StatefulSet pod fencelock-{ordinal}");
        let args = statefulset_args(&command[2], ordinal, replicas, tls);
        assert_eq!(args[0], "serve", "{origin}");
        let args: Vec<String> = args
            .into_iter()
            .map(|a| match files.get(a.as_str()) {
                Some(local) => (*local).to_owned(),
                None => a,
            })
            .collect();
        let config = serve_config(help, &args, &BTreeMap::new(), &BTreeMap::new(), &origin);
        assert_eq!(config.node_id, ordinal + 1);
        check_statefulset_tls(&config, &mounts, tls, &origin);
        let own = format!("fencelock-{ordinal}.{peer_service}");
        assert_eq!(
            config.peer_advertise_addr(),
            format!("{own}:{}", ports["peer"])
        );
        assert_eq!(
            config.client_advertise_addr(),
            format!("{own}:{}", ports["client"])
        );
        assert_eq!(config.network.listen.port(), ports["client"], "{origin}");
        assert_eq!(config.network.peer_listen.port(), ports["peer"], "{origin}");
        assert_eq!(
            config.network.admin_listen.map(|a| a.port()),
            Some(ports["admin"])
        );
        assert!(
            config.data_dir.starts_with(&mounts[claim]),
            "{origin}: data off the claim"
        );
        match &config.bootstrap {
            Bootstrap::Members(members) if ordinal < replicas => {
                assert_eq!(members.len() as u64, replicas, "{origin}");
                assert_eq!(members[&config.node_id], config.peer_advertise_addr());
                for (id, addr) in members {
                    assert_eq!(
                        host_of(addr),
                        format!("fencelock-{}.{peer_service}", id - 1),
                        "{origin}"
                    );
                }
                match &members_seen {
                    None => members_seen = Some(members.clone()),
                    Some(seen) => assert_eq!(seen, members, "{origin}: another --peers"),
                }
            }
            // A pod beyond the initial voters joins by itself through their client
            // addresses, so scaling out needs no `cluster add`.
            Bootstrap::Join if ordinal >= replicas => {
                let initial: Vec<String> = (0..replicas)
                    .map(|i| format!("fencelock-{i}.{peer_service}:{}", ports["client"]))
                    .collect();
                assert_eq!(config.join_via, initial, "{origin}: --join-via");
            }
            other => panic!("{origin}: bootstrap {other:?}"),
        }
    }
    // Probes: readiness on /health of the admin port.
    let ready = &container["readinessProbe"]["httpGet"];
    assert_eq!(ready["path"].as_str(), Some("/health"));
    assert_eq!(ready["port"].as_str(), Some("admin"));
    assert_eq!(
        container["livenessProbe"]["tcpSocket"]["port"].as_str(),
        Some("admin")
    );
    // Services point at container ports that exist.
    for (key, doc) in k8s {
        if !key.starts_with("Service/") {
            continue;
        }
        for p in doc["spec"]["ports"].as_sequence().expect("ports") {
            let target = p["targetPort"].as_str().expect("named targetPort");
            assert!(
                ports.contains_key(target),
                "{key}: no container port {target}"
            );
            assert_eq!(p["port"].as_u64(), Some(u64::from(ports[target])), "{key}");
        }
    }
    // The pod's user owns the volume, as the image's user does.
    let image_user = dockerfile()
        .into_iter()
        .filter(|(op, _)| op == "USER")
        .map(|(_, u)| u)
        .next_back()
        .expect("USER");
    let security = &pod["securityContext"];
    assert_eq!(
        format!(
            "{}:{}",
            security["runAsUser"].as_u64().expect("runAsUser"),
            security["runAsGroup"].as_u64().expect("runAsGroup")
        ),
        image_user
    );
}

/// With `tls`, the node's certificate, key and the cluster CA are files of the TLS
/// mount, its own by id, and the admin port speaks TLS; without, no TLS at all.
fn check_statefulset_tls(
    config: &ServerConfig,
    mounts: &BTreeMap<String, String>,
    tls: bool,
    origin: &str,
) {
    if !tls {
        assert!(
            config.tls.is_none() && !config.network.admin_tls,
            "{origin}"
        );
        return;
    }
    let tls = config.tls.as_ref().expect("TLS");
    let dir = Path::new(mounts.get("tls").expect("a tls mount"));
    let id = config.node_id;
    assert_eq!(
        tls.cert.as_deref(),
        Some(&*dir.join(format!("node-{id}.pem")))
    );
    assert_eq!(
        tls.key.as_deref(),
        Some(&*dir.join(format!("node-{id}.key")))
    );
    assert_eq!(tls.peer_ca.as_deref(), Some(&*dir.join("ca.pem")));
    assert_eq!(
        tls.client_ca, None,
        "{origin}: the kubelet's probe has no certificate"
    );
    assert!(config.network.admin_tls, "{origin}: --admin-tls");
}

/// The `[Section]` → key → values of a systemd unit (a key may repeat).
fn systemd_unit(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut unit: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line.split_once('=').expect("KEY=VALUE");
        unit.entry(section.clone())
            .or_default()
            .entry(key.to_owned())
            .or_default()
            .push(value.to_owned());
    }
    unit
}

#[test]
fn systemd_unit_runs_serve_in_its_state_directory_with_hardening() {
    let help = serve_help();
    let unit = systemd_unit(&read("deploy/systemd/fencelock.service"));
    let service = &unit["Service"];
    let one = |key: &str| -> &str {
        let values = service
            .get(key)
            .unwrap_or_else(|| panic!("no {key}= in [Service]"));
        &values[values.len() - 1]
    };
    let exec: Vec<String> = one("ExecStart")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(exec[0], "/usr/local/bin/fencelock");
    let env_text = read("deploy/systemd/fencelock.env");
    let env: BTreeMap<String, String> = env_text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').expect("KEY=VALUE");
            (k.to_owned(), v.to_owned())
        })
        .collect();
    assert!(
        one("EnvironmentFile")
            .trim_start_matches('-')
            .ends_with("/fencelock.env")
    );
    let files = BTreeMap::from([(
        "/etc/fencelock/fencelock.toml",
        "deploy/systemd/fencelock.toml",
    )]);
    let config = serve_config(&help, &exec[1..], &env, &files, "fencelock.service");
    // systemd makes /var/lib/<StateDirectory> and /etc/<ConfigurationDirectory>.
    assert!(
        config
            .data_dir
            .starts_with(format!("/var/lib/{}", one("StateDirectory")))
    );
    assert!(exec.contains(&format!(
        "/etc/{}/fencelock.toml",
        one("ConfigurationDirectory")
    )));
    assert_eq!(one("User"), "fencelock");
    assert_eq!(one("KillSignal"), "SIGTERM");
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallArchitectures", "native"),
        ("MemoryDenyWriteExecute", "yes"),
    ] {
        assert_eq!(one(key), value, "{key}");
    }
    assert_eq!(unit["Install"]["WantedBy"], ["multi-user.target"]);
}

/// The metric names `crates/server/src/metrics.rs` exports.
fn exported_metrics() -> BTreeSet<String> {
    let source = read("crates/server/src/metrics.rs");
    source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split('"').nth(1))
        .filter(|name| name.starts_with("fencelock_"))
        .map(str::to_owned)
        .collect()
}

/// Metrics the rules and dashboard read that fencelock does not export (documented in
/// `deploy/prometheus/alerts.yml` and docs/operations.md).
const EXTERNAL_METRICS: &[&str] = &[
    "up",
    "node_filesystem_avail_bytes",
    "node_filesystem_size_bytes",
];

/// The metric names an expression reads: `fencelock_*` and `node_*` identifiers, and
/// `up`; histogram series map to their histogram.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
            continue;
        }
        let w = std::mem::take(&mut word);
        if w.starts_with("fencelock_") || w.starts_with("node_") || (w == "up" && c == '{') {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| w.strip_suffix(s))
                .unwrap_or(&w);
            names.insert(base.to_owned());
        }
    }
    names
}

fn assert_known(expr: &str, origin: &str, exported: &BTreeSet<String>) -> usize {
    let names = metrics_in(expr);
    for name in &names {
        assert!(
            exported.contains(name) || EXTERNAL_METRICS.contains(&name.as_str()),
            "{origin}: metric {name} is not exported by fencelock nor documented as external"
        );
    }
    names.len()
}

#[test]
fn alerts_and_dashboard_read_only_metrics_that_exist() {
    let exported = exported_metrics();
    assert!(exported.contains("fencelock_is_leader") && exported.len() > 10);
    let rules = yaml_documents("deploy/prometheus/alerts.yml").remove(0);
    let mut alerts = 0;
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("alert name");
            let expr = rule["expr"].as_str().expect("expr");
            assert!(
                assert_known(expr, name, &exported) > 0,
                "{name} reads no metric"
            );
            alerts += 1;
        }
    }
    assert!(alerts >= 8);
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/fencelock.json")).expect("dashboard JSON");
    let mut targets = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            let origin = format!("dashboard panel {}", panel["title"]);
            assert!(assert_known(expr, &origin, &exported) > 0, "{origin}");
            targets += 1;
        }
    }
    assert!(targets >= 10);
    // Unknown names are caught.
    assert!(metrics_in("rate(fencelock_no_such_total[5m])").contains("fencelock_no_such_total"));
}

#[test]
fn serve_log_format_json_writes_json_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .to_string()
    };
    let mut child = Command::new(BIN)
        .args(["--log-format", "json", "serve", "--id", "1"])
        .args([
            "--listen",
            &free(),
            "--peer-listen",
            &free(),
            "--admin",
            &free(),
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fencelock serve");
    let stderr = child.stderr.take().expect("stderr");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    let serving = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines_rx.recv_timeout(left) else {
            let _ = child.kill();
            panic!("no \"fencelock serving\" line within 120 s; got {seen:#?}");
        };
        let parsed: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        if parsed["fields"]["message"] == "fencelock serving" {
            break parsed;
        }
        seen.push(line);
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(serving["level"], "INFO", "{serving}");
    assert!(serving["timestamp"].is_string(), "{serving}");
    assert_eq!(serving["fields"]["node_id"], 1, "{serving}");
    assert!(serving["fields"]["data_dir"].is_string(), "{serving}");
}
