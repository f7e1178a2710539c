"""The rendering layer on its own (`bus_containers.render.Output` with injected streams),
and a check that the central `cli` assertions really catch a leak."""

from __future__ import annotations

import io
import json
import re

import pytest

from bus_containers import render
from bus_containers.errors import BillingRequired, ContainersError, RunNotFound
from tests.cli.helpers import BASE, TOKEN, run_obj


class BytesText(io.TextIOWrapper):
    """A text stream with a byte buffer, like sys.stdout."""

    def __init__(self):
        super().__init__(io.BytesIO(), encoding="utf-8", newline="")

    def value(self) -> bytes:
        self.flush()
        return self.buffer.getvalue()


def make(json_mode=False):
    out, err = io.StringIO(), io.StringIO()
    return render.Output(json=json_mode, out=out, err=err), out, err


def test_message_on_stderr_and_silent_with_json():
    output, out, err = make()
    output.message("hello")
    assert (out.getvalue(), err.getvalue()) == ("", "hello\n")
    output, out, err = make(json_mode=True)
    output.message("hello")
    assert (out.getvalue(), err.getvalue()) == ("", "")


def test_warning_always_on_stderr_and_masked():
    output, out, err = make()
    output.redact = "s3cr3t"
    output.warning("warning: value s3cr3t here")
    assert out.getvalue() == "" and err.getvalue() == "warning: value *** here\n"


def test_a_warning_under_json_is_a_json_line_on_stderr():
    """issue 12 bug 10: a program reading --json stderr as JSON lines is not broken."""
    output, out, err = make(json_mode=True)
    output.redact = "s3cr3t"
    output.warning("warning: value s3cr3t here")
    assert out.getvalue() == ""
    assert json.loads(err.getvalue()) == {"warning": {"message": "value *** here"}}


def test_error_human_paragraph():
    output, out, err = make()
    output.error(BillingRequired("pay first", guidance="Open billing", url="https://b.example"))
    assert out.getvalue() == ""
    assert err.getvalue() == "Error: pay first\nOpen billing\nSee https://b.example\n"


def test_error_json_document():
    output, out, err = make(json_mode=True)
    output.redact = "tok"
    output.error(RunNotFound("no run tok-1"))
    assert out.getvalue() == ""
    assert json.loads(err.getvalue()) == {
        "error": {"code": "not_found", "message": "no run ***-1", "exit_code": 3}}


def test_status_human_and_json():
    output, out, _ = make()
    output.status({"status": "ready"})
    assert out.getvalue() == "ready\n"
    output, out, _ = make(json_mode=True)
    output.status({"status": "x", "extra": 1})
    assert json.loads(out.getvalue()) == {"status": "x", "extra": 1}


def test_status_non_string_fields_do_not_crash():
    output, out, _ = make()
    output.status({"status": None, "message": {"nested": True}})
    assert out.getvalue().splitlines()[0] == "-"


def test_runs_table_aligns_and_cleans():
    output, out, _ = make()
    output.runs_table([
        run_obj("run_long_identifier", command=["echo", "a b"]),
        run_obj("r2", status="weird\x1bstate", exit_code=None, command="not-a-list\x07"),
        {"id": "r3", "status": "running"},
    ])
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("ID                   STATUS")
    assert lines[1].endswith("echo 'a b'")
    assert "\x1b" not in out.getvalue() and "\x07" not in out.getvalue()
    assert lines[3].split()[:4] == ["r3", "running", "-", "-"]
    column = lines[0].index("STATUS")
    assert all(line[column - 2: column] == "  " for line in lines)


def test_run_detail_shows_unknown_fields_and_output():
    output, out, _ = make()
    output.run_detail(run_obj("r1", stdout="a\nb\n", stderr="", gpu={"count": 1}))
    text = out.getvalue()
    assert re.match(r"ID: +r1\n", text)
    assert re.search(r"\nGpu: +\{\"count\": 1\}\n", text)  # JSON, not a Python repr
    assert re.search(r"\nOutput truncated: false\n", text)  # labels never run into values
    assert "--- stdout ---\na\nb\n" in text
    assert "--- stderr ---" not in text


def test_run_detail_shows_a_dash_for_what_a_run_does_not_have():
    """A cancelled or timed-out run has no exit code: `show` says "-", as the runs table
    does, not the JSON word null (a newcomer's finding)."""
    output, out, _ = make()
    output.run_detail(run_obj("r1", status="timed_out", exit_code=None, finished_at=None))
    text = out.getvalue()
    assert re.search(r"\nExit code: +-\n", text)
    assert re.search(r"\nFinished at: +-\n", text)
    assert "null" not in text


def test_run_output_writes_bytes_unchanged(requests_mock):
    """A run finished within the create call: its text becomes bytes (surrogateescape)
    and reaches our streams unchanged, no newline or escape translated."""
    from bus_containers.service import ContainersClient

    requests_mock.post(BASE + "/runs", status_code=201,
                       json=run_obj(stdout="a\r\nb\x1b[0m\udcff", stderr=""))
    out, err = BytesText(), BytesText()
    output = render.Output(out=out, err=err)
    for event in ContainersClient(BASE.rsplit("/api/", 1)[0], TOKEN).follow_run(["x"]):
        if "data" in event:
            output.chunk(event["stream"], event["data"])
    assert out.value() == b"a\r\nb\x1b[0m\xff"
    assert err.value() == b""


def test_run_output_json_is_the_run():
    output, out, err = make(json_mode=True)
    run = run_obj(stdout="x")
    output.document(run)
    assert json.loads(out.getvalue()) == run and err.getvalue() == ""


def test_deleted_only_with_json():
    output, out, _ = make()
    output.deleted(["a"], ["b"])
    assert out.getvalue() == ""
    output, out, _ = make(json_mode=True)
    output.deleted(["a"], ["b"])
    assert json.loads(out.getvalue()) == {"deleted": ["a"], "not_found": ["b"]}


def test_run_ids():
    output, out, _ = make()
    output.run_ids("a", "b")
    assert out.getvalue() == "a\nb\n"


def test_json_document_keeps_unicode():
    output, out, _ = make(json_mode=True)
    output.document({"s": "é"})
    assert "é" in out.getvalue()


def test_error_to_dict_shape():
    error = ContainersError("m", guidance="g", url="u", code="c")
    assert error.to_dict() == {"error": {"code": "c", "message": "m", "exit_code": 1,
                                         "guidance": "g", "url": "u"}}


# -- the central checks of the `cli` fixture catch what they should ------------------------
def test_central_check_catches_a_token_leak(cli, requests_mock, monkeypatch):
    requests_mock.get(BASE + "/status", json={"status": "ready"})
    monkeypatch.setattr(render.Output, "status",
                        lambda self, data: self.out.write(f"{TOKEN}\n"))
    with pytest.raises(AssertionError, match="secret leaked"):
        cli("status")


def test_central_check_catches_a_traceback(cli, requests_mock, monkeypatch):
    requests_mock.get(BASE + "/status", json={"status": "ready"})
    monkeypatch.setattr(render.Output, "status",
                        lambda self, data: self.err.write("Traceback (most recent call)\n"))
    with pytest.raises(AssertionError, match="Traceback"):
        cli("status")


def test_central_check_catches_an_account_id(cli, requests_mock, monkeypatch):
    import requests

    requests_mock.get(BASE + "/status", json={"status": "ready"})
    monkeypatch.setattr(render.Output, "status",
                        lambda self, data: requests.get(BASE + "/status?account_id=a"))
    with pytest.raises(AssertionError, match="account id"):
        cli("status")


def test_server_messages_cannot_drive_the_terminal():
    import io

    from bus_containers.errors import ApiError
    from bus_containers.render import Output

    err = io.StringIO()
    Output(err=err).error(ApiError("bad\x1b]0;pwned\x07 \x1b[2Jthing", guidance="\x1b[31mred",
                                   url="http://x/\r"))
    assert "\x1b" not in err.getvalue() and "\r" not in err.getvalue()
    assert "bad" in err.getvalue() and "thing" in err.getvalue()


def test_closed_stderr_never_sends_messages_to_stdout():
    """`cmd 2>&-` leaves sys.stderr None; print(file=None) would write to stdout."""
    out = io.StringIO()
    output = render.Output(out=out, err=None)
    output.error(RunNotFound("no run x"))
    output.message("hello")
    assert out.getvalue() == ""
