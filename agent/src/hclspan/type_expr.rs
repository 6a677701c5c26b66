//! HCL type constraints written as expressions (`string`, `list(number)`,
//! `object({ name = string })`), as the `convert` function takes them, and
//! the conversion of a value to one, following cty's rules: primitive
//! values convert between string, number and bool where the text allows,
//! lists, sets and tuples from any sequence, maps and objects from
//! objects (attributes an object type does not name are dropped).

use std::collections::BTreeMap;

use hcl::Value;
use hcl_edit::expr::{Expression, ObjectKey};

/// A type constraint.
#[derive(Debug, Clone, PartialEq)]
pub enum Type {
    String,
    Number,
    Bool,
    Any,
    List(Box<Type>),
    Set(Box<Type>),
    Map(Box<Type>),
    Object(BTreeMap<String, Type>),
    Tuple(Vec<Type>),
}

impl Type {
    /// Reads a type constraint; the error says what is not one.
    pub fn parse(expr: &Expression) -> Result<Type, String> {
        match expr {
            Expression::Variable(v) => match v.as_str() {
                "string" => Ok(Type::String),
                "number" => Ok(Type::Number),
                "bool" => Ok(Type::Bool),
                "any" => Ok(Type::Any),
                other => Err(format!("{other:?} is not a type (string, number, bool or any)")),
            },
            Expression::FuncCall(call) => {
                let name = call.name.name.as_str();
                let [arg] = call.args.iter().collect::<Vec<_>>()[..] else {
                    return Err(format!("the type {name}(…) takes exactly one argument"));
                };
                match (name, arg) {
                    ("list", _) => Ok(Type::List(Box::new(Type::parse(arg)?))),
                    ("set", _) => Ok(Type::Set(Box::new(Type::parse(arg)?))),
                    ("map", _) => Ok(Type::Map(Box::new(Type::parse(arg)?))),
                    ("tuple", Expression::Array(items)) => {
                        items.iter().map(Type::parse).collect::<Result<_, _>>().map(Type::Tuple)
                    }
                    ("object", Expression::Object(attrs)) => {
                        let mut out = BTreeMap::new();
                        for (key, value) in attrs.iter() {
                            let name = match key {
                                ObjectKey::Ident(ident) => ident.as_str().to_string(),
                                ObjectKey::Expression(Expression::String(s)) => s.value().to_string(),
                                ObjectKey::Expression(_) => return Err("object type attribute names are names".into()),
                            };
                            out.insert(name, Type::parse(value.expr())?);
                        }
                        Ok(Type::Object(out))
                    }
                    ("tuple", _) => Err("tuple(…) takes a list of types".into()),
                    ("object", _) => Err("object(…) takes an object of attribute types".into()),
                    (other, _) => Err(format!("{other}(…) is not a type constructor")),
                }
            }
            _ => Err(
                "a type is expected here (string, number, bool, any, list(…), set(…), map(…), object(…) or tuple(…))"
                    .into(),
            ),
        }
    }

    /// `value` converted to this type.
    pub fn convert(&self, value: Value) -> Result<Value, String> {
        if value == Value::Null {
            return Ok(Value::Null);
        }
        match (self, value) {
            (Type::Any, v) => Ok(v),
            (Type::String, v @ Value::String(_)) => Ok(v),
            (Type::String, Value::Number(n)) => Ok(Value::String(n.to_string())),
            (Type::String, Value::Bool(b)) => Ok(Value::String(b.to_string())),
            (Type::Number, v @ Value::Number(_)) => Ok(v),
            (Type::Number, Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(hcl::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| format!("a number is required, not {s:?}")),
            (Type::Bool, v @ Value::Bool(_)) => Ok(v),
            (Type::Bool, Value::String(s)) if s == "true" || s == "false" => Ok(Value::Bool(s == "true")),
            (Type::List(t), Value::Array(items)) => {
                items.into_iter().map(|v| t.convert(v)).collect::<Result<_, _>>().map(Value::Array)
            }
            (Type::Set(t), Value::Array(items)) => {
                let mut out: Vec<Value> = Vec::new();
                for v in items {
                    let v = t.convert(v)?;
                    if !out.contains(&v) {
                        out.push(v);
                    }
                }
                // cty orders a set of strings or of numbers by value.
                if out.iter().all(|v| matches!(v, Value::String(_))) {
                    out.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
                } else if out.iter().all(|v| matches!(v, Value::Number(_))) {
                    out.sort_by(|a, b| a.as_f64().partial_cmp(&b.as_f64()).unwrap_or(std::cmp::Ordering::Equal));
                }
                Ok(Value::Array(out))
            }
            (Type::Tuple(types), Value::Array(items)) if types.len() == items.len() => {
                types.iter().zip(items).map(|(t, v)| t.convert(v)).collect::<Result<_, _>>().map(Value::Array)
            }
            (Type::Tuple(types), Value::Array(items)) => {
                Err(format!("a tuple of {} elements is required, not {}", types.len(), items.len()))
            }
            (Type::Map(t), Value::Object(attrs)) => attrs
                .into_iter()
                .map(|(k, v)| t.convert(v).map(|v| (k, v)))
                .collect::<Result<_, _>>()
                .map(Value::Object),
            (Type::Object(types), Value::Object(mut attrs)) => {
                let mut out = hcl::Map::new();
                for (name, t) in types {
                    let v = attrs.swap_remove(name).ok_or_else(|| format!("attribute {name:?} is required"))?;
                    out.insert(name.clone(), t.convert(v).map_err(|e| format!("attribute {name:?}: {e}"))?);
                }
                Ok(Value::Object(out))
            }
            (t, v) => Err(format!("{} is required, not {}", t.describe(), Type::of(&v).describe())),
        }
    }

    /// The type a (non-null) value has.
    fn of(value: &Value) -> Type {
        match value {
            Value::Bool(_) => Type::Bool,
            Value::Number(_) => Type::Number,
            Value::String(_) => Type::String,
            Value::Array(_) => Type::List(Box::new(Type::Any)),
            Value::Object(_) | Value::Null => Type::Object(BTreeMap::new()),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            Type::String => "a string",
            Type::Number => "a number",
            Type::Bool => "a bool",
            Type::Any => "any value",
            Type::List(_) => "a list",
            Type::Set(_) => "a set",
            Type::Map(_) => "a map",
            Type::Object(_) => "an object",
            Type::Tuple(_) => "a tuple",
        }
    }
}
