//! The identity hook: before an allocation's tasks start, the servers sign
//! each task identity that asks for `env` or `file`; the token goes into
//! the task's environment (`NOMAD_TOKEN`, `NOMAD_TOKEN_<name>`) and into
//! its secrets directory (`secrets/nomad_token`, `secrets/nomad_<name>.jwt`,
//! mode 0600). Tokens with a `ttl` are signed again at half their life and
//! their files rewritten, until the allocation stops; a renewed identity's
//! `change_mode` then restarts or signals its task.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::control::{TaskAction, TaskRequester};
use super::hook::{AllocHook, HookError, HookResources, HookResult};
use super::rpc::ServerRpc;
use crate::structs::{Allocation, Node, WorkloadIdentity};
use crate::util::now_nanos;
use crate::wire::identity::{IdentityRequest, SignIdentitiesRequest, SignedIdentity};

/// How long a failed renewal waits before the next try.
const RENEW_RETRY: Duration = Duration::from_secs(5);

/// Signs and places the allocation's workload identities.
pub struct IdentityHook {
    pub rpc: Arc<dyn ServerRpc>,
    pub node: Arc<Node>,
    /// `<data_dir>/alloc/<alloc id>`.
    pub root: PathBuf,
    /// Ends the renewals.
    pub renewals: CancellationToken,
    /// Reaches the allocation's own runner, which restarts or signals a
    /// task whose renewed identity asks for it.
    pub tasks: TaskRequester,
}

/// The identities of the allocation's tasks that want a token somewhere.
fn wanted(alloc: &Allocation) -> Vec<(String, WorkloadIdentity)> {
    let tasks = alloc.group().map(|tg| tg.tasks.as_slice()).unwrap_or_default();
    tasks
        .iter()
        .flat_map(|t| t.identity.iter().chain(&t.identities).map(move |i| (t.name.clone(), i.clone())))
        .filter(|(_, i)| i.env || i.file)
        .collect()
}

impl AllocHook for IdentityHook {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn prerun<'a>(&'a self, alloc: &'a Allocation, res: &'a mut HookResources) -> HookResult<'a> {
        async move {
            let wanted = wanted(alloc);
            if wanted.is_empty() {
                return Ok(());
            }
            let signed = sign(&*self.rpc, &self.node, &alloc.id, &wanted).await?;
            for (token, (task, identity)) in signed.iter().zip(&wanted) {
                if identity.file {
                    write_token(&self.root.join(task), identity, &token.jwt)?;
                }
                if identity.env {
                    res.task_env.entry(task.clone()).or_default().insert(identity.env_var(), token.jwt.clone());
                }
            }
            let expiring: Vec<(String, WorkloadIdentity)> =
                wanted.into_iter().filter(|(_, i)| i.ttl > 0 && i.file).collect();
            if !expiring.is_empty() {
                let renewal = Renewal {
                    rpc: Arc::clone(&self.rpc),
                    node: Arc::clone(&self.node),
                    alloc_id: alloc.id.clone(),
                    root: self.root.clone(),
                    identities: expiring,
                    tasks: Arc::clone(&self.tasks),
                };
                tokio::spawn(renewal.run(signed, self.renewals.clone()));
            }
            Ok(())
        }
        .boxed()
    }

    fn postrun<'a>(&'a self, _alloc: &'a Allocation) -> HookResult<'a> {
        self.renewals.cancel();
        async { Ok(()) }.boxed()
    }
}

/// Asks the servers to sign `identities` of the allocation, in order.
async fn sign(
    rpc: &dyn ServerRpc,
    node: &Node,
    alloc_id: &str,
    identities: &[(String, WorkloadIdentity)],
) -> Result<Vec<SignedIdentity>, HookError> {
    let request = SignIdentitiesRequest {
        alloc_id: alloc_id.to_string(),
        identities: identities
            .iter()
            .map(|(task, i)| IdentityRequest { task_name: task.clone(), identity_name: i.name.clone() })
            .collect(),
    };
    let signed = rpc
        .sign_identities(&node.id, &node.secret_id, request)
        .await
        .map_err(|source| HookError::Rpc { op: "signing workload identities", source })?;
    if signed.len() != identities.len() {
        return Err(HookError::Unavailable(format!(
            "the servers signed {} of {} workload identities",
            signed.len(),
            identities.len()
        )));
    }
    Ok(signed)
}

/// Writes a token where the task finds it, readable by its owner only.
fn write_token(task_dir: &Path, identity: &WorkloadIdentity, jwt: &str) -> Result<(), HookError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = task_dir.join(identity.file_path());
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(HookError::io(format!("creating {}", parent.display())))?;
    }
    let tmp = path.with_extension("tmp");
    let op = || format!("writing identity {:?} to {}", identity.name, path.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(HookError::io(op()))?;
    file.write_all(jwt.as_bytes()).map_err(HookError::io(op()))?;
    std::fs::rename(&tmp, &path).map_err(HookError::io(op()))
}

/// Renews expiring tokens of one allocation.
struct Renewal {
    rpc: Arc<dyn ServerRpc>,
    node: Arc<Node>,
    alloc_id: String,
    root: PathBuf,
    identities: Vec<(String, WorkloadIdentity)>,
    tasks: TaskRequester,
}

/// What renewed `identities` ask of their tasks (`change_mode` restart or
/// signal), once per task and action.
fn change_actions(identities: &[(String, WorkloadIdentity)]) -> Vec<(String, TaskAction)> {
    let mut out: Vec<(String, TaskAction)> = Vec::new();
    for (task, identity) in identities {
        let action = match identity.change_mode.as_str() {
            "restart" => TaskAction::Restart,
            "signal" => TaskAction::Signal(identity.change_signal.clone()),
            _ => continue,
        };
        if !out.iter().any(|(t, a)| t == task && *a == action) {
            out.push((task.clone(), action));
        }
    }
    out
}

/// How long until half of the soonest token's remaining life has passed.
fn renew_in(tokens: &[SignedIdentity], now: i64) -> Duration {
    let soonest = tokens.iter().filter(|t| t.expiration > 0).map(|t| t.expiration).min().unwrap_or(now);
    Duration::from_nanos(u64::try_from((soonest - now) / 2).unwrap_or(0)).max(Duration::from_secs(1))
}

impl Renewal {
    async fn run(self, signed: Vec<SignedIdentity>, stop: CancellationToken) {
        let mut tokens: Vec<SignedIdentity> = signed
            .into_iter()
            .filter(|t| self.identities.iter().any(|(task, i)| *task == t.task_name && i.name == t.identity_name))
            .collect();
        loop {
            let pause = renew_in(&tokens, now_nanos());
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.cancelled() => return,
            }
            match self.renew().await {
                Ok(renewed) => {
                    tokens = renewed;
                    self.apply_change_modes().await;
                }
                Err(e) => {
                    tracing::warn!(alloc_id = %self.alloc_id, error = %e, "renewing workload identities");
                    tokio::select! {
                        _ = tokio::time::sleep(RENEW_RETRY) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Restarts or signals the tasks whose renewed identity says so,
    /// through the allocation's runner, as `alloc restart`/`alloc signal`.
    async fn apply_change_modes(&self) {
        for (task, action) in change_actions(&self.identities) {
            let (reply, answer) = oneshot::channel();
            if !(self.tasks)(task.clone(), action.clone(), reply) {
                return;
            }
            if let Ok(Err(e)) = answer.await {
                tracing::warn!(alloc_id = %self.alloc_id, task = %task, ?action, error = %e, "acting on a renewed identity");
            }
        }
    }

    async fn renew(&self) -> Result<Vec<SignedIdentity>, HookError> {
        let signed = sign(&*self.rpc, &self.node, &self.alloc_id, &self.identities).await?;
        for (token, (task, identity)) in signed.iter().zip(&self.identities) {
            write_token(&self.root.join(task), identity, &token.jwt)?;
        }
        tracing::debug!(alloc_id = %self.alloc_id, count = signed.len(), "renewed workload identities");
        Ok(signed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_at_half_the_remaining_life() {
        let now = 1_000_000_000_000;
        let token = |exp| SignedIdentity { expiration: exp, ..Default::default() };
        let tokens = [token(now + 60_000_000_000), token(0), token(now + 20_000_000_000)];
        assert_eq!(renew_in(&tokens, now), Duration::from_secs(10));
        assert_eq!(renew_in(&[token(now - 5)], now), Duration::from_secs(1), "an expired token is renewed soon");
    }

    #[test]
    fn renewed_identities_restart_or_signal_their_tasks_once_each() {
        let id = |name: &str, mode: &str, signal: &str| WorkloadIdentity {
            name: name.into(),
            change_mode: mode.into(),
            change_signal: signal.into(),
            ..Default::default()
        };
        let identities = [
            ("web".to_string(), id("a", "signal", "SIGHUP")),
            ("web".to_string(), id("b", "signal", "SIGHUP")),
            ("web".to_string(), id("c", "noop", "")),
            ("db".to_string(), id("d", "restart", "")),
        ];
        assert_eq!(
            change_actions(&identities),
            [("web".to_string(), TaskAction::Signal("SIGHUP".into())), ("db".to_string(), TaskAction::Restart)]
        );
    }

    #[test]
    fn a_token_file_is_private_and_named_as_nomad_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let default = WorkloadIdentity { name: "default".into(), file: true, ..Default::default() };
        write_token(dir.path(), &default, "a.b.c").unwrap();
        let path = dir.path().join("secrets/nomad_token");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a.b.c");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let named = WorkloadIdentity { name: "vault".into(), file: true, ..Default::default() };
        write_token(dir.path(), &named, "d.e.f").unwrap();
        assert!(dir.path().join("secrets/nomad_vault.jwt").exists());
    }
}
