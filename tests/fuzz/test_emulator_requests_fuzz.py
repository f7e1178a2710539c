"""Fuzz the emulator's request handling in process (werkzeug's test client on the WSGI
app): any method, path, header, body or token gets a JSON 4xx or a valid answer; never a
500, never HTML, never an exception. Tokens include ones signed with the right secret but
carrying arbitrary claims, and paths include real run ids, mangled."""

from __future__ import annotations

import json
import time

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from bus_containers.emulator import config as cfg
from bus_containers.emulator.app import EmulatorApp

PATHS = ["/api/v1/containers/status", "/api/v1/containers/runs",
         "/api/v1/containers/runs/run_0123456789abcdef01234567",
         "/api/v1/containers/runs/run_0123456789abcdef01234567/logs",
         "/api/v1/containers/openapi.yaml", "/api/v1/auth/token", "/_emulator/faults",
         "/_emulator/stats", "/_emulator/seed", "/_emulator/accounts", "/"]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE", "FOO"]
text = st.text(st.characters(codec="latin-1"), max_size=40)
json_scalar = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
claim_value = st.one_of(json_scalar, st.lists(json_scalar, max_size=3))
REAL_ID = "<real-run-id>"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    state = tmp_path_factory.mktemp("fuzz")
    application = EmulatorApp(state, cfg.default_config(), log=lambda _: None)
    application.secret = (state / "jwt-secret").read_text().strip()
    # One real run of the fuzzer's account, so mangled real ids are tried too.
    r = Client(application).post(
        "/api/v1/containers/runs", json={"profile": "codex", "command": ["true"]},
        headers={"Authorization": "Bearer " + application.tokens.issue("fuzzer"),
                 "Prefer": "wait=10"})
    assert r.status_code == 201, r.get_data()
    application.real_id = r.get_json()["id"]
    yield application
    application.shutdown()
    assert application.runner.stats()["processes_running"] == 0
    assert application.runner.stats()["temp_dirs"] == 0


def _token() -> st.SearchStrategy:
    """None (no header), "valid", raw header text, or signed claims (right secret)."""
    now = int(time.time())
    claims = st.fixed_dictionaries(
        {}, optional={"sub": st.one_of(st.just("fuzzer"), claim_value),
                      "scope": st.one_of(st.sampled_from(
                          ["container:read container:run container:delete",
                           "container:read", "container:read\u00a0container:run", ""]),
                          claim_value),
                      "scp": claim_value,
                      "exp": st.one_of(st.integers(now - 10**6, now + 10**6), claim_value),
                      "nbf": st.one_of(st.integers(now - 10, now + 10**6), claim_value),
                      "iat": st.one_of(st.integers(now - 10, now + 10**6), claim_value),
                      "account_id": claim_value})
    return st.one_of(st.none(), st.just("valid"), text, claims)


def _path() -> st.SearchStrategy[str]:
    run_path = "/api/v1/containers/runs/"
    mangle = st.sampled_from(["", "/logs", "%2F..", "/../..", "%00", "/", "%2e%2e", "x",
                              "/logs/..", "?x=1"])
    return st.one_of(st.sampled_from(PATHS),
                     st.builds(lambda p, s: p + s, st.sampled_from(PATHS), text),
                     st.text(max_size=60).map(lambda s: "/" + s),
                     st.builds(lambda pre, m: run_path + pre + REAL_ID + m,
                               st.sampled_from(["", "..%2F", "%2e%2e/", "./"]), mangle))


def _body() -> st.SearchStrategy[bytes]:
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10),
                                                                    inner, max_size=4),
        max_leaves=10)
    run_like = st.fixed_dictionaries({"profile": st.sampled_from(["codex", "x", 1]),
                                      "command": json_values})
    return st.one_of(st.binary(max_size=200),
                     json_values.map(lambda v: json.dumps(v).encode()),
                     run_like.map(lambda v: json.dumps(v).encode()))


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(METHODS), path=_path(), body=_body(),
       auth=_token(),
       headers=st.dictionaries(st.sampled_from(["Content-Type", "Idempotency-Key", "Prefer",
                                                "X-Account-Id", "Content-Length"]),
                               text, max_size=3),
       query=st.dictionaries(st.sampled_from(["limit", "cursor", "status", "follow",
                                              "offset", "account_id"]), text, max_size=3))
def test_never_a_500(app, method, path, body, auth, headers, query):
    headers = dict(headers)
    headers.pop("Content-Length", None)  # the test client sets it; a wrong one would hang
    path = path.replace(REAL_ID, app.real_id)
    if auth == "valid":
        headers["Authorization"] = "Bearer " + app.tokens.issue("fuzzer")
    elif isinstance(auth, dict):
        headers["Authorization"] = "Bearer " + jwt.encode(auth, app.secret, algorithm="HS256")
    elif auth is not None:
        headers["Authorization"] = auth
    headers.setdefault("Content-Type", "application/json")
    if "Prefer" in headers:
        headers["Prefer"] = "wait=0"  # random waits would only slow the fuzz down
    client = Client(app)
    try:
        r = client.open(path, method=method, data=body, headers=headers, query_string=query)
    except ValueError:
        return  # werkzeug's test client refuses the request itself (e.g. bad header text)
    assert r.status_code < 500, r.get_data()
    ctype = r.headers.get("Content-Type", "")
    if r.status_code >= 400:
        assert ctype == "application/json"
        if method != "HEAD":
            error = r.get_json()["error"]
            assert isinstance(error["code"], str) and isinstance(error["message"], str)
    elif r.status_code != 204 and method != "HEAD":
        assert ctype.split(";")[0] in ("application/json", "application/yaml",
                                       "application/x-ndjson"), ctype
    if method == "DELETE" and app.real_id in path and r.status_code == 204:
        assert path.endswith("/runs/" + app.real_id), path  # only the exact path deletes
        app.real_id = _recreate(app)


def _recreate(app) -> str:
    r = Client(app).post("/api/v1/containers/runs", json={"profile": "codex",
                                                          "command": ["true"]},
                         headers={"Authorization": "Bearer " + app.tokens.issue("fuzzer"),
                                  "Prefer": "wait=10"})
    assert r.status_code == 201, r.get_data()
    return r.get_json()["id"]


def test_mangled_real_ids_never_reach_the_run(app):
    """Deterministic companion: traversal forms of a real id are 404 and leave it intact."""
    client = Client(app)
    headers = {"Authorization": "Bearer " + app.tokens.issue("fuzzer")}
    base = "/api/v1/containers/runs/"
    for form in [f"..%2F{app.real_id}", f"{app.real_id}%2F..", f"%2e%2e%2f{app.real_id}",
                 f"{app.real_id}%00", f"{app.real_id.upper()}", f"{app.real_id}%20",
                 f"./{app.real_id}"]:
        for method in ("GET", "DELETE"):
            r = client.open(base + form, method=method, headers=headers)
            assert r.status_code in (404, 405), (form, r.status_code)
            assert r.get_json()["error"]["code"] in ("not_found", "method_not_allowed")
    assert client.get(base + app.real_id, headers=headers).status_code == 200
