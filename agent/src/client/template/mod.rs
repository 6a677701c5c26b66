//! `template` blocks: each task's templates rendered into its directory
//! (inside the allocation directory only, with the template's mode and
//! owner) before it starts, and again when what they read changes.
//! `engine` is the language, `set` follows the servers for one task,
//! `change` acts on the task when a template changes.

mod change;
mod engine;
mod set;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

pub use change::watch;
pub use set::{RenderError, RpcTemplateReader, TemplateReader, TemplateSet};

use super::taskenv;
use crate::structs::artifact::in_allocation;
use crate::structs::{Node, Template};
use crate::wire::template::{TemplateRead, TemplateValue};

/// A template that could not be rendered or written.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("template {destination}: {reason}")]
pub struct TemplateError {
    destination: String,
    reason: String,
}

fn error(tmpl: &Template, reason: String) -> TemplateError {
    TemplateError { destination: tmpl.dest_path.clone(), reason }
}

/// The template's text: its `data`, or its `source` file in the task's
/// directory.
pub fn source(
    tmpl: &Template,
    alloc_root: &Path,
    task: &str,
    env: &BTreeMap<String, String>,
    node: &Node,
) -> Result<String, TemplateError> {
    if !tmpl.embedded_tmpl.is_empty() {
        return Ok(tmpl.embedded_tmpl.clone());
    }
    let src = taskenv::interpolate(&tmpl.source_path, env, node);
    let path = in_allocation(alloc_root, task, &src)
        .ok_or_else(|| error(tmpl, format!("source {src} escapes the allocation directory")))?;
    std::fs::read_to_string(&path).map_err(|e| error(tmpl, format!("source {src}: {e}")))
}

/// Renders `text` of `tmpl` with the task's environment, node values
/// (`env "attr.x"`, `env "meta.x"`, `env "node.x"`) and server reads.
pub fn render(
    tmpl: &Template,
    text: &str,
    env: &BTreeMap<String, String>,
    node: &Node,
    data: &BTreeMap<TemplateRead, TemplateValue>,
) -> Result<engine::Rendered, TemplateError> {
    let lookup = |name: &str| -> String {
        if let Some(v) = env.get(name) {
            return v.clone();
        }
        let resolved = taskenv::interpolate(&format!("${{{name}}}"), &BTreeMap::new(), node);
        if resolved.starts_with("${") {
            String::new()
        } else {
            resolved
        }
    };
    let delims = (
        if tmpl.left_delim.is_empty() { "{{" } else { tmpl.left_delim.as_str() },
        if tmpl.right_delim.is_empty() { "}}" } else { tmpl.right_delim.as_str() },
    );
    let inputs = engine::Inputs { env: &lookup, data, err_missing_key: tmpl.err_missing_key };
    engine::render(text, delims, &inputs).map_err(|reason| error(tmpl, reason))
}

/// Writes what `tmpl` rendered to its destination.
pub fn write(
    tmpl: &Template,
    rendered: &str,
    alloc_root: &Path,
    task: &str,
    env: &BTreeMap<String, String>,
    node: &Node,
) -> Result<(), TemplateError> {
    let err = |reason: String| error(tmpl, reason);
    let dest = taskenv::interpolate(&tmpl.dest_path, env, node);
    let path = in_allocation(alloc_root, task, &dest)
        .ok_or_else(|| err(format!("{dest} escapes the allocation directory")))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| err(e.to_string()))?;
    }
    std::fs::write(&path, rendered).map_err(|e| err(e.to_string()))?;
    if let Some(mode) = tmpl.mode() {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(|e| err(e.to_string()))?;
    }
    let owner = |id: Option<i64>| id.and_then(|i| u32::try_from(i).ok());
    let (uid, gid) = (owner(tmpl.uid), owner(tmpl.gid));
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::chown(&path, uid, gid).map_err(|e| err(format!("setting its owner: {e}")))?;
    }
    Ok(())
}

/// Parses an `env = true` template's output (`KEY=value` lines).
pub fn parse_env_file(rendered: &str) -> BTreeMap<String, String> {
    rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_text(text: &str, env: &BTreeMap<String, String>, node: &Node) -> Result<String, TemplateError> {
        let tmpl = Template { dest_path: "local/x".into(), ..Template::default() };
        render(&tmpl, text, env, node, &BTreeMap::new()).map(|r| r.text)
    }

    #[test]
    fn renders_env_and_node_values() {
        let mut node = Node::default();
        node.attributes.insert("unique.hostname".into(), "box".into());
        let mut env = BTreeMap::new();
        env.insert("NOMAD_ALLOC_ID".into(), "abc".into());
        let text = "id={{ env \"NOMAD_ALLOC_ID\" }} host={{env \"attr.unique.hostname\"}} miss={{ env \"NOPE\" }}";
        assert_eq!(render_text(text, &env, &node).unwrap(), "id=abc host=box miss=");
        let trimmed = render_text("a  {{- env \"NOMAD_ALLOC_ID\" -}}  b", &env, &node).unwrap();
        assert_eq!(trimmed, "aabcb");
    }

    #[test]
    fn unsupported_actions_are_errors_naming_the_template() {
        let e = render_text("{{ key \"a/b\" }}", &BTreeMap::new(), &Node::default()).unwrap_err();
        assert!(e.to_string().contains("local/x"), "{e}");
    }

    #[test]
    fn writes_inside_the_allocation_with_mode_and_owner() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("web/local")).unwrap();
        std::fs::write(root.join("web/local/in.tpl"), "from {{ env \"NOMAD_TASK_NAME\" }}").unwrap();
        let env = BTreeMap::from([("NOMAD_TASK_NAME".to_string(), "web".to_string())]);
        let tmpl = Template {
            source_path: "local/in.tpl".into(),
            dest_path: "/local/out.conf".into(),
            perms: "0600".into(),
            uid: Some(4321),
            gid: Some(4322),
            ..Template::default()
        };
        let node = Node::default();
        let text = source(&tmpl, root, "web", &env, &node).unwrap();
        let rendered = render(&tmpl, &text, &env, &node, &BTreeMap::new()).unwrap().text;
        assert_eq!(rendered, "from web");
        write(&tmpl, &rendered, root, "web", &env, &node).unwrap();
        let meta = std::fs::metadata(root.join("web/local/out.conf")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.mode() & 0o7777, meta.uid(), meta.gid()), (0o600, 4321, 4322));
        let escaping = Template { dest_path: "../../x".into(), embedded_tmpl: "x".into(), ..Template::default() };
        let e = write(&escaping, "x", root, "web", &env, &node).unwrap_err();
        assert!(e.to_string().contains("escapes the allocation directory"), "{e}");
        let outside =
            Template { source_path: "/etc/hostname".into(), dest_path: "local/h".into(), ..Template::default() };
        let e = source(&outside, root, "web", &env, &node).unwrap_err();
        assert!(e.to_string().contains("source /etc/hostname"), "read from the task dir, not the host: {e}");
    }

    #[test]
    fn env_files() {
        let env = parse_env_file("# c\nA=1\nB = \"two\"\n\n");
        assert_eq!(env.get("A").unwrap(), "1");
        assert_eq!(env.get("B").unwrap(), "two");
    }
}
