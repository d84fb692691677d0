#!/usr/bin/env bash
# podman with microvm-runtime against microvm itself, one JSON object:
# `podman --runtime microvm-runtime run --rm --network none IMAGE true`
# against `microvm run --rm --network none IMAGE true` of the same image from
# the same loopback registry, runs interleaved; medians reported. Uses the
# podman test's setup (tests/e2e/podman_test.py: registry, vfs storage).
#   bench/podman.sh [RUNS]      (needs a build: scripts/build.sh, and podman)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
[ -x build/bin/microvm-runtime ] || { echo "bench/podman.sh: build first (scripts/build.sh)" >&2; exit 1; }
python3 - "$runs" "$PWD" <<'PY'
import json, os, statistics, subprocess, sys, tempfile, time
runs, source = int(sys.argv[1]), sys.argv[2]
sys.path.insert(0, os.path.join(source, "tests/e2e"))
import podman_test as setup
setup.BIN_DIR, setup.SOURCE_DIR = os.path.join(source, "build/bin"), source
setup.setUpModule()
home = tempfile.mkdtemp(prefix="microvm-bench-podman-")
env = dict(os.environ, MICROVM_HOME=home)
microvm = os.path.join(source, "build/bin/microvm")
try:
    def timed(argv, **kw):
        start = time.monotonic()
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300, **kw)
        assert done.returncode == 0, done.stderr
        return time.monotonic() - start
    # Warm both: the image pulled and converted, each one's template made.
    for _ in range(2):
        timed(setup.PODMAN + ["run", "--rm", "--network", "none", setup.IMAGE, "true"])
        timed([microvm, "run", "--rm", "--network", "none", setup.IMAGE, "true"], env=env)
    podman, own = [], []
    for _ in range(runs):
        podman.append(timed(setup.PODMAN + ["run", "--rm", "--network", "none", setup.IMAGE, "true"]))
        own.append(timed([microvm, "run", "--rm", "--network", "none", setup.IMAGE, "true"], env=env))
    print(json.dumps({
        "benchmark": "podman",
        "runs": runs,
        "podman_run_rm_true_median_s": round(statistics.median(podman), 3),
        "microvm_run_rm_true_median_s": round(statistics.median(own), 3),
        "podman_vs_microvm_ratio": round(statistics.median(podman) / statistics.median(own), 2),
        "podman_s": [round(x, 3) for x in podman],
        "microvm_s": [round(x, 3) for x in own],
    }, indent=2))
finally:
    subprocess.run([microvm, "template", "prune"], env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["rm", "-rf", home])
    setup.tearDownModule()
PY
