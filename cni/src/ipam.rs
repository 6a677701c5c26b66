//! Host-local style address management: one file per handed-out address
//! in `<data dir>/<network>/`, named by the address and holding
//! `<id>\r\n<ifname>`, created with `O_EXCL` under an `flock`ed `lock`
//! file, with `last_reserved_ip.0` for round-robin. The layout is the
//! reference plugin's, so the store survives restarts and `ls` shows who
//! holds what. The agent keeps the holders in memory and writes through.
//!
//! One difference: reserving again for an ID that already holds an address
//! returns that address instead of failing, which makes re-adoption after
//! an agent restart idempotent.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use ipnet::Ipv4Net;
use nix::fcntl::{Flock, FlockArg};

use crate::{io_err, NetError, Result};

const LAST_RESERVED: &str = "last_reserved_ip.0";

/// The address store of one network. Every store of one directory in this
/// process shares one in-memory copy of the holders, read from the
/// directory when the first one opens it, so lookups read no files. The
/// directory belongs to one agent: another process writing to it is not
/// seen (the `flock` and `O_EXCL` still keep it from handing out an
/// address twice).
#[derive(Debug, Clone)]
pub struct Ipam {
    dir: PathBuf,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    known: Arc<Mutex<Known>>,
}

/// The holders, as read at open and kept up to date since, and the
/// store's lock and round-robin files, kept open.
#[derive(Debug, Default)]
struct Known {
    holders: BTreeMap<Ipv4Addr, String>,
    last: Option<Ipv4Addr>,
    files: Option<(File, File)>,
}

/// The shared copies, by directory.
static OPEN: LazyLock<Mutex<HashMap<PathBuf, Weak<Mutex<Known>>>>> = LazyLock::new(Default::default);

impl Ipam {
    /// Opens (creating) the store for `subnet` in `dir`. The gateway is the
    /// subnet's first address and is never handed out.
    pub fn new(dir: impl Into<PathBuf>, subnet: Ipv4Net) -> Result<Ipam> {
        let dir = dir.into();
        if subnet.prefix_len() > 30 {
            return Err(NetError::Config(format!("subnet {subnet} is too small")));
        }
        if subnet.network() != subnet.addr() {
            return Err(NetError::Config(format!(
                "subnet {subnet} is not a network address (did you mean {}?)",
                subnet.trunc()
            )));
        }
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let gateway = Ipv4Addr::from(u32::from(subnet.network()) + 1);
        let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, k| k.strong_count() > 0);
        let known = match open.get(&dir).and_then(Weak::upgrade) {
            Some(k) => k,
            None => {
                let last = std::fs::read_to_string(dir.join(LAST_RESERVED)).ok().and_then(|s| s.trim().parse().ok());
                let k = Arc::new(Mutex::new(Known { holders: read_holders(&dir), last, files: None }));
                open.insert(dir.clone(), Arc::downgrade(&k));
                k
            }
        };
        Ok(Ipam { dir, subnet, gateway, known })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The gateway address (never handed out).
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The managed subnet.
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// Takes the store's `flock` (the lock file is opened once).
    fn lock(&self, known: &mut Known) -> Result<Flock<File>> {
        let path = self.dir.join("lock");
        let (lock, _) = self.files(known)?;
        let f = lock.try_clone().map_err(io_err(format!("opening {}", path.display())))?;
        Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err(format!("locking {}", path.display()))(std::io::Error::from(e)))
    }

    /// The lock file and the round-robin file, opened on first use.
    fn files<'k>(&self, known: &'k mut Known) -> Result<&'k (File, File)> {
        if known.files.is_none() {
            let open = |name: &str| {
                let path = self.dir.join(name);
                OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(io_err(format!("opening {}", path.display())))
            };
            known.files = Some((open("lock")?, open(LAST_RESERVED)?));
        }
        Ok(known.files.as_ref().expect("just opened"))
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every handed-out address and the ID holding it.
    pub fn holders(&self) -> Vec<(Ipv4Addr, String)> {
        self.known().holders.iter().map(|(ip, id)| (*ip, id.clone())).collect()
    }

    /// How many addresses are handed out.
    pub fn handed_out(&self) -> usize {
        self.known().holders.len()
    }

    /// The address `id` holds, if any.
    pub fn lookup(&self, id: &str) -> Option<Ipv4Addr> {
        self.known().holders.iter().find(|(_, h)| *h == id).map(|(ip, _)| *ip)
    }

    /// Hands out an address to `id` (its existing one if it has one).
    pub fn reserve(&self, id: &str, ifname: &str) -> Result<Ipv4Addr> {
        let mut known = self.known();
        let _lock = self.lock(&mut known)?;
        if let Some((ip, _)) = known.holders.iter().find(|(_, h)| *h == id) {
            return Ok(*ip);
        }
        let first = u32::from(self.subnet.network()) + 1;
        let last = u32::from(self.subnet.broadcast()) - 1;
        let start = known
            .last
            .map(u32::from)
            .filter(|ip| (first..=last).contains(ip))
            .map(|ip| if ip == last { first } else { ip + 1 })
            .unwrap_or(first);
        let size = last - first + 1;
        for step in 0..size {
            let ip = Ipv4Addr::from(first + (start - first + step) % size);
            if ip == self.gateway || known.holders.contains_key(&ip) {
                continue;
            }
            let path = self.dir.join(ip.to_string());
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(format!("{id}\r\n{ifname}").as_bytes())
                        .map_err(io_err(format!("writing {}", path.display())))?;
                    let (_, round_robin) = self.files(&mut known)?;
                    round_robin
                        .set_len(0)
                        .and_then(|()| round_robin.write_all_at(ip.to_string().as_bytes(), 0))
                        .map_err(io_err("recording the last reserved address"))?;
                    known.holders.insert(ip, id.to_string());
                    known.last = Some(ip);
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err(format!("creating {}", path.display()))(e)),
            }
        }
        Err(NetError::Ipam(format!("no free address left in {}", self.subnet)))
    }

    /// Frees what `id` holds; returns the freed address.
    pub fn release(&self, id: &str) -> Result<Option<Ipv4Addr>> {
        let mut known = self.known();
        let _lock = self.lock(&mut known)?;
        let held: Vec<Ipv4Addr> = known.holders.iter().filter(|(_, h)| *h == id).map(|(ip, _)| *ip).collect();
        for ip in &held {
            let path = self.dir.join(ip.to_string());
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(format!("removing {}", path.display()))(e)),
            }
            known.holders.remove(ip);
        }
        Ok(held.first().copied())
    }
}

fn read_holders(dir: &Path) -> BTreeMap<Ipv4Addr, String> {
    let Ok(rd) = std::fs::read_dir(dir) else { return BTreeMap::new() };
    rd.filter_map(|e| {
        let e = e.ok()?;
        let ip: Ipv4Addr = e.file_name().to_str()?.parse().ok()?;
        let content = std::fs::read_to_string(e.path()).ok()?;
        let id = content.split("\r\n").next()?.trim().to_string();
        Some((ip, id))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(subnet: &str) -> (tempfile::TempDir, Ipam) {
        let d = tempfile::tempdir().unwrap();
        let ipam = Ipam::new(d.path().join("net"), subnet.parse().unwrap()).unwrap();
        (d, ipam)
    }

    #[test]
    fn hands_out_round_robin_skipping_the_gateway_and_persists_in_host_local_layout() {
        let (_d, ipam) = store("10.9.0.0/29");
        let a = ipam.reserve("a", "eth0").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(std::fs::read(ipam.dir().join("10.9.0.2")).unwrap(), b"a\r\neth0");
        assert_eq!(ipam.reserve("a", "eth0").unwrap(), a, "same id, same address");
        ipam.release("a").unwrap();
        // Round robin: the freed address is not reused first.
        assert_eq!(ipam.reserve("b", "eth0").unwrap(), Ipv4Addr::new(10, 9, 0, 3));
        let dir = ipam.dir().to_path_buf();
        drop(ipam);
        let reopened = Ipam::new(&dir, "10.9.0.0/29".parse().unwrap()).unwrap();
        assert_eq!(reopened.lookup("b"), Some(Ipv4Addr::new(10, 9, 0, 3)), "read back from the files");
    }

    #[test]
    fn exhaustion_is_an_error_and_release_frees() {
        let (_d, ipam) = store("10.9.0.0/29");
        // .1 is the gateway, .7 the broadcast: .2 to .6 are usable.
        let got: Vec<_> = (0..5).map(|i| ipam.reserve(&format!("id{i}"), "eth0").unwrap()).collect();
        assert_eq!(got.len(), 5);
        let err = ipam.reserve("six", "eth0").unwrap_err().to_string();
        assert!(err.contains("no free address left in 10.9.0.0/29"), "{err}");
        assert_eq!(ipam.release("id2").unwrap(), Some(got[2]));
        assert_eq!(ipam.reserve("six", "eth0").unwrap(), got[2]);
        assert_eq!(ipam.release("nobody").unwrap(), None);
    }

    #[test]
    fn concurrent_reservations_never_share_an_address() {
        let (_d, ipam) = store("10.9.0.0/24");
        let ips: Vec<Ipv4Addr> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|t| {
                    let ipam = ipam.clone();
                    s.spawn(move || {
                        (0..25).map(|i| ipam.reserve(&format!("t{t}-{i}"), "eth0").unwrap()).collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let unique: std::collections::BTreeSet<_> = ips.iter().collect();
        assert_eq!(unique.len(), 200);
    }

    #[test]
    fn stores_of_one_directory_share_their_holders() {
        let (_d, ipam) = store("10.9.0.0/29");
        let other = Ipam::new(ipam.dir(), "10.9.0.0/29".parse().unwrap()).unwrap();
        assert_eq!(ipam.lookup("x"), None);
        let ip = other.reserve("x", "eth0").unwrap();
        assert_eq!(ipam.lookup("x"), Some(ip));
        assert_ne!(ipam.reserve("y", "eth0").unwrap(), ip);
        other.release("x").unwrap();
        assert_eq!(ipam.lookup("x"), None);
    }

    #[test]
    fn rejects_bad_subnets() {
        let d = tempfile::tempdir().unwrap();
        assert!(Ipam::new(d.path(), "10.0.0.0/31".parse().unwrap()).is_err());
        let e = Ipam::new(d.path(), "10.0.0.5/24".parse().unwrap()).unwrap_err().to_string();
        assert!(e.contains("did you mean 10.0.0.0/24"), "{e}");
    }
}
