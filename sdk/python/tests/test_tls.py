"""A second microvmd on the same data dir, serving TLS on TCP: the bearer
token is still required, and a client trusting the certificate gets through.
No VM is booted."""
import http.client
import json
import os
import ssl
import subprocess
import time

from conftest import DAEMON, TOKEN, free_port


def test_tls_listener_with_token(daemon):
    cert, key = os.path.join(daemon.root, "cert.pem"), os.path.join(daemon.root, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    port = free_port()
    process = subprocess.Popen([DAEMON, "--data-dir", daemon.home, "--socket", os.path.join(daemon.root, "tls.sock"),
                                "--listen", f"127.0.0.1:{port}", "--token-file", daemon.token_file,
                                "--tls-cert", cert, "--tls-key", key],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        context = ssl.create_default_context(cafile=cert)

        def get(headers):
            deadline = time.monotonic() + 30
            while True:
                try:
                    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
                    conn.request("GET", "/v1/healthz", headers=headers)
                    response = conn.getresponse()
                    return response.status, json.loads(response.read())
                except ConnectionRefusedError:
                    assert time.monotonic() < deadline and process.poll() is None, "the TLS daemon did not come up"
                    time.sleep(0.1)

        status, body = get({})
        assert status == 401 and "Bearer" in body["error"]
        assert get({"Authorization": "Bearer " + TOKEN}) == (200, {"status": "ok"})
        # Plain HTTP on the TLS port gets nothing useful.
        plain = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            plain.request("GET", "/v1/healthz", headers={"Authorization": "Bearer " + TOKEN})
            assert plain.getresponse().status != 200
        except (http.client.HTTPException, OSError):
            pass
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_listen_without_token_is_refused(daemon):
    result = subprocess.run([DAEMON, "--data-dir", daemon.home, "--socket", os.path.join(daemon.root, "x.sock"),
                             "--listen", "127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "--token-file" in result.stderr
