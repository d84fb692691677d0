#!/usr/bin/env bash
# Installs every host package microvm needs to build, boot and test.
# Idempotent: packages already present are not reinstalled.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libgtest-dev libgmock-dev libcli11-dev nlohmann-json3-dev libssl-dev
  libarchive-dev libzstd-dev libcurl4-openssl-dev libseccomp-dev
  qemu-system-x86 qemu-utils e2fsprogs busybox-static cpio
  linux-source-6.1 bc bison flex libelf-dev xz-utils rsync
  python3 jq docker-registry skopeo umoci apache2-utils
  libslirp-dev libglib2.0-dev dnsmasq-base iproute2
  podman conmon catatonit containernetworking-plugins tmux containerd
  libboost-dev python3-pytest python3-yaml wrk curl
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "microvm: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
