"""microvmd against real VMs, through the Python SDK (and raw HTTP where the
SDK would hide what is tested)."""
import concurrent.futures
import http.client
import io
import json
import os
import subprocess
import tarfile
import time

import pytest

from conftest import MAX_BODY_MIB, MAX_EXEC_OUTPUT_KIB, TOKEN, parse_sse, subscribe_events
from microvm import BadRequest, Client, Conflict, NotFound, Sandbox


def runner_processes(vm_id):
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if vm_id in line]


def test_seed_flow_create_exec_pause_resume_delete(daemon, client):
    sb = Sandbox.create(rootfs=daemon.rootfs, client=client)
    assert sb.info["status"] == "running"
    assert sb.exec(["echo", "hello"]).stdout == b"hello\n"
    sb.pause()
    assert sb.status == "paused"
    with pytest.raises(Conflict) as refused:
        sb.exec(["echo", "held"])
    assert refused.value.status == 409 and "resume" in refused.value.message
    sb.resume()
    assert sb.exec("echo again").stdout == b"again\n"
    vm_dir = os.path.join(daemon.home, "vms", sb.id)
    sb.kill()
    with pytest.raises(NotFound):
        Sandbox.get(sb.id, client=client)
    # Nothing is left on the host: no records, no sidecar, no runner.
    assert not os.path.exists(vm_dir)
    assert not os.path.exists(os.path.join(daemon.home, "microvmd", "sandboxes", sb.id + ".json"))
    deadline = time.monotonic() + 10
    while runner_processes(sb.id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert runner_processes(sb.id) == []
    assert sb.id[:12] not in daemon.cli("ps", "-a", "-q").stdout


def test_tcp_needs_the_token(daemon):
    def get(headers):
        conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
        conn.request("GET", "/v1/sandboxes", headers=headers)
        response = conn.getresponse()
        body = response.read()
        conn.close()
        return response.status, body

    status, body = get({})
    assert status == 401 and "Bearer" in json.loads(body)["error"]
    status, body = get({"Authorization": "Bearer wrong-token-0123456789"})
    assert status == 401 and "error" in json.loads(body)
    status, body = get({"Authorization": "Bearer " + TOKEN})
    assert status == 200 and "sandboxes" in json.loads(body)
    # The SDK over TCP.
    tcp = Client(url=f"http://127.0.0.1:{daemon.port}", token=TOKEN)
    assert tcp.healthz() == {"status": "ok"}


def test_exec_streams_env_cwd_stdin_and_binary(shared):
    result = shared.exec(["sh", "-c", "echo $GREETING $EXTRA; pwd; cat; echo oops >&2; exit 7"],
                         env={"EXTRA": "there"}, cwd="/tmp", stdin=b"from stdin\n")
    assert result.exit_code == 7
    assert result.stdout == b"hi there\n/tmp\nfrom stdin\n"
    assert result.stderr == b"oops\n"
    binary = shared.exec(["sh", "-c", "printf '\\377\\000\\001'"])
    assert binary.stdout == b"\xff\x00\x01"
    assert shared.exec(["id", "-u"], user="1000").stdout == b"1000\n"


def test_exec_timeout_and_output_cap(shared):
    slow = shared.exec(["sleep", "30"], timeout=1)
    assert slow.timed_out and slow.exit_code == 137
    big = shared.exec(["head", "-c", str(MAX_EXEC_OUTPUT_KIB * 1024 * 3), "/dev/zero"])
    assert big.truncated and big.exit_code == 0
    assert big.stdout == b"\0" * (MAX_EXEC_OUTPUT_KIB * 1024)


def test_files_write_read_file_and_directory(shared):
    data = bytes(range(256)) * 64
    shared.files.write("/tmp/blob.bin", data, mode=0o755)
    assert shared.files.read("/tmp/blob.bin") == data
    assert shared.exec(["stat", "-c", "%a", "/tmp/blob.bin"]).stdout == b"755\n"
    shared.exec(["sh", "-c", "mkdir -p /tmp/tree/sub && echo one > /tmp/tree/a && echo two > /tmp/tree/sub/b"])
    with tarfile.open(fileobj=io.BytesIO(shared.files.read("/tmp/tree"))) as tar:
        contents = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert contents == {"tree/a": b"one\n", "tree/sub/b": b"two\n"}
    # A tar stream in: unpacked into the directory.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("up/c.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"three"))
    shared.exec(["mkdir", "-p", "/tmp/in"])
    shared.files.write_tar("/tmp/in", buffer.getvalue())
    assert shared.exec(["cat", "/tmp/in/up/c.txt"]).stdout == b"three"
    with pytest.raises(NotFound):
        shared.files.read("/tmp/does-not-exist")


def test_bad_requests_get_clear_4xx_and_change_nothing(daemon, client, shared):
    before = sorted(sb.id for sb in client.sandboxes())
    with pytest.raises(BadRequest) as bad_json:
        client.request("POST", "/v1/sandboxes", data=b"{not json", headers={"Content-Type": "application/json"})
    assert bad_json.value.status == 400 and "JSON" in bad_json.value.message
    with pytest.raises(BadRequest) as two_sources:
        client.json("POST", "/v1/sandboxes", body={"image": "busybox", "rootfs": "/x"})
    assert "exactly one" in two_sources.value.message
    with pytest.raises(BadRequest) as unknown:
        client.json("POST", "/v1/sandboxes", body={"rootfs": daemon.rootfs, "cpu": 2})
    assert 'unknown field "cpu"' in unknown.value.message
    with pytest.raises(BadRequest) as bad_exec:
        client.json("POST", f"/v1/sandboxes/{shared.id}/exec", body={"cmd": []})
    assert "cmd" in bad_exec.value.message
    with pytest.raises(NotFound) as missing:
        client.json("POST", "/v1/sandboxes/no-such-sandbox/exec", body={"cmd": ["true"]})
    assert "no sandbox no-such-sandbox" in missing.value.message
    with pytest.raises(BadRequest) as too_big:
        shared.files.write("/tmp/too-big", b"x" * ((MAX_BODY_MIB << 20) + 1))
    assert too_big.value.status == 413 and "--max-body" in too_big.value.message
    assert shared.exec(["test", "-e", "/tmp/too-big"]).exit_code == 1
    with pytest.raises(BadRequest) as bad_fork:
        shared.fork(0)
    assert "count" in bad_fork.value.message
    assert sorted(sb.id for sb in client.sandboxes()) == before


def test_twenty_concurrent_execs_on_four_sandboxes(daemon, client, shared):
    volume = os.path.join(daemon.root, "volume")
    os.makedirs(volume, exist_ok=True)
    with open(os.path.join(volume, "hello.txt"), "w") as f:
        f.write("from host")

    def create(i):
        # The first also carries the options that pass through to the library.
        extra = {"volumes": [{"host": volume, "guest": "/data", "readonly": True}], "ports": [8080],
                 "egress": {"deny_all": True}, "cpus": 1, "memory_mib": 384} if i == 0 else {}
        return Sandbox.create(rootfs=daemon.rootfs, client=client, labels={"suite": "sdk", "role": f"extra{i}"},
                              **extra)

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        others = list(pool.map(create, range(3)))
    sandboxes = [shared] + others
    try:
        assert others[0].exec(["cat", "/data/hello.txt"]).stdout == b"from host"
        assert others[0].exec(["sh", "-c", "echo x > /data/new"]).exit_code != 0
        assert any(p.startswith("8080/tcp -> ") for p in others[0].info["ports"]), others[0].info
        assert others[0].info["memory_mib"] == 384
        def run(i):
            sb = sandboxes[i % 4]
            return i, sb.id, sb.exec(["sh", "-c", f"echo {i} $(hostname); sleep 0.2"])

        with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(run, range(20)))
        for i, sb_id, result in results:
            assert result.exit_code == 0
            assert result.stdout == f"{i} {sb_id[:12]}\n".encode()
    finally:
        for sb in others:
            sb.kill()


def test_labels_filter_and_cli_sees_the_same_vms(daemon, client, shared):
    found = client.sandboxes(labels={"role": "shared"})
    assert [sb.id for sb in found] == [shared.id]
    assert found[0].info["labels"] == {"suite": "sdk", "role": "shared"}
    assert client.sandboxes(labels={"role": "nobody"}) == []
    assert shared.id[:12] in daemon.cli("ps", "-q").stdout
    # A VM the CLI starts is a sandbox too.
    started = daemon.cli("run", "-d", "--name", "from-cli", "--rootfs", daemon.rootfs, "--", "sleep", "600")
    assert started.returncode == 0, started.stderr
    try:
        cli_sb = Sandbox.get("from-cli", client=client)
        assert cli_sb.info["status"] == "running"
        assert cli_sb.exec(["echo", "ok"]).stdout == b"ok\n"
    finally:
        daemon.cli("rm", "-f", "from-cli")


def test_suspend_resume_keeps_the_sandbox(shared):
    shared.exec(["sh", "-c", "echo kept > /tmp/kept"])
    assert shared.suspend()["status"] == "suspended"
    with pytest.raises(Conflict):
        shared.exec(["true"])
    assert shared.resume()["status"] == "running"
    assert shared.exec(["cat", "/tmp/kept"]).stdout == b"kept\n"


def test_snapshot_and_create_from_it(daemon, client, shared):
    shared.exec(["sh", "-c", "echo saved > /tmp/saved"])
    assert shared.snapshot("snap-sdk") == {"id": shared.id, "snapshot": "snap-sdk"}
    assert shared.exec(["cat", "/tmp/saved"]).stdout == b"saved\n"  # it carries on
    with Sandbox.create(snapshot="snap-sdk", client=client, labels={"from": "snapshot"}) as copy:
        assert copy.id != shared.id and copy.info["source"] == "snapshot:snap-sdk"
        assert copy.exec(["cat", "/tmp/saved"]).stdout == b"saved\n"
    with pytest.raises(NotFound):
        Sandbox.get(copy.id, client=client)


def test_ttl_expiry_and_events(daemon, client):
    sock, buffer = subscribe_events(daemon)
    assert b"text/event-stream" in buffer
    sb = Sandbox.create(rootfs=daemon.rootfs, client=client, ttl_seconds=2)
    assert sb.info["expires_at"]
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        assert chunk, "the event stream ended"
        buffer += chunk
        seen = [e for e in parse_sse(buffer) if e["id"] == sb.id]
        if any(e["type"] == "expired" for e in seen):
            break
    sock.close()
    types = [e["type"] for e in seen]
    assert "created" in types and types[-1] == "expired", seen
    with pytest.raises(NotFound):
        Sandbox.get(sb.id, client=client)
    assert not os.path.exists(os.path.join(daemon.home, "vms", sb.id))


def test_metrics(client, shared):
    _, content_type, body = client.request("GET", "/metrics")
    text = body.decode()
    assert content_type.startswith("text/plain")
    assert 'microvmd_sandboxes{state="running"}' in text
    assert "microvmd_create_seconds_count" in text and "microvmd_exec_seconds_bucket" in text
    assert 'microvmd_http_requests_total{method="POST",code="201"}' in text
    assert 'code="404"' in text
    assert 'microvmd_egress_decisions{decision="refused"}' in text


def test_kill9_and_restart_keeps_sandboxes(daemon, client, shared):
    before = Sandbox.get(shared.id, client=client).info
    daemon.kill9()
    # The VM is a detached runner: it keeps running without the daemon.
    assert shared.id[:12] in daemon.cli("ps", "-q").stdout
    daemon.start()
    after = Sandbox.get(shared.id, client=client).info
    assert after["status"] == "running"
    assert after["labels"] == before["labels"] and after["expires_at"] == before["expires_at"]
    assert shared.exec(["echo", "still here"]).stdout == b"still here\n"


def test_fork_makes_a_running_copy_that_answers_exec_and_keeps_the_labels(client, shared):
    shared.exec(["sh", "-c", "echo before-the-fork > /tmp/forked.txt"])
    children = shared.fork(1)
    assert len(children) == 1
    child = children[0]
    try:
        assert child.id != shared.id
        assert child.info["labels"] == shared.refresh()["labels"]
        assert child.exec(["cat", "/tmp/forked.txt"]).stdout == b"before-the-fork\n"
        child.exec(["sh", "-c", "echo child-only > /tmp/forked.txt"])
        assert shared.exec(["cat", "/tmp/forked.txt"]).stdout == b"before-the-fork\n"
        assert shared.status == "running"
    finally:
        child.kill()
