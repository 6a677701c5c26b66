//! Alloc runner hooks: each owns one concern of an allocation's setup and
//! teardown. `build_hooks` returns them in order; prerun runs in that order,
//! postrun and destroy in reverse, and postrun/destroy must be safe to call
//! without prerun (after a client restart, or when prerun failed).

use std::path::{Path, PathBuf};

use crate::structs::{Allocation, Node};

/// Outputs hooks share with the task runners and with each other.
#[derive(Debug, Default, Clone)]
pub struct HookResources {
    /// Host paths of the group's volumes, by volume alias.
    pub volume_paths: std::collections::BTreeMap<String, (PathBuf, bool)>,
}

/// A step of allocation setup/teardown.
pub trait AllocHook: Send + Sync {
    /// Name for logs and errors.
    fn name(&self) -> &'static str;
    /// Before any task starts.
    fn prerun(&self, _alloc: &Allocation, _res: &mut HookResources) -> Result<(), String> {
        Ok(())
    }
    /// After every task has stopped.
    fn postrun(&self, _alloc: &Allocation) -> Result<(), String> {
        Ok(())
    }
    /// When the allocation is removed from the client.
    fn destroy(&self, _alloc: &Allocation) -> Result<(), String> {
        Ok(())
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

    fn prerun(&self, alloc: &Allocation, _res: &mut HookResources) -> Result<(), String> {
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

    fn destroy(&self, _alloc: &Allocation) -> Result<(), String> {
        match std::fs::remove_dir_all(&self.root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("removing {}: {e}", self.root.display())),
        }
    }
}

/// Network setup. Host mode needs nothing; other modes are refused until
/// the built-in bridge networker is available on this client.
pub struct NetworkHook;

impl AllocHook for NetworkHook {
    fn name(&self) -> &'static str {
        "network"
    }

    fn prerun(&self, alloc: &Allocation, _res: &mut HookResources) -> Result<(), String> {
        for net in &alloc.allocated_resources.shared.networks {
            match net.mode.as_str() {
                "" | "host" | "none" => {}
                other => return Err(format!("network mode {other:?} is not supported on this client yet")),
            }
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

    fn prerun(&self, alloc: &Allocation, res: &mut HookResources) -> Result<(), String> {
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
pub fn build_hooks(root: PathBuf, node: std::sync::Arc<Node>) -> Vec<Box<dyn AllocHook>> {
    vec![Box::new(AllocDirHook { root }), Box::new(NetworkHook), Box::new(HostVolumeHook { node })]
}
