"""Live responses of a real microvmd checked against docs/openapi.yaml: each
status must be documented for its operation, and each JSON body must match
the documented schema (a small validator of the subset the file uses)."""
import json
import os
import re
import urllib.parse

import pytest
import yaml

from conftest import SOURCE_DIR, parse_sse, subscribe_events
from microvm.client import _UnixConnection

SPEC = yaml.safe_load(open(os.path.join(SOURCE_DIR, "docs", "openapi.yaml")))


def resolve(schema):
    while "$ref" in schema:
        node = SPEC
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def validate(value, schema, where="$"):
    schema = resolve(schema)
    if value is None:
        assert schema.get("nullable"), f"{where}: null where the schema does not allow it"
        return
    if "oneOf" in schema:
        errors = []
        for option in schema["oneOf"]:
            try:
                validate(value, option, where)
                return
            except AssertionError as e:
                errors.append(str(e))
        raise AssertionError(f"{where}: matches no oneOf option: {errors}")
    kind = schema.get("type")
    checks = {"object": dict, "array": list, "string": str, "boolean": bool}
    if kind in checks:
        assert isinstance(value, checks[kind]), f"{where}: {value!r} is not {kind}"
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r} is not an integer"
    elif kind == "number":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {value!r} is not a number"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if kind == "object":
        for key in schema.get("required", []):
            assert key in value, f"{where}: required {key!r} missing"
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                validate(item, properties[key], f"{where}.{key}")
            elif extra is False:
                raise AssertionError(f"{where}: {key!r} is not in the schema")
            elif isinstance(extra, dict):
                validate(item, extra, f"{where}.{key}")
    if kind == "array" and "items" in schema:
        for i, item in enumerate(value):
            validate(item, schema["items"], f"{where}[{i}]")


def operation(method, path):
    for template, item in SPEC["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method.lower() in item:
            return template, item[method.lower()]
    raise AssertionError(f"{method} {path} is not in docs/openapi.yaml")


def call(daemon, method, target, body=None, data=None, content_type="application/json"):
    conn = _UnixConnection(daemon.socket, 120)
    payload = json.dumps(body).encode() if body is not None else data
    conn.request(method, target, body=payload, headers={"Content-Type": content_type} if payload is not None else {})
    response = conn.getresponse()
    content = response.read()
    conn.close()
    path = urllib.parse.urlsplit(target).path
    template, op = operation(method, path)
    status = str(response.status)
    assert status in op["responses"], f"{method} {template} answered {status}, which the spec does not list"
    documented = resolve(op["responses"][status]).get("content", {})
    ctype = response.getheader("Content-Type", "").split(";")[0]
    assert ctype in documented, f"{method} {template} {status}: Content-Type {ctype} not documented"
    if ctype == "application/json":
        validate(json.loads(content), documented[ctype]["schema"])
    return response.status, content


def test_live_responses_match_openapi(daemon, shared):
    validate(shared.info, {"$ref": "#/components/schemas/Sandbox"})  # the 201 of the create
    sid = shared.id
    assert call(daemon, "GET", "/v1/healthz")[0] == 200
    assert call(daemon, "GET", "/v1/sandboxes")[0] == 200
    assert call(daemon, "GET", "/v1/sandboxes?label=role%3Dshared")[0] == 200
    assert call(daemon, "GET", "/v1/sandboxes?label=bad%20key")[0] == 400
    assert call(daemon, "GET", f"/v1/sandboxes/{sid}")[0] == 200
    assert call(daemon, "GET", "/v1/sandboxes/nope")[0] == 404
    assert call(daemon, "DELETE", "/v1/sandboxes/nope")[0] == 404
    assert call(daemon, "POST", "/v1/sandboxes", body={"rootfs": "relative"})[0] == 400
    assert call(daemon, "POST", f"/v1/sandboxes/{sid}/exec", body={"cmd": ["echo", "x"]})[0] == 200
    assert call(daemon, "POST", f"/v1/sandboxes/{sid}/exec", body={"cmd": 5})[0] == 400
    assert call(daemon, "POST", "/v1/sandboxes/nope/exec", body={"cmd": ["true"]})[0] == 404
    assert call(daemon, "PUT", f"/v1/sandboxes/{sid}/files?path=/tmp/c.txt", data=b"c",
                content_type="application/octet-stream")[0] == 200
    assert call(daemon, "GET", f"/v1/sandboxes/{sid}/files?path=/tmp/c.txt")[1] == b"c"
    assert call(daemon, "GET", f"/v1/sandboxes/{sid}/files?path=/etc")[0] == 200
    assert call(daemon, "GET", f"/v1/sandboxes/{sid}/files?path=relative")[0] == 400
    assert call(daemon, "POST", f"/v1/sandboxes/{sid}/snapshot", body={})[0] == 400
    assert call(daemon, "POST", f"/v1/sandboxes/{sid}/fork", body={"count": 65})[0] == 400
    status, forked = call(daemon, "POST", f"/v1/sandboxes/{sid}/fork", body={"count": 1})
    assert status == 201
    for child in json.loads(forked)["children"]:
        assert call(daemon, "DELETE", f"/v1/sandboxes/{child['id']}")[0] == 200

    # Pause and resume, with the events they cause checked too.
    events, buffer = subscribe_events(daemon)
    assert call(daemon, "POST", f"/v1/sandboxes/{sid}/pause")[0] == 200
    assert call(daemon, "POST", f"/v1/sandboxes/{sid}/exec", body={"cmd": ["true"]})[0] == 409
    assert call(daemon, "POST", f"/v1/sandboxes/{sid}/resume")[0] == 200
    while len([e for e in parse_sse(buffer) if e["id"] == sid]) < 2:
        chunk = events.recv(65536)
        assert chunk, "the event stream ended"
        buffer += chunk
    events.close()
    seen = [e for e in parse_sse(buffer) if e["id"] == sid]
    for event in seen:
        validate(event, {"$ref": "#/components/schemas/Event"})
    assert [e["status"] for e in seen[:2]] == ["paused", "running"]

    status, body = call(daemon, "GET", "/metrics")
    assert status == 200 and b"microvmd_sandboxes" in body


def test_the_validator_rejects_what_the_spec_does_not_allow():
    error = {"$ref": "#/components/schemas/Error"}
    validate({"error": "x"}, error)
    for bad in ({"error": 1}, {}, {"error": "x", "extra": 1}):
        with pytest.raises(AssertionError):
            validate(bad, error)
    with pytest.raises(AssertionError):
        validate({"sandboxes": [{"id": "x"}]}, {"$ref": "#/components/schemas/SandboxList"})
