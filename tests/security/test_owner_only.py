"""Tokens are earned (issue 9, points 1 and 8), end to end against the real emulator:
minting a token and every /_emulator/* endpoint need the admin key only the emulator's owner
can read; a run holding a `container:run` token and an unauthenticated local process get
401 (or cannot connect at all), and nothing is issued or changed; `iss` and lifetimes are
checked."""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest

from tests.emulator.helpers import Api, assert_error, new_sub
from tests.support.emulator import module_emulator

TOKEN_PATH = "/api/v1/auth/token"
ADMIN_CALLS = [("GET", "/_emulator/faults", None),
               ("POST", "/_emulator/faults", {"faults": [{"action": "status", "status": 503,
                                                          "count": 5}]}),
               ("DELETE", "/_emulator/faults", None),
               ("GET", "/_emulator/stats", None),
               ("DELETE", "/_emulator/stats", None),
               ("POST", "/_emulator/seed", {"sub": "victim", "count": 3}),
               ("POST", "/_emulator/accounts", {"sub": "victim", "plan": "nobilling"}),
               ("POST", TOKEN_PATH, {"sub": "victim"})]
CONFIG = """
[plans.nobilling]
billing = false
"""


emu = module_emulator("owner-only", CONFIG)


def raw(emu, method: str, path: str, body=None, headers=None):
    """One request with exactly these headers (requests would add its own)."""
    parts = urlsplit(emu.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json",
                                                       **(headers or {})})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def wrong_credentials(emu) -> dict[str, dict[str, str | bytes]]:
    key = emu.admin_key()
    user_token = emu.token(new_sub())  # every scope, but a user's token
    return {
        "none": {},
        "empty bearer": {"Authorization": "Bearer "},
        "wrong key, same length": {"Authorization": "Bearer " + secrets.token_hex(32)},
        "wrong key, one character off": {
            "Authorization": "Bearer " + key[:-1] + ("0" if key[-1] != "0" else "1")},
        "the key's prefix": {"Authorization": "Bearer " + key[:32]},
        "the key plus a character": {"Authorization": "Bearer " + key + "x"},
        "a 60 KB key": {"Authorization": "Bearer " + "a" * 60_000},
        "non-ASCII key": {"Authorization": "Bearer ключ".encode()},
        "Basic scheme with the key": {
            "Authorization": "Basic " + base64.b64encode(f"admin:{key}".encode()).decode()},
        "the key without a scheme": {"Authorization": key},
        "a user's full-scope JWT": {"Authorization": f"Bearer {user_token}"},
        "the JWT secret": {"Authorization": "Bearer " + emu.secret()},
        "key in a made-up header": {"X-Admin-Key": key, "X-Emulator-Admin-Key": key},
        "forwarding headers": {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1",
                               "Forwarded": "for=127.0.0.1"},
    }


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS,
                         ids=[f"{m} {p}" for m, p, _ in ADMIN_CALLS])
def test_admin_and_token_endpoints_need_the_admin_key(emu, method, path, body):
    Api(emu).get("/status")  # counted: a refused DELETE /_emulator/stats must not reset it
    before = emu.stats()
    for name, headers in wrong_credentials(emu).items():
        status, got_headers, data = raw(emu, method, path, body, headers)
        assert status == 401, (name, status, data[:200])
        error = json.loads(data)["error"]
        assert error["code"] == "unauthenticated" and "admin key" in error["message"], name
        assert "admin-key" in error["guidance"]
        assert b'"token"' not in data, name
        assert "www-authenticate" in got_headers
    after = emu.stats()
    # Nothing was changed: no fault added or cleared, no run seeded, counters not reset.
    assert after["faults_pending"] == before["faults_pending"] == 0
    assert after["runs"] == before["runs"]
    assert after["requests"] >= before["requests"] >= 1
    # With the key, the same call works.
    status, _, data = raw(emu, method, path, body,
                          {"Authorization": f"Bearer {emu.admin_key()}"})
    assert status in (200, 204), (status, data[:300])
    emu.clear_faults()


def test_refused_plan_change_leaves_the_plan(emu):
    victim = Api(emu)
    status, _, _ = raw(emu, "POST", "/_emulator/accounts",
                       {"sub": victim.sub, "plan": "nobilling"})
    assert status == 401
    assert victim.post_run(["true"], wait=10).status_code == 201  # still billed normally


def test_token_endpoint_with_the_key_issues_a_usable_token(emu):
    sub = new_sub()
    status, _, data = raw(emu, "POST", TOKEN_PATH, {"sub": sub, "scope": "container:read"},
                          {"Authorization": f"Bearer {emu.admin_key()}"})
    assert status == 200, data
    token = json.loads(data)["token"]
    r = Api(emu, sub)
    r.headers = emu.auth(token)
    assert r.get("/status").json()["status"] == "ready"


def test_a_run_with_a_container_run_token_cannot_mint_or_reach_admin(emu):
    """From inside a run (bash /dev/tcp: no tool needed), with the run's own token: the
    token endpoint and the admin endpoints answer 401, or cannot be reached at all."""
    attacker = Api(emu, scope="container:run container:read")
    port = urlsplit(emu.url).port
    script = r'''
ask() {  # method path -> the HTTP status, or "unreachable"
  if ! exec 3<>/dev/tcp/127.0.0.1/$PORT 2>/dev/null; then echo "$2 unreachable"; return; fi
  printf '%s %s HTTP/1.0\r\nAuthorization: Bearer %s\r\n' "$1" "$2" "$TOKEN" >&3
  printf 'X-Forwarded-For: 127.0.0.1\r\nContent-Type: application/json\r\n' >&3
  printf 'Content-Length: 16\r\n\r\n{"sub":"victim"}' >&3
  read -r _ status _ <&3; echo "$2 ${status:-none}"; exec 3<&-
}
ask POST /api/v1/auth/token
ask GET /_emulator/stats
ask GET /_emulator/faults
ask POST /_emulator/seed
'''
    run = attacker.run(["bash", "-c", script],
                       env={"PORT": str(port), "TOKEN": attacker.token})
    lines = dict(line.split(" ", 1) for line in run["stdout"].split("\n") if line)
    assert set(lines) == {TOKEN_PATH, "/_emulator/stats", "/_emulator/faults",
                          "/_emulator/seed"}, run
    assert set(lines.values()) <= {"401", "unreachable"}, lines
    assert emu.stats()["runs"] >= 1  # and the admin endpoints still work for the owner


# -- iss and lifetimes ------------------------------------------------------------------------

def test_iss_and_lifetime_are_checked(emu):
    sub = new_sub()
    now = int(time.time())
    day = 24 * 3600

    def status_with(token: str) -> int:
        api = Api(emu, sub)
        api.headers = emu.auth(token)
        return api.get("/status")

    refused = {
        "another issuer": emu.token(sub, iss="someone-else"),
        "issuer differs in case": emu.token(sub, iss="Bus-Containers-Emulator"),
        "no iss": emu.token(sub, iss=None),
        "25 h lifetime": emu.token(sub, ttl=25 * 3600),
        "exp in the year 9999": emu.token(sub, exp=253402300799),
        "iat moved close to a far exp": emu.token(sub, iat=now + 2 * day - 60,
                                                  exp=now + 2 * day),
        "no iat, exp in 2 days": emu.token(sub, iat=None, exp=now + 2 * day),
        "no exp": emu.token(sub, exp=None),
    }
    for name, token in refused.items():
        r = status_with(token)
        assert r.status_code == 401, name
        assert r.json()["error"]["code"] == "unauthenticated", name
    long_lived = assert_error(status_with(refused["25 h lifetime"]), 401, "unauthenticated")
    assert "longer than" in long_lived["message"] and str(day) in long_lived["message"]
    assert status_with(emu.token(sub, ttl=day)).status_code == 200  # the maximum itself
    assert status_with(emu.token(sub, iat=None, ttl=600)).status_code == 200


def _emulator_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bus_containers.emulator", *args],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def test_token_ttl_above_the_maximum_is_a_usage_error(tmp_path):
    state = tmp_path / "state"
    out = _emulator_cli("token", "--sub", "a", "--ttl", str(24 * 3600 + 1),
                        "--state-dir", str(state))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "bus-containers-emulator: --ttl must be from 1 to 86400 (max_token_ttl_seconds)"]
    state.mkdir(exist_ok=True)
    (state / "emulator.toml").write_text("[emulator]\nmax_token_ttl_seconds = 60\n")
    out = _emulator_cli("token", "--sub", "a", "--ttl", "61", "--state-dir", str(state))
    assert out.returncode == 2 and "from 1 to 60" in out.stderr
    from bus_containers.emulator.tokens import TokenAuthority

    TokenAuthority(state)  # the secret, as `serve` makes it
    out = _emulator_cli("token", "--sub", "a", "--state-dir", str(state))  # default fits
    assert out.returncode == 0, out.stderr


def test_token_refuses_unknown_scope_words(tmp_path):
    state = tmp_path / "state"
    assert _emulator_cli("token", "--sub", "a", "--state-dir", str(state)).returncode == 2
    state.mkdir(mode=0o700)
    (state / "jwt-secret").write_text("s" * 64)
    (state / "jwt-secret").chmod(0o600)
    out = _emulator_cli("token", "--sub", "a", "--scope", "container:read admin",
                        "--state-dir", str(state))
    assert out.returncode == 2 and out.stdout == ""
    [line] = out.stderr.splitlines()
    assert line.startswith("bus-containers-emulator: --scope: unknown scope(s) admin; "), line
    out = _emulator_cli("token", "--sub", "a", "--scope", "container:read",
                        "--state-dir", str(state))
    assert out.returncode == 0, out.stderr
