//! Input variables and locals: `variable "name" { type default description
//! validation }` and `variables { name = default }` declare them; their
//! values come, in rising precedence, from the defaults, `NOMAD_VAR_<name>`
//! in the environment, `-var-file` files (HCL or JSON) and `-var`
//! assignments, each converted to the declared type and checked by the
//! variable's `validation` rules. `locals { }` are evaluated after them.
//! The result is the scope behind `var.*` and `local.*`.

use std::collections::BTreeMap;

use hcl_edit::expr::{Expression, Traversal, TraversalOperator};
use hcl_edit::visit::{visit_traversal, Visit};
use hcl_edit::Span;

use crate::hclspan::{Block, Decoder, HclError, Pos, Scope, Source, Value};

/// Where a job file's variable values come from besides its defaults.
#[derive(Debug, Clone, Default)]
pub struct VarInputs {
    /// `NOMAD_VAR_<name>` values by name (prefix removed); names the file
    /// does not declare are ignored, as Nomad does.
    pub env: BTreeMap<String, String>,
    /// `-var-file` files, in order: name and content (JSON when the name
    /// ends in `.json`, HCL otherwise).
    pub files: Vec<(String, String)>,
    /// `-var name=value` assignments.
    pub args: BTreeMap<String, String>,
}

impl VarInputs {
    /// Only `-var` assignments.
    pub fn args(args: BTreeMap<String, String>) -> VarInputs {
        VarInputs { args, ..VarInputs::default() }
    }

    /// Takes the `NOMAD_VAR_*` variables of `env` (e.g. `std::env::vars()`).
    pub fn with_env(mut self, env: impl IntoIterator<Item = (String, String)>) -> VarInputs {
        for (key, value) in env {
            if let Some(name) = key.strip_prefix("NOMAD_VAR_") {
                self.env.insert(name.to_string(), value);
            }
        }
        self
    }
}

/// One declared variable while its value is being settled.
struct Declared<'a> {
    name: String,
    pos: Pos,
    /// The type expression as written (`list(string)`), or the kind of the default.
    var_type: Option<String>,
    value: Option<(Value, String)>,
    validations: Vec<Block<'a>>,
}

/// Builds the evaluation scope of a job file from its variable
/// declarations, `inputs` and its `locals` blocks.
pub(super) fn scope(src: &Source, inputs: &VarInputs) -> Result<Scope, HclError> {
    let empty = Scope::new();
    let mut root = Decoder::root(src, &empty);
    let mut declared = declarations(src, &mut root)?;
    for (name, text) in &inputs.env {
        if let Some(var) = declared.iter_mut().find(|v| &v.name == name) {
            let origin = format!("NOMAD_VAR_{name}");
            var.value = Some((from_text(&origin, text, var.var_type.as_deref())?, origin));
        }
    }
    for (file, text) in &inputs.files {
        for (name, value, pos) in var_file(file, text)? {
            let origin = format!("{file}:{}", pos.line);
            let Some(var) = declared.iter_mut().find(|v| v.name == name) else {
                return Err(HclError::new(
                    file,
                    pos,
                    format!("variable \"{name}\" is set here but not declared in the job file (add a variable \"{name}\" block)"),
                ));
            };
            var.value = Some((convert(&origin, value, var.var_type.as_deref())?, origin));
        }
    }
    for (name, text) in &inputs.args {
        let Some(var) = declared.iter_mut().find(|v| &v.name == name) else {
            return Err(
                src.error_at(0, format!("variable \"{name}\" was set with -var but is not declared in the job file"))
            );
        };
        let origin = format!("-var {name}");
        var.value = Some((from_text(&origin, text, var.var_type.as_deref())?, origin));
    }
    let mut vars = BTreeMap::new();
    for var in declared {
        let Some((value, origin)) = var.value else {
            return Err(HclError::new(
                src.name(),
                var.pos,
                format!("variable \"{}\" has no default and no value was given (use -var {}=...)", var.name, var.name),
            ));
        };
        for rule in var.validations {
            validate(&var.name, &value, &origin, rule)?;
        }
        vars.insert(var.name, value);
    }
    let mut scope = Scope::new();
    scope.declare("var", &vars);
    locals(src, &mut root, scope)
}

/// The `variable` blocks and `variables` attributes, with their defaults.
fn declarations<'a>(src: &'a Source, root: &mut Decoder<'a>) -> Result<Vec<Declared<'a>>, HclError> {
    let mut declared: Vec<Declared<'a>> = Vec::new();
    let mut add = |var: Declared<'a>| {
        if declared.iter().any(|d| d.name == var.name) {
            return Err(HclError::new(
                src.name(),
                var.pos,
                format!("variable \"{}\" is declared more than once", var.name),
            ));
        }
        declared.push(var);
        Ok(())
    };
    for mut block in root.blocks("variable") {
        let name = block.label()?;
        let declared_type = block.body.source_text("type");
        block.body.string("description")?;
        let default = block.body.hcl_value("default")?;
        let validations = block.body.blocks("validation");
        block.body.finish()?;
        let origin = format!("the default of variable \"{name}\"");
        let value = default.map(|v| convert(&origin, v, declared_type.as_deref())).transpose()?;
        let var_type = declared_type.or_else(|| value.as_ref().and_then(primitive_kind));
        add(Declared { name, pos: block.pos, var_type, value: value.map(|v| (v, origin)), validations })?;
    }
    for mut block in root.blocks("variables") {
        block.no_labels()?;
        for attr in block.body.take_attributes() {
            let name = attr.key.as_str().to_string();
            let value = Scope::new().eval(src, &attr.value)?;
            let pos = src.span_pos(attr.span());
            let origin = format!("the default of variable \"{name}\"");
            add(Declared {
                name,
                pos,
                var_type: primitive_kind(&value),
                value: Some((value, origin)),
                validations: vec![],
            })?;
        }
        block.body.finish()?;
    }
    Ok(declared)
}

/// `locals { }`: they may refer to each other in any order, so they are
/// evaluated until none is left or none more can be. A local waits until
/// the locals it refers to are known: `try` and `can` would otherwise
/// take one not evaluated yet for a failure.
fn locals(src: &Source, root: &mut Decoder<'_>, mut scope: Scope) -> Result<Scope, HclError> {
    let mut pending = Vec::new();
    for mut block in root.blocks("locals") {
        block.no_labels()?;
        pending.extend(block.body.take_attributes());
        block.body.finish()?;
    }
    let mut locals = BTreeMap::new();
    while !pending.is_empty() {
        scope.declare("local", &locals);
        let before = pending.len();
        let mut stuck = Vec::new();
        let mut first_error = None;
        let waiting: Vec<String> = pending.iter().map(|attr| attr.key.as_str().to_string()).collect();
        for attr in pending {
            if local_refs(&attr.value).iter().any(|name| waiting.contains(name)) {
                stuck.push(attr);
                continue;
            }
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
        if stuck.len() == before {
            return Err(first_error.unwrap_or_else(|| {
                let names: Vec<String> = stuck.iter().map(|attr| format!("local.{}", attr.key.as_str())).collect();
                src.error(stuck[0].span(), format!("{} refer to each other in a cycle", names.join(", ")))
            }));
        }
        pending = stuck;
    }
    scope.declare("local", &locals);
    Ok(scope)
}

/// The names of the locals `expr` refers to (`local.name`, `local["name"]`).
fn local_refs(expr: &Expression) -> Vec<String> {
    struct Refs(Vec<String>);
    impl Visit for Refs {
        fn visit_traversal(&mut self, node: &Traversal) {
            if let (Expression::Variable(root), Some(op)) = (&node.expr, node.operators.first()) {
                match op.value() {
                    TraversalOperator::GetAttr(name) if root.as_str() == "local" => self.0.push(name.to_string()),
                    TraversalOperator::Index(Expression::String(name)) if root.as_str() == "local" => {
                        self.0.push(name.value().clone())
                    }
                    _ => {}
                }
            }
            visit_traversal(self, node);
        }
    }
    let mut refs = Refs(Vec::new());
    refs.visit_expr(expr);
    refs.0
}

/// The assignments of a `-var-file`: HCL attributes (values only, no
/// references), or a JSON object.
fn var_file(file: &str, text: &str) -> Result<Vec<(String, Value, Pos)>, HclError> {
    if file.ends_with(".json") {
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).map_err(|e| {
            HclError::new(
                file,
                Pos { line: e.line(), column: e.column() },
                format!("not a JSON object of variable values: {e}"),
            )
        })?;
        return object
            .into_iter()
            .map(|(name, json)| {
                let value: Value = serde_json::from_value(json)
                    .map_err(|e| HclError::new(file, Pos::default(), format!("variable \"{name}\": {e}")))?;
                Ok((name, value, Pos::default()))
            })
            .collect();
    }
    let src = Source::parse(file, text)?;
    let empty = Scope::new();
    let mut body = Decoder::root(&src, &empty);
    if let Some(block) = body.blocks("variable").first() {
        return Err(block.error(format!(
            "a var file assigns values to variables declared in the job file; declare variable \"{}\" there and write `{} = <value>` here",
            block.labels.first().map(String::as_str).unwrap_or(""),
            block.labels.first().map(String::as_str).unwrap_or("name"),
        )));
    }
    let mut out = Vec::new();
    for attr in body.take_attributes() {
        let value = empty.eval(&src, &attr.value)?;
        out.push((attr.key.as_str().to_string(), value, src.span_pos(attr.span())));
    }
    body.finish()?;
    Ok(out)
}

/// One `validation { condition error_message }` rule applied to `value`;
/// the condition sees only the variable itself.
fn validate(name: &str, value: &Value, origin: &str, mut rule: Block<'_>) -> Result<(), HclError> {
    rule.no_labels()?;
    let message = rule.body.string("error_message")?.unwrap_or_default();
    let src = rule.body.source();
    let mut condition = None;
    for attr in rule.body.take_attributes() {
        match attr.key.as_str() {
            "condition" => condition = Some(attr),
            other => return Err(src.error(attr.span(), format!("unsupported argument \"{other}\" in validation"))),
        }
    }
    rule.body.finish()?;
    let Some(condition) = condition else {
        return Err(rule.error(format!("validation of variable \"{name}\" needs a condition")));
    };
    let text = condition.value.span().map(|s| src.snippet(s)).unwrap_or_default();
    if !text.contains(&format!("var.{name}")) {
        return Err(rule.error(format!(
            "the condition for variable \"{name}\" must refer to var.{name} in order to test incoming values"
        )));
    }
    if !looks_like_sentences(&message) {
        return Err(rule.error(
            "error_message must be at least one full sentence, starting with an uppercase letter and ending with a period or question mark",
        ));
    }
    let mut own = Scope::new();
    own.declare("var", &BTreeMap::from([(name.to_string(), value.clone())]));
    let result = own.eval(src, &condition.value).map_err(|e| HclError {
        message: format!("the condition for variable \"{name}\" can only refer to var.{name}: {}", e.message),
        ..e
    })?;
    match result {
        Value::Bool(true) => Ok(()),
        Value::Bool(false) => {
            Err(rule.error(format!("invalid value for variable \"{name}\" (from {origin}): {message}")))
        }
        other => Err(rule.error(format!(
            "the condition for variable \"{name}\" must be true or false, not {}",
            crate::hclspan::kind(&other)
        ))),
    }
}

/// Nomad's check that an error message reads as sentences.
fn looks_like_sentences(s: &str) -> bool {
    let (Some(first), Some(last)) = (s.chars().next(), s.chars().last()) else { return false };
    (!first.is_alphabetic() || first.is_uppercase()) && matches!(last, '.' | '?' | '!')
}

/// The type a default implies when no `type` is written (Nomad types the
/// variable by its default): only primitives, so collections stay `any`.
fn primitive_kind(value: &Value) -> Option<String> {
    match value {
        Value::String(_) => Some("string".into()),
        Value::Number(_) => Some("number".into()),
        Value::Bool(_) => Some("bool".into()),
        _ => None,
    }
}

/// A value given as text (`-var`, `NOMAD_VAR_*`): a literal string for
/// primitive types, an HCL expression for collections.
fn from_text(origin: &str, text: &str, var_type: Option<&str>) -> Result<Value, HclError> {
    let value = match var_type.map(type_head) {
        None | Some("string") | Some("number") | Some("bool") | Some("any") => Value::String(text.to_string()),
        Some(_) => {
            // Collections are written as HCL expressions: -var 'dcs=["a","b"]'.
            let src = Source::parse(origin, &format!("v = {text}\n"))?;
            let value = src.body().get_attribute("v").map(|attr| Scope::new().eval(&src, &attr.value));
            value.unwrap_or_else(|| {
                Err(HclError::new(origin, Pos::default(), format!("value {text:?} is not an HCL value")))
            })?
        }
    };
    convert(origin, value, var_type)
}

/// `list` of `list(string)`.
fn type_head(t: &str) -> &str {
    t.split('(').next().unwrap_or(t).trim()
}

/// What is inside the parentheses of `list(string)`.
fn type_inner(t: &str) -> Option<&str> {
    let open = t.find('(')?;
    t[open + 1..].strip_suffix(')').map(str::trim)
}

/// Converts `value` to the type expression `var_type` as HCL does
/// (numbers and bools from strings and back; collections element-wise).
fn convert(origin: &str, value: Value, var_type: Option<&str>) -> Result<Value, HclError> {
    let Some(t) = var_type else { return Ok(value) };
    let fail = |value: &Value| {
        HclError::new(
            origin,
            Pos::default(),
            format!("{origin}: {} is not compatible with the variable's type {t}", describe(value)),
        )
    };
    match (type_head(t), value) {
        ("any", v) => Ok(v),
        ("string", Value::String(s)) => Ok(Value::String(s)),
        ("string", Value::Number(n)) => Ok(Value::String(n.to_string())),
        ("string", Value::Bool(b)) => Ok(Value::String(b.to_string())),
        ("number", Value::Number(n)) => Ok(Value::Number(n)),
        ("number", Value::String(s)) => parse_number(&s).map(Value::Number).ok_or_else(|| fail(&Value::String(s))),
        ("bool", Value::Bool(b)) => Ok(Value::Bool(b)),
        ("bool", Value::String(s)) if s == "true" || s == "false" => Ok(Value::Bool(s == "true")),
        ("list" | "set", Value::Array(items)) => {
            let inner = type_inner(t);
            items.into_iter().map(|v| convert(origin, v, inner)).collect::<Result<_, _>>().map(Value::Array)
        }
        ("tuple", v @ Value::Array(_)) | ("object", v @ Value::Object(_)) => Ok(v),
        ("map", Value::Object(map)) => {
            let inner = type_inner(t);
            let mut out = hcl::Map::new();
            for (k, v) in map {
                out.insert(k, convert(origin, v, inner)?);
            }
            Ok(Value::Object(out))
        }
        (_, v) => Err(fail(&v)),
    }
}

fn parse_number(s: &str) -> Option<hcl::Number> {
    let s = s.trim();
    s.parse::<i64>().map(hcl::Number::from).ok().or_else(|| s.parse::<f64>().ok().and_then(hcl::Number::from_f64))
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("the string {s:?}"),
        other => crate::hclspan::kind(other).to_string(),
    }
}
