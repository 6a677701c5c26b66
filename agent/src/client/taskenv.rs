//! A task's runtime environment: Nomad's `NOMAD_*` variables (directories,
//! IDs, limits, ports and addresses, meta), and the interpolation of
//! `${...}` references in env values and driver config, done on the client
//! as Nomad does.

use std::collections::BTreeMap;
use std::path::Path;

use crate::structs::{Allocation, Node, Task};

/// Where the task's directories appear to the task.
pub struct TaskDirs<'a> {
    /// The shared alloc dir.
    pub alloc_dir: &'a Path,
    /// The task's `local` dir.
    pub local_dir: &'a Path,
    /// The task's `secrets` dir.
    pub secrets_dir: &'a Path,
}

fn env_key(label: &str) -> String {
    label.replace(['-', '.'], "_")
}

/// Builds the `NOMAD_*` environment of a task.
pub fn build(alloc: &Allocation, task: &Task, node: &Node, dirs: &TaskDirs) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    set("NOMAD_ALLOC_DIR", dirs.alloc_dir.display().to_string());
    set("NOMAD_TASK_DIR", dirs.local_dir.display().to_string());
    set("NOMAD_SECRETS_DIR", dirs.secrets_dir.display().to_string());
    set("NOMAD_ALLOC_ID", alloc.id.clone());
    set("NOMAD_SHORT_ALLOC_ID", crate::util::short_id(&alloc.id).to_string());
    set("NOMAD_ALLOC_NAME", alloc.name.clone());
    set("NOMAD_ALLOC_INDEX", alloc.index().to_string());
    set("NOMAD_JOB_ID", alloc.job_id.clone());
    set("NOMAD_GROUP_NAME", alloc.task_group.clone());
    set("NOMAD_TASK_NAME", task.name.clone());
    set("NOMAD_DC", node.datacenter.clone());
    set("NOMAD_NAMESPACE", alloc.namespace.clone());
    if let Some(job) = &alloc.job {
        set("NOMAD_JOB_NAME", job.name.clone());
        if !job.parent_id.is_empty() {
            set("NOMAD_JOB_PARENT_ID", job.parent_id.clone());
        }
        set("NOMAD_REGION", job.region.clone());
        for (k, v) in &job.meta {
            set(&format!("NOMAD_META_{k}"), v.clone());
            set(&format!("NOMAD_META_{}", env_key(k).to_uppercase()), v.clone());
        }
        if let Some(tg) = job.task_group(&alloc.task_group) {
            for (k, v) in tg.meta.iter().chain(task.meta.iter()) {
                set(&format!("NOMAD_META_{k}"), v.clone());
                set(&format!("NOMAD_META_{}", env_key(k).to_uppercase()), v.clone());
            }
        }
    }
    if let Some(r) = alloc.allocated_resources.tasks.get(&task.name) {
        set("NOMAD_CPU_LIMIT", r.cpu.cpu_shares.to_string());
        set("NOMAD_MEMORY_LIMIT", r.memory.memory_mb.to_string());
        if r.memory.memory_max_mb > 0 {
            set("NOMAD_MEMORY_MAX_LIMIT", r.memory.memory_max_mb.to_string());
        }
    }
    for p in &alloc.allocated_resources.shared.ports {
        let label = env_key(&p.label);
        let inner = if p.to > 0 { p.to as u16 } else { p.value };
        set(&format!("NOMAD_PORT_{label}"), inner.to_string());
        set(&format!("NOMAD_HOST_PORT_{label}"), p.value.to_string());
        set(&format!("NOMAD_IP_{label}"), p.host_ip.clone());
        set(&format!("NOMAD_HOST_IP_{label}"), p.host_ip.clone());
        set(&format!("NOMAD_ADDR_{label}"), format!("{}:{}", p.host_ip, p.value));
        set(&format!("NOMAD_HOST_ADDR_{label}"), format!("{}:{}", p.host_ip, p.value));
    }
    env
}

/// Adds a bridge-mode allocation's own addresses: `NOMAD_ALLOC_IP_<label>`,
/// `NOMAD_ALLOC_ADDR_<label>` (address and port inside the namespace) and
/// `NOMAD_ALLOC_INTERFACE_<label>`, as Nomad does.
pub fn add_bridge(env: &mut BTreeMap<String, String>, alloc: &Allocation, net: &cni::AllocNetwork) {
    for p in &alloc.allocated_resources.shared.ports {
        let label = env_key(&p.label);
        let inner = if p.to > 0 { p.to as u16 } else { p.value };
        env.insert(format!("NOMAD_ALLOC_IP_{label}"), net.ip.to_string());
        env.insert(format!("NOMAD_ALLOC_ADDR_{label}"), format!("{}:{inner}", net.ip));
        env.insert(format!("NOMAD_ALLOC_INTERFACE_{label}"), net.interface.clone());
    }
}

/// Resolves one `${...}` reference against the task env and the node.
fn lookup(name: &str, env: &BTreeMap<String, String>, node: &Node) -> Option<String> {
    if let Some(v) = env.get(name) {
        return Some(v.clone());
    }
    let target = format!("${{{name}}}");
    node.resolve(&target)
        .map(str::to_string)
        .filter(|_| name.starts_with("attr.") || name.starts_with("meta.") || name.starts_with("node."))
}

/// Replaces every `${name}` in `s` whose value is known; unknown references
/// stay as written, as Nomad leaves them.
pub fn interpolate(s: &str, env: &BTreeMap<String, String>, node: &Node) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let name = after[..end].trim();
                match lookup(name, env, node) {
                    Some(v) => out.push_str(&v),
                    None => out.push_str(&rest[start..start + 2 + end + 1]),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Interpolates every string inside a JSON value (driver config).
pub fn interpolate_json(v: &serde_json::Value, env: &BTreeMap<String, String>, node: &Node) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(interpolate(s, env, node)),
        Value::Array(a) => Value::Array(a.iter().map(|x| interpolate_json(x, env, node)).collect()),
        Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (k.clone(), interpolate_json(x, env, node))).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_env_and_node_and_keeps_unknowns() {
        let mut node = Node { name: "host1".into(), datacenter: "dc1".into(), ..Default::default() };
        node.attributes.insert("unique.hostname".into(), "box".into());
        node.meta.insert("rack".into(), "r7".into());
        let mut env = BTreeMap::new();
        env.insert("NOMAD_TASK_DIR".into(), "/data/t/local".into());
        let s =
            "${NOMAD_TASK_DIR}/x ${attr.unique.hostname} ${node.unique.name} ${node.datacenter} ${meta.rack} ${NOPE}";
        assert_eq!(interpolate(s, &env, &node), "/data/t/local/x box host1 dc1 r7 ${NOPE}");
        assert_eq!(interpolate("no refs", &env, &node), "no refs");
        assert_eq!(interpolate("dangling ${x", &env, &node), "dangling ${x");
    }
}
