"""Fuzz the request handling in process: any method, path, header, body or token gets a
JSON 4xx or a valid answer; never a 500, never HTML, never an exception."""

from __future__ import annotations

import json

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


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    application = EmulatorApp(tmp_path_factory.mktemp("fuzz"), cfg.default_config(),
                              log=lambda _: None)
    yield application
    application.shutdown()


def _path() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(PATHS),
                     st.builds(lambda p, s: p + s, st.sampled_from(PATHS), text),
                     st.text(max_size=60).map(lambda s: "/" + s))


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
       auth=st.one_of(st.none(), st.just("valid"), text),
       headers=st.dictionaries(st.sampled_from(["Content-Type", "Idempotency-Key", "Prefer",
                                                "X-Account-Id", "Content-Length"]),
                               text, max_size=3),
       query=st.dictionaries(st.sampled_from(["limit", "cursor", "status", "follow",
                                              "offset", "account_id"]), text, max_size=3))
def test_never_a_500(app, method, path, body, auth, headers, query):
    headers = dict(headers)
    headers.pop("Content-Length", None)  # the test client sets it; a wrong one would hang
    if auth == "valid":
        headers["Authorization"] = "Bearer " + app.tokens.issue("fuzzer")
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
