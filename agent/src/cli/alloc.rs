//! `alloc status` (with the tasks' resource usage), `alloc logs` (also `logs`), and the requests to a
//! running allocation: `alloc signal`, `alloc restart`, `alloc stop`.

use futures::StreamExt;
use std::io::Write;

use super::api::ApiClient;
use super::format;
use super::monitor::{self, metric_lines};
use crate::structs::Allocation;
use crate::util::{format_bytes, format_timestamp, pretty_time_ago, short_id};
use crate::wire::alloc::{AllocRestartRequest, AllocSignalRequest};
use crate::wire::stats::{AllocResourceUsage, ResourceUsage};
use crate::wire::stubs::AllocListStub;

/// Resolves an allocation ID prefix to the full allocation.
pub async fn resolve(api: &ApiClient, prefix: &str) -> Result<Allocation, i32> {
    let even = &prefix[..prefix.len() - prefix.len() % 2];
    let stubs: Vec<AllocListStub> = match api.get(&format!("/v1/allocations?prefix={even}")).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("Error querying allocation: {e}");
            return Err(1);
        }
    };
    let matches: Vec<&AllocListStub> = stubs.iter().filter(|a| a.id.starts_with(prefix)).collect();
    let id = match matches.len() {
        0 => {
            eprintln!("No allocation(s) with prefix or id {prefix:?} found");
            return Err(1);
        }
        1 => matches[0].id.clone(),
        _ => {
            eprintln!("Prefix matched multiple allocations\n");
            let mut rows = vec!["ID|Eval ID|Node ID|Task Group|Desired|Status".to_string()];
            rows.extend(matches.iter().map(|a| {
                format!(
                    "{}|{}|{}|{}|{}|{}",
                    short_id(&a.id),
                    short_id(&a.eval_id),
                    short_id(&a.node_id),
                    a.task_group,
                    a.desired_status,
                    a.client_status
                )
            }));
            eprintln!("{}", format::list(&rows));
            return Err(1);
        }
    };
    api.get(&format!("/v1/allocation/{id}")).await.map_err(|e| {
        eprintln!("Error querying allocation: {e}");
        1
    })
}

/// Resolves the allocation and checks that `task`, if named, is one of
/// its group's tasks.
async fn resolve_task(api: &ApiClient, prefix: &str, task: Option<&str>) -> Result<Allocation, i32> {
    let a = resolve(api, prefix).await?;
    if let Some(t) = task {
        if !a.task_names().iter().any(|n| n == t) {
            eprintln!("Could not find task named: {t}");
            return Err(1);
        }
    }
    Ok(a)
}

/// `alloc signal [-s SIGNAL] ALLOC [TASK]`: every task when none is named.
pub async fn signal(api: &ApiClient, prefix: &str, task: Option<&str>, signal: &str) -> i32 {
    let a = match resolve_task(api, prefix, task).await {
        Ok(a) => a,
        Err(code) => return code,
    };
    let req = AllocSignalRequest { task: task.unwrap_or_default().into(), signal: signal.into() };
    match api.put::<_, serde_json::Value>(&format!("/v1/client/allocation/{}/signal", a.id), &req).await {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("Error signalling allocation: {e}");
            1
        }
    }
}

/// `alloc restart [-all-tasks] ALLOC [TASK]`: restarts in place.
pub async fn restart(api: &ApiClient, prefix: &str, task: Option<&str>, all_tasks: bool) -> i32 {
    if all_tasks && task.is_some() {
        eprintln!("The -all-tasks option is not allowed when restarting a specific task");
        return 1;
    }
    let a = match resolve_task(api, prefix, task).await {
        Ok(a) => a,
        Err(code) => return code,
    };
    let req = AllocRestartRequest { task_name: task.unwrap_or_default().into(), all_tasks };
    match api.put::<_, serde_json::Value>(&format!("/v1/client/allocation/{}/restart", a.id), &req).await {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("Failed to restart allocation:\n\n{e}");
            1
        }
    }
}

/// `alloc stop [-detach] ALLOC`: stops it; the scheduler places a
/// replacement, which the command follows unless `-detach`.
pub async fn stop(api: &ApiClient, prefix: &str, detach: bool) -> i32 {
    let a = match resolve(api, prefix).await {
        Ok(a) => a,
        Err(code) => return code,
    };
    let resp: serde_json::Value = match api.put(&format!("/v1/allocation/{}/stop", a.id), &serde_json::json!({})).await
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error stopping allocation: {e}");
            return 1;
        }
    };
    let eval_id = resp["EvalID"].as_str().unwrap_or_default();
    if detach {
        println!("{eval_id}");
        return 0;
    }
    monitor::monitor(api, eval_id, false).await
}

/// The "Task Resources" table: used/asked when usage is known, and with
/// `-stats` the measured memory and CPU fields.
fn print_task_resources(
    r: &crate::structs::AllocatedTaskResources,
    disk_mb: u64,
    used: Option<&ResourceUsage>,
    detailed: bool,
) {
    let asked_memory = format_bytes(r.memory.memory_mb * 1024 * 1024);
    let (cpu, memory) = match used {
        Some(u) => {
            let m = &u.memory_stats;
            let mem_used = if m.measured.iter().any(|f| f == "RSS") { m.rss } else { m.usage };
            (
                format!("{:.0}/{} MHz", u.cpu_stats.total_ticks, r.cpu.cpu_shares),
                format!("{}/{asked_memory}", format_bytes(mem_used)),
            )
        }
        None => (format!("{} MHz", r.cpu.cpu_shares), asked_memory),
    };
    println!("Task Resources:");
    let row = format!("{cpu}|{memory}|{}|", format_bytes(disk_mb * 1024 * 1024));
    println!("{}", format::list(&["CPU|Memory|Disk|Addresses".to_string(), row]));
    let Some(u) = used.filter(|_| detailed) else { return };
    let m = &u.memory_stats;
    let memory: Vec<(&str, String)> =
        [("RSS", m.rss), ("Cache", m.cache), ("Swap", m.swap), ("Usage", m.usage), ("Max Usage", m.max_usage)]
            .into_iter()
            .filter(|(f, _)| m.measured.iter().any(|x| x == f))
            .map(|(f, v)| (f, format_bytes(v)))
            .collect();
    let c = &u.cpu_stats;
    let cpu: Vec<(&str, String)> = [
        ("Percent", format!("{:.2}%", c.percent)),
        ("System Mode", format!("{:.2}%", c.system_mode)),
        ("User Mode", format!("{:.2}%", c.user_mode)),
        ("Throttled Periods", c.throttled_periods.to_string()),
        ("Throttled Time", c.throttled_time.to_string()),
    ]
    .into_iter()
    .filter(|(f, _)| c.measured.iter().any(|x| x == f))
    .collect();
    for (title, fields) in [("Memory Stats", memory), ("CPU Stats", cpu)] {
        let header: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
        let values: Vec<&str> = fields.iter().map(|(_, v)| v.as_str()).collect();
        println!("\n{title}\n{}", format::list(&[header.join("|"), values.join("|")]));
    }
}

/// What `alloc status` shows.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatusView {
    /// `-short`: the tasks table only.
    pub short: bool,
    /// `-verbose`: full IDs and placement metrics.
    pub verbose: bool,
    /// `-stats`: detailed resource usage.
    pub stats: bool,
}

/// `alloc status [-short] [-verbose] [-stats] ID`.
pub async fn status(api: &ApiClient, prefix: &str, view: StatusView) -> i32 {
    let StatusView { short, verbose, stats } = view;
    let a = match resolve(api, prefix).await {
        Ok(a) => a,
        Err(code) => return code,
    };
    // Usage is read from the client only for a running allocation (as
    // Nomad does); without it the table shows what was asked alone.
    let usage: Option<AllocResourceUsage> = if a.client_status == "running" && !short {
        match api.get(&format!("/v1/client/allocation/{}/stats", a.id)).await {
            Ok(u) => Some(u),
            Err(e) => {
                eprintln!("Couldn't retrieve stats: {e}");
                None
            }
        }
    } else {
        None
    };
    let id = |s: &str| if verbose { s.to_string() } else { short_id(s).to_string() };
    let mut kv = vec![
        format!("ID|{}", id(&a.id)),
        format!("Eval ID|{}", id(&a.eval_id)),
        format!("Name|{}", a.name),
        format!("Node ID|{}", id(&a.node_id)),
        format!("Node Name|{}", a.node_name),
        format!("Job ID|{}", a.job_id),
        format!("Job Version|{}", a.job_version()),
        format!("Client Status|{}", a.client_status),
        format!("Client Description|{}", a.client_description),
        format!("Desired Status|{}", a.desired_status),
        format!(
            "Desired Description|{}",
            if a.desired_description.is_empty() { "<none>" } else { &a.desired_description }
        ),
        format!("Created|{}", pretty_time_ago(a.create_time)),
        format!("Modified|{}", pretty_time_ago(a.modify_time)),
    ];
    if let Some(deadline) = a.max_run_deadline() {
        let shown = if verbose { crate::util::format_timestamp(deadline) } else { pretty_time_ago(deadline) };
        kv.push(format!("Max Run Deadline|{shown}"));
    }
    if !a.deployment_id.is_empty() {
        kv.push(format!("Deployment ID|{}", id(&a.deployment_id)));
        let health = match a.deployment_status.as_ref().and_then(|d| d.healthy) {
            Some(true) => "healthy",
            Some(false) => "unhealthy",
            None => "unset",
        };
        kv.push(format!("Deployment Health|{health}"));
        if a.is_canary() {
            kv.push("Canary|true".into());
        }
    }
    if let Some(t) = &a.reschedule_tracker {
        kv.push(format!("Reschedule Attempts|{}", t.events.len()));
    }
    if !a.previous_allocation.is_empty() {
        kv.push(format!("Previous Allocation|{}", id(&a.previous_allocation)));
    }
    println!("{}", format::kv(&kv));
    if verbose {
        if let Some(m) = &a.metrics {
            println!("\nPlacement Metrics");
            println!(
                "{}",
                format::kv(&[
                    format!("Evaluated Nodes|{}", m.nodes_evaluated),
                    format!("Filtered Nodes|{}", m.nodes_filtered),
                    format!("Exhausted Nodes|{}", m.nodes_exhausted),
                    format!("Allocation Time|{}", crate::util::format_duration(m.allocation_time)),
                    format!("Failures|{}", m.coalesced_failures),
                ])
            );
            for l in metric_lines(m, "") {
                println!("{l}");
            }
            if !m.score_meta_data.is_empty() {
                println!("\n{}", monitor::score_table(&m.score_meta_data));
            }
        }
    }
    let ports = &a.allocated_resources.shared.ports;
    if !ports.is_empty() {
        let mode =
            a.allocated_resources.shared.networks.first().map(|n| n.mode.clone()).unwrap_or_else(|| "host".into());
        println!("\nAllocation Addresses (mode = {mode:?}):");
        let mut rows = vec!["Label|Dynamic|Address".to_string()];
        let static_labels: Vec<String> = a
            .group()
            .and_then(|tg| tg.effective_network())
            .map(|n| n.reserved_ports.iter().map(|p| p.label.clone()).collect())
            .unwrap_or_default();
        for p in ports {
            let dynamic = !static_labels.contains(&p.label);
            let to = if p.to > 0 && p.to as u16 != p.value { format!(" -> {}", p.to) } else { String::new() };
            rows.push(format!("*{}|{}|{}:{}{to}", p.label, dynamic, p.host_ip, p.value));
        }
        println!("{}", format::list(&rows));
    }
    let checks = super::service::alloc_checks_section(api, &a.id).await;
    if !checks.is_empty() {
        println!("\n{checks}");
    }
    let tasks: Vec<String> = a.task_names();
    if short {
        let mut rows = vec!["Name|State|Last Event|Time|Lifecycle".to_string()];
        for t in &tasks {
            let st = a.task_states.get(t).cloned().unwrap_or_default();
            let last = st.events.last().cloned().unwrap_or_default();
            rows.push(format!("{t}|{}|{}|{}|main", st.state, last.event_type, format_timestamp(last.time)));
        }
        println!("\n{}", format::list(&rows));
        return 0;
    }
    for t in &tasks {
        let st = a.task_states.get(t).cloned().unwrap_or_default();
        println!("\nTask {t:?} is {:?}", if st.state.is_empty() { "pending" } else { &st.state });
        if let Some(r) = a.allocated_resources.tasks.get(t) {
            let used = usage.as_ref().and_then(|u| u.tasks.get(t)).map(|u| &u.resource_usage);
            print_task_resources(r, a.allocated_resources.shared.disk_mb, used, stats);
        }
        let tg = a.group();
        let host_vols: Vec<String> = tg
            .map(|tg| {
                tg.volumes
                    .iter()
                    .filter(|(_, v)| v.volume_type == "host")
                    .map(|(_, v)| format!("{}|{}", v.source, v.read_only))
                    .collect()
            })
            .unwrap_or_default();
        if !host_vols.is_empty() {
            println!("\nHost Volumes:");
            let mut rows = vec!["ID|Read Only".to_string()];
            rows.extend(host_vols);
            println!("{}", format::list(&rows));
        }
        println!("\nTask Events:");
        println!(
            "{}",
            format::kv(&[
                format!("Started At|{}", st.started_at.clone().unwrap_or_else(|| "N/A".into())),
                format!("Finished At|{}", st.finished_at.clone().unwrap_or_else(|| "N/A".into())),
                format!("Total Restarts|{}", st.restarts),
                format!("Last Restart|{}", st.last_restart.clone().unwrap_or_else(|| "N/A".into())),
            ])
        );
        println!("\nRecent Events:");
        let mut rows = vec!["Time|Type|Description".to_string()];
        for e in st.events.iter().rev() {
            rows.push(format!("{}|{}|{}", format_timestamp(e.time), e.event_type, e.display_message.replace('|', "/")));
        }
        println!("{}", format::list(&rows));
    }
    0
}

/// Options of `alloc logs`.
pub struct LogsOptions<'a> {
    /// Task name (optional with one task).
    pub task: Option<&'a str>,
    /// `-stderr`.
    pub stderr: bool,
    /// `-f`.
    pub follow: bool,
    /// `-tail`.
    pub tail: bool,
    /// `-n` lines.
    pub lines: usize,
    /// `-c` bytes.
    pub bytes: Option<u64>,
}

/// `alloc logs [-f] [-stderr] [-tail] [-n N] [-c N] ALLOC [TASK]`.
pub async fn logs(api: &ApiClient, prefix: &str, opts: LogsOptions<'_>) -> i32 {
    let a = match resolve(api, prefix).await {
        Ok(a) => a,
        Err(code) => return code,
    };
    let tasks: Vec<String> = a.task_names();
    let task = match opts.task {
        Some(t) => t.to_string(),
        None if tasks.len() == 1 => tasks[0].clone(),
        None => {
            eprintln!("Allocation {:?} is running the following tasks:", short_id(&a.id));
            for t in &tasks {
                eprintln!("  * {t}");
            }
            eprintln!("\nPlease specify the task.");
            return 1;
        }
    };
    let stream = if opts.stderr { "stderr" } else { "stdout" };
    let base = format!("/v1/client/fs/logs/{}?task={task}&type={stream}&plain=true", a.id);
    let mut out = std::io::stdout();
    let mut offset = 0u64;
    if opts.tail || !opts.follow {
        let resp = match api.get_stream(&base).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("Error reading file: {e}");
                return 1;
            }
        };
        let data = resp.bytes().await.unwrap_or_default();
        offset = data.len() as u64;
        let shown: &[u8] = if let Some(c) = opts.bytes.filter(|_| opts.tail) {
            &data[data.len().saturating_sub(c as usize)..]
        } else if opts.tail {
            tail_lines(&data, opts.lines)
        } else {
            &data
        };
        let _ = out.write_all(shown);
        let _ = out.flush();
        if !opts.follow {
            return 0;
        }
    }
    let resp = match api.get_stream(&format!("{base}&follow=true&offset={offset}")).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error reading file: {e}");
            return 1;
        }
    };
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) => {
                let _ = out.write_all(&c);
                let _ = out.flush();
            }
            Err(_) => break,
        }
    }
    0
}

/// The last `n` lines of `data`.
fn tail_lines(data: &[u8], n: usize) -> &[u8] {
    let trimmed = data.strip_suffix(b"\n").unwrap_or(data);
    let mut count = 0;
    for (i, b) in trimmed.iter().enumerate().rev() {
        if *b == b'\n' {
            count += 1;
            if count == n {
                return &data[i + 1..];
            }
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::tail_lines;

    #[test]
    fn tails_lines() {
        assert_eq!(tail_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(tail_lines(b"a\nb\nc", 1), b"c");
        assert_eq!(tail_lines(b"a\n", 5), b"a\n");
    }
}
