//! [`Image`]: the node VM's kernel, initramfs and root disk, built once by
//! `scripts/node-vm-image.sh` and cached outside the checkout.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::VmError;

/// A built image: `vmlinuz`, `initrd.img`, `root.img` in one directory.
#[derive(Clone, Debug)]
pub struct Image {
    dir: PathBuf,
}

impl Image {
    /// The image, built first when missing or out of date (as root, from
    /// Debian packages; about a minute). Looked up once per process.
    pub fn get() -> Result<Image, VmError> {
        static IMAGE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        let found = IMAGE.get_or_init(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/node-vm-image.sh");
            let output = Command::new("bash")
                .arg(&script)
                .output()
                .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
            let stdout = String::from_utf8_lossy(&output.stdout);
            let dir = stdout.lines().last().map(str::trim).unwrap_or_default();
            if !output.status.success() || dir.is_empty() {
                let stderr = String::from_utf8_lossy(&output.stderr);
                return Err(format!("{} failed ({}): {}", script.display(), output.status, stderr.trim()));
            }
            Ok(PathBuf::from(dir))
        });
        match found {
            Ok(dir) => Ok(Image { dir: dir.clone() }),
            Err(e) => Err(VmError::Image(e.clone())),
        }
    }

    /// The kernel.
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    /// The initramfs.
    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initrd.img")
    }

    /// The root disk (never written: each VM boots an overlay of it).
    pub fn root(&self) -> PathBuf {
        self.dir.join("root.img")
    }

    /// The cache directory the image lives in (the KVM probe's verdict is
    /// kept beside it).
    pub fn cache_dir(&self) -> &Path {
        self.dir.parent().unwrap_or(&self.dir)
    }
}
