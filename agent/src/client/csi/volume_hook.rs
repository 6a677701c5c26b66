//! The alloc hook that mounts an allocation's CSI volumes: asks the
//! servers for the claim (waiting while another allocation holds it), then
//! NodeStageVolume (once per volume on this node, when the plugin stages)
//! and NodePublishVolume into the allocation's target, which the task
//! runner binds at each `volume_mount` destination. Postrun unwinds in
//! reverse: NodeUnpublish, NodeUnstage when the node's last user leaves.
//!
//! Each step checks the mount table first, so a client restarted midway
//! neither stages twice nor loses track: what an allocation mounted is
//! also written to `mounts/<alloc>.json` before the first RPC.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use csi::v1::{NodePublishVolumeRequest, NodeStageVolumeRequest, NodeUnpublishVolumeRequest, NodeUnstageVolumeRequest};
use futures::FutureExt;
use serde::{Deserialize, Serialize};

use super::manager::{CsiManager, PluginEntry};
use crate::client::hook::{AllocHook, HookError, HookResources, HookResult};
use crate::client::rpc::{RpcError, ServerRpc};
use crate::structs::{Allocation, CsiVolumeCapability, Node};
use crate::wire::csi::{ClaimGrant, GrantedVolume};

/// How long an allocation waits for a claim another allocation holds.
const CLAIM_WAIT: Duration = Duration::from_secs(600);
/// How long it waits for the volume's node plugin to be healthy.
const PLUGIN_WAIT: Duration = Duration::from_secs(120);

/// One volume an allocation mounted, as recorded on disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MountRecord {
    /// Berth's volume ID (with `per_alloc` applied).
    pub volume_id: String,
    /// Namespace.
    pub namespace: String,
    /// The provider's ID.
    pub external_id: String,
    /// The plugin.
    pub plugin_id: String,
    /// The group's volume alias.
    pub alias: String,
    /// Host staging path, when the plugin stages.
    pub staging: Option<PathBuf>,
    /// Host publish target.
    pub target: PathBuf,
    /// Published read-only.
    pub read_only: bool,
}

/// Mounts the group's CSI volumes.
pub struct CsiVolumeHook {
    /// The node's plugin registry.
    pub manager: Arc<CsiManager>,
    /// The servers.
    pub rpc: Arc<dyn ServerRpc>,
    /// This node.
    pub node: Arc<Node>,
}

fn usage(read_only: bool, attachment: &str, access: &str) -> String {
    format!("{}-{attachment}-{access}", if read_only { "ro" } else { "rw" })
}

fn mounted(path: &Path) -> bool {
    csi::mount::mounted_source(path).is_some()
}

fn records_path(manager: &CsiManager, alloc_id: &str) -> PathBuf {
    manager.root().join("mounts").join(format!("{alloc_id}.json"))
}

/// The volumes an allocation has mounted (empty when none).
pub fn load_records(manager: &CsiManager, alloc_id: &str) -> Vec<MountRecord> {
    std::fs::read(records_path(manager, alloc_id))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Every allocation's records on this node.
pub fn all_records(manager: &CsiManager) -> Vec<(String, MountRecord)> {
    let Ok(dir) = std::fs::read_dir(manager.root().join("mounts")) else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_string))
        .flat_map(|alloc| load_records(manager, &alloc).into_iter().map(move |r| (alloc.clone(), r)))
        .collect()
}

fn save_records(manager: &CsiManager, alloc_id: &str, records: &[MountRecord]) -> Result<(), HookError> {
    let path = records_path(manager, alloc_id);
    if records.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(HookError::io(format!("removing {}", path.display()))(e))
            }
            _ => Ok(()),
        };
    }
    let dir = path.parent().expect("records live in a directory");
    std::fs::create_dir_all(dir).map_err(HookError::io(format!("creating {}", dir.display())))?;
    let tmp = path.with_extension("tmp");
    let body = serde_json::to_vec_pretty(records)
        .map_err(|source| HookError::Record { op: format!("encoding {}", path.display()), source })?;
    std::fs::write(&tmp, body)
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(HookError::io(format!("writing {}", path.display())))
}

impl CsiVolumeHook {
    /// Waits for the servers to grant the allocation's claims.
    async fn claim(&self, alloc: &Allocation) -> Result<Vec<GrantedVolume>, HookError> {
        const OP: &str = "claiming CSI volumes";
        let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
        let mut pause = Duration::from_millis(250);
        let mut last = Err(HookError::Unavailable(String::new()));
        loop {
            match self.rpc.claim_volumes(&self.node.id, &self.node.secret_id, &alloc.id).await {
                Ok(ClaimGrant::Granted(volumes)) => return Ok(volumes),
                Ok(ClaimGrant::Wait(why)) => {
                    if !matches!(&last, Err(HookError::Unavailable(w)) if *w == why) {
                        tracing::info!(reason = %why, "waiting for CSI volume claim");
                    }
                    last = Err(HookError::Unavailable(why));
                }
                // A stopping allocation may not claim: no wait changes that.
                Err(source @ RpcError::Refused(_)) => return Err(HookError::Rpc { op: OP, source }),
                Err(source) => last = Err(HookError::Rpc { op: OP, source }),
            }
            if tokio::time::Instant::now() >= deadline {
                return last.map_err(|e| match e {
                    HookError::Unavailable(why) => HookError::Unavailable(format!("{OP}: {why}")),
                    other => other,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }

    async fn mount_all(&self, alloc: &Allocation, res: &mut HookResources) -> Result<(), HookError> {
        if alloc.csi_requests().is_empty() {
            return Ok(());
        }
        let volumes = self.claim(alloc).await?;
        let mut records = load_records(&self.manager, &alloc.id);
        for (alias, req) in alloc.group().map(|tg| tg.volumes.iter().collect::<Vec<_>>()).unwrap_or_default() {
            if req.volume_type != "csi" {
                continue;
            }
            let volume_id = req.volume_id(alloc.index());
            let GrantedVolume { volume, publish_context } = volumes
                .iter()
                .find(|g| g.volume.id == volume_id)
                .ok_or_else(|| HookError::Unavailable(format!("CSI volume {volume_id} was not granted")))?;
            let plugin = self.manager.wait_healthy(&volume.plugin_id, PLUGIN_WAIT).await?;
            let read_only = req.read_only || req.access_mode.ends_with("reader-only");
            let use_ = usage(read_only, &req.attachment_mode, &req.access_mode);
            let staging = plugin
                .caps
                .stage_unstage
                .then(|| plugin.host_root.join("staging").join(&alloc.namespace).join(&volume_id).join(&use_));
            let target = plugin.host_root.join("per-alloc").join(&alloc.id).join(&volume_id).join(&use_);
            let record = MountRecord {
                volume_id: volume_id.clone(),
                namespace: alloc.namespace.clone(),
                external_id: volume.external_id.clone(),
                plugin_id: volume.plugin_id.clone(),
                alias: alias.clone(),
                staging: staging.clone(),
                target: target.clone(),
                read_only,
            };
            if !records.contains(&record) {
                records.retain(|r| r.alias != record.alias);
                records.push(record);
                save_records(&self.manager, &alloc.id, &records)?;
            }
            let cap = CsiVolumeCapability {
                access_mode: req.access_mode.clone(),
                attachment_mode: req.attachment_mode.clone(),
            };
            let mount_options = req.mount_options.as_ref().or(volume.mount_options.as_ref());
            let capability = super::capability(&cap, mount_options);
            let lock = self.manager.volume_lock(&format!("{}/{}", alloc.namespace, volume_id));
            let _serialised = lock.lock().await;
            if let Some(staging) = &staging {
                if mounted(staging) {
                    tracing::debug!(volume = %volume_id, "already staged");
                } else {
                    std::fs::create_dir_all(staging)
                        .map_err(HookError::io(format!("creating {}", staging.display())))?;
                    let request = NodeStageVolumeRequest {
                        volume_id: volume.external_id.clone(),
                        publish_context: publish_context.clone().into_iter().collect(),
                        staging_target_path: plugin.plugin_path(staging).display().to_string(),
                        volume_capability: Some(capability.clone()),
                        secrets: volume.secrets.clone().into_iter().collect(),
                        volume_context: volume.context.clone().into_iter().collect(),
                    };
                    plugin.client.node_stage_volume(request).await.map_err(|source| HookError::Plugin {
                        op: format!("staging CSI volume {volume_id}"),
                        source,
                    })?;
                }
            }
            if !mounted(&target) {
                let parent = target.parent().expect("targets have a parent");
                std::fs::create_dir_all(parent).map_err(HookError::io(format!("creating {}", parent.display())))?;
                let request = NodePublishVolumeRequest {
                    volume_id: volume.external_id.clone(),
                    publish_context: publish_context.clone().into_iter().collect(),
                    staging_target_path: staging
                        .as_ref()
                        .map(|s| plugin.plugin_path(s).display().to_string())
                        .unwrap_or_default(),
                    target_path: plugin.plugin_path(&target).display().to_string(),
                    volume_capability: Some(capability),
                    readonly: read_only,
                    secrets: volume.secrets.clone().into_iter().collect(),
                    volume_context: volume.context.clone().into_iter().collect(),
                };
                plugin
                    .client
                    .node_publish_volume(request)
                    .await
                    .map_err(|source| HookError::Plugin { op: format!("publishing CSI volume {volume_id}"), source })?;
            }
            res.volume_paths.insert(alias.clone(), (target, read_only));
        }
        Ok(())
    }

    /// Unpublishes (and, for the node's last user, unstages) one record.
    async fn unmount(&self, alloc_id: &str, r: &MountRecord, plugin: &PluginEntry) -> Result<(), HookError> {
        let lock = self.manager.volume_lock(&format!("{}/{}", r.namespace, r.volume_id));
        let _serialised = lock.lock().await;
        let request = NodeUnpublishVolumeRequest {
            volume_id: r.external_id.clone(),
            target_path: plugin.plugin_path(&r.target).display().to_string(),
        };
        plugin
            .client
            .node_unpublish_volume(request)
            .await
            .map_err(|source| HookError::Plugin { op: format!("unpublishing CSI volume {}", r.volume_id), source })?;
        if let Some(per_alloc) = r.target.parent().and_then(Path::parent) {
            let _ = std::fs::remove_dir_all(per_alloc);
        }
        let Some(staging) = &r.staging else { return Ok(()) };
        let others = all_records(&self.manager)
            .into_iter()
            .any(|(other, o)| other != alloc_id && o.staging.as_ref() == Some(staging));
        if others {
            return Ok(());
        }
        let request = NodeUnstageVolumeRequest {
            volume_id: r.external_id.clone(),
            staging_target_path: plugin.plugin_path(staging).display().to_string(),
        };
        plugin
            .client
            .node_unstage_volume(request)
            .await
            .map_err(|source| HookError::Plugin { op: format!("unstaging CSI volume {}", r.volume_id), source })?;
        let _ = std::fs::remove_dir(staging);
        Ok(())
    }

    async fn unmount_all(&self, alloc: &Allocation) -> Result<(), HookError> {
        let mut records = load_records(&self.manager, &alloc.id);
        while let Some(r) = records.last().cloned() {
            let plugin = self
                .manager
                .wait_healthy(&r.plugin_id, Duration::from_secs(30))
                .await
                .map_err(|e| HookError::Unavailable(format!("unpublishing CSI volume {}: {e}", r.volume_id)))?;
            let mut attempt = 0;
            loop {
                match self.unmount(&alloc.id, &r, &plugin).await {
                    Ok(()) => break,
                    Err(e) if attempt < 3 => {
                        attempt += 1;
                        tracing::warn!(volume = %r.volume_id, error = %e, attempt, "unpublishing CSI volume");
                        tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
            records.pop();
            save_records(&self.manager, &alloc.id, &records)?;
        }
        Ok(())
    }
}

impl AllocHook for CsiVolumeHook {
    fn name(&self) -> &'static str {
        super::VOLUME_HOOK
    }

    fn prerun<'a>(&'a self, alloc: &'a Allocation, res: &'a mut HookResources) -> HookResult<'a> {
        self.mount_all(alloc, res).boxed()
    }

    fn postrun<'a>(&'a self, alloc: &'a Allocation) -> HookResult<'a> {
        self.unmount_all(alloc).boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::future::BoxFuture;

    use super::*;
    use crate::wire::node::AllocClientUpdate;

    /// Servers whose claim answer is scripted; counts the claims asked.
    struct Claims {
        answer: fn() -> Result<ClaimGrant, RpcError>,
        asked: AtomicUsize,
    }

    impl ServerRpc for Claims {
        fn register(&self, _: Node) -> BoxFuture<'_, Result<Duration, RpcError>> {
            unimplemented!("not used by the hook")
        }
        fn heartbeat<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<Duration, RpcError>> {
            unimplemented!("not used by the hook")
        }
        fn alloc_indexes<'a>(
            &'a self,
            _: &'a str,
            _: u64,
            _: Duration,
        ) -> BoxFuture<'a, Result<crate::wire::node::NodeAllocIndexes, RpcError>> {
            unimplemented!("not used by the hook")
        }
        fn fetch_allocs<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: Vec<String>,
        ) -> BoxFuture<'a, Result<Vec<Allocation>, RpcError>> {
            unimplemented!("not used by the hook")
        }
        fn update_allocs<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: Vec<AllocClientUpdate>,
        ) -> BoxFuture<'a, Result<(), RpcError>> {
            unimplemented!("not used by the hook")
        }
        fn claim_volumes<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<ClaimGrant, RpcError>> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            let answer = (self.answer)();
            async move { answer }.boxed()
        }
        fn sign_identities<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: crate::wire::identity::SignIdentitiesRequest,
        ) -> BoxFuture<'a, Result<Vec<crate::wire::identity::SignedIdentity>, RpcError>> {
            unimplemented!("not used by the hook")
        }
        fn sync_services<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: &'a str,
            _: Vec<crate::structs::ServiceRegistration>,
        ) -> BoxFuture<'a, Result<(), RpcError>> {
            unimplemented!("not used by the hook")
        }
        fn template_reads<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
            _: crate::wire::template::TemplateReadRequest,
        ) -> BoxFuture<'a, Result<crate::wire::template::TemplateReadAnswer, RpcError>> {
            unimplemented!("not used by the hook")
        }
    }

    fn hook(answer: fn() -> Result<ClaimGrant, RpcError>) -> (CsiVolumeHook, Arc<Claims>) {
        let rpc = Arc::new(Claims { answer, asked: AtomicUsize::new(0) });
        let manager = Arc::new(CsiManager::new(PathBuf::from("/nonexistent"), Duration::from_secs(30)));
        (CsiVolumeHook { manager, rpc: rpc.clone(), node: Arc::new(Node::default()) }, rpc)
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_claim_fails_at_once_and_a_transient_error_is_retried_to_the_deadline() {
        let (refused, rpc) =
            hook(|| Err(RpcError::Refused("allocation a is stopping; it may not claim volumes".into())));
        let started = tokio::time::Instant::now();
        let err = refused.claim(&Allocation::default()).await.unwrap_err();
        assert!(matches!(&err, HookError::Rpc { source: RpcError::Refused(_), .. }), "{err:?}");
        assert!(err.to_string().contains("is stopping"), "{err}");
        assert_eq!((rpc.asked.load(Ordering::SeqCst), started.elapsed()), (1, Duration::ZERO));

        let (unreachable, rpc) = hook(|| Err(RpcError::Failed("connection refused".into())));
        let err = unreachable.claim(&Allocation::default()).await.unwrap_err();
        assert!(matches!(&err, HookError::Rpc { source: RpcError::Failed(_), .. }), "{err:?}");
        assert!(err.to_string().contains("connection refused"), "{err}");
        assert!(rpc.asked.load(Ordering::SeqCst) > 100 && started.elapsed() >= CLAIM_WAIT);
    }
}
