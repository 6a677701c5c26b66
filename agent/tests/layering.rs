//! The dependency rules, checked on the source so a change that breaks one
//! fails here, naming the file and line:
//! - the libraries (`csi`, `cni`, `synology`) know nothing of the agent,
//!   and `csi` and `cni` nothing of Synology;
//! - inside the agent, `client/` and `cli/` reach the server only through
//!   the wire contract (`wire/`), never by importing `server` or the HTTP
//!   handlers (`http`); the client knows nothing of the CLI or the agent's
//!   wiring;
//! - `wire/` depends on nothing but `structs` and `util`;
//! - no import circle among sibling modules anywhere in the agent (as Go
//!   packages cannot have one): `client`'s hooks, network, CSI and runners,
//!   `server`'s state and scheduler depend on each other one way.
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

/// A file's module path: `client/csi/mod.rs` is `client::csi`, `lib.rs`
/// the crate root.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut path: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    if matches!(path.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        path.pop();
    }
    path
}

/// The paths written from `at` on (`a::b`, `a::{b, c::{d}}`), each as its
/// segments; `at` is moved past them.
fn path_tree(text: &[u8], at: &mut usize) -> Vec<Vec<String>> {
    let skip_space = |at: &mut usize| {
        while *at < text.len() && text[*at].is_ascii_whitespace() {
            *at += 1;
        }
    };
    skip_space(at);
    if text.get(*at) == Some(&b'{') {
        *at += 1;
        let mut out = Vec::new();
        loop {
            skip_space(at);
            match text.get(*at) {
                None => return out,
                Some(b'}') => {
                    *at += 1;
                    return out;
                }
                Some(b',') => *at += 1,
                Some(_) => {
                    let before = *at;
                    out.extend(path_tree(text, at));
                    if *at == before {
                        *at += 1;
                    }
                }
            }
        }
    }
    let start = *at;
    while *at < text.len() && (text[*at].is_ascii_alphanumeric() || text[*at] == b'_' || text[*at] == b'*') {
        *at += 1;
    }
    if *at == start {
        return Vec::new();
    }
    let segment = String::from_utf8_lossy(&text[start..*at]).into_owned();
    if text[*at..].starts_with(b"::") {
        *at += 2;
        let rest = path_tree(text, at);
        if !rest.is_empty() {
            return rest.into_iter().map(|tail| std::iter::once(segment.clone()).chain(tail).collect()).collect();
        }
    }
    vec![vec![segment]]
}

/// Every path a source names from `crate`, `super` or `self`, made absolute
/// against the file's `module`, with its line. Comment lines are left out.
fn named_paths(source: &str, module: &[String]) -> Vec<(usize, Vec<String>)> {
    let code: String =
        source.lines().map(|l| if l.trim_start().starts_with("//") { "" } else { l }).collect::<Vec<_>>().join("\n");
    let text = code.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let starts_path = ["crate::", "super::", "self::"].iter().any(|p| text[i..].starts_with(p.as_bytes()));
        let fresh = i == 0 || !(text[i - 1].is_ascii_alphanumeric() || text[i - 1] == b'_' || text[i - 1] == b':');
        if !(starts_path && fresh) {
            i += 1;
            continue;
        }
        let line = code[..i].matches('\n').count() + 1;
        let mut at = i;
        for segments in path_tree(text, &mut at) {
            let mut absolute: Vec<String> = Vec::new();
            let mut rest = segments.as_slice();
            match rest.first().map(String::as_str) {
                Some("crate") => rest = &rest[1..],
                _ => absolute = module.to_vec(),
            }
            while let Some(first) = rest.first() {
                match first.as_str() {
                    "super" => {
                        absolute.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
            absolute.extend(rest.iter().cloned());
            out.push((line, absolute));
        }
        i = at.max(i + 1);
    }
    out
}

/// The import circles among sibling modules of the agent: for every module,
/// its children must depend on each other without a circle, a child counting
/// what any file below it names. (A child naming its parent, or a parent its
/// child, is how Rust nests modules and is not a circle.) Each circle is
/// reported with one `file:line` per edge.
fn sibling_circles() -> Vec<String> {
    use std::collections::BTreeMap;
    let src = root().join("agent/src");
    // `tests.rs` files are test modules of their parent.
    let files: Vec<PathBuf> = rust_files(&src).into_iter().filter(|f| !f.ends_with("tests.rs")).collect();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    // (parent, from child, to child) → one place that makes the edge.
    let mut edges: BTreeMap<(Vec<String>, String, String), String> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let shown = file.strip_prefix(root()).unwrap().display().to_string();
        for (line, path) in named_paths(&non_test_source(file), &module) {
            let Some(target) = (0..=path.len()).rev().map(|n| &path[..n]).find(|p| modules.contains(*p)) else {
                continue;
            };
            let common = module.iter().zip(target).take_while(|(a, b)| a == b).count();
            if common < module.len() && common < target.len() {
                let key = (module[..common].to_vec(), module[common].clone(), target[common].clone());
                edges.entry(key).or_insert_with(|| format!("{shown}:{line}: {}", path.join("::")));
            }
        }
    }
    let mut circles = Vec::new();
    let parents: BTreeSet<Vec<String>> = edges.keys().map(|(p, _, _)| p.clone()).collect();
    for parent in parents {
        let next = |from: &str| -> Vec<String> {
            edges.keys().filter(|(p, f, _)| *p == parent && f == from).map(|(_, _, t)| t.clone()).collect()
        };
        let children: BTreeSet<String> =
            edges.keys().filter(|(p, _, _)| *p == parent).map(|(_, f, _)| f.clone()).collect();
        let reaches = |from: &str, to: &str| {
            let (mut seen, mut todo) = (BTreeSet::new(), vec![from.to_string()]);
            while let Some(m) = todo.pop() {
                if m == to {
                    return true;
                }
                if seen.insert(m.clone()) {
                    todo.extend(next(&m));
                }
            }
            false
        };
        for (p, from, to) in edges.keys().filter(|(p, _, _)| *p == parent) {
            if children.contains(to) && reaches(to, from) {
                let at = if p.is_empty() { "crate".to_string() } else { p.join("::") };
                circles.push(format!(
                    "{at}: {from} -> {to} (back again): {}",
                    edges[&(p.clone(), from.clone(), to.clone())]
                ));
            }
        }
    }
    circles
}

#[test]
fn no_import_circle_among_the_agents_modules() {
    let circles = sibling_circles();
    assert!(circles.is_empty(), "edges that close an import circle:\n{}", circles.join("\n"));
}

#[test]
fn the_circle_finder_resolves_relative_paths() {
    let module: Vec<String> = ["client", "csi", "volume_hook"].map(String::from).to_vec();
    let source = "use super::super::allocrunner::{hooks::Hook, X};\n// crate::server::x\nfn f() { self::g(); crate::wire::csi::y() }\n";
    let found: Vec<(usize, String)> =
        named_paths(source, &module).into_iter().map(|(l, p)| (l, p.join("::"))).collect();
    let expected = [
        (1, "client::allocrunner::hooks::Hook"),
        (1, "client::allocrunner::X"),
        (3, "client::csi::volume_hook::g"),
        (3, "wire::csi::y"),
    ]
    .map(|(l, p)| (l, p.to_string()));
    assert_eq!(found, expected);
}
