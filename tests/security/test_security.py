"""Attacks on the real emulator process over loopback (CONTRACT 3, 4, 7).

Forged and stale tokens, scope escalation, account ids smuggled in by the client, other
accounts' run ids on every endpoint, path traversal, oversized requests, and commands
that try to read the token secret. Each attack must get a JSON 4xx (never a 500), leave
other accounts' runs intact and start no process it was not allowed to start.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import time
from unittest import mock
from urllib.parse import quote, urlsplit

import pytest

from tests.emulator.helpers import Api, assert_error, new_sub
from tests.support.emulator import start_emulator

pytestmark = pytest.mark.timeout(120)

MAX_BODY = 65536
CONFIG = f"""
[emulator]
max_body_bytes = {MAX_BODY}
max_wait_seconds = 15
"""
CANARY_VAR = "BUS_SECURITY_CANARY"
ACCOUNT_FIELDS = ("account", "account_id", "owner", "sub", "user")
ACCOUNT_HEADERS = ("X-Account-Id", "X-Account", "X-Owner", "X-User", "X-Sub", "Account",
                   "Account-Id", "Owner", "User")
RUNS = "/api/v1/containers/runs"
VISIBLE_ASCII = "".join(chr(c) for c in range(0x21, 0x7F))


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    # A canary in the emulator's own environment: a run must not be able to read it.
    canary = "canary-" + secrets.token_hex(16)
    with mock.patch.dict(os.environ, {CANARY_VAR: canary}):
        emulator = start_emulator(tmp_path_factory.mktemp("security"), config=CONFIG)
    emulator.canary = canary
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def alice(emu) -> Api:
    return Api(emu)


@pytest.fixture(scope="module")
def bob(emu) -> Api:
    return Api(emu)


@pytest.fixture(scope="module")
def alice_run(alice) -> dict:
    run = alice.run(["printf", "alice-secret-output"])
    assert run["status"] == "succeeded", run
    return run


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict, claims: dict, signature: str = "") -> str:
    return ".".join([_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()),
                     signature])


def _claims(subject: str, **over) -> dict:
    now = int(time.time())
    claims = {"sub": subject, "scope": "container:read container:run container:delete",
              "iat": now, "nbf": now, "exp": now + 600, "iss": "bus-containers-emulator"}
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


def raw(emu, method: str, path: str, body: bytes | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request with the path sent byte for byte (requests/urllib3 would normalise
    dot segments and percent-encodings away)."""
    u = urlsplit(emu.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def assert_json_error(status: int, headers: dict[str, str], body: bytes, expect: int | None,
                      code: str | None = None) -> dict:
    assert status < 500, (status, body[:300])
    assert 400 <= status < 500, (status, body[:300])
    if expect is not None:
        assert status == expect, (status, body[:300])
    assert headers.get("content-type", "").startswith("application/json"), headers
    error = json.loads(body)["error"]
    if code is not None:
        assert error["code"] == code, error
    return error


# -- forged, stale and malformed tokens --------------------------------------------------

def _bad_tokens(emu) -> dict[str, tuple[str, str]]:
    """name -> (token, expected error code)."""
    sub = new_sub()
    good = emu.token(sub)
    header_b64, payload_b64, sig = good.split(".")
    other_key = secrets.token_hex(32)
    now = int(time.time())
    escalated = _b64(json.dumps(_claims(new_sub())).encode())
    return {
        "signed with another key": (emu.token_with_claims(_claims(sub), key=other_key),
                                    "unauthenticated"),
        "alg none": (_unsigned({"alg": "none", "typ": "JWT"}, _claims(sub)),
                     "unauthenticated"),
        "alg None, valid signature kept": (
            _unsigned({"alg": "None", "typ": "JWT"}, _claims(sub), sig), "unauthenticated"),
        "alg NONE": (_unsigned({"alg": "NONE"}, _claims(sub)), "unauthenticated"),
        "alg HS512 with the right secret": (
            emu.token_with_claims(_claims(sub), algorithm="HS512"), "unauthenticated"),
        "no alg": (_unsigned({"typ": "JWT"}, _claims(sub), sig), "unauthenticated"),
        "payload swapped, signature kept": (f"{header_b64}.{escalated}.{sig}",
                                            "unauthenticated"),
        "signature stripped": (f"{header_b64}.{payload_b64}.", "unauthenticated"),
        "expired": (emu.token(sub, exp=now - 120), "token_expired"),
        "expired long ago": (emu.token(sub, iat=1, nbf=1, exp=2), "token_expired"),
        "nbf in the future": (emu.token(sub, nbf=now + 600), "unauthenticated"),
        "iat in the future": (emu.token(sub, iat=now + 600), "unauthenticated"),
        "no sub": (emu.token_with_claims(_claims(sub, sub=None)), "unauthenticated"),
        "empty sub": (emu.token_with_claims(_claims(sub, sub="")), "unauthenticated"),
        "sub is a number": (emu.token_with_claims(_claims(sub, sub=12345)),
                            "unauthenticated"),
        "sub is a list": (emu.token_with_claims(_claims(sub, sub=[sub])), "unauthenticated"),
        "no exp": (emu.token_with_claims(_claims(sub, exp=None)), "unauthenticated"),
        "exp not a number": (emu.token_with_claims(_claims(sub, exp="never")),
                             "unauthenticated"),
        "not a JWT": ("not-a-token", "unauthenticated"),
        "two parts": (f"{header_b64}.{payload_b64}", "unauthenticated"),
        "garbage base64": ("!!!.@@@.###", "unauthenticated"),
        "the secret itself": (emu.secret(), "unauthenticated"),
    }


BAD_TOKEN_NAMES = [
    "signed with another key", "alg none", "alg None, valid signature kept", "alg NONE",
    "alg HS512 with the right secret", "no alg", "payload swapped, signature kept",
    "signature stripped", "expired", "expired long ago", "nbf in the future",
    "iat in the future", "no sub", "empty sub", "sub is a number", "sub is a list",
    "no exp", "exp not a number", "not a JWT", "two parts", "garbage base64",
    "the secret itself",
]


@pytest.mark.parametrize("name", BAD_TOKEN_NAMES)
def test_bad_tokens_get_401_on_every_endpoint(emu, alice, alice_run, name):
    token, code = _bad_tokens(emu)[name]
    started = emu.stats()["processes_started"]
    run_path = f"{RUNS}/{alice_run['id']}"
    calls = [("GET", "/api/v1/containers/status", None), ("GET", RUNS, None),
             ("POST", RUNS, json.dumps({"profile": "codex", "command": ["true"]}).encode()),
             ("GET", run_path, None), ("GET", run_path + "/logs", None),
             ("DELETE", run_path, None)]
    for method, path, body in calls:
        status, headers, data = raw(emu, method, path, body, {
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        assert_json_error(status, headers, data, 401, code)
        assert token not in data.decode(errors="replace")
        assert "www-authenticate" in headers
    assert emu.stats()["processes_started"] == started  # nothing ran
    assert alice.get(f"/runs/{alice_run['id']}").status_code == 200  # nothing deleted


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz",
                                    "Token abc", "bearer\tabc", "Bearer a b c"])
def test_missing_or_malformed_authorization(emu, header):
    status, headers, data = raw(emu, "GET", RUNS, headers={"Authorization": header}
                                if header else {})
    assert_json_error(status, headers, data, 401, "unauthenticated")


# -- scope escalation ----------------------------------------------------------------------

def test_read_only_token_cannot_create_or_delete(emu, alice, alice_run):
    reader = Api(emu, alice.sub, scope="container:read")
    started = emu.stats()["processes_started"]
    r = reader.post_run(["sh", "-c", "echo pwned"])
    error = assert_error(r, 403, "insufficient_scope")
    assert error["scope"] == "container:run"
    r = reader.request("DELETE", f"/runs/{alice_run['id']}")
    assert_error(r, 403, "insufficient_scope")
    assert emu.stats()["processes_started"] == started
    assert alice.get(f"/runs/{alice_run['id']}").status_code == 200
    assert reader.get(f"/runs/{alice_run['id']}").status_code == 200  # reading is allowed


def _scoped(emu, sub: str, **scope_claims) -> Api:
    api = Api(emu, sub)
    now = int(time.time())
    claims = {"sub": sub, "iat": now, "nbf": now, "exp": now + 600, **scope_claims}
    api.token = emu.token_with_claims(claims)
    api.headers = emu.auth(api.token)
    return api


ESCALATIONS = {
    "scope as a list": {"scope": ["container:read", "container:run", "container:delete"]},
    "scp as one string": {"scope": "container:read",
                          "scp": "container:read container:run container:delete"},
    "NBSP separator": {"scope": "container:read\u00a0container:run\u00a0container:delete"},
    "em space separator": {"scope": "container:read\u2003container:run\u2003container:delete"},
    "ideographic space": {"scope": "container:read\u3000container:run\u3000container:delete"},
    "tab separator": {"scope": "container:read\tcontainer:run\tcontainer:delete"},
    "newline separator": {"scope": "container:read\ncontainer:run\ncontainer:delete"},
    "fullwidth letters": {"scope": "container:read \uff43ontainer:run \uff43ontainer:delete"},
    "cyrillic lookalike": {"scope": "container:read \u0441ontainer:run \u0441ontainer:delete"},
    "fullwidth colon": {"scope": "container:read container\uff1arun container\uff1adelete"},
    "zero-width joiner": {"scope": "container:read container:\u200drun container:\u200ddelete"},
    "upper case": {"scope": "container:read CONTAINER:RUN CONTAINER:DELETE"},
    "wildcards": {"scope": "container:read container:* *"},
    "prefix only": {"scope": "container:read container: container"},
    "comma separated": {"scope": "container:read,container:run,container:delete"},
    "scp with non-strings": {"scope": "container:read",
                             "scp": [["container:run"], {"container:delete": True}]},
}


@pytest.mark.parametrize("name", sorted(ESCALATIONS))
def test_scope_escalation_is_refused(emu, alice, alice_run, name):
    api = _scoped(emu, alice.sub, **ESCALATIONS[name])
    started = emu.stats()["processes_started"]
    assert_error(api.post_run(["echo", "pwned"]), 403, "insufficient_scope")
    assert_error(api.request("DELETE", f"/runs/{alice_run['id']}"), 403,
                 "insufficient_scope")
    assert emu.stats()["processes_started"] == started
    assert alice.get(f"/runs/{alice_run['id']}").status_code == 200


def test_extra_ascii_spaces_still_grant_what_the_token_carries(emu):
    api = _scoped(emu, new_sub(), scope="  container:read   container:run  ")
    r = api.post_run(["true"], wait=10)
    assert r.status_code in (201, 202), r.text
    api.wait(r.json()["id"])


# -- account ids supplied by the client: ignored ---------------------------------------

def test_account_ids_in_body_query_and_headers_are_ignored(emu, alice, bob):
    spoof = {f: bob.sub for f in ACCOUNT_FIELDS}
    headers = {h: bob.sub for h in ACCOUNT_HEADERS}
    r = alice.post_run(["printf", "mine"], wait=10, headers=headers, params=spoof, **spoof)
    assert r.status_code in (201, 202), r.text
    run_id = r.json()["id"]
    assert bob.sub not in r.text
    alice.wait(run_id)
    # It is alice's: she sees it, bob does not, even when he names her as the account.
    assert alice.get(f"/runs/{run_id}").status_code == 200
    assert run_id in [x["id"] for x in alice.get("/runs", params={"limit": 100}).json()["runs"]]
    claim_alice = {f: alice.sub for f in ACCOUNT_FIELDS}
    alice_headers = {h: alice.sub for h in ACCOUNT_HEADERS}
    for params in ({}, claim_alice):
        for hdrs in ({}, alice_headers):
            page = bob.get("/runs", params={"limit": 100, **params}, headers=hdrs)
            assert page.status_code == 200
            assert run_id not in page.text
            assert_error(bob.get(f"/runs/{run_id}", params=params, headers=hdrs), 404,
                         "not_found")
            assert_error(bob.get(f"/runs/{run_id}/logs", params=params, headers=hdrs), 404,
                         "not_found")
            assert_error(bob.request("DELETE", f"/runs/{run_id}", params=params,
                                     headers=hdrs), 404, "not_found")
    assert alice.get(f"/runs/{run_id}").json()["stdout"] == "mine"


# -- another account's run ids: 404 everywhere, the run intact ---------------------------

def test_other_accounts_run_is_404_on_every_endpoint(emu, alice, bob, alice_run):
    run_id = alice_run["id"]
    unknown = "run_" + secrets.token_hex(12)
    for method, suffix, params in [("GET", "", None), ("GET", "/logs", None),
                                   ("GET", "/logs", {"follow": "true"}),
                                   ("GET", "/logs", {"offset": "0"}), ("DELETE", "", None)]:
        r = bob.request(method, f"/runs/{run_id}{suffix}", params=params)
        error = assert_error(r, 404, "not_found")
        assert "alice-secret-output" not in r.text
        # Indistinguishable from a run that does not exist at all.
        other = assert_error(bob.request(method, f"/runs/{unknown}{suffix}", params=params),
                             404, "not_found")
        assert error["message"].replace(run_id, "X") == other["message"].replace(unknown, "X")
    assert run_id not in bob.get("/runs", params={"limit": 100}).text
    for status in ("succeeded", "failed", "running"):
        assert run_id not in bob.get("/runs", params={"status": status}).text
    after = alice.get(f"/runs/{run_id}").json()
    assert after["status"] == "succeeded" and after["stdout"] == "alice-secret-output"


def test_deleting_another_accounts_running_run_does_not_stop_it(emu, alice, bob):
    r = alice.post_run(["sleep", "30"])
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    try:
        assert_error(bob.request("DELETE", f"/runs/{run_id}"), 404, "not_found")
        assert alice.get(f"/runs/{run_id}").json()["status"] in ("queued", "starting",
                                                                 "running")
    finally:
        assert alice.request("DELETE", f"/runs/{run_id}").status_code == 204


# -- path traversal and odd run ids --------------------------------------------------------

TRAVERSALS = [
    "..", "%2e%2e", "%2E%2E", "..%2F..%2Fstatus", "..%2f..%2f..%2f_emulator%2fstats",
    "%2e%2e%2f%2e%2e%2fstatus", "%252e%252e%252fstatus", "..%5c..%5cstatus", "..\\..\\status",
    "run_%2F..%2F..", "%2F", "%2f%2f", "run_0123456789abcdef01234567%2F..%2F{other}",
    "{other}%2F..", "{other}%00", "{other}%0d%0aX-Injected:%201", "{other}%20", "{other}.",
    "{other}%3F", "{other}%23", "%00", "run_%C0%AE%C0%AE", "run_\uff41", "RUN_{hex}",
    "run_{hex}0", "run_{hexup}", "{other};x", "*", "%", "%zz", "run_" + "a" * 4000,
    "a" * 8000,
]


@pytest.mark.parametrize("template", TRAVERSALS)
def test_path_traversal_in_run_ids_is_404(emu, alice, bob, alice_run, template):
    other = alice_run["id"]
    run_id = template.format(other=other, hex=other[4:], hexup=other[4:].upper())
    run_id = quote(run_id, safe=VISIBLE_ASCII)  # non-ASCII as UTF-8 %XX; the rest as is
    auth = {"Authorization": f"Bearer {bob.token}"}
    for method, suffix in [("GET", ""), ("DELETE", ""), ("GET", "/logs")]:
        status, headers, body = raw(emu, method, f"{RUNS}/{run_id}{suffix}", headers=auth)
        assert_json_error(status, headers, body, 404, "not_found")
        assert b"alice-secret-output" not in body
    # alice herself cannot reach her run through a mangled id either, and it is intact
    status, headers, body = raw(emu, "DELETE", f"{RUNS}/{run_id}",
                                headers={"Authorization": f"Bearer {alice.token}"})
    assert status == 404, (status, body)
    assert alice.get(f"/runs/{other}").status_code == 200


@pytest.mark.parametrize("path", [
    "/api/v1/containers/runs/../../../_emulator/stats",
    "/api/v1/containers/runs/%2e%2e/%2e%2e/%2e%2e/_emulator/faults",
    "/api/v1/containers/../../_emulator/stats",
    "/api/v1/containers/runs/../status",
    "/api/v1/containers//runs", "/api/v1/containers/runs/./run_0", "/api/v1/containers/runs/",
])
def test_dot_segments_reach_nothing(emu, bob, path):
    status, headers, body = raw(emu, "GET", path, headers={"Authorization": f"Bearer {bob.token}"})
    assert_json_error(status, headers, body, 404, "not_found")


def test_very_long_request_line_is_a_json_4xx(emu, bob):
    status, headers, body = raw(emu, "GET", f"{RUNS}/run_{'a' * 70000}",
                                headers={"Authorization": f"Bearer {bob.token}"})
    assert_json_error(status, headers, body, None)
    assert bob.get("/runs").status_code == 200  # and it still answers


# -- oversized requests: 413, nothing started --------------------------------------------

def test_oversized_body_is_413(emu, alice):
    started = emu.stats()["processes_started"]
    big = json.dumps({"profile": "codex", "command": ["echo", "x" * (MAX_BODY + 10)]})
    r = alice.request("POST", "/runs", data=big, headers={"Content-Type": "application/json"})
    assert_error(r, 413, "payload_too_large")
    # Declared too large: refused before the body is read.
    status, headers, body = raw(emu, "POST", RUNS, b"{}", {
        "Authorization": f"Bearer {alice.token}", "Content-Type": "application/json",
        "Content-Length": str(10 ** 12)})
    assert status in (400, 413), (status, body)
    assert_json_error(status, headers, body, None)
    # Chunked, no Content-Length: the limit still holds.
    chunks = (b"x" * 8192 for _ in range(MAX_BODY // 8192 + 4))
    r = alice.request("POST", "/runs", data=chunks,
                      headers={"Content-Type": "application/json"})
    assert_error(r, 413, "payload_too_large")
    r = requests_post_token(emu, b"{" + b" " * (MAX_BODY + 1) + b"}")
    assert_error(r, 413, "payload_too_large")
    assert emu.stats()["processes_started"] == started


def requests_post_token(emu, data: bytes):
    import requests

    return requests.post(f"{emu.url}/api/v1/auth/token", data=data, timeout=30,
                         headers={"Content-Type": "application/json", **emu.admin_headers()})


def test_oversized_headers_are_a_json_4xx(emu, alice):
    status, headers, body = raw(emu, "GET", RUNS, headers={
        "Authorization": f"Bearer {alice.token}", "X-Big": "b" * 70000})
    assert_json_error(status, headers, body, None)
    many = {f"X-H{i}": "v" for i in range(150)}
    status, headers, body = raw(emu, "GET", RUNS, headers={
        "Authorization": f"Bearer {alice.token}", **many})
    assert_json_error(status, headers, body, None)


def test_too_many_arguments_or_env_entries_are_400(emu, alice):
    started = emu.stats()["processes_started"]
    assert_error(alice.post_run(["true"] * 5000), 400, "invalid_request")
    assert_error(alice.post_run(["true"], env={f"V{i}": "x" for i in range(1100)}), 400,
                 "invalid_request")
    assert emu.stats()["processes_started"] == started


# -- a run cannot read the token secret or the emulator's environment ---------------------

def _is_root() -> bool:
    return os.geteuid() == 0


ROOT_ONLY = pytest.mark.skipif(
    not _is_root(),
    reason="needs root (the emulator then runs commands as other uids); tests/isolation "
           "covers a non-root emulator, started through setpriv as an unused uid")


def _snoop_commands(emu) -> dict[str, list[str]]:
    state = str(emu.state_dir)
    return {
        "cat the secret": ["cat", f"{state}/jwt-secret"],
        "glob the state dir": ["sh", "-c", f"ls -la {state}; cat {state}/* {state}/.* 2>&1"],
        "parent environ": ["sh", "-c", "cat /proc/$PPID/environ | tr '\\0' '\\n'"],
        "parent environ by pid": ["sh", "-c", f"cat /proc/{emu.proc.pid}/environ"],
        "every environ": ["sh", "-c", "cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'"],
        "parent fds and cwd": ["sh", "-c", "ls -l /proc/$PPID/fd /proc/$PPID/cwd/ 2>&1; "
                                           "cat /proc/$PPID/cwd/jwt-secret 2>&1"],
        "parent memory": ["sh", "-c", "head -c 4096 /proc/$PPID/mem 2>&1 | head -c 200"],
        "own environment": ["env"],
        "grep the state dir": ["sh", "-c", f"grep -r . {state} 2>&1 | head -100"],
        "root-owned dirs": ["sh", "-c", f"cat {os.path.dirname(state)}/*/jwt-secret 2>&1"],
    }


SNOOPS = ["cat the secret", "glob the state dir", "parent environ", "parent environ by pid",
          "every environ", "parent fds and cwd", "parent memory", "own environment",
          "grep the state dir", "root-owned dirs"]


@ROOT_ONLY
@pytest.mark.parametrize("name", SNOOPS)
def test_a_run_cannot_read_the_token_secret(emu, alice, name):
    secret = emu.secret()
    assert len(secret) >= 32
    run = alice.run(_snoop_commands(emu)[name], timeout_seconds=20)
    out = run["stdout"] + run["stderr"]
    assert run["status"] in ("succeeded", "failed"), run
    assert secret not in out, f"{name}: the run read the token secret"
    assert emu.canary not in out, f"{name}: the run read the emulator's environment"
    assert alice.token not in out, f"{name}: the run saw the caller's bearer token"


@ROOT_ONLY
def test_runs_execute_unprivileged_and_can_still_work(emu, alice):
    run = alice.run(["sh", "-c", "id -u; id -g; id -G; echo hi > f && cat f && "
                                 "mkdir -p d/e && printf x > d/e/g && cat d/e/g && pwd"])
    assert run["status"] == "succeeded", run
    uid, gid, groups, hi, rest = run["stdout"].split("\n", 4)
    assert uid != "0" and gid != "0" and "0" not in groups.split(), run["stdout"]
    assert hi == "hi" and rest.startswith("x/"), run["stdout"]
    state = os.stat(emu.state_dir)
    assert state.st_mode & 0o777 == 0o700 and state.st_uid == 0
    secret = os.stat(emu.state_dir / "jwt-secret")
    assert secret.st_mode & 0o777 == 0o600 and secret.st_uid == 0


@ROOT_ONLY
def test_a_run_killed_on_timeout_leaves_nothing(emu, alice):
    run = alice.run(["sh", "-c", "sleep 30 & sleep 30 & sleep 30"], timeout_seconds=1)
    assert run["status"] == "timed_out", run
    deadline = time.monotonic() + 5
    while emu.descendants() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not emu.descendants()
    assert emu.stats()["temp_dirs"] == 0
