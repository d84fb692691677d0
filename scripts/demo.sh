#!/usr/bin/env bash
# Quick start (a): installs, builds, then boots a microVM from a busybox
# rootfs and prints what the workload printed inside the guest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh
rootfs=$(mktemp -d /tmp/microvm-demo-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
./scripts/make-rootfs.sh "$rootfs"
echo "+ microvm run --rm --rootfs $rootfs -- /bin/sh -c '...'" >&2
build/bin/microvm run --rm --rootfs "$rootfs" -e GREETING="Hello from a microVM" -- \
  /bin/sh -c 'echo "$GREETING"; echo "kernel: $(uname -srm)"; echo "hostname: $(hostname), uid: $(id -u), pid: $$"'
