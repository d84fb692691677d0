#!/usr/bin/env python3
"""A hostile distribution registry for the e2e tests, on 127.0.0.1 only.

  hostile_registry.py PORT MODE LOG

Serves one image, /v2/hostile/app:latest (an OCI manifest with a config and
one layer), misbehaving as MODE says:

  long-blob   the layer is declared at 1024 bytes and served as 64 MiB
  stall       the layer's headers and 10 bytes come, then nothing
  trickle     the layer comes at one byte every 200 ms (never a stall)
  big-config  the config is declared at 64 MiB (it is never served)
  realm       every /v2/ request is answered 401 with a Bearer challenge whose
              realm is plain http to a host that is not a loopback name
              (http://[::ffff:127.0.0.1]:PORT/token: the IPv4-mapped form,
              which still reaches this server, so a leak would be seen)

Appends one line per request to LOG ("GET /path auth=<Authorization header>")
and, for long-blob, a line "sent N" with the bytes of the layer it got out
before the client hung up. Every response ends by itself within 120 s, and
the server runs until it is killed.
"""
import hashlib
import http.server
import json
import select
import socket
import socketserver
import sys
import time

PORT = int(sys.argv[1])
MODE = sys.argv[2]
LOG = sys.argv[3]

LAYER = b"hostile layer bytes\n" * 51 + b"1234"  # 1024 bytes
CONFIG = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]}}).encode()


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest():
    config_size = 64 << 20 if MODE == "big-config" else len(CONFIG)
    config_digest = digest(b"{" * config_size) if MODE == "big-config" else digest(CONFIG)
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest(LAYER),
                    "size": len(LAYER)}],
    }).encode()


def log(line):
    with open(LOG, "a") as out:
        out.write(line + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, content_type="application/octet-stream", length=None, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.send_header("Connection", "close")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def do_GET(self):
        log("GET " + self.path + " auth=" + self.headers.get("Authorization", ""))
        self.close_connection = True
        if MODE == "realm" and self.path.startswith("/v2/"):
            realm = "http://[::ffff:127.0.0.1]:%d/token" % PORT
            self.reply(401, b"{}", "application/json",
                       headers=[("WWW-Authenticate", 'Bearer realm="%s",service="hostile"' % realm)])
        elif self.path.startswith("/token"):
            self.reply(200, json.dumps({"token": "stolen"}).encode(), "application/json")
        elif self.path == "/v2/hostile/app/manifests/latest":
            self.reply(200, manifest(), "application/vnd.oci.image.manifest.v1+json")
        elif self.path == "/v2/hostile/app/blobs/" + digest(CONFIG):
            self.reply(200, CONFIG)
        elif self.path == "/v2/hostile/app/blobs/" + digest(LAYER):
            self.layer()
        else:
            self.reply(404, b"{}", "application/json")

    def layer(self):
        start = time.monotonic()
        if MODE == "long-blob":
            total = 64 << 20
            self.reply(200, b"", length=total)
            sent = 0
            chunk = b"x" * 65536
            try:
                while sent < total:
                    self.wfile.write(chunk)
                    sent += len(chunk)
            except OSError:
                pass
            log("sent %d" % sent)
        elif MODE == "stall":
            self.reply(200, LAYER[:10], length=len(LAYER))
            while time.monotonic() - start < 120 and not self.client_gone():
                time.sleep(0.2)
        elif MODE == "trickle":
            self.reply(200, b"", length=len(LAYER))
            try:
                for byte in LAYER:
                    if time.monotonic() - start > 120:
                        return
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                return
        else:
            self.reply(200, LAYER)

    def client_gone(self):
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""  # EOF: the client closed
        except OSError:
            return True


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


Server(("127.0.0.1", PORT), Handler).serve_forever()
