"""CONTRACT 6 for every command, human and --json: the same server answer gives the same
exit code in both forms; with --json the error is the `{"error": ...}` document on stderr
and stdout stays empty; without it, one `Error:` paragraph on stderr.

Driven by the command table (`bus_containers.commands.COMMANDS`): each command runs its
own help example against a server that gives the same answer on every path, so a command
added to the table is in the matrix without a line here."""

from __future__ import annotations

import json
import re
import shlex

import pytest
import requests
import requests_mock as rmock

from bus_containers.commands import COMMANDS as TABLE
from tests.cli.helpers import BASE, error_body

RUN_ID_WORD = re.compile(r"run_[0-9a-z]+")
# `doctor` (no scope of its own) reports a list of checks, not one error, and probes the
# network itself: its own tests are in tests/e2e/test_doctor.py.
COMMANDS = {name: shlex.split(facts.example) for name, facts in TABLE.items() if facts.scope}
COMMANDS["run --detach"] = ["run", "--detach", "--", "true"]

ANSWERS = {
    "500": ({"status_code": 500, "json": error_body("internal", "broken")}, 1),
    "not-json": ({"status_code": 200, "text": "<html>"}, 1),
    "409": ({"status_code": 409, "json": error_body("conflict", "busy")}, 1),
    "400": ({"status_code": 400, "json": error_body("invalid_request", "bad")}, 2),
    "422": ({"status_code": 422, "json": error_body("invalid_request", "bad")}, 2),
    "401": ({"status_code": 401, "json": error_body("unauthenticated", "who")}, 4),
    "403": ({"status_code": 403, "json": error_body("forbidden", "no")}, 4),
    "402": ({"status_code": 402, "json": error_body("billing_required", "pay",
                                                      url="https://pay.example")}, 5),
    "429-quota": ({"status_code": 429, "json": error_body("quota_exhausted", "used")}, 5),
    "429-rate": ({"status_code": 429, "json": error_body("rate_limited", "slow")}, 5),
    # over the plan's workspace or stdin size (CONTRACT 9)
    "413-too-large": ({"status_code": 413, "json": error_body("too_large", "over 1 MiB")}, 5),
    "404": ({"status_code": 404, "json": error_body("not_found", "gone")}, None),
    "timeout": (None, 124),
}


@pytest.mark.parametrize("json_flag", [False, True], ids=["human", "json"])
@pytest.mark.parametrize("answer", list(ANSWERS))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_exit_code_matrix(cli, requests_mock, fake_time, command, answer, json_flag):
    args = COMMANDS[command]
    response, expected = ANSWERS[answer]
    every_path = re.compile(re.escape(BASE) + ".*")
    if response is None:
        def slow(request, context):
            fake_time.now += 1000
            raise requests.exceptions.ReadTimeout("read timed out")

        requests_mock.register_uri(rmock.ANY, every_path, text=slow)
    else:
        requests_mock.register_uri(rmock.ANY, every_path, **response)
    if expected is None:  # 404: a missing run, or a wrong endpoint URL
        # (`cp RUN_ID:PATH` names its run before the colon)
        expected = 3 if any(RUN_ID_WORD.fullmatch(arg.split(":")[0]) for arg in args) else 1
    # --json right after the subcommand: for `run`, after `--` it would be the command's.
    result = cli(args[0], *(["--json"] if json_flag else []), *args[1:])

    if answer == "not-json" and command == "delete":
        # DELETE has no body to check: a 200 with HTML is the service's call (0 or 1), but
        # never a crash (checked by `cli`).
        assert result.exit_code in (0, 1)
        return
    assert result.exit_code == expected, result.stderr
    if command in ("delete", "cancel") and expected == 3:
        ids = [arg for arg in args[1:] if RUN_ID_WORD.fullmatch(arg)]
        if json_flag:
            nothing = {"deleted": []} if command == "delete" else {"cancelled": [],
                                                                   "finished": []}
            assert json.loads(result.stdout) == {**nothing, "not_found": ids}
        else:
            assert result.stdout == "" and all(i in result.stderr for i in ids)
        return
    if json_flag:
        assert result.stdout == ""
        error = json.loads(result.stderr)["error"]
        assert error["exit_code"] == expected
        assert error["code"] and error["message"]
    else:
        assert result.stdout == ""
        assert result.stderr.startswith("Error: ")
        assert "Traceback" not in result.stderr
