#!/usr/bin/env bash
# Boot benchmark: the median wall time of `microvm run --rm --rootfs R -- /bin/true`
# against its floor, a bare QEMU booting the same kernel with the same
# acceleration and an initramfs whose init powers off at once. Runs are
# interleaved so both see the same machine load. Prints JSON.
#   bench/boot.sh [RUNS]        (needs a build: scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-11}
bin=build/bin/microvm
share=build/share/microvm
[ -x "$bin" ] && [ -e "$share/vmlinux" ] || { echo "bench/boot.sh: build first (scripts/build.sh)" >&2; exit 1; }

scratch=$(mktemp -d /tmp/microvm-bench.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
export MICROVM_HOME="$scratch/home"
./scripts/make-rootfs.sh "$scratch/rootfs"
accel=$("$bin" info --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accel"])')
"$bin" run --rm --rootfs "$scratch/rootfs" -- /bin/true   # warm the root disk cache

python3 - "$runs" "$accel" "$bin" "$scratch/rootfs" "$share" <<'PY'
import json, signal, statistics, subprocess, sys, time
runs, accel, binary, rootfs, share = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
tsc_khz = 0
for line in open("/proc/cpuinfo"):
    if line.startswith("cpu MHz"):
        tsc_khz = round(float(line.split(":")[1]) * 1000)
        break
append = "console=ttyS0 reboot=t panic=-1 quiet"
accel_args = ["-accel", "kvm", "-cpu", "host"]
if accel == "tcg":
    append += f" tsc_early_khz={tsc_khz} tsc=reliable"
    accel_args = ["-accel", "tcg,thread=multi", "-cpu", "max"]
floor = ["qemu-system-x86_64", "-M", "microvm,x-option-roms=off,isa-serial=on,acpi=off", *accel_args,
         "-m", "512", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
         "-kernel", f"{share}/vmlinux", "-initrd", f"{share}/poweroff.cpio", "-append", append, "-serial", "null"]
ours = [binary, "run", "--rm", "--rootfs", rootfs, "--", "/bin/true"]

# No timeout= here: with one, Popen.wait() polls with sleeps that double from
# 0.5 ms, which rounds every time up to 15.5, 31.5, 63.5 ms and then to 50 ms
# steps. Without one it blocks in waitpid(); the alarm bounds the whole run.
signal.alarm(1800)

def timed(cmd):
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start

ours_times, floor_times = [], []
for _ in range(runs):
    ours_times.append(timed(ours))
    floor_times.append(timed(floor))
ours_median, floor_median = statistics.median(ours_times), statistics.median(floor_times)
print(json.dumps({
    "benchmark": "boot",
    "accel": accel,
    "runs": runs,
    "microvm_run_true_median_s": round(ours_median, 3),
    "floor_qemu_poweroff_median_s": round(floor_median, 3),
    "ratio": round(ours_median / floor_median, 3),
    "target_ratio_max": 1.25,
    "microvm_run_true_s": [round(t, 3) for t in ours_times],
    "floor_s": [round(t, 3) for t in floor_times],
}, indent=2))
PY
