"""Every command in human and --json form, and every exit code of CONTRACT 6, through
click's CliRunner with requests_mock for the HTTP layer. All invocations go through the
`cli` fixture (tests/cli/conftest.py), which checks centrally that the token never shows
and that no traceback is printed."""

from __future__ import annotations

import json

import pytest
import requests

from bus_containers import __version__, service
from bus_containers.cli import containers
from bus_containers.commands import COMMANDS
from tests.cli.helpers import BASE, TOKEN, error_body, json_error, make_jwt, run_obj

# -- status ------------------------------------------------------------------------------


def test_status_human(cli, requests_mock):
    requests_mock.get(BASE + "/status", json={"status": "ready", "message": "All good"})
    result = cli("status")
    assert result.exit_code == 0
    assert result.stdout == "ready\nAll good\n"
    assert result.stderr == ""
    request = requests_mock.last_request
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"] == f"bus-containers/{__version__}"


def test_status_json_is_the_api_body(cli, requests_mock):
    body = {"status": "degraded", "message": "slow", "new_field": [1, 2]}
    requests_mock.get(BASE + "/status", json=body)
    result = cli("status", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == body
    assert result.stderr == ""


@pytest.mark.parametrize("state", ["starting", "degraded", "unavailable", "brand-new-state"])
def test_status_exit_0_whatever_the_state(cli, requests_mock, state):
    requests_mock.get(BASE + "/status", json={"status": state})
    result = cli("status")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == state


def test_status_control_characters_from_server_are_neutralised(cli, requests_mock):
    requests_mock.get(BASE + "/status", json={"status": "ready\x1b[2J", "message": "a\x07b"})
    result = cli("status")
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout


# -- exit 1 ------------------------------------------------------------------------------
@pytest.mark.parametrize("json_flag", [False, True])
def test_server_error_after_retries_exit_1(cli, requests_mock, fake_time, json_flag):
    requests_mock.get(BASE + "/status", status_code=503,
                      json=error_body("unavailable", "try later"))
    result = cli("status", *(["--json"] if json_flag else []))
    assert result.exit_code == 1
    assert requests_mock.call_count == 4  # 3 retries
    assert len(fake_time.sleeps) == 3
    if json_flag:
        assert json_error(result)["code"] == "server_error"
    else:
        assert result.stdout == ""
        assert result.stderr.startswith("Error: ")
        assert "503" in result.stderr


def test_server_error_then_success(cli, requests_mock):
    requests_mock.get(BASE + "/status", [{"status_code": 500, "text": "boom"},
                                         {"json": {"status": "ready"}}])
    result = cli("status")
    assert (result.exit_code, result.stdout) == (0, "ready\n")


@pytest.mark.parametrize("json_flag", [False, True])
def test_unexpected_response_exit_1(cli, requests_mock, json_flag):
    requests_mock.get(BASE + "/status", text="<html>hello</html>",
                      headers={"Content-Type": "text/html"})
    result = cli("status", *(["--json"] if json_flag else []))
    assert result.exit_code == 1
    if json_flag:
        error = json_error(result)
        assert error["code"] == "unexpected_response"
        assert "unexpected response from" in error["message"]
    else:
        assert "unexpected response from " + BASE + "/status (HTTP 200)" in result.stderr


def test_redirect_is_not_followed_exit_1(cli, requests_mock):
    requests_mock.get(BASE + "/status", status_code=302,
                      headers={"Location": "https://elsewhere.example/steal"})
    result = cli("status")
    assert result.exit_code == 1
    assert len(requests_mock.request_history) == 1


def test_connection_error_after_retries_exit_1(cli, requests_mock):
    requests_mock.get(BASE + "/status", exc=requests.exceptions.ConnectionError("refused"))
    result = cli("status")
    assert result.exit_code == 1
    assert requests_mock.call_count == 4
    assert "Error:" in result.stderr


def test_conflict_409_exit_1(cli, requests_mock):
    requests_mock.delete(BASE + "/runs/run_1", status_code=409,
                         json=error_body("conflict", "busy"))
    result = cli("delete", "run_1")
    assert result.exit_code == 1
    assert "busy" in result.stderr


# -- exit 124 ----------------------------------------------------------------------------
@pytest.mark.parametrize("json_flag", [False, True])
def test_cli_timeout_on_read_timeout_exit_124(cli, requests_mock, fake_time, json_flag):
    def slow(request, context):
        fake_time.now += 100  # the server took longer than the whole budget
        raise requests.exceptions.ReadTimeout("read timed out")

    requests_mock.get(BASE + "/status", text=slow)
    result = cli("status", "--timeout", "5", *(["--json"] if json_flag else []))
    assert result.exit_code == 124
    if json_flag:
        assert json_error(result)["code"] == "timeout"
    else:
        assert "timeout" in result.stderr


# -- exit 2 ------------------------------------------------------------------------------
@pytest.mark.parametrize("code", ["invalid_request", "unknown_profile", "idempotency_conflict"])
@pytest.mark.parametrize("http", [400, 422])
def test_rejected_request_exit_2_with_server_message(cli, requests_mock, code, http):
    requests_mock.post(BASE + "/runs", status_code=http,
                       json=error_body(code, "the server says no to this"))
    result = cli("run", "--profile", "nope", "--", "true")
    assert result.exit_code == 2
    assert "the server says no to this" in result.stderr
    assert requests_mock.call_count == 1


@pytest.mark.parametrize("url", [
    "https://api.example.com/api/v1/containers", "https://api.example.com/api/v1/containers/",
])
def test_api_url_with_endpoint_path_exit_2(cli, requests_mock, url):
    result = cli("status", "--api-url", url)
    assert result.exit_code == 2
    assert "appends" in result.stderr
    assert requests_mock.call_count == 0


@pytest.mark.parametrize("url", ["http://10.0.0.1", "http://example.com"])
def test_api_url_clear_text_exit_2(cli, requests_mock, url):
    result = cli("status", "--api-url", url)
    assert result.exit_code == 2
    assert "clear text" in result.stderr
    assert requests_mock.call_count == 0


@pytest.mark.parametrize("url", ["ftp://example.com", "example.com", "https://h:99999"])
def test_api_url_not_http_or_bad_port_exit_2(cli, requests_mock, url):
    result = cli("status", "--api-url", url)
    assert result.exit_code == 2
    assert requests_mock.call_count == 0


def test_api_url_from_env_is_validated(cli, requests_mock):
    result = cli("status", env={"BUS_AI_API_URL": "http://example.com"})
    assert result.exit_code == 2
    assert "BUS_AI_API_URL" in result.stderr


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "-inf", "abc"])
def test_bad_timeout_exit_2(cli, requests_mock, value):
    result = cli("status", "--timeout", value)
    assert result.exit_code == 2
    assert "--timeout" in result.stderr
    assert requests_mock.call_count == 0


@pytest.mark.parametrize("where", ["before", "after"])
def test_bad_timeout_json_exit_2(cli, requests_mock, where):
    args = ["--timeout", "0", "status", "--json"] if where == "before" \
        else ["--json", "status", "--timeout", "nan"]
    result = cli(*args)
    assert result.exit_code == 2
    assert json_error(result)["exit_code"] == 2


def test_unknown_option_exit_2(cli, requests_mock):
    result = cli("status", "--bogus")
    assert result.exit_code == 2
    assert requests_mock.call_count == 0


def test_unknown_command_exit_2(cli):
    assert cli("nope").exit_code == 2


def test_mistyped_run_option_is_not_sent_as_the_command(cli, requests_mock):
    result = cli("run", "--profle", "gpu", "--", "echo", "hi")
    assert result.exit_code == 2
    assert "--profle" in result.stderr
    assert requests_mock.call_count == 0


# -- literal --token ---------------------------------------------------------------------
LITERAL = "LiteralTok3n-do-not-echo"


@pytest.mark.parametrize("args", [
    ["--token", LITERAL, "status"], ["status", "--token", LITERAL],
    ["status", f"--token={LITERAL}"], ["run", "--token", LITERAL, "--", "true"],
    ["show", "run_1", "--token", LITERAL], ["delete", "--token", LITERAL, "run_1"],
    ["runs", "--token", LITERAL], ["status", "--token"],
])
def test_literal_token_is_refused(cli, requests_mock, args):
    result = cli(*args, secrets=(LITERAL,))
    assert result.exit_code == 2
    for hint in ("--token-file", "BUS_AI_TOKEN", "bus auth token"):
        assert hint in result.stderr
    assert requests_mock.call_count == 0


def test_literal_token_refused_as_json(cli, requests_mock):
    for args in (["--json", "--token", LITERAL, "status"], ["status", "--json", "--token",
                                                            LITERAL]):
        result = cli(*args, secrets=(LITERAL,))
        error = json_error(result)
        assert error["exit_code"] == 2 and "--token-file" in error["message"]


# -- exit 3 ------------------------------------------------------------------------------
def test_status_endpoint_404_is_not_run_not_found(cli, requests_mock):
    # A 404 on /status means the URL is wrong, not that a run is missing.
    requests_mock.get(BASE + "/status", status_code=404, json=error_body("not_found"))
    result = cli("status")
    assert result.exit_code == 1
    assert "--api-url" in result.stderr


# -- exit 4 ------------------------------------------------------------------------------
@pytest.mark.parametrize("json_flag", [False, True])
def test_no_token_anywhere_exit_4(cli, requests_mock, json_flag):
    result = cli("status", *(["--json"] if json_flag else []), token=None)
    assert result.exit_code == 4
    text = json_error(result)["message"] + json.loads(result.stderr)["error"]["guidance"] \
        if json_flag else result.stderr
    assert 'bus auth token --scope "container:read' in text
    assert requests_mock.call_count == 0


def test_bus_api_token_is_used(cli, requests_mock):
    requests_mock.get(BASE + "/status", json={"status": "ready"})
    other = make_jwt(jti="other")
    result = cli("status", token=None, env={"BUS_API_TOKEN": other}, secrets=(other,))
    assert result.exit_code == 0
    assert requests_mock.last_request.headers["Authorization"] == f"Bearer {other}"


def test_token_file_option(cli, requests_mock, tmp_path):
    other = make_jwt(jti="file")
    path = tmp_path / "tok"
    path.write_text(f"\n  {other}  \n")
    path.chmod(0o600)
    requests_mock.get(BASE + "/status", json={"status": "ready"})
    result = cli("status", "--token-file", str(path), secrets=(other,))
    assert result.exit_code == 0
    assert result.stderr == ""
    assert requests_mock.last_request.headers["Authorization"] == f"Bearer {other}"


def test_token_file_group_readable_warns_once(cli, requests_mock, tmp_path):
    other = make_jwt(jti="file")
    path = tmp_path / "tok"
    path.write_text(other)
    path.chmod(0o644)
    requests_mock.get(BASE + "/status", json={"status": "ready"})
    result = cli("status", "--token-file", str(path), secrets=(other,))
    assert result.exit_code == 0
    assert result.stdout == "ready\n"
    assert result.stderr.count("warning") == 1 and str(path) in result.stderr


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_bad_token_file_exit_4_naming_path(cli, requests_mock, tmp_path, content):
    path = tmp_path / "tok"
    if content is not None:
        path.write_text(content)
    result = cli("status", "--token-file", str(path))
    assert result.exit_code == 4
    assert str(path) in result.stderr
    assert requests_mock.call_count == 0


def test_config_dir_token_file(cli, requests_mock):
    other = make_jwt(jti="config")
    auth = __import__("pathlib").Path(cli.config_dir) / "auth"
    auth.mkdir()
    (auth / "api-token").write_text(other + "\n")
    (auth / "api-token").chmod(0o600)
    requests_mock.get(BASE + "/status", json={"status": "ready"})
    result = cli("status", token=None, secrets=(other,))
    assert result.exit_code == 0
    assert requests_mock.last_request.headers["Authorization"] == f"Bearer {other}"


@pytest.mark.parametrize("json_flag", [False, True])
def test_not_a_jwt_exit_4(cli, requests_mock, json_flag):
    result = cli("status", *(["--json"] if json_flag else []), token="not-a-jwt-secret")
    assert result.exit_code == 4
    if json_flag:
        assert json_error(result)["code"] == "not_a_jwt"
    else:
        assert "not a JWT" in result.stderr
    assert requests_mock.call_count == 0


def test_expired_token_exit_4(cli, requests_mock):
    expired = make_jwt(exp=1_600_000_000)
    result = cli("status", token=expired)
    assert result.exit_code == 4
    assert "expired" in result.stderr and "2020-09-13" in result.stderr
    assert "bus auth token" in result.stderr
    assert requests_mock.call_count == 0


@pytest.mark.parametrize("command,args,scope", [
    ("status", [], "container:read"), ("runs", [], "container:read"),
    ("show", ["run_1"], "container:read"), ("run", ["--", "true"], "container:run"),
    ("delete", ["run_1"], "container:delete"),
])
def test_missing_scope_exit_4(cli, requests_mock, command, args, scope):
    others = " ".join(x for x in ("container:read container:run container:delete".split())
                      if x != scope)
    result = cli(command, *args, token=make_jwt(scope=others))
    assert result.exit_code == 4
    assert scope in result.stderr
    assert 'bus auth token --scope "container:read container:run container:delete ' \
           'billing:read"' in result.stderr
    assert requests_mock.call_count == 0


def test_token_without_scope_claims_is_sent(cli, requests_mock):
    requests_mock.get(BASE + "/status", json={"status": "ready"})
    bare = make_jwt(scope=None)
    assert cli("status", token=bare).exit_code == 0


@pytest.mark.parametrize("http,code", [(401, "unauthenticated"), (401, "token_expired"),
                                       (403, "forbidden"), (403, "insufficient_scope")])
@pytest.mark.parametrize("json_flag", [False, True])
def test_server_auth_errors_exit_4(cli, requests_mock, http, code, json_flag):
    requests_mock.get(BASE + "/runs/run_1", status_code=http,
                      json=error_body(code, "denied", scope="container:read"))
    result = cli("show", "run_1", *(["--json"] if json_flag else []))
    assert result.exit_code == 4
    assert requests_mock.call_count == 1
    if json_flag:
        assert json_error(result)["exit_code"] == 4
    else:
        assert "denied" in result.stderr and "bus auth token" in result.stderr


# -- exit 5 ------------------------------------------------------------------------------
@pytest.mark.parametrize("json_flag", [False, True])
def test_billing_required_exit_5(cli, requests_mock, json_flag):
    requests_mock.post(BASE + "/runs", status_code=402, json=error_body(
        "billing_required", "add a payment method", guidance="Open the billing page",
        url="https://billing.example/setup"))
    result = cli("run", *(["--json"] if json_flag else []), "--", "true")
    assert result.exit_code == 5
    assert requests_mock.call_count == 1  # no retry
    if json_flag:
        error = json_error(result)
        assert error["code"] == "billing_required"
        assert error["url"] == "https://billing.example/setup"
    else:
        for text in ("add a payment method", "Open the billing page",
                     "https://billing.example/setup"):
            assert text in result.stderr


def test_quota_exhausted_exit_5_no_retry(cli, requests_mock):
    requests_mock.get(BASE + "/runs", status_code=429, json=error_body(
        "quota_exhausted", "monthly runs used", guidance="Upgrade", url="https://u.example"),
        headers={"Retry-After": "1"})
    result = cli("runs")
    assert result.exit_code == 5
    assert requests_mock.call_count == 1
    assert "Upgrade" in result.stderr and "https://u.example" in result.stderr


def test_rate_limited_retried_then_exit_5(cli, requests_mock, fake_time):
    requests_mock.get(BASE + "/status", status_code=429,
                      json=error_body("rate_limited", "slow down"),
                      headers={"Retry-After": "2"})
    result = cli("status", "--json")
    assert result.exit_code == 5
    assert requests_mock.call_count == 4
    assert fake_time.sleeps == [2.0, 2.0, 2.0]
    assert json_error(result)["code"] == "rate_limited"


# -- run ---------------------------------------------------------------------------------
def test_run_human_stdout_is_exactly_the_remote_stdout(cli, requests_mock):
    remote = run_obj(stdout="OK\nline 2 \t\n", stderr="warn: x\n", command=["sh", "-c", "x"])
    requests_mock.post(BASE + "/runs", status_code=201, json=remote)
    result = cli("run", "--", "sh", "-c", "x")
    assert result.exit_code == 0
    assert result.stdout == "OK\nline 2 \t\n"
    assert "warn: x\n" in result.stderr
    assert "run_1" in result.stderr
    create = requests_mock.request_history[0]  # then the logs, for both streams in order
    body = create.json()
    assert body["profile"] == "codex" and body["command"] == ["sh", "-c", "x"]
    assert "env" not in body
    headers = create.headers
    assert len(headers["Idempotency-Key"]) == 36
    assert headers["Prefer"].startswith("wait=")


def test_run_stdout_without_trailing_newline_and_unicode(cli, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_obj(stdout="OK ✓ é"))
    result = cli("run", "--", "printf", "OK")
    assert result.stdout == "OK ✓ é"


def test_run_command_words_after_double_dash_are_kept(cli, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_obj())
    result = cli("run", "--", "ls", "-la", "--json", "--", "--token-file")
    assert result.exit_code == 0
    assert requests_mock.last_request.json()["command"] == ["ls", "-la", "--json", "--",
                                                            "--token-file"]
    assert result.stdout == ""  # --json belonged to the remote command


def test_run_without_double_dash(cli, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_obj())
    assert cli("run", "ls", "-la").exit_code == 0
    assert requests_mock.last_request.json()["command"] == ["ls", "-la"]


def test_run_needs_a_command(cli, requests_mock):
    assert cli("run").exit_code == 2
    assert cli("run", "--json").exit_code == 2
    assert requests_mock.call_count == 0


def test_run_json_is_the_final_run(cli, requests_mock):
    remote = run_obj(stdout="OK", stderr="e", extra={"new": True})
    requests_mock.post(BASE + "/runs", status_code=201, json=remote)
    result = cli("run", "--json", "--", "printf", "OK")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == remote
    assert result.stderr == ""


@pytest.mark.parametrize("remote_code", [1, 2, 7, 42, 255])
@pytest.mark.parametrize("json_flag", [False, True])
def test_run_exits_with_the_remote_exit_code(cli, requests_mock, remote_code, json_flag):
    remote = run_obj(status="failed", exit_code=remote_code, stderr="bad\n")
    requests_mock.post(BASE + "/runs", status_code=201, json=remote)
    result = cli("run", *(["--json"] if json_flag else []), "--", "false")
    assert result.exit_code == remote_code
    if json_flag:
        assert json.loads(result.stdout)["exit_code"] == remote_code
    else:
        assert result.stdout == ""
        assert "bad\n" in result.stderr and "run_1" in result.stderr


@pytest.mark.parametrize("json_flag", [False, True])
def test_run_timed_out_on_server_exit_124(cli, requests_mock, json_flag):
    requests_mock.post(BASE + "/runs", status_code=201,
                       json=run_obj(status="timed_out", exit_code=None, stdout="part"))
    result = cli("run", *(["--json"] if json_flag else []), "--", "sleep", "100")
    assert result.exit_code == 124
    if not json_flag:
        assert result.stdout == "part"
        assert "timed out; exiting with 124" in result.stderr


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_run_failed_without_exit_code_exit_1(cli, requests_mock, status):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_obj(status=status))
    result = cli("run", "--", "x")
    assert result.exit_code == 1
    assert status in result.stderr


def test_run_202_then_polls_until_finished(cli, requests_mock, fake_time):
    requests_mock.post(BASE + "/runs", status_code=202, json=run_obj("run_9", "queued"))
    requests_mock.get(BASE + "/runs/run_9", [
        {"json": run_obj("run_9", "running")},
        {"json": run_obj("run_9", "running"), "headers": {"Retry-After": "3"}},
        {"json": run_obj("run_9", "succeeded", stdout="done\n")},
    ])
    result = cli("run", "--", "work")
    assert result.exit_code == 0
    assert result.stdout == "done\n"
    assert "run_9" in result.stderr
    # An older server: the logs endpoint answers 404 once, then the CLI polls.
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in requests_mock.request_history] == [
        ("POST", "runs"), ("GET", "logs"), ("GET", "run_9"), ("GET", "run_9"), ("GET", "run_9")]
    assert fake_time.sleeps[2] == 3.0  # Retry-After honoured while polling


@pytest.mark.parametrize("json_flag", [False, True])
def test_run_cli_timeout_while_polling_exit_124(cli, requests_mock, fake_time, json_flag):
    requests_mock.post(BASE + "/runs", status_code=202, json=run_obj("run_slow", "running"))
    requests_mock.get(BASE + "/runs/run_slow", json=run_obj("run_slow", "running"))
    result = cli("run", "--timeout", "10", *(["--json"] if json_flag else []), "--", "sleep")
    assert result.exit_code == 124
    assert "run_slow" in result.stderr
    assert sum(fake_time.sleeps) <= 10
    if json_flag:
        assert json_error(result)["code"] == "timeout"
    else:
        assert "keeps running" in result.stderr


def test_run_poll_404_exit_3(cli, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=202, json=run_obj("run_gone", "queued"))
    requests_mock.get(BASE + "/runs/run_gone", status_code=404, json=error_body("not_found"))
    assert cli("run", "--", "x").exit_code == 3


def test_run_env_profile_run_timeout_in_body(cli, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_obj())
    result = cli("run", "--profile", "py", "--env", "A=1", "--env", "B_2=x=y", "--env", "C=",
                 "--run-timeout", "30", "--", "env")
    assert result.exit_code == 0
    body = requests_mock.last_request.json()
    assert body == {"profile": "py", "command": ["env"], "timeout_seconds": 30,
                    "env": {"A": "1", "B_2": "x=y", "C": ""}}


def test_run_env_name_only_takes_local_value(cli, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_obj())
    result = cli("run", "--env", "MY_LOCAL", "--", "env", env={"MY_LOCAL": "v1"})
    assert result.exit_code == 0
    assert requests_mock.last_request.json()["env"] == {"MY_LOCAL": "v1"}
    result = cli("run", "--env", "NOT_SET_ANYWHERE_X", "--", "env")
    assert result.exit_code == 2


@pytest.mark.parametrize("item", ["bad-name=1", "=1", "1A=x", "A B=1", "bad-name"])
def test_run_env_bad_name_exit_2(cli, requests_mock, item):
    result = cli("run", "--env", item, "--", "env")
    assert result.exit_code == 2
    assert requests_mock.call_count == 0


def test_run_env_bad_name_json(cli, requests_mock):
    result = cli("run", "--json", "--env", "bad-name=1", "--", "env")
    assert json_error(result)["exit_code"] == 2


def test_run_output_truncated_warns_on_stderr(cli, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=201,
                       json=run_obj(stdout="x", output_truncated=True))
    result = cli("run", "--", "x")
    assert result.stdout == "x"
    assert "truncated" in result.stderr


def test_run_post_retried_with_the_same_idempotency_key(cli, requests_mock):
    requests_mock.post(BASE + "/runs", [{"status_code": 503, "json": error_body("x")},
                                        {"status_code": 201, "json": run_obj()}])
    assert cli("run", "--", "x").exit_code == 0
    keys = {r.headers["Idempotency-Key"] for r in requests_mock.request_history}
    assert len(keys) == 1 and requests_mock.call_count == 2


# -- run --detach ------------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--detach", "-d"])
def test_run_detach_prints_only_the_id(cli, requests_mock, flag):
    requests_mock.post(BASE + "/runs", status_code=202, json=run_obj("run_d", "queued"))
    result = cli("run", flag, "--", "sleep", "5")
    assert result.exit_code == 0
    assert result.stdout == "run_d\n"
    assert requests_mock.call_count == 1  # no polling
    assert "Prefer" not in requests_mock.last_request.headers


def test_run_detach_json(cli, requests_mock):
    created = run_obj("run_d", "queued")
    requests_mock.post(BASE + "/runs", status_code=202, json=created)
    result = cli("run", "--detach", "--json", "--", "sleep", "5")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == created


def test_run_detach_error_exit(cli, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=400, json=error_body("unknown_profile",
                                                                        "no such profile"))
    result = cli("run", "--detach", "--json", "--", "x")
    assert json_error(result)["exit_code"] == 2


# -- runs --------------------------------------------------------------------------------
def test_runs_human_table(cli, requests_mock):
    runs = [run_obj("run_a", command=["sh", "-c", "echo hi"]),
            run_obj("run_b", "failed", exit_code=3, profile="py")]
    requests_mock.get(BASE + "/runs", json={"runs": runs, "next_cursor": None})
    result = cli("runs")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "PROFILE", "EXIT", "DURATION", "CREATED",
                                "COMMAND"]
    assert lines[1].split()[:4] == ["run_a", "succeeded", "codex", "0"]
    assert lines[1].endswith("sh -c 'echo hi'")
    assert lines[2].split()[:4] == ["run_b", "failed", "py", "3"]
    assert result.stderr == ""
    assert requests_mock.last_request.qs == {"limit": ["20"]}


def test_runs_json_is_an_array(cli, requests_mock):
    runs = [run_obj("run_a", brand_new="kept"), run_obj("run_b", status="paused")]
    requests_mock.get(BASE + "/runs", json={"runs": runs, "next_cursor": None})
    result = cli("runs", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == runs


def test_runs_empty(cli, requests_mock):
    requests_mock.get(BASE + "/runs", json={"runs": [], "next_cursor": None})
    assert json.loads(cli("runs", "--json").stdout) == []
    assert cli("runs").stdout.split() == ["ID", "STATUS", "PROFILE", "EXIT", "DURATION",
                                          "CREATED", "COMMAND"]


def test_runs_limit_150_follows_next_cursor(cli, requests_mock):
    page1 = [run_obj(f"run_{i}") for i in range(100)]
    page2 = [run_obj(f"run_{i}") for i in range(100, 150)]
    requests_mock.get(BASE + "/runs", [
        {"json": {"runs": page1, "next_cursor": "c2"}},
        {"json": {"runs": page2, "next_cursor": "c3"}},
    ])
    result = cli("runs", "--limit", "150", "--status", "running", "--json")
    assert result.exit_code == 0
    assert [r["id"] for r in json.loads(result.stdout)] == [f"run_{i}" for i in range(150)]
    first, second = requests_mock.request_history
    assert first.qs == {"limit": ["100"], "status": ["running"]}
    assert second.qs == {"limit": ["50"], "cursor": ["c2"], "status": ["running"]}


def test_runs_bad_limit_exit_2(cli, requests_mock):
    assert cli("runs", "--limit", "0").exit_code == 2
    assert cli("runs", "--limit", "x", "--json").exit_code == 2
    assert requests_mock.call_count == 0


def test_runs_server_error_json(cli, requests_mock):
    requests_mock.get(BASE + "/runs", status_code=500, text="oops")
    result = cli("runs", "--json")
    assert json_error(result)["exit_code"] == 1


# -- show --------------------------------------------------------------------------------
def test_show_human(cli, requests_mock):
    run = run_obj("run_s", stdout="hello\n", stderr="oops\n", region="eu-1")
    requests_mock.get(BASE + "/runs/run_s", json=run)
    result = cli("show", "run_s")
    assert result.exit_code == 0
    out = result.stdout
    assert "run_s" in out and "succeeded" in out and "printf OK" in out
    assert "\nRegion:" in out and "eu-1" in out  # unknown fields shown, labelled alike
    assert "--- stdout ---\nhello" in out and "--- stderr ---\noops" in out
    assert result.stderr == ""


def test_show_json(cli, requests_mock):
    run = run_obj("run_s", region="eu-1", status="hibernating")
    requests_mock.get(BASE + "/runs/run_s", json=run)
    result = cli("show", "--json", "run_s")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == run


@pytest.mark.parametrize("json_flag", [False, True])
def test_show_not_found_exit_3(cli, requests_mock, json_flag):
    requests_mock.get(BASE + "/runs/run_x", status_code=404,
                      json=error_body("not_found", "no run run_x"))
    result = cli("show", "run_x", *(["--json"] if json_flag else []))
    assert result.exit_code == 3
    if json_flag:
        assert json_error(result)["code"] == "not_found"
    else:
        assert "no run run_x" in result.stderr and result.stdout == ""


@pytest.mark.parametrize("run_id", ["../etc", "a/b", "a%2Fb", "a?b", "a b", "-x", "_x", "",
                                    "x" * 129, "run_1\n"])
def test_show_invalid_run_id_exit_2_no_request(cli, requests_mock, run_id):
    result = cli("show", "--", run_id)
    assert result.exit_code == 2
    assert requests_mock.call_count == 0


def test_show_invalid_run_id_json(cli, requests_mock):
    result = cli("show", "--json", "../x")
    error = json_error(result)
    assert error["code"] == "invalid_run_id" and error["exit_code"] == 2
    assert requests_mock.call_count == 0


def test_show_missing_argument_json(cli, requests_mock):
    assert json_error(cli("show", "--json"))["exit_code"] == 2


# -- delete ------------------------------------------------------------------------------
def test_delete_all_found(cli, requests_mock):
    requests_mock.delete(BASE + "/runs/run_a", status_code=204)
    requests_mock.delete(BASE + "/runs/run_b", status_code=204)
    result = cli("delete", "run_a", "run_b")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr.splitlines() == ["Deleted run_a", "Deleted run_b"]


def test_delete_some_not_found_exit_3(cli, requests_mock):
    requests_mock.delete(BASE + "/runs/a", status_code=204)
    requests_mock.delete(BASE + "/runs/b", status_code=404, json=error_body("not_found"))
    requests_mock.delete(BASE + "/runs/c", status_code=204)
    result = cli("delete", "a", "b", "c")
    assert result.exit_code == 3
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 3 and "a" in lines[0] and "b" in lines[1] and "c" in lines[2]
    assert [r.method for r in requests_mock.request_history] == ["DELETE"] * 3


def test_delete_json(cli, requests_mock):
    requests_mock.delete(BASE + "/runs/a", status_code=204)
    requests_mock.delete(BASE + "/runs/b", status_code=404, json=error_body("not_found"))
    result = cli("delete", "--json", "a", "b")
    assert result.exit_code == 3
    assert json.loads(result.stdout) == {"deleted": ["a"], "not_found": ["b"]}
    assert result.stderr == ""
    requests_mock.delete(BASE + "/runs/b", status_code=204)
    result = cli("delete", "a", "b", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"deleted": ["a", "b"], "not_found": []}


def test_delete_invalid_id_anywhere_means_no_request(cli, requests_mock):
    result = cli("delete", "run_a", "../b")
    assert result.exit_code == 2
    assert requests_mock.call_count == 0


def test_delete_duplicates_once(cli, requests_mock):
    requests_mock.delete(BASE + "/runs/a", status_code=204)
    assert cli("delete", "a", "a").exit_code == 0
    assert requests_mock.call_count == 1


def test_delete_needs_an_id(cli, requests_mock):
    assert cli("delete").exit_code == 2


def test_delete_auth_error_stops(cli, requests_mock):
    requests_mock.delete(BASE + "/runs/a", status_code=403, json=error_body("forbidden"))
    result = cli("delete", "--json", "a", "b")
    assert json_error(result)["exit_code"] == 4


# -- options before and after the subcommand ---------------------------------------------
def test_api_url_after_subcommand_wins(cli, requests_mock):
    requests_mock.get("http://localhost:1111/api/v1/containers/status", json={"status": "a"})
    requests_mock.get("http://localhost:2222/api/v1/containers/status", json={"status": "b"})
    result = cli("--api-url", "http://localhost:1111", "status", "--api-url",
                 "http://localhost:2222")
    assert result.stdout == "b\n"
    assert [r.url for r in requests_mock.request_history] == [
        "http://localhost:2222/api/v1/containers/status"]


def test_api_url_before_subcommand(cli, requests_mock):
    requests_mock.get("https://api.example.com/pre/api/v1/containers/runs/run_1",
                      json=run_obj())
    result = cli("--api-url", "https://api.example.com/pre/", "show", "run_1")
    assert result.exit_code == 0
    assert requests_mock.last_request.url == \
        "https://api.example.com/pre/api/v1/containers/runs/run_1"


def test_api_url_flag_beats_env(cli, requests_mock):
    requests_mock.get("http://localhost:3333/api/v1/containers/status", json={"status": "f"})
    result = cli("status", "--api-url", "http://localhost:3333",
                 env={"BUS_AI_API_URL": "http://localhost:4444",
                      "BUS_API_BASE_URL": "http://localhost:5555"})
    assert result.stdout == "f\n"


@pytest.mark.parametrize("env,port", [
    ({"BUS_AI_API_URL": "http://localhost:4444", "BUS_API_BASE_URL": "http://localhost:5555"},
     4444),
    ({"BUS_API_BASE_URL": "http://localhost:5555"}, 5555),
])
def test_api_url_env_order(cli, requests_mock, env, port):
    requests_mock.get(f"http://localhost:{port}/api/v1/containers/status",
                      json={"status": "ready"})
    assert cli("status", env=env).exit_code == 0


def test_token_file_after_subcommand_wins(cli, requests_mock, tmp_path):
    first, second = make_jwt(jti="first"), make_jwt(jti="second")
    for name, value in (("one", first), ("two", second)):
        (tmp_path / name).write_text(value)
        (tmp_path / name).chmod(0o600)
    requests_mock.get(BASE + "/status", json={"status": "ready"})
    result = cli("--token-file", str(tmp_path / "one"), "status", "--token-file",
                 str(tmp_path / "two"), secrets=(first, second))
    assert result.exit_code == 0
    assert requests_mock.last_request.headers["Authorization"] == f"Bearer {second}"
    result = cli("--token-file", str(tmp_path / "one"), "status", secrets=(first, second))
    assert requests_mock.last_request.headers["Authorization"] == f"Bearer {first}"


def test_timeout_after_subcommand_wins(cli, requests_mock, fake_time):
    def slow(request, context):
        fake_time.now += 1000
        raise requests.exceptions.ReadTimeout("read timed out")

    requests_mock.get(BASE + "/status", text=slow)
    result = cli("--timeout", "40", "status", "--timeout", "20")
    assert result.exit_code == 124 and "timeout of 20 s" in result.stderr
    result = cli("--timeout", "40", "status")
    assert result.exit_code == 124 and "timeout of 40 s" in result.stderr


@pytest.mark.parametrize("args", [["--json", "status"], ["status", "--json"]])
def test_json_before_or_after(cli, requests_mock, args):
    requests_mock.get(BASE + "/status", json={"status": "ready"})
    assert json.loads(cli(*args).stdout) == {"status": "ready"}


# -- --debug -----------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["before", "after", "env"])
def test_debug_logs_requests_with_masked_token(cli, requests_mock, how):
    requests_mock.get(BASE + "/status", json={"status": "ready"},
                      headers={"X-Request-Id": "req-abc-123"})
    args = {"before": ["--debug", "status"], "after": ["status", "--debug"],
            "env": ["status"]}[how]
    result = cli(*args, env={"BUS_DEBUG": "1"} if how == "env" else None)
    assert result.exit_code == 0
    assert result.stdout == "ready\n"
    assert f"GET {BASE}/status -> 200" in result.stderr
    assert "Bearer ***" in result.stderr
    assert "req-abc-123" in result.stderr
    assert "attempt 1" in result.stderr
    assert " ms " in result.stderr


def test_debug_logs_each_retry(cli, requests_mock):
    requests_mock.get(BASE + "/status", [{"status_code": 502, "text": "x"},
                                         {"json": {"status": "ready"}}])
    result = cli("status", "--debug")
    assert "-> 502" in result.stderr and "attempt 2" in result.stderr


def test_no_debug_output_by_default(cli, requests_mock):
    requests_mock.get(BASE + "/status", json={"status": "ready"})
    assert cli("status").stderr == ""
    assert cli("status", env={"BUS_DEBUG": "0"}).stderr == ""


# -- unexpected bugs ---------------------------------------------------------------------
def _explode(self, *args, **kwargs):
    return 1 / 0


@pytest.mark.parametrize("json_flag", [False, True])
def test_unexpected_bug_short_message_exit_1(cli, requests_mock, monkeypatch, json_flag):
    monkeypatch.setattr(service.ContainersClient, "status", _explode)
    result = cli("status", *(["--json"] if json_flag else []))
    assert result.exit_code == 1
    if json_flag:
        error = json_error(result)
        assert "ZeroDivisionError" in error["message"]
    else:
        assert "ZeroDivisionError" in result.stderr
        assert "--debug" in result.stderr
        assert len(result.stderr.splitlines()) <= 3


def test_unexpected_bug_with_debug_shows_traceback(cli, requests_mock, monkeypatch):
    monkeypatch.setattr(service.ContainersClient, "get_run", _explode)
    result = cli("show", "run_1", "--debug", traceback_ok=True)
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "ZeroDivisionError" in result.stderr


# -- help and version --------------------------------------------------------------------
def test_version(cli):
    result = cli("--version")
    assert (result.exit_code, result.stdout) == (0, f"bus-containers {__version__}\n")


def test_the_command_table_and_the_commands_agree():
    assert set(containers.commands) == set(COMMANDS)


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_every_command(cli, flag):
    result = cli(flag)
    assert result.exit_code == 0
    commands = result.stdout.split("Commands:")[1].split()
    for name in COMMANDS:
        assert name in commands
    for option in ("--api-url", "--token-file", "--timeout", "--json", "--debug"):
        assert option in result.stdout
    assert "--token " not in result.stdout  # the hidden refusal option


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_subcommand_help(cli, requests_mock, command, flag):
    result = cli(command, flag)
    assert result.exit_code == 0
    assert "--api-url" in result.stdout and "--json" in result.stdout
    # the example from the command table, in the name the user typed (standalone here)
    assert f"Example: bus-containers {COMMANDS[command].example}" in result.stdout
    assert requests_mock.call_count == 0


def test_debug_leaves_the_logger_as_it_found_it(cli, requests_mock):
    import logging

    logger = logging.getLogger("bus_containers")
    before = (logger.level, list(logger.handlers))
    requests_mock.get(BASE + "/status", json={"status": "ready"})
    cli("status", "--debug")
    assert (logger.level, list(logger.handlers)) == before


@pytest.mark.parametrize("where", ["before", "after"])
def test_cp_to_stdout_with_json_is_a_usage_error(cli, requests_mock, where):
    """stdout cannot be both the tar and one JSON document: refused before any request."""
    args = ["cp", "run_abc:d/e/f.txt", "-"]
    result = cli(*(["--json", *args] if where == "before" else [args[0], "--json", *args[1:]]))
    assert result.exit_code == 2
    assert "--json cannot be combined with DEST '-'" in json_error(result)["message"]
    assert not requests_mock.request_history
