"""What a newcomer tester found in the CLI's wording, hints and edge cases: one test (or a
few) per defect, through the click commands with requests-mock; the emulator's `token`
subcommand and the reference host have theirs in tests/emulator and tests/host."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from bus_containers import doctor, errors, render, service
from bus_containers.render import Invocation
from tests.cli.helpers import BASE, error_body, run_obj
from tests.cli.test_correctness import host_root

SERVER_TOKEN_GUIDANCE = ('Get a new token with: bus auth token --scope "container:read '
                         'container:run container:delete billing:read"')


# -- 1. standalone token hints never send the user to a `bus` that is not there --------------
@pytest.mark.parametrize("code", ["token_expired", "unauthenticated"])
def test_server_401_guidance_gives_way_to_the_hint_in_the_name_typed(cli, requests_mock,
                                                                     code):
    requests_mock.get(BASE + "/status", status_code=401,
                      json=error_body(code, "the token's signature is not valid",
                                      guidance=SERVER_TOKEN_GUIDANCE))
    for args in (("status",), ("status", "--json")):
        result = cli(*args)
        assert result.exit_code == 4
        assert SERVER_TOKEN_GUIDANCE not in result.stderr
        assert "bus-containers-emulator token" in result.stderr  # the way without Bus
        assert "Get a new token with the Bus CLI" in result.stderr
    hosted = cli("containers", "status", group=host_root())
    assert hosted.stderr.count("bus auth token --scope") == 1  # not the server's and ours


def test_a_literal_token_is_refused_with_the_standalone_hint(cli, requests_mock):
    result = cli("status", "--token", "abc")
    assert result.exit_code == 2 and "--token-file" in result.stderr
    assert "bus-containers-emulator token" in result.stderr
    assert "or run: bus auth token" not in result.stderr


# -- 2. the local-emulator hint works as written -----------------------------------------------
def test_the_emulator_token_hint_needs_no_uuidgen_and_names_the_state_dir():
    hint = render.token_hint(Invocation(prog="bus-containers", standalone=True))
    assert "uuidgen" not in hint and "--sub" not in hint
    assert 'export BUS_AI_TOKEN="$(bus-containers-emulator token)"' in hint
    assert "--state-dir" in hint


# -- 3. --token-file is a regular file of bounded size --------------------------------------
def test_a_fifo_or_a_device_as_token_file_is_refused_at_once(cli, requests_mock, tmp_path):
    fifo = tmp_path / "token.fifo"
    os.mkfifo(fifo)  # no writer: reading it would block forever
    for path, kind in ((fifo, "a FIFO"), (Path("/dev/zero"), "a device"),
                       (tmp_path, "a directory")):
        started = time.monotonic()
        result = cli("status", "--token-file", str(path), "--timeout", "2")
        assert result.exit_code == 4, result.stderr
        assert str(path) in result.stderr and kind in result.stderr
        assert time.monotonic() - started < 1.5
    assert requests_mock.call_count == 0


def test_a_huge_or_binary_token_file_is_refused(cli, requests_mock, tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"a" * (64 * 1024 + 1))
    big.chmod(0o600)
    result = cli("status", "--token-file", str(big))
    assert result.exit_code == 4 and "larger than 64 KiB" in result.stderr
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00token")
    binary.chmod(0o600)
    result = cli("status", "--token-file", str(binary))
    assert result.exit_code == 4 and "not text (not UTF-8)" in result.stderr
    assert "unreadable" not in result.stderr


# -- 7. no internal class name in a token error ---------------------------------------------
def test_a_malformed_token_is_worded_without_a_class_name(cli, requests_mock):
    result = cli("status", token="abc.def.ghi")
    assert result.exit_code == 4 and "not a JWT" in result.stderr
    assert "Error)" not in result.stderr  # (DecodeError), (InvalidTokenError), ...


# -- 4, 5. doctor: no dangerous advice; 5 s per network step ---------------------------------
def _diagnose(env, **kwargs):
    options = {"api_url": None, "token_file": None, "timeout": 20.0, "host_obj": None,
               "env": env, "invocation": Invocation(), "make_client": None}
    return doctor.diagnose(**{**options, **kwargs})


def test_doctor_never_advises_removing_a_file_it_did_not_create():
    check = next(_diagnose({"BUS_CONFIG_DIR": "/etc/passwd"}))
    assert check.status == "fail"
    assert "Remove" not in check.fix and "rename" not in check.fix
    assert "not a directory" in check.fix and "$BUS_CONFIG_DIR" in check.fix


def test_doctor_status_call_has_at_most_the_probe_timeout():
    timeouts = []

    class Client:
        def status(self):
            return {"status": "ready"}

    def make_client(origin, token, timeout):
        timeouts.append(timeout)
        return Client()

    with socket.socket() as listener:  # the TCP step connects here, and nowhere else
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        found = doctor._Found(token="t", token_usable=True,
                              origin=f"http://127.0.0.1:{listener.getsockname()[1]}",
                              origin_source="--api-url")
        check = doctor._network(found, Invocation(), time.monotonic() + 20, make_client, {})
    assert check.status == "ok", check.detail
    assert timeouts and max(timeouts) <= doctor.PROBE_TIMEOUT


# -- 6. client options are checked and named on the client ----------------------------------
def test_a_since_far_in_the_past_is_sent_as_a_valid_time(cli, requests_mock):
    requests_mock.get(BASE + "/runs/run_1/logs", content=b'{"event": "end"}\n')
    result = cli("logs", "--since", "99999999d", "run_1")
    assert result.exit_code == 0, result.stderr
    assert requests_mock.last_request.qs["since"] == ["0001-01-01t00:00:00.000z"]


def test_a_tail_too_big_is_a_usage_error_naming_the_option(cli, requests_mock):
    result = cli("logs", "--tail", "999999999999999999999", "run_1")
    assert result.exit_code == 2 and "--tail" in result.stderr
    assert requests_mock.call_count == 0


def test_a_server_400_names_the_option_not_the_body_field(cli, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=400, json=error_body(
        "invalid_request", "timeout_seconds is over the profile's maximum (3600)"))
    result = cli("run", "--run-timeout", "99999", "--", "true")
    assert result.exit_code == 2
    assert "--run-timeout is over the profile's maximum (3600)" in result.stderr
    assert "timeout_seconds" not in result.stderr


# -- 8. Ctrl-C on logs -f names the run and how to follow it again --------------------------
@pytest.mark.parametrize("json_flag", [False, True])
def test_ctrl_c_on_logs_follow_names_the_run(cli, requests_mock, json_flag):
    def interrupted(request, context):
        os.kill(os.getpid(), signal.SIGINT)
        return b""

    requests_mock.get(BASE + "/runs/run_1/logs", content=interrupted)
    result = cli("logs", "-f", *(["--json"] if json_flag else []), "run_1")
    assert result.exit_code == 130
    text = json.loads(result.stderr)["error"]["guidance"] if json_flag else result.stderr
    assert "run_1" in result.stderr and "logs --follow run_1" in text
    assert result.stderr.strip() != "interrupted"


# -- 9. end lines in words; the exit code told apart from the run's own ---------------------
@pytest.mark.parametrize("status, exit_code, line", [
    ("cancelled", None, "Run run_1 cancelled; exiting with 1"),
    ("timed_out", None, "Run run_1 timed out; exiting with 124"),
    ("failed", 3, "Run run_1 failed (exit code 3)"),
])
def test_wait_end_lines(cli, requests_mock, status, exit_code, line):
    requests_mock.get(BASE + "/runs/run_1", json=run_obj(status=status, exit_code=exit_code,
                                                         finished_at="2026-01-01T00:00:00Z"))
    result = cli("wait", "run_1")
    assert line in result.stderr.splitlines()


# -- 11. a bare `bus-containers` is a question, not an error ----------------------------------
def test_bare_group_prints_help_and_exits_0(cli, requests_mock):
    result = cli()
    assert result.exit_code == 0 and "Commands:" in result.stdout


# -- 12. a stopped local emulator: quick, and says how to start it -------------------------
def test_refused_loopback_is_retried_once_and_suggests_starting_the_emulator():
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        origin = f"http://127.0.0.1:{closed.getsockname()[1]}"
        pauses = []
        client = service.ContainersClient(origin, "a.b.c", timeout=30, sleep=pauses.append)
        client._check_token = lambda scope: None  # the token is not what is tested
        with pytest.raises(errors.ConnectionFailed) as info:
            client.status()
    assert info.value.refused and len(pauses) == 1 and pauses[0] < 1
    text = render.error_text(info.value, Invocation(prog="bus-containers", standalone=True))
    # the port the origin names, or the hint starts an emulator where nothing will look
    port = origin.rsplit(":", 1)[1]
    assert f"start it with: bus-containers-emulator serve --port {port}\n" in text + "\n"
    default = errors.ConnectionFailed("cannot reach", origin="http://127.0.0.1:8080")
    assert "start it with: bus-containers-emulator serve\n" in \
        render.error_text(default, Invocation()) + "\n"
    remote = errors.ConnectionFailed("cannot reach", origin="https://api.example.test")
    assert "emulator" not in render.error_text(remote, Invocation())
