"""Issue 12: what a new user and a hostile server found, one test (or a few) per bug,
through the click commands with requests-mock (end-to-end ones: tests/e2e)."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import sys
from pathlib import Path

import click
import pytest
import requests

from bus_containers import plugin, render, settings
from tests.cli.helpers import BASE, error_body, run_obj

EVIL = "evil\x1b[31mRED\x1b]0;title\x07"


def host_root() -> click.Group:
    """A root group as the Bus CLI has one: our commands are `bus containers ...`."""
    @click.group(name="bus")
    def bus():
        pass

    plugin.register_commands(cli=bus)
    return bus


# -- bug 2: run --json + Ctrl-C keeps the run id --------------------------------------------
def test_ctrl_c_during_the_create_of_a_json_run_still_names_the_run(cli, requests_mock):
    def create(request, context):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the server holds the answer
        context.status_code = 202
        return run_obj("run_7", status="running")

    requests_mock.post(BASE + "/runs", json=create)
    result = cli("run", "--json", "--", "sleep", "9")
    assert result.exit_code == 130 and result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert error["run_id"] == "run_7" and "run_7" in error["message"]
    assert "logs --follow run_7" in error["guidance"]


# -- bug 3: no control character reaches the terminal; the command fits ---------------------
def test_runs_and_show_neutralise_control_characters(cli, requests_mock):
    run = run_obj("run_1", command=["echo", EVIL, "two\nlines"], status="succeeded")
    run["note\x1b[2J"] = "x\x9b1m"
    requests_mock.get(BASE + "/runs", json={"runs": [run], "next_cursor": None})
    requests_mock.get(BASE + "/runs/run_1", json=run)
    table = cli("runs").stdout
    shown = cli("show", "run_1").stdout
    for text in (table, shown):
        assert not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f]", text), repr(text)
    assert len(table.splitlines()) == 2  # a newline in the command does not split the row
    assert "RED" in table and "title" in shown


def test_the_command_column_fits_the_terminal_and_json_keeps_it_whole(cli, requests_mock,
                                                                      monkeypatch):
    long_command = ["sh", "-c", "echo " + "x" * 3000]
    requests_mock.get(BASE + "/runs", json={"runs": [run_obj(command=long_command)],
                                            "next_cursor": None})
    monkeypatch.setattr(render, "_isatty", lambda stream: True)
    monkeypatch.setattr("shutil.get_terminal_size", lambda *a: os.terminal_size((100, 24)))
    table = cli("runs").stdout
    assert all(len(row) <= 100 for row in table.splitlines()), table
    assert "\u2026" in table
    assert json.loads(cli("runs", "--json").stdout)[0]["command"] == long_command


def test_show_labels_every_field_alike(cli, requests_mock):
    requests_mock.get(BASE + "/runs/run_1", json=run_obj(timeout_seconds=600,
                                                         usage={"run_seconds": 1.5}))
    shown = cli("show", "run_1").stdout.split("--- stdout ---")[0]
    labels = [row.split(":", 1)[0] for row in shown.splitlines()]
    assert "Exit code" in labels and "Timeout seconds" in labels and "Duration" in labels
    assert not [label for label in labels if "_" in label or label[:1].islower()], labels


# -- bug 4: hints name the program the user typed ---------------------------------------------
def test_standalone_hints_name_bus_containers_and_how_to_get_a_token(cli, requests_mock):
    result = cli("status", token=None)
    assert result.exit_code == 4
    assert "bus auth token --scope" in result.stderr  # the Bus CLI's way
    assert "bus-containers-emulator token" in result.stderr  # the way without it


def test_hints_under_the_host_name_bus_containers(cli, requests_mock, fake_time):
    def slow(request, context):
        fake_time.now += 1000
        raise requests.exceptions.ReadTimeout("read timed out")

    requests_mock.post(BASE + "/runs", status_code=202, json=run_obj("run_5", status="running"))
    requests_mock.get(BASE + "/runs/run_5", text=slow)
    result = cli("containers", "run", "--timeout", "5", "--", "sleep", "60", group=host_root())
    assert result.exit_code == 124
    assert "bus containers delete run_5" in result.stderr
    assert "bus-containers" not in result.stderr
    standalone = cli("run", "--timeout", "5", "--", "sleep", "60")
    assert "bus-containers delete run_5" in standalone.stderr


def test_the_host_token_hint_does_not_mention_the_emulator(cli, requests_mock):
    result = cli("containers", "status", group=host_root(), token=None)
    assert result.exit_code == 4 and "bus auth token --scope" in result.stderr
    assert "bus-containers-emulator" not in result.stderr


# -- bug 6: a partial write is no success -----------------------------------------------------
class ClosingPipe:
    """stdout's byte buffer over a pipe whose reader left: as CPython's BufferedWriter does
    on a real pipe, the write that meets the closed end returns a short count (73728 of
    600000 bytes in the report), and only the next write raises."""

    def __init__(self, room: int) -> None:
        self.room = room

    def write(self, data) -> int:
        if self.room <= 0:
            raise BrokenPipeError(32, "Broken pipe")
        taken, self.room = min(self.room, len(data)), 0
        return taken

    def flush(self) -> None:
        pass


class Stdout(io.StringIO):
    def __init__(self, buffer) -> None:
        super().__init__()
        self.buffer = buffer


def test_output_that_the_pipe_takes_only_in_part_raises_broken_pipe():
    with pytest.raises(BrokenPipeError):
        render.Output(out=Stdout(ClosingPipe(room=73_728))).chunk("stdout", b"1\n" * 300_000)


# -- bug 7: run --json --rm when the delete fails: one behaviour ------------------------------
@pytest.mark.parametrize("json_flag", [False, True], ids=["human", "json"])
def test_rm_that_cannot_delete_warns_and_keeps_the_runs_exit_code(cli, requests_mock,
                                                                  json_flag):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_obj("run_1", stdout="OK"))
    requests_mock.delete(BASE + "/runs/run_1", status_code=409,
                         json=error_body("conflict", "still being archived"))
    result = cli("run", "--rm", *(["--json"] if json_flag else []), "--", "printf", "OK")
    assert result.exit_code == 0, result.stderr
    if json_flag:
        assert json.loads(result.stdout)["id"] == "run_1"
        lines = [json.loads(row) for row in result.stderr.splitlines()]
        assert lines == [{"warning": {"message": "could not remove run_1: still being "
                                                 "archived"}}]
    else:
        assert result.stdout == "OK"
        assert "warning: could not remove run_1: still being archived" in result.stderr


# -- bug 10: messages ---------------------------------------------------------------------------
def refuse(request, context):
    raise requests.exceptions.ConnectionError(
        "HTTPConnectionPool(host='127.0.0.1', port=8080): Max retries exceeded with url: / "
        "(Caused by NewConnectionError('Failed to establish a new connection: [Errno 111] "
        "Connection refused'))")


def test_a_refused_connection_names_the_origin_its_source_and_what_to_set(
        cli, requests_mock, monkeypatch):
    requests_mock.get(re.compile(r".*/status$"), text=refuse)
    result = cli("status")
    assert result.exit_code == 1
    assert "Connection refused" in result.stderr
    assert "http://127.0.0.1:8080 (from the default)" in result.stderr
    assert "$BUS_AI_API_URL" in result.stderr and "--api-url" in result.stderr
    from_env = cli("status", env={"BUS_AI_API_URL": "http://localhost:9"})
    assert "http://localhost:9 (from $BUS_AI_API_URL)" in from_env.stderr


def test_on_a_terminal_each_retry_is_announced(cli, requests_mock, monkeypatch):
    requests_mock.get(BASE + "/status", text=refuse)
    monkeypatch.setattr(render, "_isatty", lambda stream: True)
    monkeypatch.setattr("random.random", lambda: 0.0)
    result = cli("status")
    announced = re.findall(r"retrying in (\d+\.\d) s \((\d)/4\)", result.stderr)
    assert announced == [("0.5", "2"), ("1.0", "3"), ("2.0", "4")]
    quiet = cli("status", "--json")  # never with --json
    assert "retrying" not in quiet.stderr


def test_a_server_cannot_flood_the_terminal_with_its_error(cli, requests_mock):
    message = ("x" * 50_000 + "\n") * 500
    requests_mock.get(BASE + "/status", status_code=400, json=error_body("invalid_request",
                                                                         message))
    result = cli("status")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) <= 20 and max(map(len, lines)) <= 1000
    whole = json.loads(cli("status", "--json").stderr)["error"]["message"]
    assert len(whole) == len(message.strip())  # --json keeps every byte for programs


def test_docs_cli_examples_are_what_the_cli_prints():
    """docs/cli.md's `status` and `runs` examples, rendered from the data they show."""
    docs = (Path(__file__).parents[2] / "docs" / "cli.md").read_text()
    status_block = docs.split("$ bus containers status\n", 1)[1].split("\n$ ", 1)[0]
    first, second = status_block.split("\n")[:2]
    out = io.StringIO()
    render.Output(out=out).status({"status": first, "message": second})
    assert out.getvalue() == f"{first}\n{second}\n"

    piped = docs.split("$ bus containers runs --limit 2 | cat", 1)[1]
    table = piped.split("\n", 1)[1].split("\n$ ", 1)[0]
    header, *rows = table.splitlines()
    runs = []
    for row in rows:
        run_id, status, profile, code, took, created, command = re.split(r"\s{2,}", row,
                                                                          maxsplit=6)
        minutes, seconds = re.fullmatch(r"(?:(\d+)m)?([\d.]+)s", took).groups()
        runs.append(run_obj(run_id, status=status, profile=profile, exit_code=int(code),
                            created_at=created, command=["sh", "-c", command[7:-1]],
                            usage={"run_seconds": int(minutes or 0) * 60 + float(seconds)}))
    out = io.StringIO()
    render.Output(out=out).runs_table(runs)
    assert out.getvalue() == table + "\n"


# -- bug 11: the config dir on every OS ---------------------------------------------------------
@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_config_dir_is_xdg_or_dot_config_on_linux_and_macos(monkeypatch, tmp_path, platform):
    import platformdirs
    from platformdirs.macos import MacOS
    from platformdirs.unix import Unix

    monkeypatch.setattr(sys, "platform", platform)
    # platformdirs picks its class at import: make it the one of the patched platform
    monkeypatch.setattr(platformdirs, "PlatformDirs", MacOS if platform == "darwin" else Unix)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    assert settings.resolve_config_dir(None, {}) == tmp_path / ".config" / "bus"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert settings.resolve_config_dir(None, {}) == tmp_path / "xdg" / "bus"


def test_config_dir_on_windows_is_platformdirs_own(monkeypatch):
    import platformdirs

    asked = []
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(platformdirs, "user_config_dir", lambda *a, **kw: asked.append(
        (a, kw)) or "C:\\Users\\u\\AppData\\Local\\bus")
    assert str(settings.resolve_config_dir(None, {})).endswith("bus")
    assert asked == [(("bus",), {"appauthor": False})]
