//! `variable "name" { type default description }` and `locals { }`: the
//! values behind `var.*` and `local.*`, with `-var` overrides.

use std::collections::BTreeMap;

use crate::hclspan::{Decoder, HclError, Scope, Source, Value};

/// Builds the evaluation scope of a job file from its `variable` and
/// `locals` blocks and the `-var` assignments.
pub(super) fn scope(src: &Source, overrides: &BTreeMap<String, String>) -> Result<Scope, HclError> {
    let empty = Scope::new();
    let mut root = Decoder::root(src, &empty);
    let mut vars = BTreeMap::new();
    for mut block in root.blocks("variable") {
        let name = block.label()?;
        let var_type = block.body.source_text("type");
        block.body.string("description")?;
        let default = block.body.hcl_value("default")?;
        block.body.finish()?;
        let value = match (overrides.get(&name), default) {
            (Some(text), _) => from_cli(&name, text, var_type.as_deref())?,
            (None, Some(value)) => value,
            (None, None) => {
                return Err(block
                    .error(format!("variable \"{name}\" has no default and no value was given (use -var {name}=...)")))
            }
        };
        if vars.insert(name.clone(), value).is_some() {
            return Err(block.error(format!("variable \"{name}\" is declared more than once")));
        }
    }
    if let Some(unknown) = overrides.keys().find(|k| !vars.contains_key(*k)) {
        return Err(
            src.error_at(0, format!("variable \"{unknown}\" was set with -var but is not declared in the job file"))
        );
    }
    let mut scope = Scope::new();
    scope.declare("var", &vars);
    let mut pending = Vec::new();
    for mut block in root.blocks("locals") {
        block.no_labels()?;
        pending.extend(block.body.take_attributes());
        block.body.finish()?;
    }
    // Locals may refer to each other in any order: evaluate until stuck.
    let mut locals = BTreeMap::new();
    while !pending.is_empty() {
        scope.declare("local", &locals);
        let before = pending.len();
        let mut stuck = Vec::new();
        let mut first_error = None;
        for attr in pending {
            match scope.eval(src, &attr.value) {
                Ok(value) => {
                    locals.insert(attr.key.as_str().to_string(), value);
                }
                Err(err) => {
                    first_error.get_or_insert(err);
                    stuck.push(attr);
                }
            }
        }
        if let (Some(err), true) = (first_error, stuck.len() == before) {
            return Err(err);
        }
        pending = stuck;
    }
    scope.declare("local", &locals);
    Ok(scope)
}

/// Converts a `-var` string by the variable's declared type.
fn from_cli(name: &str, text: &str, var_type: Option<&str>) -> Result<Value, HclError> {
    let kind = var_type.map(|t| t.split('(').next().unwrap_or(t).trim());
    match kind {
        None | Some("string") | Some("any") => Ok(Value::String(text.to_string())),
        Some("bool") => match text {
            "true" | "false" => Ok(Value::Bool(text == "true")),
            _ => Err(cli_error(name, text, "a bool")),
        },
        Some("number") => {
            let number = text
                .parse::<i64>()
                .map(hcl::Number::from)
                .ok()
                .or_else(|| text.parse::<f64>().ok().and_then(hcl::Number::from_f64));
            number.map(Value::Number).ok_or_else(|| cli_error(name, text, "a number"))
        }
        Some(_) => {
            // Collections are written as HCL expressions: -var 'dcs=["a","b"]'.
            let src = Source::parse(&format!("-var {name}"), &format!("v = {text}\n"))?;
            let value = src.body().get_attribute("v").map(|attr| Scope::new().eval(&src, &attr.value));
            value.unwrap_or_else(|| Err(cli_error(name, text, "an HCL value")))
        }
    }
}

fn cli_error(name: &str, text: &str, expected: &str) -> HclError {
    HclError::new(&format!("-var {name}"), Default::default(), format!("value {text:?} is not {expected}"))
}
