"""Fixtures: one real microvmd (unix socket + TCP with a token) over a fresh
data dir, booting real VMs from a busybox rootfs; one shared sandbox.

Environment: MICROVMD_BIN (the daemon), MICROVM_BIN_DIR (for the CLI),
MICROVM_SOURCE_DIR (scripts/make-rootfs.sh). CTest sets them."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from microvm import Client, Sandbox  # noqa: E402

SOURCE_DIR = os.environ.get("MICROVM_SOURCE_DIR", os.path.abspath(os.path.join(HERE, "..", "..", "..")))
BIN_DIR = os.environ.get("MICROVM_BIN_DIR", os.path.join(SOURCE_DIR, "build", "bin"))
DAEMON = os.environ.get("MICROVMD_BIN", os.path.join(BIN_DIR, "microvmd"))
TOKEN = "test-token-0123456789abcdef"
MAX_BODY_MIB = 2
MAX_EXEC_OUTPUT_KIB = 64
MAX_DOWNLOAD_MIB = 1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, root):
        self.root = root
        self.home = os.path.join(root, "home")
        self.rootfs = os.path.join(root, "rootfs")
        self.socket = os.path.join(self.home, "microvmd.sock")
        self.port = free_port()
        self.token_file = os.path.join(root, "token")
        with open(self.token_file, "w") as f:
            f.write(TOKEN + "\n")
        os.makedirs(self.home)
        subprocess.run([os.path.join(SOURCE_DIR, "scripts", "make-rootfs.sh"), self.rootfs], check=True,
                       stdout=subprocess.DEVNULL)
        self.process = None
        self.log = open(os.path.join(root, "microvmd.log"), "ab")

    def start(self):
        self.process = subprocess.Popen(
            [DAEMON, "--data-dir", self.home, "--listen", f"127.0.0.1:{self.port}", "--token-file", self.token_file,
             "--max-body", str(MAX_BODY_MIB), "--max-exec-output", str(MAX_EXEC_OUTPUT_KIB),
             "--max-download", str(MAX_DOWNLOAD_MIB)],
            stdout=self.log, stderr=self.log)
        client = self.client()
        deadline = time.monotonic() + 30
        while True:
            try:
                if client.healthz() == {"status": "ok"}:
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("microvmd did not come up; see " + self.log.name)
            time.sleep(0.05)

    def kill9(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)

    def client(self, **kwargs):
        return Client(socket_path=self.socket, **kwargs)

    def cli(self, *args):
        env = dict(os.environ, MICROVM_HOME=self.home)
        return subprocess.run([os.path.join(BIN_DIR, "microvm"), *args], env=env, capture_output=True, text=True,
                              timeout=120)


@pytest.fixture(scope="session")
def daemon():
    root = tempfile.mkdtemp(prefix="mvd-", dir="/tmp")
    d = Daemon(root)
    d.start()
    yield d
    try:
        client = d.client()
        for sb in client.sandboxes():
            sb.kill()
    finally:
        d.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def client(daemon):
    return daemon.client()


@pytest.fixture(scope="session")
def shared(daemon, client):
    """One sandbox the read-mostly tests share (creating each costs a boot)."""
    sb = Sandbox.create(rootfs=daemon.rootfs, client=client, labels={"suite": "sdk", "role": "shared"},
                        ttl_seconds=3600, env={"GREETING": "hi"})
    yield sb
    sb.kill()


def subscribe_events(daemon):
    """A GET /v1/events stream read until the daemon says it is subscribed:
    (the socket, what was read so far)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    sock.connect(daemon.socket)
    sock.sendall(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
    buffer = b""
    while b": subscribed" not in buffer:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError("the event stream ended before it was subscribed: %r" % buffer)
        buffer += chunk
    return sock, buffer


def parse_sse(buffer):
    events = []
    for block in buffer.split(b"\n\n"):
        for line in block.split(b"\n"):
            if line.startswith(b"data: "):
                events.append(json.loads(line[6:]))
    return events
