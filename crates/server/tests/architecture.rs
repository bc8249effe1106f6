//! Keeps two of ARCHITECTURE.md's invariants true by reading the server's source:
//! openraft stays behind `raft/` and `store/` (the API names no openraft type), and
//! errors become gRPC statuses in one place (`api/status.rs`), without I/O.

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
