//! Keeps three of ARCHITECTURE.md's invariants true by reading the server's source:
//! openraft stays behind `raft/` and `store/` (the API names no openraft type), errors
//! become gRPC statuses in one place (`api/status.rs`), without I/O, and the crate's
//! modules import each other in layers, without a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, with its text.
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                found.push((path, text));
            }
        }
    }
    assert!(!found.is_empty(), "no sources under {}", dir.display());
    found
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The code lines of `text` (line number, line), comment lines left out.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line))
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
}

/// Where `line` calls an associated function of `Status` (`Status::new(`,
/// `Status::with_details(`, `tonic::Status::internal(`, ...): a status built there.
fn builds_status(line: &str) -> bool {
    line.match_indices("Status::").any(|(at, _)| {
        let before = line[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            return false; // another type, e.g. `DiskStatus::`
        }
        let rest = &line[at + "Status::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        name.starts_with(|c: char| c.is_ascii_lowercase())
            && rest[name.len()..].trim_start().starts_with('(')
    })
}

fn names_openraft(line: &str) -> bool {
    line.contains("openraft")
}

#[test]
fn the_api_names_no_openraft_type() {
    let mut found = Vec::new();
    for (path, text) in sources(&src().join("api")) {
        for (number, line) in code_lines(&text) {
            if names_openraft(line) {
                found.push(format!("{}:{number}: {}", path.display(), line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "openraft is named in api/ (keep it behind raft/ and store/):\n{}",
        found.join("\n")
    );
}

#[test]
fn grpc_statuses_are_built_only_in_api_status() {
    let status_rs = src().join("api").join("status.rs");
    let mut found = Vec::new();
    for (path, text) in sources(&src()) {
        if path == status_rs {
            continue;
        }
        for (number, line) in code_lines(&text) {
            if builds_status(line) {
                found.push(format!("{}:{number}: {}", path.display(), line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "a gRPC status is built outside api/status.rs:\n{}",
        found.join("\n")
    );
}

#[test]
fn mapping_errors_to_statuses_does_no_io() {
    // A redirect's leader address is resolved by the handler (`api/leader.rs`) before the
    // status is built: the mapping is plain functions over values.
    let path = src().join("api").join("status.rs");
    let text = std::fs::read_to_string(&path).unwrap();
    let found: Vec<String> = code_lines(&text)
        .filter(|(_, line)| line.contains("async ") || line.contains(".await"))
        .map(|(number, line)| format!("{}:{number}: {}", path.display(), line.trim()))
        .collect();
    assert!(
        found.is_empty(),
        "api/status.rs waits on something while mapping an error:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_look_for() {
    assert!(builds_status("Err(Status::new(Code::Internal, \"x\"))"));
    assert!(builds_status("tonic::Status::with_details(code, m, d)"));
    assert!(builds_status(
        "return Err(Status::permission_denied (\"no\"));"
    ));
    assert!(!builds_status("disk: DiskStatus::default(),"));
    assert!(!builds_status("fn f() -> Result<(), Status> {"));
    assert!(!builds_status("let code = Status::Ok;"));
    assert!(names_openraft("use openraft::ChangeMembers;"));
    assert!(!names_openraft("use crate::raft::Raft;"));
    let text = "// openraft in a comment\nlet x = 1;";
    assert_eq!(code_lines(text).count(), 1);
}

/// The server's modules in layers, lowest first: a module may use (`crate::…`) only
/// modules of lower layers. ARCHITECTURE.md's code map lists the same; change both
/// together, and never so that two modules use each other.
const LAYERS: &[&[&str]] = &[
    // Leaves: fixed limits, plain status values, the trace's marks, the leader's clock,
    // certificate generation.
    &["limits", "status", "commit_trace", "leases", "certs"],
    &["space", "raft"],
    &["store", "barrier"],
    // Metrics read the applied log through the store's apply observer (hold times).
    &["metrics"],
    &["proposer"],
    &["events", "auth", "config"],
    &["tls"],
    // The admin port's TLS and credentials.
    &["admin"],
    &["node"],
    &["api", "duties"],
    &["startup"],
    // The in-process test cluster (test-support only) may use anything.
    &["testing"],
];

/// The top-level module a source file belongs to (`api/locks/mod.rs` → `api`); `None`
/// for the crate root.
fn module_of(path: &Path) -> Option<String> {
    let relative = path.strip_prefix(src()).unwrap();
    let first = relative.components().next()?.as_os_str().to_str()?;
    let module = first.strip_suffix(".rs").unwrap_or(first);
    (module != "lib").then(|| module.to_owned())
}

/// The production part of a file: its text up to a `#[cfg(test)] mod …` (unit tests may
/// use the test cluster, which sits above everything).
fn production_part(text: &str) -> &str {
    let mut offset = 0;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            return &text[..offset];
        }
        offset += line.len() + 1;
    }
    text
}

/// The top-level modules a line names through `crate::` (`use crate::raft::link::X`,
/// `crate::space::DiskSpace::new(…)`, `use crate::{a, b::c}`).
fn crate_modules(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in line.match_indices("crate::") {
        let before = line[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // `fencelock_crate::`, `$crate::`-like, or a longer path
        }
        let rest = &line[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or_default();
            for item in group.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != "self" {
                    found.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

/// Which module uses which (outside unit tests), and one line that shows each use.
fn module_uses() -> BTreeMap<(String, String), String> {
    let mut uses = BTreeMap::new();
    for (path, text) in sources(&src()) {
        let Some(module) = module_of(&path) else {
            continue;
        };
        for (number, line) in code_lines(production_part(&text)) {
            for used in crate_modules(line) {
                if used != module {
                    uses.entry((module.clone(), used))
                        .or_insert_with(|| format!("{}:{number}: {}", path.display(), line.trim()));
                }
            }
        }
    }
    uses
}

/// A circle among `edges`, if there is one (module names in order, the first repeated
/// at the end).
fn find_circle(edges: &BTreeSet<(String, String)>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeSet<(String, String)>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_owned());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for (_, to) in edges.iter().filter(|(from, _)| from == node) {
            if let Some(circle) = visit(to, edges, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for (from, _) in edges {
        if let Some(circle) = visit(from, edges, &mut Vec::new(), &mut done) {
            return Some(circle);
        }
    }
    None
}

/// Each module's layer.
fn layer_of() -> BTreeMap<&'static str, usize> {
    let mut layers = BTreeMap::new();
    for (layer, modules) in LAYERS.iter().enumerate() {
        for module in *modules {
            assert!(
                layers.insert(*module, layer).is_none(),
                "{module} listed twice"
            );
        }
    }
    layers
}

#[test]
fn every_module_is_in_a_layer() {
    let layers = layer_of();
    let mut modules = BTreeSet::new();
    for (path, _) in sources(&src()) {
        modules.extend(module_of(&path));
    }
    for module in &modules {
        assert!(
            layers.contains_key(module.as_str()),
            "module `{module}` is in no layer of LAYERS (and of ARCHITECTURE.md's code map)"
        );
    }
    for module in layers.keys() {
        assert!(
            modules.contains(*module),
            "LAYERS names `{module}`, which is gone"
        );
    }
}

#[test]
fn the_server_modules_use_each_other_in_layers_without_a_circle() {
    let uses = module_uses();
    let edges: BTreeSet<(String, String)> = uses.keys().cloned().collect();
    if let Some(circle) = find_circle(&edges) {
        let shown: Vec<&str> = circle
            .windows(2)
            .map(|step| uses[&(step[0].clone(), step[1].clone())].as_str())
            .collect();
        panic!(
            "the server's modules use each other in a circle: {}\n{}",
            circle.join(" -> "),
            shown.join("\n")
        );
    }
    let layers = layer_of();
    let upward: Vec<&str> = uses
        .iter()
        .filter(
            |((from, to), _)| match (layers.get(from.as_str()), layers.get(to.as_str())) {
                (Some(from), Some(to)) => to >= from,
                _ => false, // `every_module_is_in_a_layer` reports it
            },
        )
        .map(|(_, line)| line.as_str())
        .collect();
    assert!(
        upward.is_empty(),
        "a module uses one of its own layer or above (see LAYERS and ARCHITECTURE.md):\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_layering_check_sees_imports_and_circles() {
    assert_eq!(
        crate_modules("use crate::raft::link::LinkLimits;"),
        ["raft"]
    );
    assert_eq!(
        crate_modules("use crate::{config::TlsConfig, limits, self};"),
        ["config", "limits"]
    );
    assert_eq!(
        crate_modules("let s = crate::space::DiskSpace::new(x);"),
        ["space"]
    );
    assert!(crate_modules("use fencelock_core::Limits;").is_empty());
    assert!(crate_modules("use super::crate_thing;").is_empty());
    let text = "use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::testing;\n}\n";
    assert_eq!(production_part(text), "use crate::a;\n");
    let edges = |pairs: &[(&str, &str)]| -> BTreeSet<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(find_circle(&edges(&[("a", "b"), ("b", "c")])), None);
    assert_eq!(
        find_circle(&edges(&[("a", "b"), ("b", "c"), ("c", "a")])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
