//! Static feasibility of a node for a task group: datacenter, drivers,
//! constraints and host volumes. Resource fit is `rank.rs`'s job.
//!
//! Nodes that differ only in values unique to each of them share a
//! *computed class* (as in Nomad): unless a group's constraints refer to such
//! a value, one check per class answers for all of its nodes.

use regex::Regex;

use crate::structs::{Constraint, Job, Node, TaskGroup};

/// Why a node cannot take a task group, as counted in `AllocMetric`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Infeasible {
    /// Not in one of the job's datacenters (not counted as filtered).
    Datacenter,
    /// Not ready, ineligible or draining.
    NotSchedulable,
    /// A constraint failed; the key is its Nomad-style description.
    Constraint(String),
}

/// Nomad's glob match for datacenters (`*` matches any run of characters).
pub fn glob_match(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((prefix, rest)) => {
            let Some(tail) = value.strip_prefix(prefix) else { return false };
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && glob_match(rest, &tail[i..]))
        }
    }
}

/// The description Nomad prints for a filtering constraint.
pub fn describe(c: &Constraint) -> String {
    match c.operand.as_str() {
        "distinct_hosts" => "distinct_hosts".to_string(),
        _ => format!("{} {} {}", c.l_target, c.operand, c.r_target),
    }
}

/// Evaluates one constraint against a node. `distinct_hosts` and
/// `distinct_property` depend on other placements and pass here.
pub fn constraint_holds(c: &Constraint, node: &Node) -> bool {
    holds(&c.l_target, &c.operand, &c.r_target, node)
}

/// Evaluates `l_target operand r_target` against a node (a constraint's
/// or an affinity's three parts).
pub(super) fn holds(l_target: &str, op: &str, r_target: &str, node: &Node) -> bool {
    if matches!(op, "distinct_hosts" | "distinct_property") {
        return true;
    }
    let l = node.resolve(l_target);
    let r = node.resolve(r_target);
    match op {
        "is_set" => return l.is_some(),
        "is_not_set" => return l.is_none(),
        _ => {}
    }
    let (Some(l), Some(r)) = (l, r) else {
        return op == "!=" || op == "not";
    };
    match op {
        "=" | "==" | "is" | "" => l == r,
        "!=" | "not" => l != r,
        "<" | "<=" | ">" | ">=" => compare_ordered(op, l, r),
        "regexp" => Regex::new(r).map(|re| re.is_match(l)).unwrap_or(false),
        "version" | "semver" => version_matches(l, r),
        "set_contains" | "set_contains_all" => {
            let have: Vec<&str> = l.split(',').map(str::trim).collect();
            r.split(',').map(str::trim).all(|want| have.contains(&want))
        }
        "set_contains_any" => {
            let have: Vec<&str> = l.split(',').map(str::trim).collect();
            r.split(',').map(str::trim).any(|want| have.contains(&want))
        }
        _ => false,
    }
}

fn compare_ordered(op: &str, l: &str, r: &str) -> bool {
    let ord = match (l.parse::<f64>(), r.parse::<f64>()) {
        (Ok(a), Ok(b)) => a.partial_cmp(&b),
        _ => Some(l.cmp(r)),
    };
    let Some(ord) = ord else { return false };
    match op {
        "<" => ord.is_lt(),
        "<=" => ord.is_le(),
        ">" => ord.is_gt(),
        _ => ord.is_ge(),
    }
}

/// Nomad's `version` operator: a comma-separated list of requirements
/// against a possibly partial version ("5.10" counts as "5.10.0").
fn version_matches(value: &str, requirement: &str) -> bool {
    let Some(version) = lenient_version(value) else { return false };
    requirement.split(',').all(|part| {
        let part = part.trim();
        let (op, rest) = ["<=", ">=", "!=", "=", "<", ">", "~>"]
            .iter()
            .find_map(|op| part.strip_prefix(op).map(|r| (*op, r.trim())))
            .unwrap_or(("=", part));
        let Some(want) = lenient_version(rest) else { return false };
        match op {
            "=" => version == want,
            "!=" => version != want,
            "<" => version < want,
            "<=" => version <= want,
            ">" => version > want,
            ">=" => version >= want,
            _ => version >= want && version.major == want.major,
        }
    })
}

fn lenient_version(s: &str) -> Option<semver::Version> {
    let s = s.trim().trim_start_matches('v');
    let core_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let mut parts: Vec<u64> =
        s[..core_end].split('.').filter(|p| !p.is_empty()).map(|p| p.parse().ok()).collect::<Option<_>>()?;
    if parts.is_empty() {
        return None;
    }
    parts.resize(3, 0);
    Some(semver::Version::new(parts[0], parts[1], parts[2]))
}

/// Checks everything about a node that does not depend on other placements.
pub fn check_node(job: &Job, tg: &TaskGroup, node: &Node) -> Result<(), Infeasible> {
    if !job.datacenters.iter().any(|dc| glob_match(dc, &node.datacenter)) {
        return Err(Infeasible::Datacenter);
    }
    if !node.is_schedulable() {
        return Err(Infeasible::NotSchedulable);
    }
    for task in &tg.tasks {
        let ok = node.drivers.get(&task.driver).map(|d| d.detected && d.healthy).unwrap_or(false);
        if !ok {
            return Err(Infeasible::Constraint("missing drivers".to_string()));
        }
    }
    // Berth has no device plugins, so no node fingerprints a device: a
    // group that asks for one fits nowhere, as on a Nomad cluster whose
    // clients have no such device.
    if tg.tasks.iter().flat_map(|t| &t.resources).any(|r| !r.devices.is_empty()) {
        return Err(Infeasible::Constraint("missing devices".to_string()));
    }
    let constraints =
        job.constraints.iter().chain(tg.constraints.iter()).chain(tg.tasks.iter().flat_map(|t| t.constraints.iter()));
    for c in constraints {
        if !constraint_holds(c, node) {
            return Err(Infeasible::Constraint(describe(c)));
        }
    }
    for req in tg.volumes.values().filter(|v| v.volume_type == "host") {
        let ok = node.host_volumes.get(&req.source).map(|hv| req.read_only || !hv.read_only).unwrap_or(false);
        if !ok {
            return Err(Infeasible::Constraint("missing compatible host volumes".into()));
        }
    }
    Ok(())
}

/// True when a constraint target names a value unique to each node.
pub(super) fn target_escapes_class(target: &str) -> bool {
    ["${node.unique.", "${attr.unique.", "${meta.unique."].iter().any(|p| target.starts_with(p))
}

/// True when some constraint of the group (or its job, or its tasks) refers
/// to a value unique to each node: its feasibility then differs between
/// nodes of one computed class and must be checked node by node.
pub fn escapes_class(job: &Job, tg: &TaskGroup) -> bool {
    job.constraints
        .iter()
        .chain(tg.constraints.iter())
        .chain(tg.tasks.iter().flat_map(|t| t.constraints.iter()))
        .any(|c| target_escapes_class(&c.l_target) || target_escapes_class(&c.r_target))
}

/// True when the group (or its job) asks for one allocation per node.
/// As in Nomad, the constraint's value turns it off when it says false
/// (`value = "false"`, `distinct_hosts = false`); no value, or one that is
/// not a boolean, leaves it on.
pub fn wants_distinct_hosts(job: &Job, tg: &TaskGroup) -> bool {
    job.constraints
        .iter()
        .chain(tg.constraints.iter())
        .filter(|c| c.operand == "distinct_hosts")
        .any(|c| !matches!(c.r_target.trim().to_ascii_lowercase().as_str(), "false" | "0" | "f"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Node {
        let mut n = Node { id: "n1".into(), name: "host1".into(), datacenter: "dc1".into(), ..Default::default() };
        n.attributes.insert("kernel.name".into(), "linux".into());
        n.attributes.insert("kernel.version".into(), "6.1.0-18-amd64".into());
        n.attributes.insert("cpu.numcores".into(), "4".into());
        n.meta.insert("rack".into(), "r1".into());
        n
    }

    fn c(l: &str, op: &str, r: &str) -> Constraint {
        Constraint { l_target: l.into(), operand: op.into(), r_target: r.into() }
    }

    #[test]
    fn operators() {
        let n = node();
        assert!(constraint_holds(&c("${attr.kernel.name}", "=", "linux"), &n));
        assert!(!constraint_holds(&c("${attr.kernel.name}", "=", "darwin"), &n));
        assert!(constraint_holds(&c("${attr.kernel.name}", "!=", "darwin"), &n));
        assert!(constraint_holds(&c("${meta.rack}", "regexp", "^r[0-9]$"), &n));
        assert!(constraint_holds(&c("${attr.kernel.version}", "version", ">= 5.10, < 7"), &n));
        assert!(!constraint_holds(&c("${attr.kernel.version}", "version", "< 6"), &n));
        assert!(constraint_holds(&c("${attr.cpu.numcores}", ">=", "4"), &n));
        assert!(!constraint_holds(&c("${attr.cpu.numcores}", ">", "10"), &n));
        assert!(constraint_holds(&c("${node.datacenter}", "=", "dc1"), &n));
        assert!(!constraint_holds(&c("${meta.missing}", "=", "x"), &n));
        assert!(constraint_holds(&c("${meta.missing}", "is_not_set", ""), &n));
    }

    #[test]
    fn computed_class_leaves_out_unique_values_only() {
        let base = node();
        let mut twin = node();
        twin.id = "n2".into();
        twin.name = "host2".into();
        twin.attributes.insert("unique.network.ip-address".into(), "10.0.0.2".into());
        twin.meta.insert("unique.serial".into(), "s2".into());
        assert_eq!(base.computed_class(), twin.computed_class());
        let changes: [fn(&mut Node); 6] = [
            |n| n.datacenter = "dc2".into(),
            |n| n.status = crate::structs::node_status::READY.into(),
            |n| {
                n.meta.insert("rack".into(), "r2".into());
            },
            |n| {
                n.attributes.insert("kernel.name".into(), "darwin".into());
            },
            |n| {
                n.drivers.insert("docker".into(), Default::default());
            },
            |n| {
                n.host_volumes.insert("data".into(), Default::default());
            },
        ];
        for change in changes {
            let mut other = node();
            change(&mut other);
            assert_ne!(base.computed_class(), other.computed_class());
        }
        // The same entry moved from attributes to meta is another class.
        let mut moved = node();
        let value = moved.attributes.remove("cpu.numcores").unwrap();
        moved.meta.insert("cpu.numcores".into(), value);
        assert_ne!(base.computed_class(), moved.computed_class());
    }

    #[test]
    fn unique_targets_escape_the_class() {
        let mut job = Job::default();
        let mut tg = TaskGroup { tasks: vec![Default::default()], ..Default::default() };
        assert!(!escapes_class(&job, &tg));
        job.constraints.push(c("${attr.kernel.name}", "=", "linux"));
        assert!(!escapes_class(&job, &tg));
        for target in ["${node.unique.name}", "${attr.unique.network.ip-address}", "${meta.unique.serial}"] {
            tg.tasks[0].constraints = vec![c(target, "=", "x")];
            assert!(escapes_class(&job, &tg), "{target}");
            tg.tasks[0].constraints = vec![c("x", "=", target)];
            assert!(escapes_class(&job, &tg), "{target} on the right");
        }
    }

    #[test]
    fn datacenter_globs() {
        assert!(glob_match("*", "dc1"));
        assert!(glob_match("dc*", "dc1"));
        assert!(!glob_match("eu-*", "dc1"));
        assert!(glob_match("dc1", "dc1"));
    }
}
