//! `template` rendering. Templates use consul-template's delimiters; berth
//! renders the subset that needs no Consul or Vault: `{{ env "NAME" }}`
//! (task environment, including `NOMAD_*` values), and
//! `{{ env "attr.x" }}` / `{{ env "meta.x" }}` / `{{ env "node.x" }}` for
//! node values. Anything else is an error naming the template and action.
//! `write` renders a task's template into its file, inside the allocation
//! directory only, with the template's mode and owner.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::taskenv;
use crate::structs::artifact::in_allocation;
use crate::structs::{Node, Template};

/// A template that could not be rendered.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("template {destination}: {reason}")]
pub struct TemplateError {
    destination: String,
    reason: String,
}

/// Renders `tmpl` for the task `task` of the allocation in `alloc_root`
/// and writes it to its destination; returns what it rendered.
pub fn write(
    tmpl: &Template,
    alloc_root: &Path,
    task: &str,
    env: &BTreeMap<String, String>,
    node: &Node,
) -> Result<String, TemplateError> {
    let err = |reason: String| TemplateError { destination: tmpl.dest_path.clone(), reason };
    let data = if !tmpl.embedded_tmpl.is_empty() {
        tmpl.embedded_tmpl.clone()
    } else {
        let src = taskenv::interpolate(&tmpl.source_path, env, node);
        let path = in_allocation(alloc_root, task, &src)
            .ok_or_else(|| err(format!("source {src} escapes the allocation directory")))?;
        std::fs::read_to_string(&path).map_err(|e| err(format!("source {src}: {e}")))?
    };
    let delims = (
        if tmpl.left_delim.is_empty() { "{{" } else { tmpl.left_delim.as_str() },
        if tmpl.right_delim.is_empty() { "}}" } else { tmpl.right_delim.as_str() },
    );
    let rendered = render(&tmpl.dest_path, &data, delims, env, node)?;
    let dest = taskenv::interpolate(&tmpl.dest_path, env, node);
    let path = in_allocation(alloc_root, task, &dest)
        .ok_or_else(|| err(format!("{dest} escapes the allocation directory")))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| err(e.to_string()))?;
    }
    std::fs::write(&path, &rendered).map_err(|e| err(e.to_string()))?;
    if let Some(mode) = tmpl.mode() {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(|e| err(e.to_string()))?;
    }
    let owner = |id: Option<i64>| id.and_then(|i| u32::try_from(i).ok());
    let (uid, gid) = (owner(tmpl.uid), owner(tmpl.gid));
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::chown(&path, uid, gid).map_err(|e| err(format!("setting its owner: {e}")))?;
    }
    Ok(rendered)
}

/// Renders `data` with `{{ ... }}` (or custom) delimiters.
pub fn render(
    destination: &str,
    data: &str,
    delims: (&str, &str),
    env: &BTreeMap<String, String>,
    node: &Node,
) -> Result<String, TemplateError> {
    let err = |reason: String| TemplateError { destination: destination.into(), reason };
    let (left, right) = delims;
    let mut out = String::with_capacity(data.len());
    let mut rest = data;
    while let Some(start) = rest.find(left) {
        out.push_str(&rest[..start]);
        let after = &rest[start + left.len()..];
        let end = after.find(right).ok_or_else(|| err(format!("unclosed action (missing {right:?})")))?;
        let mut action = &after[..end];
        // `{{-` and `-}}` trim surrounding white space, as in Go templates.
        let trim_left = action.starts_with('-');
        let trim_right = action.ends_with('-');
        action = action.trim_start_matches('-').trim_end_matches('-').trim();
        if trim_left {
            let trimmed = out.trim_end().len();
            out.truncate(trimmed);
        }
        out.push_str(&eval(action, env, node).map_err(err)?);
        rest = &after[end + right.len()..];
        if trim_right {
            rest = rest.trim_start();
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn eval(action: &str, env: &BTreeMap<String, String>, node: &Node) -> Result<String, String> {
    if action.starts_with("/*") && action.ends_with("*/") {
        return Ok(String::new());
    }
    let mut words = action.splitn(2, char::is_whitespace);
    let func = words.next().unwrap_or("");
    let arg = words.next().unwrap_or("").trim();
    match func {
        "env" => {
            let name = arg
                .strip_prefix('"')
                .and_then(|a| a.strip_suffix('"'))
                .ok_or_else(|| format!("env takes one quoted name, found {arg:?}"))?;
            if let Some(v) = env.get(name) {
                return Ok(v.clone());
            }
            let resolved = super::taskenv::interpolate(&format!("${{{name}}}"), &BTreeMap::new(), node);
            Ok(if resolved.starts_with("${") { String::new() } else { resolved })
        }
        _ => Err(format!("unsupported template action {action:?} (berth renders {{{{ env \"NAME\" }}}} only)")),
    }
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

    #[test]
    fn renders_env_and_node_values() {
        let mut node = Node::default();
        node.attributes.insert("unique.hostname".into(), "box".into());
        let mut env = BTreeMap::new();
        env.insert("NOMAD_ALLOC_ID".into(), "abc".into());
        let out = render(
            "local/x",
            "id={{ env \"NOMAD_ALLOC_ID\" }} host={{env \"attr.unique.hostname\"}} miss={{ env \"NOPE\" }}",
            ("{{", "}}"),
            &env,
            &node,
        )
        .unwrap();
        assert_eq!(out, "id=abc host=box miss=");
        let trimmed = render("x", "a  {{- env \"NOMAD_ALLOC_ID\" -}}  b", ("{{", "}}"), &env, &node).unwrap();
        assert_eq!(trimmed, "aabcb");
    }

    #[test]
    fn unsupported_actions_are_errors() {
        let e = render("local/x", "{{ key \"a/b\" }}", ("{{", "}}"), &BTreeMap::new(), &Node::default()).unwrap_err();
        assert!(e.to_string().contains("local/x"), "{e}");
        assert!(render("y", "{{ env \"A\" ", ("{{", "}}"), &BTreeMap::new(), &Node::default()).is_err());
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
        assert_eq!(write(&tmpl, root, "web", &env, &Node::default()).unwrap(), "from web");
        let meta = std::fs::metadata(root.join("web/local/out.conf")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!((meta.mode() & 0o7777, meta.uid(), meta.gid()), (0o600, 4321, 4322));
        let escaping = Template { dest_path: "../../x".into(), embedded_tmpl: "x".into(), ..Template::default() };
        let e = write(&escaping, root, "web", &env, &Node::default()).unwrap_err();
        assert!(e.to_string().contains("escapes the allocation directory"), "{e}");
        let outside =
            Template { source_path: "/etc/hostname".into(), dest_path: "local/h".into(), ..Template::default() };
        let e = write(&outside, root, "web", &env, &Node::default()).unwrap_err();
        assert!(e.to_string().contains("source /etc/hostname"), "read from the task dir, not the host: {e}");
    }

    #[test]
    fn env_files() {
        let env = parse_env_file("# c\nA=1\nB = \"two\"\n\n");
        assert_eq!(env.get("A").unwrap(), "1");
        assert_eq!(env.get("B").unwrap(), "two");
    }
}
