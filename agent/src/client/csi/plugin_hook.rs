//! The alloc hook of CSI plugin tasks (`csi_plugin` blocks): makes the
//! socket and staging directories, gives the task its mounts (docker:
//! socket dir at `mount_dir`, staging root at `stage_publish_base_dir`,
//! `/dev`, with shared propagation) and `CSI_ENDPOINT`, supervises the
//! plugin while it runs, and marks it unhealthy when the task stops.

use std::path::PathBuf;
use std::sync::Arc;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::manager::CsiManager;
use crate::client::driver::VolumeBind;
use crate::client::hook::{AllocHook, HookError, HookResources, HookResult};
use crate::structs::{Allocation, CsiPluginConfig};

/// Runs the `csi_plugin` tasks of an allocation.
pub struct CsiPluginHook {
    /// The node's plugin registry.
    pub manager: Arc<CsiManager>,
    /// Stops the supervisors.
    pub cancel: CancellationToken,
}

fn plugins(alloc: &Allocation) -> Vec<(String, String, CsiPluginConfig)> {
    alloc
        .group()
        .map(|tg| {
            tg.tasks
                .iter()
                .filter_map(|t| t.csi_plugin_config.clone().map(|c| (t.name.clone(), t.driver.clone(), c)))
                .collect()
        })
        .unwrap_or_default()
}

impl AllocHook for CsiPluginHook {
    fn name(&self) -> &'static str {
        "csi_plugin_supervisor"
    }

    fn prerun<'a>(&'a self, alloc: &'a Allocation, res: &'a mut HookResources) -> HookResult<'a> {
        async move {
            for (task, driver, cfg) in plugins(alloc) {
                let dirs = self.manager.plugin_dirs(&alloc.id, &cfg);
                for d in [&dirs.socket_dir, &dirs.host_root] {
                    std::fs::create_dir_all(d).map_err(HookError::io(format!("creating {}", d.display())))?;
                }
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&dirs.host_root, std::fs::Permissions::from_mode(0o700));
                let mount_dir = if cfg.mount_dir.is_empty() { "/csi".to_string() } else { cfg.mount_dir.clone() };
                let base = if cfg.stage_publish_base_dir.is_empty() {
                    "/local/csi".to_string()
                } else {
                    cfg.stage_publish_base_dir.clone()
                };
                // Drivers without filesystem isolation see the host paths.
                let isolated = driver == "docker";
                let (endpoint_dir, plugin_root) = if isolated {
                    self.manager.share_root()?;
                    let binds = res.task_binds.entry(task.clone()).or_default();
                    binds.push(VolumeBind::shared(dirs.socket_dir.clone(), &mount_dir));
                    binds.push(VolumeBind::shared(dirs.host_root.clone(), &base));
                    binds.push(VolumeBind::shared(PathBuf::from("/dev"), "/dev"));
                    (PathBuf::from(&mount_dir), PathBuf::from(&base))
                } else {
                    (dirs.socket_dir.clone(), dirs.host_root.clone())
                };
                res.task_env
                    .entry(task.clone())
                    .or_default()
                    .insert("CSI_ENDPOINT".into(), format!("unix://{}", endpoint_dir.join("csi.sock").display()));
                let supervisor =
                    self.manager.clone().supervise(alloc.id.clone(), cfg, dirs, plugin_root, self.cancel.child_token());
                tokio::spawn(supervisor);
            }
            Ok(())
        }
        .boxed()
    }

    fn postrun<'a>(&'a self, alloc: &'a Allocation) -> HookResult<'a> {
        async move {
            self.cancel.cancel();
            for (_, _, cfg) in plugins(alloc) {
                self.manager.stopped(&cfg.id, &alloc.id);
                let dirs = self.manager.plugin_dirs(&alloc.id, &cfg);
                let _ = std::fs::remove_dir_all(&dirs.socket_dir);
            }
            Ok(())
        }
        .boxed()
    }
}
