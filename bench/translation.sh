#!/usr/bin/env bash
# Guest code translated under TCG, one JSON object: the work a run gives the
# emulator, counted instead of timed, so that it does not move with the
# machine's load (timings here vary by a third between hours; these counts
# by a few percent).
#
# QEMU's TCG translates every block of guest code the first time it runs,
# and a restored QEMU starts with an empty translation cache; translating is
# most of what a boot or a restored run costs under TCG. Each QEMU here runs
# with `-d in_asm`, which logs every block it translates; the script counts
# the blocks and their guest instructions, kernel and user apart, for
#   - floor: the bare QEMU of bench/boot.sh (same kernel, machine and
#     acceleration; an init that powers off at once);
#   - cold: `microvm run --rm --no-template --rootfs R -- /bin/true`;
#   - template: the same run restoring its boot template;
# and reports the ratios bench/boot.sh reports for time (cold over floor,
# template over cold), and the kernel functions a template run translates
# (how many; how much of it the largest ten hold).
# microvm starts QEMU from PATH: a wrapper that adds the log flags comes
# first in PATH for these runs (it is another QEMU binary to the template
# key, so the runs make their own template).
#   bench/translation.sh [RUNS]     (default 3; TCG only; needs scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
bin=$PWD/build/bin/microvm
share=$PWD/build/share/microvm
[ -x "$bin" ] && [ -e "$share/vmlinux" ] || { echo "bench/translation.sh: build first (scripts/build.sh)" >&2; exit 1; }
qemu=$(command -v qemu-system-x86_64) || { echo "bench/translation.sh: qemu-system-x86_64 is missing" >&2; exit 1; }

scratch=$(mktemp -d /tmp/microvm-translation.XXXXXX)
export MICROVM_HOME="$scratch/home"
cleanup() {
  "$bin" ps -a -q 2>/dev/null | xargs -r "$bin" rm -f >/dev/null 2>&1 || true
  rm -rf "$scratch"
}
trap cleanup EXIT
accel=$("$bin" info --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accel"])')
if [ "$accel" != tcg ]; then
  echo '{"benchmark": "translation", "accel": "'"$accel"'", "skipped": "nothing is translated outside TCG"}'
  exit 0
fi
./scripts/make-rootfs.sh "$scratch/rootfs"

# QEMU runs as a user of its own when microvm runs as root: it must be able
# to run the wrapper and to write its log.
logs="$scratch/logs"
mkdir -p "$scratch/wrapper" "$logs"
chmod 755 "$scratch" "$scratch/wrapper"
chmod 1777 "$logs"
cat > "$scratch/wrapper/qemu-system-x86_64" <<EOF
#!/bin/sh
exec "$qemu" -d in_asm -D "$logs/qemu.\$\$.log" "\$@"
EOF
chmod 755 "$scratch/wrapper/qemu-system-x86_64"
export PATH="$scratch/wrapper:$PATH"
# The template the template runs restore.
"$bin" run --rm --rootfs "$scratch/rootfs" -- /bin/true

python3 - "$runs" "$bin" "$scratch/rootfs" "$share" "$logs" <<'PY'
import bisect, glob, json, os, statistics, subprocess, sys
runs, binary, rootfs, share, logs = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
sys.path.insert(0, "bench")
from floor_machine import floor_machine
append, accel_args = floor_machine("tcg")
floor = ["qemu-system-x86_64", "-M", "microvm,x-option-roms=off,isa-serial=on,acpi=off", *accel_args,
         "-m", "512", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
         "-kernel", f"{share}/vmlinux", "-initrd", f"{share}/poweroff.cpio", "-append", append, "-serial", "null"]
cold = [binary, "run", "--rm", "--no-template", "--rootfs", rootfs, "--", "/bin/true"]
template = [binary, "run", "--rm", "--rootfs", rootfs, "--", "/bin/true"]

# The kernel's text symbols, to name the functions a template run translates.
symbols = []
for line in subprocess.run(["nm", "-n", os.path.realpath(f"{share}/vmlinux")], check=True, capture_output=True,
                           text=True).stdout.splitlines():
    fields = line.split()
    if len(fields) >= 3 and fields[1] in "tTwW":
        symbols.append((int(fields[0], 16), fields[2]))
addresses = [address for address, _ in symbols]
KERNEL_START = 0xffffffff80000000

def count(log):
    """Blocks and guest instructions `log` holds, kernel and user apart, and
    instructions per kernel function."""
    totals = {"blocks": 0, "instructions": 0, "kernel_instructions": 0, "user_instructions": 0}
    functions = {}
    with open(log, errors="replace") as lines:
        for line in lines:
            if line.startswith("IN:"):
                totals["blocks"] += 1
            elif line.startswith("0x"):
                address = int(line.split(":", 1)[0], 16)
                totals["instructions"] += 1
                if address >= KERNEL_START:
                    totals["kernel_instructions"] += 1
                    index = bisect.bisect_right(addresses, address) - 1
                    name = symbols[index][1] if index >= 0 else "?"
                    functions[name] = functions.get(name, 0) + 1
                else:
                    totals["user_instructions"] += 1
    return totals, functions

def measured(cmd):
    for old in glob.glob(f"{logs}/*.log"):
        os.unlink(old)
    # No timeout: the runs end by themselves; the alarm bounds the script.
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    made = glob.glob(f"{logs}/*.log")
    if len(made) != 1:
        raise SystemExit(f"bench/translation.sh: expected one QEMU log, found {len(made)}")
    return count(made[0])

import signal
signal.alarm(1800)
samples = {"floor": [], "cold": [], "template": []}
template_functions = []
for _ in range(runs):
    for name, cmd in (("floor", floor), ("cold", cold), ("template", template)):
        totals, functions = measured(cmd)
        samples[name].append(totals)
        if name == "template":
            template_functions.append(functions)

def medians(name):
    keys = samples[name][0].keys()
    return {key: int(statistics.median(sample[key] for sample in samples[name])) for key in keys}

figures = {name: medians(name) for name in samples}
last = template_functions[-1]
largest_ten = sum(sorted(last.values(), reverse=True)[:10])
print(json.dumps({
    "benchmark": "translation",
    "accel": "tcg",
    "runs": runs,
    "floor": figures["floor"],
    "cold": figures["cold"],
    "template": figures["template"],
    "cold_vs_floor_instructions_ratio": round(figures["cold"]["instructions"] / figures["floor"]["instructions"], 3),
    "template_vs_cold_instructions_ratio": round(figures["template"]["instructions"] / figures["cold"]["instructions"], 3),
    "template_vs_floor_instructions_ratio": round(figures["template"]["instructions"] / figures["floor"]["instructions"], 3),
    "template_kernel_functions": len(last),
    "template_largest_ten_functions_share": round(largest_ten / max(1, sum(last.values())), 3),
    "template_largest_functions": dict(sorted(last.items(), key=lambda item: -item[1])[:10]),
    "instruction_samples": {name: [sample["instructions"] for sample in samples[name]] for name in samples},
}, indent=2))
PY
