#!/usr/bin/env bash
# Network benchmark: TCP throughput between the guest and a host server on
# 127.0.0.1 (reached as the gateway 10.0.2.2), through microvm's stack (the
# runner's libslirp + egress filter + an active egress policy that allows
# the host endpoint) against its peer, QEMU's own `-netdev user` (the same
# libslirp) booting the same kernel with the same busybox userland. Both
# directions, MIB each, runs interleaved; the host side times them. The
# guest moves the data with bench/tcp_stream.c (64 KiB reads and writes) in
# both stacks. Each stack keeps its own link MTU: ours is 65520
# (net::kGuestMtu), QEMU's user networking has 1500 and no option to change
# it; at_mtu_1500 runs ours with the guest's link set to 1500 as well, to
# show the stack's own share. samples_mib_s holds every run and
# min_median_max_mib_s each series' spread (a stalled run shows as a low
# min). Also the egress filter's cost per frame (build/bin/filter_bench).
# Prints JSON.
#   bench/net.sh [RUNS] [MIB]   (default 3 runs of 64 MiB each way; needs scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
mib=${2:-64}
bin=build/bin/microvm
share=build/share/microvm
[ -x "$bin" ] && [ -e "$share/vmlinux" ] || { echo "bench/net.sh: build first (scripts/build.sh)" >&2; exit 1; }

scratch=$(mktemp -d /tmp/microvm-netbench.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
export MICROVM_HOME="$scratch/home"
./scripts/make-rootfs.sh "$scratch/rootfs"
cc -O2 -static -o "$scratch/rootfs/bin/tcp_stream" bench/tcp_stream.c
# The guest side of one run, the same script for both stacks.
cat > "$scratch/rootfs/bench.sh" <<'SH'
#!/bin/sh
# bench.sh UP_PORT DOWN_PORT DONE_PORT BLOCKS [MTU]: push BLOCKS*64 KiB to the host, pull as much, then say done.
[ -z "${5:-}" ] || ip link set eth0 mtu "$5"
tcp_stream push 10.0.2.2 "$1" $(($4 * 65536))
tcp_stream pull 10.0.2.2 "$2"
echo done | nc 10.0.2.2 "$3"
SH
chmod 755 "$scratch/rootfs/bench.sh"
# The peer boots the same userland from an initramfs; its init sets the
# addresses QEMU's user network expects, as microvm-init does for ours.
mkdir -p "$scratch/peer"
cp -a "$scratch/rootfs/." "$scratch/peer/"
cat > "$scratch/peer/init" <<'SH'
#!/bin/sh
mount -t proc proc /proc
mount -t devtmpfs dev /dev
ip link set lo up
ip addr add 10.0.2.15/24 dev eth0
ip link set eth0 up
ip route add default via 10.0.2.2
/bench.sh $(cat /proc/cmdline | tr ' ' '\n' | sed -n 's/^bench=//p' | tr , ' ')
reboot -f
SH
chmod 755 "$scratch/peer/init"
(cd "$scratch/peer" && find . | cpio -o -H newc --quiet > "$scratch/peer.cpio")
accel=$("$bin" info --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accel"])')
"$bin" run --rm --rootfs "$scratch/rootfs" -- /bin/true   # warm the root disk cache

filter=$(build/bin/filter_bench 2>/dev/null || echo '{}')

python3 - "$runs" "$accel" "$bin" "$scratch" "$share" "$filter" "$mib" <<'PY'
import json, socket, statistics, subprocess, sys, threading, time
runs, accel, binary, scratch, share, filter_json = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
SIZE = int(sys.argv[7]) << 20

def listener():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    return s

up, down, done = listener(), listener(), listener()
results = {}

def serve():
    # One run at a time: upload, download, done, in that order.
    while True:
        c, _ = up.accept()
        start, got = None, 0
        while True:
            chunk = c.recv(1 << 20)
            if not chunk:
                break
            if start is None:
                start = time.monotonic()
            got += len(chunk)
        results["up"] = (got, time.monotonic() - (start or time.monotonic()))
        c.close()
        c, _ = down.accept()
        start = time.monotonic()
        block = b"\0" * (1 << 20)
        for _ in range(SIZE >> 20):
            c.sendall(block)
        c.shutdown(socket.SHUT_WR)
        c2, _ = done.accept()
        results["down"] = (SIZE, time.monotonic() - start)
        c2.recv(16)
        c2.close()
        c.close()

threading.Thread(target=serve, daemon=True).start()
ports = [s.getsockname()[1] for s in (up, down, done)]

tsc_khz = 0
for line in open("/proc/cpuinfo"):
    if line.startswith("cpu MHz"):
        tsc_khz = round(float(line.split(":")[1]) * 1000)
        break
blocks = SIZE >> 16
append = "console=ttyS0 reboot=t panic=-1 quiet rdinit=/init bench=" + ",".join(map(str, ports + [blocks]))
accel_args = ["-accel", "kvm", "-cpu", "host"]
if accel == "tcg":
    append += f" tsc_early_khz={tsc_khz} tsc=reliable"
    accel_args = ["-accel", "tcg,thread=multi", "-cpu", "max"]
peer = ["qemu-system-x86_64", "-M", "microvm,x-option-roms=off,isa-serial=on,acpi=off", *accel_args,
        "-m", "512", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", f"{share}/vmlinux", "-initrd", f"{scratch}/peer.cpio", "-append", append, "-serial", "null",
        "-netdev", "user,id=n0", "-device", "virtio-net-device,netdev=n0"]
# Ours with an active policy that allows exactly the host endpoint's ports.
policy = []
for p in ports:
    policy += ["--egress-allow-cidr", f"10.0.2.2/32:{p}/tcp"]
ours = [binary, "run", "--rm", "--rootfs", f"{scratch}/rootfs", *policy, "--", "/bench.sh", *map(str, ports + [blocks])]
# Ours again with the guest's link at QEMU's 1500: the stack alone, like for like.
ours_1500 = [binary, "run", "--rm", "--cap-add", "NET_ADMIN", "--rootfs", f"{scratch}/rootfs", *policy, "--",
             "/bench.sh", *map(str, ports + [blocks, 1500])]

def measure(cmd):
    results.clear()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    deadline = time.monotonic() + 10
    while "down" not in results and time.monotonic() < deadline:
        time.sleep(0.05)
    (up_bytes, up_s), (down_bytes, down_s) = results["up"], results["down"]
    if up_bytes != SIZE:
        raise SystemExit(f"upload moved {up_bytes} bytes, not {SIZE}")
    return up_bytes / up_s / (1 << 20), down_bytes / down_s / (1 << 20)

ours_up, ours_down, peer_up, peer_down, mtu1500_up, mtu1500_down = [], [], [], [], [], []
for _ in range(runs):
    u, d = measure(ours)
    ours_up.append(u); ours_down.append(d)
    u, d = measure(ours_1500)
    mtu1500_up.append(u); mtu1500_down.append(d)
    u, d = measure(peer)
    peer_up.append(u); peer_down.append(d)

med = statistics.median
series = {"ours_up": ours_up, "peer_up": peer_up, "ours_down": ours_down, "peer_down": peer_down,
          "ours_mtu1500_up": mtu1500_up, "ours_mtu1500_down": mtu1500_down}
print(json.dumps({
    "benchmark": "net",
    "accel": accel,
    "runs": runs,
    "bytes_each_way": SIZE,
    "guest_to_host_mib_s": round(med(ours_up), 1),
    "guest_to_host_peer_qemu_user_mib_s": round(med(peer_up), 1),
    "guest_to_host_ratio": round(med(ours_up) / med(peer_up), 3),
    "host_to_guest_mib_s": round(med(ours_down), 1),
    "host_to_guest_peer_qemu_user_mib_s": round(med(peer_down), 1),
    "host_to_guest_ratio": round(med(ours_down) / med(peer_down), 3),
    "target_ratio_min": 0.9,
    "guest_mtu": {"ours": 65520, "peer_qemu_user": 1500},
    "at_mtu_1500": {
        "guest_to_host_mib_s": round(med(mtu1500_up), 1),
        "guest_to_host_ratio": round(med(mtu1500_up) / med(peer_up), 3),
        "host_to_guest_mib_s": round(med(mtu1500_down), 1),
        "host_to_guest_ratio": round(med(mtu1500_down) / med(peer_down), 3),
    },
    "egress_policy": "active: --egress-allow-cidr 10.0.2.2/32:PORT/tcp for the three bench ports",
    "samples_mib_s": {name: [round(x, 1) for x in xs] for name, xs in series.items()},
    "min_median_max_mib_s": {name: [round(min(xs), 1), round(med(xs), 1), round(max(xs), 1)]
                             for name, xs in series.items()},
    "egress_filter": json.loads(filter_json),
}, indent=2))
PY
