"""The run controller with -i and -w, without click or HTTP: stdin reaches send_stdin byte
for byte from a second thread, the workspace goes into the create call, and the one-line
summary comes on a terminal only."""

from __future__ import annotations

import io
import os
import threading

from bus_containers.controllers import run
from bus_containers.options import RunOptions
from bus_containers.render import Invocation, Output


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeClient:
    def __init__(self):
        self.stdin = bytearray()
        self.stdin_done = threading.Event()
        self.follow_kwargs = {}

    def upload_workspace(self, path, on_progress=None):
        return {"sha256": "ab" * 32, "files": 2, "bytes": 10, "size": 3072, "uploaded": True,
                "base_commit": None, "dirty": None, "git_prefix": "", "skipped": ["f: a FIFO"]}

    def follow_run(self, command, **kwargs):
        self.follow_kwargs = kwargs
        yield {"event": "created", "run": {"id": "run_abc", "status": "running"}}
        assert self.stdin_done.wait(10), "stdin was not sent while the run was followed"
        yield {"stream": "stdout", "offset": 0, "data": b"ok\n"}
        yield {"event": "end", "status": "succeeded", "exit_code": 0,
               "run": {"id": "run_abc", "status": "succeeded", "exit_code": 0}}

    def send_stdin(self, run_id, chunks, deadline=None):
        for chunk in chunks:
            self.stdin += chunk
        self.stdin_done.set()

    def workspace_diff(self, run_id):
        return b"diff --git a/x b/x\n+1\ndiff --git a/y b/y\n+2\n"


def test_run_with_stdin_and_workspace(tmp_path):
    data = os.urandom(300_000)
    read_end, write_end = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(write_end, data), os.close(write_end)))
    writer.start()
    client, out_stream, err = FakeClient(), io.StringIO(), Tty()
    out = Output(out=out_stream, err=err, invocation=Invocation(prog="bus containers"))
    code = run(RunOptions(["cat"], interactive=True, workspace=str(tmp_path),
                          stdin_fd=read_end), client, out)
    writer.join()
    os.close(read_end)
    assert code == 0
    assert bytes(client.stdin) == data
    assert client.follow_kwargs["stdin"] is True
    assert client.follow_kwargs["workspace"]["sha256"] == "ab" * 32
    # (the progress line's erase sequences come first on a terminal)
    lines = err.getvalue().replace("\x1b[K", "").replace("\r", "\n").splitlines()
    assert "warning: not sent: f: a FIFO" in lines
    assert lines[-1] == "2 files changed; see: bus containers diff run_abc | git apply"


def test_no_summary_when_stderr_is_not_a_terminal(tmp_path):
    client, err = FakeClient(), io.StringIO()
    client.stdin_done.set()
    out = Output(out=io.StringIO(), err=err)
    assert run(RunOptions(["true"], workspace=str(tmp_path)), client, out) == 0
    assert "changed" not in err.getvalue()
    assert client.follow_kwargs["stdin"] is False


def test_upload_progress_only_after_a_second_and_only_on_a_terminal(monkeypatch):
    from bus_containers import render

    now = [100.0]
    monkeypatch.setattr(render.time, "monotonic", lambda: now[0])
    err = Tty()
    progress = Output(err=err).upload_progress()
    progress.update(1_000_000, 4_000_000)  # under a second: nothing
    assert err.getvalue() == ""
    now[0] += 1.5
    progress.update(2_000_000, 4_000_000)
    assert "sending workspace 50% (1.9 MiB of 3.8 MiB)" in err.getvalue()
    progress.stop()
    assert err.getvalue().endswith("\r\x1b[K")  # erased at the end
    piped = io.StringIO()
    quiet = Output(err=piped).upload_progress()
    now[0] += 5
    quiet.update(1, 2)
    assert piped.getvalue() == ""


def test_quiet_says_nothing_of_the_workspace_but_its_warnings(tmp_path):
    client, err = FakeClient(), Tty()
    client.stdin_done.set()
    out = Output(out=io.StringIO(), err=err)
    assert run(RunOptions(["true"], workspace=str(tmp_path), quiet=True), client, out) == 0
    assert err.getvalue() == "warning: not sent: f: a FIFO\n"


def test_sizes_in_one_unit_system_and_counts_in_words():
    from bus_containers.render import human_bytes, workspace_text

    assert [human_bytes(n) for n in (2, 1023, 1024, 100_000, 150_000, 5 << 20, 3 << 30)] == [
        "2 B", "1023 B", "1.0 KiB", "97.7 KiB", "146.5 KiB", "5.0 MiB", "3.0 GiB"]
    err = io.StringIO()
    Output(err=err).workspace_sent(".", {"files": 1, "bytes": 2, "uploaded": True})
    assert err.getvalue() == "Workspace . (1 file, 2 B): sent\n"
    assert workspace_text({"sha256": "ab" * 32, "files": 3, "bytes": 2048,
                           "base_commit": "3f2a9c1e07b4aa", "dirty": True}) == (
        "3 files, 2.0 KiB; git 3f2a9c1e07b4 + uncommitted changes")


def test_show_prints_the_workspace_readably_not_as_json():
    out = io.StringIO()
    Output(out=out).run_detail({"id": "run_abc", "status": "succeeded",
                                "workspace": {"sha256": "ab" * 32, "files": 2, "bytes": 10,
                                              "base_commit": "c" * 40, "dirty": False}})
    line = next(x for x in out.getvalue().splitlines() if x.startswith("Workspace:"))
    assert line.split(":", 1)[1].strip() == "2 files, 10 B; git cccccccccccc, clean"
