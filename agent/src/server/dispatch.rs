//! `job dispatch`: a parameterized job's child, made from the parent with
//! the caller's payload and meta, checked against the parent's
//! `parameterized` block as Nomad checks it.

use std::collections::BTreeMap;

use super::{Server, ServerError};
use crate::structs::{dispatch_payload, Job};
use crate::wire::plan::{DispatchRequest, DispatchResult};

/// What the caller gives a dispatch.
fn check(parent: &Job, payload: &[u8], meta: &BTreeMap<String, String>) -> Result<(), ServerError> {
    let Some(p) = parent.parameterized_job.as_ref().filter(|_| !parent.dispatched) else {
        return Err(ServerError::BadRequest(format!("Specified job {:?} is not a parameterized job", parent.id)));
    };
    if parent.stop {
        return Err(ServerError::BadRequest(format!("Specified job {:?} is stopped", parent.id)));
    }
    match p.payload.as_str() {
        dispatch_payload::REQUIRED if payload.is_empty() => {
            return Err(ServerError::BadRequest("Payload is not provided but required by parameterized job".into()))
        }
        dispatch_payload::FORBIDDEN if !payload.is_empty() => {
            return Err(ServerError::BadRequest("Payload provided but forbidden by parameterized job".into()))
        }
        _ => {}
    }
    if payload.len() > dispatch_payload::MAX_SIZE {
        return Err(ServerError::BadRequest(format!(
            "Payload exceeds maximum size; {} > {}",
            payload.len(),
            dispatch_payload::MAX_SIZE
        )));
    }
    let unpermitted: Vec<&String> =
        meta.keys().filter(|k| !p.meta_required.contains(k) && !p.meta_optional.contains(k)).collect();
    if !unpermitted.is_empty() {
        return Err(ServerError::BadRequest(format!(
            "Dispatch request included unpermitted metadata keys: {unpermitted:?}"
        )));
    }
    let missing: Vec<&String> = p.meta_required.iter().filter(|k| !meta.contains_key(*k)).collect();
    if !missing.is_empty() {
        return Err(ServerError::BadRequest(format!("Dispatch did not provide required meta keys: {missing:?}")));
    }
    Ok(())
}

/// The child: the parent's spec under `<parent>/dispatch-<unix time>-<8 hex>`
/// (`dispatch-<prefix>-…` with an ID prefix template), with the payload and
/// the parent's meta overlaid by the caller's.
fn child(parent: &Job, req: DispatchRequest, token: &str) -> Job {
    let mut job = parent.clone();
    let suffix = &crate::util::new_id()[..8];
    let prefix = match req.id_prefix_template.as_str() {
        "" => String::new(),
        p => format!("{p}-"),
    };
    job.id = format!("{}/dispatch-{prefix}{}-{suffix}", parent.id, chrono::Utc::now().timestamp());
    job.name = job.id.clone();
    job.parent_id = parent.id.clone();
    job.dispatched = true;
    job.dispatch_idempotency_token = token.to_string();
    job.payload = req.payload;
    job.meta.extend(req.meta);
    job.create_index = 0;
    job.modify_index = 0;
    job
}

impl Server {
    /// Dispatches parameterized job `id` (`POST /v1/job/:id/dispatch`). With
    /// an idempotency token that a child of the job already has, nothing is
    /// made and the answer names that child (without an evaluation).
    pub fn dispatch_job(
        &self,
        ns: &str,
        id: &str,
        req: DispatchRequest,
        token: &str,
    ) -> Result<DispatchResult, ServerError> {
        let parent = self.state.snapshot().job(ns, id).ok_or_else(|| ServerError::NotFound("job not found".into()))?;
        check(&parent, &req.payload, &req.meta)?;
        if req.id_prefix_template.contains('/') {
            return Err(ServerError::BadRequest("IdPrefixTemplate must not contain a \"/\"".into()));
        }
        let job = child(&parent, req, token);
        let dispatched_job_id = job.id.clone();
        let Some((eval, index)) = self.register_child(job, "job-register")? else {
            let snap = self.state.snapshot();
            let existing = token_holder(&snap, &parent, token)
                .ok_or_else(|| ServerError::BadRequest(format!("a job {dispatched_job_id:?} exists already")))?;
            return Ok(DispatchResult {
                dispatched_job_id: existing.id.clone(),
                job_create_index: existing.create_index,
                index: snap.index,
                ..Default::default()
            });
        };
        Ok(DispatchResult {
            dispatched_job_id,
            eval_id: eval.id,
            eval_create_index: index,
            job_create_index: index,
            index,
        })
    }
}

/// The child of `parent` dispatched with `token`, if any (none without one).
pub(super) fn token_holder(snap: &super::state::Tables, parent: &Job, token: &str) -> Option<std::sync::Arc<Job>> {
    if token.is_empty() {
        return None;
    }
    snap.jobs()
        .find(|j| j.namespace == parent.namespace && j.parent_id == parent.id && j.dispatch_idempotency_token == token)
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structs::ParameterizedJobConfig;

    fn parent(payload: &str) -> Job {
        Job {
            id: "backup".into(),
            meta: [("owner".to_string(), "ops".to_string())].into(),
            parameterized_job: Some(ParameterizedJobConfig {
                payload: payload.into(),
                meta_required: vec!["target".into()],
                meta_optional: vec!["level".into()],
            }),
            ..Job::default()
        }
    }

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn payload_and_meta_rules_are_nomads() {
        let ok = meta(&[("target", "nas")]);
        assert!(check(&parent("optional"), b"", &ok).is_ok());
        let e = check(&parent("required"), b"", &ok).unwrap_err().to_string();
        assert_eq!(e, "Payload is not provided but required by parameterized job");
        let e = check(&parent("forbidden"), b"x", &ok).unwrap_err().to_string();
        assert_eq!(e, "Payload provided but forbidden by parameterized job");
        let e = check(&parent("optional"), &vec![0; 16 * 1024 + 1], &ok).unwrap_err().to_string();
        assert_eq!(e, "Payload exceeds maximum size; 16385 > 16384");
        let e = check(&parent("optional"), b"", &meta(&[("target", "nas"), ("color", "red")])).unwrap_err();
        assert_eq!(e.to_string(), "Dispatch request included unpermitted metadata keys: [\"color\"]");
        let e = check(&parent("optional"), b"", &meta(&[("level", "1")])).unwrap_err().to_string();
        assert_eq!(e, "Dispatch did not provide required meta keys: [\"target\"]");
        let plain = Job { id: "web".into(), ..Job::default() };
        assert!(check(&plain, b"", &ok).unwrap_err().to_string().contains("is not a parameterized job"));
    }

    #[test]
    fn the_child_carries_payload_and_merged_meta_under_nomads_id() {
        let req =
            DispatchRequest { payload: b"hello".to_vec(), meta: meta(&[("target", "nas")]), ..Default::default() };
        let c = child(&parent("optional"), req, "");
        assert!(c.id.starts_with("backup/dispatch-"), "{}", c.id);
        let tail: Vec<&str> = c.id["backup/dispatch-".len()..].split('-').collect();
        assert!(tail[0].parse::<i64>().is_ok() && tail[1].len() == 8, "{}", c.id);
        assert_eq!(c.parent_id, "backup");
        assert!(c.dispatched && !c.is_template());
        assert_eq!(c.payload, b"hello");
        assert_eq!(c.meta, meta(&[("owner", "ops"), ("target", "nas")]));
    }
}
