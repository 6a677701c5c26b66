//! Node-side helpers against real loop devices and mounts (root). Every
//! device, mount and file is the test's own and is removed when it ends,
//! panics included.

use std::path::{Path, PathBuf};
use std::process::Command;

use csi::mount;

/// A sparse file attached to a loop device; detached when dropped.
struct Loop {
    dev: PathBuf,
    file: PathBuf,
}

impl Loop {
    fn new(dir: &Path, name: &str, mib: u64) -> Loop {
        let file = dir.join(name);
        std::fs::File::create(&file).unwrap().set_len(mib << 20).unwrap();
        let out = Command::new("losetup").args(["--find", "--show"]).arg(&file).output().unwrap();
        assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        Loop { dev: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()), file }
    }

    fn grow(&self, mib: u64) {
        std::fs::OpenOptions::new().write(true).open(&self.file).unwrap().set_len(mib << 20).unwrap();
        assert!(Command::new("losetup").arg("-c").arg(&self.dev).status().unwrap().success());
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

/// Mount points unmounted (lazily) when dropped, innermost first.
struct Mounts(Vec<PathBuf>);

impl Drop for Mounts {
    fn drop(&mut self) {
        for m in self.0.iter().rev() {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

#[test]
fn formats_once_mounts_publishes_read_only_and_grows() {
    let dir = tempfile::tempdir().unwrap();
    let lo = Loop::new(dir.path(), "vol.img", 64);
    let staging = dir.path().join("staging");
    let (rw, ro) = (dir.path().join("publish-rw"), dir.path().join("publish-ro"));
    let _mounts = Mounts(vec![staging.clone(), rw.clone(), ro.clone()]);

    assert_eq!(mount::signature(&lo.dev).unwrap(), None);
    assert_eq!(mount::format_if_blank(&lo.dev, "ext4").unwrap(), "ext4");
    assert_eq!(mount::signature(&lo.dev).unwrap().as_deref(), Some("ext4"));
    mount::mount_device(&lo.dev, &staging, "ext4", &["noatime".into()], false).unwrap();
    mount::mount_device(&lo.dev, &staging, "ext4", &["noatime".into()], false).unwrap();
    std::fs::write(staging.join("data"), b"kept").unwrap();

    mount::bind(&staging, &rw, false).unwrap();
    mount::bind(&staging, &ro, true).unwrap();
    std::fs::write(rw.join("more"), b"x").unwrap();
    let e = std::fs::write(ro.join("nope"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(EROFS), "{e}");
    assert_eq!(std::fs::read(ro.join("data")).unwrap(), b"kept");

    let before = mount::usage(&staging).unwrap();
    assert!(before.total_bytes > 40 << 20 && before.total_bytes <= 64 << 20, "{before:?}");
    lo.grow(128);
    if let Err(e) = mount::grow(&lo.dev, &staging) {
        // Online growth needs CAP_SYS_RESOURCE, which some sandboxes drop.
        assert!(e.to_string().contains("Permission denied"), "{e}");
        for p in [&ro, &rw, &staging] {
            mount::unmount(p).unwrap();
        }
        mount::grow_offline(&lo.dev).unwrap();
        mount::mount_device(&lo.dev, &staging, "ext4", &[], false).unwrap();
    }
    let after = mount::usage(&staging).unwrap();
    assert!(after.total_bytes > before.total_bytes * 18 / 10, "{before:?} -> {after:?}");

    assert_eq!(std::fs::read(staging.join("data")).unwrap(), b"kept");
    for p in [&ro, &rw, &staging] {
        mount::unmount(p).unwrap();
        assert!(mount::mounted_source(p).is_none());
        assert!(!p.exists());
    }
    mount::unmount(&staging).unwrap();
}

#[test]
fn a_device_holding_data_is_never_formatted() {
    let dir = tempfile::tempdir().unwrap();
    let lo = Loop::new(dir.path(), "data.img", 32);
    let staging = dir.path().join("staging");
    let _mounts = Mounts(vec![staging.clone()]);
    mount::format_if_blank(&lo.dev, "ext4").unwrap();
    mount::mount_device(&lo.dev, &staging, "ext4", &[], false).unwrap();
    std::fs::write(staging.join("precious"), b"do not lose").unwrap();
    mount::unmount(&staging).unwrap();

    // Asked for another filesystem: the existing one is kept, with its data.
    assert_eq!(mount::format_if_blank(&lo.dev, "xfs").unwrap(), "ext4");
    mount::mount_device(&lo.dev, &staging, "ext4", &[], true).unwrap();
    assert_eq!(std::fs::read(staging.join("precious")).unwrap(), b"do not lose");
}

#[test]
fn a_target_mounted_from_another_device_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (Loop::new(dir.path(), "a.img", 32), Loop::new(dir.path(), "b.img", 32));
    let staging = dir.path().join("staging");
    let _mounts = Mounts(vec![staging.clone()]);
    for lo in [&a, &b] {
        mount::format_if_blank(&lo.dev, "ext4").unwrap();
    }
    mount::mount_device(&a.dev, &staging, "ext4", &[], false).unwrap();
    let e = mount::mount_device(&b.dev, &staging, "ext4", &[], false).unwrap_err().to_string();
    assert!(e.contains("is already a mount of"), "{e}");
    let e = mount::format_if_blank(&a.dev, "btrfs");
    assert_eq!(e.unwrap(), "ext4", "a formatted device is left alone before the fs_type is even looked at");
}

/// "Read-only file system".
const EROFS: i32 = 30;
