//! What a template that rendered anew does to its running task, by its
//! `change_mode`: `restart` (the default) restarts the task in place,
//! `signal` sends `change_signal`, `noop` leaves it be. Several templates
//! that change together restart the task once, or send each distinct
//! signal once. Requests go through the task runner's own control
//! channel, as an API request would.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::TemplateSet;
use crate::client::control::{TaskAction, TaskControl};
use crate::structs::TaskEvent;

/// Follows `set` until the task runner goes away, keeping `env` (what the
/// `env = true` templates set) up to date and acting on each change.
pub async fn watch(
    mut set: TemplateSet,
    env: Arc<parking_lot::Mutex<BTreeMap<String, String>>>,
    control: mpsc::UnboundedSender<TaskControl>,
) {
    let ask = |action: TaskAction| {
        let (reply, _) = oneshot::channel();
        control.send(TaskControl { action, reply }).is_ok()
    };
    loop {
        let changed = match set.next_change().await {
            Ok(changed) => changed,
            Err(e) => {
                ask(TaskAction::Event(TaskEvent::new("Template", format!("Template failed: {e}"))));
                return;
            }
        };
        *env.lock() = set.env_additions();
        let templates: Vec<_> = changed.iter().map(|i| set.template(*i)).collect();
        let delivered = if templates.iter().any(|t| t.change_mode.is_empty() || t.change_mode == "restart") {
            ask(TaskAction::RestartFor("Template with change_mode restart re-rendered".into()))
        } else {
            let signals: BTreeSet<String> =
                templates.iter().filter(|t| t.change_mode == "signal").map(|t| t.change_signal.clone()).collect();
            let mut delivered = true;
            for t in templates.iter().filter(|t| t.change_mode == "script") {
                let why = format!(
                    "Template {} re-rendered: berth does not run change_script yet, the task was left as it is",
                    t.dest_path
                );
                delivered &= ask(TaskAction::Event(TaskEvent::new("Template", why)));
            }
            for signal in signals {
                delivered &= ask(TaskAction::Signal(signal));
            }
            delivered
        };
        if !delivered {
            return;
        }
    }
}
