//! Functions that build lists from lists: `chunklist`, `coalescelist`,
//! `setproduct`, `formatlist` (`format` over zipped lists) and
//! `csvdecode` (a CSV table as a list of objects). Declared into the same
//! context as `functions`.

use hcl::eval::{Context, FuncArgs, FuncDef, ParamType};
use hcl::Value;

use super::func_support::{arr, format_values, int, s, Res};
use super::kind;

/// `chunklist(list, size)`: the list cut into lists of `size` elements
/// (the last may be shorter); size 0 gives the whole list as one chunk.
fn chunklist(a: FuncArgs) -> Res {
    let list = arr(&a[0]);
    let size = int(&a[1], "chunklist size")?;
    if size < 0 {
        return Err(format!("chunklist: the size must be positive, not {size}"));
    }
    if size == 0 && !list.is_empty() {
        return Ok(Value::Array(vec![Value::Array(list)]));
    }
    Ok(Value::Array(list.chunks(size.max(1) as usize).map(|c| Value::Array(c.to_vec())).collect()))
}

/// `coalescelist(lists...)`: the first list that is not empty.
fn coalescelist(a: FuncArgs) -> Res {
    for v in a.iter() {
        match v {
            Value::Array(items) if !items.is_empty() => return Ok(v.clone()),
            Value::Array(_) | Value::Null => {}
            other => return Err(format!("coalescelist: the arguments must be lists, not {}", kind(other))),
        }
    }
    Err("coalescelist: every argument is null or an empty list".into())
}

/// `setproduct(sets...)`: every combination of one element of each, in
/// order, as lists.
fn setproduct(a: FuncArgs) -> Res {
    if a.len() < 2 {
        return Err("setproduct: at least two arguments are required".into());
    }
    let mut product: Vec<Vec<Value>> = vec![Vec::new()];
    for set in a.iter() {
        let Value::Array(items) = set else {
            return Err(format!("setproduct: the arguments must be sets or lists, not {}", kind(set)));
        };
        product = product
            .iter()
            .flat_map(|prefix| items.iter().map(|item| prefix.iter().chain([item]).cloned().collect()))
            .collect();
    }
    Ok(Value::Array(product.into_iter().map(Value::Array).collect()))
}

/// `formatlist(spec, args...)`: `format` once per element of the list
/// arguments, which must all be as long; other arguments repeat.
fn formatlist(a: FuncArgs) -> Res {
    let (spec, args) = (s(&a[0]), &a[1..]);
    let mut rows: Option<(usize, usize)> = None;
    for (i, v) in args.iter().enumerate() {
        let Value::Array(items) = v else { continue };
        match rows {
            Some((len, first)) if len != items.len() => {
                return Err(format!(
                    "formatlist: argument {} has length {}, which is inconsistent with argument {} of length {len}",
                    i + 1,
                    items.len(),
                    first + 1
                ))
            }
            Some(_) => {}
            None => rows = Some((items.len(), i)),
        }
    }
    let rows = rows.map_or(1, |(len, _)| len);
    (0..rows)
        .map(|row| {
            let values: Vec<Value> = args
                .iter()
                .map(|v| match v {
                    Value::Array(items) => items[row].clone(),
                    other => other.clone(),
                })
                .collect();
            format_values(spec, &values)
                .map(Value::from)
                .map_err(|e| format!("formatlist: error on format iteration {row}: {e}"))
        })
        .collect::<Result<_, _>>()
        .map(Value::Array)
}

/// `csvdecode(text)`: CSV (RFC 4180, as Go's encoding/csv reads it) whose
/// first row names the columns, as a list of objects of strings; every
/// row must have as many fields as the header.
fn csvdecode(a: FuncArgs) -> Res {
    let mut records = csv_records(s(&a[0])).map_err(|e| format!("csvdecode: {e}"))?.into_iter();
    let (_, header) = records.next().ok_or("csvdecode: missing header line")?;
    if let Some((i, name)) = header.iter().enumerate().find(|(i, name)| header[..*i].contains(name)) {
        return Err(format!("csvdecode: duplicate column name {name:?} (column {})", i + 1));
    }
    records
        .map(|(line, fields)| {
            if fields.len() != header.len() {
                return Err(format!(
                    "csvdecode: line {line}: wrong number of fields ({} where the header has {})",
                    fields.len(),
                    header.len()
                ));
            }
            Ok(Value::Object(header.iter().cloned().zip(fields.into_iter().map(Value::from)).collect()))
        })
        .collect::<Result<_, _>>()
        .map(Value::Array)
}

/// The records of a CSV text, each with the line it starts on: fields
/// split by `,`, quoted fields (`""` a quote) may hold commas and line
/// breaks, `\r\n` counts as `\n` and blank lines are skipped.
fn csv_records(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let text = text.replace("\r\n", "\n");
    let mut chars = text.chars().peekable();
    let (mut line, mut records) = (1, Vec::new());
    while let Some(&c) = chars.peek() {
        if c == '\n' {
            chars.next();
            line += 1;
            continue;
        }
        let start = line;
        let mut record = Vec::new();
        loop {
            let mut field = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(c) => {
                            line += usize::from(c == '\n');
                            field.push(c);
                        }
                        None => return Err(format!("line {start}: a quoted field is not closed")),
                    }
                }
                if !matches!(chars.peek(), None | Some(',' | '\n')) {
                    return Err(format!("line {line}: extraneous or missing \" in quoted-field"));
                }
            } else {
                while let Some(&c) = chars.peek().filter(|c| !matches!(c, ',' | '\n')) {
                    if c == '"' {
                        return Err(format!("line {line}: bare \" in non-quoted-field"));
                    }
                    field.push(c);
                    chars.next();
                }
            }
            record.push(field);
            match chars.next() {
                Some(',') => {}
                Some(_) => {
                    line += 1;
                    break;
                }
                None => break,
            }
        }
        records.push((start, record));
    }
    Ok(records)
}

/// Declares these functions into `ctx`.
pub fn declare(ctx: &mut Context<'_>) {
    use ParamType::{Any, Number as Num, String as Str};
    let list = || ParamType::array_of(Any);
    ctx.declare_func("chunklist", FuncDef::new(chunklist, [list(), Num]));
    ctx.declare_func("csvdecode", FuncDef::new(csvdecode, [Str]));
    ctx.declare_func("coalescelist", FuncDef::builder().variadic_param(Any).build(coalescelist));
    ctx.declare_func("setproduct", FuncDef::builder().variadic_param(Any).build(setproduct));
    ctx.declare_func("formatlist", FuncDef::builder().param(Str).variadic_param(Any).build(formatlist));
}

#[cfg(test)]
mod tests {
    use super::super::functions::tests::{eval, ok};

    #[test]
    fn chunklist_coalescelist_and_setproduct() {
        assert_eq!(ok(r#"chunklist(["a", "b", "c", "d", "e"], 2)"#), r#"[["a","b"],["c","d"],["e"]]"#);
        assert_eq!(ok(r#"chunklist(["a", "b"], 0)"#), r#"[["a","b"]]"#);
        assert_eq!(ok("chunklist([], 3)"), "[]");
        assert!(eval(r#"chunklist(["a"], -1)"#).unwrap_err().contains("chunklist: the size must be positive"));
        assert_eq!(ok(r#"coalescelist([], null, ["x", "y"], ["z"])"#), r#"["x","y"]"#);
        assert!(eval("coalescelist([], [])").unwrap_err().contains("coalescelist: every argument"));
        assert!(eval(r#"coalescelist("a")"#).unwrap_err().contains("must be lists, not a string"));
        assert_eq!(
            ok(r#"setproduct(["dev", "prod"], ["a", "b"])"#),
            r#"[["dev","a"],["dev","b"],["prod","a"],["prod","b"]]"#
        );
        assert_eq!(ok(r#"setproduct(["a"], [])"#), "[]");
        assert!(eval(r#"setproduct(["a"])"#).unwrap_err().contains("at least two arguments"));
    }

    #[test]
    fn formatlist_zips_lists_and_repeats_the_rest() {
        assert_eq!(
            ok(r#"formatlist("Hello, %s! (%s, %d)", ["Valentina", "Ander"], "hi", [1, 2])"#),
            r#"["Hello, Valentina! (hi, 1)","Hello, Ander! (hi, 2)"]"#
        );
        assert_eq!(ok(r#"formatlist("%s", "x")"#), r#"["x"]"#);
        assert_eq!(ok(r#"formatlist("%s", [])"#), "[]");
        assert!(eval(r#"formatlist("%s %s", ["a"], ["b", "c"])"#)
            .unwrap_err()
            .contains("argument 2 has length 2, which is inconsistent with argument 1 of length 1"));
        assert!(eval(r#"formatlist("%d", ["x"])"#).unwrap_err().contains("error on format iteration 0"));
    }

    #[test]
    fn csvdecode_reads_a_table_under_its_header() {
        let csv = r#"csvdecode("name,port\r\nweb,80\n\n\"db, main\",\"54\"\"32\"\n")"#;
        assert_eq!(ok(csv), r#"[{"name":"web","port":"80"},{"name":"db, main","port":"54\"32"}]"#);
        assert_eq!(ok(r#"csvdecode("a,b\n")"#), "[]");
        assert!(eval(r#"csvdecode("a,b\n1,2,3\n")"#).unwrap_err().contains("line 2: wrong number of fields"));
        assert!(eval(r#"csvdecode("")"#).unwrap_err().contains("missing header line"));
        assert!(eval(r#"csvdecode("a,a\n")"#).unwrap_err().contains("duplicate column name"));
        assert!(eval(r#"csvdecode("a\nx\"y\n")"#).unwrap_err().contains("bare \""));
    }
}
