//! Nomad's HCL2 function library (the parts that need neither Consul nor
//! Vault), declared into hcl-rs' evaluation context. This module owns
//! strings, collections, numbers, conversions and encodings, and declares
//! its siblings' functions with its own: `collection_functions` (lists
//! built from lists, `formatlist`, `csvdecode`), `net_functions` (`cidr*`),
//! `file_functions` (the job file's neighbourhood, relative to the job
//! file), `crypto_functions` (hashes, `bcrypt`, `rsadecrypt`) and
//! `set_time_functions` (sets, regexes, dates and times). `try` and `can`
//! take their arguments unevaluated, so `Scope::eval` implements them.
//! Function values are hcl-rs `Value`s; errors name the function.

use base64::Engine;
use hcl::eval::{Context, FuncArgs, FuncDef, ParamType};
use hcl::Value;

pub use super::file_functions::with_base_dir;
use super::func_support::{arr, format_values, int, n, num, s, to_text, Res};

fn to_json(v: &Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn from_json(v: serde_json::Value) -> Value {
    serde_json::from_value(v).unwrap_or(Value::Null)
}

// Strings.
fn upper(a: FuncArgs) -> Res {
    Ok(s(&a[0]).to_uppercase().into())
}
fn lower(a: FuncArgs) -> Res {
    Ok(s(&a[0]).to_lowercase().into())
}
fn title(a: FuncArgs) -> Res {
    let mut out = String::new();
    let mut start = true;
    for c in s(&a[0]).chars() {
        out.extend(if start { c.to_uppercase().collect::<Vec<_>>() } else { vec![c] });
        start = c.is_whitespace();
    }
    Ok(out.into())
}
fn trimspace(a: FuncArgs) -> Res {
    Ok(s(&a[0]).trim().into())
}
fn trim(a: FuncArgs) -> Res {
    let cut: Vec<char> = s(&a[1]).chars().collect();
    Ok(s(&a[0]).trim_matches(cut.as_slice()).into())
}
fn trimprefix(a: FuncArgs) -> Res {
    Ok(s(&a[0]).strip_prefix(s(&a[1])).unwrap_or(s(&a[0])).into())
}
fn trimsuffix(a: FuncArgs) -> Res {
    Ok(s(&a[0]).strip_suffix(s(&a[1])).unwrap_or(s(&a[0])).into())
}
fn chomp(a: FuncArgs) -> Res {
    Ok(s(&a[0]).trim_end_matches(['\n', '\r']).into())
}
fn strrev(a: FuncArgs) -> Res {
    Ok(s(&a[0]).chars().rev().collect::<String>().into())
}
fn join(a: FuncArgs) -> Res {
    let parts: Vec<String> = a.iter().skip(1).flat_map(arr).map(|v| to_text(&v)).collect();
    Ok(parts.join(s(&a[0])).into())
}
fn split(a: FuncArgs) -> Res {
    Ok(Value::Array(s(&a[1]).split(s(&a[0])).map(Value::from).collect()))
}
fn replace(a: FuncArgs) -> Res {
    Ok(s(&a[0]).replace(s(&a[1]), s(&a[2])).into())
}
fn substr(a: FuncArgs) -> Res {
    let chars: Vec<char> = s(&a[0]).chars().collect();
    let len = chars.len() as i64;
    let mut offset = int(&a[1], "substr offset")?;
    if offset < 0 {
        offset += len;
    }
    let offset = offset.clamp(0, len) as usize;
    let length = int(&a[2], "substr length")?;
    let end = if length < 0 { chars.len() } else { (offset + length as usize).min(chars.len()) };
    Ok(chars[offset..end].iter().collect::<String>().into())
}
fn strlen(a: FuncArgs) -> Res {
    Ok(Value::from(s(&a[0]).chars().count() as u64))
}
fn indent(a: FuncArgs) -> Res {
    let pad = " ".repeat(int(&a[0], "indent spaces")?.max(0) as usize);
    Ok(s(&a[1]).replace('\n', &format!("\n{pad}")).into())
}

/// `format` with Go's verbs as HCL has them: `%s %d %f %t %v %q %%`, with
/// an optional width/precision (`%5.2f`).
fn format(a: FuncArgs) -> Res {
    format_values(s(&a[0]), &a[1..]).map(Value::from).map_err(|e| format!("format: {e}"))
}

// Collections.
fn length(a: FuncArgs) -> Res {
    let len = match &a[0] {
        Value::Array(x) => x.len(),
        Value::Object(o) => o.len(),
        Value::String(t) => t.chars().count(),
        other => return Err(format!("length of {other} is not defined")),
    };
    Ok(Value::from(len as u64))
}
fn concat(a: FuncArgs) -> Res {
    Ok(Value::Array(a.iter().flat_map(arr).collect()))
}
fn contains(a: FuncArgs) -> Res {
    Ok(Value::Bool(arr(&a[0]).contains(&a[1])))
}
fn keys(a: FuncArgs) -> Res {
    match &a[0] {
        Value::Object(o) => Ok(Value::Array(o.keys().cloned().map(Value::from).collect())),
        other => Err(format!("keys needs a map, not {other}")),
    }
}
fn values(a: FuncArgs) -> Res {
    match &a[0] {
        Value::Object(o) => Ok(Value::Array(o.values().cloned().collect())),
        other => Err(format!("values needs a map, not {other}")),
    }
}
fn lookup(a: FuncArgs) -> Res {
    match (&a[0], a.get(2)) {
        (Value::Object(o), default) => match (o.get(s(&a[1])), default) {
            (Some(v), _) => Ok(v.clone()),
            (None, Some(d)) => Ok(d.clone()),
            (None, None) => Err(format!("lookup: the map has no key {:?} and no default was given", s(&a[1]))),
        },
        (other, _) => Err(format!("lookup needs a map, not {other}")),
    }
}
fn merge(a: FuncArgs) -> Res {
    let mut out = hcl::Map::new();
    for v in a.iter() {
        if let Value::Object(o) = v {
            out.extend(o.clone());
        }
    }
    Ok(Value::Object(out))
}
fn element(a: FuncArgs) -> Res {
    let list = arr(&a[0]);
    if list.is_empty() {
        return Err("element: the list is empty".into());
    }
    let i = int(&a[1], "element index")?;
    if i < 0 {
        return Err("element: the index may not be negative".into());
    }
    Ok(list[i as usize % list.len()].clone())
}
fn flatten_into(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten_into(i, out)),
        other => out.push(other.clone()),
    }
}
fn flatten(a: FuncArgs) -> Res {
    let mut out = Vec::new();
    flatten_into(&a[0], &mut out);
    Ok(Value::Array(out))
}
fn distinct(a: FuncArgs) -> Res {
    let mut out: Vec<Value> = Vec::new();
    for v in arr(&a[0]) {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(Value::Array(out))
}
fn reverse(a: FuncArgs) -> Res {
    Ok(Value::Array(arr(&a[0]).into_iter().rev().collect()))
}
fn slice(a: FuncArgs) -> Res {
    let list = arr(&a[0]);
    let (from, to) = (int(&a[1], "slice start")?, int(&a[2], "slice end")?);
    if from < 0 || to < from || to as usize > list.len() {
        return Err(format!("slice: indexes {from}..{to} are out of range for {} elements", list.len()));
    }
    Ok(Value::Array(list[from as usize..to as usize].to_vec()))
}
fn sort(a: FuncArgs) -> Res {
    let mut items: Vec<String> = arr(&a[0]).iter().map(to_text).collect();
    items.sort();
    Ok(Value::Array(items.into_iter().map(Value::from).collect()))
}
fn range(a: FuncArgs) -> Res {
    let args: Vec<f64> = a.iter().map(n).collect();
    let (start, end, step) = match args.as_slice() {
        [end] => (0.0, *end, 1.0),
        [start, end] => (*start, *end, if end >= start { 1.0 } else { -1.0 }),
        [start, end, step] => (*start, *end, *step),
        _ => return Err("range takes one to three numbers".into()),
    };
    if step == 0.0 {
        return Err("range: the step may not be zero".into());
    }
    let mut out = Vec::new();
    let mut x = start;
    while (step > 0.0 && x < end) || (step < 0.0 && x > end) {
        out.push(num(x)?);
        x += step;
        if out.len() > 1024 {
            return Err("range: more than 1024 elements".into());
        }
    }
    Ok(Value::Array(out))
}
fn coalesce(a: FuncArgs) -> Res {
    a.iter()
        .find(|v| !matches!(v, Value::Null) && v.as_str() != Some(""))
        .cloned()
        .ok_or_else(|| "coalesce: every argument is null or empty".to_string())
}
fn compact(a: FuncArgs) -> Res {
    Ok(Value::Array(arr(&a[0]).into_iter().filter(|v| !matches!(v, Value::Null) && v.as_str() != Some("")).collect()))
}
fn index(a: FuncArgs) -> Res {
    arr(&a[0])
        .iter()
        .position(|v| v == &a[1])
        .map(|i| Value::from(i as u64))
        .ok_or_else(|| format!("index: {} is not in the list", a[1]))
}
fn zipmap(a: FuncArgs) -> Res {
    let (k, v) = (arr(&a[0]), arr(&a[1]));
    if k.len() != v.len() {
        return Err(format!("zipmap: {} keys but {} values", k.len(), v.len()));
    }
    Ok(Value::Object(k.iter().map(to_text).zip(v).collect()))
}

// Numbers.
fn abs(a: FuncArgs) -> Res {
    num(n(&a[0]).abs())
}
fn ceil(a: FuncArgs) -> Res {
    num(n(&a[0]).ceil())
}
fn floor(a: FuncArgs) -> Res {
    num(n(&a[0]).floor())
}
fn signum(a: FuncArgs) -> Res {
    let x = n(&a[0]);
    num(if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    })
}
fn pow(a: FuncArgs) -> Res {
    num(n(&a[0]).powf(n(&a[1])))
}
/// `log(x, base)`.
fn log(a: FuncArgs) -> Res {
    num(n(&a[0]).ln() / n(&a[1]).ln()).map_err(|e| format!("log: {e}"))
}
fn max(a: FuncArgs) -> Res {
    a.iter().map(n).reduce(f64::max).map_or_else(|| Err("max needs at least one number".into()), num)
}
fn min(a: FuncArgs) -> Res {
    a.iter().map(n).reduce(f64::min).map_or_else(|| Err("min needs at least one number".into()), num)
}
fn parseint(a: FuncArgs) -> Res {
    let base = int(&a[1], "parseint base")?;
    if !(2..=36).contains(&base) {
        return Err(format!("parseint: base {base} must be between 2 and 36"));
    }
    i64::from_str_radix(s(&a[0]), base as u32)
        .map(Value::from)
        .map_err(|e| format!("parseint: cannot parse {:?} in base {base}: {e}", s(&a[0])))
}

// Conversions.
fn tostring(a: FuncArgs) -> Res {
    match &a[0] {
        Value::Array(_) | Value::Object(_) => Err(format!("tostring: cannot convert {} to a string", a[0])),
        v => Ok(to_text(v).into()),
    }
}
fn tonumber(a: FuncArgs) -> Res {
    match &a[0] {
        Value::Number(x) => Ok(Value::Number(*x)),
        Value::String(t) => {
            t.trim().parse::<f64>().map_err(|_| format!("tonumber: {t:?} is not a number")).and_then(num)
        }
        other => Err(format!("tonumber: cannot convert {other}")),
    }
}
fn tobool(a: FuncArgs) -> Res {
    match &a[0] {
        Value::Bool(b) => Ok(Value::Bool(*b)),
        Value::String(t) if t == "true" || t == "false" => Ok(Value::Bool(t == "true")),
        other => Err(format!("tobool: cannot convert {other}")),
    }
}

// Encodings.
fn jsonencode(a: FuncArgs) -> Res {
    serde_json::to_string(&to_json(&a[0])).map(Value::from).map_err(|e| format!("jsonencode: {e}"))
}
fn jsondecode(a: FuncArgs) -> Res {
    serde_json::from_str(s(&a[0])).map(from_json).map_err(|e| format!("jsondecode: {e}"))
}
fn yamlencode(a: FuncArgs) -> Res {
    serde_yaml::to_string(&to_json(&a[0])).map(Value::from).map_err(|e| format!("yamlencode: {e}"))
}
fn yamldecode(a: FuncArgs) -> Res {
    serde_yaml::from_str::<serde_json::Value>(s(&a[0])).map(from_json).map_err(|e| format!("yamldecode: {e}"))
}
fn base64encode(a: FuncArgs) -> Res {
    Ok(base64::engine::general_purpose::STANDARD.encode(s(&a[0])).into())
}
fn base64decode(a: FuncArgs) -> Res {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s(&a[0])).map_err(|e| format!("base64decode: {e}"))?;
    String::from_utf8(bytes).map(Value::from).map_err(|_| "base64decode: the result is not UTF-8".into())
}
fn urlencode(a: FuncArgs) -> Res {
    Ok(percent_encoding::utf8_percent_encode(s(&a[0]), percent_encoding::NON_ALPHANUMERIC).to_string().into())
}

// IDs.
fn uuidv4(_: FuncArgs) -> Res {
    Ok(uuid::Uuid::new_v4().to_string().into())
}

/// Declares every function into `ctx`.
/// `templatefile(path, vars)`: the file (relative to the job file) as an
/// HCL template over `vars`, with the whole library (so it lives here).
fn templatefile(a: FuncArgs) -> Res {
    let path = super::file_functions::base_path(s(&a[0]));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("templatefile: {}: {e}", path.display()))?;
    let template: hcl::Template = text.parse().map_err(|e| format!("templatefile: {}: {e}", path.display()))?;
    let mut ctx = Context::new();
    declare(&mut ctx);
    if let Some(Value::Object(vars)) = a.get(1) {
        for (k, v) in vars {
            ctx.declare_var(k.as_str(), v.clone());
        }
    }
    hcl::eval::Evaluate::evaluate(&template, &ctx)
        .map(Value::from)
        .map_err(|e| format!("templatefile: {}: {e}", path.display()))
}

pub fn declare(ctx: &mut Context<'_>) {
    use ParamType::{Any, Number as Num, String as Str};
    let list = || ParamType::array_of(Any);
    let fixed: [(&str, hcl::eval::Func, Vec<ParamType>); 46] = [
        ("templatefile", templatefile, vec![Str, Any]),
        ("upper", upper, vec![Str]),
        ("lower", lower, vec![Str]),
        ("title", title, vec![Str]),
        ("trimspace", trimspace, vec![Str]),
        ("trim", trim, vec![Str, Str]),
        ("trimprefix", trimprefix, vec![Str, Str]),
        ("trimsuffix", trimsuffix, vec![Str, Str]),
        ("chomp", chomp, vec![Str]),
        ("strrev", strrev, vec![Str]),
        ("strlen", strlen, vec![Str]),
        ("split", split, vec![Str, Str]),
        ("replace", replace, vec![Str, Str, Str]),
        ("substr", substr, vec![Str, Num, Num]),
        ("indent", indent, vec![Num, Str]),
        ("length", length, vec![Any]),
        ("contains", contains, vec![list(), Any]),
        ("keys", keys, vec![Any]),
        ("values", values, vec![Any]),
        ("element", element, vec![list(), Num]),
        ("flatten", flatten, vec![list()]),
        ("distinct", distinct, vec![list()]),
        ("reverse", reverse, vec![list()]),
        ("slice", slice, vec![list(), Num, Num]),
        ("sort", sort, vec![list()]),
        ("compact", compact, vec![list()]),
        ("index", index, vec![list(), Any]),
        ("zipmap", zipmap, vec![list(), list()]),
        ("abs", abs, vec![Num]),
        ("ceil", ceil, vec![Num]),
        ("floor", floor, vec![Num]),
        ("signum", signum, vec![Num]),
        ("pow", pow, vec![Num, Num]),
        ("log", log, vec![Num, Num]),
        ("parseint", parseint, vec![Str, Num]),
        ("tostring", tostring, vec![Any]),
        ("tonumber", tonumber, vec![Any]),
        ("tobool", tobool, vec![Any]),
        ("jsonencode", jsonencode, vec![Any]),
        ("jsondecode", jsondecode, vec![Str]),
        ("yamlencode", yamlencode, vec![Any]),
        ("yamldecode", yamldecode, vec![Str]),
        ("base64encode", base64encode, vec![Str]),
        ("base64decode", base64decode, vec![Str]),
        ("urlencode", urlencode, vec![Str]),
        ("uuidv4", uuidv4, vec![]),
    ];
    for (name, func, params) in fixed {
        ctx.declare_func(name, FuncDef::new(func, params));
    }
    let variadic: [(&str, hcl::eval::Func, Vec<ParamType>, ParamType); 8] = [
        ("format", format, vec![Str], Any),
        ("join", join, vec![Str], list()),
        ("concat", concat, vec![], list()),
        ("merge", merge, vec![], Any),
        ("coalesce", coalesce, vec![], Any),
        ("max", max, vec![], Num),
        ("min", min, vec![], Num),
        ("range", range, vec![], Num),
    ];
    for (name, func, params, rest) in variadic {
        ctx.declare_func(name, FuncDef::builder().params(params).variadic_param(rest).build(func));
    }
    ctx.declare_func("lookup", FuncDef::builder().params([Any, Str]).variadic_param(Any).build(lookup));
    super::collection_functions::declare(ctx);
    super::net_functions::declare(ctx);
    super::file_functions::declare(ctx);
    super::crypto_functions::declare(ctx);
    super::set_time_functions::declare(ctx);
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use hcl::eval::Evaluate;

    /// Evaluates `expr` with the whole library.
    pub(in crate::hclspan) fn eval(expr: &str) -> Result<Value, String> {
        let mut ctx = Context::new();
        declare(&mut ctx);
        let e: hcl::Expression = expr.parse().map_err(|e: hcl::Error| e.to_string())?;
        e.evaluate(&ctx).map_err(|e| e.to_string())
    }

    /// `expr`'s value as JSON; panics on an error.
    pub(in crate::hclspan) fn ok(expr: &str) -> String {
        serde_json::to_string(&eval(expr).unwrap_or_else(|e| panic!("{expr}: {e}"))).unwrap()
    }

    #[test]
    fn strings_collections_numbers_and_encodings_behave_as_nomads() {
        assert_eq!(ok(r#"upper("redis")"#), "\"REDIS\"");
        assert_eq!(
            ok(r#"format("%s-%03d %.2f %t %q", "web", 7, 3.14159, true, "x")"#),
            "\"web-007 3.14 true \\\"x\\\"\""
        );
        assert_eq!(ok(r#"join(",", ["a", "b"], ["c"])"#), "\"a,b,c\"");
        assert_eq!(ok(r#"split(",", "a,b")"#), "[\"a\",\"b\"]");
        assert_eq!(ok(r#"substr("hello world", 1, 4)"#), "\"ello\"");
        assert_eq!(ok(r#"title("hello world")"#), "\"Hello World\"");
        assert_eq!(ok(r#"lookup({a = 1}, "b", 2)"#), "2");
        assert!(eval(r#"lookup({a = 1}, "b")"#).unwrap_err().contains("no key \"b\""));
        assert_eq!(ok(r#"merge({a = 1}, {b = 2}, {a = 3})"#), "{\"a\":3,\"b\":2}");
        assert_eq!(ok("length([1, 2, 3])"), "3");
        assert_eq!(ok("concat([1], [2, 3])"), "[1,2,3]");
        assert_eq!(ok("range(3)"), "[0,1,2]");
        assert_eq!(ok("max(3, 9, 1)"), "9");
        assert_eq!(ok(r#"parseint("ff", 16)"#), "255");
        assert_eq!(ok(r#"jsonencode({a = [1, "x"]})"#), "\"{\\\"a\\\":[1,\\\"x\\\"]}\"");
        assert_eq!(ok(r#"jsondecode("{\"k\": true}")"#), "{\"k\":true}");
        assert_eq!(ok(r#"base64encode("hi")"#), "\"aGk=\"");
        assert_eq!(ok("log(16, 2)"), "4");
        assert!(eval("log(0, 10)").unwrap_err().contains("log: "));
        assert_eq!(ok(r#"strlen("héllo")"#), "5");
        assert_eq!(ok(r#"coalesce("", "b")"#), "\"b\"");
        assert_eq!(ok(r#"distinct(["a", "b", "a"])"#), "[\"a\",\"b\"]");
        assert!(eval(r#"format("%d", "x")"#).unwrap_err().contains("%d needs a whole number"));
    }
}
