"""CliRunner tests of the live-output commands: run (streamed), logs, wait, --rm."""

from __future__ import annotations

import base64
import json

import pytest

from tests.cli.helpers import BASE, error_body, run_obj


def ndjson(*events) -> bytes:
    return b"".join(json.dumps(ev).encode() + b"\n" for ev in events)


def chunk(offset: int, data: bytes, stream: str = "stdout") -> dict:
    return {"stream": stream, "offset": offset, "data_b64": base64.b64encode(data).decode()}


def end(status="succeeded", exit_code=0) -> dict:
    return {"event": "end", "status": status, "exit_code": exit_code}


LOGS = BASE + "/runs/run_1/logs"


def test_run_streams_to_the_matching_streams(cli, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=202, json=run_obj(status="running"))
    requests_mock.get(LOGS, content=ndjson(chunk(0, b"out\n"), chunk(4, b"err\n", "stderr"),
                                           end("failed", 9)))
    result = cli("run", "--", "work")
    assert result.exit_code == 9
    assert result.stdout == "out\n"
    assert "err\n" in result.stderr and "run_1" in result.stderr


def test_run_rm_deletes_after_the_end(cli, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_obj(stdout="x"))
    requests_mock.delete(BASE + "/runs/run_1", status_code=204)
    result = cli("run", "--rm", "--", "work")
    assert (result.exit_code, result.stdout) == (0, "x")
    assert [r.method for r in requests_mock.request_history] == ["POST", "DELETE"]
    assert "Removed run_1" in result.stderr


def test_run_rm_and_detach_is_a_usage_error(cli, requests_mock):
    result = cli("run", "--rm", "--detach", "--", "work")
    assert result.exit_code == 2 and requests_mock.call_count == 0


def test_run_json_rm_deletes_too(cli, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_obj(exit_code=0))
    requests_mock.delete(BASE + "/runs/run_1", status_code=204)
    result = cli("run", "--json", "--rm", "--", "work")
    assert result.exit_code == 0 and json.loads(result.stdout)["id"] == "run_1"
    assert requests_mock.last_request.method == "DELETE"


def test_logs_human_and_json(cli, requests_mock):
    requests_mock.get(LOGS, content=ndjson(chunk(0, b"a"), chunk(1, b"b", "stderr"), end()))
    human = cli("logs", "run_1")
    assert (human.exit_code, human.stdout) == (0, "a") and "b" in human.stderr
    doc = json.loads(cli("logs", "--json", "run_1").stdout)
    assert doc == {"id": "run_1", "finished": True, "status": "succeeded", "exit_code": 0,
                   "next_offset": 2, "stdout": "a", "stderr": "b"}


def test_logs_follow_and_offset_are_sent(cli, requests_mock):
    requests_mock.get(LOGS, content=ndjson(end()))
    cli("logs", "--follow", "--offset", "5", "run_1")
    assert requests_mock.last_request.qs == {"follow": ["true"], "offset": ["5"]}


@pytest.mark.parametrize("args", [["logs", "run_404"], ["wait", "run_404"]])
def test_not_found_is_3(cli, requests_mock, args):
    requests_mock.get(BASE + "/runs/run_404", status_code=404, json=error_body("not_found"))
    requests_mock.get(BASE + "/runs/run_404/logs", status_code=404,
                      json=error_body("not_found"))
    assert cli(*args).exit_code == 3


def test_wait_exits_with_the_runs_code(cli, requests_mock):
    requests_mock.get(BASE + "/runs/run_1", [
        {"json": run_obj(status="running")},
        {"json": run_obj(status="failed", exit_code=7)},
    ])
    result = cli("wait", "run_1")
    assert result.exit_code == 7 and result.stdout == ""
    assert "\x1b[K" not in result.stderr  # no progress line when stderr is not a terminal


def test_wait_timeout_is_124(cli, requests_mock):
    requests_mock.get(BASE + "/runs/run_1", json=run_obj(status="running"))
    result = cli("wait", "--timeout", "3", "run_1")
    assert result.exit_code == 124 and "run_1" in result.stderr


def _interrupt(*_args, **_kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_while_waiting_names_the_run_in_json(cli, requests_mock, monkeypatch):
    from bus_containers import service

    monkeypatch.setattr(service.ContainersClient, "wait_for_run", _interrupt)
    result = cli("wait", "--json", "run_1")
    assert result.exit_code == 130
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "interrupted" and error["exit_code"] == 130
    assert "run_1" in error["message"] and "bus-containers wait run_1" in error["guidance"]


def test_ctrl_c_during_a_json_run_names_the_run(cli, requests_mock, monkeypatch):
    from bus_containers import service

    def created_then_interrupted(self, command, **kwargs):
        yield {"event": "created", "run": {"id": "run_7"}}
        raise KeyboardInterrupt

    monkeypatch.setattr(service.ContainersClient, "follow_run", created_then_interrupted)
    result = cli("run", "--json", "--", "sleep", "9")
    assert result.exit_code == 130 and result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert "run_7" in error["message"]
    assert "bus-containers logs --follow run_7" in error["guidance"]


def test_ctrl_c_before_the_answer_says_a_run_may_exist(cli, requests_mock, monkeypatch):
    from bus_containers import service

    def interrupted(self, command, **kwargs):
        raise KeyboardInterrupt
        yield  # a generator, as follow_run is

    monkeypatch.setattr(service.ContainersClient, "follow_run", interrupted)
    result = cli("run", "--json", "--", "sleep", "9")
    error = json.loads(result.stderr)["error"]
    assert result.exit_code == 130 and "may have been created" in error["message"]


def test_a_reader_that_went_away_is_a_quiet_141(cli, requests_mock, monkeypatch):
    """`bus containers runs | head -1`: no traceback, no message, exit 128+SIGPIPE."""
    from bus_containers import render

    def broken(self, runs, **kwargs):
        raise BrokenPipeError

    monkeypatch.setattr(render.Output, "runs_table", broken)
    requests_mock.get(BASE + "/runs", json={"runs": [], "next_cursor": None})
    result = cli("runs")
    assert result.exit_code == 141 and result.stderr == ""
