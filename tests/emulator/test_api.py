"""The API of CONTRACT 4 against a real emulator process: runs, errors, ownership, plans."""

from __future__ import annotations

import os
import uuid

import pytest
import requests

from .helpers import Api, assert_error, new_sub, sleepers, wait_until

RUN_ID = "run_0123456789abcdef01234567"


# -- status and routing --------------------------------------------------------------------

def test_status_is_ready(emu):
    r = Api(emu).get("/status")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready" and body["version"] and body["message"]
    assert r.headers["X-Request-Id"].startswith("req_")


def test_unknown_path_is_json_404(emu):
    for path in ("/nope", "/api/v1/containers", "/api/v1/containers/runs/", "/"):
        assert_error(requests.get(emu.url + path, timeout=10), 404, "not_found")


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("PUT", "/status", "GET"),
    ("PATCH", "/runs", "GET, POST"),
    ("POST", f"/runs/{RUN_ID}", "DELETE, GET"),
    ("DELETE", f"/runs/{RUN_ID}/logs", "GET"),
])
def test_wrong_method_is_405_with_allow(emu, method, path, allow):
    r = requests.request(method, emu.api(path), timeout=10)
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["Allow"] == allow


def test_openapi_document_is_served_without_auth(emu):
    r = requests.get(emu.api("/openapi.yaml"), timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/yaml")
    assert r.text.startswith("openapi: 3.1")


# -- authentication and scopes -------------------------------------------------------------

def _status_with(emu, token: str | None, scheme: str = "Bearer") -> requests.Response:
    headers = {"Authorization": f"{scheme} {token}"} if token is not None else {}
    return requests.get(emu.api("/status"), headers=headers, timeout=10)


def test_missing_token_is_401(emu):
    error = assert_error(_status_with(emu, None), 401, "unauthenticated")
    assert 'bus auth token --scope "container:read' in error["guidance"]
    assert_error(_status_with(emu, Api(emu).token, scheme="Basic"), 401, "unauthenticated")


@pytest.mark.parametrize("case", ["bad_signature", "alg_none", "missing_sub", "empty_sub",
                                  "malformed", "not_yet_valid", "missing_exp", "hs512",
                                  "garbage_payload"])
def test_bad_tokens_are_401(emu, case):
    import jwt

    now = int(uuid.uuid1().time // 10**7 - 12219292800)  # wall clock, independent of mocks
    base = {"sub": new_sub(), "scope": "container:read", "iat": now, "exp": now + 600}
    if case == "bad_signature":
        token = emu.token_with_claims(base, key="another-secret-of-32-bytes-or-more!!")
    elif case == "alg_none":
        token = jwt.encode(base, None, algorithm="none")
    elif case == "missing_sub":
        token = emu.token_with_claims({k: v for k, v in base.items() if k != "sub"})
    elif case == "empty_sub":
        token = emu.token_with_claims({**base, "sub": ""})
    elif case == "malformed":
        token = "not.a.jwt"
    elif case == "not_yet_valid":
        token = emu.token_with_claims({**base, "nbf": now + 600})
    elif case == "missing_exp":
        token = emu.token_with_claims({k: v for k, v in base.items() if k != "exp"})
    elif case == "hs512":
        token = emu.token_with_claims(base, algorithm="HS512")
    else:
        token = "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln"
    r = _status_with(emu, token)
    assert_error(r, 401, "unauthenticated")
    assert "invalid_token" in r.headers["WWW-Authenticate"]


def test_expired_token_is_token_expired(emu):
    import time

    token = emu.token(new_sub(), exp=int(time.time()) - 60)
    error = assert_error(_status_with(emu, token), 401, "token_expired")
    assert "bus auth token" in error["guidance"]


def test_token_from_the_cli_subcommand_works(emu):
    token = emu.token_cli(new_sub(), scope="container:read", ttl=60)
    assert _status_with(emu, token).status_code == 200


@pytest.mark.parametrize(("method", "path", "scope"), [
    ("GET", "/status", "container:read"),
    ("GET", "/runs", "container:read"),
    ("POST", "/runs", "container:run"),
    ("GET", f"/runs/{RUN_ID}", "container:read"),
    ("GET", f"/runs/{RUN_ID}/logs", "container:read"),
    ("DELETE", f"/runs/{RUN_ID}", "container:delete"),
])
def test_each_call_needs_its_scope(emu, method, path, scope):
    others = " ".join(s for s in ("container:read", "container:run", "container:delete",
                                  "billing:read") if s != scope)
    api = Api(emu, scope=others)
    r = api.request(method, path, json={"profile": "codex", "command": ["true"]})
    error = assert_error(r, 403, "insufficient_scope")
    assert error["scope"] == scope and scope in error["message"]
    assert "bus auth token" in error["guidance"]


def test_scp_list_claim_is_accepted(emu):
    import time

    now = int(time.time())
    token = emu.token_with_claims({"sub": new_sub(), "scp": ["container:read"],
                                   "exp": now + 60})
    assert _status_with(emu, token).status_code == 200


# -- creating and running ------------------------------------------------------------------

def test_create_without_prefer_is_202_then_finishes(emu):
    api = Api(emu)
    r = api.post_run(["sh", "-c", "printf OK"])
    assert r.status_code == 202, r.text
    run = r.json()
    assert run["id"].startswith("run_") and len(run["id"]) == 28
    assert run["status"] in ("queued", "running", "succeeded")
    assert r.headers["Location"] == f"/api/v1/containers/runs/{run['id']}"
    assert r.headers["Retry-After"] == "1"
    done = api.wait(run["id"])
    assert done["status"] == "succeeded" and done["exit_code"] == 0
    assert done["stdout"] == "OK" and done["stderr"] == ""
    for key in ("created_at", "started_at", "finished_at"):
        assert done[key].endswith("Z")
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]


def test_prefer_wait_gives_201_with_the_finished_run(emu):
    r = Api(emu).post_run(["sh", "-c", "echo out; echo err >&2; exit 3"], wait=10)
    assert r.status_code == 201, r.text
    run = r.json()
    assert (run["status"], run["exit_code"]) == ("failed", 3)
    assert (run["stdout"], run["stderr"]) == ("out\n", "err\n")
    assert r.headers["Preference-Applied"] == "wait=10"


def test_prefer_wait_times_out_with_202(emu):
    api = Api(emu)
    r = api.post_run(["sleep", "5"], wait=0.2, profile="quick", timeout_seconds=10)
    assert r.status_code == 202 and r.headers["Retry-After"] == "1"
    assert r.json()["status"] in ("queued", "running")
    assert api.request("DELETE", f"/runs/{r.json()['id']}").status_code == 204


def test_killed_by_signal_is_128_plus_signal(emu):
    run = Api(emu).run(["sh", "-c", "kill -9 $$"])
    assert (run["status"], run["exit_code"]) == ("failed", 137)


def test_missing_binary_is_failed_127(emu):
    run = Api(emu).run(["no-such-binary-xyz"])
    assert (run["status"], run["exit_code"]) == ("failed", 127)
    assert "no-such-binary-xyz" in run["stderr"]


def test_environment_is_scrubbed_and_cwd_is_a_fresh_temp_dir(emu, monkeypatch):
    run = Api(emu).run(["sh", "-c", "env; pwd; ls -A"], env={"FOO": "bar baz"})
    lines = run["stdout"].splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line)
    assert env.pop("FOO") == "bar baz"
    assert env.pop("PATH") == "/usr/local/bin:/usr/bin:/bin"
    assert env.pop("LANG") == "C.UTF-8"
    home = env.pop("HOME")
    assert env.pop("TMPDIR") == home
    env.pop("PWD", None), env.pop("SHLVL", None), env.pop("_", None)  # set by sh itself
    assert env == {}, env
    cwd = [line for line in lines if line.startswith("/")][-1]
    assert cwd == home
    if "isolation: none" in emu.status_message():
        assert "bus-emulator-run-" in cwd
        assert not os.path.exists(cwd)  # removed after the run
    else:
        assert cwd == "/tmp"  # the run's own tmpfs, gone with its mount namespace
        assert lines[-1] == "/tmp"  # `ls -A` listed nothing: a fresh, empty dir
    assert str(emu.state_dir) not in run["stdout"]


def test_run_cannot_read_the_secret_via_environment(emu):
    run = Api(emu).run(["sh", "-c", "env"])
    assert emu.secret() not in run["stdout"]


def test_output_over_the_cap_is_truncated_and_flagged(emu):
    # cap is 4096 bytes for both streams together (see conftest CONFIG)
    run = Api(emu).run(["sh", "-c", "head -c 3000 /dev/zero | tr '\\0' a; "
                                    "head -c 3000 /dev/zero | tr '\\0' b >&2; echo done"])
    assert run["output_truncated"] is True
    assert len(run["stdout"]) + len(run["stderr"]) == 4096
    assert run["status"] == "succeeded"  # the pipe was drained, the command not blocked


def test_small_output_is_not_truncated(emu):
    assert Api(emu).run(["echo", "hi"])["output_truncated"] is False


def test_non_utf8_output_is_replaced_in_json(emu):
    run = Api(emu).run(["printf", "\\377ok"])
    assert run["stdout"] == "\ufffdok"


def test_timeout_kills_the_whole_group(emu):
    api = Api(emu)
    r = api.post_run(["sh", "-c", "sleep 100 & sleep 100"], profile="quick",
                     timeout_seconds=1)
    run_id = r.json()["id"]
    procs = wait_until(lambda: len(sleepers(emu)) >= 2 and sleepers(emu), what="two sleeps")
    run = api.wait(run_id)
    assert (run["status"], run["exit_code"]) == ("timed_out", None)
    from tests.support.emulator import wait_gone

    assert wait_gone(procs, 5) == {}
    assert emu.stats()["processes_running"] == 0


def test_background_children_do_not_outlive_the_run(emu):
    api = Api(emu)
    run = api.run(["sh", "-c", "sleep 100 & echo started"])
    assert run["status"] == "succeeded" and run["stdout"] == "started\n"
    assert sleepers(emu) == {}


def test_profile_default_timeout_applies(emu):
    run = Api(emu).run(["sleep", "30"], profile="quick")  # quick: default 2 s
    assert run["status"] == "timed_out" and run["timeout_seconds"] == 2


def test_rlimits_file_size(emu, tmp_path):
    cfg_api = Api(emu)
    run = cfg_api.run(["sh", "-c", "ulimit -f; ulimit -t; ulimit -d"])
    assert run["status"] == "succeeded"
    fsize, cpu, data = run["stdout"].split()
    assert fsize != "unlimited" and cpu != "unlimited" and data != "unlimited"


# -- invalid requests ------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    "not json",
    "[1, 2]",
    '{"profile": "codex"}',
    '{"profile": "codex", "command": []}',
    '{"profile": "codex", "command": "echo hi"}',
    '{"profile": "codex", "command": ["echo", 1]}',
    '{"profile": "codex", "command": ["echo\\u0000"]}',
    '{"profile": 5, "command": ["true"]}',
    '{"profile": "codex", "command": ["true"], "timeout_seconds": 0}',
    '{"profile": "codex", "command": ["true"], "timeout_seconds": "5"}',
    '{"profile": "codex", "command": ["true"], "timeout_seconds": true}',
    '{"profile": "codex", "command": ["true"], "timeout_seconds": 1.5}',
    '{"profile": "codex", "command": ["true"], "timeout_seconds": null}',
    '{"profile": "codex", "command": ["true"], "timeout_seconds": 99999}',
    '{"profile": "codex", "command": ["true"], "env": {"A": 1}}',
    '{"profile": "codex", "command": ["true"], "env": ["A"]}',
    '{"profile": "codex", "command": ["true"], "env": {"A=B": "x"}}',
    '{"profile": "codex", "command": ["true"], "env": null}',
    '{"profile": "codex", "command": ["\\ud800"]}',
    "[" * 50000,
    b"\xff\xfe{}",
])
def test_invalid_bodies_are_400(emu, body):
    api = Api(emu)
    before = emu.stats()["processes_started"]
    data = body if isinstance(body, bytes) else body.encode("utf-8", "surrogatepass")
    r = api.request("POST", "/runs", data=data,
                    headers={"Content-Type": "application/json"})
    assert_error(r, 400, "invalid_request")
    assert emu.stats()["processes_started"] == before


def test_unknown_profile_is_400_unknown_profile(emu):
    error = assert_error(Api(emu).post_run(["true"], profile="gpu-xl"), 400, "unknown_profile")
    assert "codex" in error["guidance"]


def test_oversized_body_is_413(emu):
    api = Api(emu)
    body = '{"profile": "codex", "command": ["' + "x" * 70000 + '"]}'
    r = api.request("POST", "/runs", data=body, headers={"Content-Type": "application/json"})
    assert_error(r, 413, "payload_too_large")


def test_oversized_chunked_body_is_413(emu):
    api = Api(emu)

    def chunks():
        yield b'{"profile": "codex", "command": ["'
        for _ in range(20):
            yield b"x" * 8192
        yield b'"]}'

    r = api.request("POST", "/runs", data=chunks(), headers={"Content-Type": "application/json"})
    assert_error(r, 413, "payload_too_large")


def test_wrong_content_type_is_415(emu):
    r = Api(emu).request("POST", "/runs", data='{"profile": "codex", "command": ["true"]}',
                         headers={"Content-Type": "text/plain"})
    assert_error(r, 415, "unsupported_media_type")


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=abc", "limit=-1",
                                   "limit=", "status=done", "cursor=abc", "cursor=",
                                   "cursor=c12345678901234567890"])
def test_invalid_list_queries_are_400(emu, query):
    assert_error(Api(emu).get(f"/runs?{query}"), 400, "invalid_request")


@pytest.mark.parametrize("run_id", ["run_nope", "..%2F..%2Fetc%2Fpasswd", "RUN_" + "0" * 24,
                                    "run_0123456789ABCDEF01234567", "%00", "run_" + "0" * 25])
def test_malformed_run_ids_are_404(emu, run_id):
    api = Api(emu)
    for method, suffix in (("GET", ""), ("DELETE", ""), ("GET", "/logs")):
        r = api.request(method, f"/runs/{run_id}{suffix}")
        assert r.status_code == 404, (method, run_id, r.text)
        assert r.json()["error"]["code"] == "not_found"


# -- ownership -------------------------------------------------------------------------------

def test_other_accounts_cannot_see_or_touch_a_run(emu):
    alice, bob = Api(emu), Api(emu)
    run = alice.run(["echo", "secret"])
    for method, suffix in (("GET", ""), ("GET", "/logs"), ("DELETE", "")):
        assert_error(bob.request(method, f"/runs/{run['id']}{suffix}"), 404, "not_found")
    assert bob.get("/runs").json() == {"runs": [], "next_cursor": None}
    assert alice.get(f"/runs/{run['id']}").json()["stdout"] == "secret\n"
    assert [r["id"] for r in alice.get("/runs").json()["runs"]] == [run["id"]]


def test_client_supplied_account_ids_are_ignored(emu):
    alice, bob = Api(emu), Api(emu)
    spoof = {"X-Account-Id": alice.sub, "X-User": alice.sub, "X-Owner": alice.sub}
    r = bob.post_run(["echo", "mine"], wait=10, account_id=alice.sub, owner=alice.sub,
                     account=alice.sub, user=alice.sub, sub=alice.sub, headers=spoof)
    assert r.status_code == 201
    run_id = r.json()["id"]
    assert alice.get("/runs").json()["runs"] == []
    assert_error(alice.get(f"/runs/{run_id}"), 404, "not_found")
    params = {"account": alice.sub, "account_id": alice.sub, "owner": alice.sub,
              "user": alice.sub, "sub": alice.sub}
    listed = bob.get("/runs", params=params, headers=spoof).json()["runs"]
    assert [x["id"] for x in listed] == [run_id]
    assert alice.get("/runs", params={"account_id": bob.sub}).json()["runs"] == []
    assert_error(alice.get(f"/runs/{run_id}", params=params, headers={"X-Account-Id": bob.sub}),
                 404, "not_found")


# -- idempotency -----------------------------------------------------------------------------

def test_same_key_same_body_returns_the_same_run(emu):
    api = Api(emu)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    first = api.post_run(["echo", "once"], headers=key, wait=10)
    second = api.post_run(["echo", "once"], headers=key, wait=10)
    assert first.status_code == second.status_code == 201
    assert first.json()["id"] == second.json()["id"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert len(api.get("/runs").json()["runs"]) == 1


def test_same_key_different_body_is_422(emu):
    api = Api(emu)
    key = {"Idempotency-Key": str(uuid.uuid4())}
    assert api.post_run(["echo", "a"], headers=key).status_code == 202
    error = assert_error(api.post_run(["echo", "b"], headers=key), 422, "idempotency_conflict")
    assert error["message"]


def test_idempotency_keys_are_per_account(emu):
    key = {"Idempotency-Key": str(uuid.uuid4())}
    a = Api(emu).post_run(["echo", "a"], headers=key)
    b = Api(emu).post_run(["echo", "b"], headers=key)
    assert a.status_code == b.status_code == 202
    assert a.json()["id"] != b.json()["id"]


def test_invalid_idempotency_key_is_400(emu):
    r = Api(emu).post_run(["true"], headers={"Idempotency-Key": "has space"})
    assert_error(r, 400, "invalid_request")


# -- listing -------------------------------------------------------------------------------

def test_pagination_over_250_runs_has_no_duplicates_or_gaps(emu):
    api = Api(emu)
    ids = emu.seed(api.sub, 250)
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 100} if cursor is None else {"limit": 100, "cursor": cursor}
        body = api.get("/runs", params=params).json()
        seen += [r["id"] for r in body["runs"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(ids))  # newest first, each exactly once


def test_a_list_carries_summaries_and_the_run_its_output(emu):
    """Issue 13: a page's cost does not depend on what its runs printed (CONTRACT 9)."""
    api = Api(emu)
    run = api.run(["sh", "-c", "head -c 9000 /dev/zero | tr '\\0' x; echo E >&2"])
    listed = api.get("/runs").json()["runs"][0]
    assert listed["id"] == run["id"]
    assert "stdout" not in listed and "stderr" not in listed
    assert listed["output_bytes"] == 4096 and listed["output_truncated"] is True
    assert listed["usage"]["run_seconds"] >= 0
    assert run["stdout"] == "x" * 4096 and run["output_bytes"] == 4096
    lines = [x for x in api.logs(run["id"]) if "data_b64" in x]
    assert all(run["created_at"][:10] == x["time"][:10] and x["time"].endswith("Z")
               and len(x["time"]) == len("2026-11-29T07:10:00.123Z") for x in lines)


def test_default_limit_is_20_and_status_filter(emu):
    api = Api(emu)
    emu.seed(api.sub, 30, status="failed")
    emu.seed(api.sub, 5, status="succeeded")
    assert len(api.get("/runs").json()["runs"]) == 20
    body = api.get("/runs", params={"status": "succeeded", "limit": 100}).json()
    assert len(body["runs"]) == 5 and body["next_cursor"] is None
    assert {r["status"] for r in body["runs"]} == {"succeeded"}
    body = api.get("/runs", params={"status": "failed", "limit": 25}).json()
    assert len(body["runs"]) == 25 and body["next_cursor"]
    rest = api.get("/runs", params={"status": "failed", "cursor": body["next_cursor"]}).json()
    assert len(rest["runs"]) == 5 and rest["next_cursor"] is None


# -- deleting ------------------------------------------------------------------------------

def test_delete_finished_run(emu):
    api = Api(emu)
    run = api.run(["true"])
    r = api.request("DELETE", f"/runs/{run['id']}")
    assert r.status_code == 204 and r.content == b""
    assert_error(api.get(f"/runs/{run['id']}"), 404, "not_found")
    assert_error(api.request("DELETE", f"/runs/{run['id']}"), 404, "not_found")


def test_delete_running_run_kills_its_processes(emu):
    api = Api(emu)
    run_id = api.post_run(["sh", "-c", "sleep 100 & sleep 100"]).json()["id"]
    procs = wait_until(lambda: len(sleepers(emu)) >= 2 and sleepers(emu), what="sleeps")
    assert api.request("DELETE", f"/runs/{run_id}").status_code == 204
    from tests.support.emulator import wait_gone

    assert wait_gone(procs, 5) == {}
    assert_error(api.get(f"/runs/{run_id}"), 404, "not_found")


# -- plans: billing and quotas, checked before any process starts ----------------------------

def test_billing_required_is_402_and_starts_nothing(emu):
    api = Api(emu)
    emu.set_plan(api.sub, "nobilling")
    before = emu.stats()["processes_started"]
    error = assert_error(api.post_run(["echo", "hi"]), 402, "billing_required")
    assert error["guidance"] and error["url"].startswith(emu.url)
    assert emu.stats()["processes_started"] == before
    assert api.get("/runs").json()["runs"] == []


def test_runs_per_period_exhausted_is_429(emu):
    api = Api(emu)
    emu.set_plan(api.sub, "two_per_hour")
    for _ in range(2):
        r = api.post_run(["true"])
        assert r.status_code == 202
        api.wait(r.json()["id"])  # its process has started (and ended) before we count
    before = emu.stats()["processes_started"]
    error = assert_error(api.post_run(["true"]), 429, "quota_exhausted")
    assert error["guidance"] and error["url"]
    assert emu.stats()["processes_started"] == before


def test_concurrent_runs_exhausted_is_429_until_one_finishes(emu):
    api = Api(emu)
    emu.set_plan(api.sub, "one_at_a_time")
    first = api.post_run(["sleep", "30"], profile="quick", timeout_seconds=30).json()
    assert_error(api.post_run(["true"]), 429, "quota_exhausted")
    assert api.request("DELETE", f"/runs/{first['id']}").status_code == 204
    assert api.post_run(["true"], wait=10).status_code == 201


# -- the token endpoint --------------------------------------------------------------------

def test_token_endpoint_issues_a_usable_token(emu):
    r = requests.post(emu.url + "/api/v1/auth/token",
                      json={"scope": "container:read container:run"}, timeout=10,
                      headers=emu.admin_headers())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["scope"] == "container:read container:run"
    assert body["sub"] == (emu.state_dir / "default-account").read_text().strip()
    assert _status_with(emu, body["token"]).status_code == 200
    r = requests.post(emu.url + "/api/v1/auth/token", json={"sub": "x", "ttl": 5}, timeout=10,
                      headers=emu.admin_headers())
    assert r.json()["sub"] == "x" and r.json()["expires_in"] == 5
    assert "container:delete" in r.json()["scope"]


@pytest.mark.parametrize("body", [{"scope": ""}, {"scope": "a  b"}, {"ttl": 0},
                                  {"scope": "container:read admin"},
                                  {"ttl": "60"}, {"sub": ""}, {"sub": "a\nb"}, [1]])
def test_token_endpoint_rejects_bad_requests(emu, body):
    r = requests.post(emu.url + "/api/v1/auth/token", json=body, timeout=10,
                      headers=emu.admin_headers())
    assert_error(r, 400, "invalid_request")


def test_state_dir_secret_is_private(emu):
    assert (emu.state_dir / "jwt-secret").stat().st_mode & 0o777 == 0o600


def test_request_log_has_one_line_per_request_and_no_token(emu):
    api = Api(emu)
    marker = f"/runs/run_{uuid.uuid4().hex[:24]}"
    api.get(marker)
    log = wait_until(lambda: marker in emu.log_tail(10**7) and emu.log_tail(10**7),
                     what="log line")
    line = [x for x in log.splitlines() if marker in x][0]
    assert "GET" in line and " 404 " in line and line.endswith("ms")
    assert api.token not in log


# -- concurrency and admin input -------------------------------------------------------------

def test_20_concurrent_clients_for_3_accounts(emu):
    from concurrent.futures import ThreadPoolExecutor

    accounts = [Api(emu) for _ in range(3)]

    def create(i: int) -> tuple[int, str]:
        api = accounts[i % 3]
        r = api.post_run(["sh", "-c", f"echo {i}"], wait=10,
                         headers={"Idempotency-Key": str(uuid.uuid4())})
        assert r.status_code == 201, r.text
        assert r.json()["stdout"] == f"{i}\n"
        return i % 3, r.json()["id"]

    with ThreadPoolExecutor(20) as pool:
        created = list(pool.map(create, range(20)))
    for n, api in enumerate(accounts):
        mine = {run_id for owner, run_id in created if owner == n}
        listed = {r["id"] for r in api.get("/runs", params={"limit": 100}).json()["runs"]}
        assert listed == mine
    stats = emu.stats()
    assert stats["processes_running"] == 0 and stats["temp_dirs"] == 0
    assert sleepers(emu) == {} and emu.descendants() == {}


@pytest.mark.parametrize(("path", "body"), [
    ("seed", {"sub": "x", "count": 0}),
    ("seed", {"sub": "x", "count": 10**9}),
    ("seed", {"sub": "x", "count": 1, "status": "running"}),
    ("seed", {"count": 1}),
    ("accounts", {"sub": "x", "plan": "platinum"}),
    ("accounts", {"plan": "default"}),
    ("faults", {"faults": "drop"}),
])
def test_admin_endpoints_validate_their_input(emu, path, body):
    r = requests.post(f"{emu.url}/_emulator/{path}", json=body, timeout=10,
                      headers=emu.admin_headers())
    assert_error(r, 400, "invalid_request")
