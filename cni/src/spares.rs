//! Spare network namespaces, made ahead of need. Creating a namespace is
//! the largest single cost of an allocation's network (the kernel runs
//! every subsystem's per-namespace set-up, about a millisecond), so a
//! background thread keeps a few fresh, empty ones ready and an
//! allocation's namespace is one of them, bind-mounted under its name.
//!
//! A spare is made only once no namespace has been taken for a few
//! milliseconds: making one contends for the kernel's locks with the
//! set-up that just took one, so it waits for that to finish.
//!
//! Each spare comes with a route netlink socket opened inside it, so the
//! set-up that takes it configures the namespace without a thread that
//! enters it.
//!
//! Spares are held by open file descriptors only: nothing is mounted, so
//! nothing is left behind when the process ends. The thread returns to
//! the namespace it started in after making each one, so it never keeps a
//! handed-out namespace alive.

use std::fs::File;
use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::sched::{setns, unshare, CloneFlags};

/// How many spares are kept ready.
const KEEP: usize = 2;
/// How long after the last take the thread waits before making one.
const QUIET: Duration = Duration::from_millis(5);

/// A fresh namespace and, when it could be opened, a route netlink
/// socket that lives in it.
pub(crate) struct Spare {
    /// The namespace file.
    pub ns: File,
    /// A `NETLINK_ROUTE` socket created inside it.
    pub route: Option<netlink_sys::Socket>,
}

#[derive(Default)]
struct State {
    ready: Vec<Spare>,
    last_take: Option<Instant>,
    stopped: bool,
    /// The last attempt failed (no permission, say): stop trying.
    broken: bool,
}

/// The spares of one network and their maker thread (stopped on drop).
pub(crate) struct Spares {
    shared: Arc<(Mutex<State>, Condvar)>,
}

impl Spares {
    /// Starts the maker thread in the caller's network namespace.
    pub fn start() -> Spares {
        let shared: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let theirs = shared.clone();
        let started = std::thread::Builder::new().name("berth-netns-spares".into()).spawn(move || make(&theirs));
        if started.is_err() {
            shared.0.lock().unwrap_or_else(|e| e.into_inner()).broken = true;
        }
        Spares { shared }
    }

    /// A fresh namespace, if one is ready; the thread makes another.
    pub fn take(&self) -> Option<Spare> {
        let (lock, cv) = &*self.shared;
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        s.last_take = Some(Instant::now());
        let spare = s.ready.pop();
        cv.notify_all();
        spare
    }

    /// Resolves once the spares are all made again (or cannot be).
    pub async fn full(&self) {
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let (lock, cv) = &*shared;
            let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            let _done = cv.wait_while(guard, |s| s.ready.len() < KEEP && !s.broken && !s.stopped);
        })
        .await;
    }
}

impl Drop for Spares {
    fn drop(&mut self) {
        let (lock, cv) = &*self.shared;
        lock.lock().unwrap_or_else(|e| e.into_inner()).stopped = true;
        cv.notify_all();
    }
}

/// One new namespace, made on this thread, which then goes back to `home`.
fn one(home: &File) -> nix::Result<Spare> {
    unshare(CloneFlags::CLONE_NEWNET)?;
    let made = File::open("/proc/thread-self/ns/net").map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(0)));
    // Without it the taker opens one itself; not a reason to stop.
    let route = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE).ok();
    setns(home.as_fd(), CloneFlags::CLONE_NEWNET)?;
    Ok(Spare { ns: made?, route })
}

fn make(shared: &(Mutex<State>, Condvar)) {
    let (lock, cv) = shared;
    let home = match File::open("/proc/thread-self/ns/net") {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(error = %e, "no spare network namespaces");
            lock.lock().unwrap_or_else(|e| e.into_inner()).broken = true;
            cv.notify_all();
            return;
        }
    };
    loop {
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if s.stopped {
                return;
            }
            let quiet = s.last_take.map(|t| QUIET.saturating_sub(t.elapsed())).unwrap_or_default();
            if s.ready.len() >= KEEP {
                s = cv.wait(s).unwrap_or_else(|e| e.into_inner());
            } else if !quiet.is_zero() {
                s = cv.wait_timeout(s, quiet).unwrap_or_else(|e| e.into_inner()).0;
            } else {
                break;
            }
        }
        drop(s);
        let made = one(&home);
        let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
        match made {
            Ok(f) => s.ready.push(f),
            Err(e) => {
                tracing::debug!(error = %e, "no spare network namespaces; each is made when needed");
                s.broken = true;
                cv.notify_all();
                return;
            }
        }
        cv.notify_all();
    }
}
