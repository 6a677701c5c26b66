//! Expression evaluation the way Nomad's forked HCL2 does it.
//!
//! `var.*` and `local.*` (or whatever roots the caller declares) are
//! evaluated with hcl-rs, so operators, conditionals and `for` expressions
//! work. Any other reference inside a string template (`${NOMAD_TASK_DIR}`,
//! `${attr.unique.hostname}`, `${meta.x}`) is kept as its literal `${...}`
//! text for the client to interpolate at run time. A bare reference to an
//! unknown root outside a string is an error.
//!
//! `try`, `can` and `convert` are evaluated here rather than by hcl-rs,
//! which evaluates every argument before calling a function: `try`
//! returns its first argument that evaluates without an error, `can`
//! whether its one argument does, and `convert`'s second argument is a
//! type, not a value. An expression holding one of them is walked here
//! (lists, objects, string templates, other functions' arguments,
//! operators, conditionals and `for` expressions); hcl-rs evaluates the
//! rest.

use std::collections::BTreeMap;

use hcl::eval::{Context, ErrorKind, Evaluate};
use hcl::Value;
use hcl_edit::expr::{Expression, ForExpr, FuncCall, ObjectKey};
use hcl_edit::template::{Element, Interpolation, Template};
use hcl_edit::visit::{visit_func_call, Visit};
use hcl_edit::Span;

use super::error::HclError;
use super::source::Source;
use super::type_expr::Type;

/// The variables an expression may reference: named roots (`var`, `local`)
/// each holding an object of values.
#[derive(Debug, Default, Clone)]
pub struct Scope {
    ctx: Context<'static>,
    roots: Vec<String>,
}

impl Scope {
    /// A scope with no variables (every reference is a runtime one) and
    /// Nomad's functions.
    pub fn new() -> Self {
        let mut scope = Scope::default();
        super::functions::declare(&mut scope.ctx);
        scope
    }

    /// Declares `root` (e.g. `var`) as an object holding `values`; replaces
    /// an earlier declaration of the same root.
    pub fn declare(&mut self, root: &str, values: &BTreeMap<String, Value>) {
        let object: hcl::Map<String, Value> = values.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        self.ctx.declare_var(root, Value::Object(object));
        if !self.roots.iter().any(|r| r == root) {
            self.roots.push(root.to_string());
        }
    }

    /// A scope with `name` bound to `value` as well (a `for` variable).
    fn with(&self, name: &str, value: Value) -> Scope {
        let mut scope = self.clone();
        scope.ctx.declare_var(name.to_string(), value);
        if !scope.knows(name) {
            scope.roots.push(name.to_string());
        }
        scope
    }

    fn knows(&self, root: &str) -> bool {
        self.roots.iter().any(|r| r == root)
    }

    /// Evaluates an expression from `src`.
    pub fn eval(&self, src: &Source, expr: &Expression) -> Result<Value, HclError> {
        match expr {
            Expression::Null(_) => Ok(Value::Null),
            Expression::Bool(b) => Ok(Value::Bool(*b.value())),
            Expression::Number(n) => Ok(Value::Number(*n.value())),
            Expression::String(s) => Ok(Value::String(s.value().clone())),
            Expression::Array(items) => {
                items.iter().map(|e| self.eval(src, e)).collect::<Result<_, _>>().map(Value::Array)
            }
            Expression::Object(object) => {
                let mut out = hcl::Map::new();
                for (key, value) in object.iter() {
                    let name = match key {
                        ObjectKey::Ident(ident) => ident.as_str().to_string(),
                        ObjectKey::Expression(e) => match self.eval(src, e)? {
                            Value::String(s) => s,
                            Value::Number(n) => n.to_string(),
                            Value::Bool(b) => b.to_string(),
                            _ => return Err(src.error(e.span(), "object key must be a string")),
                        },
                    };
                    out.insert(name, self.eval(src, value.expr())?);
                }
                Ok(Value::Object(out))
            }
            Expression::StringTemplate(t) => self.template(src, expr, t),
            Expression::HeredocTemplate(h) => self.template(src, expr, &h.template),
            Expression::Parenthesis(p) => self.eval(src, p.inner()),
            Expression::FuncCall(call) => self.call(src, expr, call),
            Expression::Conditional(c) if calls_lazy(expr) => match self.eval(src, &c.cond_expr)? {
                Value::Bool(true) => self.eval(src, &c.true_expr),
                Value::Bool(false) => self.eval(src, &c.false_expr),
                other => Err(src.error(c.cond_expr.span(), format!("the condition is {}, not a bool", kind(&other)))),
            },
            Expression::UnaryOp(op) if calls_lazy(expr) => {
                let operand = hcl::Expression::from(self.eval(src, &op.expr)?);
                self.evaluate_values(src, expr, hcl::expr::UnaryOp::new(*op.operator.value(), operand).into())
            }
            Expression::BinaryOp(op) if calls_lazy(expr) => {
                let lhs = hcl::Expression::from(self.eval(src, &op.lhs_expr)?);
                let rhs = hcl::Expression::from(self.eval(src, &op.rhs_expr)?);
                self.evaluate_values(src, expr, hcl::expr::BinaryOp::new(lhs, *op.operator.value(), rhs).into())
            }
            Expression::ForExpr(f) if calls_lazy(expr) => self.for_expr(src, f),
            Expression::Variable(_) | Expression::Traversal(_) => match unknown_root(expr, self) {
                Some(root) => Err(src.error(
                    expr.span(),
                    format!(
                        "unknown variable \"{root}\"; runtime values must be written inside a string, as \"${{{}}}\"",
                        expr.span().map_or("", |s| src.snippet(s))
                    ),
                )),
                None => self.delegate(src, expr),
            },
            _ => self.delegate(src, expr),
        }
    }

    /// An operation whose operands are already values, by hcl-rs.
    fn evaluate_values(&self, src: &Source, expr: &Expression, op: hcl::Expression) -> Result<Value, HclError> {
        op.evaluate(&self.ctx).map_err(|err| src.error(expr.span(), err.kind().to_string()))
    }

    /// A `for` expression, one element at a time, its variables bound in
    /// a scope of its own.
    fn for_expr(&self, src: &Source, f: &ForExpr) -> Result<Value, HclError> {
        let collection = &f.intro.collection_expr;
        let elements: Vec<(Value, Value)> = match self.eval(src, collection)? {
            Value::Array(items) => items.into_iter().enumerate().map(|(i, v)| (Value::from(i as u64), v)).collect(),
            Value::Object(attrs) => attrs.into_iter().map(|(k, v)| (Value::String(k), v)).collect(),
            other => return Err(src.error(collection.span(), format!("cannot iterate over {}", kind(&other)))),
        };
        let mut list = Vec::new();
        let mut object: hcl::Map<String, Value> = hcl::Map::new();
        for (key, value) in elements {
            let mut scope = self.with(f.intro.value_var.as_str(), value);
            if let Some(key_var) = &f.intro.key_var {
                scope = scope.with(key_var.as_str(), key);
            }
            if let Some(cond) = &f.cond {
                match scope.eval(src, &cond.expr)? {
                    Value::Bool(true) => {}
                    Value::Bool(false) => continue,
                    other => {
                        return Err(
                            src.error(cond.expr.span(), format!("the condition is {}, not a bool", kind(&other)))
                        )
                    }
                }
            }
            let value = scope.eval(src, &f.value_expr)?;
            let Some(key_expr) = &f.key_expr else {
                list.push(value);
                continue;
            };
            let name = match scope.eval(src, key_expr)? {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => return Err(src.error(key_expr.span(), format!("an object key cannot be {}", kind(&other)))),
            };
            if f.grouping {
                match object.entry(name).or_insert_with(|| Value::Array(Vec::new())) {
                    Value::Array(group) => group.push(value),
                    _ => unreachable!("grouped values are lists"),
                }
            } else if object.contains_key(&name) {
                return Err(src.error(
                    key_expr.span(),
                    format!("duplicate object key {name:?}; add `...` after the value to group them"),
                ));
            } else {
                object.insert(name, value);
            }
        }
        Ok(if f.key_expr.is_some() { Value::Object(object) } else { Value::Array(list) })
    }

    /// A function call: `try`, `can` and `convert` evaluate their
    /// arguments here; a call with one of them inside its arguments gets
    /// the arguments' values from here; any other goes to hcl-rs whole.
    fn call(&self, src: &Source, expr: &Expression, call: &FuncCall) -> Result<Value, HclError> {
        let fail = |message: String| src.error(expr.span(), message);
        match lazy_function(call) {
            Some("try") => {
                let mut first = None;
                for arg in call.args.iter() {
                    match self.eval(src, arg) {
                        Ok(value) => return Ok(value),
                        Err(err) => first = first.or(Some(err)),
                    }
                }
                Err(fail(match first {
                    Some(err) => format!("try: no expression succeeded; the first failed with: {}", err.message),
                    None => "try: at least one argument is required".into(),
                }))
            }
            Some("can") => match (call.args.len(), call.args.get(0)) {
                (1, Some(arg)) => Ok(Value::Bool(self.eval(src, arg).is_ok())),
                (n, _) => Err(fail(format!("can takes exactly one argument, not {n}"))),
            },
            Some(_) => match call.args.iter().collect::<Vec<_>>()[..] {
                [value, ty] => {
                    let ty = Type::parse(ty).map_err(|e| src.error(ty.span(), format!("convert: {e}")))?;
                    ty.convert(self.eval(src, value)?).map_err(|e| fail(format!("convert: {e}")))
                }
                ref args => Err(fail(format!("convert takes a value and a type, not {} arguments", args.len()))),
            },
            None if call.args.iter().any(calls_lazy) => {
                let mut call_of_values: hcl::expr::FuncCall = call.clone().into();
                call_of_values.args = call
                    .args
                    .iter()
                    .map(|arg| self.eval(src, arg).map(hcl::Expression::from))
                    .collect::<Result<_, _>>()?;
                hcl::Expression::from(call_of_values).evaluate(&self.ctx).map_err(|err| fail(err.kind().to_string()))
            }
            None => self.delegate(src, expr),
        }
    }

    /// Hands an expression to hcl-rs.
    fn delegate(&self, src: &Source, expr: &Expression) -> Result<Value, HclError> {
        let converted: hcl::Expression = expr.clone().into();
        converted.evaluate(&self.ctx).map_err(|err| {
            let message = match err.kind() {
                ErrorKind::UndefinedFunc(f) if matches!(f.to_string().as_str(), "try" | "can" | "convert") => {
                    format!(
                        "{f} cannot be used inside a template directive or in what an index or attribute is taken of"
                    )
                }
                kind => kind.to_string(),
            };
            src.error(expr.span(), message)
        })
    }

    fn template(&self, src: &Source, expr: &Expression, template: &Template) -> Result<Value, HclError> {
        if template.iter().any(Element::is_directive) {
            return self.delegate(src, expr);
        }
        // A template that is a single interpolation yields the value itself.
        if let (1, Some(Element::Interpolation(interp))) = (template.len(), template.get(0)) {
            if unknown_root(&interp.expr, self).is_none() {
                return self.eval(src, &interp.expr);
            }
        }
        let mut out = String::new();
        let mut strip_next = false;
        for element in template.iter() {
            match element {
                Element::Literal(text) => {
                    out.push_str(if strip_next { text.trim_start() } else { text.as_str() });
                    strip_next = false;
                }
                Element::Interpolation(interp) => {
                    if interp.strip.strip_start() {
                        out.truncate(out.trim_end().len());
                    }
                    out.push_str(&self.interpolate(src, interp)?);
                    strip_next = interp.strip.strip_end();
                }
                Element::Directive(_) => {}
            }
        }
        Ok(Value::String(out))
    }

    fn interpolate(&self, src: &Source, interp: &Interpolation) -> Result<String, HclError> {
        let expr = &interp.expr;
        if unknown_root(expr, self).is_some() {
            let text = expr.span().map_or("", |s| src.snippet(s));
            return Ok(format!("${{{text}}}"));
        }
        match self.eval(src, expr)? {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            other => Err(src.error(expr.span(), format!("cannot insert {} into a string", kind(&other)))),
        }
    }
}

/// The root name of a plain reference (`x` or `x.y[0]`) that the scope does
/// not declare.
fn unknown_root<'e>(expr: &'e Expression, scope: &Scope) -> Option<&'e str> {
    let root = match expr {
        Expression::Variable(v) => v.as_str(),
        Expression::Traversal(t) => match &t.expr {
            Expression::Variable(v) => v.as_str(),
            _ => return None,
        },
        _ => return None,
    };
    (!scope.knows(root)).then_some(root)
}

/// `try`, `can` or `convert`, if `call` calls one of them.
fn lazy_function(call: &FuncCall) -> Option<&str> {
    let name = call.name.name.as_str();
    (!call.name.is_namespaced() && matches!(name, "try" | "can" | "convert")).then_some(name)
}

/// Whether `expr` calls `try`, `can` or `convert` anywhere inside.
fn calls_lazy(expr: &Expression) -> bool {
    struct Finder(bool);
    impl Visit for Finder {
        fn visit_func_call(&mut self, call: &FuncCall) {
            self.0 |= lazy_function(call).is_some();
            visit_func_call(self, call);
        }
    }
    let mut finder = Finder(false);
    finder.visit_expr(expr);
    finder.0
}

/// "a string", "a number", ... for type errors.
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval_attr(text: &str, vars: &[(&str, Value)]) -> Result<Value, HclError> {
        let src = Source::parse("t.hcl", text).expect("parses");
        let mut scope = Scope::new();
        scope.declare("var", &vars.iter().map(|(k, v)| (k.to_string(), v.clone())).collect());
        let attr = src.body().get_attribute("x").expect("has x");
        scope.eval(&src, &attr.value)
    }

    #[test]
    fn variables_and_operators_evaluate() {
        let v = eval_attr("x = var.n * 2 + 1\n", &[("n", Value::from(3))]).expect("evaluates");
        assert_eq!(v, Value::from(7));
        let v = eval_attr("x = var.n > 2 ? \"big\" : \"small\"\n", &[("n", Value::from(3))]).expect("evaluates");
        assert_eq!(v, Value::from("big"));
        let v = eval_attr("x = \"${var.n}\"\n", &[("n", Value::from(3))]).expect("evaluates");
        assert_eq!(v, Value::from(3));
        let v = eval_attr("x = \"img:${var.tag}\"\n", &[("tag", Value::from("v1"))]).expect("evaluates");
        assert_eq!(v, Value::from("img:v1"));
    }

    #[test]
    fn runtime_references_pass_through() {
        let v = eval_attr("x = \"${NOMAD_TASK_DIR}/a-${attr.unique.hostname}-${var.n}\"\n", &[("n", Value::from(1))])
            .expect("evaluates");
        assert_eq!(v, Value::from("${NOMAD_TASK_DIR}/a-${attr.unique.hostname}-1"));
        let v = eval_attr("x = \"${node.unique.name}\"\n", &[]).expect("evaluates");
        assert_eq!(v, Value::from("${node.unique.name}"));
        let v = eval_attr("x = \"$${literal}\"\n", &[]).expect("evaluates");
        assert_eq!(v, Value::from("${literal}"));
    }

    #[test]
    fn bare_runtime_reference_is_an_error_with_location() {
        let err = eval_attr("\nx = attr.kernel.name\n", &[]).expect_err("must fail");
        assert_eq!((err.line, err.column), (2, 5));
        assert!(err.message.contains("\"attr\""), "{err}");
        let err = eval_attr("x = var.missing\n", &[]).expect_err("must fail");
        assert_eq!(err.line, 1);
    }

    #[test]
    fn try_and_can_evaluate_their_arguments_lazily() {
        let vars = [("m", Value::Object([("a".to_string(), Value::from(1))].into_iter().collect()))];
        let eval = |text: &str| eval_attr(&format!("x = {text}\n"), &vars);
        assert_eq!(eval("try(var.m.b, var.m.a, 2)").unwrap(), Value::from(1));
        assert_eq!(eval("try(var.nope, \"fallback\")").unwrap(), Value::from("fallback"));
        assert_eq!(eval("can(var.m.a)").unwrap(), Value::Bool(true));
        assert_eq!(eval("can(var.m.b)").unwrap(), Value::Bool(false));
        assert_eq!(eval("can(attr.kernel.name)").unwrap(), Value::Bool(false));
        assert_eq!(eval("upper(try(var.m.b, \"a\"))").unwrap(), Value::from("A"));
        assert_eq!(eval("format(\"%s-%d\", lower(try(var.m.b, \"X\")), 3)").unwrap(), Value::from("x-3"));
        assert_eq!(
            eval("[try(var.m.b, 1), { k = can(var.m.a) }]").unwrap(),
            Value::Array(vec![
                Value::from(1),
                Value::Object([("k".to_string(), Value::Bool(true))].into_iter().collect()),
            ])
        );
        assert_eq!(eval("\"v${try(var.m.b, 9)}\"").unwrap(), Value::from("v9"));
        let err = eval("[\n  try(var.m.b, var.m.c),\n]").unwrap_err();
        assert_eq!((err.line, err.column), (2, 3));
        assert!(err.message.starts_with("try: no expression succeeded; the first failed with: "), "{err}");
        assert!(err.message.ends_with("no such key: `b`"), "{err}");
        assert!(eval("can(1, 2)").unwrap_err().message.contains("exactly one argument"));
        assert!(eval("upper(try(var.m.b, 1, 2), 5)").is_err(), "the outer call still checks its arguments");
        assert_eq!(eval("1 + try(var.m.b, 2)").unwrap(), Value::from(3));
        assert_eq!(eval("!can(var.m.b) ? \"absent\" : var.m.b").unwrap(), Value::from("absent"));
        assert_eq!(
            eval("can(var.m.a) ? var.m.a : var.m.b").unwrap(),
            Value::from(1),
            "the other branch is not evaluated"
        );
        assert_eq!(
            eval("[for k, v in { a = 1, b = \"x\" } : try(v + 1, v) if can(k)]").unwrap(),
            Value::Array(vec![Value::from(2), Value::from("x")])
        );
        assert_eq!(
            eval("{ for s in [\"a\", \"bb\", \"cc\"] : strlen(s) => try(upper(s), s)... }").unwrap(),
            Value::Object(
                [
                    ("1".to_string(), Value::Array(vec![Value::from("A")])),
                    ("2".to_string(), Value::Array(vec![Value::from("BB"), Value::from("CC")])),
                ]
                .into_iter()
                .collect()
            )
        );
        let err = eval("{ for s in [\"a\", \"a\"] : s => can(s) }").unwrap_err();
        assert!(err.message.contains("duplicate object key \"a\""), "{err}");
        let err = eval("\"%{ if can(var.m.a) }y%{ endif }\"").unwrap_err();
        assert!(err.message.contains("inside a template directive"), "{err}");
    }

    #[test]
    fn convert_takes_a_type() {
        let vars = [("ports", Value::Array(vec![Value::from("80"), Value::from(443), Value::from("80")]))];
        let eval = |text: &str| eval_attr(&format!("x = {text}\n"), &vars);
        assert_eq!(
            eval("convert(var.ports, list(number))").unwrap(),
            Value::Array(vec![80.into(), 443.into(), 80.into()])
        );
        assert_eq!(eval("convert(var.ports, set(string))").unwrap(), Value::Array(vec!["443".into(), "80".into()]));
        assert_eq!(eval("convert(\"true\", bool)").unwrap(), Value::Bool(true));
        assert_eq!(
            eval("convert({ name = \"db\", port = \"5432\", extra = 1 }, object({ name = string, port = number }))")
                .unwrap(),
            Value::Object([("name".to_string(), "db".into()), ("port".to_string(), 5432.into())].into_iter().collect())
        );
        assert_eq!(
            eval("convert([1, \"a\"], tuple([string, string]))").unwrap(),
            Value::Array(vec!["1".into(), "a".into()])
        );
        assert_eq!(eval("length(convert(var.ports, set(string))) + 1").unwrap(), Value::from(3));
        let err = eval("convert(\"x\", number)").unwrap_err();
        assert!(err.message.contains("convert: a number is required, not \"x\""), "{err}");
        let err = eval("convert({ a = 1 }, object({ b = string }))").unwrap_err();
        assert!(err.message.contains("attribute \"b\" is required"), "{err}");
        let err = eval("convert(1, lists(string))").unwrap_err();
        assert!(err.message.contains("lists(…) is not a type constructor"), "{err}");
        assert!(eval("convert(1)").unwrap_err().message.contains("a value and a type"));
    }

    #[test]
    fn directives_and_heredocs() {
        let v = eval_attr("x = \"%{ if var.on }yes%{ else }no%{ endif }\"\n", &[("on", Value::from(true))])
            .expect("evaluates");
        assert_eq!(v, Value::from("yes"));
        let v = eval_attr("x = <<-EOT\n    a ${NOMAD_ALLOC_ID}\n      b\n    EOT\n", &[]).expect("evaluates");
        assert_eq!(v, Value::from("a ${NOMAD_ALLOC_ID}\n  b\n"));
    }
}
