//! The dependency rules, checked on the source so a change that breaks one
//! fails here, naming the file and line:
//! - the libraries (`csi`, `cni`, `synology`) know nothing of the agent,
//!   and `csi` and `cni` nothing of Synology;
//! - inside the agent, `client/` and `cli/` reach the server only through
//!   the wire contract (`wire/`), never by importing `server` or the HTTP
//!   handlers (`http`); the client knows nothing of the CLI or the agent's
//!   wiring;
//! - `wire/` depends on nothing but `structs` and `util`.
//!
//! Test modules (`#[cfg(test)]`) are left out: a unit test may build its
//! fixtures from anywhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())).flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The file's text up to its `#[cfg(test)]` module.
fn non_test_source(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}

/// The identifier a path starts with.
fn head(path: &str) -> Option<String> {
    let head: String = path.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!head.is_empty()).then_some(head)
}

/// The agent's top-level modules a file names through `crate::`, with the
/// line each is first named on: `crate::server::x`, and the heads of a
/// `use crate::{server::x, wire}` group.
fn crate_modules(source: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let line_of = |offset: usize| source[..offset].matches('\n').count() + 1;
    let mut rest = 0;
    while let Some(at) = source[rest..].find("crate::") {
        let start = rest + at + "crate::".len();
        let tail = &source[start..];
        if let Some(group) = tail.strip_prefix('{') {
            // Split the group at its top-level commas; each item's head.
            let (mut depth, mut item_start) = (0usize, 0usize);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        found.extend(head(&group[item_start..i]).map(|h| (line_of(start), h)));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.extend(head(&group[item_start..i]).map(|h| (line_of(start), h)));
                        item_start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            found.extend(head(tail).map(|h| (line_of(start), h)));
        }
        rest = start;
    }
    found
}

/// Every place under `dir` (in the agent's `src/`) that names one of
/// `forbidden`, as `path:line: crate::module`.
fn violations(dir: &str, forbidden: &[&str]) -> Vec<String> {
    let src = root().join("agent/src");
    rust_files(&src.join(dir))
        .into_iter()
        .flat_map(|file| {
            let source = non_test_source(&file);
            let shown = file.strip_prefix(root()).unwrap().display().to_string();
            crate_modules(&source)
                .into_iter()
                .filter(|(_, m)| forbidden.contains(&m.as_str()))
                .map(move |(line, m)| format!("{shown}:{line}: crate::{m}"))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn the_client_reaches_the_server_only_through_the_wire_contract() {
    let found = violations("client", &["server", "http", "cli", "agent", "doctor", "install"]);
    assert!(found.is_empty(), "client/ imports what it must not:\n{}", found.join("\n"));
}

#[test]
fn the_cli_reaches_the_server_only_over_http() {
    let found = violations("cli", &["server", "http"]);
    assert!(found.is_empty(), "cli/ imports what it must not:\n{}", found.join("\n"));
}

#[test]
fn the_wire_contract_depends_on_structs_and_util_only() {
    let modules: BTreeSet<String> = rust_files(&root().join("agent/src/wire"))
        .iter()
        .flat_map(|f| crate_modules(&non_test_source(f)))
        .map(|(_, m)| m)
        .collect();
    let others: Vec<_> = modules.iter().filter(|m| !["structs", "util", "wire"].contains(&m.as_str())).collect();
    assert!(others.is_empty(), "wire/ imports {others:?}");
}

/// The crates a crate's manifest depends on (all dependency tables): each
/// key with the line it is on.
fn dependencies(krate: &str) -> Vec<(String, String)> {
    let manifest = std::fs::read_to_string(root().join(krate).join("Cargo.toml")).unwrap();
    let mut in_deps = false;
    let mut out = Vec::new();
    for line in manifest.lines() {
        if line.starts_with('[') {
            in_deps = line.trim_matches(['[', ']']).ends_with("dependencies");
        } else if let Some((key, _)) = line.split_once('=').filter(|_| in_deps) {
            out.push((key.trim().to_string(), line.to_string()));
        }
    }
    out
}

#[test]
fn the_libraries_know_nothing_of_the_agent() {
    let rules: [(&str, &[&str]); 3] = [
        ("csi", &["berth", "berth-cni", "berth-synology"]),
        ("cni", &["berth", "berth-csi", "berth-synology"]),
        ("synology", &["berth", "berth-cni"]),
    ];
    for (krate, forbidden) in rules {
        let deps = dependencies(krate);
        assert!(!deps.is_empty(), "{krate}/Cargo.toml: no dependencies read");
        for (key, line) in deps {
            assert!(!forbidden.contains(&key.as_str()), "{krate}/Cargo.toml depends on what it must not: {line}");
        }
        for file in rust_files(&root().join(krate).join("src")) {
            let source = std::fs::read_to_string(&file).unwrap();
            assert!(!source.contains("berth::"), "{} names the agent crate", file.display());
        }
    }
}

#[test]
fn the_scanner_sees_paths_and_groups() {
    let source = "use crate::server::x;\nuse crate::{wire::csi, structs::{A, B}};\nfn f() { crate::util::g() }\n";
    let found: Vec<(usize, String)> = crate_modules(source);
    let expected = [(1, "server"), (2, "wire"), (2, "structs"), (3, "util")].map(|(l, m)| (l, m.to_string()));
    assert_eq!(found, expected);
    assert_eq!(dependencies("synology").iter().filter(|(k, _)| k == "berth-csi").count(), 1);
}
