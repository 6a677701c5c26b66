//! The server's gauges, derived from a state snapshot when metrics are
//! read: Nomad's job summaries (`nomad.nomad.job_summary.*`), and berth's
//! CSI volumes (schedulable, claims) and plugin health. Derived on read,
//! they vanish with the job, volume or plugin they describe.

use super::state::Tables;
use super::summary::job_summary;
use crate::telemetry::Point;

/// Every server gauge of `snap`.
pub fn gauges(snap: &Tables) -> Vec<Point> {
    let mut out = Vec::new();
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
