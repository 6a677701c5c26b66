//! Alloc runner hooks: each owns one concern of an allocation's setup and
//! teardown. `build_hooks` returns them in order; prerun runs in that order,
//! postrun and destroy in reverse, and postrun/destroy must be safe to call
//! without prerun (after a client restart, or when prerun failed).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

use super::network::GroupNetwork;
use crate::structs::{Allocation, Node};

/// Outputs hooks share with the task runners and with each other.
#[derive(Debug, Default, Clone)]
pub struct HookResources {
    /// Host paths of the group's volumes, by volume alias.
    pub volume_paths: std::collections::BTreeMap<String, (PathBuf, bool)>,
    /// The group's bridge network, when it has one.
    pub network: Option<Arc<GroupNetwork>>,
    /// Extra host paths bound into a task, by task name.
    pub task_binds: std::collections::BTreeMap<String, Vec<crate::client::driver::VolumeBind>>,
    /// Extra environment of a task (before its own `env`), by task name.
    pub task_env: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
}

/// What a hook step returns.
pub type HookResult<'a> = BoxFuture<'a, Result<(), String>>;

/// A step of allocation setup/teardown.
pub trait AllocHook: Send + Sync {
    /// Name for logs and errors.
    fn name(&self) -> &'static str;
    /// Before any task starts.
    fn prerun<'a>(&'a self, _alloc: &'a Allocation, _res: &'a mut HookResources) -> HookResult<'a> {
        async { Ok(()) }.boxed()
    }
    /// After every task has stopped.
    fn postrun<'a>(&'a self, _alloc: &'a Allocation) -> HookResult<'a> {
        async { Ok(()) }.boxed()
    }
    /// When the allocation is removed from the client.
    fn destroy<'a>(&'a self, _alloc: &'a Allocation) -> HookResult<'a> {
        async { Ok(()) }.boxed()
    }
}

/// Creates Nomad's directory layout and removes it on destroy.
pub struct AllocDirHook {
    /// `<data_dir>/alloc/<alloc id>`.
    pub root: PathBuf,
}

impl AllocHook for AllocDirHook {
    fn name(&self) -> &'static str {
        "alloc_dir"
    }

    fn prerun<'a>(&'a self, alloc: &'a Allocation, _res: &'a mut HookResources) -> HookResult<'a> {
        async move { self.make_dirs(alloc) }.boxed()
    }

    fn destroy<'a>(&'a self, _alloc: &'a Allocation) -> HookResult<'a> {
        async move {
            match std::fs::remove_dir_all(&self.root) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("removing {}: {e}", self.root.display())),
            }
        }
        .boxed()
    }
}

impl AllocDirHook {
    fn make_dirs(&self, alloc: &Allocation) -> Result<(), String> {
        let mut dirs = vec![self.root.join("alloc/data"), self.root.join("alloc/logs"), self.root.join("alloc/tmp")];
        let tg = alloc.group();
        for task in tg.iter().flat_map(|tg| tg.tasks.iter()) {
            for sub in ["local", "secrets", "private", "tmp"] {
                dirs.push(self.root.join(&task.name).join(sub));
            }
        }
        for d in dirs {
            std::fs::create_dir_all(&d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        use std::os::unix::fs::PermissionsExt;
        for task in tg.iter().flat_map(|tg| tg.tasks.iter()) {
            let secrets = self.root.join(&task.name).join("secrets");
            let _ = std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700));
        }
        Ok(())
    }
}

/// Resolves the group's host volumes to paths on this node.
pub struct HostVolumeHook {
    /// The node's declared host volumes.
    pub node: std::sync::Arc<Node>,
}

impl AllocHook for HostVolumeHook {
    fn name(&self) -> &'static str {
        "host_volumes"
    }

    fn prerun<'a>(&'a self, alloc: &'a Allocation, res: &'a mut HookResources) -> HookResult<'a> {
        async move { self.resolve(alloc, res) }.boxed()
    }
}

impl HostVolumeHook {
    fn resolve(&self, alloc: &Allocation, res: &mut HookResources) -> Result<(), String> {
        let tg = alloc.group();
        for (alias, req) in tg.iter().flat_map(|tg| tg.volumes.iter()) {
            if req.volume_type != "host" {
                continue;
            }
            let hv = self
                .node
                .host_volumes
                .get(&req.source)
                .ok_or_else(|| format!("host volume {:?} is not configured on this client", req.source))?;
            if !Path::new(&hv.path).is_dir() {
                return Err(format!("host volume {:?}: path {} does not exist", req.source, hv.path));
            }
            res.volume_paths.insert(alias.clone(), (PathBuf::from(&hv.path), req.read_only || hv.read_only));
        }
        Ok(())
    }
}

/// The ordered hook list of an allocation.
pub fn build_hooks(root: PathBuf, deps: &super::RunnerDeps) -> Vec<Box<dyn AllocHook>> {
    vec![
        Box::new(AllocDirHook { root }),
        Box::new(super::network::NetworkHook::new(
            deps.network.clone(),
            deps.external_cni.clone(),
            deps.drivers.clone(),
        )),
        Box::new(HostVolumeHook { node: deps.node.clone() }),
        Box::new(crate::client::csi::plugin_hook::CsiPluginHook {
            manager: deps.csi.clone(),
            cancel: tokio_util::sync::CancellationToken::new(),
        }),
        Box::new(crate::client::csi::volume_hook::CsiVolumeHook {
            manager: deps.csi.clone(),
            rpc: deps.rpc.clone(),
            node: deps.node.clone(),
        }),
    ]
}
