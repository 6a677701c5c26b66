//! Answers what a task's templates read: variables of its job's paths
//! (Nomad's implicit workload policy), service instances and names of its
//! namespace, after waiting for the state to move past what the client
//! last saw.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::{Server, ServerError};
use crate::structs::{workload_may_read, ServiceRegistration};
use crate::wire::template::{ServiceName, TemplateRead, TemplateReadAnswer, TemplateReadRequest, TemplateValue};

/// The longest a read waits for a change.
const MAX_WAIT: Duration = Duration::from_secs(300);

impl Server {
    /// The values of `request`'s reads, for the task of one of the node's
    /// allocations; waits first while the state index is not above
    /// `min_index`.
    pub async fn template_reads(
        &self,
        node_id: &str,
        secret: &str,
        request: &TemplateReadRequest,
    ) -> Result<TemplateReadAnswer, ServerError> {
        let snap = self.state.snapshot();
        let (_, alloc) = super::nodes::authenticated_alloc(&snap, node_id, secret, &request.alloc_id)?;
        let may_read = |path: &str| workload_may_read(path, &alloc.job_id, &alloc.task_group, &request.task);
        for read in &request.reads {
            if let TemplateRead::Variable { path } = read {
                if !may_read(path) {
                    return Err(ServerError::BadRequest(format!(
                        "task {:?} may not read variable {path:?}: a task reads nomad/jobs/{}[/{}[/{}]]",
                        request.task, alloc.job_id, alloc.task_group, request.task
                    )));
                }
            }
        }
        drop(snap);
        if request.min_index > 0 {
            let wait = Duration::from_millis(request.wait_ms).min(MAX_WAIT);
            self.state.wait_index(request.min_index, wait).await;
        }
        let snap = self.state.snapshot();
        let ns = alloc.namespace.as_str();
        let mut values = Vec::with_capacity(request.reads.len());
        for read in &request.reads {
            values.push(match read {
                TemplateRead::Variable { path } => TemplateValue::Variable(self.read_variable(&snap, ns, path)?),
                TemplateRead::Variables { prefix } => {
                    let readable = snap.variables_with_prefix(Some(ns), prefix).filter(|v| may_read(&v.meta.path));
                    TemplateValue::Variables(readable.map(|v| self.open_variable(v)).collect::<Result<_, _>>()?)
                }
                TemplateRead::Service { name, tag } => {
                    let mut found: Vec<ServiceRegistration> = snap
                        .service_registrations()
                        .filter(|r| r.namespace == ns && r.service_name == *name)
                        .filter(|r| tag.is_empty() || r.tags.contains(tag))
                        .map(|r| (**r).clone())
                        .collect();
                    found.sort_by_key(|r| (r.create_index, r.id.clone()));
                    TemplateValue::Service(found)
                }
                TemplateRead::Services => {
                    let mut names: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
                    for r in snap.service_registrations().filter(|r| r.namespace == ns) {
                        names.entry(&r.service_name).or_default().extend(r.tags.iter().map(String::as_str));
                    }
                    let names = names.into_iter().map(|(name, tags)| ServiceName {
                        name: name.to_string(),
                        tags: tags.into_iter().map(str::to_string).collect(),
                    });
                    TemplateValue::Services(names.collect())
                }
            });
        }
        Ok(TemplateReadAnswer { index: snap.index.max(1), values })
    }
}
