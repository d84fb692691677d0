#!/usr/bin/env bash
# Pull benchmark: cold pull + root disk ready for a ~100+ MB image in 5 layers
# from a registry on loopback, against the same work done with the usual
# tools (skopeo copy + umoci unpack + mkfs.ext4 -d) in the same run; then the
# warm case: preparing a cached image for a new VM (`microvm create`).
# Prints JSON.   bench/pull.sh      (needs a build: scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/build/bin/microvm
[ -x "$bin" ] || { echo "bench/pull.sh: build first (scripts/build.sh)" >&2; exit 1; }
scratch=$(mktemp -d /tmp/microvm-bench-pull.XXXXXX)
registry_pid=""
cleanup() { [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null; rm -rf "$scratch"; }
trap cleanup EXIT

# The image: a busybox rootfs plus four layers of real files from this host
# (about 250 MB unpacked).
./scripts/make-rootfs.sh "$scratch/rootfs"
python3 - "$scratch/layout" "$scratch/rootfs" <<'PY'
import os, sys
sys.path.insert(0, os.path.join(os.getcwd(), "tests", "e2e"))
import oci_images as oci
layout_dir, rootfs = sys.argv[1], sys.argv[2]
layout = oci.Layout(layout_dir)
def tree(path, arcname):
    return oci.tar_of(lambda tar: tar.add(path, arcname=arcname))
layers = [oci.rootfs_layer(rootfs)]
for source in ["/usr/share/locale", "/usr/lib/python3", "/usr/share/perl", "/usr/lib/x86_64-linux-gnu/perl"]:
    if os.path.isdir(source):
        layers.append(tree(source, source.lstrip("/")))
desc = layout.image(layers, {"Cmd": ["/bin/true"]})
layout.tag("big", desc)
layout.write_index()
print(sum(len(l) for l in layers), file=sys.stderr)
PY
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$scratch/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $scratch/registry
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$scratch/registry.yml" >"$scratch/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
image=127.0.0.1:$port/bench/big:latest
skopeo copy -q --dest-tls-verify=false "oci:$scratch/layout:big" "docker://$image"

now() { date +%s.%N; }
# Ours: cold pull into an empty data dir (blobs + extraction + root disk).
start=$(now)
MICROVM_HOME="$scratch/home" "$bin" pull "$image" >/dev/null
ours=$(echo "$(now) - $start" | bc)

# Peer: the same result with the standard tools.
start=$(now)
skopeo copy -q --src-tls-verify=false "docker://$image" "oci:$scratch/peer-layout:big"
umoci unpack --image "$scratch/peer-layout:big" "$scratch/peer-bundle" >/dev/null
size_mb=$(( $(du -sm "$scratch/peer-bundle/rootfs" | cut -f1) + 1024 + 64 ))
mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 -d "$scratch/peer-bundle/rootfs" "$scratch/peer.ext4" "${size_mb}M"
peer=$(echo "$(now) - $start" | bc)

# Warm: a new VM's disk from the cached image (no boot).
warm=()
for _ in 1 2 3 4 5; do
  start=$(now)
  id=$(MICROVM_HOME="$scratch/home" "$bin" create "$image")
  warm+=("$(echo "$(now) - $start" | bc)")
  MICROVM_HOME="$scratch/home" "$bin" rm "$id" >/dev/null
done
image_bytes=$(du -sb "$scratch/layout/blobs" | cut -f1)
python3 - "$ours" "$peer" "$image_bytes" "${warm[@]}" <<'PY'
import json, statistics, sys
ours, peer, size = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
warm = [float(x) for x in sys.argv[4:]]
print(json.dumps({
    "benchmark": "pull",
    "image_compressed_bytes": size,
    "layers": 5,
    "microvm_cold_pull_s": round(ours, 3),
    "peer_skopeo_umoci_mkfs_s": round(peer, 3),
    "speedup": round(peer / ours, 2),
    "target_speedup_min": 2.0,
    "warm_create_median_ms": round(statistics.median(warm) * 1000, 1),
    "warm_target_ms_max": 50,
}, indent=2))
PY
