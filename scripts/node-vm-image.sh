#!/usr/bin/env bash
# Builds (once) the test node VM's image from Debian packages and prints the
# directory holding it:
#   vmlinuz       Debian's own kernel (linux-image-*-amd64, unpacked, not installed)
#   initrd.img    busybox + the modules to mount the root disk, then switch_root
#   root.img      ext4 root: a debootstrapped Debian with open-iscsi,
#                 multipath-tools, udev, e2fsprogs, xfsprogs, tini, and the
#                 kernel's storage, network and filesystem modules
# The image is cached in /var/cache/berth-nodevm/<key> (BERTH_NODEVM_CACHE
# overrides the parent), where the key hashes this script, the kernel
# package version and the suite, so it is rebuilt when an input changes.
# Tests boot it with QEMU (see nodevm/); `--print` only prints the directory
# of a built image and fails when there is none.
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

suite=bookworm
packages=open-iscsi,multipath-tools,udev,kmod,iproute2,tini,e2fsprogs,xfsprogs,util-linux,procps,psmisc,lsscsi,sg3-utils,socat
cache="${BERTH_NODEVM_CACHE:-/var/cache/berth-nodevm}"

kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}'
}

key_of() {
  local kpkg="$1" kver
  kver=$(apt-cache policy "$kpkg" 2>/dev/null | awk '/Candidate:/{print $2}')
  printf '%s\n' "$suite" "$packages" "$kpkg" "$kver" "$(sha256sum "$0" | cut -d' ' -f1)" | sha256sum | cut -c1-16
}

if [ "${1:-}" = "--print" ]; then
  kpkg=$(kernel_package)
  dir="$cache/$(key_of "$kpkg")"
  [ -f "$dir/ready" ] || { log "no node VM image at $dir: run scripts/node-vm-image.sh"; exit 1; }
  echo "$dir"
  exit 0
fi

ensure_qemu_system
apt_install debootstrap busybox-static cpio kmod e2fsprogs xz-utils
kpkg=$(kernel_package)
if [ -z "$kpkg" ]; then
  apt_update_now
  kpkg=$(kernel_package)
fi
[ -n "$kpkg" ] || { log "apt knows no linux-image-amd64 dependency"; exit 1; }
dir="$cache/$(key_of "$kpkg")"
if [ -f "$dir/ready" ]; then
  echo "$dir"
  exit 0
fi

log "building the node VM image ($kpkg, $suite) in $dir"
mkdir -p "$cache"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The kernel package, unpacked.
(cd "$work" && apt_get download "$kpkg" >/dev/null 2>&1) || { log "cannot download $kpkg"; exit 1; }
dpkg-deb -x "$work"/linux-image-*.deb "$work/kernel"
kver=$(ls "$work/kernel/lib/modules")
depmod -b "$work/kernel" "$kver"
modules="$work/kernel/lib/modules/$kver"

# The root: a minimal Debian with the node-side storage tools.
debootstrap --variant=minbase --include="$packages" "$suite" "$work/root" "$(debian_mirror)" \
  >"$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; log "debootstrap failed"; exit 1; }
rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
# Unit files and the package's generated name are not used: the init below
# starts the daemons and each VM gets its own initiator name at boot.
rm -f "$work/root/etc/iscsi/initiatorname.iscsi"

# Kernel modules a storage/network test node needs (no GPU, sound, media,
# wireless or USB drivers), indexed for modprobe.
target="$work/root/lib/modules/$kver"
mkdir -p "$target/kernel/drivers/net"
cp -a "$modules"/modules.builtin* "$modules"/modules.order "$target/"
for sub in arch block crypto fs lib mm net virt drivers/block drivers/md drivers/scsi drivers/virtio \
           drivers/char drivers/nvdimm drivers/target; do
  [ -d "$modules/kernel/$sub" ] && mkdir -p "$target/kernel/$(dirname "$sub")" && cp -a "$modules/kernel/$sub" "$target/kernel/$sub"
done
find "$modules/kernel/drivers/net" -maxdepth 1 -name '*.ko*' -exec cp -a {} "$target/kernel/drivers/net/" \;
depmod -b "$work/root" "$kver"

# The init the guest runs under tini: mounts, modules, udev, network,
# the host shares, the daemons asked for, then the test agent.
cat >"$work/root/sbin/nodevm-init" <<'INIT'
#!/bin/sh
# nodevm-init: brings the test node up (see scripts/node-vm-image.sh).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^nodevm\.$1=//p" | tail -n1; }
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/lock /run/lock/iscsi
mount -t tmpfs tmpfs /tmp
mount -o remount,rw /
name=$(arg hostname)
hostname "${name:-nodevm}"
for m in virtio_net 9pnet_virtio 9p sd_mod iscsi_tcp dm_mod dm_multipath dm_round_robin dm_service_time \
         scsi_dh_alua ext4 xfs loop; do
  modprobe -q "$m" || echo "nodevm-init: modprobe $m failed" >&2
done
/lib/systemd/systemd-udevd --daemon
udevadm trigger --action=add
udevadm settle --timeout=10
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
ip route add default via 10.0.2.2
mkdir -p /host/bin /host/work
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose bin /host/bin
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 work /host/work
# Files the test put in place (e.g. /etc/multipath.conf), then the daemons.
[ -d /host/work/rootfs ] && cp -a /host/work/rootfs/. /
name=$(arg initiator)
[ -n "$name" ] && echo "InitiatorName=$name" >/etc/iscsi/initiatorname.iscsi
for service in $(arg services | tr ',' ' '); do
  case "$service" in
    iscsid) iscsid ;;
    multipathd) multipathd ;;
    *) echo "nodevm-init: unknown service $service" >&2 ;;
  esac
done
echo "nodevm-init: up" >/dev/ttyS0
exec /host/bin/nodevm agent --listen 10.0.2.15:7000
INIT
chmod 0755 "$work/root/sbin/nodevm-init"
echo nodevm >"$work/root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 nodevm\n' >"$work/root/etc/hosts"

# The initramfs: busybox, the modules to reach an ext4 virtio disk, /init.
ird="$work/initrd"
mkdir -p "$ird/bin" "$ird/lib/modules" "$ird/dev" "$ird/proc" "$ird/sys" "$ird/newroot"
cp /bin/busybox "$ird/bin/busybox"
for applet in sh mount umount insmod switch_root mkdir sleep echo cat; do ln -s busybox "$ird/bin/$applet"; done
: >"$ird/lib/modules/order"
for m in virtio_pci virtio_blk ext4; do
  modprobe -d "$work/kernel" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
  name=$(basename "$ko")
  case "$name" in *.xz) xz -dc "$ko" >"$ird/lib/modules/${name%.xz}"; name=${name%.xz} ;;
                  *.zst) zstd -qdc "$ko" >"$ird/lib/modules/${name%.zst}"; name=${name%.zst} ;;
                  *) cp "$ko" "$ird/lib/modules/$name" ;; esac
  echo "$name" >>"$ird/lib/modules/order"
done
cat >"$ird/init" <<'INIT'
#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do insmod "/lib/modules/$m" 2>/dev/null; done
for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do [ -b /dev/vda ] && break; sleep 0.1; done
mount -t ext4 -o rw /dev/vda /newroot || { echo "initrd: cannot mount /dev/vda"; exec sh; }
umount /proc /sys /dev
exec switch_root /newroot /usr/bin/tini -s -- /sbin/nodevm-init
INIT
chmod 0755 "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.img"

mkdir -p "$dir.tmp"
cp "$work/kernel/boot/vmlinuz-$kver" "$dir.tmp/vmlinuz"
mv "$work/initrd.img" "$dir.tmp/initrd.img"
mke2fs -q -t ext4 -L nodevm-root -d "$work/root" "$dir.tmp/root.img" 4G
echo "$kpkg $kver $suite" >"$dir.tmp/ready"
rm -rf "$dir"
mv "$dir.tmp" "$dir"
# Images built from older inputs are not used again.
for old in "$cache"/*/ready; do
  [ "$(dirname "$old")" = "$dir" ] || rm -rf "$(dirname "$old")"
done
log "node VM image ready: $dir"
echo "$dir"
