//! iSCSI volumes on the node: attach a LUN as a local block device, and the
//! CSI Node service that stages, publishes and detaches such volumes for
//! any controller that answers with democratic-csi's iSCSI volume context
//! (`node_attach_driver=iscsi`, `iqn`, `lun`, `portal`, `portals`).
//!
//! * [`command`]: the narrow OS boundary: a [`Runner`] that runs one
//!   program, with secret arguments never printed.
//! * `open_iscsi`: the kernel initiator through `iscsiadm` (discovery,
//!   node records with explicit settings, CHAP, login, by-path device,
//!   multipath; and all of it undone on detach).
//! * `userspace`: libiscsi through `qemu-storage-daemon`'s FUSE export and
//!   a loop device, for kernels without `iscsi_tcp`.
//! * `node`: [`IscsiNode`], the CSI Node service over either attacher.
//!
//! What an attach made is returned as an [`Attachment`] and stored by the
//! node service, so a detach (also after a restart) undoes exactly that.

pub mod command;
mod node;
mod open_iscsi;
mod userspace;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use command::{Cmd, CmdOutput, HostRunner, Runner};
pub use node::IscsiNode;
pub use open_iscsi::OpenIscsi;
pub use userspace::Userspace;

/// The iSCSI port a portal without one uses.
pub const DEFAULT_PORT: u16 = 3260;

/// Failures of attaching or detaching an iSCSI LUN, each naming the target.
#[derive(Debug, thiserror::Error)]
pub enum IscsiError {
    /// The volume context does not describe an iSCSI LUN.
    #[error("volume context: {0}")]
    Context(String),
    /// A program could not be run.
    #[error("{command}: could not run: {source}")]
    Spawn {
        /// The command line, secrets redacted.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A program failed.
    #[error("{command} exited with {code}: {stderr}")]
    Failed {
        /// The command line, secrets redacted.
        command: String,
        /// Its exit code (-1: killed by a signal or the timeout).
        code: i32,
        /// What it printed on stderr.
        stderr: String,
    },
    /// The portal answered discovery without the target.
    #[error(
        "portal {portal} does not offer target {iqn} to this initiator (it offers: {offered}): the target was \
         deleted, or its access list does not admit this initiator"
    )]
    NotOffered {
        /// The portal asked.
        portal: String,
        /// The target wanted.
        iqn: String,
        /// The targets it listed.
        offered: String,
    },
    /// The device of a logged-in LUN did not appear.
    #[error("{what} did not appear within {waited:?}{hint}")]
    NoDevice {
        /// The device path or multipath map waited for.
        what: String,
        /// How long was waited.
        waited: Duration,
        /// What to check, when known (starts with "; ").
        hint: String,
    },
    /// Logging in to a target failed (after retries, when retrying could help).
    #[error("login to {iqn} at portal {portal} failed after {attempts} attempt(s) in {waited:?}: {reason}{detail}")]
    Login {
        /// The portal.
        portal: String,
        /// The target.
        iqn: String,
        /// Why, in words (CHAP refused, target refused, no answer, …).
        reason: LoginFailure,
        /// What iscsiadm said (starts with ": ").
        detail: String,
        /// Attempts made.
        attempts: u32,
        /// Time spent.
        waited: Duration,
    },
    /// iscsid could not be reached (not running, or restarting too long).
    #[error("{command}: iscsid does not answer (is it running? systemctl start iscsid): {stderr}")]
    Iscsid {
        /// The command line, secrets redacted.
        command: String,
        /// What iscsiadm said.
        stderr: String,
    },
    /// A step did not finish before the caller's deadline.
    #[error("{step}: not done before the deadline ({waited:?}): {last}")]
    Deadline {
        /// What was being done.
        step: String,
        /// Time spent on it.
        waited: Duration,
        /// The last failure seen.
        last: String,
    },
    /// A file of the attachment could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl IscsiError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}

/// Why a login failed, as iscsiadm's exit code tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginFailure {
    /// CHAP credentials refused (exit 24).
    Chap,
    /// The target refused the initiator: unknown target, initiator ACL, or
    /// its session limit (exit 19).
    Refused,
    /// As `Refused`, with mutual CHAP configured: the kernel reports a
    /// target whose secret does not match the same way.
    RefusedMutualChap,
    /// The kernel has no iSCSI transport (exit 12).
    NoTransport,
    /// The portal did not answer, or answered with transient errors, until
    /// the deadline.
    NoAnswer,
}

impl fmt::Display for LoginFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Chap => {
                "CHAP authentication failed: check the CHAP user and secret \
                 (node-db.node.session.auth.username/password, and username_in/password_in for mutual CHAP)"
            }
            Self::Refused => {
                "the target refused this initiator (no such target on the portal, the target's initiator ACL, or \
                 its session limit: another node may still be logged in)"
            }
            Self::RefusedMutualChap => {
                "the login was refused: with mutual CHAP the usual cause is the target's user or secret not \
                 matching node-db.node.session.auth.username_in/password_in (else: no such target, the target's \
                 initiator ACL, or its session limit)"
            }
            Self::NoTransport => "the kernel has no iSCSI TCP transport (modprobe iscsi_tcp)",
            Self::NoAnswer => "the portal did not accept a login",
        })
    }
}

/// When a step must be done by: the caller's deadline for an attach or
/// detach, so that no single try (a login, a device wait) outlives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline(Instant);

impl Deadline {
    /// `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        Self(Instant::now() + timeout)
    }

    /// Time left (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Whether it has passed.
    pub fn passed(&self) -> bool {
        self.remaining().is_zero()
    }

    /// The earlier of this deadline and `timeout` from now.
    pub fn within(&self, timeout: Duration) -> Self {
        Self(self.0.min(Instant::now() + timeout))
    }

    /// This deadline moved earlier by `share` of the time left, at most
    /// `cap`: work that must leave time for its own undo.
    pub fn leaving(&self, share: u32, cap: Duration) -> Self {
        let reserve = (self.remaining() / share).min(cap);
        Self(self.0 - reserve)
    }
}

/// CHAP credentials for a session.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chap {
    /// The initiator's user name.
    pub username: String,
    /// The initiator's secret.
    pub password: String,
    /// For mutual CHAP, the target's user name and secret, which the
    /// initiator checks (`username_in` / `password_in`).
    #[serde(default)]
    pub mutual: Option<(String, String)>,
}

impl fmt::Debug for Chap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chap")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("mutual", &self.mutual.as_ref().map(|(user, _)| (user, "<redacted>")))
            .finish()
    }
}

/// An iSCSI LUN to attach: where, which target, which LUN, how to log in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IscsiTarget {
    /// Portals as `host:port`, de-duplicated, in the order given.
    pub portals: Vec<String>,
    /// The target's IQN.
    pub iqn: String,
    /// The LUN number on the target.
    pub lun: u32,
    /// CHAP, when the target asks for it.
    pub chap: Option<Chap>,
}

impl IscsiTarget {
    /// The target described by a volume context (`portal`, `portals` as a
    /// comma list, `iqn`, `lun`) and the CSI secrets. CHAP comes from the
    /// secrets, as democratic-csi reads them
    /// (`node-db.node.session.auth.username` / `.password`, and for mutual
    /// CHAP `.username_in` / `.password_in`).
    pub fn from_context(
        context: &HashMap<String, String>,
        secrets: &HashMap<String, String>,
    ) -> Result<Self, IscsiError> {
        let driver = context.get("node_attach_driver").map(String::as_str).unwrap_or("iscsi");
        if driver != "iscsi" {
            return Err(IscsiError::Context(format!("node_attach_driver is {driver:?}, not \"iscsi\"")));
        }
        let iqn =
            context.get("iqn").filter(|v| !v.is_empty()).ok_or_else(|| IscsiError::Context("iqn is missing".into()))?;
        let lun = context.get("lun").ok_or_else(|| IscsiError::Context("lun is missing".into()))?;
        let lun = lun.parse().map_err(|_| IscsiError::Context(format!("lun {lun:?} is not a LUN number")))?;
        let mut portals: Vec<String> = Vec::new();
        let listed = context.get("portal").into_iter().chain(context.get("portals"));
        for portal in listed.flat_map(|v| v.split(',')).map(str::trim).filter(|p| !p.is_empty()) {
            let portal = with_port(portal);
            if !portals.contains(&portal) {
                portals.push(portal);
            }
        }
        if portals.is_empty() {
            return Err(IscsiError::Context("portal is missing".into()));
        }
        let secret = |key: &str| secrets.get(&format!("node-db.node.session.auth.{key}")).filter(|v| !v.is_empty());
        let mutual = match (secret("username_in"), secret("password_in")) {
            (Some(username), Some(password)) => Some((username.clone(), password.clone())),
            (None, None) => None,
            _ => return Err(IscsiError::Context("mutual CHAP needs both username_in and password_in secrets".into())),
        };
        let chap = match (secret("username"), secret("password")) {
            (Some(username), Some(password)) => {
                Some(Chap { username: username.clone(), password: password.clone(), mutual })
            }
            (None, None) if mutual.is_none() => None,
            (None, None) => {
                return Err(IscsiError::Context("mutual CHAP needs the initiator's username and password too".into()))
            }
            _ => return Err(IscsiError::Context("CHAP needs both a username and a password secret".into())),
        };
        Ok(Self { portals, iqn: iqn.clone(), lun, chap })
    }
}

/// `portal` with the default port added when it has none (IPv6 in brackets).
fn with_port(portal: &str) -> String {
    let has_port = match portal.rsplit_once(':') {
        Some((host, port)) => port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']')),
        None => false,
    };
    if has_port {
        portal.to_owned()
    } else {
        format!("{portal}:{DEFAULT_PORT}")
    }
}

/// What one attach made, kept so that detach undoes exactly that.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The block device to format and mount.
    pub device: PathBuf,
    /// The target's IQN.
    pub iqn: String,
    /// How it was attached.
    pub via: Via,
}

/// The initiator an attachment went through and what it created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// The kernel initiator.
    OpenIscsi {
        /// Portals logged in to (a node record each).
        portals: Vec<String>,
        /// Portals whose sendtargets discovery record berth created
        /// (attachments of earlier versions; berth no longer makes them).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        discovery_created: Vec<String>,
        /// The multipath map, when the device is one.
        multipath: Option<String>,
    },
    /// `qemu-storage-daemon` exporting the LUN through FUSE, on a loop device.
    Userspace {
        /// The directory holding the export file, pid file and secret.
        dir: PathBuf,
        /// The daemon's process ID.
        pid: i32,
    },
}

/// Attaches and detaches iSCSI LUNs. The calls block (they run programs
/// and wait for devices): call them on the blocking pool. Each retries
/// what may pass (a login the portal does not accept yet, iscsid
/// restarting) until `deadline`, and no single try outlives it.
pub trait Attacher: Send + Sync + fmt::Debug {
    /// What an attach of `target` may leave if it is cut short (the
    /// process killed midway), without doing anything: recorded before
    /// the attach starts, so that a detach of it, after a restart, undoes
    /// whatever part was done.
    fn plan(&self, name: &str, target: &IscsiTarget) -> Attachment;
    /// Attaches `target`; `name` (the volume ID) names what is created.
    /// A failed attach undoes what it did.
    fn attach(&self, name: &str, target: &IscsiTarget, deadline: Deadline) -> Result<Attachment, IscsiError>;
    /// Undoes `attachment`; what is already gone is skipped.
    fn detach(&self, attachment: &Attachment, deadline: Deadline) -> Result<(), IscsiError>;
    /// Makes the attached device see a grown LUN.
    fn rescan(&self, attachment: &Attachment, deadline: Deadline) -> Result<(), IscsiError>;
    /// Called before unmounting for a detach: when the NAS no longer has
    /// the target (its portal answers without it), the dead session is
    /// ended at once, failing the I/O that waits for it, so the unmount
    /// cannot hang on data that has nowhere to go. A portal that does not answer is left alone: the
    /// target may come back. Returns whether a vanished target was found.
    fn release_vanished(&self, _attachment: &Attachment, _deadline: Deadline) -> bool {
        false
    }
}

/// Which initiator to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Initiator {
    /// The kernel initiator when the kernel has iSCSI and `iscsiadm` is
    /// installed, else the userspace one.
    #[default]
    Auto,
    /// Always open-iscsi.
    OpenIscsi,
    /// Always the userspace initiator.
    Userspace,
}

impl std::str::FromStr for Initiator {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "auto" => Ok(Self::Auto),
            "open-iscsi" => Ok(Self::OpenIscsi),
            "userspace" => Ok(Self::Userspace),
            other => Err(format!("initiator {other:?} is none of auto, open-iscsi, userspace")),
        }
    }
}

/// Whether the running kernel has module `name` (as `modules.dep` spells
/// it, e.g. `iscsi_tcp`, `dm-multipath`): loaded, built in, or loadable.
pub fn kernel_module(name: &str) -> bool {
    if Path::new("/sys/module").join(name.replace('-', "_")).exists() {
        return true;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let modules = Path::new("/lib/modules").join(release.trim());
    let file = format!("/{name}.ko");
    ["modules.builtin", "modules.dep"]
        .iter()
        .any(|index| std::fs::read_to_string(modules.join(index)).is_ok_and(|text| text.contains(&file)))
}

/// Whether this kernel can run the open-iscsi initiator (`iscsi_tcp`).
pub fn kernel_has_iscsi() -> bool {
    kernel_module("iscsi_tcp")
}

/// Whether the userspace initiator can run here: `qemu-storage-daemon`
/// with its libiscsi block driver (Debian's `qemu-block-extra`).
pub fn userspace_initiator_available() -> bool {
    on_path("qemu-storage-daemon")
        && ["/usr/lib/x86_64-linux-gnu/qemu", "/usr/lib/aarch64-linux-gnu/qemu", "/usr/lib64/qemu", "/usr/lib/qemu"]
            .iter()
            .any(|dir| Path::new(dir).join("block-iscsi.so").exists())
}

/// Whether `program` is on PATH.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

impl Initiator {
    /// The initiator `Auto` stands for on this host.
    pub fn resolve(self) -> Self {
        match self {
            Self::Auto if kernel_has_iscsi() && on_path("iscsiadm") => Self::OpenIscsi,
            Self::Auto => Self::Userspace,
            chosen => chosen,
        }
    }

    /// The attacher for this initiator (resolved first), keeping its files
    /// under `state_dir`. `initiator_name` names the userspace initiator
    /// (the kernel initiator's name is iscsid's); by default it is
    /// [`initiator_name`].
    pub fn attacher(self, state_dir: &Path, initiator_name: Option<String>) -> Box<dyn Attacher> {
        match self.resolve() {
            Self::OpenIscsi => Box::new(OpenIscsi::new(HostRunner::default())),
            _ => {
                let userspace = Userspace::new(HostRunner::default(), state_dir.join("userspace"));
                Box::new(match initiator_name {
                    Some(name) => userspace.named(name),
                    None => userspace,
                })
            }
        }
    }
}

/// The initiator name: open-iscsi's (`/etc/iscsi/initiatorname.iscsi`), or
/// one made from the host name.
pub fn initiator_name() -> String {
    let configured = std::fs::read_to_string("/etc/iscsi/initiatorname.iscsi").ok().and_then(|text| {
        text.lines().find_map(|l| l.trim().strip_prefix("InitiatorName=").map(|n| n.trim().to_owned()))
    });
    configured.filter(|n| !n.is_empty()).unwrap_or_else(|| {
        let host = nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
        let host: String = host.to_lowercase().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        format!("iqn.2026-11.dev.berth:{}", if host.is_empty() { "node" } else { &host })
    })
}

/// A file-name-safe form of a volume ID.
fn file_name(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn reads_democratic_csi_context() {
        let context = map(&[
            ("node_attach_driver", "iscsi"),
            ("portal", "10.0.0.5"),
            ("portals", "10.0.0.5:3260,10.0.1.5:3261,[fd00::5]"),
            ("iqn", "iqn.2000-01.com.synology:nas.pvc-1"),
            ("lun", "1"),
        ]);
        let target = IscsiTarget::from_context(&context, &HashMap::new()).unwrap();
        assert_eq!(target.portals, ["10.0.0.5:3260", "10.0.1.5:3261", "[fd00::5]:3260"]);
        assert_eq!(
            (target.iqn.as_str(), target.lun, target.chap.clone()),
            ("iqn.2000-01.com.synology:nas.pvc-1", 1, None)
        );

        let secrets = map(&[("node-db.node.session.auth.username", "u"), ("node-db.node.session.auth.password", "p")]);
        let chap = IscsiTarget::from_context(&context, &secrets).unwrap().chap.unwrap();
        assert_eq!((chap.username.as_str(), chap.mutual.is_none()), ("u", true));
        assert!(format!("{chap:?}").contains("<redacted>") && !format!("{chap:?}").contains("\"p\""));
        let mut mutual = secrets.clone();
        mutual.insert("node-db.node.session.auth.username_in".into(), "nas".into());
        mutual.insert("node-db.node.session.auth.password_in".into(), "nas-secret".into());
        let chap = IscsiTarget::from_context(&context, &mutual).unwrap().chap.unwrap();
        assert_eq!(chap.mutual.as_ref().map(|(u, _)| u.as_str()), Some("nas"));
        assert!(!format!("{chap:?}").contains("nas-secret"));
        mutual.remove("node-db.node.session.auth.password_in");
        let error = IscsiTarget::from_context(&context, &mutual).unwrap_err().to_string();
        assert!(error.contains("mutual CHAP needs both"), "{error}");

        for (key, message) in [("iqn", "iqn is missing"), ("lun", "lun is missing"), ("portal", "portal is missing")] {
            let mut broken = context.clone();
            broken.remove(key);
            if key == "portal" {
                broken.remove("portals");
            }
            assert!(IscsiTarget::from_context(&broken, &HashMap::new()).unwrap_err().to_string().contains(message));
        }
        let nfs = map(&[("node_attach_driver", "nfs"), ("iqn", "x"), ("lun", "1"), ("portal", "p")]);
        assert!(IscsiTarget::from_context(&nfs, &HashMap::new()).unwrap_err().to_string().contains("\"nfs\""));
    }
}
