#!/usr/bin/env bash
# Builds the local test images without any registry (debootstrap + docker
# import), skipping those that exist:
#   berth-test/tiny:latest     busybox (static) for generic tasks
#   berth-test/mariadb:latest  Debian's MariaDB behaving like the official
#                              mysql image (MYSQL_ROOT_PASSWORD, first-start
#                              initialisation of an empty data dir, --datadir)
# BERTH_REBUILD_IMAGES=1 rebuilds them.
source "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
ensure_docker
apt_install debootstrap busybox-static

have() { [ -z "${BERTH_REBUILD_IMAGES:-}" ] && docker image inspect "$1" >/dev/null 2>&1; }

if ! have berth-test/tiny:latest; then
  log "building berth-test/tiny:latest"
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/tmp" "$root/etc"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
  done
  echo "root:x:0:0:root:/:/bin/sh" > "$root/etc/passwd"
  tar -C "$root" -c . | docker import -c 'CMD ["/bin/sh"]' -c 'ENV PATH=/bin' - berth-test/tiny:latest >/dev/null
  rm -rf "$root"
fi

if ! have berth-test/mariadb:latest; then
  log "building berth-test/mariadb:latest (debootstrap; a few minutes)"
  root=$(mktemp -d)
  debootstrap --variant=minbase --include=mariadb-server,mariadb-client bookworm "$root" "$(debian_mirror)" >/tmp/berth-debootstrap.log 2>&1 \
    || { log "debootstrap failed; see /tmp/berth-debootstrap.log"; exit 1; }
  install -m 0755 images/mariadb/docker-entrypoint.sh "$root/usr/local/bin/docker-entrypoint.sh"
  rm -rf "$root/var/lib/mysql/"* "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
  tar -C "$root" -c . | docker import \
    -c 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' \
    -c 'CMD ["mariadbd"]' \
    -c 'EXPOSE 3306' \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - berth-test/mariadb:latest >/dev/null
  rm -rf "$root"
fi
log "test images ready"
