//! The client's one check scheduler: a single tokio task holds a timer
//! queue of every check of every allocation on the node, runs each probe
//! when its interval comes round (many at once, none on a thread of its
//! own), and hands each outcome to the check's owner. Owners add and
//! remove checks through a cheap handle.

use std::collections::HashMap;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::time::{delay_queue, DelayQueue};

use super::probe::{self, HttpClients, Outcome, Probe};

/// One check to run.
#[derive(Debug, Clone)]
pub struct ScheduledCheck {
    /// Unique on the client (Nomad's check ID).
    pub id: String,
    /// What to probe.
    pub probe: Probe,
    /// Between the end of a run and the next.
    pub interval: Duration,
    /// A run's limit.
    pub timeout: Duration,
}

/// Where a check's outcomes go, with its ID.
pub type Results = mpsc::UnboundedSender<(String, Outcome)>;

enum Command {
    Add(ScheduledCheck, Results),
    Remove(String),
}

/// The handle owners use; cloning is cheap.
#[derive(Clone)]
pub struct CheckScheduler {
    commands: mpsc::UnboundedSender<Command>,
}

impl CheckScheduler {
    /// Starts the scheduler on the current runtime.
    pub fn start() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx, HttpClients::new()));
        CheckScheduler { commands: tx }
    }

    /// Adds (or replaces) a check; its first run is due at once.
    pub fn add(&self, check: ScheduledCheck, results: Results) {
        let _ = self.commands.send(Command::Add(check, results));
    }

    /// Removes a check; an outcome of a run in flight is dropped.
    pub fn remove(&self, id: &str) {
        let _ = self.commands.send(Command::Remove(id.to_string()));
    }
}

struct Entry {
    check: ScheduledCheck,
    results: Results,
    /// Its place in the timer queue; `None` while a run is in flight.
    key: Option<delay_queue::Key>,
    /// Bumped on every replacement, so an outcome of an older version is
    /// dropped.
    generation: u64,
}

async fn run(mut commands: mpsc::UnboundedReceiver<Command>, http: HttpClients) {
    let mut due: DelayQueue<String> = DelayQueue::new();
    let mut checks: HashMap<String, Entry> = HashMap::new();
    let mut in_flight = FuturesUnordered::new();
    let mut generation = 0u64;
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Add(check, results)) => {
                    generation += 1;
                    if let Some(old) = checks.remove(&check.id) {
                        if let Some(key) = old.key {
                            due.remove(&key);
                        }
                    }
                    let key = due.insert(check.id.clone(), Duration::ZERO);
                    checks.insert(check.id.clone(), Entry { check, results, key: Some(key), generation });
                }
                Some(Command::Remove(id)) => {
                    if let Some(key) = checks.remove(&id).and_then(|e| e.key) {
                        due.remove(&key);
                    }
                }
                None => return,
            },
            Some(expired) = due.next() => {
                let id = expired.into_inner();
                let Some(entry) = checks.get_mut(&id) else { continue };
                entry.key = None;
                let (probe, timeout, generation, http) =
                    (entry.check.probe.clone(), entry.check.timeout, entry.generation, http.clone());
                in_flight.push(async move {
                    let outcome = probe::run(&probe, timeout, &http).await;
                    (id, generation, outcome)
                });
            }
            Some((id, generation, outcome)) = in_flight.next() => {
                let Some(entry) = checks.get_mut(&id) else { continue };
                if entry.generation != generation {
                    continue;
                }
                if entry.results.send((id.clone(), outcome)).is_err() {
                    checks.remove(&id);
                    continue;
                }
                entry.key = Some(due.insert(id, entry.check.interval));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structs::check_status;

    #[tokio::test]
    async fn checks_run_every_interval_until_removed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                drop(conn);
            }
        });
        let scheduler = CheckScheduler::start();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let check = |id: &str| ScheduledCheck {
            id: id.into(),
            probe: Probe::Tcp { addr: addr.clone() },
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(1),
        };
        scheduler.add(check("a"), tx.clone());
        scheduler.add(check("b"), tx.clone());
        let mut seen = HashMap::<String, u32>::new();
        while seen.values().all(|n| *n < 3) || seen.len() < 2 {
            let (id, outcome) = rx.recv().await.unwrap();
            assert_eq!(outcome.status, check_status::SUCCESS);
            *seen.entry(id).or_default() += 1;
        }
        scheduler.remove("a");
        scheduler.remove("b");
        // What was in flight may still land; then nothing more.
        tokio::time::sleep(Duration::from_millis(120)).await;
        while rx.try_recv().is_ok() {}
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(rx.try_recv().is_err(), "a removed check keeps running");
    }
}
