//! The repository's Markdown documentation stays navigable: every relative link in
//! `README.md`, `ARCHITECTURE.md` and `docs/*.md` names a file that exists (and, with a
//! `#fragment`, a heading of that file), and the README stays a first page, not a
//! notebook.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The README is the page a new user reads; details belong under `docs/`.
const README_LINES_MAX: usize = 300;

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// The Markdown files whose links are checked.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|entry| entry.expect("a docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The lines of `text` outside fenced code blocks.
fn prose_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut in_code = false;
    text.lines().filter(move |line| {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            return false;
        }
        !in_code
    })
}

/// The targets of the inline links `[text](target)` in `text`, outside code.
fn link_targets(text: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for line in prose_lines(text) {
        let mut rest = line;
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            targets.push(after[..end].to_owned());
            rest = &after[end + 1..];
        }
    }
    targets
}

/// The anchor a heading gets on the usual Markdown renderers (GitHub's rule): lower
/// case, punctuation dropped, spaces turned into hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of the headings of `text`.
fn anchors(text: &str) -> BTreeSet<String> {
    prose_lines(text)
        .filter(|line| line.starts_with('#'))
        .map(|line| anchor(line.trim_start_matches('#')))
        .collect()
}

#[test]
fn every_relative_link_in_the_docs_names_an_existing_file_and_heading() {
    let root = repository_root();
    let mut broken = Vec::new();
    for document in documents(&root) {
        let text = std::fs::read_to_string(&document).expect("a Markdown file");
        let shown = document.strip_prefix(&root).unwrap_or(&document).display();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = target.split_once('#').unwrap_or((target.as_str(), ""));
            let file = if path.is_empty() {
                document.clone()
            } else {
                document.parent().expect("a directory").join(path)
            };
            if !file.exists() {
                broken.push(format!("{shown}: {target}: no such file"));
                continue;
            }
            if !fragment.is_empty() {
                let linked = std::fs::read_to_string(&file).unwrap_or_default();
                if !anchors(&linked).contains(fragment) {
                    broken.push(format!("{shown}: {target}: no such heading"));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_stays_a_first_page() {
    let readme = std::fs::read_to_string(repository_root().join("README.md")).expect("README");
    let lines = readme.lines().count();
    assert!(
        lines <= README_LINES_MAX,
        "README.md has {lines} lines, more than {README_LINES_MAX}: move details under docs/"
    );
}

#[test]
fn anchors_follow_the_renderers_rule() {
    assert_eq!(
        anchor(" Data model (the replicated state machine)"),
        "data-model-the-replicated-state-machine"
    );
    assert_eq!(anchor("openraft 0.10, measured"), "openraft-010-measured");
    assert_eq!(
        link_targets("see [a](docs/a.md#x) and [b](b.md)\n```\n[c](c.md)\n```"),
        ["docs/a.md#x", "b.md"]
    );
}
