"""Live output end to end (issue 6): the CLI as a real process against the real emulator."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import time

import pytest

from tests.e2e.test_main_job import account
from tests.support.cli import BIN, run_cli

pytestmark = pytest.mark.e2e


def spawn(argv, env, **kw):
    return subprocess.Popen([str(BIN / argv[0]), *argv[1:]], env=env, **kw)


def read_lines_with_times(stream, deadline=30):
    """(seconds since start, line) for each stdout line, read as it arrives."""
    start, lines = time.monotonic(), []
    for line in iter(stream.readline, b""):
        lines.append((time.monotonic() - start, line))
        assert time.monotonic() - start < deadline
    return lines


def test_output_arrives_line_by_line_before_the_run_ends(emulator, tmp_path):
    env, token, _ = account(emulator, tmp_path)
    proc = spawn(["bus", "containers", "run", "--", "sh", "-c",
                  "for i in 1 2 3; do echo $i; sleep 1; done"], env,
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = read_lines_with_times(proc.stdout)
    ended = time.monotonic()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert [line for _, line in lines] == [b"1\n", b"2\n", b"3\n"]
    first, last = lines[0][0], lines[-1][0]
    # Lines printed a second apart arrive spread out, not all at the end. (What the first
    # second prints comes together: the create call may hold on for one second.)
    assert last - first >= 0.8
    assert ended - first >= 0.8
    assert token.encode() not in err and b"Traceback" not in err


def test_a_cut_stream_resumes_with_the_exact_bytes(emulator, tmp_path):
    env, token, _ = account(emulator, tmp_path)
    emulator.add_faults([{"method": "GET", "path_prefix": "/api/v1/containers/runs/run_",
                          "action": "drop_mid", "after_lines": 2, "count": 2}])
    script = "for i in $(seq 1 40); do echo line-$i; sleep 0.05; done"
    got = subprocess.run([str(BIN / "bus"), "containers", "run", "--", "sh", "-c", script],
                         env=env, capture_output=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert got.stdout == b"".join(f"line-{i}\n".encode() for i in range(1, 41))
    assert emulator.stats()["faults_pending"] == 0  # both cuts really happened


def test_ctrl_c_detaches_and_logs_follow_shows_the_rest(emulator, tmp_path):
    env, token, _ = account(emulator, tmp_path)
    proc = spawn(["bus", "containers", "run", "--", "sh", "-c",
                  "echo first; sleep 2; echo second"], env,
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"first\n"  # the run is live: now interrupt us
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    text = err.decode()
    run_id = re.search(r"Detached from run (run_[0-9a-f]+)", text).group(1)
    assert f"bus containers logs --follow {run_id}" in text
    assert f"bus containers delete {run_id}" in text
    assert "Traceback" not in text

    followed = run_cli(["bus", "containers", "logs", "--follow", run_id], env=env,
                       secrets=(token,))
    assert (followed.code, followed.stdout) == (0, "first\nsecond\n")
    shown = run_cli(["bus", "containers", "show", "--json", run_id], env=env, secrets=(token,))
    assert json.loads(shown.stdout)["status"] == "succeeded"


def test_logs_with_offset_and_json(emulator, tmp_path):
    env, token, _ = account(emulator, tmp_path)
    created = run_cli(["bus", "containers", "run", "--json", "--", "sh", "-c",
                       "printf hello; printf oops >&2"], env=env, secrets=(token,))
    run_id = json.loads(created.stdout)["id"]
    tail = run_cli(["bus", "containers", "logs", "--offset", "2", run_id], env=env,
                   secrets=(token,))
    assert (tail.code, tail.stdout) == (0, "llo")
    assert "oops" in tail.stderr
    doc = json.loads(run_cli(["bus", "containers", "logs", "--json", run_id], env=env,
                             secrets=(token,)).stdout)
    assert doc["stdout"] == "hello" and doc["stderr"] == "oops"
    assert doc["finished"] is True and doc["next_offset"] == 9
    missing = run_cli(["bus", "containers", "logs", "run_000000000000000000000000"], env=env,
                      secrets=(token,))
    assert missing.code == 3


def test_wait_returns_the_runs_exit_code(emulator, tmp_path):
    env, token, _ = account(emulator, tmp_path)
    run_id = run_cli(["bus", "containers", "run", "--detach", "--", "sh", "-c",
                      "sleep 1; exit 7"], env=env, secrets=(token,)).stdout.strip()
    waited = run_cli(["bus", "containers", "wait", run_id], env=env, secrets=(token,))
    assert waited.code == 7 and waited.stdout == ""
    slow = run_cli(["bus", "containers", "run", "--detach", "--", "sleep", "30"], env=env,
                   secrets=(token,)).stdout.strip()
    timed_out = run_cli(["bus", "containers", "wait", "--timeout", "1", slow], env=env,
                        secrets=(token,))
    assert timed_out.code == 124 and slow in timed_out.stderr
    run_cli(["bus", "containers", "delete", slow], env=env, secrets=(token,))


def test_rm_leaves_no_run(emulator, tmp_path):
    env, token, _ = account(emulator, tmp_path)
    got = run_cli(["bus", "containers", "run", "--rm", "--", "sh", "-c", "echo bye; exit 3"],
                  env=env, secrets=(token,))
    assert (got.code, got.stdout) == (3, "bye\n")
    listed = run_cli(["bus", "containers", "runs", "--json"], env=env, secrets=(token,))
    assert json.loads(listed.stdout) == []


def test_rm_also_when_our_own_output_fails(emulator, tmp_path):
    env, token, _ = account(emulator, tmp_path)
    proc = spawn(["bus", "containers", "run", "--rm", "--", "sh", "-c",
                  "echo one; sleep 1; echo two; sleep 1; echo three"], env,
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"one\n"
    proc.stdout.close()  # the reader goes away, like `| head -1`
    _, err = proc.communicate(timeout=30)
    assert b"Traceback" not in err
    listed = run_cli(["bus", "containers", "runs", "--json"], env=env, secrets=(token,))
    assert json.loads(listed.stdout) == []


def test_binary_and_multibyte_output_arrive_intact(emulator, tmp_path):
    env, token, _ = account(emulator, tmp_path)
    payload = "h\\303\\251llo \\342\\202\\254 \\360\\237\\230\\200 \\000\\377\\376 end"
    expected = "héllo € 😀 ".encode() + b"\x00\xff\xfe end"
    got = subprocess.run([str(BIN / "bus"), "containers", "run", "--", "sh", "-c",
                          f"printf '{payload}'"], env=env, capture_output=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert got.stdout == expected
    # the same through a stream that outlives the create call (streamed, not in the POST)
    slow = subprocess.run([str(BIN / "bus"), "containers", "run", "--", "sh", "-c",
                           f"sleep 1.5; printf '{payload}' >&2"], env=env,
                          capture_output=True, timeout=60)
    assert slow.returncode == 0 and expected in slow.stderr


def _read_pty(fd, until_exit: subprocess.Popen, limit=30) -> bytes:
    data, deadline = b"", time.monotonic() + limit
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        elif until_exit.poll() is not None:
            break
    return data


def test_progress_line_on_a_terminal_never_in_a_pipe(emulator, tmp_path):
    env, token, _ = account(emulator, tmp_path)
    run_id = run_cli(["bus", "containers", "run", "--detach", "--", "sleep", "2"], env=env,
                     secrets=(token,)).stdout.strip()
    master, slave = pty.openpty()
    proc = spawn(["bus", "containers", "wait", run_id], env, stdout=subprocess.PIPE,
                 stderr=slave)
    os.close(slave)
    seen = _read_pty(master, proc)
    proc.wait(30)
    os.close(master)
    assert proc.returncode == 0
    assert b"\x1b[K" in seen and re.search(rb"(running|waiting|queued)\s+\d+s", seen)

    piped = run_cli(["bus", "containers", "wait", run_id], env=env, secrets=(token,))
    assert piped.code == 0 and "\x1b[K" not in piped.stderr and "\r" not in piped.stderr


@pytest.mark.parametrize("json_flag", [False, True], ids=["human", "json"])
def test_ctrl_c_while_the_create_call_is_held_still_names_the_run(emulator, tmp_path,
                                                                  json_flag):
    """The create call may be held a second (Prefer: wait): a Ctrl-C then still gets the
    run's id once the answer arrives, and the run keeps going. Issue 12 bug 2: the same
    with --json (it used to say only "a run may have been created")."""
    env, token, _ = account(emulator, tmp_path)
    proc = spawn(["bus-containers", "run", *(["--json"] if json_flag else []), "--",
                  "sh", "-c", "sleep 3"], env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    path = "/api/v1/containers/runs"
    deadline = time.monotonic() + 10
    while emulator.attempts("POST", path) < 1:  # the create call is on its way
        assert time.monotonic() < deadline
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    text = err.decode()
    assert proc.returncode == 130, text
    if json_flag:
        error = json.loads(text)["error"]  # the one JSON document on stderr
        assert error["code"] == "interrupted" and error["exit_code"] == 130
        run_id = error["run_id"]
        assert f"Detached from run {run_id}" in error["message"]
        text = error["guidance"]
    else:
        run_id = re.search(r"Detached from run (run_[0-9a-f]+)", text).group(1)
    assert f"bus-containers delete {run_id}" in text and "Traceback" not in text
    shown = run_cli(["bus-containers", "show", "--json", run_id], env=env, secrets=(token,))
    assert json.loads(shown.stdout)["status"] in ("running", "succeeded")


def test_a_quick_run_prints_stdout_and_stderr_in_the_order_written(emulator, tmp_path):
    """Issue 12 bug 1: a run that ends within the create call used to print all of its
    stdout, then all of its stderr."""
    env, _, _ = account(emulator, tmp_path)
    script = "for i in 1 2 3; do echo out$i; sleep 0.1; echo err$i >&2; sleep 0.1; done"
    got = subprocess.run([str(BIN / "bus-containers"), "run", "--", "sh", "-c", script],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
    lines = [line for line in got.stdout.decode().splitlines()
             if not line.startswith("Run run_")]
    assert got.returncode == 0, got.stdout
    assert lines == ["out1", "err1", "out2", "err2", "out3", "err3"]


@pytest.mark.parametrize("script", ["seq 1 100000", "sleep 1.2; seq 1 100000"],
                         ids=["quick", "streamed"])
def test_a_reader_that_goes_away_is_exit_141_on_every_path(emulator, tmp_path, script):
    """Issue 12 bug 6: `run -- seq 1 100000 | head -1` exited 0 when the output came in the
    create answer (a partial write was taken for a full one), 141 when streamed. The
    output is far larger than the pipe's buffer, so the outcome does not depend on timing."""
    env, _, _ = account(emulator, tmp_path)
    proc = spawn(["bus-containers", "run", "--", "sh", "-c", script], env,
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # `head -1` exits
    err = proc.stderr.read()
    proc.wait(timeout=30)
    assert first == b"1\n"
    assert proc.returncode == 141, err
    assert b"Traceback" not in err and b"Error" not in err
