//! Named network namespaces, kept alive by a bind mount of their nsfs file
//! under a runtime directory (`/run/netns` by default, so `ip netns` lists
//! them): created fresh, or adopted from a running process (a pause
//! container's `/proc/<pid>/ns/net`). Work inside a namespace runs on a
//! short-lived thread that joined it, so no other thread ever changes
//! namespace.

use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, IntoRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::{io_err, NetError, Result};

/// Where `ip netns` keeps its namespaces.
pub const DEFAULT_RUN_DIR: &str = "/run/netns";

const NSFS_MAGIC: i64 = 0x6e73_6673;

/// A named network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetNs {
    path: PathBuf,
}

fn nix_io(op: String) -> impl FnOnce(nix::Error) -> NetError {
    move |e| NetError::Io { op, source: std::io::Error::from(e) }
}

/// True if `path` is a mounted namespace file.
fn is_nsfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).map(|s| s.filesystem_type().0 == NSFS_MAGIC).unwrap_or(false)
}

impl NetNs {
    /// The namespace file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the namespace `name` under `dir` if it exists.
    pub fn open(dir: &Path, name: &str) -> Option<NetNs> {
        let path = dir.join(name);
        is_nsfs(&path).then_some(NetNs { path })
    }

    /// Refers to a namespace file that exists elsewhere (a process's
    /// `/proc/<pid>/ns/net`, say) without taking ownership.
    pub fn at(path: impl Into<PathBuf>) -> NetNs {
        NetNs { path: path.into() }
    }

    /// Creates `name` under `dir` as a new, empty namespace; an existing one
    /// of that name is returned as is.
    pub fn create(dir: &Path, name: &str) -> Result<NetNs> {
        if let Some(ns) = Self::open(dir, name) {
            return Ok(ns);
        }
        let target = Self::mount_point(dir, name)?;
        let bind = target.clone();
        let made = std::thread::scope(|s| {
            s.spawn(move || -> Result<()> {
                unshare(CloneFlags::CLONE_NEWNET).map_err(nix_io("creating a network namespace".into()))?;
                bind_mount(Path::new("/proc/thread-self/ns/net"), &bind)
            })
            .join()
            .unwrap_or_else(|_| Err(NetError::Config("network namespace thread panicked".into())))
        });
        if let Err(e) = made {
            let _ = std::fs::remove_file(&target);
            return Err(e);
        }
        Ok(NetNs { path: target })
    }

    /// Makes `name` under `dir` refer to the namespace at `source`,
    /// replacing a mount that refers to a different one.
    pub fn adopt(dir: &Path, name: &str, source: &Path) -> Result<NetNs> {
        if let Some(ns) = Self::open(dir, name) {
            if same_file(&ns.path, source) {
                return Ok(ns);
            }
            Self::delete(dir, name)?;
        }
        let target = Self::mount_point(dir, name)?;
        if let Err(e) = bind_mount(source, &target) {
            let _ = std::fs::remove_file(&target);
            return Err(e);
        }
        Ok(NetNs { path: target })
    }

    /// Unmounts and removes `name` under `dir`; absent is fine. The
    /// namespace itself goes away when nothing else holds it.
    pub fn delete(dir: &Path, name: &str) -> Result<()> {
        let path = dir.join(name);
        match umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(nix_io(format!("unmounting {}", path.display()))(e)),
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(format!("removing {}", path.display()))(e)),
        }
    }

    /// Names under `dir` that start with `prefix`.
    pub fn list(dir: &Path, prefix: &str) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(dir) else { return vec![] };
        rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.starts_with(prefix)).collect()
    }

    /// Runs `f` on a thread inside this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let file = File::open(&self.path).map_err(io_err(format!("opening {}", self.path.display())))?;
        std::thread::scope(|s| {
            s.spawn(move || -> Result<T> {
                setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                    .map_err(nix_io(format!("entering {}", self.path.display())))?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(NetError::Config("network namespace thread panicked".into())))
        })
    }

    /// A netlink handle whose socket lives in this namespace. Needs a tokio
    /// runtime, which drives the connection.
    pub fn netlink(&self) -> Result<rtnetlink::Handle> {
        let socket = self
            .run(|| netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE))?
            .map_err(io_err(format!("opening netlink in {}", self.path.display())))?;
        route_handle(socket)
    }

    fn mount_point(dir: &Path, name: &str) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let target = dir.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&target)
            .map_err(io_err(format!("creating {}", target.display())))?;
        Ok(target)
    }
}

/// A netlink handle over `socket`, a route socket opened in whichever
/// namespace it is to act on (a socket stays in the namespace it was made
/// in). Needs a tokio runtime, which drives the connection.
pub(crate) fn route_handle(socket: netlink_sys::Socket) -> Result<rtnetlink::Handle> {
    socket.set_non_blocking(true).map_err(io_err("making a netlink socket non-blocking"))?;
    // SAFETY: the descriptor comes from `into_raw_fd` of a socket this
    // function owns, so nothing else owns or closes it.
    let socket = unsafe { netlink_sys::TokioSocket::from_raw_fd(socket.into_raw_fd()) };
    let (conn, handle, _) = rtnetlink::from_socket(socket);
    tokio::spawn(conn);
    Ok(handle)
}

fn bind_mount(source: &Path, target: &Path) -> Result<()> {
    mount(Some(source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(nix_io(format!(
        "bind-mounting {} on {}",
        source.display(),
        target.display()
    )))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.ino() == y.ino() && x.dev() == y.dev(),
        _ => false,
    }
}
