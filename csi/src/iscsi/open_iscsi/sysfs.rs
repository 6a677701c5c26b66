//! What the kernel says about iSCSI sessions (sysfs), so that a LUN's
//! device is found without udev's `/dev/disk/by-path` links and a session
//! is found (to log it out) even when its node record or its device is
//! gone.
//!
//! A session is `/sys/class/iscsi_session/session<N>/` (`targetname`),
//! its connection `/sys/class/iscsi_connection/connection<N>:0/`
//! (`persistent_address`, `persistent_port`: the portal it logged in to),
//! its LUNs `session<N>/device/target<H:C:T>/<H:C:T:L>/block/<sdX>`.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// One iSCSI session the kernel holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Session {
    /// The session number (`iscsiadm -m session -r <id>`).
    pub id: u32,
    /// The target.
    pub iqn: String,
    /// The portal address it logged in to, without brackets.
    pub address: String,
    /// The portal port.
    pub port: u16,
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// Every session under `root` (`/` on a host).
pub(super) fn sessions(root: &Path) -> Vec<Session> {
    let class = root.join("sys/class/iscsi_session");
    let Ok(entries) = std::fs::read_dir(&class) else { return Vec::new() };
    let mut found: Vec<Session> = entries
        .flatten()
        .filter_map(|entry| {
            let id: u32 = entry.file_name().to_str()?.strip_prefix("session")?.parse().ok()?;
            let iqn = read(&entry.path().join("targetname"))?;
            let connection = root.join(format!("sys/class/iscsi_connection/connection{id}:0"));
            let address = read(&connection.join("persistent_address")).or_else(|| read(&connection.join("address")))?;
            let port = read(&connection.join("persistent_port"))
                .or_else(|| read(&connection.join("port")))
                .and_then(|p| p.parse().ok())?;
            Some(Session { id, iqn, address, port })
        })
        .collect();
    found.sort_by_key(|s| s.id);
    found
}

/// `host:port` of a portal as given (`10.0.0.5:3260`, `[fd00::5]:3260`,
/// `nas.lan:3260`), the host without brackets.
pub(super) fn split_portal(portal: &str) -> (String, u16) {
    match portal.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() && (!host.contains(':') || host.starts_with('[')) => {
            (host.trim_start_matches('[').trim_end_matches(']').to_owned(), port.parse().unwrap_or(3260))
        }
        _ => (portal.trim_start_matches('[').trim_end_matches(']').to_owned(), 3260),
    }
}

/// Whether `session` is to `iqn` through `portal` (a host name matches
/// the addresses it resolves to).
pub(super) fn matches(session: &Session, iqn: &str, portal: &str) -> bool {
    if session.iqn != iqn {
        return false;
    }
    let (host, port) = split_portal(portal);
    if session.port != port {
        return false;
    }
    match (host.parse::<IpAddr>(), session.address.parse::<IpAddr>()) {
        (Ok(wanted), Ok(have)) => wanted == have,
        (Err(_), Ok(have)) => {
            (host.as_str(), port).to_socket_addrs().is_ok_and(|mut addrs| addrs.any(|a| a.ip() == have))
        }
        _ => session.address == host,
    }
}

/// The session to `iqn` through `portal`, if the kernel holds one.
pub(super) fn session(root: &Path, iqn: &str, portal: &str) -> Option<Session> {
    sessions(root).into_iter().find(|s| matches(s, iqn, portal))
}

/// Every block device of session `id` (`<root>/dev/sdX`).
pub(super) fn session_devices(root: &Path, id: u32) -> Vec<PathBuf> {
    let device = root.join(format!("sys/class/iscsi_session/session{id}/device"));
    let units = std::fs::read_dir(&device)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|t| t.file_name().to_string_lossy().starts_with("target"));
    units
        .flat_map(|target| std::fs::read_dir(target.path()).into_iter().flatten().flatten())
        .flat_map(|unit| std::fs::read_dir(unit.path().join("block")).into_iter().flatten().flatten())
        .map(|block| root.join("dev").join(block.file_name()))
        .collect()
}

/// The block device of LUN `lun` in session `id` (`<root>/dev/sdX`).
pub(super) fn lun_device(root: &Path, id: u32, lun: u32) -> Option<PathBuf> {
    let device = root.join(format!("sys/class/iscsi_session/session{id}/device"));
    for target in std::fs::read_dir(&device).ok()?.flatten() {
        if !target.file_name().to_string_lossy().starts_with("target") {
            continue;
        }
        for unit in std::fs::read_dir(target.path()).ok()?.flatten() {
            let name = unit.file_name().to_string_lossy().into_owned();
            if name.rsplit(':').next().and_then(|l| l.parse::<u32>().ok()) != Some(lun)
                || name.matches(':').count() != 3
            {
                continue;
            }
            let block = std::fs::read_dir(unit.path().join("block")).ok()?.flatten().next()?;
            return Some(root.join("dev").join(block.file_name()));
        }
    }
    None
}

/// `/dev/disk/by-path` name udev gives LUN `lun` of `iqn` through
/// `portal`: `ip-<address>:<port>-iscsi-<iqn>-lun-<lun>`, an IPv6 address
/// without brackets (udev takes the kernel's `persistent_address`).
pub(super) fn by_path_name(portal: &str, iqn: &str, lun: u32) -> String {
    let (host, port) = split_portal(portal);
    format!("ip-{host}:{port}-iscsi-{iqn}-lun-{lun}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_path_names_for_ipv4_and_ipv6_portals() {
        let iqn = "iqn.2000-01.com.synology:nas.pvc-1";
        assert_eq!(by_path_name("10.0.0.5:3260", iqn, 1), format!("ip-10.0.0.5:3260-iscsi-{iqn}-lun-1"));
        assert_eq!(by_path_name("[fd00::5]:3261", iqn, 2), format!("ip-fd00::5:3261-iscsi-{iqn}-lun-2"));
        assert_eq!(split_portal("[fd00::5]:3260"), ("fd00::5".to_owned(), 3260));
        assert_eq!(split_portal("nas.lan:3260"), ("nas.lan".to_owned(), 3260));
    }

    #[test]
    fn sessions_and_their_luns_are_read_from_sysfs() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let session = r.join("sys/class/iscsi_session/session3");
        std::fs::create_dir_all(session.join("device/target2:0:0/2:0:0:1/block/sdc")).unwrap();
        std::fs::create_dir_all(session.join("device/target2:0:0/2:0:0:0/block/sdb")).unwrap();
        std::fs::write(session.join("targetname"), "iqn.x:a\n").unwrap();
        let connection = r.join("sys/class/iscsi_connection/connection3:0");
        std::fs::create_dir_all(&connection).unwrap();
        std::fs::write(connection.join("persistent_address"), "fd00::5\n").unwrap();
        std::fs::write(connection.join("persistent_port"), "3260\n").unwrap();
        let found = session_of(r);
        assert_eq!(found, Some(Session { id: 3, iqn: "iqn.x:a".into(), address: "fd00::5".into(), port: 3260 }));
        assert_eq!(lun_device(r, 3, 1), Some(r.join("dev/sdc")));
        assert_eq!(lun_device(r, 3, 7), None);
        assert!(super::session(r, "iqn.x:a", "[fd00::5]:3261").is_none());
        assert!(super::session(r, "iqn.x:b", "[fd00::5]:3260").is_none());
    }

    fn session_of(root: &Path) -> Option<Session> {
        super::session(root, "iqn.x:a", "[fd00:0::5]:3260")
    }
}
