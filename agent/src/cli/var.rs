//! `var put|get|list|purge|lock` with Nomad's flags, outputs and
//! check-and-set conflicts. Item values are printed only where the user
//! asks for them (`var get`, `-out json|table|hcl`), never in errors.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::time::Duration;

use clap::Subcommand;

use super::api::{ApiClient, ApiClientError};
use super::format::{kv, list};
use crate::structs::{Variable, VariableLock, VariableMetadata};
use crate::util::rfc3339;

/// The `var` subcommands.
#[derive(Debug, Subcommand)]
pub enum VarCommand {
    /// Creates or updates a variable: `<path> [@spec.json|-] [key=value|key=@file|key=-]...`.
    Put {
        /// Write only if the stored variable's modify index is this (0: only create).
        #[arg(long = "check-index")]
        check_index: Option<u64>,
        /// Write regardless of the stored variable's index.
        #[arg(long)]
        force: bool,
        /// Format of a specification read from stdin: json or hcl.
        #[arg(long = "in", default_value = "json")]
        input: String,
        /// Output: none, json, table or hcl (none on a terminal, json otherwise).
        #[arg(long)]
        out: Option<String>,
        /// Says what happened on stderr.
        #[arg(long)]
        verbose: bool,
        /// Path, specification and items.
        #[arg(required = true, num_args = 1..)]
        args: Vec<String>,
    },
    /// Shows a variable, or one of its items.
    Get {
        /// Print only this item's value.
        #[arg(long)]
        item: Option<String>,
        /// Output: json, table or hcl (table on a terminal, json otherwise).
        #[arg(long)]
        out: Option<String>,
        /// Fail unless the stored variable's modify index is this (berth).
        #[arg(long = "check-index")]
        check_index: Option<u64>,
        /// Variable path.
        path: String,
    },
    /// Lists variables under a prefix.
    List {
        /// Output: table or json (table on a terminal, json otherwise).
        #[arg(long)]
        out: Option<String>,
        /// Path prefix.
        prefix: Option<String>,
    },
    /// Deletes a variable.
    Purge {
        /// Delete only if the stored variable's modify index is this.
        #[arg(long = "check-index")]
        check_index: Option<u64>,
        /// Variable path.
        path: String,
    },
    /// Holds a lock on a variable while a child command runs.
    Lock {
        /// Lock TTL: the lock is lost unless renewed within it.
        #[arg(long, default_value = "15s")]
        ttl: String,
        /// How long the variable stays unlockable after a lost lock.
        #[arg(long, default_value = "15s")]
        delay: String,
        /// Give up at once when the lock is held (instead of waiting).
        #[arg(long = "early-return")]
        early_return: bool,
        /// Wait between attempts (default 1.1 × the TTL).
        #[arg(long)]
        backoff: Option<String>,
        /// Run the child through $SHELL -c (default /bin/sh).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        shell: bool,
        /// Says what happens on stderr.
        #[arg(long)]
        verbose: bool,
        /// Variable path.
        path: String,
        /// The child command.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        child: Vec<String>,
    },
}

/// Runs one `var` subcommand; returns the exit code.
pub async fn run(api: &ApiClient, command: VarCommand) -> i32 {
    let result = match command {
        VarCommand::Put { check_index, force, input, out, verbose, args } => {
            put(api, &args, check_index, force, &input, out.as_deref(), verbose).await
        }
        VarCommand::Get { item, out, check_index, path } => {
            get(api, &path, item.as_deref(), out.as_deref(), check_index).await
        }
        VarCommand::List { out, prefix } => list_vars(api, prefix.as_deref().unwrap_or(""), out.as_deref()).await,
        VarCommand::Purge { check_index, path } => purge(api, &path, check_index).await,
        VarCommand::Lock { ttl, delay, early_return, backoff, shell, verbose, path, child } => {
            let opts = LockOptions { ttl, delay, early_return, backoff, shell, verbose };
            lock(api, &path, &child, &opts).await
        }
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("{message}");
            1
        }
    }
}

fn var_path(path: &str) -> String {
    format!("/v1/var/{}", path.trim_start_matches('/'))
}

fn default_out(out: Option<&str>, tty: &str) -> String {
    out.map(str::to_string).unwrap_or_else(|| if std::io::stdout().is_terminal() { tty } else { "json" }.into())
}

/// What a specification file holds (JSON as the API writes it, or HCL).
#[derive(Debug, Default, serde::Deserialize)]
struct Spec {
    #[serde(alias = "Path", default)]
    path: String,
    #[serde(alias = "Items", default)]
    items: BTreeMap<String, String>,
    #[serde(alias = "ModifyIndex", default)]
    modify_index: u64,
}

fn parse_spec(text: &str, format: &str, source: &str) -> Result<Spec, String> {
    match format {
        "hcl" => hcl::from_str(text).map_err(|e| format!("Failed to parse variable data from {source}: {e}")),
        _ => serde_json::from_str(text).map_err(|e| format!("Failed to parse variable data from {source}: {e}")),
    }
}

fn read_stdin() -> Result<String, String> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).map_err(|e| format!("Error reading from stdin: {e}"))?;
    Ok(text)
}

/// The variable `var put`'s arguments describe.
fn put_input(args: &[String], in_format: &str) -> Result<Variable, String> {
    let mut rest = args.iter().peekable();
    let mut spec = Spec::default();
    let first = rest.next().ok_or("Not enough arguments (expected >1, got 0)")?;
    let mut path = String::new();
    let mut load = |arg: &str| -> Result<bool, String> {
        if arg == "-" {
            spec = parse_spec(&read_stdin()?, in_format, "stdin")?;
        } else if let Some(file) = arg.strip_prefix('@') {
            let text = std::fs::read_to_string(file).map_err(|e| format!("Error reading {file:?}: {e}"))?;
            let format = if file.ends_with(".hcl") || file.ends_with(".nv.hcl") { "hcl" } else { in_format };
            spec = parse_spec(&text, format, file)?;
        } else {
            return Ok(false);
        }
        Ok(true)
    };
    if !load(first)? {
        path = first.clone();
        if let Some(next) = rest.peek() {
            if !next.contains('=') && load(next)? {
                rest.next();
            }
        }
    }
    if path.is_empty() {
        path = spec.path.clone();
    }
    if path.is_empty() {
        return Err("Must supply a path for the variable".into());
    }
    let mut items = spec.items;
    for pair in rest {
        let (k, v) = pair.split_once('=').ok_or_else(|| format!("Failed to parse K=V data: {pair:?} has no '='"))?;
        if v.is_empty() {
            items.remove(k);
            continue;
        }
        let value = if v == "-" {
            read_stdin()?
        } else if let Some(file) = v.strip_prefix('@') {
            std::fs::read_to_string(file).map_err(|e| format!("error reading {file:?}: {e}"))?
        } else {
            v.to_string()
        };
        items.insert(k.to_string(), value);
    }
    if items.is_empty() {
        return Err("Must supply data".into());
    }
    let meta = VariableMetadata { path, modify_index: spec.modify_index, ..Default::default() };
    Ok(Variable { meta, items })
}

/// Nomad's conflict report, from a 409 answer.
fn cas_conflict(check_index: u64, body: &str) -> String {
    let stored: Variable = serde_json::from_str(body).unwrap_or_default();
    let last = if stored.meta.modify_index > 0 {
        format!("\n    The server-side item was last updated on {}.\n", rfc3339(stored.meta.modify_time))
    } else {
        String::new()
    };
    format!(
        "\nCheck-and-Set conflict\n\n    Your provided check-index ({check_index}) does not match the\n    server-side index ({index}).\n{last}\n    If you are sure you want to perform this operation, add the -force or\n    -check-index={index} flag before the positional arguments.",
        index = stored.meta.modify_index
    )
}

fn render(v: &Variable, format: &str) -> Result<String, String> {
    match format {
        "json" => serde_json::to_string_pretty(v).map_err(|e| e.to_string()),
        "hcl" => {
            let mut out = format!("path = {:?}\n\nitems {{\n", v.meta.path);
            for (k, val) in &v.items {
                out.push_str(&format!("  {k} = {val:?}\n"));
            }
            out.push('}');
            Ok(out)
        }
        "table" => {
            let mut meta = vec![
                format!("Namespace|{}", v.meta.namespace),
                format!("Path|{}", v.meta.path),
                format!("Create Time|{}", rfc3339(v.meta.create_time)),
            ];
            if v.meta.create_time != v.meta.modify_time {
                meta.push(format!("Modify Time|{}", rfc3339(v.meta.modify_time)));
            }
            meta.push(format!("Check Index|{}", v.meta.modify_index));
            let items: Vec<String> = v.items.iter().map(|(k, val)| format!("{k}|{val}")).collect();
            Ok(format!("{}\n\nItems\n{}", kv(&meta), kv(&items)))
        }
        other => Err(format!("Invalid -out value {other:?} (want json, table or hcl)")),
    }
}

async fn put(
    api: &ApiClient,
    args: &[String],
    check_index: Option<u64>,
    force: bool,
    in_format: &str,
    out: Option<&str>,
    verbose: bool,
) -> Result<i32, String> {
    if check_index.is_some() && force {
        return Err("Error: -check-index and -force are mutually exclusive".into());
    }
    let mut v = put_input(args, in_format)?;
    let check = check_index.unwrap_or(v.meta.modify_index);
    let query = if force { String::new() } else { format!("?cas={check}") };
    let out = default_out(out, "none");
    let written: Variable = match api.put(&format!("{}{query}", var_path(&v.meta.path)), &v).await {
        Ok(w) => w,
        Err(ApiClientError::Status { code: 409, body }) => return Err(cas_conflict(check, &body)),
        Err(e) => return Err(format!("Error creating variable: {e}")),
    };
    v.meta = written.meta;
    let message = format!("Created variable {:?} with modify index {}", v.meta.path, v.meta.modify_index);
    if out == "none" {
        println!("{message}");
        return Ok(0);
    }
    if verbose {
        eprintln!("{message}");
    }
    println!("{}", render(&v, &out)?);
    Ok(0)
}

async fn get(
    api: &ApiClient,
    path: &str,
    item: Option<&str>,
    out: Option<&str>,
    check_index: Option<u64>,
) -> Result<i32, String> {
    let v: Variable = match api.get(&var_path(path)).await {
        Ok(v) => v,
        Err(e) if e.is_not_found() => return Err("Variable not found".into()),
        Err(e) => return Err(format!("Error retrieving variable: {e}")),
    };
    if let Some(want) = check_index.filter(|i| *i != v.meta.modify_index) {
        let body = serde_json::json!({ "ModifyIndex": v.meta.modify_index, "ModifyTime": v.meta.modify_time });
        return Err(cas_conflict(want, &body.to_string()));
    }
    if let Some(key) = item {
        let value = v.items.get(key).ok_or_else(|| format!("Variable does not contain {key:?} item"))?;
        println!("{value}");
        return Ok(0);
    }
    println!("{}", render(&v, &default_out(out, "table"))?);
    Ok(0)
}

async fn list_vars(api: &ApiClient, prefix: &str, out: Option<&str>) -> Result<i32, String> {
    let query = format!(
        "/v1/vars?prefix={}",
        percent_encoding::utf8_percent_encode(prefix, percent_encoding::NON_ALPHANUMERIC)
    );
    let vars: Vec<VariableMetadata> = api.get(&query).await.map_err(|e| format!("Error retrieving vars: {e}"))?;
    match default_out(out, "table").as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&vars).map_err(|e| e.to_string())?),
        "table" if vars.is_empty() => println!("No matching variables found"),
        "table" => {
            let mut rows = vec!["Namespace|Path|Last Updated".to_string()];
            rows.extend(vars.iter().map(|v| format!("{}|{}|{}", v.namespace, v.path, rfc3339(v.modify_time))));
            println!("{}", list(&rows));
        }
        other => return Err(format!("Invalid -out value {other:?} (want table or json)")),
    }
    Ok(0)
}

async fn purge(api: &ApiClient, path: &str, check_index: Option<u64>) -> Result<i32, String> {
    let query = check_index.map(|i| format!("?cas={i}")).unwrap_or_default();
    match api.delete_empty(&format!("{}{query}", var_path(path))).await {
        Ok(()) => {
            println!("Successfully purged variable {path:?}!");
            Ok(0)
        }
        Err(ApiClientError::Status { code: 409, body }) => Err(cas_conflict(check_index.unwrap_or(0), &body)),
        Err(e) => Err(format!("Error purging variable: {e}")),
    }
}

/// `var lock`'s flags.
struct LockOptions {
    ttl: String,
    delay: String,
    early_return: bool,
    backoff: Option<String>,
    shell: bool,
    verbose: bool,
}

fn duration_flag(name: &str, value: &str) -> Result<Duration, String> {
    let nanos = crate::util::parse_duration(value).map_err(|e| format!("Invalid -{name} {value:?}: {e}"))?;
    Ok(Duration::from_nanos(nanos.max(0) as u64))
}

/// Takes the lock (waiting for it unless `-early-return`), runs the child
/// while renewing at half the TTL, kills the child if the lock is lost,
/// and releases the lock when the child ends; exits with the child's code.
async fn lock(api: &ApiClient, path: &str, child: &[String], opts: &LockOptions) -> Result<i32, String> {
    let ttl = duration_flag("ttl", &opts.ttl)?;
    let delay = duration_flag("delay", &opts.delay)?;
    let backoff = match &opts.backoff {
        Some(b) => duration_flag("backoff", b)?,
        None => ttl.mul_f64(1.1),
    };
    let existing: Option<Variable> = match api.get(&var_path(path)).await {
        Ok(v) => Some(v),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(format!("Error retrieving variable: {e}")),
    };
    let mut want = existing.unwrap_or_default();
    want.meta.path = path.to_string();
    want.meta.lock =
        Some(VariableLock { ttl: ttl.as_nanos() as i64, lock_delay: delay.as_nanos() as i64, ..Default::default() });
    let held: Variable = loop {
        match api.put(&format!("{}?lock-acquire", var_path(path)), &want).await {
            Ok(v) => break v,
            Err(ApiClientError::Status { code: 409, .. }) if !opts.early_return => {
                if opts.verbose {
                    eprintln!(
                        "Lock on {path:?} is held; trying again in {}",
                        crate::util::format_duration(backoff.as_nanos() as i64)
                    );
                }
                tokio::time::sleep(backoff).await;
            }
            Err(ApiClientError::Status { code: 409, .. }) => {
                return Err(format!("Lock on {path:?} is held by another holder"))
            }
            Err(e) => return Err(format!("Error acquiring lock: {e}")),
        }
    };
    let mine = Variable {
        meta: VariableMetadata { path: path.to_string(), lock: held.meta.lock.clone(), ..Default::default() },
        ..Default::default()
    };
    if opts.verbose {
        eprintln!("Lock acquired on {path:?}");
    }
    let mut command = if opts.shell {
        let shell = std::env::var("SHELL").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "/bin/sh".into());
        let mut c = tokio::process::Command::new(shell);
        c.arg("-c").arg(child.join(" "));
        c
    } else {
        let mut c = tokio::process::Command::new(&child[0]);
        c.args(&child[1..]);
        c
    };
    let mut process = command.kill_on_drop(true).spawn().map_err(|e| format!("Error starting {:?}: {e}", child[0]))?;
    let mut renew = tokio::time::interval(ttl / 2);
    renew.tick().await;
    let code = loop {
        tokio::select! {
            status = process.wait() => {
                break status.map_err(|e| e.to_string())?.code().unwrap_or(1);
            }
            _ = renew.tick() => {
                let renewed: Result<VariableMetadata, _> = api.put(&format!("{}?lock-renew", var_path(path)), &mine).await;
                if let Err(e) = renewed {
                    eprintln!("Lock on {path:?} lost ({e}); stopping the child");
                    let _ = process.kill().await;
                    return Ok(1);
                }
            }
        }
    };
    if let Err(e) = api.put::<_, serde_json::Value>(&format!("{}?lock-release", var_path(path)), &mine).await {
        eprintln!("Error releasing lock on {path:?}: {e}");
    } else if opts.verbose {
        eprintln!("Lock released on {path:?}");
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_arguments_take_a_path_a_spec_and_items() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("spec.json");
        std::fs::write(&spec, r#"{"Path":"from/spec","Items":{"a":"1","b":"2"}}"#).unwrap();
        let value = dir.path().join("cert.pem");
        std::fs::write(&value, "PEM").unwrap();
        let args: Vec<String> =
            vec![format!("@{}", spec.display()), "b=".into(), format!("cert=@{}", value.display()), "c=3".into()];
        let v = put_input(&args, "json").unwrap();
        assert_eq!(v.meta.path, "from/spec");
        let items: Vec<(&str, &str)> = v.items.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(items, [("a", "1"), ("c", "3"), ("cert", "PEM")]);

        let v = put_input(&["nomad/jobs/web".into(), "password=x=y".into()], "json").unwrap();
        assert_eq!((v.meta.path.as_str(), v.items["password"].as_str()), ("nomad/jobs/web", "x=y"));
        assert!(put_input(&["p".into()], "json").unwrap_err().contains("Must supply data"));
        assert!(put_input(&["p".into(), "novalue".into()], "json").unwrap_err().contains("K=V"));
        let hcl = dir.path().join("v.hcl");
        std::fs::write(&hcl, "path = \"h\"\nitems {\n  k = \"v\"\n}\n").unwrap();
        let v = put_input(&[format!("@{}", hcl.display())], "json").unwrap();
        assert_eq!((v.meta.path.as_str(), v.items["k"].as_str()), ("h", "v"));
    }

    #[test]
    fn a_conflict_names_both_indexes_and_never_the_values() {
        let body = r#"{"Path":"p","ModifyIndex":12,"ModifyTime":1,"Items":{"password":"hunter2"}}"#;
        let msg = cas_conflict(3, body);
        assert!(msg.contains("check-index (3)") && msg.contains("server-side index (12)"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
    }
}
