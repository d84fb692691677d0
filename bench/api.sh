#!/usr/bin/env bash
# microvmd benchmark, one daemon, one VM, one run. Prints JSON:
#   - exec round trip of `/bin/true` through the API (POST .../exec over the
#     unix socket, one connection per request as a client would) against
#     `microvm exec VM /bin/true` on the same VM, runs interleaved so both see
#     the same load. Target: API p50 <= 1.2 x CLI p50.
#   - create latency (POST /v1/sandboxes until it answers exec), a few runs.
#   - requests per second of GET /v1/sandboxes under wrk, 50 connections over
#     TCP (bearer token), with the count of errors and non-2xx answers.
#   bench/api.sh [RUNS] [WRK_SECONDS]      (needs a build: scripts/build.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-50}
wrk_seconds=${2:-10}
bin=build/bin
[ -x "$bin/microvmd" ] || { echo "bench/api.sh: build first (scripts/build.sh)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "bench/api.sh: needs wrk (scripts/deps.sh)" >&2; exit 1; }

scratch=$(mktemp -d /tmp/microvm-apibench.XXXXXX)
export MICROVM_HOME="$scratch/home"
mkdir -p "$MICROVM_HOME"
token=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
printf '%s\n' "$token" > "$scratch/token"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$bin/microvmd" --listen "127.0.0.1:$port" --token-file "$scratch/token" 2>"$scratch/microvmd.log" &
daemon=$!
cleanup() {
  curl -s --unix-socket "$MICROVM_HOME/microvmd.sock" -X DELETE localhost/v1/sandboxes/bench-api >/dev/null 2>&1 || true
  kill "$daemon" 2>/dev/null || true
  wait "$daemon" 2>/dev/null || true
  "$bin/microvm" rm -f bench-api >/dev/null 2>&1 || true
  rm -rf "$scratch"
}
trap cleanup EXIT
./scripts/make-rootfs.sh "$scratch/rootfs"
for _ in $(seq 300); do
  curl -s --unix-socket "$MICROVM_HOME/microvmd.sock" localhost/v1/healthz >/dev/null 2>&1 && break
  sleep 0.1
done

python3 - "$runs" "$bin/microvm" "$MICROVM_HOME/microvmd.sock" "$scratch/rootfs" <<'PY' > "$scratch/exec.json"
import http.client, json, signal, socket, statistics, subprocess, sys, time
runs, cli, sock_path, rootfs = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
signal.alarm(1800)

class Unix(http.client.HTTPConnection):
    def __init__(self):
        super().__init__("localhost", timeout=120)
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(120)
        self.sock.connect(sock_path)

def call(method, path, body=None):
    conn = Unix()
    conn.request(method, path, body=json.dumps(body) if body is not None else None)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    if response.status >= 300:
        raise SystemExit(f"{method} {path}: {response.status} {data!r}")
    return json.loads(data)

create_ms = []
for i in range(3):
    t = time.perf_counter()
    sb = call("POST", "/v1/sandboxes", {"rootfs": rootfs, "name": f"bench-create-{i}"})
    create_ms.append((time.perf_counter() - t) * 1000)
    call("DELETE", f"/v1/sandboxes/{sb['id']}")
call("POST", "/v1/sandboxes", {"rootfs": rootfs, "name": "bench-api", "memory_mib": 1024})

api, cli_ms = [], []
for _ in range(5):  # warm-up
    call("POST", "/v1/sandboxes/bench-api/exec", {"cmd": ["/bin/true"]})
    subprocess.run([cli, "exec", "bench-api", "/bin/true"], check=True)
for _ in range(runs):
    t = time.perf_counter()
    reply = call("POST", "/v1/sandboxes/bench-api/exec", {"cmd": ["/bin/true"]})
    api.append((time.perf_counter() - t) * 1000)
    assert reply["exit_code"] == 0
    t = time.perf_counter()
    subprocess.run([cli, "exec", "bench-api", "/bin/true"], check=True)
    cli_ms.append((time.perf_counter() - t) * 1000)

def pct(values, p):
    values = sorted(values)
    return round(values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))], 1)

print(json.dumps({
    "create_ms": {"p50": pct(create_ms, 50), "max": pct(create_ms, 100), "runs": len(create_ms)},
    "exec_api_ms": {"p50": pct(api, 50), "p99": pct(api, 99)},
    "exec_cli_ms": {"p50": pct(cli_ms, 50), "p99": pct(cli_ms, 99)},
    "exec_api_over_cli_p50": round(pct(api, 50) / pct(cli_ms, 50), 2),
    "exec_target": "API p50 <= 1.2 x CLI p50",
    "exec_runs": runs,
}))
PY

wrk -t2 -c50 -d"${wrk_seconds}s" --latency -H "Authorization: Bearer $token" \
    "http://127.0.0.1:$port/v1/sandboxes" > "$scratch/wrk.txt"
python3 - "$scratch/exec.json" "$scratch/wrk.txt" "$wrk_seconds" <<'PY'
import json, re, sys
result = json.load(open(sys.argv[1]))
text = open(sys.argv[2]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
total = int(re.search(r"(\d+) requests in", text).group(1))
errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
p50 = re.search(r"50%\s+([\d.]+\w+)", text)
result["list_wrk"] = {"connections": 50, "seconds": int(sys.argv[3]), "requests": total, "requests_per_second": rps,
                      "socket_errors": errors, "non_2xx": int(non2xx.group(1)) if non2xx else 0,
                      "latency_p50": p50.group(1) if p50 else None}
print(json.dumps(result))
PY
