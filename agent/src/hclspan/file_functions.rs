//! The job file's neighbourhood: `file`, `filebase64`, `fileexists` and
//! `fileset` read relative to the job file's directory (set for each parse
//! with [`with_base_dir`]; `templatefile`, which needs the whole library,
//! is in `functions` and reads through [`base_path`]); `abspath`,
//! `basename`, `dirname` and `pathexpand` work on the path alone.
//! Declared into the same context as `functions`.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use base64::Engine;
use hcl::eval::{Context, FuncArgs, FuncDef, ParamType};
use hcl::Value;

use super::func_support::{s, Res};

thread_local! {
    /// The directory of the job file being parsed (the file functions read
    /// relative to it). hcl-rs functions are plain `fn`s, so the parse
    /// sets it for its own thread.
    static BASE_DIR: RefCell<PathBuf> = RefCell::new(PathBuf::from("."));
}

/// Sets the directory `file()` and its kin read relative to, for this
/// thread, while `f` runs.
pub fn with_base_dir<T>(dir: &Path, f: impl FnOnce() -> T) -> T {
    let old = BASE_DIR.with(|b| b.replace(dir.to_path_buf()));
    let out = f();
    BASE_DIR.with(|b| *b.borrow_mut() = old);
    out
}

pub(super) fn base_path(p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        BASE_DIR.with(|b| b.borrow().join(path))
    }
}

fn file(a: FuncArgs) -> Res {
    let path = base_path(s(&a[0]));
    std::fs::read_to_string(&path).map(Value::from).map_err(|e| format!("file: {}: {e}", path.display()))
}
fn filebase64(a: FuncArgs) -> Res {
    let path = base_path(s(&a[0]));
    let bytes = std::fs::read(&path).map_err(|e| format!("filebase64: {}: {e}", path.display()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes).into())
}
fn fileexists(a: FuncArgs) -> Res {
    Ok(Value::Bool(base_path(s(&a[0])).is_file()))
}
fn basename(a: FuncArgs) -> Res {
    Ok(Path::new(s(&a[0])).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default().into())
}
fn dirname(a: FuncArgs) -> Res {
    let parent = Path::new(s(&a[0])).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(if parent.is_empty() { ".".to_string() } else { parent }.into())
}
fn abspath(a: FuncArgs) -> Res {
    let p = s(&a[0]);
    std::path::absolute(p).map(|p| Value::String(p.display().to_string())).map_err(|e| format!("abspath {p:?}: {e}"))
}

/// `pathexpand(path)`: a leading `~` becomes the current user's home
/// directory; `~user` is an error, as in Nomad.
fn pathexpand(a: FuncArgs) -> Res {
    let p = s(&a[0]);
    let Some(rest) = p.strip_prefix('~') else { return Ok(p.into()) };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return Err(format!("pathexpand: cannot expand {p:?}: only ~ and ~/ (the current user's home) are supported"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .or_else(|| nix::unistd::User::from_uid(nix::unistd::getuid()).ok().flatten().map(|u| u.dir))
        .ok_or("pathexpand: the home directory is unknown")?;
    let rest = rest.trim_start_matches('/');
    let path = if rest.is_empty() { home } else { home.join(rest) };
    Ok(path.display().to_string().into())
}

/// `fileset(path, pattern)`: the regular files under `path` (relative to
/// the job file) whose path below it matches the glob `pattern`, sorted,
/// with `/` separators. `*` and `?` match within one path segment, `**`
/// any number of segments, `[a-z]` (`[!…]` negated) one character of a
/// class, `{a,b}` either alternative and `\` escapes.
fn fileset(a: FuncArgs) -> Res {
    let (root, pattern) = (base_path(s(&a[0])), s(&a[1]));
    let fail = |e: String| format!("fileset: invalid pattern {pattern:?}: {e}");
    let mut found = BTreeSet::new();
    for alternative in expand_braces(pattern).map_err(fail)? {
        let segments: Vec<Vec<char>> = alternative
            .split('/')
            .filter(|seg| !seg.is_empty() && *seg != ".")
            .map(|seg| seg.chars().collect())
            .collect();
        segments.iter().try_for_each(|seg| check_segment(seg)).map_err(fail)?;
        glob(&root, "", &segments, &mut found);
    }
    Ok(Value::Array(found.into_iter().map(Value::from).collect()))
}

/// The patterns `{a,b}` alternatives stand for (nested braces too), in order.
fn expand_braces(pattern: &str) -> Result<Vec<String>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    let open = loop {
        match chars.get(i) {
            None => return Ok(vec![pattern.to_string()]),
            Some('\\') => i += 2,
            Some('{') => break i,
            Some(_) => i += 1,
        }
    };
    let (mut depth, mut start, mut parts) = (0, open + 1, Vec::new());
    let mut close = None;
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 1,
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    parts.push(&chars[start..i]);
                    close = Some(i);
                    break;
                }
            }
            ',' if depth == 1 => {
                parts.push(&chars[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    let close = close.ok_or("a { is not closed")?;
    let (prefix, suffix): (String, String) = (chars[..open].iter().collect(), chars[close + 1..].iter().collect());
    let mut out = Vec::new();
    for part in parts {
        out.extend(expand_braces(&format!("{prefix}{}{suffix}", part.iter().collect::<String>()))?);
        if out.len() > 1024 {
            return Err("more than 1024 alternatives".into());
        }
    }
    Ok(out)
}

/// Checks a segment's syntax: every `[` closed, no trailing lone `\`.
fn check_segment(seg: &[char]) -> Result<(), String> {
    let mut i = 0;
    while i < seg.len() {
        i += match seg[i] {
            '\\' if i + 1 == seg.len() => return Err("it ends with a lone \\".into()),
            '\\' => 2,
            '[' => 1 + class(&seg[i + 1..], ' ')?.1,
            _ => 1,
        };
    }
    Ok(())
}

/// Matches `c` against the class after a `[`: whether it matches and how
/// many characters the class takes, its `]` included.
fn class(p: &[char], c: char) -> Result<(bool, usize), String> {
    let negated = matches!(p.first(), Some('!' | '^'));
    let mut i = usize::from(negated);
    let mut hit = false;
    loop {
        let lo = match p.get(i) {
            None => return Err("a [ is not closed".into()),
            Some(']') if i > usize::from(negated) => return Ok((hit != negated, i + 1)),
            Some('\\') => {
                i += 1;
                *p.get(i).ok_or("a [ is not closed")?
            }
            Some(&lo) => lo,
        };
        i += 1;
        let hi = match (p.get(i), p.get(i + 1)) {
            (Some('-'), Some(&hi)) if hi != ']' => {
                i += 2;
                hi
            }
            _ => lo,
        };
        hit |= (lo..=hi).contains(&c);
    }
}

/// Whether `name` matches one checked pattern segment.
fn matches(p: &[char], name: &[char]) -> bool {
    match p.first() {
        None => name.is_empty(),
        Some('*') => (0..=name.len()).any(|i| matches(&p[1..], &name[i..])),
        Some('?') => !name.is_empty() && matches(&p[1..], &name[1..]),
        Some('[') => match (name.first(), class(&p[1..], name.first().copied().unwrap_or_default())) {
            (Some(_), Ok((true, len))) => matches(&p[1 + len..], &name[1..]),
            _ => false,
        },
        Some('\\') => name.first() == p.get(1) && matches(&p[2..], &name[1..]),
        Some(c) => name.first() == Some(c) && matches(&p[1..], &name[1..]),
    }
}

/// Adds the files below `dir` (`rel` from the root) matching `pattern`.
/// Unreadable directories hold nothing; `**` does not follow symbolic
/// links to directories, so a link loop cannot trap it.
fn glob(dir: &Path, rel: &str, pattern: &[Vec<char>], found: &mut BTreeSet<String>) {
    let Some((first, rest)) = pattern.split_first() else { return };
    let globstar = first.iter().collect::<String>() == "**";
    if globstar {
        glob(dir, rel, rest, found);
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let (path, sub) = (entry.path(), if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") });
        let is_file = std::fs::metadata(&path).is_ok_and(|m| m.is_file());
        if globstar {
            if rest.is_empty() && is_file {
                found.insert(sub);
            } else if entry.file_type().is_ok_and(|t| t.is_dir()) {
                glob(&path, &sub, pattern, found);
            }
        } else if matches(first, &name.chars().collect::<Vec<_>>()) {
            if rest.is_empty() {
                if is_file {
                    found.insert(sub);
                }
            } else if path.is_dir() {
                glob(&path, &sub, rest, found);
            }
        }
    }
}

/// Declares these functions into `ctx`.
pub fn declare(ctx: &mut Context<'_>) {
    use ParamType::String as Str;
    let fixed: [(&str, hcl::eval::Func, Vec<ParamType>); 8] = [
        ("file", file, vec![Str]),
        ("filebase64", filebase64, vec![Str]),
        ("fileexists", fileexists, vec![Str]),
        ("fileset", fileset, vec![Str, Str]),
        ("basename", basename, vec![Str]),
        ("dirname", dirname, vec![Str]),
        ("abspath", abspath, vec![Str]),
        ("pathexpand", pathexpand, vec![Str]),
    ];
    for (name, func, params) in fixed {
        ctx.declare_func(name, FuncDef::new(func, params));
    }
}

#[cfg(test)]
mod tests {
    use super::super::functions::tests::{eval, ok};
    use super::*;

    #[test]
    fn files_are_read_relative_to_the_job_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("motd.txt"), "hello\n").unwrap();
        std::fs::write(dir.path().join("conf.tpl"), "port = ${port}\nname = ${upper(name)}\n").unwrap();
        with_base_dir(dir.path(), || {
            assert_eq!(ok(r#"file("motd.txt")"#), "\"hello\\n\"");
            assert_eq!(ok(r#"filebase64("motd.txt")"#), "\"aGVsbG8K\"");
            assert_eq!(ok(r#"fileexists("nope.txt")"#), "false");
            assert_eq!(
                ok(r#"templatefile("conf.tpl", { port = 8080, name = "db" })"#),
                "\"port = 8080\\nname = DB\\n\""
            );
            assert!(eval(r#"file("missing.txt")"#).unwrap_err().contains("missing.txt"));
            assert!(eval(r#"filebase64("missing.txt")"#).unwrap_err().contains("filebase64: "));
        });
    }

    #[test]
    fn fileset_globs_below_a_directory_of_the_job_file() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["conf/a.hcl", "conf/b.tpl", "conf/sub/c.hcl", "conf/sub/deep/d.hcl", "conf/x1.txt", "top.hcl"] {
            let path = dir.path().join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        }
        with_base_dir(dir.path(), || {
            assert_eq!(ok(r#"fileset("conf", "*.hcl")"#), r#"["a.hcl"]"#);
            assert_eq!(ok(r#"fileset("conf", "**/*.hcl")"#), r#"["a.hcl","sub/c.hcl","sub/deep/d.hcl"]"#);
            assert_eq!(ok(r#"fileset("conf", "sub/**")"#), r#"["sub/c.hcl","sub/deep/d.hcl"]"#);
            assert_eq!(ok(r#"fileset("conf", "*.{hcl,tpl}")"#), r#"["a.hcl","b.tpl"]"#);
            assert_eq!(ok(r#"fileset("conf", "[a-b].*")"#), r#"["a.hcl","b.tpl"]"#);
            assert_eq!(ok(r#"fileset("conf", "x?.txt")"#), r#"["x1.txt"]"#);
            assert_eq!(ok(r#"fileset(".", "*")"#), r#"["top.hcl"]"#, "files only, no directories");
            assert_eq!(ok(r#"fileset("nowhere", "*")"#), "[]");
            assert!(eval(r#"fileset("conf", "[a-")"#).unwrap_err().contains("a [ is not closed"));
            assert!(eval(r#"fileset("conf", "{a,b")"#).unwrap_err().contains("fileset: invalid pattern"));
        });
    }

    #[test]
    fn paths() {
        assert_eq!(ok(r#"basename("/etc/nomad.d/job.hcl")"#), r#""job.hcl""#);
        assert_eq!(ok(r#"dirname("job.hcl")"#), r#"".""#);
        let home = std::env::var("HOME").unwrap_or_default();
        if !home.is_empty() {
            assert_eq!(eval(r#"pathexpand("~/jobs")"#).unwrap(), Value::from(format!("{home}/jobs")));
        }
        assert_eq!(ok(r#"pathexpand("/etc")"#), r#""/etc""#);
        assert!(eval(r#"pathexpand("~bob/x")"#).unwrap_err().contains("pathexpand: cannot expand"));
    }
}
