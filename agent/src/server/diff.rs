//! The job diff that `job plan` shows: Nomad's `JobDiff` shape (job fields
//! and objects, then per-group and per-task diffs with annotations), built
//! generically from the JSON form of the job.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::scheduler::tasks_updated;
use crate::structs::{Job, TaskGroup};
use crate::wire::plan::{DesiredUpdates, FieldDiff, JobDiff, ObjectDiff, TaskDiff, TaskGroupDiff};

type Kind = &'static str;

/// Fields that change on every submit and are never shown.
const IGNORED: &[&str] = &[
    "Status",
    "StatusDescription",
    "Stable",
    "Version",
    "SubmitTime",
    "CreateIndex",
    "ModifyIndex",
    "JobModifyIndex",
    "TaskGroups",
    "Tasks",
    "Stop",
];

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn kind(old: Option<&Value>, new: Option<&Value>) -> Kind {
    match (old.filter(|v| !is_empty(v)), new.filter(|v| !is_empty(v))) {
        (None, Some(_)) => "Added",
        (Some(_), None) => "Deleted",
        (Some(a), Some(b)) if a != b => "Edited",
        _ => "None",
    }
}

/// Flattens nested values into `Name` / `Name[0]` / `Name.key` fields.
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&name, v, out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        Value::Null => {}
        other => {
            out.insert(prefix.to_string(), scalar(other));
        }
    }
}

fn field_diffs(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>, verbose: bool) -> Vec<FieldDiff> {
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let (o, n) = (old.get(name), new.get(name));
            let diff_type = match (o, n) {
                (None, Some(_)) => "Added",
                (Some(_), None) => "Deleted",
                (Some(a), Some(b)) if a != b => "Edited",
                _ if verbose => "None",
                _ => return None,
            };
            Some(FieldDiff {
                diff_type: diff_type.into(),
                name: name.clone(),
                old: o.cloned().unwrap_or_default(),
                new: n.cloned().unwrap_or_default(),
                annotations: vec![],
            })
        })
        .collect()
}

/// Splits an object's members into primitive fields and nested objects.
fn diff_members(old: &Value, new: &Value) -> (Vec<FieldDiff>, Vec<ObjectDiff>) {
    let empty = serde_json::Map::new();
    let om = old.as_object().unwrap_or(&empty);
    let nm = new.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = om.keys().chain(nm.keys()).filter(|k| !IGNORED.contains(&k.as_str())).collect();
    keys.sort();
    keys.dedup();
    let mut fields = Vec::new();
    let mut objects = Vec::new();
    for k in keys {
        let (o, n) = (om.get(k), nm.get(k));
        let nested = matches!(o, Some(Value::Object(_)) | Some(Value::Array(_)))
            || matches!(n, Some(Value::Object(_)) | Some(Value::Array(_)));
        let t = kind(o, n);
        if t == "None" {
            continue;
        }
        if nested {
            let mut of = BTreeMap::new();
            let mut nf = BTreeMap::new();
            flatten("", o.unwrap_or(&Value::Null), &mut of);
            flatten("", n.unwrap_or(&Value::Null), &mut nf);
            objects.push(ObjectDiff {
                diff_type: t.into(),
                name: k.clone(),
                fields: field_diffs(&of, &nf, false),
                objects: vec![],
            });
        } else {
            fields.push(FieldDiff {
                diff_type: t.into(),
                name: k.clone(),
                old: o.map(scalar).unwrap_or_default(),
                new: n.map(scalar).unwrap_or_default(),
                annotations: vec![],
            });
        }
    }
    (fields, objects)
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn overall(fields: &[FieldDiff], objects: &[ObjectDiff], children_changed: bool) -> Kind {
    if fields.is_empty() && objects.is_empty() && !children_changed {
        "None"
    } else {
        "Edited"
    }
}

fn group_diff(old: Option<&TaskGroup>, new: Option<&TaskGroup>, updates: Option<&DesiredUpdates>) -> TaskGroupDiff {
    let name = new.or(old).map(|g| g.name.clone()).unwrap_or_default();
    let (ov, nv) = (old.map(to_value).unwrap_or(Value::Null), new.map(to_value).unwrap_or(Value::Null));
    let (mut fields, objects) = diff_members(&ov, &nv);
    let destructive = match (old, new) {
        (Some(o), Some(n)) => tasks_updated(o, n),
        _ => true,
    };
    for f in fields.iter_mut().filter(|f| f.name == "Count") {
        let grows = f.new.parse::<u64>().unwrap_or(0) > f.old.parse::<u64>().unwrap_or(0);
        f.annotations.push(if grows { "forces create" } else { "forces destroy" }.to_string());
    }
    let mut tasks = Vec::new();
    let old_tasks = old.map(|g| g.tasks.as_slice()).unwrap_or(&[]);
    let new_tasks = new.map(|g| g.tasks.as_slice()).unwrap_or(&[]);
    let mut task_names: Vec<&String> = old_tasks.iter().chain(new_tasks.iter()).map(|t| &t.name).collect();
    task_names.sort();
    task_names.dedup();
    for tname in task_names {
        let ot = old_tasks.iter().find(|t| &t.name == tname);
        let nt = new_tasks.iter().find(|t| &t.name == tname);
        let (tov, tnv) = (ot.map(to_value).unwrap_or(Value::Null), nt.map(to_value).unwrap_or(Value::Null));
        let (tf, to) = diff_members(&tov, &tnv);
        let t = match (ot, nt) {
            (None, Some(_)) => "Added",
            (Some(_), None) => "Deleted",
            _ => overall(&tf, &to, false),
        };
        let annotations = if t != "None" && destructive && old.is_some() {
            vec!["forces create/destroy update".to_string()]
        } else {
            vec![]
        };
        tasks.push(TaskDiff { diff_type: t.into(), name: tname.clone(), annotations, fields: tf, objects: to });
    }
    let tasks_changed = tasks.iter().any(|t| t.diff_type != "None");
    let diff_type = match (old, new) {
        (None, Some(_)) => "Added",
        (Some(_), None) => "Deleted",
        _ => overall(&fields, &objects, tasks_changed),
    };
    let mut counts = BTreeMap::new();
    if let Some(u) = updates {
        for (k, v) in [
            ("create", u.place),
            ("destroy", u.stop),
            ("in-place update", u.in_place_update),
            ("create/destroy update", u.destructive_update),
            ("ignore", u.ignore),
            ("migrate", u.migrate),
            ("canary", u.canary),
        ] {
            if v > 0 {
                counts.insert(k.to_string(), v);
            }
        }
    }
    TaskGroupDiff { diff_type: diff_type.into(), name, fields, objects, tasks, updates: counts }
}

/// Diffs a submitted job against the registered one (`None` when new or stopped).
pub fn job_diff(old: Option<&Job>, new: &Job, updates: &BTreeMap<String, DesiredUpdates>) -> JobDiff {
    let (ov, nv) = (old.map(to_value).unwrap_or(Value::Null), to_value(new));
    let (fields, objects) = diff_members(&ov, &nv);
    let mut names: Vec<&String> = new.task_groups.iter().map(|g| &g.name).collect();
    if let Some(o) = old {
        names.extend(o.task_groups.iter().map(|g| &g.name));
    }
    names.sort();
    names.dedup();
    let task_groups: Vec<TaskGroupDiff> = names
        .into_iter()
        .map(|n| group_diff(old.and_then(|o| o.task_group(n)), new.task_group(n), updates.get(n)))
        .collect();
    let groups_changed = task_groups.iter().any(|g| g.diff_type != "None");
    let diff_type = if old.is_none() { "Added" } else { overall(&fields, &objects, groups_changed) };
    JobDiff { diff_type: diff_type.into(), id: new.id.clone(), fields, objects, task_groups }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structs::Task;

    fn job(count: u32, image: &str) -> Job {
        let mut task = Task { name: "redis".into(), driver: "docker".into(), ..Default::default() };
        task.config.insert("image".into(), Value::String(image.into()));
        Job {
            id: "example".into(),
            task_groups: vec![TaskGroup { name: "cache".into(), count, tasks: vec![task], ..Default::default() }],
            ..Default::default()
        }
    }

    #[test]
    fn count_change_is_annotated() {
        let d = job_diff(Some(&job(1, "redis:7")), &job(3, "redis:7"), &BTreeMap::new());
        assert_eq!(d.diff_type, "Edited");
        let g = &d.task_groups[0];
        let count = g.fields.iter().find(|f| f.name == "Count").unwrap();
        assert_eq!((count.old.as_str(), count.new.as_str()), ("1", "3"));
        assert_eq!(count.annotations, vec!["forces create"]);
        assert!(g.tasks.iter().all(|t| t.diff_type == "None"));
    }

    #[test]
    fn config_change_forces_replacement() {
        let d = job_diff(Some(&job(1, "redis:6")), &job(1, "redis:7"), &BTreeMap::new());
        let t = &d.task_groups[0].tasks[0];
        assert_eq!(t.diff_type, "Edited");
        assert_eq!(t.annotations, vec!["forces create/destroy update"]);
        let cfg = t.objects.iter().find(|o| o.name == "Config").unwrap();
        assert_eq!(cfg.fields[0].old, "redis:6");
    }

    #[test]
    fn identical_jobs_have_no_diff() {
        let d = job_diff(Some(&job(2, "redis:7")), &job(2, "redis:7"), &BTreeMap::new());
        assert_eq!(d.diff_type, "None");
    }
}
