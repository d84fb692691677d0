"""What a hostile guest or client can make microvmd hold: each case fills a
buffer from one side and checks, in the daemon's own /proc counters, that
the daemon stops at its bound instead of growing with the input; or stops
answering, and checks that the daemon stops waiting."""
import json
import socket
import time

import pytest

from conftest import MAX_DOWNLOAD_MIB
from microvm import APIError, BadRequest, Sandbox
from test_ws_exec import open_exec


def written_bytes(pid):
    """Bytes the process has passed to write(2) and friends (/proc/PID/io wchar)."""
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    raise AssertionError("no wchar in /proc/%d/io" % pid)


def resident_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/%d/status" % pid)


def test_get_files_stops_copying_at_max_download(daemon, shared):
    limit = MAX_DOWNLOAD_MIB << 20
    # A file and a tree of files, each well over the limit in all.
    made = shared.exec(["sh", "-c", "head -c %d /dev/zero > /tmp/big && mkdir -p /tmp/bigtree && "
                        "for i in 1 2 3 4 5 6 7 8; do head -c %d /dev/zero > /tmp/bigtree/$i; done"
                        % (16 * limit, limit * 3 // 4)])
    assert made.exit_code == 0, made.stderr
    for path in ("/tmp/big", "/tmp/bigtree"):
        before = written_bytes(daemon.process.pid)
        with pytest.raises(BadRequest) as too_big:
            shared.files.read(path)
        written = written_bytes(daemon.process.pid) - before
        assert too_big.value.status == 413 and "--max-download" in too_big.value.message, too_big.value.message
        # What the guest sends lands in a scratch copy on the host's disk
        # first: that copy must stop at the limit, not at the guest's size.
        assert written <= limit + (256 << 10), f"{path}: the daemon wrote {written} bytes for a {limit}-byte limit"


def test_ws_exec_client_that_does_not_read_cannot_grow_the_daemon(daemon, shared):
    """Each unknown control message earns an error frame; a client that sends
    them and never reads must be slowed down, not buffered for."""
    ws = open_exec(daemon, shared, {"cmd": ["sh", "-c", "echo started; exec sleep 120"], "timeout_seconds": 100})
    out = b""
    while b"started" not in out:
        opcode, payload = ws.recv()
        if opcode == 2:
            out += payload[1:]
    pid = daemon.process.pid
    before = resident_bytes(pid)
    frame = bytes([0x81, 0x82, 0, 0, 0, 0]) + b"{}"  # a masked text frame "{}" (a zero mask)
    batch = frame * 10_000
    ws.sock.settimeout(2)
    sent = 0
    deadline = time.monotonic() + 30
    try:
        while sent < 400_000 and time.monotonic() < deadline:
            ws.sock.sendall(batch)
            sent += 10_000
    except socket.timeout:
        pass  # the daemon stopped reading us: what the fix is for
    time.sleep(1)  # the daemon handles what it has read
    grown = resident_bytes(pid) - before
    ws.close()
    assert grown < (16 << 20), f"the daemon grew by {grown} bytes for {sent} control messages it was not read back"


def test_files_path_checks(shared):
    for query, expect in (("path=relative", "absolute"), ("path=%2Ftmp%2Fa%00b", "NUL"),
                          ("path=/" + "a" * 10_000, None)):
        with pytest.raises(BadRequest) as bad:
            shared.client.request("GET", f"/v1/sandboxes/{shared.id}/files?{query}")
        assert 400 <= bad.value.status < 500, (query[:40], bad.value.status, bad.value.message)
        if expect:
            assert expect in bad.value.message
    # ".." is a guest path like any other: it resolves inside the guest.
    shared.files.write("/tmp/dots.txt", b"dots")
    assert shared.files.read("/tmp/../tmp/dots.txt") == b"dots"
    assert json.loads(shared.client.request("GET", "/v1/healthz")[2]) == {"status": "ok"}


def test_exec_whose_guest_ignores_the_kill_is_not_waited_for_forever(daemon, client):
    """A workload that stops the agent process serving its exec: the kill at
    timeout_seconds never takes effect, and the daemon must still answer
    (else each such exec holds one of its --workers for good)."""
    sb = Sandbox.create(rootfs=daemon.rootfs, client=client, ttl_seconds=600, labels={"suite": "bounds"})
    try:
        stop_agent = ["sh", "-c", "kill -STOP $PPID; sleep 100"]
        with pytest.raises(APIError) as hung:
            client.request("POST", f"/v1/sandboxes/{sb.id}/exec", body={"cmd": stop_agent, "timeout_seconds": 2},
                           timeout=60)
        assert hung.value.status == 504 and "did not end the command" in hung.value.message, hung.value
        ws = open_exec(daemon, sb, {"cmd": stop_agent, "timeout_seconds": 2})
        ws.sock.settimeout(60)
        _, _, message = ws.run_to_exit()
        ws.close()
        assert message["type"] == "error" and "did not end the command" in message["error"], message
        assert sb.exec(["echo", "still serving"]).stdout == b"still serving\n"
    finally:
        sb.kill()
