//! iSCSI target operations of `SYNO.Core.ISCSI.Target`: create, get, list
//! and delete; [`Iqn`], a target name checked against RFC 3720's 223-byte
//! limit; and the [`Target`] shape DSM answers with.

use std::fmt;

use serde::Deserialize;
use serde_json::json;
use tracing::debug;

use super::client::DsmClient;
use super::config::Password;
use super::error::DsmError;
use super::params::Params;

const TARGET_API: &str = "SYNO.Core.ISCSI.Target";
/// Code for an unknown target (or an unquoted `target_id`).
const NO_SUCH_TARGET: i64 = 18990710;
/// Longest IQN RFC 3720 allows, in bytes.
pub const MAX_IQN_BYTES: usize = 223;

/// An iSCSI qualified name no longer than [`MAX_IQN_BYTES`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iqn(String);

impl Iqn {
    /// Checks the length of `iqn`.
    pub fn new(iqn: impl Into<String>) -> Result<Self, DsmError> {
        let iqn = iqn.into();
        if iqn.len() > MAX_IQN_BYTES {
            return Err(DsmError::IqnTooLong { len: iqn.len(), iqn });
        }
        Ok(Self(iqn))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Iqn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How initiators authenticate to a target.
#[derive(Clone, Debug)]
pub enum TargetAuth {
    /// No authentication (`auth_type` 0).
    None,
    /// One-way CHAP (`auth_type` 1).
    Chap {
        /// CHAP user.
        user: String,
        /// CHAP secret.
        password: Password,
    },
    /// Mutual CHAP (`auth_type` 2): the target authenticates back.
    MutualChap {
        /// CHAP user.
        user: String,
        /// CHAP secret.
        password: Password,
        /// The target's CHAP user.
        mutual_user: String,
        /// The target's CHAP secret.
        mutual_password: Password,
    },
}

/// What to create.
#[derive(Clone, Debug)]
pub struct TargetCreate {
    /// Target name, unique on the NAS.
    pub name: String,
    /// Target IQN, unique on the NAS.
    pub iqn: Iqn,
    /// Initiators allowed at once; 0 is unlimited (DSM's own default is 1).
    pub max_sessions: u32,
    /// Initiator authentication.
    pub auth: TargetAuth,
}

/// A LUN mapped on a target.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct MappedLun {
    /// The LUN's uuid.
    pub lun_uuid: String,
    /// The LUN number initiators see on this target (from 1).
    #[serde(deserialize_with = "super::lenient::u32")]
    pub mapping_index: u32,
}

/// A target as DSM lists it (the fields clients rely on).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Target {
    /// DSM's numeric id.
    #[serde(deserialize_with = "super::lenient::u32")]
    pub target_id: u32,
    /// Name.
    pub name: String,
    /// IQN.
    pub iqn: String,
    /// Initiators allowed at once; 0 is unlimited.
    #[serde(deserialize_with = "super::lenient::u32")]
    pub max_sessions: u32,
    /// 0 none, 1 CHAP, 2 mutual CHAP.
    #[serde(default)]
    pub auth_type: u8,
    /// Mapped LUNs.
    #[serde(default)]
    pub mapped_luns: Vec<MappedLun>,
}

#[derive(Deserialize)]
struct Created {
    #[serde(deserialize_with = "super::lenient::u32")]
    target_id: u32,
}

#[derive(Deserialize)]
struct TargetData {
    target: Target,
}

#[derive(Deserialize)]
struct TargetList {
    #[serde(default)]
    targets: Vec<Target>,
}

impl DsmClient {
    /// Creates a target and returns its id. A duplicate name or IQN answers 18990744.
    pub async fn create_target(&self, target: &TargetCreate) -> Result<u32, DsmError> {
        let mut params = Params::new()
            .string("name", &target.name)
            .string("iqn", target.iqn.as_str())
            .number("max_sessions", u64::from(target.max_sessions));
        params = match &target.auth {
            TargetAuth::None => params.number("auth_type", 0),
            TargetAuth::Chap { user, password } => {
                params.number("auth_type", 1).string("user", user).string("password", password.expose())
            }
            TargetAuth::MutualChap { user, password, mutual_user, mutual_password } => params
                .number("auth_type", 2)
                .string("user", user)
                .string("password", password.expose())
                .string("mutual_user", mutual_user)
                .string("mutual_password", mutual_password.expose()),
        };
        let created: Created = self.call_as(TARGET_API, "create", params).await?;
        debug!(name = %target.name, iqn = %target.iqn, target_id = created.target_id, "target created");
        Ok(created.target_id)
    }

    /// The target with this id; `None` when DSM does not know it.
    pub async fn get_target(&self, target_id: u32) -> Result<Option<Target>, DsmError> {
        let params =
            Params::new().string("target_id", &target_id.to_string()).json("additional", &json!(["mapped_lun"]));
        match self.call_as::<TargetData>(TARGET_API, "get", params).await {
            Ok(data) => Ok(Some(data.target)),
            Err(DsmError::Api { code: NO_SUCH_TARGET, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every target on the NAS, with its mapped LUNs.
    pub async fn list_targets(&self) -> Result<Vec<Target>, DsmError> {
        let params = Params::new().json("additional", &json!(["mapped_lun"]));
        Ok(self.call_as::<TargetList>(TARGET_API, "list", params).await?.targets)
    }

    /// Deletes a target (its LUN mappings go with it, the LUNs stay); one
    /// that is already gone counts as deleted.
    pub async fn delete_target(&self, target_id: u32) -> Result<(), DsmError> {
        let params = Params::new().string("target_id", &target_id.to_string());
        match self.call(TARGET_API, "delete", params).await {
            Ok(_) => {
                debug!(target_id, "target deleted");
                Ok(())
            }
            Err(DsmError::Api { code: NO_SUCH_TARGET, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iqn_longer_than_223_bytes_is_refused() {
        let base = "iqn.2000-01.com.synology:csi.";
        assert!(Iqn::new(format!("{base}{}", "a".repeat(MAX_IQN_BYTES - base.len()))).is_ok());
        let err = Iqn::new(format!("{base}{}", "a".repeat(MAX_IQN_BYTES - base.len() + 1))).unwrap_err();
        assert!(err.to_string().contains("224 bytes"), "{err}");
    }
}
