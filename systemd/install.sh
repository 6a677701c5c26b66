#!/bin/sh
# Installs berth as a systemd service: a thin wrapper around `berth install`.
#   curl -LO https://…/berth && sh install.sh --client --servers 192.168.1.10:4647 --synology synology-iscsi.yaml
# Uses ./berth (or $BERTH) as the binary to install; all arguments go to
# `berth install` (see `berth install --help`). Run as root.
set -eu
bin="${BERTH:-./berth}"
if [ ! -x "$bin" ]; then
  echo "install.sh: $bin not found or not executable; download the berth binary first (or set BERTH=path)" >&2
  exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (sudo sh install.sh ...)" >&2
  exit 1
fi
exec "$bin" install --binary "$bin" "$@"
