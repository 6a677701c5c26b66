//! Signing workload identities: the claims Nomad puts in a task's JWT
//! (`sub` is `region:namespace:job:group:task:identity`), signed with the
//! servers' keyring for the node that runs the allocation.

use serde::Serialize;

use super::{Server, ServerError};
use crate::structs::WorkloadIdentity;
use crate::util::{new_id, now_nanos};
use crate::wire::identity::{SignIdentitiesRequest, SignedIdentity};

/// A workload identity's claims, as Nomad names them.
#[derive(Debug, Serialize)]
struct Claims<'a> {
    aud: Audience<'a>,
    iat: i64,
    nbf: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<i64>,
    jti: String,
    sub: String,
    nomad_namespace: &'a str,
    nomad_job_id: &'a str,
    nomad_allocation_id: &'a str,
    nomad_task: &'a str,
}

/// `aud`: one audience is a string, several a list (as go-jose writes it).
#[derive(Debug)]
struct Audience<'a>(&'a [String]);

impl Serialize for Audience<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

impl Server {
    /// Signs the asked identities of one of the node's live allocations.
    pub fn sign_identities(
        &self,
        node_id: &str,
        secret: &str,
        request: &SignIdentitiesRequest,
    ) -> Result<Vec<SignedIdentity>, ServerError> {
        let snap = self.state.snapshot();
        let (_, alloc) = super::nodes::authenticated_alloc(&snap, node_id, secret, &request.alloc_id)?;
        if alloc.is_terminal() {
            return Err(ServerError::BadRequest(format!("allocation {} has stopped", alloc.id)));
        }
        let group = alloc.group().ok_or_else(|| ServerError::NotFound(format!("group of {}", alloc.id)))?;
        let now = now_nanos() / 1_000_000_000;
        let mut out = Vec::new();
        for asked in &request.identities {
            let task = group.tasks.iter().find(|t| t.name == asked.task_name);
            let identity: Option<&WorkloadIdentity> =
                task.and_then(|t| t.identity.iter().chain(&t.identities).find(|i| i.name == asked.identity_name));
            let Some(identity) = identity else {
                return Err(ServerError::NotFound(format!(
                    "task {:?} of allocation {} has no identity {:?}",
                    asked.task_name, alloc.id, asked.identity_name
                )));
            };
            let exp = (identity.ttl > 0).then(|| now + (identity.ttl + 999_999_999) / 1_000_000_000);
            let claims = Claims {
                aud: Audience(&identity.audience),
                iat: now,
                nbf: now,
                exp,
                jti: new_id(),
                sub: format!(
                    "{}:{}:{}:{}:{}:{}",
                    self.config.region, alloc.namespace, alloc.job_id, alloc.task_group, asked.task_name, identity.name
                ),
                nomad_namespace: &alloc.namespace,
                nomad_job_id: &alloc.job_id,
                nomad_allocation_id: &alloc.id,
                nomad_task: &asked.task_name,
            };
            out.push(SignedIdentity {
                task_name: asked.task_name.clone(),
                identity_name: identity.name.clone(),
                jwt: self.keyring.sign(&claims)?,
                expiration: exp.map_or(0, |e| e * 1_000_000_000),
            });
        }
        Ok(out)
    }
}
