//! `template` rendering. Templates use consul-template's delimiters; berth
//! renders the subset that needs no Consul or Vault: `{{ env "NAME" }}`
//! (task environment, including `NOMAD_*` values), and
//! `{{ env "attr.x" }}` / `{{ env "meta.x" }}` / `{{ env "node.x" }}` for
//! node values. Anything else is an error naming the template and action.

use std::collections::BTreeMap;

use crate::structs::Node;

/// A template that could not be rendered.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("template {destination}: {reason}")]
pub struct TemplateError {
    destination: String,
    reason: String,
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
    fn env_files() {
        let env = parse_env_file("# c\nA=1\nB = \"two\"\n\n");
        assert_eq!(env.get("A").unwrap(), "1");
        assert_eq!(env.get("B").unwrap(), "two");
    }
}
