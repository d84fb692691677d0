#!/usr/bin/env bash
# Builds the microvm guest kernel (a PVH-bootable vmlinux) from Debian's
# linux-source-6.1 package: `make tinyconfig`, then kernel/microvm.config
# merged over it. The result is cached under a key made of the source
# package's version and the hash of the fragment and this script, so a
# matching key never rebuilds. Prints the cached vmlinux path on stdout.
#
#   kernel/build.sh            build (or reuse) and print the path
#   kernel/build.sh --key      print the cache key only
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
fragment="$here/microvm.config"
tarball=/usr/src/linux-source-6.1.tar.xz
cache_root="${MICROVM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/microvm}/kernel"

[ -f "$tarball" ] || { echo "kernel/build.sh: $tarball missing; run scripts/deps.sh" >&2; exit 1; }
source_version=$(dpkg-query -W -f='${Version}' linux-source-6.1)
config_hash=$(cat "$fragment" "$0" | sha256sum | cut -c1-16)
key="linux-${source_version}-${config_hash}"
if [ "${1:-}" = "--key" ]; then echo "$key"; exit 0; fi

out="$cache_root/$key"
if [ -f "$out/vmlinux" ]; then echo "$out/vmlinux"; exit 0; fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9
if [ -f "$out/vmlinux" ]; then echo "$out/vmlinux"; exit 0; fi   # built while we waited

work=$(mktemp -d "$cache_root/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
echo "kernel: building $key (takes about 5 minutes on 2 cores)" >&2
tar -xf "$tarball" -C "$work"
src="$work/linux-source-6.1"
make -C "$src" -s tinyconfig >/dev/null
"$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$fragment" >/dev/null
make -C "$src" -s olddefconfig >/dev/null

# Fail loudly if Kconfig dropped an option we asked for (a missing dependency).
missing=0
while IFS= read -r line; do
  case "$line" in
    CONFIG_*=y) grep -qx "$line" "$src/.config" || { echo "kernel: $line did not survive olddefconfig" >&2; missing=1; } ;;
    "# CONFIG_"*" is not set") opt=${line#\# }; opt=${opt%% *}
      grep -q "^$opt=" "$src/.config" && { echo "kernel: $opt should be off" >&2; missing=1; } ;;
  esac
done < "$fragment"
[ "$missing" -eq 0 ] || exit 1

make -C "$src" -s -j"$(( $(nproc) + 1 ))" vmlinux >&2
mkdir -p "$work/out"
cp "$src/vmlinux" "$work/out/vmlinux"
cp "$src/.config" "$work/out/config"
rm -rf "$out"
mv "$work/out" "$out"
echo "kernel: built $key in $(( $(date +%s) - start ))s" >&2
echo "$out/vmlinux"
