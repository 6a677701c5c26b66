//! Requests to running tasks from the API (`alloc signal`, `alloc
//! restart`): what is asked, how it travels (client → alloc runner → task
//! runner, each answering on a one-shot channel), and how it can fail.

use tokio::sync::oneshot;

use super::driver::DriverError;

/// What is asked of a task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskAction {
    /// Send this signal ("SIGUSR1", "HUP").
    Signal(String),
    /// Stop the task and start it again in place, outside its restart
    /// policy.
    Restart,
    /// The same, because of what the client saw (a check's
    /// `check_restart`, a template re-rendered); says what.
    RestartFor(String),
    /// Record this event in the task's state (the allocation's health).
    Event(crate::structs::TaskEvent),
}

/// The answer to one request.
pub type ControlReply = oneshot::Sender<Result<(), ControlError>>;

/// Hands requests to an allocation's tasks (for a hook that acts on them);
/// false once the allocation's runner is gone.
pub type TaskRequester = std::sync::Arc<dyn Fn(String, TaskAction, ControlReply) -> bool + Send + Sync>;

/// A request to one task runner.
#[derive(Debug)]
pub struct TaskControl {
    /// What to do.
    pub action: TaskAction,
    /// Where the outcome goes.
    pub reply: ControlReply,
}

/// Why a request to a task could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The allocation does not run on this client.
    #[error("Unknown allocation {0:?}")]
    UnknownAlloc(String),
    /// The allocation's group has no such task.
    #[error("Unknown task name {0:?}")]
    UnknownTask(String),
    /// The task (or, for a whole allocation, every task) is not running.
    #[error("Task not running")]
    NotRunning,
    /// The driver refused or failed.
    #[error(transparent)]
    Driver(#[from] DriverError),
}

impl ControlError {
    /// True when the request itself is at fault (not the client): an
    /// unknown name, a task that is not running, a bad signal.
    pub fn is_bad_request(&self) -> bool {
        matches!(self, ControlError::NotRunning | ControlError::Driver(DriverError::Config { .. }))
    }

    /// True when what was named does not exist here.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ControlError::UnknownAlloc(_) | ControlError::UnknownTask(_))
    }
}

/// Waits for the answers of several task runners: success when at least
/// one carried the request out and none failed for another reason than
/// not running.
pub async fn gather(replies: Vec<oneshot::Receiver<Result<(), ControlError>>>) -> Result<(), ControlError> {
    let mut done = false;
    for r in replies {
        match r.await.unwrap_or(Err(ControlError::NotRunning)) {
            Ok(()) => done = true,
            Err(ControlError::NotRunning) => {}
            Err(e) => return Err(e),
        }
    }
    if done {
        Ok(())
    } else {
        Err(ControlError::NotRunning)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gather_needs_one_success_and_no_real_failure() {
        let answer = |r: Result<(), ControlError>| {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(r);
            rx
        };
        assert!(gather(vec![answer(Err(ControlError::NotRunning)), answer(Ok(()))]).await.is_ok());
        assert!(matches!(gather(vec![answer(Err(ControlError::NotRunning))]).await, Err(ControlError::NotRunning)));
        assert!(matches!(gather(vec![]).await, Err(ControlError::NotRunning)));
        // A runner that ended drops its reply: not running.
        let (tx, rx) = oneshot::channel::<Result<(), ControlError>>();
        drop(tx);
        assert!(matches!(gather(vec![rx]).await, Err(ControlError::NotRunning)));
        let bad = DriverError::Config { driver: "raw_exec", reason: "unknown signal \"SIGNOPE\"".into() };
        let e = gather(vec![answer(Ok(())), answer(Err(bad.into()))]).await.unwrap_err();
        assert!(e.is_bad_request(), "{e}");
    }
}
