#!/usr/bin/env bash
# Boot benchmark, one JSON object:
#   - cold: `microvm run --rm --no-template --rootfs R -- /bin/true` against its
#     floor, a bare QEMU booting the same kernel with the same acceleration and
#     an initramfs whose init powers off at once (target ratio <= 1.25);
#   - template: the same run restoring the machine's boot template, against
#     cold (target ratio <= 0.15);
#   - fork: `microvm fork --count 4` of a running VM, until all four children
#     answer `exec`;
#   - density: the total PSS of the QEMU, runner and keeper processes of N idle
#     128 MiB VMs started from one template with --share-memory, against N
#     cold-booted ones (target ratio <= 0.5); and N from the template without
#     it (each with its own copy of the template's memory). The shared side
#     adds its memory holder once: its PSS and the pages of the memfd it holds.
#     Under TCG the same ratios again without QEMU's translation buffer (see
#     tcg_code_buffer_kib), which KVM has no use for, and its mean per VM.
# Runs of floor, cold and template are interleaved so that all see the same
# machine load; medians are reported.
#   bench/boot.sh [RUNS] [DENSITY_VMS]      (needs a build: scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-11}
density_vms=${2:-32}
bin=build/bin/microvm
share=build/share/microvm
[ -x "$bin" ] && [ -e "$share/vmlinux" ] || { echo "bench/boot.sh: build first (scripts/build.sh)" >&2; exit 1; }

scratch=$(mktemp -d /tmp/microvm-bench.XXXXXX)
export MICROVM_HOME="$scratch/home"
cleanup() {
  "$bin" ps -a -q 2>/dev/null | xargs -r "$bin" rm -f >/dev/null 2>&1 || true
  rm -rf "$scratch"
}
trap cleanup EXIT
./scripts/make-rootfs.sh "$scratch/rootfs"
accel=$("$bin" info --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accel"])')
# Warm the root disk cache, and make the templates the template runs use.
"$bin" run --rm --rootfs "$scratch/rootfs" -- /bin/true
"$bin" run --rm --rootfs "$scratch/rootfs" --memory 128 -- /bin/true

python3 - "$runs" "$accel" "$bin" "$scratch/rootfs" "$share" "$density_vms" <<'PY'
import json, os, signal, statistics, subprocess, sys, time
runs, accel, binary, rootfs, share, density_vms = (int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4],
                                                   sys.argv[5], int(sys.argv[6]))
sys.path.insert(0, "bench")
from floor_machine import floor_machine
append, accel_args = floor_machine(accel)
floor = ["qemu-system-x86_64", "-M", "microvm,x-option-roms=off,isa-serial=on,acpi=off", *accel_args,
         "-m", "512", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
         "-kernel", f"{share}/vmlinux", "-initrd", f"{share}/poweroff.cpio", "-append", append, "-serial", "null"]
cold = [binary, "run", "--rm", "--no-template", "--rootfs", rootfs, "--", "/bin/true"]
template = [binary, "run", "--rm", "--rootfs", rootfs, "--", "/bin/true"]

# No timeout= here: with one, Popen.wait() polls with sleeps that double from
# 0.5 ms, which rounds every time up to 15.5, 31.5, 63.5 ms and then to 50 ms
# steps. Without one it blocks in waitpid(); the alarm bounds the whole run.
signal.alarm(3600)

def timed(cmd):
    start = time.monotonic()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start

def out(cmd):
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout

floor_times, cold_times, template_times = [], [], []
for _ in range(runs):
    floor_times.append(timed(floor))
    cold_times.append(timed(cold))
    template_times.append(timed(template))
floor_median = statistics.median(floor_times)
cold_median = statistics.median(cold_times)
template_median = statistics.median(template_times)

def exec_ok(vm):
    return subprocess.run([binary, "exec", vm, "true"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0

def wait_exec(vm, limit=60):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if exec_ok(vm):
            return True
        time.sleep(0.005)
    raise SystemExit(f"bench/boot.sh: VM {vm} never answered exec")

# Fork: a parent running an idle workload, forked into 4 children three
# times; timed until the fork returns, and until every child answered exec.
parent = out([binary, "run", "-d", "--rootfs", rootfs, "--", "sleep", "3600"]).strip()
wait_exec(parent)
fork_return, fork_all_exec = [], []
for _ in range(3):
    start = time.monotonic()
    children = out([binary, "fork", "--count", "4", parent]).split()
    fork_return.append(time.monotonic() - start)
    for child in children:
        wait_exec(child)
    fork_all_exec.append(time.monotonic() - start)
    subprocess.run([binary, "rm", "-f", *children], check=True, stdout=subprocess.DEVNULL)
subprocess.run([binary, "rm", "-f", parent], check=True, stdout=subprocess.DEVNULL)

# Density: PSS of every process of N idle VMs (QEMU, runner, keeper).
def pss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0

# QEMU's TCG translation buffer: one anonymous rwx mapping of about 1 GiB
# (tcg_init's default size), filled as guest code is translated. Were it
# split into a writable and an executable view (split-wx), both would map
# one memfd ("tcg-jit") and each would hold half of its pages' PSS. No other
# mapping of these processes is executable and this large.
TCG_CODE_BUFFER_MIN_KIB = 256 * 1024

def tcg_code_buffer_kib(pid):
    total = 0
    mapping = {}
    try:
        with open(f"/proc/{pid}/smaps") as smaps:
            for line in smaps:
                key = line.split(None, 1)[0]
                if not key.endswith(":"):   # a mapping's header: range, perms, offset, device, inode, name
                    fields = line.split(None, 5)
                    mapping = {"name": fields[5].strip() if len(fields) > 5 else ""}
                elif key in ("Size:", "Pss:"):
                    mapping[key] = int(line.split()[1])
                elif key == "VmFlags:" and mapping.get("Size:", 0) >= TCG_CODE_BUFFER_MIN_KIB:
                    name = mapping["name"]
                    if (name == "" and "ex" in line.split()[1:]) or name.startswith("/memfd:tcg-jit"):
                        total += mapping.get("Pss:", 0)
    except OSError:
        pass
    return total

def children_of(pid):
    try:
        return [int(c) for c in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []

# A boot template's shared memory is held by its holder process, which maps
# none of it: its pages count here once, with the holder's own PSS.
def template_memory_kib():
    total = 0
    for pid in os.listdir("/proc"):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if len(cmdline) < 2 or cmdline[1] != b"--template-memory":
            continue
        total += pss_kib(pid)
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("/memfd:"):
                    total += os.stat(f"/proc/{pid}/fd/{fd}").st_blocks // 2
            except OSError:
                pass
    return total

def vm_pss(flags):
    ids = []
    for _ in range(density_vms):
        ids.append(out([binary, "run", "-d", "--memory", "128", *flags, "--rootfs", rootfs, "--", "sleep", "3600"]).strip())
    for vm in ids:
        wait_exec(vm)
    time.sleep(2)  # idle
    total = tcg = 0
    paths = set()
    for vm in ids:
        info = json.loads(out([binary, "inspect", vm]))[0]
        paths.add(info["boot"]["path"])
        runner = info["runner_pid"]
        for pid in (runner, *children_of(runner)):
            total += pss_kib(pid)
            if accel == "tcg":
                tcg += tcg_code_buffer_kib(pid)
    total += template_memory_kib()
    subprocess.run([binary, "rm", "-f", *ids], check=True, stdout=subprocess.DEVNULL)
    return total, tcg, sorted(paths)

template_pss, template_tcg, template_paths = vm_pss(["--share-memory"])
private_pss, private_tcg, private_paths = vm_pss([])
cold_pss, cold_tcg, cold_paths = vm_pss(["--no-template"])

def ratio_excluding_tcg(pss, tcg):
    if accel != "tcg" or cold_pss == cold_tcg:
        return None
    return round((pss - tcg) / (cold_pss - cold_tcg), 3)

def tcg_mean_mib(tcg):
    return round(tcg / density_vms / 1024, 1) if accel == "tcg" else None

print(json.dumps({
    "benchmark": "boot",
    "accel": accel,
    "runs": runs,
    "floor_qemu_poweroff_median_s": round(floor_median, 3),
    "cold_run_true_median_s": round(cold_median, 3),
    "cold_vs_floor_ratio": round(cold_median / floor_median, 3),
    "cold_vs_floor_target_max": 1.25,
    "template_run_true_median_s": round(template_median, 3),
    "template_vs_cold_ratio": round(template_median / cold_median, 3),
    "template_vs_cold_target_max": 0.15,
    "fork4_return_median_s": round(statistics.median(fork_return), 3),
    "fork4_all_children_exec_median_s": round(statistics.median(fork_all_exec), 3),
    "density_vms": density_vms,
    "density_template_pss_mib": round(template_pss / 1024, 1),
    "density_cold_pss_mib": round(cold_pss / 1024, 1),
    "density_ratio": round(template_pss / cold_pss, 3) if cold_pss else None,
    "density_template_private_pss_mib": round(private_pss / 1024, 1),
    "density_template_private_ratio": round(private_pss / cold_pss, 3) if cold_pss else None,
    "density_target_max": 0.5,
    "density_ratio_excluding_tcg_code_buffer": ratio_excluding_tcg(template_pss, template_tcg),
    "density_template_private_ratio_excluding_tcg_code_buffer": ratio_excluding_tcg(private_pss, private_tcg),
    "density_tcg_code_buffer_mean_mib": {"template": tcg_mean_mib(template_tcg),
                                         "template_private": tcg_mean_mib(private_tcg),
                                         "cold": tcg_mean_mib(cold_tcg)},
    "density_boot_paths": {"template": template_paths, "template_private": private_paths, "cold": cold_paths},
    "floor_s": [round(t, 3) for t in floor_times],
    "cold_s": [round(t, 3) for t in cold_times],
    "template_s": [round(t, 3) for t in template_times],
    "fork4_all_children_exec_s": [round(t, 3) for t in fork_all_exec],
}, indent=2))
PY
