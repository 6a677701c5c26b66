//! Set functions, type conversions of collections, regular expressions
//! (`regex`, `regexall`, `regex_replace`), dates and times (`formatdate`,
//! `timeadd`, RFC 3339 timestamps) and `uuidv5`. Declared into the same
//! context as `functions`.

use chrono::{DateTime, FixedOffset};
use hcl::eval::{Context, FuncArgs, FuncDef, ParamType};
use hcl::Value;

type Res = Result<Value, String>;

fn items(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn distinct(values: impl IntoIterator<Item = Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for v in values {
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out
}

fn setunion(a: FuncArgs) -> Res {
    Ok(Value::Array(distinct(a.iter().flat_map(items))))
}

fn setintersection(a: FuncArgs) -> Res {
    let mut sets = a.iter().map(items);
    let first = sets.next().unwrap_or_default();
    let rest: Vec<Vec<Value>> = sets.collect();
    Ok(Value::Array(distinct(first.into_iter().filter(|v| rest.iter().all(|s| s.contains(v))))))
}

fn setsubtract(a: FuncArgs) -> Res {
    let remove = items(&a[1]);
    Ok(Value::Array(distinct(items(&a[0]).into_iter().filter(|v| !remove.contains(v)))))
}

fn toset(a: FuncArgs) -> Res {
    Ok(Value::Array(distinct(items(&a[0]))))
}

fn tolist(a: FuncArgs) -> Res {
    Ok(Value::Array(items(&a[0])))
}

fn tomap(a: FuncArgs) -> Res {
    match &a[0] {
        v @ Value::Object(_) => Ok(v.clone()),
        _ => Err("tomap: the argument must be an object or a map".into()),
    }
}

fn compile(pattern: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(pattern).map_err(|e| format!("invalid regular expression {pattern:?}: {e}"))
}

/// One match as HCL gives it: the matched text without capture groups, a
/// list of the groups, or an object of the named groups.
fn capture(re: &regex::Regex, caps: &regex::Captures<'_>) -> Value {
    let text = |m: Option<regex::Match<'_>>| Value::String(m.map(|m| m.as_str().to_string()).unwrap_or_default());
    if re.captures_len() == 1 {
        return text(caps.get(0));
    }
    let names: Vec<&str> = re.capture_names().flatten().collect();
    if names.is_empty() {
        Value::Array((1..re.captures_len()).map(|i| text(caps.get(i))).collect())
    } else {
        Value::Object(names.iter().map(|n| (n.to_string(), text(caps.name(n)))).collect())
    }
}

fn regex_fn(a: FuncArgs) -> Res {
    let (pattern, s) = (a[0].as_str().unwrap_or_default(), a[1].as_str().unwrap_or_default());
    let re = compile(pattern)?;
    let caps = re.captures(s).ok_or_else(|| format!("regex: pattern {pattern:?} did not match {s:?}"))?;
    Ok(capture(&re, &caps))
}

fn regexall(a: FuncArgs) -> Res {
    let (pattern, s) = (a[0].as_str().unwrap_or_default(), a[1].as_str().unwrap_or_default());
    let re = compile(pattern)?;
    Ok(Value::Array(re.captures_iter(s).map(|c| capture(&re, &c)).collect()))
}

/// `regex_replace(str, pattern, replacement)`: every match replaced, with
/// `$1`, `${name}` standing for capture groups.
fn regex_replace(a: FuncArgs) -> Res {
    let (s, pattern, replacement) =
        (a[0].as_str().unwrap_or_default(), a[1].as_str().unwrap_or_default(), a[2].as_str().unwrap_or_default());
    let re = compile(pattern).map_err(|e| format!("regex_replace: {e}"))?;
    Ok(Value::String(re.replace_all(s, replacement).into_owned()))
}

fn timestamp_arg(v: &Value) -> Result<DateTime<FixedOffset>, String> {
    let s = v.as_str().unwrap_or_default();
    DateTime::parse_from_rfc3339(s).map_err(|e| format!("{s:?} is not an RFC 3339 timestamp: {e}"))
}

/// `formatdate(spec, timestamp)` with Terraform's format letters
/// (`YYYY-MM-DD'T'hh:mm:ssZ`, `DD MMM YYYY`, `EEEE`, `h:mm aa`, …).
fn formatdate(a: FuncArgs) -> Res {
    let spec = a[0].as_str().unwrap_or_default();
    let t = timestamp_arg(&a[1])?;
    let mut out = String::new();
    let chars: Vec<char> = spec.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            let end = chars[i + 1..].iter().position(|c| *c == '\'').ok_or("formatdate: unterminated quote")?;
            out.extend(&chars[i + 1..i + 1 + end]);
            i += end + 2;
            continue;
        }
        let run = chars[i..].iter().take_while(|x| **x == c).count();
        let token: String = std::iter::repeat_n(c, run).collect();
        let chrono_fmt = match token.as_str() {
            "YYYY" => "%Y",
            "YY" => "%y",
            "MMMM" => "%B",
            "MMM" => "%b",
            "MM" => "%m",
            "M" => "%-m",
            "DD" => "%d",
            "D" => "%-d",
            "EEEE" => "%A",
            "EEE" => "%a",
            "hh" => "%H",
            "h" => "%-H",
            "HH" => "%I",
            "H" => "%-I",
            "AA" => "%p",
            "aa" => "%P",
            "mm" => "%M",
            "m" => "%-M",
            "ss" => "%S",
            "s" => "%-S",
            "ZZZZZ" => "%:z",
            "ZZZZ" => "%z",
            "Z" => {
                out.push_str(&if t.offset().local_minus_utc() == 0 { "Z".into() } else { t.format("%:z").to_string() });
                i += run;
                continue;
            }
            _ if c.is_ascii_alphabetic() => return Err(format!("formatdate: invalid date format verb {token:?}")),
            _ => {
                out.push_str(&token);
                i += run;
                continue;
            }
        };
        out.push_str(&t.format(chrono_fmt).to_string());
        i += run;
    }
    Ok(Value::String(out))
}

fn timeadd(a: FuncArgs) -> Res {
    let t = timestamp_arg(&a[0])?;
    let d = a[1].as_str().unwrap_or_default();
    let (negative, magnitude) = match d.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, d),
    };
    let nanos = crate::util::parse_duration(magnitude).map_err(|e| format!("timeadd: duration {d:?}: {e}"))?;
    let delta = chrono::Duration::nanoseconds(if negative { -nanos } else { nanos });
    Ok(Value::String((t + delta).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)))
}

fn uuidv5(a: FuncArgs) -> Res {
    let (ns, name) = (a[0].as_str().unwrap_or_default(), a[1].as_str().unwrap_or_default());
    let namespace = match ns {
        "dns" => uuid::Uuid::NAMESPACE_DNS,
        "url" => uuid::Uuid::NAMESPACE_URL,
        "oid" => uuid::Uuid::NAMESPACE_OID,
        "x500" => uuid::Uuid::NAMESPACE_X500,
        other => uuid::Uuid::parse_str(other).map_err(|e| format!("uuidv5: namespace {other:?}: {e}"))?,
    };
    Ok(Value::String(uuid::Uuid::new_v5(&namespace, name.as_bytes()).to_string()))
}

/// Declares these functions into `ctx`.
pub fn declare(ctx: &mut Context<'_>) {
    use ParamType::{Any, String as Str};
    let list = || ParamType::array_of(Any);
    let fixed: [(&str, hcl::eval::Func, Vec<ParamType>); 10] = [
        ("setsubtract", setsubtract, vec![list(), list()]),
        ("toset", toset, vec![list()]),
        ("tolist", tolist, vec![list()]),
        ("tomap", tomap, vec![Any]),
        ("regex", regex_fn, vec![Str, Str]),
        ("regexall", regexall, vec![Str, Str]),
        ("regex_replace", regex_replace, vec![Str, Str, Str]),
        ("formatdate", formatdate, vec![Str, Str]),
        ("timeadd", timeadd, vec![Str, Str]),
        ("uuidv5", uuidv5, vec![Str, Str]),
    ];
    for (name, func, params) in fixed {
        ctx.declare_func(name, FuncDef::new(func, params));
    }
    ctx.declare_func("setunion", FuncDef::builder().variadic_param(list()).build(setunion));
    ctx.declare_func(
        "setintersection",
        FuncDef::builder().params([list()]).variadic_param(list()).build(setintersection),
    );
}

#[cfg(test)]
mod tests {
    use super::super::functions::tests::{eval, ok};

    #[test]
    fn sets_conversions_and_regexes() {
        assert_eq!(ok(r#"setunion(["a", "b"], ["b", "c"])"#), r#"["a","b","c"]"#);
        assert_eq!(ok(r#"setintersection(["a", "b"], ["b", "c"], ["b"])"#), r#"["b"]"#);
        assert_eq!(ok(r#"setsubtract(["a", "b", "c"], ["b"])"#), r#"["a","c"]"#);
        assert_eq!(ok(r#"toset(["a", "a", "b"])"#), r#"["a","b"]"#);
        assert_eq!(ok(r#"tomap({a = 1})"#), r#"{"a":1}"#);
        assert_eq!(ok(r#"regex("[0-9]+", "v1.23")"#), r#""1""#);
        assert_eq!(ok(r#"regex("(\\d+)\\.(\\d+)", "v1.23")"#), r#"["1","23"]"#);
        assert_eq!(ok(r#"regex("(?P<major>\\d+)\\.(?P<minor>\\d+)", "v1.23")"#), r#"{"major":"1","minor":"23"}"#);
        assert_eq!(ok(r#"regexall("[a-z]+", "a1bc2")"#), r#"["a","bc"]"#);
        assert!(eval(r#"regex("x", "abc")"#).unwrap_err().contains("did not match"));
        assert!(eval(r#"regex("(", "abc")"#).unwrap_err().contains("invalid regular expression"));
        assert_eq!(ok(r#"regex_replace("web-01.lab", "(\\w+)-(\\d+)", "$2-$1")"#), r#""01-web.lab""#);
        assert_eq!(ok(r#"regex_replace("a1b22", "(?P<n>\\d+)", "<$${n}>")"#), r#""a<1>b<22>""#);
        assert!(eval(r#"regex_replace("x", "[", "y")"#)
            .unwrap_err()
            .contains("regex_replace: invalid regular expression"));
    }

    #[test]
    fn dates_and_uuids() {
        let t = "\"2026-12-02T23:05:09Z\"";
        assert_eq!(ok(&format!("formatdate(\"YYYY-MM-DD'T'hh:mm:ssZ\", {t})")), r#""2026-12-02T23:05:09Z""#);
        assert_eq!(ok(&format!("formatdate(\"DD MMM YYYY, EEE h:mm aa\", {t})")), r#""02 Dec 2026, Wed 23:05 pm""#);
        assert_eq!(ok(&format!("formatdate(\"HH:mm AA ZZZZZ\", {t})")), r#""11:05 PM +00:00""#);
        assert!(eval(&format!("formatdate(\"YYYY-QQ\", {t})"))
            .unwrap_err()
            .contains("invalid date format verb \"QQ\""));
        assert_eq!(ok(&format!("timeadd({t}, \"1h30m\")")), r#""2026-12-03T00:35:09Z""#);
        assert_eq!(ok(&format!("timeadd({t}, \"-10m\")")), r#""2026-12-02T22:55:09Z""#);
        assert!(eval("timeadd(\"yesterday\", \"1h\")").unwrap_err().contains("not an RFC 3339 timestamp"));
        assert_eq!(ok(r#"uuidv5("dns", "www.example.com")"#), r#""2ed6657d-e927-568b-95e1-2665a8aea6a2""#);
    }
}
