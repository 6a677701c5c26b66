//! The periodic launcher: at each launch time of an enabled periodic job,
//! its child `<id>/periodic-<unix time>` is registered (Nomad's derived
//! job: the parent's spec without the `periodic` block). A launch is
//! skipped while an earlier child runs if the job prohibits overlap.
//!
//! Nothing but the children records what was launched: the newest child,
//! the job's own (re)registration and what this loop handled bound the
//! launches already done. A server that was down when launches fell due
//! makes the last of them once when it is back (as Nomad does), and a
//! child's ID is its launch time, so no launch is ever made twice.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::state::Tables;
use super::{Server, ServerError};
use crate::structs::{Job, Schedule};
use crate::wire::plan::PeriodicForceResult;

/// What an evaluation of a launched child says triggered it.
const TRIGGER: &str = "periodic-job";
/// The longest the launcher sleeps without looking at the jobs again.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// The launch time in a child's ID, as Unix seconds.
fn launch_of(parent_id: &str, child_id: &str) -> Option<i64> {
    child_id.strip_prefix(parent_id)?.strip_prefix("/periodic-")?.parse().ok()
}

/// The child launched at `launch`.
fn child(parent: &Job, launch: DateTime<Utc>) -> Job {
    let mut job = parent.clone();
    job.id = format!("{}/periodic-{}", parent.id, launch.timestamp());
    job.name = job.id.clone();
    job.parent_id = parent.id.clone();
    job.periodic = None;
    job.create_index = 0;
    job.modify_index = 0;
    job
}

/// The newest launch among a parent's children, and whether one still runs.
fn children(snap: &Tables, parent: &Job) -> (Option<DateTime<Utc>>, bool) {
    let mut newest = None;
    let mut running = false;
    for j in snap.jobs().filter(|j| j.parent_id == parent.id && j.namespace == parent.namespace) {
        if let Some(t) = launch_of(&parent.id, &j.id).and_then(|s| Utc.timestamp_opt(s, 0).single()) {
            newest = newest.max(Some(t));
        }
        running |= j.status != "dead";
    }
    (newest, running)
}

impl Server {
    /// Launches children as they fall due, for as long as the server runs.
    pub(super) async fn periodic_launcher(server: Arc<Server>) {
        let mut changes = server.state.watch();
        let mut handled: HashMap<(String, String), DateTime<Utc>> = HashMap::new();
        loop {
            let wait = server.launch_due(&mut handled);
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Launches what is due now; returns how long until the next launch.
    fn launch_due(&self, handled: &mut HashMap<(String, String), DateTime<Utc>>) -> Duration {
        let snap = self.state.snapshot();
        let now = Utc::now();
        let mut wait = MAX_SLEEP;
        for parent in snap.jobs().filter(|j| j.is_periodic() && !j.stop) {
            let Some(config) = parent.periodic.as_ref().filter(|p| p.enabled) else { continue };
            let Ok(schedule) = Schedule::parse(config) else { continue };
            let key = (parent.namespace.clone(), parent.id.clone());
            let (newest, running) = children(&snap, parent);
            let registered = Utc.timestamp_nanos(parent.submit_time);
            let done = [newest, handled.get(&key).copied(), Some(registered)].into_iter().flatten().max();
            if let Some(due) = done.and_then(|after| schedule.last_due(after, now)) {
                handled.insert(key, due);
                if config.prohibit_overlap && running {
                    tracing::info!(job_id = %parent.id, launch = %due, "skipping a periodic launch: a child still runs and the job prohibits overlap");
                } else if let Err(e) = self.register_child(child(parent, due), TRIGGER) {
                    tracing::error!(job_id = %parent.id, error = %e, "launching a periodic job");
                }
            }
            if let Some(next) = schedule.next_after(now) {
                wait = wait.min((next - now).to_std().unwrap_or_default());
            }
        }
        handled.retain(|(ns, id), _| snap.job(ns, id).is_some());
        wait
    }

    /// Launches periodic job `id` now (`job periodic force`).
    pub fn force_periodic(&self, ns: &str, id: &str) -> Result<PeriodicForceResult, ServerError> {
        let parent = self.state.snapshot().job(ns, id).ok_or_else(|| ServerError::NotFound("job not found".into()))?;
        if !parent.is_periodic() {
            return Err(ServerError::BadRequest(format!("Job {id:?} is not periodic")));
        }
        let launch = child(&parent, Utc::now());
        if let Some((eval, index)) = self.register_child(launch.clone(), TRIGGER)? {
            return Ok(PeriodicForceResult { eval_id: eval.id, eval_create_index: index, index });
        }
        // Launched this very second already (by the schedule): that launch is "now".
        let snap = self.state.snapshot();
        let eval = snap
            .evals()
            .filter(|e| e.namespace == launch.namespace && e.job_id == launch.id)
            .max_by_key(|e| e.create_index)
            .ok_or_else(|| ServerError::NotFound(format!("no evaluation of {:?}", launch.id)))?;
        Ok(PeriodicForceResult { eval_id: eval.id.clone(), eval_create_index: eval.create_index, index: snap.index })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::state::{StateStore, WriteBatch};
    use crate::server::ServerConfig;
    use crate::structs::PeriodicConfig;

    const REPORT: &str =
        "job \"report\" {\n  type = \"batch\"\n  periodic { cron = \"@yearly\" }\n  group \"g\" {\n    \
         task \"t\" {\n      driver = \"raw_exec\"\n      config { command = \"true\" }\n    }\n  }\n}\n";

    #[tokio::test]
    async fn the_parent_is_never_evaluated_and_finished_children_go_but_the_newest() {
        let server = Server::start_with_state(Arc::new(StateStore::in_memory()), ServerConfig::default());
        let parent = crate::jobspec::parse_job("report.nomad", REPORT, &Default::default()).unwrap().job;
        let registered = server.register_job(parent.clone(), None).unwrap();
        assert!(registered.eval_id.is_empty(), "a periodic job has no evaluation");
        let snap = server.state.snapshot();
        assert_eq!(snap.job("default", "report").unwrap().status, "running");
        assert_eq!(snap.evals().count(), 0);
        for t in [1_700_000_000, 1_700_000_100] {
            let at = Utc.timestamp_opt(t, 0).unwrap();
            assert!(server.register_child(child(&parent, at), TRIGGER).unwrap().is_some());
            assert!(server.register_child(child(&parent, at), TRIGGER).unwrap().is_none(), "a launch is made once");
        }
        server
            .state
            .commit(|snap| {
                let mut batch = WriteBatch::default();
                for j in snap.jobs().filter(|j| j.parent_id == "report") {
                    let mut dead = (**j).clone();
                    dead.status = "dead".into();
                    batch.jobs.push(dead);
                }
                Ok::<_, ServerError>((batch, ()))
            })
            .unwrap();
        server.force_gc().unwrap();
        let snap = server.state.snapshot();
        let left: Vec<String> = snap.jobs().map(|j| j.id.clone()).collect();
        assert!(left.contains(&"report".to_string()), "{left:?}");
        let kids: Vec<&String> = left.iter().filter(|id| id.starts_with("report/")).collect();
        assert_eq!(kids.len(), 1, "{left:?}");
        let (newest, _) = children(&snap, &parent);
        assert_eq!(newest.map(|t| t.timestamp()), Some(1_700_000_100), "the newest launch is still known");
    }

    #[test]
    fn a_child_is_the_parent_without_periodic_under_its_launch_time() {
        let parent = Job {
            id: "report".into(),
            periodic: Some(PeriodicConfig { spec: "@daily".into(), ..Default::default() }),
            ..Job::default()
        };
        let at = Utc.timestamp_opt(1_764_700_000, 0).unwrap();
        let c = child(&parent, at);
        assert_eq!(c.id, "report/periodic-1764700000");
        assert_eq!(c.parent_id, "report");
        assert!(c.periodic.is_none() && !c.is_template());
        assert_eq!(launch_of("report", &c.id), Some(1_764_700_000));
        assert_eq!(launch_of("report", "report/dispatch-1-abcdef12"), None);
        assert_eq!(launch_of("rep", "report/periodic-1"), None);
    }
}
