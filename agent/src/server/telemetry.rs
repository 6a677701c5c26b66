//! The server's gauges, derived from a state snapshot when metrics are
//! read: Nomad's job summaries (`nomad.nomad.job_summary.*`) and evaluation
//! counts (`nomad.nomad.broker.total_ready`,
//! `nomad.nomad.blocked_evals.total_blocked`), and berth's
//! CSI volumes (schedulable, claims) and plugin health. Derived on read,
//! they vanish with the job, volume or plugin they describe.

use super::state::Tables;
use super::summary::job_summary;
use crate::structs::eval_status;
use crate::telemetry::Point;

/// Every server gauge of `snap`.
pub fn gauges(snap: &Tables) -> Vec<Point> {
    let mut out = Vec::new();
    let (mut ready, mut blocked) = (0u64, 0u64);
    for e in snap.evals() {
        match e.status.as_str() {
            eval_status::PENDING => ready += 1,
            eval_status::BLOCKED => blocked += 1,
            _ => {}
        }
    }
    out.push(Point::new("nomad.nomad.broker.total_ready", &[], ready as f64));
    out.push(Point::new("nomad.nomad.blocked_evals.total_blocked", &[], blocked as f64));
    for job in snap.jobs() {
        for (group, s) in &job_summary(snap, job).summary {
            let labels =
                [("namespace", job.namespace.as_str()), ("job", job.id.as_str()), ("task_group", group.as_str())];
            for (name, n) in [
                ("nomad.nomad.job_summary.queued", s.queued),
                ("nomad.nomad.job_summary.complete", s.complete),
                ("nomad.nomad.job_summary.failed", s.failed),
                ("nomad.nomad.job_summary.running", s.running),
                ("nomad.nomad.job_summary.starting", s.starting),
                ("nomad.nomad.job_summary.lost", s.lost),
            ] {
                out.push(Point::new(name, &labels, n as f64));
            }
        }
    }
    for v in snap.volumes() {
        let labels =
            [("namespace", v.namespace.as_str()), ("volume", v.id.as_str()), ("plugin_id", v.plugin_id.as_str())];
        out.push(Point::new("berth.csi.volume.schedulable", &labels, f64::from(u8::from(v.schedulable))));
        out.push(Point::new(
            "berth.csi.volume.claims",
            &labels,
            snap.volume_claimers(&v.namespace, &v.id).len() as f64,
        ));
    }
    for p in super::csi::plugins(snap) {
        let labels = [("plugin_id", p.id.as_str())];
        for (name, n) in [
            ("berth.csi.plugin.controllers_healthy", p.controllers_healthy),
            ("berth.csi.plugin.controllers_expected", p.controllers_expected),
            ("berth.csi.plugin.nodes_healthy", p.nodes_healthy),
            ("berth.csi.plugin.nodes_expected", p.nodes_expected),
        ] {
            out.push(Point::new(name, &labels, n as f64));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::state::{StateStore, WriteBatch};
    use crate::structs::{client_status, Allocation, CsiVolume, Evaluation, Job, TaskGroup};

    #[test]
    fn gauges_follow_the_state() {
        let store = StateStore::in_memory();
        let job = Job {
            id: "web".into(),
            namespace: "default".into(),
            task_groups: vec![TaskGroup { name: "g".into(), ..Default::default() }],
            ..Default::default()
        };
        let alloc = |id: &str, status: &str| Allocation {
            id: id.into(),
            namespace: "default".into(),
            job_id: "web".into(),
            task_group: "g".into(),
            client_status: status.into(),
            ..Default::default()
        };
        let eval = |id: &str, status: &str| Evaluation { id: id.into(), status: status.into(), ..Default::default() };
        store
            .apply(WriteBatch {
                jobs: vec![job],
                allocs: vec![alloc("a1", client_status::RUNNING), alloc("a2", client_status::FAILED)],
                evals: vec![eval("e1", eval_status::BLOCKED), eval("e2", eval_status::COMPLETE)],
                volumes: vec![CsiVolume {
                    id: "db".into(),
                    namespace: "default".into(),
                    plugin_id: "p".into(),
                    schedulable: true,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .unwrap();
        let points = gauges(&store.snapshot());
        let value = |name: &str, label: Option<(&str, &str)>| {
            points
                .iter()
                .find(|p| {
                    p.name == name && label.is_none_or(|(k, v)| p.labels.iter().any(|(pk, pv)| *pk == k && pv == v))
                })
                .map(|p| p.value)
        };
        assert_eq!(value("nomad.nomad.job_summary.running", Some(("task_group", "g"))), Some(1.0));
        assert_eq!(value("nomad.nomad.job_summary.failed", Some(("job", "web"))), Some(1.0));
        assert_eq!(value("nomad.nomad.broker.total_ready", None), Some(0.0));
        assert_eq!(value("nomad.nomad.blocked_evals.total_blocked", None), Some(1.0));
        assert_eq!(value("berth.csi.volume.schedulable", Some(("volume", "db"))), Some(1.0));
        assert_eq!(value("berth.csi.volume.claims", Some(("plugin_id", "p"))), Some(0.0));
    }
}
