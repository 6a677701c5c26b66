//! The template language: the part of Go's text/template that
//! consul-template users write (text, `{{ }}` actions with `{{-`/`-}}`
//! trimming, comments, pipelines with `|`, `$variables`, `.Field` access,
//! `if`/`else`/`with`/`range` with `else`, ranges over maps in key order
//! as Go does), with Nomad's functions (`env`, `nomadVar`,
//! `nomadVarList`, `nomadService`, `nomadServices`) and the common
//! builtins. Consul and Vault functions are errors naming the function.
//!
//! Rendering is pure: the values of server reads come in `data`; a read
//! not there yet renders as nothing and is reported as missing, so the
//! caller fetches it and renders again (consul-template's dependency
//! discovery). Every read the template makes is reported, for watching.

use std::collections::{BTreeMap, BTreeSet};

use crate::structs::{ServiceRegistration, Variable};
use crate::wire::template::{TemplateRead, TemplateValue};

/// A template value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Str(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
}

impl Value {
    fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
        }
    }

    /// As Go's `%v` prints it.
    fn print(&self) -> String {
        match self {
            Value::Nil => "<no value>".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Str(s) => s.clone(),
            Value::List(l) => format!("[{}]", l.iter().map(Value::print).collect::<Vec<_>>().join(" ")),
            Value::Map(m) => {
                format!("map[{}]", m.iter().map(|(k, v)| format!("{k}:{}", v.print())).collect::<Vec<_>>().join(" "))
            }
        }
    }
}

fn variable_value(v: &Variable) -> Value {
    Value::Map(v.items.iter().map(|(k, val)| (k.clone(), Value::Str(val.clone()))).collect())
}

fn service_value(r: &ServiceRegistration) -> Value {
    let s = |v: &str| Value::Str(v.to_string());
    Value::Map(BTreeMap::from([
        ("Address".into(), s(&r.address)),
        ("Port".into(), Value::Int(i64::from(r.port))),
        ("ID".into(), s(&r.id)),
        ("Name".into(), s(&r.service_name)),
        ("Tags".into(), Value::List(r.tags.iter().map(|t| s(t)).collect())),
        ("Datacenter".into(), s(&r.datacenter)),
        ("Namespace".into(), s(&r.namespace)),
        ("NodeID".into(), s(&r.node_id)),
        ("AllocID".into(), s(&r.alloc_id)),
        ("JobID".into(), s(&r.job_id)),
    ]))
}

fn to_value(v: &TemplateValue) -> Value {
    match v {
        TemplateValue::Variable(None) => Value::Nil,
        TemplateValue::Variable(Some(var)) => variable_value(var),
        TemplateValue::Variables(vars) => Value::List(
            vars.iter()
                .map(|v| {
                    Value::Map(BTreeMap::from([
                        ("Path".into(), Value::Str(v.meta.path.clone())),
                        ("Namespace".into(), Value::Str(v.meta.namespace.clone())),
                        ("Items".into(), variable_value(v)),
                    ]))
                })
                .collect(),
        ),
        TemplateValue::Service(found) => Value::List(found.iter().map(service_value).collect()),
        TemplateValue::Services(names) => Value::List(
            names
                .iter()
                .map(|n| {
                    Value::Map(BTreeMap::from([
                        ("Name".into(), Value::Str(n.name.clone())),
                        ("Tags".into(), Value::List(n.tags.iter().map(|t| Value::Str(t.clone())).collect())),
                    ]))
                })
                .collect(),
        ),
    }
}

/// What rendering produced.
#[derive(Debug, Default, PartialEq)]
pub struct Rendered {
    pub text: String,
    /// Every server read the template made.
    pub reads: BTreeSet<TemplateRead>,
    /// Reads not in `data` (fetch them and render again), and variables
    /// that do not exist (Nomad waits for them).
    pub missing: BTreeSet<TemplateRead>,
}

/// What a template sees besides server reads.
pub struct Inputs<'a> {
    /// `env "NAME"`.
    pub env: &'a dyn Fn(&str) -> String,
    /// Server reads fetched so far.
    pub data: &'a BTreeMap<TemplateRead, TemplateValue>,
    /// A missing map key is an error rather than `<no value>`.
    pub err_missing_key: bool,
}

/// Renders `text` with the `{{`/`}}` delimiters (or `delims`).
pub fn render(text: &str, delims: (&str, &str), inputs: &Inputs<'_>) -> Result<Rendered, String> {
    let items = lex(text, delims)?;
    let mut pos = 0;
    let (nodes, end) = parse(&items, &mut pos)?;
    if let Some(stray) = end {
        return Err(format!("unexpected {{{{ {stray} }}}}"));
    }
    let mut run = Run { inputs, out: Rendered::default(), vars: vec![BTreeMap::new()] };
    run.walk(&nodes, &Value::Nil)?;
    Ok(run.out)
}

// === lexing: text and actions ===

enum Item {
    Text(String),
    Action(String),
}

fn lex(text: &str, (left, right): (&str, &str)) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    let mut rest = text;
    let mut trim_next = false;
    while let Some(start) = rest.find(left) {
        let mut before = &rest[..start];
        if trim_next {
            before = before.trim_start();
        }
        let after = &rest[start + left.len()..];
        let end = after.find(right).ok_or_else(|| format!("unclosed action (missing {right:?})"))?;
        let mut action = &after[..end];
        if let Some(a) = action.strip_prefix("- ").or_else(|| (action == "-").then_some("")) {
            before = before.trim_end();
            action = a;
        }
        trim_next = false;
        if let Some(a) = action.strip_suffix(" -") {
            trim_next = true;
            action = a;
        }
        if !before.is_empty() {
            items.push(Item::Text(before.to_string()));
        }
        let action = action.trim();
        if !(action.starts_with("/*") && action.ends_with("*/")) {
            items.push(Item::Action(action.to_string()));
        }
        rest = &after[end + right.len()..];
    }
    let tail = if trim_next { rest.trim_start() } else { rest };
    if !tail.is_empty() {
        items.push(Item::Text(tail.to_string()));
    }
    Ok(items)
}

// === parsing: the tree ===

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Str(String),
    Int(i64),
    Ident(String),
    Field(Vec<String>),
    Var(String, Vec<String>),
    Pipe,
    Assign,
    Comma,
    Open,
    Close,
}

fn tokens(action: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = action.chars().collect();
    let mut i = 0;
    let path = |s: &str| -> Vec<String> { s.split('.').filter(|p| !p.is_empty()).map(str::to_string).collect() };
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '|' => {
                out.push(Token::Pipe);
                i += 1;
            }
            ',' => {
                out.push(Token::Comma);
                i += 1;
            }
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                out.push(Token::Assign);
                i += 2;
            }
            '=' => {
                out.push(Token::Assign);
                i += 1;
            }
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(format!("unterminated string in {action:?}")),
                        Some('"') => break,
                        Some('\\') => {
                            i += 1;
                            match chars.get(i) {
                                Some('n') => s.push('\n'),
                                Some('t') => s.push('\t'),
                                Some(other) => s.push(*other),
                                None => return Err(format!("unterminated string in {action:?}")),
                            }
                        }
                        Some(other) => s.push(*other),
                    }
                    i += 1;
                }
                i += 1;
                out.push(Token::Str(s));
            }
            '`' => {
                let start = i + 1;
                let end = chars[start..].iter().position(|c| *c == '`').ok_or("unterminated raw string")?;
                out.push(Token::Str(chars[start..start + end].iter().collect()));
                i = start + end + 1;
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !" \t\n\r|,()=".contains(chars[i])
                    && !(chars[i] == ':' && chars.get(i + 1) == Some(&'='))
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                if let Some(rest) = word.strip_prefix('$') {
                    let (name, fields) = rest.split_once('.').unwrap_or((rest, ""));
                    out.push(Token::Var(name.to_string(), path(fields)));
                } else if word.starts_with('.') {
                    out.push(Token::Field(path(&word)));
                } else if let Ok(n) = word.parse::<i64>() {
                    out.push(Token::Int(n));
                } else {
                    out.push(Token::Ident(word));
                }
            }
        }
    }
    Ok(out)
}

#[derive(Debug, Clone)]
enum Operand {
    Literal(Value),
    Field(Vec<String>),
    Var(String, Vec<String>),
    Func(String),
    Sub(Pipeline),
}

#[derive(Debug, Clone, Default)]
struct Pipeline {
    /// `$k, $v :=` (declared names, without `$`).
    decl: Vec<String>,
    commands: Vec<Vec<Operand>>,
}

fn parse_pipeline(toks: &[Token]) -> Result<Pipeline, String> {
    let mut pipe = Pipeline::default();
    let mut toks = toks;
    if let Some(at) = toks.iter().position(|t| *t == Token::Assign) {
        for t in &toks[..at] {
            match t {
                Token::Var(name, f) if f.is_empty() => pipe.decl.push(name.clone()),
                Token::Comma => {}
                other => return Err(format!("unexpected {other:?} in a variable declaration")),
            }
        }
        toks = &toks[at + 1..];
    }
    let mut i = 0;
    let mut command = Vec::new();
    while i < toks.len() {
        match &toks[i] {
            Token::Pipe => pipe.commands.push(std::mem::take(&mut command)),
            Token::Open => {
                let mut depth = 1;
                let start = i + 1;
                while depth > 0 {
                    i += 1;
                    match toks.get(i) {
                        Some(Token::Open) => depth += 1,
                        Some(Token::Close) => depth -= 1,
                        None => return Err("unclosed (".into()),
                        _ => {}
                    }
                }
                command.push(Operand::Sub(parse_pipeline(&toks[start..i])?));
            }
            Token::Str(s) => command.push(Operand::Literal(Value::Str(s.clone()))),
            Token::Int(n) => command.push(Operand::Literal(Value::Int(*n))),
            Token::Ident(w) if w == "true" || w == "false" => command.push(Operand::Literal(Value::Bool(w == "true"))),
            Token::Ident(w) if w == "nil" => command.push(Operand::Literal(Value::Nil)),
            Token::Ident(w) => command.push(Operand::Func(w.clone())),
            Token::Field(f) => command.push(Operand::Field(f.clone())),
            Token::Var(n, f) => command.push(Operand::Var(n.clone(), f.clone())),
            other => return Err(format!("unexpected {other:?}")),
        }
        i += 1;
    }
    if command.is_empty() {
        return Err("missing value".into());
    }
    pipe.commands.push(command);
    Ok(pipe)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Block {
    If,
    With,
    Range,
}

#[derive(Debug)]
enum Node {
    Text(String),
    Print(Pipeline),
    Block { kind: Block, pipe: Pipeline, body: Vec<Node>, otherwise: Vec<Node> },
}

/// Parses nodes up to an `end` or `else` (returned) or the end of input.
fn parse(items: &[Item], pos: &mut usize) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while *pos < items.len() {
        let item = &items[*pos];
        *pos += 1;
        let action = match item {
            Item::Text(t) => {
                nodes.push(Node::Text(t.clone()));
                continue;
            }
            Item::Action(a) => a.as_str(),
        };
        let (word, rest) = action.split_once(char::is_whitespace).unwrap_or((action, ""));
        let kind = match word {
            "end" => return Ok((nodes, Some("end".into()))),
            "else" => return Ok((nodes, Some(action.to_string()))),
            "if" => Block::If,
            "with" => Block::With,
            "range" => Block::Range,
            "define" | "template" | "block" | "break" | "continue" => {
                return Err(format!("{{{{ {word} }}}} is not supported"));
            }
            _ => {
                nodes.push(Node::Print(
                    parse_pipeline(&tokens(action)?).map_err(|e| format!("{{{{ {action} }}}}: {e}"))?,
                ));
                continue;
            }
        };
        nodes.push(parse_block(items, pos, kind, rest)?);
    }
    Ok((nodes, None))
}

fn parse_block(items: &[Item], pos: &mut usize, kind: Block, head: &str) -> Result<Node, String> {
    let pipe = parse_pipeline(&tokens(head)?).map_err(|e| format!("{{{{ {head} }}}}: {e}"))?;
    let (body, end) = parse(items, pos)?;
    let otherwise = match end.as_deref() {
        Some("end") => Vec::new(),
        Some("else") => {
            let (other, end) = parse(items, pos)?;
            if end.as_deref() != Some("end") {
                return Err("missing {{ end }}".into());
            }
            other
        }
        Some(chained) => {
            // `else if …` / `else with …`: a nested block that takes this one's end.
            let rest = chained.trim_start_matches("else").trim();
            let (word, head) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let nested = match word {
                "if" => Block::If,
                "with" => Block::With,
                _ => return Err(format!("unexpected {{{{ {chained} }}}}")),
            };
            vec![parse_block(items, pos, nested, head)?]
        }
        None => return Err("missing {{ end }}".into()),
    };
    Ok(Node::Block { kind, pipe, body, otherwise })
}

// === evaluation ===

struct Run<'a, 'b> {
    inputs: &'a Inputs<'b>,
    out: Rendered,
    vars: Vec<BTreeMap<String, Value>>,
}

impl Run<'_, '_> {
    fn walk(&mut self, nodes: &[Node], dot: &Value) -> Result<(), String> {
        for node in nodes {
            match node {
                Node::Text(t) => self.out.text.push_str(t),
                Node::Print(pipe) => {
                    let v = self.pipeline(pipe, dot)?;
                    if pipe.decl.is_empty() {
                        self.out.text.push_str(&v.print());
                    }
                }
                Node::Block { kind, pipe, body, otherwise } => self.block(*kind, pipe, body, otherwise, dot)?,
            }
        }
        Ok(())
    }

    fn block(
        &mut self,
        kind: Block,
        pipe: &Pipeline,
        body: &[Node],
        otherwise: &[Node],
        dot: &Value,
    ) -> Result<(), String> {
        self.vars.push(BTreeMap::new());
        let value = self.pipeline(&Pipeline { decl: Vec::new(), ..pipe.clone() }, dot)?;
        let result = match kind {
            Block::If | Block::With if value.truthy() => {
                if let Some(name) = pipe.decl.first() {
                    self.set(name, value.clone());
                }
                let inner = if kind == Block::With { value } else { dot.clone() };
                self.walk(body, &inner)
            }
            Block::If | Block::With => self.walk(otherwise, dot),
            Block::Range => {
                let pairs: Vec<(Value, Value)> = match value {
                    Value::List(l) => l.into_iter().enumerate().map(|(i, v)| (Value::Int(i as i64), v)).collect(),
                    Value::Map(m) => m.into_iter().map(|(k, v)| (Value::Str(k), v)).collect(),
                    Value::Int(n) => (0..n.max(0)).map(|i| (Value::Int(i), Value::Int(i))).collect(),
                    Value::Nil => Vec::new(),
                    other => return Err(format!("range can't iterate over {}", other.print())),
                };
                if pairs.is_empty() {
                    self.walk(otherwise, dot)
                } else {
                    let mut result = Ok(());
                    for (k, v) in pairs {
                        match pipe.decl.as_slice() {
                            [one] => self.set(one, v.clone()),
                            [key, val, ..] => {
                                self.set(key, k);
                                self.set(val, v.clone());
                            }
                            [] => {}
                        }
                        result = self.walk(body, &v);
                        if result.is_err() {
                            break;
                        }
                    }
                    result
                }
            }
        };
        self.vars.pop();
        result
    }

    fn set(&mut self, name: &str, v: Value) {
        if let Some(scope) = self.vars.last_mut() {
            scope.insert(name.to_string(), v);
        }
    }

    fn pipeline(&mut self, pipe: &Pipeline, dot: &Value) -> Result<Value, String> {
        let mut piped: Option<Value> = None;
        for command in &pipe.commands {
            piped = Some(self.command(command, dot, piped.take())?);
        }
        let v = piped.unwrap_or(Value::Nil);
        if let Some(name) = pipe.decl.first() {
            self.set(name, v.clone());
        }
        Ok(v)
    }

    fn field(&self, mut v: Value, path: &[String]) -> Result<Value, String> {
        for key in path {
            v = match v {
                Value::Map(mut m) => match m.remove(key) {
                    Some(found) => found,
                    None if self.inputs.err_missing_key => return Err(format!("map has no entry for key {key:?}")),
                    None => Value::Nil,
                },
                Value::Nil => Value::Nil,
                other => return Err(format!("can't evaluate field {key} in {}", other.print())),
            };
        }
        Ok(v)
    }

    fn operand(&mut self, op: &Operand, dot: &Value) -> Result<Value, String> {
        match op {
            Operand::Literal(v) => Ok(v.clone()),
            Operand::Field(path) => self.field(dot.clone(), path),
            Operand::Var(name, path) => {
                let found = if name.is_empty() {
                    Some(Value::Nil)
                } else {
                    self.vars.iter().rev().find_map(|s| s.get(name)).cloned()
                };
                let v = found.ok_or_else(|| format!("undefined variable ${name}"))?;
                self.field(v, path)
            }
            Operand::Func(name) => self.call(name, Vec::new()),
            Operand::Sub(pipe) => self.pipeline(pipe, dot),
        }
    }

    fn command(&mut self, command: &[Operand], dot: &Value, piped: Option<Value>) -> Result<Value, String> {
        match command {
            [Operand::Func(name), args @ ..] => {
                let mut values = args.iter().map(|a| self.operand(a, dot)).collect::<Result<Vec<_>, _>>()?;
                values.extend(piped);
                self.call(name, values)
            }
            [single] if piped.is_none() => self.operand(single, dot),
            _ => Err("can't give an argument to a non-function".into()),
        }
    }

    fn read(&mut self, read: TemplateRead) -> Value {
        self.out.reads.insert(read.clone());
        match self.inputs.data.get(&read) {
            Some(TemplateValue::Variable(None)) | None => {
                self.out.missing.insert(read);
                Value::Nil
            }
            Some(v) => to_value(v),
        }
    }

    fn call(&mut self, name: &str, args: Vec<Value>) -> Result<Value, String> {
        let text = |i: usize| -> Result<String, String> {
            match args.get(i) {
                Some(Value::Str(s)) => Ok(s.clone()),
                Some(other) => Ok(other.print()),
                None => Err(format!("{name} wants {} argument(s)", i + 1)),
            }
        };
        Ok(match name {
            "env" => Value::Str((self.inputs.env)(&text(0)?)),
            "nomadVar" => self.read(TemplateRead::Variable { path: text(0)? }),
            "nomadVarList" => {
                let prefix = if args.is_empty() { String::new() } else { text(0)? };
                self.read(TemplateRead::Variables { prefix })
            }
            "nomadService" => {
                let spec = text(args.len().saturating_sub(1))?;
                let (tag, name) = spec.rsplit_once('.').unwrap_or(("", spec.as_str()));
                self.read(TemplateRead::Service { name: name.to_string(), tag: tag.to_string() })
            }
            "nomadServices" => self.read(TemplateRead::Services),
            "eq" => Value::Bool(args.len() >= 2 && args[1..].iter().any(|a| *a == args[0])),
            "ne" => Value::Bool(args.first() != args.get(1)),
            "not" => Value::Bool(!args.first().is_some_and(Value::truthy)),
            "and" => args.iter().find(|a| !a.truthy()).or(args.last()).cloned().unwrap_or(Value::Nil),
            "or" => args.iter().find(|a| a.truthy()).or(args.last()).cloned().unwrap_or(Value::Nil),
            "len" => Value::Int(match args.first() {
                Some(Value::Str(s)) => s.len(),
                Some(Value::List(l)) => l.len(),
                Some(Value::Map(m)) => m.len(),
                _ => 0,
            } as i64),
            "index" => {
                let mut v = args.first().cloned().unwrap_or(Value::Nil);
                for key in args.iter().skip(1) {
                    v = match (v, key) {
                        (Value::List(l), Value::Int(i)) => l.get(*i as usize).cloned().unwrap_or(Value::Nil),
                        (Value::Map(m), k) => m.get(&k.print()).cloned().unwrap_or(Value::Nil),
                        _ => Value::Nil,
                    };
                }
                v
            }
            "print" => Value::Str(args.iter().map(Value::print).collect()),
            "println" => Value::Str(args.iter().map(Value::print).collect::<Vec<_>>().join(" ") + "\n"),
            "printf" => Value::Str(printf(&text(0)?, &args[1..])),
            "join" => match (args.first(), args.get(1)) {
                (Some(Value::Str(sep)), Some(Value::List(l))) | (Some(Value::List(l)), Some(Value::Str(sep))) => {
                    Value::Str(l.iter().map(Value::print).collect::<Vec<_>>().join(sep))
                }
                _ => return Err("join wants a separator and a list".into()),
            },
            "split" => Value::List(text(1)?.split(text(0)?.as_str()).map(|s| Value::Str(s.to_string())).collect()),
            "toUpper" => Value::Str(text(0)?.to_uppercase()),
            "toLower" => Value::Str(text(0)?.to_lowercase()),
            "trimSpace" => Value::Str(text(0)?.trim().to_string()),
            "contains" => Value::Bool(text(1)?.contains(text(0)?.as_str())),
            "key" | "keyOrDefault" | "ls" | "tree" | "service" | "services" | "connect" | "caRoots" | "caLeaf"
            | "secret" | "secrets" | "node" | "nodes" | "datacenters" | "safeLs" | "safeTree" => {
                return Err(format!("{name} needs Consul or Vault, which berth does not have"));
            }
            other => return Err(format!("function {other:?} not defined")),
        })
    }
}

/// `printf` with Go's common verbs (`%s`, `%d`, `%v`, `%q`, `%%`).
fn printf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('q') => out.push_str(&format!("{:?}", args.next().map(Value::print).unwrap_or_default())),
            Some(_) => out.push_str(&args.next().map(Value::print).unwrap_or_else(|| "%!(MISSING)".into())),
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structs::VariableMetadata;

    fn run(text: &str, data: &BTreeMap<TemplateRead, TemplateValue>) -> Result<Rendered, String> {
        let env = |name: &str| if name == "NOMAD_TASK_NAME" { "web".to_string() } else { String::new() };
        render(text, ("{{", "}}"), &Inputs { env: &env, data, err_missing_key: false })
    }

    fn var(items: &[(&str, &str)]) -> TemplateValue {
        TemplateValue::Variable(Some(Variable {
            meta: VariableMetadata { path: "nomad/jobs/web".into(), ..Default::default() },
            items: items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }))
    }

    fn instance(addr: &str, port: u16) -> ServiceRegistration {
        ServiceRegistration { service_name: "db".into(), address: addr.into(), port, ..Default::default() }
    }

    #[test]
    fn reads_are_discovered_then_rendered_from_the_fetched_data() {
        let text = "{{ with nomadVar \"nomad/jobs/web\" }}pw={{ .password }}{{ end }}\n\
                    {{- range nomadService \"db\" }}\ndb={{ .Address }}:{{ .Port }}{{ end }}";
        let first = run(text, &BTreeMap::new()).unwrap();
        let var_read = TemplateRead::Variable { path: "nomad/jobs/web".into() };
        let db_read = TemplateRead::Service { name: "db".into(), tag: String::new() };
        assert_eq!(first.missing, BTreeSet::from([var_read.clone(), db_read.clone()]));
        let data = BTreeMap::from([
            (var_read, var(&[("password", "s3cret")])),
            (db_read, TemplateValue::Service(vec![instance("10.0.0.5", 3306), instance("10.0.0.6", 3307)])),
        ]);
        let done = run(text, &data).unwrap();
        assert!(done.missing.is_empty());
        assert_eq!(done.text, "pw=s3cret\ndb=10.0.0.5:3306\ndb=10.0.0.6:3307");
    }

    #[test]
    fn maps_range_in_key_order_with_variables_and_else() {
        let read = TemplateRead::Variable { path: "p".into() };
        let data = BTreeMap::from([(read, var(&[("b", "2"), ("a", "1"), ("c", "3")]))]);
        let text = "{{ range $k, $v := nomadVar \"p\" }}{{ $k }}={{ $v }};{{ end }}";
        assert_eq!(run(text, &data).unwrap().text, "a=1;b=2;c=3;");
        let empty = "{{ range nomadService \"none\" }}x{{ else }}no instances{{ end }}";
        let none = BTreeMap::from([(
            TemplateRead::Service { name: "none".into(), tag: String::new() },
            TemplateValue::Service(Vec::new()),
        )]);
        assert_eq!(run(empty, &none).unwrap().text, "no instances");
        let text = "{{ $name := env \"NOMAD_TASK_NAME\" }}{{ if eq $name \"web\" }}yes{{ else if eq $name \"db\" }}db{{ else }}no{{ end }}";
        assert_eq!(run(text, &BTreeMap::new()).unwrap().text, "yes");
        let text = "{{ \"a b\" | toUpper }} {{ printf \"%s-%d\" \"x\" 3 }} {{ len (split \",\" \"a,b,c\") }}";
        assert_eq!(run(text, &BTreeMap::new()).unwrap().text, "A B x-3 3");
        let text = "a  {{- /* note */ -}}  b {{- env \"NOMAD_TASK_NAME\" }}";
        assert_eq!(run(text, &BTreeMap::new()).unwrap().text, "abweb");
    }

    #[test]
    fn errors_name_what_is_wrong() {
        for (text, want) in [
            ("{{ key \"a/b\" }}", "needs Consul or Vault"),
            ("{{ nope }}", "not defined"),
            ("{{ if true }}x", "missing {{ end }}"),
            ("{{ end }}", "unexpected"),
            ("{{ env \"A\" ", "unclosed action"),
            ("{{ $x }}", "undefined variable"),
        ] {
            let e = run(text, &BTreeMap::new()).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        let strict = render(
            "{{ with nomadVar \"p\" }}{{ .nokey }}{{ end }}",
            ("{{", "}}"),
            &Inputs {
                env: &|_| String::new(),
                data: &BTreeMap::from([(TemplateRead::Variable { path: "p".into() }, var(&[("k", "v")]))]),
                err_missing_key: true,
            },
        );
        assert!(strict.unwrap_err().contains("nokey"));
    }

    #[test]
    fn custom_delimiters() {
        let out = render(
            "{{ literal }} [[ env \"NOMAD_TASK_NAME\" ]]",
            ("[[", "]]"),
            &Inputs { env: &|_| "web".into(), data: &BTreeMap::new(), err_missing_key: false },
        )
        .unwrap();
        assert_eq!(out.text, "{{ literal }} web");
    }
}
