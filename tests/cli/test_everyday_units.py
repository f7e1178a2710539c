"""Issue 11 without a server process: the logs -t stamping, the usage table, the runs footer
and relative times, tail dropped on a resumed stream, and completion of hostile answers."""

from __future__ import annotations

import base64
import io
import json
from types import SimpleNamespace

from bus_containers import completion
from bus_containers.render import Output
from bus_containers.service import ContainersClient
from tests.support.fakes import make_jwt, run_object

API = "http://127.0.0.1:8080"
LOGS = API + "/api/v1/containers/runs/run_abc/logs"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class Bytes(io.StringIO):
    """A text stream with a byte buffer, as sys.stdout has."""

    def __init__(self):
        super().__init__()
        self.buffer = io.BytesIO()


def test_timestamps_start_each_line_even_across_chunks():
    out = Output(out=Bytes(), err=Bytes())
    events = [
        {"stream": "stdout", "offset": 0, "data": b"ab", "time": "T1"},
        {"stream": "stdout", "offset": 2, "data": b"c\nd\n\ne", "time": "T2"},
        {"stream": "stderr", "offset": 8, "data": b"oops\n"},  # an older server: no time
        {"event": "end", "status": "succeeded", "exit_code": 0},
    ]
    out.logs("run_abc", iter(events), 0, timestamps=True)
    assert out.out.buffer.getvalue() == b"T1 abc\nT2 d\nT2 \nT2 e"
    assert out.err.buffer.getvalue() == b"- oops\n"


def test_timestamps_in_json_come_with_the_chunks():
    out = Output(json=True, out=io.StringIO())
    out.logs("run_abc", iter([{"stream": "stdout", "offset": 0, "data": b"x\n",
                               "time": "T1"}]), 0, timestamps=True)
    document = json.loads(out.out.getvalue())
    assert document["chunks"] == [{"stream": "stdout", "offset": 0, "time": "T1",
                                   "text": "x\n"}]
    assert document["stdout"] == "x\n" and document["finished"] is False


def test_usage_table_shows_left_units_and_unknown_limits():
    out = Output(out=io.StringIO())
    out.usage({"plan": "team", "period": {"start": "S", "end": "E"},
               "limits": {"runs_per_period": 100, "output_bytes": 1048576,
                          "gpu_minutes": 10, "workspace_bytes": None},
               "used": {"runs_per_period": 103, "gpu_minutes": 2.5},
               "billing": {"status": "past_due\x1b[31m", "url": "https://pay"}})
    text = out.out.getvalue()
    assert "Plan:     team" in text and "Period:   S to E" in text
    assert "Billing:  past_due?[31m (https://pay)" in text  # shown as it is, but inert
    rows = {line.split("  ")[0]: line.split() for line in text.splitlines()[4:]}
    assert rows["runs per period"][-3:] == ["103", "100", "0"]  # never a negative "left"
    assert rows["output per run"][-3:] == ["-", "1.0", "MiB", "-"][-3:]
    assert rows["workspace size"][-2:] == ["unlimited", "-"]
    assert rows["gpu_minutes"][-3:] == ["2.5", "10", "7.5"]


def test_runs_on_a_terminal_relative_times_and_a_footer():
    err = io.StringIO()
    out = Output(out=Tty(), err=err)
    run = run_object("run_a", created_at="2026-11-30T11:57:00Z", usage={"run_seconds": 185})
    from datetime import datetime, timezone

    noon = datetime(2026, 11, 30, 12, tzinfo=timezone.utc).timestamp()
    out.runs_table([run], more=True, now=noon)
    line = out.out.getvalue().splitlines()[1]
    assert "3m05s" in line and "3 min ago" in line
    assert err.getvalue() == "1 shown; more with --limit or --all\n"
    piped = Output(out=io.StringIO(), err=io.StringIO())
    piped.runs_table([run], more=True)
    assert "2026-11-30T11:57:00Z" in piped.out.getvalue() and piped.err.getvalue() == ""


def test_a_resumed_tail_stream_asks_from_its_offset_only(requests_mock):
    def line(event):
        return json.dumps(event).encode() + b"\n"

    chunk = {"stream": "stdout", "offset": 10, "data_b64": base64.b64encode(b"abc").decode(),
             "time": "T"}
    requests_mock.get(LOGS, [
        {"content": line(chunk)},  # cut before the end
        {"content": line({"event": "end", "status": "succeeded", "exit_code": 0})},
    ])
    client = ContainersClient(API, make_jwt(), sleep=lambda s: None)
    events = list(client.iter_logs("run_abc", follow=True, tail=2, since="2026-11-30T10:00:00Z"))
    assert events[0]["time"] == "T" and events[-1]["event"] == "end"
    first, second = (r.qs for r in requests_mock.request_history)
    assert first["tail"] == ["2"] and "tail" not in second
    assert second["offset"] == ["13"] and second["since"] == first["since"]


def test_completion_offers_only_well_formed_ids_on_one_line(monkeypatch):
    monkeypatch.setattr(completion, "recent_runs", lambda options: [
        {"id": "run_ok", "status": "running", "command": ["sh", "-c", "a\nb\tc"]},
        {"id": "x; rm -rf ~", "status": "running"},
        {"id": "run_\nnope"},
        {"id": 7},
        "not a run",
    ])
    ctx = SimpleNamespace(params={}, parent=None, obj=None)
    param = SimpleNamespace(name="run_id", multiple=False, nargs=1)
    items = completion.complete_run_id(ctx, param, "")
    assert [item.value for item in items] == ["run_ok"]
    assert "\n" not in items[0].help and "\t" not in items[0].help


def test_completion_lookup_has_a_wall_clock_limit(monkeypatch):
    import threading

    release = threading.Event()

    def stuck(*args, **kwargs):  # DNS or a trickling server: past any socket timeout
        release.wait(10)
        return []

    monkeypatch.setattr("bus_containers.service.ContainersClient.list_runs", stuck)
    monkeypatch.setenv("BUS_AI_TOKEN", make_jwt())
    try:
        assert completion.recent_runs({}, seconds=0.2) == []
    finally:
        release.set()


def test_help_reads_well_for_every_command():
    """run first in the list; readable metavars (no INTEGER RANGE, no [x>=1]); --status
    lists its words; aliases resolve and say so."""
    from click.testing import CliRunner

    from bus_containers.cli import containers
    from bus_containers.commands import COMMANDS

    runner = CliRunner()
    listing = runner.invoke(containers, ["--help"], prog_name="bus-containers").output
    assert listing.split("Commands:")[1].split()[0] == "run"
    for name in COMMANDS:
        text = runner.invoke(containers, [name, "--help"], prog_name="bus-containers").output
        for unreadable in ("INTEGER", "RANGE", "FLOAT", "TEXT", "[x>="):
            assert unreadable not in text, (name, unreadable)
    runs = runner.invoke(containers, ["ls", "--help"], prog_name="bus-containers").output
    assert "Usage: bus-containers runs" in runs and "Alias: ls" in runs
    assert "running, succeeded, failed, cancelled, timed_out" in " ".join(runs.split())
    assert "--limit N" in runs
    assert "Usage: bus-containers delete" in runner.invoke(
        containers, ["rm", "--help"], prog_name="bus-containers").output
