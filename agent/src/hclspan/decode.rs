//! Walking a body: typed attribute getters, blocks by type (with
//! `dynamic` blocks expanded in place), free-form decoding and the
//! unknown-keys check.
//!
//! Every getter consumes the key it reads; `finish` then reports whatever
//! the caller never asked for, as `unsupported argument "foo" in task "redis"`.
//! Type errors name the field and its location
//! (`job.nomad:4:11: count: expected a number, found a string`).

use std::collections::BTreeMap;
use std::rc::Rc;

use hcl::Value;
use hcl_edit::expr::Expression;
use hcl_edit::structure::{Attribute, Body, Structure};
use hcl_edit::Span;

use super::error::{HclError, Pos};
use super::eval::{kind, Scope};
use super::source::Source;

/// A cursor over one block body (or the file's root body).
pub struct Decoder<'a> {
    src: &'a Source,
    scope: ScopeRef<'a>,
    body: &'a Body,
    /// `task "redis"`, `resources`, ...; empty at the root.
    what: String,
    used: Vec<bool>,
    /// A `dynamic` block that could not be expanded, reported by `finish`.
    deferred: Option<HclError>,
}

/// The scope a body is evaluated in: the caller's, or one a `dynamic`
/// block made by adding its iterator.
#[derive(Clone)]
enum ScopeRef<'a> {
    Caller(&'a Scope),
    Iteration(Rc<Scope>),
}

impl std::ops::Deref for ScopeRef<'_> {
    type Target = Scope;
    fn deref(&self) -> &Scope {
        match self {
            ScopeRef::Caller(s) => s,
            ScopeRef::Iteration(s) => s,
        }
    }
}

/// A block taken from a body: its type, labels, position and a decoder for its body.
pub struct Block<'a> {
    /// The block type (`task`, `port`, ...).
    pub ident: &'a str,
    /// The block's labels, in order.
    pub labels: Vec<String>,
    /// Where the block starts.
    pub pos: Pos,
    /// A decoder over the block's body.
    pub body: Decoder<'a>,
    src: &'a Source,
}

impl<'a> Block<'a> {
    /// The single label of a block such as `task "redis"`.
    pub fn label(&self) -> Result<String, HclError> {
        match self.labels.as_slice() {
            [label] => Ok(label.clone()),
            _ => Err(self.error(format!("block \"{}\" needs exactly one label", self.ident))),
        }
    }

    /// Fails unless the block has no labels.
    pub fn no_labels(&self) -> Result<(), HclError> {
        if self.labels.is_empty() {
            Ok(())
        } else {
            Err(self.error(format!("block \"{}\" takes no labels", self.ident)))
        }
    }

    /// An error at the block's start.
    pub fn error(&self, message: impl Into<String>) -> HclError {
        HclError::new(self.src.name(), self.pos, message)
    }
}

impl<'a> Decoder<'a> {
    /// A decoder over the root body of `src`.
    pub fn root(src: &'a Source, scope: &'a Scope) -> Self {
        Decoder::new(src, ScopeRef::Caller(scope), src.body(), String::new())
    }

    fn new(src: &'a Source, scope: ScopeRef<'a>, body: &'a Body, what: String) -> Self {
        Decoder { src, scope, body, what, used: vec![false; body.len()], deferred: None }
    }

    /// The source being decoded.
    pub fn source(&self) -> &'a Source {
        self.src
    }

    /// The attribute `key` (the parser rejects duplicates), marked used.
    fn attr(&mut self, key: &str) -> Option<&'a Attribute> {
        let (i, attr) = self
            .body
            .iter()
            .enumerate()
            .find_map(|(i, item)| item.as_attribute().filter(|a| a.has_key(key)).map(|a| (i, a)))?;
        self.used[i] = true;
        Some(attr)
    }

    fn eval_attr(&mut self, key: &str) -> Result<Option<(Value, &'a Expression)>, HclError> {
        match self.attr(key) {
            Some(attr) => Ok(Some((self.scope.eval(self.src, &attr.value)?, &attr.value))),
            None => Ok(None),
        }
    }

    fn type_error(&self, key: &str, expr: &Expression, expected: &str, found: &Value) -> HclError {
        self.src.error(expr.span(), format!("{key}: expected {expected}, found {}", kind(found)))
    }

    /// True if the body has an attribute or block named `key` (without consuming it).
    pub fn has(&self, key: &str) -> bool {
        self.body.has_attribute(key) || self.body.has_blocks(key)
    }

    /// Where the attribute `key` starts, if the body has it (not consumed).
    pub fn attribute_pos(&self, key: &str) -> Option<Pos> {
        self.body.get_attribute(key).map(|a| self.src.span_pos(a.span()))
    }

    /// The source text of an attribute's expression, unevaluated (for
    /// type expressions such as `type = list(string)`).
    pub fn source_text(&mut self, key: &str) -> Option<String> {
        let attr = self.attr(key)?;
        Some(attr.value.span().map_or_else(String::new, |s| self.src.snippet(s).trim().to_string()))
    }

    /// Consumes every remaining attribute, unevaluated, for callers that
    /// evaluate in their own order (e.g. `locals` referring to each other).
    pub fn take_attributes(&mut self) -> Vec<&'a Attribute> {
        let mut out = Vec::new();
        for (i, item) in self.body.iter().enumerate() {
            if let (Structure::Attribute(attr), false) = (item, self.used[i]) {
                self.used[i] = true;
                out.push(attr);
            }
        }
        out
    }

    /// An attribute as a string (numbers and bools convert, as in HCL).
    pub fn string(&mut self, key: &str) -> Result<Option<String>, HclError> {
        let Some((value, expr)) = self.eval_attr(key)? else {
            return Ok(None);
        };
        match to_string(&value) {
            Some(s) => Ok(Some(s)),
            None => Err(self.type_error(key, expr, "a string", &value)),
        }
    }

    /// An attribute as a bool (`"true"`/`"false"` strings convert).
    pub fn bool(&mut self, key: &str) -> Result<Option<bool>, HclError> {
        let Some((value, expr)) = self.eval_attr(key)? else {
            return Ok(None);
        };
        match &value {
            Value::Bool(b) => Ok(Some(*b)),
            Value::String(s) if s == "true" || s == "false" => Ok(Some(s == "true")),
            _ => Err(self.type_error(key, expr, "a bool", &value)),
        }
    }

    /// An attribute as a whole number (numeric strings convert).
    pub fn int(&mut self, key: &str) -> Result<Option<i64>, HclError> {
        let Some((value, expr)) = self.eval_attr(key)? else {
            return Ok(None);
        };
        let parsed = match &value {
            Value::Number(n) => n.as_i64().or_else(|| whole(n.as_f64())),
            Value::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        match (parsed, &value) {
            (Some(n), _) => Ok(Some(n)),
            (None, Value::Number(_)) => Err(self.src.error(expr.span(), format!("{key}: expected a whole number"))),
            (None, _) => Err(self.type_error(key, expr, "a number", &value)),
        }
    }

    /// An attribute as a whole number that must fit `T` (e.g. non-negative for `u32`).
    pub fn number<T: TryFrom<i64>>(&mut self, key: &str) -> Result<Option<T>, HclError> {
        let span = self.body.get_attribute(key).and_then(|a| a.value.span());
        match self.int(key)? {
            Some(n) => {
                T::try_from(n).map(Some).map_err(|_| self.src.error(span, format!("{key}: {n} is out of range")))
            }
            None => Ok(None),
        }
    }

    /// An attribute holding a Go duration string ("30s", "1h30m") as
    /// nanoseconds; a bare number is taken as nanoseconds.
    pub fn duration(&mut self, key: &str) -> Result<Option<i64>, HclError> {
        let Some((value, expr)) = self.eval_attr(key)? else {
            return Ok(None);
        };
        match &value {
            Value::String(s) => crate::util::parse_duration(s)
                .map(Some)
                .map_err(|err| self.src.error(expr.span(), format!("{key}: {err}"))),
            Value::Number(n) if n.as_i64().is_some() => Ok(n.as_i64()),
            _ => Err(self.type_error(key, expr, "a duration string", &value)),
        }
    }

    /// An attribute holding a list of strings.
    pub fn strings(&mut self, key: &str) -> Result<Option<Vec<String>>, HclError> {
        let Some((value, expr)) = self.eval_attr(key)? else {
            return Ok(None);
        };
        let Value::Array(items) = &value else {
            return Err(self.type_error(key, expr, "a list of strings", &value));
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            match to_string(item) {
                Some(s) => out.push(s),
                None => return Err(self.type_error(key, expr, "a list of strings", item)),
            }
        }
        Ok(Some(out))
    }

    /// A map of strings, written as an attribute (`env = { K = "v" }`), as
    /// one or more blocks (`env { K = "v" }`) or, in HCL1 style, as a block
    /// with quoted keys. All occurrences are merged.
    pub fn string_map(&mut self, key: &str) -> Result<Option<BTreeMap<String, String>>, HclError> {
        let mut out: Option<BTreeMap<String, String>> = None;
        if let Some((value, expr)) = self.eval_attr(key)? {
            let Value::Object(object) = &value else {
                return Err(self.type_error(key, expr, "a map of strings", &value));
            };
            let map = out.get_or_insert_with(BTreeMap::new);
            for (k, v) in object {
                match to_string(v) {
                    Some(s) => map.insert(k.clone(), s),
                    None => return Err(self.type_error(&format!("{key}.{k}"), expr, "a string", v)),
                };
            }
        }
        for mut block in self.blocks(key) {
            block.no_labels()?;
            let map = out.get_or_insert_with(BTreeMap::new);
            for attr in block.body.take_attributes() {
                let value = self.scope.eval(self.src, &attr.value)?;
                let field = format!("{key}.{}", attr.key.as_str());
                match to_string(&value) {
                    Some(s) => map.insert(attr.key.as_str().to_string(), s),
                    None => return Err(self.type_error(&field, &attr.value, "a string", &value)),
                };
            }
            block.body.finish()?;
        }
        Ok(out)
    }

    /// An attribute as an arbitrary JSON value (numbers stay numbers).
    pub fn value(&mut self, key: &str) -> Result<Option<serde_json::Value>, HclError> {
        let Some((value, expr)) = self.eval_attr(key)? else {
            return Ok(None);
        };
        self.to_json(&value, expr).map(Some)
    }

    /// An attribute as an evaluated HCL value.
    pub fn hcl_value(&mut self, key: &str) -> Result<Option<Value>, HclError> {
        Ok(self.eval_attr(key)?.map(|(value, _)| value))
    }

    fn to_json(&self, value: &Value, expr: &Expression) -> Result<serde_json::Value, HclError> {
        serde_json::to_value(value).map_err(|err| self.src.error(expr.span(), format!("unrepresentable value: {err}")))
    }

    /// All blocks of type `ident`, in order, each `dynamic "ident"` block
    /// expanded where it stands (an error in one is reported by `finish`).
    pub fn blocks(&mut self, ident: &str) -> Vec<Block<'a>> {
        let mut out = Vec::new();
        for (i, item) in self.body.iter().enumerate() {
            let Structure::Block(block) = item else { continue };
            if block.has_ident(ident) {
                self.used[i] = true;
                let labels: Vec<String> = block.labels.iter().map(|l| l.as_str().to_string()).collect();
                let pos = self.src.span_pos(block.span());
                out.push(self.block_of(block.ident.as_str(), labels, pos, &block.body, self.scope.clone()));
            } else if block.has_ident("dynamic") && block.labels.first().is_some_and(|l| l.as_str() == ident) {
                self.used[i] = true;
                match self.expand(block) {
                    Ok(blocks) => out.extend(blocks),
                    Err(err) => {
                        self.deferred.get_or_insert(err);
                    }
                }
            }
        }
        out
    }

    fn block_of(
        &self,
        ident: &'a str,
        labels: Vec<String>,
        pos: Pos,
        body: &'a Body,
        scope: ScopeRef<'a>,
    ) -> Block<'a> {
        let mut what = ident.to_string();
        for label in &labels {
            what.push_str(&format!(" {label:?}"));
        }
        Block { ident, labels, pos, body: Decoder::new(self.src, scope, body, what), src: self.src }
    }

    /// The blocks a `dynamic "name" { for_each iterator labels content {} }`
    /// block stands for: one per element of `for_each`, each a copy of
    /// `content` evaluated with the iterator (`<name>.key`, `<name>.value`
    /// unless `iterator` renames it) in scope.
    fn expand(&self, dynamic: &'a hcl_edit::structure::Block) -> Result<Vec<Block<'a>>, HclError> {
        let ident = dynamic.labels[0].as_str();
        let pos = self.src.span_pos(dynamic.span());
        let fail = |message: String| HclError::new(self.src.name(), pos, message);
        if dynamic.labels.len() != 1 {
            return Err(fail(format!("dynamic block \"{ident}\" takes exactly one label, the type of block it makes")));
        }
        let mut spec = Decoder::new(self.src, self.scope.clone(), &dynamic.body, format!("dynamic {ident:?}"));
        let items: Vec<(Value, Value)> = match spec.eval_attr("for_each")? {
            Some((Value::Array(items), _)) => {
                items.into_iter().enumerate().map(|(i, v)| (Value::Number(hcl::Number::from(i as u64)), v)).collect()
            }
            Some((Value::Object(map), _)) => {
                // A map is walked in key order, as HCL does.
                let mut entries: Vec<(String, Value)> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                entries.into_iter().map(|(k, v)| (Value::String(k), v)).collect()
            }
            Some((other, expr)) => return Err(spec.type_error("for_each", expr, "a list, set or map", &other)),
            None => return Err(fail(format!("dynamic block \"{ident}\" needs for_each"))),
        };
        let iterator = spec.source_text("iterator").unwrap_or_else(|| ident.to_string());
        let labels = spec.attr("labels");
        let mut contents = spec.blocks("content");
        spec.finish()?;
        let content = match contents.len() {
            1 => contents.remove(0),
            _ => return Err(fail(format!("dynamic block \"{ident}\" needs exactly one content block"))),
        };
        content.no_labels()?;
        let mut out = Vec::with_capacity(items.len());
        for (key, value) in items {
            let mut scope = (*self.scope).clone();
            scope.declare(&iterator, &BTreeMap::from([("key".to_string(), key), ("value".to_string(), value)]));
            let scope = Rc::new(scope);
            let labels = match labels {
                None => vec![],
                Some(attr) => match scope.eval(self.src, &attr.value)? {
                    Value::Array(items) => items
                        .iter()
                        .map(|l| to_string(l).ok_or_else(|| self.type_error("labels", &attr.value, "strings", l)))
                        .collect::<Result<_, _>>()?,
                    other => return Err(self.type_error("labels", &attr.value, "a list of strings", &other)),
                },
            };
            out.push(self.block_of(ident, labels, content.pos, content.body.body, ScopeRef::Iteration(scope)));
        }
        Ok(out)
    }

    /// The block of type `ident`, if present; more than one is an error.
    pub fn block(&mut self, ident: &str) -> Result<Option<Block<'a>>, HclError> {
        let mut blocks = self.blocks(ident);
        if blocks.len() > 1 {
            let second = &blocks[1];
            return Err(second.error(format!("only one \"{ident}\" block is allowed{}", self.in_what())));
        }
        Ok(blocks.pop())
    }

    /// Consumes every attribute or block named in `names`, returning each
    /// one's name and position so the caller can warn about it.
    pub fn skip(&mut self, names: &[&str]) -> Vec<(String, Pos)> {
        let mut out = Vec::new();
        for (i, item) in self.body.iter().enumerate() {
            let (name, span) = match item {
                Structure::Attribute(a) => (a.key.as_str(), a.span()),
                Structure::Block(b) => (b.ident.as_str(), b.span()),
            };
            if !self.used[i] && names.contains(&name) {
                self.used[i] = true;
                out.push((name.to_string(), self.src.span_pos(span)));
            }
        }
        out
    }

    /// Consumes the whole remaining body as free-form data, as Nomad's
    /// hclspec does for driver `config`: each attribute becomes a JSON value
    /// under its own key, and each nested block is appended, as an object,
    /// to an array under its type (`port_map { db = 3306 }` gives
    /// `"port_map": [{"db": 3306}]`). HCL1 quoted-key blocks count as blocks.
    pub fn free_form(&mut self) -> Result<BTreeMap<String, serde_json::Value>, HclError> {
        let mut out: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        for (i, item) in self.body.iter().enumerate() {
            if self.used[i] {
                continue;
            }
            self.used[i] = true;
            match item {
                Structure::Attribute(attr) => {
                    let key = attr.key.as_str();
                    let value = self.to_json(&self.scope.eval(self.src, &attr.value)?, &attr.value)?;
                    let from_block = attr.key.span().is_some_and(|s| self.src.was_hcl1_block(s.start));
                    if from_block {
                        push_block(&mut out, key, value);
                    } else if out.insert(key.to_string(), value).is_some() {
                        return Err(self.src.error(attr.span(), format!("duplicate argument \"{key}\"")));
                    }
                }
                Structure::Block(block) if block.has_ident("dynamic") => {
                    for mut made in self.expand(block)? {
                        let object = serde_json::Value::Object(made.body.free_form()?.into_iter().collect());
                        push_block(&mut out, made.ident, object);
                    }
                }
                Structure::Block(block) => {
                    let key = block.ident.as_str();
                    if !block.labels.is_empty() {
                        return Err(self.src.error(block.span(), format!("block \"{key}\" takes no labels")));
                    }
                    let mut inner = Decoder::new(self.src, self.scope.clone(), &block.body, key.to_string());
                    let object = serde_json::Value::Object(inner.free_form()?.into_iter().collect());
                    push_block(&mut out, key, object);
                }
            }
        }
        Ok(out)
    }

    fn in_what(&self) -> String {
        if self.what.is_empty() {
            String::new()
        } else {
            format!(" in {}", self.what)
        }
    }

    fn unknown(&self) -> Vec<HclError> {
        self.body
            .iter()
            .zip(&self.used)
            .filter(|(_, used)| !**used)
            .map(|(item, _)| match item {
                Structure::Attribute(a) => {
                    self.src.error(a.span(), format!("unsupported argument \"{}\"{}", a.key.as_str(), self.in_what()))
                }
                Structure::Block(b) => {
                    let name = match (b.ident.as_str(), b.labels.first()) {
                        ("dynamic", Some(label)) => format!("{} (dynamic)", label.as_str()),
                        (ident, _) => ident.to_string(),
                    };
                    self.src.error(b.span(), format!("unsupported block type \"{name}\"{}", self.in_what()))
                }
            })
            .collect()
    }

    /// Fails on the first attribute or block the caller did not consume.
    pub fn finish(&self) -> Result<(), HclError> {
        if let Some(err) = &self.deferred {
            return Err(err.clone());
        }
        match self.unknown().into_iter().next() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Like `finish`, but returns each unconsumed key as a warning
    /// (`file:line:col: unsupported argument "foo" in task "redis"`).
    pub fn finish_lenient(&self) -> Vec<String> {
        self.deferred.iter().chain(&self.unknown()).map(ToString::to_string).collect()
    }
}

fn push_block(out: &mut BTreeMap<String, serde_json::Value>, key: &str, object: serde_json::Value) {
    match out.entry(key.to_string()).or_insert_with(|| serde_json::Value::Array(Vec::new())) {
        serde_json::Value::Array(items) => items.push(object),
        other => *other = serde_json::Value::Array(vec![other.take(), object]),
    }
}

/// A float that holds a whole number small enough to be exact.
fn whole(f: Option<f64>) -> Option<i64> {
    f.filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15).map(|f| f as i64)
}

fn to_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
