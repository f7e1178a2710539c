"""The run controller with -i and -w, without click or HTTP: stdin reaches send_stdin byte
for byte from a second thread, the workspace goes into the create call, and the one-line
summary comes on a terminal only."""

from __future__ import annotations

import io
import os
import threading

from bus_containers.controllers import RunOptions, run
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
    assert "sending workspace 50% (2.0 MB of 4.0 MB)" in err.getvalue()
    progress.stop()
    assert err.getvalue().endswith("\r\x1b[K")  # erased at the end
    piped = io.StringIO()
    quiet = Output(err=piped).upload_progress()
    now[0] += 5
    quiet.update(1, 2)
    assert piped.getvalue() == ""
