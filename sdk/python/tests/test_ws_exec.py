"""The streaming exec (GET /v1/sandboxes/{id}/exec/ws) through a minimal
WebSocket client (RFC 6455: the handshake, masked client frames)."""
import base64
import json
import os
import socket
import struct
import time


class WebSocket:
    def __init__(self, path, target, timeout=60):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            assert chunk, "closed during the handshake"
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, data, opcode=None):
        if isinstance(data, str):
            data, opcode = data.encode(), opcode or 1
        opcode = opcode or 2
        mask = os.urandom(4)
        header = bytes([0x80 | opcode])
        n = len(data)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack(">Q", n)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _need(self, n):
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.buffer += chunk

    def recv(self):
        """(opcode, payload) of the next frame (the server does not fragment)."""
        self._need(2)
        opcode, n = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
        offset = 2
        if n == 126:
            self._need(4)
            n, offset = struct.unpack(">H", self.buffer[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, offset = struct.unpack(">Q", self.buffer[2:10])[0], 10
        self._need(offset + n)
        payload, self.buffer = self.buffer[offset:offset + n], self.buffer[offset + n:]
        return opcode, payload

    def run_to_exit(self):
        """stdout, stderr and the exit message."""
        out, err = b"", b""
        while True:
            opcode, payload = self.recv()
            if opcode == 2:
                if payload[:1] == b"\x01":
                    out += payload[1:]
                else:
                    err += payload[1:]
            elif opcode == 1:
                message = json.loads(payload)
                if message["type"] in ("exit", "error"):
                    return out, err, message

    def close(self):
        self.sock.close()


def open_exec(daemon, sandbox, request):
    ws = WebSocket(daemon.socket, f"/v1/sandboxes/{sandbox.id}/exec/ws")
    ws.send(json.dumps(request))
    return ws


def test_streams_stdin_stdout_stderr_and_exit_code(daemon, shared):
    ws = open_exec(daemon, shared, {"cmd": ["sh", "-c", "cat; echo done >&2; exit 5"]})
    ws.send(b"hello ")
    ws.send(b"world\n")
    ws.send(json.dumps({"type": "eof"}))
    out, err, message = ws.run_to_exit()
    ws.close()
    assert (out, err, message) == (b"hello world\n", b"done\n", {"type": "exit", "exit_code": 5})


def test_tty_with_resize(daemon, shared):
    ws = open_exec(daemon, shared, {"cmd": ["sh", "-c", "stty size; read line; stty size"], "tty": True,
                                    "rows": 30, "cols": 100})
    out = b""
    while b"30 100" not in out:
        opcode, payload = ws.recv()
        if opcode == 2:
            out += payload[1:]
    ws.send(json.dumps({"type": "resize", "rows": 40, "cols": 120}))
    time.sleep(0.5)  # the resize reaches the guest before the line that asks for the size
    ws.send(b"go\r")
    rest, _, message = ws.run_to_exit()
    ws.close()
    assert b"40 120" in rest and message == {"type": "exit", "exit_code": 0}


def test_disconnect_kills_the_command(daemon, shared):
    ws = open_exec(daemon, shared, {"cmd": ["sh", "-c", "echo $$ > /tmp/ws.pid; echo started; exec sleep 600"]})
    out = b""
    while b"started" not in out:
        opcode, payload = ws.recv()
        if opcode == 2:
            out += payload[1:]
    pid = shared.exec(["cat", "/tmp/ws.pid"]).stdout.decode().strip()
    assert shared.exec(["kill", "-0", pid]).exit_code == 0
    ws.close()
    deadline = time.monotonic() + 30
    while shared.exec(["kill", "-0", pid]).exit_code == 0:
        assert time.monotonic() < deadline, "the command outlived its client"
        time.sleep(0.2)


def test_bad_first_message_gets_an_error(daemon, shared):
    ws = open_exec(daemon, shared, {"cmd": []})
    _, _, message = ws.run_to_exit()
    ws.close()
    assert message["type"] == "error" and "cmd" in message["error"]
