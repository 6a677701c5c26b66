//! The order of an allocation's tasks (Nomad's lifecycle hooks): prestart
//! tasks first (run to completion, or for sidecars started), then the
//! main tasks, poststart tasks once every main task runs, the sidecars
//! stopped once every other task but the poststop ones has ended, and the
//! poststop tasks last. [`progress`] decides from the tasks' states alone,
//! so a restarted client resumes where the allocation was;
//! [`Coordinator`] turns it into gates the task runners wait on and the
//! token that stops the sidecars.

use std::collections::BTreeMap;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::client::taskrunner::task_state;
use crate::structs::{Task, TaskPhase, TaskState};

/// What the tasks' states allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Every prestart task is done (or, for a sidecar, has started).
    pub main: bool,
    /// Every main task has started.
    pub poststart: bool,
    /// Every task but the sidecars and the poststop ones has ended.
    pub stop_sidecars: bool,
    /// Every task but the poststop ones has ended.
    pub poststop: bool,
}

/// One task as the order sees it.
#[derive(Debug, Clone)]
pub struct Member {
    name: String,
    phase: TaskPhase,
    sidecar: bool,
}

impl Member {
    /// The member for `task`.
    pub fn of(task: &Task) -> Member {
        Member { name: task.name.clone(), phase: task.phase(), sidecar: task.is_sidecar() }
    }
}

/// What `tasks` in `states` allow.
pub fn progress(tasks: &[Member], states: &BTreeMap<String, TaskState>) -> Progress {
    let state = |m: &Member| states.get(&m.name);
    let dead = |m: &Member| state(m).is_some_and(|s| s.state == task_state::DEAD);
    let started = |m: &Member| state(m).is_some_and(|s| s.state == task_state::RUNNING || s.started_at.is_some());
    let of = |phase: TaskPhase| tasks.iter().filter(move |m| m.phase == phase);
    let main = of(TaskPhase::Prestart).all(|m| {
        if m.sidecar {
            started(m)
        } else {
            dead(m) && !state(m).is_some_and(|s| s.failed)
        }
    });
    let poststart = main && of(TaskPhase::Main).all(started);
    let stop_sidecars = tasks.iter().filter(|m| !m.sidecar && m.phase != TaskPhase::Poststop).all(dead);
    let poststop = tasks.iter().filter(|m| m.phase != TaskPhase::Poststop).all(dead);
    Progress { main, poststart, stop_sidecars, poststop }
}

/// The gates and tokens of one allocation's order.
pub struct Coordinator {
    tasks: Vec<Member>,
    main: watch::Sender<bool>,
    poststart: watch::Sender<bool>,
    poststop: watch::Sender<bool>,
    sidecars: CancellationToken,
    poststop_kill: CancellationToken,
}

impl Coordinator {
    /// The order of `tasks`; `kill` stops the allocation (all but the
    /// poststop tasks, which run after it).
    pub fn new(tasks: &[Task], kill: &CancellationToken) -> Coordinator {
        Coordinator {
            tasks: tasks.iter().map(Member::of).collect(),
            main: watch::channel(false).0,
            poststart: watch::channel(false).0,
            poststop: watch::channel(false).0,
            sidecars: kill.child_token(),
            poststop_kill: CancellationToken::new(),
        }
    }

    /// The gate `task` waits on before its first start (none: prestart).
    pub fn gate(&self, task: &Task) -> Option<watch::Receiver<bool>> {
        match task.phase() {
            TaskPhase::Prestart => None,
            TaskPhase::Main => Some(self.main.subscribe()),
            TaskPhase::Poststart => Some(self.poststart.subscribe()),
            TaskPhase::Poststop => Some(self.poststop.subscribe()),
        }
    }

    /// The token that stops `task`.
    pub fn kill_token(&self, task: &Task, kill: &CancellationToken) -> CancellationToken {
        if task.phase() == TaskPhase::Poststop {
            self.poststop_kill.child_token()
        } else if task.is_sidecar() {
            self.sidecars.child_token()
        } else {
            kill.child_token()
        }
    }

    /// Opens the gates and stops the sidecars as `states` allow. Gates,
    /// once open, stay open.
    pub fn advance(&self, states: &BTreeMap<String, TaskState>) {
        let p = progress(&self.tasks, states);
        for (gate, open) in [(&self.main, p.main), (&self.poststart, p.poststart), (&self.poststop, p.poststop)] {
            if open && !*gate.borrow() {
                let _ = gate.send(true);
            }
        }
        if p.stop_sidecars && !self.sidecars.is_cancelled() {
            tracing::debug!("main tasks have ended: stopping the sidecars");
            self.sidecars.cancel();
        }
    }

    /// Stops everything, poststop tasks included (the allocation is removed).
    pub fn abandon(&self) {
        self.poststop_kill.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structs::TaskLifecycle;

    fn task(name: &str, hook: Option<&str>, sidecar: bool) -> Task {
        let lifecycle = hook.map(|h| TaskLifecycle { hook: h.into(), sidecar });
        Task { name: name.into(), lifecycle, ..Default::default() }
    }

    fn st(state: &str, started: bool, failed: bool) -> TaskState {
        TaskState {
            state: state.into(),
            started_at: started.then(|| "2026-12-02T00:00:00Z".to_string()),
            failed,
            ..Default::default()
        }
    }

    #[test]
    fn the_order_follows_the_tasks_states() {
        let tasks: Vec<Member> = [
            task("init", Some("prestart"), false),
            task("proxy", Some("prestart"), true),
            task("main", None, false),
            task("announce", Some("poststart"), false),
            task("cleanup", Some("poststop"), false),
        ]
        .iter()
        .map(Member::of)
        .collect();
        let mut s: BTreeMap<String, TaskState> = BTreeMap::new();
        assert_eq!(progress(&tasks, &s), Progress::default());
        s.insert("init".into(), st(task_state::RUNNING, true, false));
        s.insert("proxy".into(), st(task_state::RUNNING, true, false));
        assert!(!progress(&tasks, &s).main, "init still runs");
        s.insert("init".into(), st(task_state::DEAD, true, true));
        assert!(!progress(&tasks, &s).main, "init failed");
        s.insert("init".into(), st(task_state::DEAD, true, false));
        assert_eq!(progress(&tasks, &s), Progress { main: true, ..Default::default() });
        s.insert("main".into(), st(task_state::RUNNING, true, false));
        assert!(progress(&tasks, &s).poststart);
        s.insert("announce".into(), st(task_state::DEAD, true, false));
        s.insert("main".into(), st(task_state::DEAD, true, false));
        assert_eq!(
            progress(&tasks, &s),
            Progress { main: true, poststart: true, stop_sidecars: true, poststop: false }
        );
        s.insert("proxy".into(), st(task_state::DEAD, true, false));
        assert!(progress(&tasks, &s).poststop);
    }

    #[test]
    fn a_group_without_lifecycle_blocks_starts_at_once() {
        let tasks = vec![Member::of(&task("a", None, false)), Member::of(&task("b", None, false))];
        let p = progress(&tasks, &BTreeMap::new());
        assert!(p.main && !p.poststop && !p.stop_sidecars);
    }

    #[tokio::test]
    async fn gates_open_once_and_sidecars_stop_with_the_main_tasks() {
        let kill = CancellationToken::new();
        let tasks = [task("proxy", Some("prestart"), true), task("main", None, false)];
        let c = Coordinator::new(&tasks, &kill);
        let mut main_gate = c.gate(&tasks[1]).unwrap();
        assert!(c.gate(&tasks[0]).is_none());
        let sidecar = c.kill_token(&tasks[0], &kill);
        let mut s = BTreeMap::new();
        s.insert("proxy".to_string(), st(task_state::RUNNING, true, false));
        c.advance(&s);
        main_gate.wait_for(|open| *open).await.unwrap();
        assert!(!sidecar.is_cancelled());
        s.insert("main".to_string(), st(task_state::DEAD, true, false));
        c.advance(&s);
        assert!(sidecar.is_cancelled(), "the sidecar stops once the main task has ended");
        assert!(!kill.is_cancelled());
    }
}
