//! The alloc runner's hook list (`build_hooks`, in order) and the hooks
//! that belong to no other concern: the allocation directory and host
//! volumes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::FutureExt;

use crate::client::control::TaskRequester;
use crate::client::hook::{AllocHook, HookError, HookResources, HookResult};
use crate::structs::{Allocation, Node};

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
                Err(e) => Err(HookError::io(format!("removing {}", self.root.display()))(e)),
            }
        }
        .boxed()
    }
}

impl AllocDirHook {
    fn make_dirs(&self, alloc: &Allocation) -> Result<(), HookError> {
        let mut dirs = vec![self.root.join("alloc/data"), self.root.join("alloc/logs"), self.root.join("alloc/tmp")];
        let tg = alloc.group();
        for task in tg.iter().flat_map(|tg| tg.tasks.iter()) {
            for sub in ["local", "secrets", "private", "tmp"] {
                dirs.push(self.root.join(&task.name).join(sub));
            }
        }
        for d in dirs {
            std::fs::create_dir_all(&d).map_err(HookError::io(format!("creating {}", d.display())))?;
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
    pub node: Arc<Node>,
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
    fn resolve(&self, alloc: &Allocation, res: &mut HookResources) -> Result<(), HookError> {
        let tg = alloc.group();
        for (alias, req) in tg.iter().flat_map(|tg| tg.volumes.iter()) {
            if req.volume_type != "host" {
                continue;
            }
            let hv = self.node.host_volumes.get(&req.source).ok_or_else(|| {
                HookError::Unavailable(format!("host volume {:?} is not configured on this client", req.source))
            })?;
            if !Path::new(&hv.path).is_dir() {
                return Err(HookError::Unavailable(format!(
                    "host volume {:?}: path {} does not exist",
                    req.source, hv.path
                )));
            }
            res.volume_paths.insert(alias.clone(), (PathBuf::from(&hv.path), req.read_only || hv.read_only));
        }
        Ok(())
    }
}

/// Hands a hook's requests to the runner's tasks. Weak: the hook does not
/// keep the runner's channel open.
fn requester(commands: tokio::sync::mpsc::WeakUnboundedSender<super::AllocCommand>) -> TaskRequester {
    Arc::new(move |task, action, reply| {
        let Some(commands) = commands.upgrade() else { return false };
        commands.send(super::AllocCommand::Control { task: Some(task), action, reply }).is_ok()
    })
}

/// The ordered hook list of an allocation; `commands` reaches its runner.
pub fn build_hooks(
    root: PathBuf,
    deps: &super::RunnerDeps,
    commands: tokio::sync::mpsc::WeakUnboundedSender<super::AllocCommand>,
) -> Vec<Box<dyn AllocHook>> {
    vec![
        Box::new(AllocDirHook { root: root.clone() }),
        Box::new(crate::client::network::NetworkHook::new(
            deps.network.clone(),
            deps.external_cni.clone(),
            deps.drivers.clone(),
        )),
        Box::new(HostVolumeHook { node: deps.node.clone() }),
        Box::new(crate::client::identity::IdentityHook {
            rpc: deps.rpc.clone(),
            node: deps.node.clone(),
            root,
            renewals: tokio_util::sync::CancellationToken::new(),
            tasks: requester(commands.clone()),
        }),
        Box::new(crate::client::services::ServiceHook::new(
            deps.rpc.clone(),
            deps.node.clone(),
            deps.drivers.clone(),
            deps.checks.clone(),
            requester(commands),
        )),
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
