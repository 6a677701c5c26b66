# Shared helpers for berth's scripts: install what a fresh Debian/Ubuntu
# machine lacks, idempotently. Sourced, not run.

set -euo pipefail

log() { printf '==> %s\n' "$*" >&2; }

# apt_get ARGS...: apt-get that waits (up to 15 minutes) for another apt or
# dpkg holding the lock, e.g. Ubuntu's unattended-upgrades on a first boot.
apt_get() {
  local out rc
  for _ in $(seq 1 90); do
    rc=0
    out=$(DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@" 2>&1) || rc=$?
    if [ "$rc" -ne 0 ] && grep -qE 'Could not get lock|Unable to lock|is another process using it' <<<"$out"; then
      log "another apt/dpkg holds the lock; waiting"
      sleep 10
      continue
    fi
    [ "$rc" -eq 0 ] || printf '%s\n' "$out" >&2
    return "$rc"
  done
  log "apt/dpkg stayed locked for 15 minutes"
  return 1
}

# apt_update_now: refreshes the package lists.
apt_update_now() {
  apt_get update -qq
  mkdir -p /var/lib/apt/periodic && touch /var/lib/apt/periodic/berth-updated
}

# apt_install PKG... : installs the packages that are missing.
apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    log "need root to install: ${missing[*]}"; return 1
  fi
  log "installing ${missing[*]}"
  if [ ! -f /var/lib/apt/periodic/berth-updated ] || [ -n "$(find /var/lib/apt/periodic/berth-updated -mmin +360 2>/dev/null)" ]; then
    apt_update_now
  fi
  apt_get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ensure_toolchain: a Rust toolchain new enough for the workspace.
ensure_toolchain() {
  apt_install ca-certificates gcc libc6-dev pkg-config procps
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    log "no Rust toolchain found; installing Debian's cargo (berth needs Rust >= 1.85)"
    apt_install cargo rustc
  fi
}

# ensure_docker: Debian's Docker engine, installed and running.
ensure_docker() {
  if ! command -v dockerd >/dev/null 2>&1; then
    apt_install docker.io iptables
  fi
  if docker info >/dev/null 2>&1; then
    return 0
  fi
  if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
    systemctl start docker || true
  fi
  if ! docker info >/dev/null 2>&1; then
    log "starting dockerd (log: /var/log/berth-dockerd.log)"
    nohup dockerd >/var/log/berth-dockerd.log 2>&1 &
  fi
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && return 0
    sleep 1
  done
  log "dockerd did not start; see /var/log/berth-dockerd.log"
  return 1
}

# debian_mirror: the mirror this machine's apt uses.
debian_mirror() {
  local m
  m=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
      | grep -v security | head -n1 | awk '{print $2}')
  echo "${m:-http://deb.debian.org/debian}"
}

# ensure_iscsi_userspace: what the userspace iSCSI initiator and dsm-sim's
# iSCSI export need: tgt (tgtd/tgtadm), FUSE, and qemu-storage-daemon with
# its libiscsi block driver. qemu-block-extra must be the exact version of
# qemu-utils; when a newer qemu-utils came from bookworm-backports (as on
# some images), the matching module is taken from there too.
ensure_iscsi_userspace() {
  apt_install tgt fuse3 qemu-utils
  local want have
  want=$(dpkg-query -W -f='${Version}' qemu-utils)
  have=$(dpkg-query -W -f='${Version}' qemu-block-extra 2>/dev/null || true)
  [ "$have" = "$want" ] && return 0
  if ! apt-cache madison qemu-block-extra | grep -qF " $want "; then
    if [[ "$want" == *bpo12* ]]; then
      log "qemu-utils $want is from bookworm-backports: adding that source for qemu-block-extra"
      echo "deb $(debian_mirror) bookworm-backports main" > /etc/apt/sources.list.d/berth-backports.list
    fi
    apt_update_now
  fi
  log "installing qemu-block-extra=$want"
  apt_get install -y -qq --no-install-recommends "qemu-block-extra=$want" >/dev/null
}

# ensure_qemu_system: qemu-system-x86 (the test node VM) of the same
# version as qemu-utils, from bookworm-backports when qemu-utils is.
ensure_qemu_system() {
  ensure_iscsi_userspace
  local want have
  want=$(dpkg-query -W -f='${Version}' qemu-utils)
  have=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)
  [ "$have" = "$want" ] && return 0
  log "installing qemu-system-x86=$want"
  if [[ "$want" == *bpo12* ]]; then
    apt_get install -y -qq --no-install-recommends -t bookworm-backports "qemu-system-x86=$want" >/dev/null
  else
    apt_get install -y -qq --no-install-recommends "qemu-system-x86=$want" >/dev/null
  fi
}
