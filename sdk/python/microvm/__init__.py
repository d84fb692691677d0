"""Python SDK for microvmd, the microvm sandbox daemon (docs/API.md).

Standard library only: HTTP/1.1 over the daemon's unix socket (or TCP with a
bearer token).

    from microvm import Sandbox

    with Sandbox.create(image="busybox", labels={"team": "a"}) as sb:
        result = sb.exec(["echo", "hello"])
        print(result.exit_code, result.stdout)       # 0 b'hello\\n'
        sb.files.write("/tmp/data.txt", b"42")
        print(sb.files.read("/tmp/data.txt"))        # b'42'
"""
from .client import (APIError, BadRequest, Client, Conflict, ExecResult, Files, NotFound,
                     NotImplementedByRuntime, Sandbox, default_socket)

__all__ = ["APIError", "BadRequest", "Client", "Conflict", "ExecResult", "Files", "NotFound",
           "NotImplementedByRuntime", "Sandbox", "default_socket"]
