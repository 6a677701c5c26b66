//! Workload identities between a client and the servers: which of an
//! allocation's identities a client asks to have signed, and the tokens it
//! gets back (Nomad's `Alloc.SignIdentities`).

use serde::{Deserialize, Serialize};

/// One identity of one task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct IdentityRequest {
    pub task_name: String,
    pub identity_name: String,
}

/// `PUT /v1/internal/node/:id/identities`: the identities of one of the
/// node's allocations to sign.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct SignIdentitiesRequest {
    #[serde(rename = "AllocID")]
    pub alloc_id: String,
    pub identities: Vec<IdentityRequest>,
}

/// A signed identity. The JWT is a secret: it is never logged or shown.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct SignedIdentity {
    pub task_name: String,
    pub identity_name: String,
    #[serde(rename = "JWT")]
    pub jwt: String,
    /// Unix nanoseconds when it expires; 0 for never.
    pub expiration: i64,
}

impl std::fmt::Debug for SignedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIdentity")
            .field("task_name", &self.task_name)
            .field("identity_name", &self.identity_name)
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}
