//! [`DriverConfig`], the provisioner's configuration: democratic-csi's
//! `synology-iscsi` driver YAML, accepted unchanged.
//!
//! Key policy ("an existing file works unchanged", and typos are caught):
//!
//! * Every key democratic-csi documents for `synology-iscsi` is accepted:
//!   `driver`, `instance_id`, `httpConnection`, `synology`, `iscsi` and their
//!   documented members. `_private` and `node` (democratic-csi's shared
//!   driver/node tuning) are accepted and ignored.
//! * Any other key, at the top level or inside `httpConnection`, `synology`
//!   or `iscsi`, is an error naming the key (serde's "unknown field").
//! * Inside `lunTemplate` and `targetTemplate` democratic-csi forwards any
//!   key to DSM verbatim. Berth applies the keys it knows (listed on
//!   [`LunTemplate`] and [`TargetTemplate`]) and keeps the others, reported
//!   by [`DriverConfig::ignored_template_keys`] so the caller can warn once.
//!
//! The DSM password comes from `httpConnection.password`, else the file named
//! by `httpConnection.passwordFile` (Berth's addition; trailing newline
//! dropped), else the `BERTH_DSM_PASSWORD` environment variable. It is held
//! as a [`Password`], which never shows in `Debug` or logs; CHAP secrets too.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer};

use crate::dsm::{DevAttrib, DsmConfig, LunType, Password};

/// The environment variable the DSM password is read from when the file
/// gives neither `password` nor `passwordFile`.
pub const PASSWORD_ENV: &str = "BERTH_DSM_PASSWORD";

/// The only `driver` value accepted.
pub const DRIVER: &str = "synology-iscsi";

/// Why a driver configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not YAML, or a key or value democratic-csi's schema does not have.
    #[error("driver config: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// A value is out of its allowed set.
    #[error("driver config: {key}: {reason}")]
    Invalid {
        /// The key, dotted (`iscsi.targetTemplate.auth_type`).
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The password file could not be read.
    #[error("driver config: httpConnection.passwordFile {}: {source}", path.display())]
    PasswordFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// democratic-csi's `synology-iscsi` driver configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverConfig {
    /// Must be `synology-iscsi`.
    pub driver: String,
    /// Optional instance id, echoed in the volume context.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// How to reach DSM.
    #[serde(rename = "httpConnection")]
    pub http_connection: HttpConnection,
    /// Which DSM storage volume LUNs live on.
    #[serde(default)]
    pub synology: SynologySection,
    /// Names, portals and templates.
    pub iscsi: IscsiSection,
    /// democratic-csi's private tuning: accepted, ignored.
    #[serde(default, rename = "_private")]
    pub private: Option<serde_yaml::Value>,
    /// democratic-csi's node-side tuning: accepted, ignored.
    #[serde(default)]
    pub node: Option<serde_yaml::Value>,
}

/// `httpConnection`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpConnection {
    /// `http` or `https`.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// NAS host name or address.
    pub host: String,
    /// Port; default 5000 for http, 5001 for https.
    #[serde(default)]
    pub port: Option<u16>,
    /// DSM administrator account.
    pub username: String,
    /// The password, when given inline.
    #[serde(default, deserialize_with = "password")]
    pub password: Option<Password>,
    /// A file holding the password (Berth's addition).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Skip TLS certificate verification.
    #[serde(default)]
    pub allow_insecure: bool,
    /// Login session name.
    #[serde(default)]
    pub session: Option<String>,
    /// One DSM call at a time.
    #[serde(default)]
    pub serialize: bool,
}

impl std::fmt::Debug for HttpConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConnection")
            .field("protocol", &self.protocol)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("password_file", &self.password_file)
            .field("allow_insecure", &self.allow_insecure)
            .field("session", &self.session)
            .field("serialize", &self.serialize)
            .finish()
    }
}

/// `synology`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynologySection {
    /// The storage volume, e.g. `/volume1` (a missing leading `/` is added).
    #[serde(default = "default_volume")]
    pub volume: String,
}

impl Default for SynologySection {
    fn default() -> Self {
        Self { volume: default_volume() }
    }
}

/// `iscsi`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IscsiSection {
    /// The portal nodes log in to, `host[:port]`.
    #[serde(default)]
    pub target_portal: String,
    /// Further portals, for multipath.
    #[serde(default)]
    pub target_portals: Vec<String>,
    /// iSCSI interface for the node (`iscsiadm -I`); empty: default.
    #[serde(default)]
    pub interface: String,
    /// IQN prefix; the IQN is `baseiqn` + LUN name.
    pub baseiqn: String,
    /// Prepended to the volume name.
    #[serde(default)]
    pub name_prefix: String,
    /// Appended to the volume name.
    #[serde(default)]
    pub name_suffix: String,
    /// How LUNs are created.
    #[serde(default)]
    pub lun_template: LunTemplate,
    /// How snapshots are taken.
    #[serde(default)]
    pub lun_snapshot_template: LunSnapshotTemplate,
    /// How targets are created.
    #[serde(default)]
    pub target_template: TargetTemplate,
}

/// `iscsi.lunTemplate`: applied keys `type` (default `BLUN`) and
/// `dev_attribs`; the rest (`description`, `direct_io_pattern`, …) is kept
/// in `other` and not sent.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LunTemplate {
    /// LUN type.
    #[serde(default, rename = "type")]
    pub lun_type: Option<LunType>,
    /// Device attributes.
    #[serde(default)]
    pub dev_attribs: Vec<DevAttrib>,
    /// Keys Berth does not apply.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

/// `iscsi.lunSnapshotTemplate`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LunSnapshotTemplate {
    /// Protect snapshots from DSM's retention.
    #[serde(default)]
    pub is_locked: bool,
    /// Ask for application-consistent snapshots.
    #[serde(default)]
    pub is_app_consistent: bool,
    /// Keys Berth does not apply.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

/// `iscsi.targetTemplate`: applied keys `auth_type` (0 none, 1 CHAP, 2
/// mutual CHAP), `max_sessions` (default 0, unlimited), `user`,
/// `password`, `mutual_user`, `mutual_password`.
#[derive(Clone, Default, Deserialize)]
pub struct TargetTemplate {
    /// 0, 1 or 2.
    #[serde(default)]
    pub auth_type: u8,
    /// Initiators at once; 0 unlimited.
    #[serde(default)]
    pub max_sessions: u32,
    /// CHAP user.
    #[serde(default)]
    pub user: Option<String>,
    /// CHAP secret.
    #[serde(default, deserialize_with = "password")]
    pub password: Option<Password>,
    /// Mutual CHAP user.
    #[serde(default)]
    pub mutual_user: Option<String>,
    /// Mutual CHAP secret.
    #[serde(default, deserialize_with = "password")]
    pub mutual_password: Option<Password>,
    /// Keys Berth does not apply.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_yaml::Value>,
}

impl std::fmt::Debug for TargetTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetTemplate")
            .field("auth_type", &self.auth_type)
            .field("max_sessions", &self.max_sessions)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("mutual_user", &self.mutual_user)
            .field("mutual_password", &self.mutual_password)
            .field("other", &self.other.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn default_protocol() -> String {
    "http".to_owned()
}

fn default_volume() -> String {
    "/volume1".to_owned()
}

fn password<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Password>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.map(Password::new))
}

impl DriverConfig {
    /// Parses and checks a YAML document.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_yaml::from_str(text)?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.driver != DRIVER {
            return Err(ConfigError::Invalid {
                key: "driver",
                reason: format!("{:?} is not supported (only {DRIVER:?})", self.driver),
            });
        }
        if !matches!(self.http_connection.protocol.as_str(), "http" | "https") {
            return Err(ConfigError::Invalid {
                key: "httpConnection.protocol",
                reason: format!("{:?} is neither \"http\" nor \"https\"", self.http_connection.protocol),
            });
        }
        let template = &self.iscsi.target_template;
        // DSM refuses a target whose CHAP user or secret is empty (18990708),
        // so an empty one is caught here rather than at the first CreateVolume.
        let required = |key: &'static str, value: Option<&str>| match value {
            None => Err(ConfigError::Invalid { key, reason: "required by auth_type".to_owned() }),
            Some(v) if v.trim().is_empty() => Err(ConfigError::Invalid {
                key,
                reason: "is empty; DSM refuses an empty CHAP user or secret".to_owned(),
            }),
            Some(_) => Ok(()),
        };
        match template.auth_type {
            0 => {}
            1 | 2 => {
                required("iscsi.targetTemplate.user", template.user.as_deref())?;
                required("iscsi.targetTemplate.password", template.password.as_ref().map(Password::expose))?;
                if template.auth_type == 2 {
                    required("iscsi.targetTemplate.mutual_user", template.mutual_user.as_deref())?;
                    required(
                        "iscsi.targetTemplate.mutual_password",
                        template.mutual_password.as_ref().map(Password::expose),
                    )?;
                }
            }
            other => {
                return Err(ConfigError::Invalid {
                    key: "iscsi.targetTemplate.auth_type",
                    reason: format!("{other} is not 0 (none), 1 (CHAP) or 2 (mutual CHAP)"),
                })
            }
        }
        Ok(())
    }

    /// The storage volume path, with its leading `/`.
    pub fn volume_path(&self) -> String {
        let volume = self.synology.volume.trim();
        if volume.starts_with('/') {
            volume.to_owned()
        } else {
            format!("/{volume}")
        }
    }

    /// Template keys democratic-csi would forward to DSM that Berth does not
    /// apply (dotted), for one warning at start.
    pub fn ignored_template_keys(&self) -> Vec<String> {
        let iscsi = &self.iscsi;
        let keys = |section: &str, other: &BTreeMap<String, serde_yaml::Value>| {
            other.keys().map(|k| format!("iscsi.{section}.{k}")).collect::<Vec<_>>()
        };
        let mut ignored = keys("lunTemplate", &iscsi.lun_template.other);
        ignored.extend(keys("lunSnapshotTemplate", &iscsi.lun_snapshot_template.other));
        ignored.extend(keys("targetTemplate", &iscsi.target_template.other));
        ignored
    }

    /// The DSM client configuration, the password resolved from the file,
    /// the password file or `env(PASSWORD_ENV)` (pass `std::env::var(..).ok()`).
    pub fn dsm_config(&self, env: impl Fn(&str) -> Option<String>) -> Result<DsmConfig, ConfigError> {
        let http = &self.http_connection;
        let password = match (&http.password, &http.password_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "httpConnection.passwordFile",
                    reason: "give either password or passwordFile, not both".to_owned(),
                })
            }
            (Some(password), None) => password.clone(),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::PasswordFile { path: path.clone(), source })?;
                Password::new(text.trim_end_matches(['\n', '\r']))
            }
            (None, None) => Password::new(env(PASSWORD_ENV).ok_or_else(|| ConfigError::Invalid {
                key: "httpConnection.password",
                reason: format!("no password: set password or passwordFile, or the {PASSWORD_ENV} variable"),
            })?),
        };
        let port = http.port.unwrap_or(if http.protocol == "https" { 5001 } else { 5000 });
        let host = if http.host.contains(':') && !http.host.starts_with('[') {
            format!("[{}]", http.host)
        } else {
            http.host.clone()
        };
        let mut config = DsmConfig::new(format!("{}://{host}:{port}", http.protocol), &http.username, password);
        config.insecure = http.allow_insecure;
        config.session_name = http.session.clone();
        if http.serialize {
            config.max_concurrency = 1;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// democratic-csi's `examples/synology-iscsi.yaml`, verbatim.
    const DEMOCRATIC_CSI_EXAMPLE: &str = include_str!("../testdata/democratic-csi-synology-iscsi.yaml");

    #[test]
    fn democratic_csi_example_parses_unchanged() {
        let config = DriverConfig::from_yaml(DEMOCRATIC_CSI_EXAMPLE).unwrap();
        assert_eq!(config.iscsi.lun_template.lun_type, Some(LunType::Blun));
        assert!(config.iscsi.lun_snapshot_template.is_locked && config.iscsi.lun_snapshot_template.is_app_consistent);
        assert_eq!((config.iscsi.target_template.auth_type, config.iscsi.target_template.max_sessions), (0, 0));
        assert_eq!(config.iscsi.baseiqn, "iqn.2000-01.com.synology:csi.");
        assert_eq!(config.volume_path(), "/volume1");
        assert!(config.ignored_template_keys().is_empty());
        let dsm = config.dsm_config(|_| None).unwrap();
        assert_eq!(dsm.base_url, "http://server address:5000");
        assert_eq!((dsm.max_concurrency, dsm.insecure), (1, true));
        assert_eq!(dsm.session_name.as_deref(), Some("democratic-csi"));
        let secret = DEMOCRATIC_CSI_EXAMPLE.replace("password: password", "password: hunter2-x");
        let config = DriverConfig::from_yaml(&secret).unwrap();
        let shown = format!("{config:?} {:?}", config.dsm_config(|_| None).unwrap());
        assert!(!shown.contains("hunter2-x") && shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn unknown_keys_are_named_and_template_extras_reported() {
        let typo = DEMOCRATIC_CSI_EXAMPLE.replace("iscsi:\n", "iscsy: {}\niscsi:\n");
        let err = DriverConfig::from_yaml(&typo).unwrap_err().to_string();
        assert!(err.contains("unknown field `iscsy`"), "{err}");
        let inner = DEMOCRATIC_CSI_EXAMPLE.replace("  serialize: true", "  serialise: true");
        assert!(DriverConfig::from_yaml(&inner).unwrap_err().to_string().contains("`serialise`"));
        let extras = DEMOCRATIC_CSI_EXAMPLE
            .replace("    max_sessions: 0", "    max_sessions: 0\n    has_header_checksum: false")
            .replace("driver: synology-iscsi", "driver: synology-iscsi\ninstance_id: a\n_private: {}\nnode: {}");
        let config = DriverConfig::from_yaml(&extras).unwrap();
        assert_eq!(config.ignored_template_keys(), ["iscsi.targetTemplate.has_header_checksum"]);
        let wrong = DEMOCRATIC_CSI_EXAMPLE.replace("driver: synology-iscsi", "driver: freenas-iscsi");
        assert!(DriverConfig::from_yaml(&wrong).unwrap_err().to_string().contains("freenas-iscsi"));
    }

    #[test]
    fn password_from_file_or_env_and_chap_checked() {
        let no_pw = DEMOCRATIC_CSI_EXAMPLE.replace("  password: password\n", "");
        let config = DriverConfig::from_yaml(&no_pw).unwrap();
        assert!(config.dsm_config(|_| None).unwrap_err().to_string().contains(PASSWORD_ENV));
        let dsm = config.dsm_config(|k| (k == PASSWORD_ENV).then(|| "from-env".to_owned())).unwrap();
        assert!(!format!("{dsm:?}").contains("from-env"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let with_file =
            no_pw.replace("  allowInsecure", &format!("  passwordFile: {}\n  allowInsecure", file.display()));
        assert!(DriverConfig::from_yaml(&with_file).unwrap().dsm_config(|_| None).is_ok());

        let chap = DEMOCRATIC_CSI_EXAMPLE.replace("    auth_type: 0", "    auth_type: 1\n    user: u");
        assert!(DriverConfig::from_yaml(&chap).unwrap_err().to_string().contains("targetTemplate.password"));
        let empty_user =
            DEMOCRATIC_CSI_EXAMPLE.replace("    auth_type: 0", "    auth_type: 1\n    user: \"\"\n    password: s");
        let err = DriverConfig::from_yaml(&empty_user).unwrap_err().to_string();
        assert!(err.contains("targetTemplate.user") && err.contains("empty"), "{err}");
        let empty_secret = DEMOCRATIC_CSI_EXAMPLE.replace(
            "    auth_type: 0",
            "    auth_type: 2\n    user: u\n    password: s\n    mutual_user: m\n    mutual_password: \" \"",
        );
        let err = DriverConfig::from_yaml(&empty_secret).unwrap_err().to_string();
        assert!(err.contains("targetTemplate.mutual_password") && err.contains("empty"), "{err}");
        assert!(!err.contains("\" \""), "the secret is not echoed: {err}");
        let mutual = empty_secret.replace("mutual_password: \" \"", "mutual_password: ms");
        assert!(DriverConfig::from_yaml(&mutual).is_ok());
    }
}
