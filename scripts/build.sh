#!/usr/bin/env bash
# Installs dependencies (idempotent), builds microvm into build/, and builds
# the guest kernel (cached; a matching key never rebuilds). Afterwards:
#   build/bin/microvm, build/bin/microvm-runner, build/bin/microvm-init
#   build/share/microvm/{vmlinux,initramfs.cpio,poweroff.cpio}
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-RelWithDebInfo}" >/dev/null
cmake --build build --parallel "$(( $(nproc) + 1 ))"
vmlinux=$(./kernel/build.sh)
ln -sfn "$vmlinux" build/share/microvm/vmlinux
