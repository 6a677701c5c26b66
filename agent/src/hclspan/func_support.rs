//! What the function modules share: the `Res` they return, argument
//! readers (`s`, `n`, `int`, `arr`), number and text conversions, and the
//! Go-style verb formatter behind `format` and `formatlist`.

use hcl::{Number, Value};

pub(super) type Res = Result<Value, String>;

pub(super) fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

pub(super) fn n(v: &Value) -> f64 {
    v.as_number().and_then(Number::as_f64).unwrap_or(0.0)
}

pub(super) fn num(x: f64) -> Res {
    Number::from_f64(x).map(Value::Number).ok_or_else(|| format!("{x} is not a finite number"))
}

pub(super) fn int(v: &Value, what: &str) -> Result<i64, String> {
    let x = n(v);
    if x.fract() != 0.0 {
        return Err(format!("{what} must be a whole number, not {x}"));
    }
    Ok(x as i64)
}

pub(super) fn arr(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.clone(),
        _ => Vec::new(),
    }
}

pub(super) fn to_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `spec` formatted with `values` (`format`, and `formatlist` per row).
pub(super) fn format_values(spec: &str, values: &[Value]) -> Result<String, String> {
    let mut args = values.iter();
    let mut out = String::new();
    let mut chars = spec.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut flags = String::new();
        while let Some(&d) = chars.peek() {
            if d.is_ascii_digit() || d == '.' || d == '-' {
                flags.push(d);
                chars.next();
            } else {
                break;
            }
        }
        let verb = chars.next().ok_or("the string ends inside a verb")?;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let v = args.next().ok_or_else(|| format!("not enough arguments for \"{spec}\""))?;
        let (width, precision) = match flags.split_once('.') {
            Some((w, p)) => (w.parse::<usize>().ok(), p.parse::<usize>().ok()),
            None => (flags.trim_start_matches('-').parse::<usize>().ok(), None),
        };
        let text = match verb {
            's' | 'v' => to_text(v),
            'q' => serde_json::to_string(&to_text(v)).unwrap_or_default(),
            't' => match v {
                Value::Bool(b) => b.to_string(),
                other => return Err(format!("%t needs a bool, not {other}")),
            },
            'd' => match v.as_number().and_then(Number::as_f64) {
                Some(x) if x.fract() == 0.0 => format!("{}", x as i64),
                _ => return Err(format!("%d needs a whole number, not {v}")),
            },
            'f' => match v.as_number().and_then(Number::as_f64) {
                Some(x) => format!("{x:.*}", precision.unwrap_or(6)),
                None => return Err(format!("%f needs a number, not {v}")),
            },
            other => return Err(format!("unsupported verb %{other}")),
        };
        let width = width.unwrap_or(0);
        if flags.starts_with('-') {
            out.push_str(&format!("{text:<width$}"));
        } else if flags.starts_with('0') && matches!(verb, 'd' | 'f') {
            out.push_str(&format!("{text:0>width$}"));
        } else {
            out.push_str(&format!("{text:>width$}"));
        }
    }
    Ok(out)
}
