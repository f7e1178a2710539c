"""In-process unit tests of the emulator's parts (no subprocess, no socket unless noted)."""

from __future__ import annotations

import json
import time

import pytest
from werkzeug.test import Client

from bus_containers.emulator import config as cfg
from bus_containers.emulator.app import EmulatorApp
from bus_containers.emulator.errors import ApiError
from bus_containers.emulator.faults import FaultSet
from bus_containers.emulator.http import is_loopback
from bus_containers.emulator.server import serve_in_thread
from bus_containers.emulator.store import RunStore, decode_cursor, encode_cursor
from bus_containers.emulator.tokens import TokenAuthority


@pytest.fixture
def app(tmp_path):
    application = EmulatorApp(tmp_path, cfg.default_config(), log=lambda _: None)
    yield application
    application.shutdown()


# -- config ----------------------------------------------------------------------------------

def test_default_config_has_codex_and_default_profiles_and_a_default_plan():
    c = cfg.load_config(None)
    assert {"codex", "default"} <= set(c.profiles)
    plan = c.plan_for("anyone")
    assert plan.billing and plan.runs_per_period is None


def test_config_overrides_merge_over_builtins():
    c = cfg.parse_config({
        "emulator": {"output_cap_bytes": 10, "retention_seconds": 0.5},
        "profiles": {"codex": {"max_timeout_seconds": 5}, "gpu": {"cpu_seconds": 2}},
        "plans": {"free": {"billing": False}, "pro": {"runs_per_period": 3}},
        "accounts": {"u1": {"plan": "free"}},
        "defaults": {"plan": "pro"},
    })
    assert c.limits.output_cap_bytes == 10 and c.limits.retention_seconds == 0.5
    assert c.profiles["codex"].max_timeout_seconds == 5
    assert c.profiles["codex"].default_timeout_seconds == 600  # untouched
    assert c.profiles["gpu"].cpu_seconds == 2
    assert c.plan_for("u1").name == "free" and c.plan_for("u2").name == "pro"


@pytest.mark.parametrize("data", [
    {"extra": {}},
    {"emulator": {"output_cap_bytes": 1.5}},
    {"emulator": {"output_cap_bytes": True}},
    {"emulator": []},
    {"profiles": {"x": {"cpu_seconds": 0}}},
    {"plans": {"x": {"billing": 1}}},
    {"accounts": {"a": {"plan": "nope"}}},
    {"accounts": {"a": {"plan": "default", "x": 1}}},
    {"defaults": {"plan": "nope"}},
])
def test_invalid_config_is_a_config_error(data):
    with pytest.raises(cfg.ConfigError):
        cfg.parse_config(data)


# -- tokens ----------------------------------------------------------------------------------

def test_token_roundtrip_and_scopes(tmp_path):
    authority = TokenAuthority(tmp_path)
    claims = authority.verify(authority.issue("s1", "container:read x:y", 60))
    assert claims.sub == "s1" and claims.scopes == {"container:read", "x:y"}
    assert TokenAuthority(tmp_path).verify(authority.issue("s1")).sub == "s1"  # same secret


@pytest.mark.parametrize("token", ["", "a", "a.b.c", "a.b", "...", "\x00", "ü.ü.ü",
                                   "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."])
def test_garbage_tokens_are_401(tmp_path, token):
    with pytest.raises(ApiError) as e:
        TokenAuthority(tmp_path).verify(token)
    assert e.value.status == 401


# -- store -----------------------------------------------------------------------------------

def test_cursor_roundtrip_and_validation():
    assert decode_cursor(encode_cursor(42)) == 42
    for bad in ("", "c", "42", "c-1", "c1x", "C1", "c" + "1" * 19):
        with pytest.raises(ApiError):
            decode_cursor(bad)


def test_paging_10000_runs_is_fast():
    store = RunStore(cfg.default_config())
    ids = store.seed("a", 10_000, "succeeded", "codex", 0)
    store.seed("b", 100, "succeeded", "codex", 0)
    started = time.perf_counter()
    seen, cursor = [], None
    while True:
        runs, cursor = store.page("a", 100, cursor, None)
        seen += [r.id for r in runs]
        if cursor is None:
            break
    assert time.perf_counter() - started < 1.0
    assert seen == ids[::-1]


# -- faults ------------------------------------------------------------------------------------

def test_fault_rules_match_in_order_and_are_consumed():
    faults = FaultSet()
    faults.add([{"action": "html", "method": "GET", "path_prefix": "/a", "count": 2},
                {"action": "drop"}])
    assert faults.take("POST", "/a").action == "drop"
    assert faults.take("GET", "/a/b").action == "html"
    assert faults.take("GET", "/a").action == "html"
    assert faults.take("GET", "/a") is None
    assert faults.pending() == []


# -- loopback-only endpoints -------------------------------------------------------------------

@pytest.mark.parametrize(("addr", "expected"), [
    ("127.0.0.1", True), ("127.5.6.7", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.0.0.1", False), ("192.168.1.1", False), ("::ffff:10.0.0.1", False), ("", False),
    ("garbage", False), (None, False),
])
def test_is_loopback(addr, expected):
    assert is_loopback(addr) is expected


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/_emulator/stats"), ("POST", "/_emulator/faults"), ("DELETE", "/_emulator/faults"),
    ("POST", "/_emulator/seed"), ("POST", "/_emulator/accounts"), ("POST", "/api/v1/auth/token"),
])
def test_admin_and_token_endpoints_refuse_remote_clients(app, method, path, tmp_path):
    client = Client(app)
    r = client.open(path, method=method, json={}, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert r.status_code == 403
    assert r.get_json()["error"]["code"] == "forbidden"
    # Even with the admin key, and headers claiming a loopback client: the peer counts.
    key = (tmp_path / "admin-key").read_text().strip()  # the app fixture's state dir
    r = client.open(path, method=method, json={}, environ_base={"REMOTE_ADDR": "10.1.2.3"},
                    headers={"Authorization": f"Bearer {key}", "X-Forwarded-For": "127.0.0.1",
                             "X-Real-IP": "127.0.0.1", "Forwarded": "for=127.0.0.1"})
    assert r.status_code == 403


def test_serve_in_thread_helper(tmp_path):
    import requests

    with serve_in_thread(tmp_path) as handle:
        token = handle.app.tokens.issue("me")
        r = requests.get(handle.url + "/api/v1/containers/status",
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.json()["status"] == "ready"
        r = requests.post(handle.url + "/api/v1/containers/runs", timeout=10,
                          headers={"Authorization": f"Bearer {token}", "Prefer": "wait=10"},
                          json={"profile": "codex", "command": ["printf", "hi"]})
        assert r.status_code == 201 and r.json()["stdout"] == "hi"


def test_malformed_http_gets_a_json_error(tmp_path):
    import socket
    from urllib.parse import urlsplit

    with serve_in_thread(tmp_path) as handle:
        u = urlsplit(handle.url)
        with socket.create_connection((u.hostname, u.port), timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 70000 + b"\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 431 " in head.split(b"\r\n")[0]
    assert json.loads(body)["error"]["code"] == "invalid_request"


def test_a_database_broken_under_a_running_emulator_is_one_log_line(tmp_path):
    import sqlite3

    import requests

    lines: list[str] = []
    with serve_in_thread(tmp_path, log=lines.append, durable=True) as handle:
        token = handle.app.tokens.issue("me")
        other = sqlite3.connect(tmp_path / "state.db")
        other.execute("DROP TABLE output")
        other.close()
        r = requests.post(handle.url + "/api/v1/containers/runs", timeout=10,
                          headers={"Authorization": f"Bearer {token}", "Prefer": "wait=5"},
                          json={"profile": "codex", "command": ["printf", "hi"]})
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal"
    errors = [line for line in lines if "internal error" in line]
    assert errors, lines
    assert all("\n" not in line and "Traceback" not in line for line in lines), errors
    assert any("the state database failed: no such table: output" in e for e in errors)


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
def test_time_claims_must_be_json_numbers(tmp_path, claim):
    import jwt

    from bus_containers.emulator.tokens import ISSUER

    authority = TokenAuthority(tmp_path)
    now = int(time.time())
    claims = {"sub": "me", "scope": "container:read", "iat": now, "nbf": now,
              "exp": now + 60, "iss": ISSUER}
    good = jwt.encode(claims, authority._secret, algorithm="HS256")
    assert authority.verify(good).sub == "me"
    claims[claim] = str(claims[claim])  # a numeric string: PyJWT alone would take it
    with pytest.raises(ApiError) as e:
        authority.verify(jwt.encode(claims, authority._secret, algorithm="HS256"))
    assert e.value.status == 401 and claim in e.value.message
