#!/usr/bin/env bash
# Snapshot benchmark, one run, the busybox rootfs of scripts/make-rootfs.sh
# with the agent on. Prints JSON; for 256 MiB and 1 GiB of guest memory:
#   - cold boot (`run -d --no-template`) to running (`run -d` returns) and
#     to the first successful `exec VM true`, timed from before `run -d`;
#   - restore to running (`run -d --snapshot NAME` returns: the VM is
#     Running) and to the first successful `exec`, timed the same way;
#   - `snapshot create` time (RUNS saves of one VM: the first, and the
#     median of the others), and the snapshot's size (device state, guest
#     RAM (sparse: apparent and allocated), disk, and all allocated);
#   - the ratio restore-to-exec / cold-boot-to-exec against the target 0.1
#     (reported as met or not; it does not fail the script).
# Medians of RUNS samples; cold boots and restores are interleaved so that
# both see the same machine load. The wait for the first exec does not use
# exec's own retry (its pauses grow to 250 ms): it probes the agent with
# `CONNECT 1024` on the VM's vsock.sock, as `exec` does, every 5 ms, and runs
# `exec VM true` once the agent answers; `harness` reports what that costs.
# One `exec` straight after `run -d`, with its own retry, as a user would
# type it, is reported once as `*_single_cli_s`.
#
# BENCH_SNAPSHOT_NO_VSOCK=1: the VMs run with --no-vsock (no agent, so the
# exec figures are null), for builds whose agent still needs the vsock
# device, which QEMU cannot save.
#   bench/snapshot.sh [RUNS]        (default 3; needs a build: scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
bin=build/bin/microvm
[ -x "$bin" ] || { echo "bench/snapshot.sh: build first (scripts/build.sh)" >&2; exit 1; }
case $runs in [1-9] | 1[0-9] | 20) ;; *) echo "bench/snapshot.sh: RUNS must be 1 to 20" >&2; exit 1 ;; esac

scratch=$(mktemp -d /tmp/microvm-snapbench.XXXXXX)
export MICROVM_HOME="$scratch/home"
# Every VM and snapshot lives in this private data dir: removing its VMs
# (which stops their runners and QEMUs) and then the directory cleans up
# everything, whichever step failed.
cleanup() {
  for id in $("$bin" ps -a -q 2>/dev/null); do
    "$bin" rm -f "$id" >/dev/null 2>&1 || true
  done
  rm -rf "$scratch"
}
trap cleanup EXIT
./scripts/make-rootfs.sh "$scratch/rootfs"
accel=$("$bin" info --format json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accel"])')
"$bin" run --rm --no-vsock --rootfs "$scratch/rootfs" -- /bin/true   # warm the root disk cache

python3 - "$runs" "$accel" "$bin" "$scratch/rootfs" "$MICROVM_HOME" "${BENCH_SNAPSHOT_NO_VSOCK:-0}" <<'PY'
import glob, json, os, signal, socket, statistics, subprocess, sys, time
runs, accel, binary, rootfs, home = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
agent = sys.argv[6] in ("", "0")
MEMORY_SIZES_MIB = (256, 1024)
TARGET_RATIO = 0.1
POLL_PAUSE_S = 0.005        # between two agent probes: the most a poll adds after the agent is up
READY_TIMEOUT_S = 120       # a VM not ready for exec by then is a failure
PROBE_TIMEOUT_S = 10        # one CONNECT; the runner answers or closes within its own 5 s

# No timeout= on subprocess.run: with one, Popen.wait() polls with sleeps
# that double from 0.5 ms, which rounds every time up to 15.5, 31.5, 63.5 ms
# and then to 50 ms steps. Without one it blocks in waitpid(); the alarm
# bounds the whole run (and the shell's trap then removes every VM).
signal.alarm(1800)

def run(*args):
    done = subprocess.run([binary, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        hint = ""
        if args[:2] == ("snapshot", "create") and "vsock" in done.stderr:
            hint = "\n(this build cannot save the agent's vsock device yet: BENCH_SNAPSHOT_NO_VSOCK=1 measures --no-vsock VMs)"
        raise SystemExit(f"bench/snapshot.sh: microvm {' '.join(args)}: {done.stderr.strip()}{hint}")
    return done.stdout

def quiet(*args):
    return subprocess.run([binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode

probe_failures = []   # seconds per refused probe, over the whole run

def vsock_socket(vm_id):
    # <data dir>/run/<short id>/vsock.sock, the socket `exec` connects to.
    found = glob.glob(os.path.join(home, "run", vm_id[:12] + "*", "vsock.sock"))
    return found[0] if found else None

def probe(path):
    """One `CONNECT 1024` to the agent, as exec's client sends it: True once the agent accepts."""
    if path is None:
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(PROBE_TIMEOUT_S)   # a blocking wait in poll(2), no sleep steps
    try:
        s.connect(path)
        s.sendall(b"CONNECT 1024\n")
        reply = b""
        while not reply.endswith(b"\n") and len(reply) < 64:
            chunk = s.recv(64 - len(reply))
            if not chunk:
                break
            reply += chunk
        return reply.startswith(b"OK ")
    except OSError:
        return False
    finally:
        s.close()

def wait_exec(vm, vm_id):
    """Returns when `exec VM true` first succeeds; the caller reads the clock."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    path = None
    for _ in range(int(READY_TIMEOUT_S / POLL_PAUSE_S)):
        if time.monotonic() > deadline:
            break
        path = path or vsock_socket(vm_id)
        start = time.monotonic()
        if probe(path) and quiet("exec", vm, "true") == 0:
            return
        if path is not None:
            probe_failures.append(time.monotonic() - start)
        time.sleep(POLL_PAUSE_S)
    raise SystemExit(f"bench/snapshot.sh: VM {vm} not ready for exec within {READY_TIMEOUT_S} s")

def wait_output(vm, text):
    """Untimed: the workload has printed `text` (the guest is up; used without an agent)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    for _ in range(int(READY_TIMEOUT_S / 0.02)):
        if time.monotonic() > deadline:
            break
        if text in subprocess.run([binary, "logs", vm], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True).stdout:
            return
        time.sleep(0.02)
    raise SystemExit(f"bench/snapshot.sh: VM {vm} printed no {text!r} within {READY_TIMEOUT_S} s")

def check_running(vm):
    status = json.loads(run("inspect", vm))[0]["status"]
    if status != "running":
        raise SystemExit(f"bench/snapshot.sh: VM {vm} is {status} after it was started")

vsock_flag = [] if agent else ["--no-vsock"]
workload = ["sh", "-c", "echo ready; exec sleep 3600"]
counter = iter(range(10**6))

def cold_boot(memory, single_cli=False):
    """One cold boot: (to running, to first exec or None). Leaves the VM running; returns its name too."""
    vm = f"cold{next(counter)}"
    start = time.monotonic()
    # --no-template: a cold boot, not a boot template's restore (which every
    # run after a machine's first would be).
    vm_id = run("run", "-d", "--no-template", "--name", vm, "--memory", str(memory), *vsock_flag, "--rootfs", rootfs,
                "--", *workload).strip()
    to_running = time.monotonic() - start
    to_exec = None
    if agent and single_cli:
        run("exec", vm, "true")   # exec's own retry waits for the agent
        to_exec = time.monotonic() - start
    elif agent:
        wait_exec(vm, vm_id)
        to_exec = time.monotonic() - start
    check_running(vm)
    if not agent:
        wait_output(vm, "ready")
    return vm, to_running, to_exec

def restore(snapshot, single_cli=False):
    vm = f"restored{next(counter)}"
    start = time.monotonic()
    vm_id = run("run", "-d", "--snapshot", snapshot, "--name", vm).strip()
    to_running = time.monotonic() - start   # run -d returns once the VM is Running
    to_exec = None
    if agent and single_cli:
        run("exec", vm, "true")
        to_exec = time.monotonic() - start
    elif agent:
        wait_exec(vm, vm_id)
        to_exec = time.monotonic() - start
    check_running(vm)
    return vm, to_running, to_exec

def snapshot_files(name):
    sizes = {}
    for key, file in (("memory", "memory.bin"), ("ram", "memory.ram"), ("disk", "disk.qcow2")):
        st = os.stat(os.path.join(home, "snapshots", name, file))
        sizes[key] = (st.st_size, st.st_blocks * 512)
    return sizes

def med(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None

def ms(values):
    return [None if v is None else round(v * 1000, 1) for v in values]

harness = {"poll_pause_ms": POLL_PAUSE_S * 1000}
# Spawning a process from this harness, which every timed command pays once.
spawns = []
for _ in range(10):
    start = time.monotonic()
    subprocess.run(["/bin/true"])
    spawns.append(time.monotonic() - start)
harness["spawn_true_median_ms"] = round(statistics.median(spawns) * 1000, 2)

results = []
single_cli = {}
for memory in MEMORY_SIZES_MIB:
    cold_running, cold_exec, restore_running, restore_exec, creates = [], [], [], [], []
    # The first cold boot is also the snapshot's source.
    source, to_running, to_exec = cold_boot(memory)
    cold_running.append(to_running)
    cold_exec.append(to_exec)
    if agent and memory == MEMORY_SIZES_MIB[0]:
        # What the poll itself costs, on a VM whose agent is up.
        path = vsock_socket(json.loads(run("inspect", source))[0]["id"])
        probes, execs = [], []
        for _ in range(10):
            start = time.monotonic()
            if not probe(path):
                raise SystemExit("bench/snapshot.sh: the agent refused a probe on a ready VM")
            probes.append(time.monotonic() - start)
        for _ in range(5):
            start = time.monotonic()
            run("exec", source, "true")
            execs.append(time.monotonic() - start)
        harness["probe_ok_median_ms"] = round(statistics.median(probes) * 1000, 2)
        harness["exec_true_warm_median_ms"] = round(statistics.median(execs) * 1000, 2)
    names = []
    for i in range(runs):
        name = f"snap{memory}-{i}"
        start = time.monotonic()
        run("snapshot", "create", source, name)
        creates.append(time.monotonic() - start)
        names.append(name)
    sizes = snapshot_files(names[0])
    for name in names[1:]:
        run("snapshot", "rm", name)
    run("rm", "-f", source)
    for i in range(runs):
        vm, to_running, to_exec = restore(names[0])
        restore_running.append(to_running)
        restore_exec.append(to_exec)
        run("rm", "-f", vm)
        if i + 1 < runs:
            vm, to_running, to_exec = cold_boot(memory)
            cold_running.append(to_running)
            cold_exec.append(to_exec)
            run("rm", "-f", vm)
    if agent and memory == MEMORY_SIZES_MIB[0]:
        vm, _, to_exec = cold_boot(memory, single_cli=True)
        single_cli["cold_boot_to_exec_single_cli_s"] = round(to_exec, 3)
        run("rm", "-f", vm)
        vm, _, to_exec = restore(names[0], single_cli=True)
        single_cli["restore_to_exec_single_cli_s"] = round(to_exec, 3)
        run("rm", "-f", vm)
    run("snapshot", "rm", names[0])
    ratio = None
    if agent:
        ratio = round(statistics.median(restore_exec) / statistics.median(cold_exec), 3)
    results.append({
        "memory_mib": memory,
        "cold_boot_to_running_median_s": med(cold_running),
        "cold_boot_to_exec_median_s": med(cold_exec),
        "restore_to_running_median_s": med(restore_running),
        "restore_to_exec_median_s": med(restore_exec),
        "ratio_restore_to_exec_over_cold_boot_to_exec": ratio,
        "meets_target": None if ratio is None else ratio <= TARGET_RATIO,
        # The first save of a VM reads all of its memory for the first
        # time; later ones find it mapped and are faster.
        "snapshot_create_first_s": round(creates[0], 3),
        "snapshot_create_again_median_s": med(creates[1:]),
        # memory.bin: the device state; memory.ram: guest RAM, sparse (its
        # apparent size is the VM's memory, its allocation what was in use).
        "snapshot_memory_bytes": sizes["memory"][0],
        "snapshot_ram_bytes": sizes["ram"][0],
        "snapshot_ram_allocated_bytes": sizes["ram"][1],
        "snapshot_disk_bytes": sizes["disk"][0],
        "snapshot_total_allocated_bytes": sizes["memory"][1] + sizes["ram"][1] + sizes["disk"][1],
        "samples_ms": {
            "cold_boot_to_running": ms(cold_running),
            "cold_boot_to_exec": ms(cold_exec),
            "restore_to_running": ms(restore_running),
            "restore_to_exec": ms(restore_exec),
            "snapshot_create": ms(creates),
        },
    })

if agent:
    harness["probe_refused_count"] = len(probe_failures)
    if probe_failures:
        harness["probe_refused_median_ms"] = round(statistics.median(probe_failures) * 1000, 2)
        harness["probe_refused_max_ms"] = round(max(probe_failures) * 1000, 2)
    # A probe sent just before the agent listens is refused; the next one
    # follows a pause later and is accepted: that is what the poll adds to a
    # figure, beside the exec it ends with. (A probe sent while the guest's
    # vsock driver is not up yet waits in the runner until the guest
    # answers; such a wait ends with the guest and adds nothing: it is why
    # probe_refused_max_ms can be large.)
    harness["poll_adds_typically_ms"] = round(
        POLL_PAUSE_S * 1000 + harness.get("probe_refused_median_ms", 0) + harness["probe_ok_median_ms"], 2)
met = [r["meets_target"] for r in results]
print(json.dumps({
    "benchmark": "snapshot",
    "accel": accel,
    "mode": "agent" if agent else "no-vsock",
    "runs": runs,
    "target_ratio_max": TARGET_RATIO,
    "meets_target": None if None in met else all(met),
    **single_cli,
    "by_memory": results,
    "harness": harness,
}, indent=2))
PY
