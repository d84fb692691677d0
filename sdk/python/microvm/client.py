"""The client: one HTTP request per call, errors raised as APIError."""
import base64
import http.client
import json
import os
import socket
import ssl
import urllib.parse


def default_socket():
    """$MICROVMD_SOCKET, else microvmd.sock in the data dir the CLI uses."""
    if os.environ.get("MICROVMD_SOCKET"):
        return os.environ["MICROVMD_SOCKET"]
    if os.environ.get("MICROVM_HOME"):
        return os.path.join(os.environ["MICROVM_HOME"], "microvmd.sock")
    if os.environ.get("XDG_DATA_HOME"):
        return os.path.join(os.environ["XDG_DATA_HOME"], "microvm", "microvmd.sock")
    if os.geteuid() == 0:
        return "/var/lib/microvm/microvmd.sock"
    return os.path.expanduser("~/.local/share/microvm/microvmd.sock")


class APIError(Exception):
    """An error answer of the API: `status` (HTTP code) and `message` (what to fix)."""

    def __init__(self, status, message, method="", path=""):
        super().__init__(f"{method} {path}: {status}: {message}".strip())
        self.status = status
        self.message = message


class BadRequest(APIError):
    """400 and other 4xx: the request was wrong; the message says how."""


class NotFound(APIError):
    """404: no such sandbox (or resource)."""


class Conflict(APIError):
    """409: the sandbox is not in a state for this (paused, suspended, exited)."""


class NotImplementedByRuntime(APIError):
    """501: the runtime does not support this yet."""


def _error_for(status, message, method, path):
    cls = {404: NotFound, 409: Conflict, 501: NotImplementedByRuntime}.get(status)
    if cls is None:
        cls = BadRequest if 400 <= status < 500 else APIError
    return cls(status, message, method, path)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class Client:
    """A connection to microvmd: a unix socket (default) or url="http(s)://host:port" with a token."""

    def __init__(self, socket_path=None, url=None, token=None, timeout=300.0, tls_context=None):
        self.socket_path = None if url else (socket_path or default_socket())
        self.url = urllib.parse.urlsplit(url) if url else None
        self.token = token
        self.timeout = timeout
        self.tls_context = tls_context

    def _connection(self, timeout):
        if self.url is None:
            return _UnixConnection(self.socket_path, timeout)
        if self.url.scheme == "https":
            return http.client.HTTPSConnection(self.url.hostname, self.url.port or 443, timeout=timeout,
                                               context=self.tls_context or ssl.create_default_context())
        return http.client.HTTPConnection(self.url.hostname, self.url.port or 80, timeout=timeout)

    def request(self, method, path, body=None, data=None, headers=None, timeout=None):
        """Returns (status, content_type, bytes); raises APIError for 4xx/5xx."""
        all_headers = dict(headers or {})
        payload = data
        if body is not None:
            payload = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        if self.token:
            all_headers["Authorization"] = "Bearer " + self.token
        conn = self._connection(self.timeout if timeout is None else timeout)
        try:
            conn.request(method, path, body=payload, headers=all_headers)
            response = conn.getresponse()
            content = response.read()
            status, content_type = response.status, response.getheader("Content-Type", "")
        finally:
            conn.close()
        if status >= 400:
            try:
                message = json.loads(content)["error"]
            except (ValueError, KeyError, TypeError):
                message = content.decode(errors="replace")
            raise _error_for(status, message, method, path)
        return status, content_type, content

    def json(self, method, path, body=None, timeout=None):
        _, _, content = self.request(method, path, body=body, timeout=timeout)
        return json.loads(content) if content else None

    def healthz(self):
        return self.json("GET", "/v1/healthz")

    def sandboxes(self, labels=None):
        """Every sandbox (the CLI's VMs too), or those with all of `labels`."""
        query = ""
        if labels:
            query = "?" + "&".join("label=" + urllib.parse.quote(f"{k}={v}") for k, v in labels.items())
        return [Sandbox(self, item) for item in self.json("GET", "/v1/sandboxes" + query)["sandboxes"]]


class ExecResult:
    """exit_code, stdout and stderr (bytes), and whether output was truncated or the command timed out."""

    def __init__(self, reply):
        self.exit_code = reply["exit_code"]
        self.stdout = _decode(reply["stdout"], reply.get("stdout_encoding"))
        self.stderr = _decode(reply["stderr"], reply.get("stderr_encoding"))
        self.truncated = reply.get("truncated", False)
        self.timed_out = reply.get("timed_out", False)

    def __repr__(self):
        return f"ExecResult(exit_code={self.exit_code}, stdout={self.stdout!r}, stderr={self.stderr!r})"


def _decode(text, encoding):
    return base64.b64decode(text) if encoding == "base64" else text.encode()


class Files:
    """A sandbox's files: write(path, data) and read(path) -> bytes (a tar stream for a directory)."""

    def __init__(self, sandbox):
        self._sandbox = sandbox

    def _path(self, path, extra=""):
        return f"/v1/sandboxes/{self._sandbox.id}/files?path={urllib.parse.quote(path)}{extra}"

    def write(self, path, data, mode=None):
        if isinstance(data, str):
            data = data.encode()
        extra = f"&mode={mode:o}" if mode is not None else ""
        self._sandbox.client.request("PUT", self._path(path, extra), data=data,
                                     headers={"Content-Type": "application/octet-stream"})

    def write_tar(self, path, tar_bytes):
        """Unpacks a tar stream into the directory `path`."""
        self._sandbox.client.request("PUT", self._path(path), data=tar_bytes,
                                     headers={"Content-Type": "application/x-tar"})

    def read(self, path):
        return self._sandbox.client.request("GET", self._path(path))[2]


class Sandbox:
    """A sandbox: Sandbox.create(...) boots one and returns once it answers exec."""

    def __init__(self, client, info):
        self.client = client
        self.info = info
        self.id = info["id"]
        self.files = Files(self)

    @classmethod
    def create(cls, image=None, rootfs=None, snapshot=None, *, client=None, cmd=None, env=None, cwd=None,
               user=None, cpus=None, memory_mib=None, ports=None, volumes=None, egress=None, labels=None,
               ttl_seconds=None, name=None, network=None, timeout=300.0):
        client = client or Client()
        body = {"image": image, "rootfs": rootfs, "snapshot": snapshot, "cmd": cmd, "env": env, "cwd": cwd,
                "user": user, "cpus": cpus, "memory_mib": memory_mib, "ports": ports, "volumes": volumes,
                "egress": egress, "labels": labels, "ttl_seconds": ttl_seconds, "name": name, "network": network}
        body = {k: v for k, v in body.items() if v is not None}
        return cls(client, client.json("POST", "/v1/sandboxes", body=body, timeout=timeout))

    @classmethod
    def get(cls, id, client=None):
        client = client or Client()
        return cls(client, client.json("GET", f"/v1/sandboxes/{id}"))

    def refresh(self):
        self.info = self.client.json("GET", f"/v1/sandboxes/{self.id}")
        return self.info

    @property
    def status(self):
        return self.refresh()["status"]

    def exec(self, cmd, env=None, cwd=None, user=None, stdin=None, timeout=None):
        """Runs `cmd` (a list, or a shell command line) and returns an ExecResult."""
        body = {"cmd": cmd}
        if env:
            body["env"] = env
        if cwd:
            body["cwd"] = cwd
        if user:
            body["user"] = user
        if stdin is not None:
            body["stdin"] = base64.b64encode(stdin.encode() if isinstance(stdin, str) else stdin).decode()
        if timeout is not None:
            body["timeout_seconds"] = int(timeout)
        wait = None if timeout is None else timeout + 30
        return ExecResult(self.client.json("POST", f"/v1/sandboxes/{self.id}/exec", body=body,
                                           timeout=wait if wait else self.client.timeout))

    def _action(self, action, body=None):
        self.info = self.client.json("POST", f"/v1/sandboxes/{self.id}/{action}", body=body)
        return self.info

    def pause(self):
        return self._action("pause")

    def resume(self):
        return self._action("resume")

    def suspend(self):
        return self._action("suspend")

    def snapshot(self, name):
        return self.client.json("POST", f"/v1/sandboxes/{self.id}/snapshot", body={"name": name})

    def fork(self, count=1):
        """Running copies of this sandbox from this instant (it runs on): a list of Sandbox."""
        forked = self.client.json("POST", f"/v1/sandboxes/{self.id}/fork", body={"count": count})
        return [Sandbox(self.client, child) for child in forked["children"]]

    def kill(self):
        """Deletes the sandbox (stopping it first); a sandbox already gone is fine."""
        try:
            self.client.json("DELETE", f"/v1/sandboxes/{self.id}")
        except NotFound:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
        return False

    def __repr__(self):
        return f"Sandbox({self.id[:12]}, {self.info.get('status')})"
