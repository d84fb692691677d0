#!/usr/bin/env bash
# The library as an embedder gets it: `cmake --install` into a scratch prefix,
# then, against that prefix only:
#   - examples/consumer (find_package(microvm)): a C++ program and the C
#     example, built out of tree, each booting a VM;
#   - the C example again, compiled with `pkg-config --cflags --libs microvm`;
#   - the C API test (built in the tree, linked to libmicrovm.so).
#   install_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
source=$(cd "$2" && pwd)
scratch=$(mktemp -d /tmp/microvm-install-test.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
prefix="$scratch/prefix"
export MICROVM_HOME="$scratch/home"
unset MICROVM_RUNNER MICROVM_KERNEL MICROVM_INITRAMFS

cmake --install "$build" --prefix "$prefix" >/dev/null
for path in bin/microvm bin/microvm-runner share/microvm/vmlinux share/microvm/initramfs.cpio \
            include/microvm/runtime.h include/microvm/options.h include/microvm/microvm.h include/microvm/version.h; do
  [ -e "$prefix/$path" ] || { echo "install_test: $path was not installed" >&2; exit 1; }
done
[ ! -L "$prefix/share/microvm/vmlinux" ] || { echo "install_test: vmlinux installed as a link" >&2; exit 1; }
libdir=$(dirname "$(find "$prefix" -name 'libmicrovm.so' | head -1)")
pc_dir=$(dirname "$(find "$prefix" -name 'microvm.pc' | head -1)")

"$source/scripts/make-rootfs.sh" "$scratch/rootfs" >/dev/null

# find_package(microvm), out of tree.
cmake -S "$source/examples/consumer" -B "$scratch/consumer" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$scratch/consumer" >/dev/null
out=$("$scratch/consumer/consumer" "$scratch/rootfs")
[ "$out" = "consumer $("$prefix/bin/microvm" --version | awk '{print $3}')" ] || { echo "install_test: consumer printed '$out'" >&2; exit 1; }
set +e
out=$("$scratch/consumer/consumer_c" "$scratch/rootfs" /bin/sh -c 'echo c-example; exit 4')
code=$?
set -e
[ "$code" = 4 ] && [ "$out" = "c-example" ] || { echo "install_test: consumer_c: code $code, '$out'" >&2; exit 1; }

# pkg-config, plain cc.
cc -std=c11 -Wall -Wextra -Werror "$source/examples/c/run.c" -o "$scratch/run_pc" \
  $(PKG_CONFIG_PATH="$pc_dir" pkg-config --cflags --libs microvm) -Wl,-rpath,"$libdir"
out=$("$scratch/run_pc" "$scratch/rootfs" echo pkg-config-ok)
[ "$out" = "pkg-config-ok" ] || { echo "install_test: pkg-config build printed '$out'" >&2; exit 1; }

# The C API test, against the installed runner and guest files.
LD_LIBRARY_PATH="$libdir" "$build/bin/capi_test" "$scratch/rootfs"
echo "install_test: ok"
