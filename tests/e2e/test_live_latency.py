"""Live means live (issue 13), end to end: the CLI as a real process against one real
emulator. These pin the mechanisms, not timings: output is streamed while the run still
goes, `wait` holds one request open instead of polling, lists carry no output.
"""

from __future__ import annotations

import json
import signal
import subprocess
import uuid

import pytest
import requests

from tests.support.cli import BIN, clean_env, run_cli
from tests.support.emulator import module_emulator

pytestmark = pytest.mark.e2e

CONFIG = """
[emulator]
max_wait_seconds = 30
"""


emu = module_emulator("emu-live", CONFIG)


@pytest.fixture
def account(emu):
    token = emu.token(f"live-{uuid.uuid4()}")
    env = clean_env(BUS_AI_API_URL=emu.url, BUS_AI_TOKEN=token)
    return env, token


def _api(emu, token, method, path, headers=(), **kw):
    return requests.request(method, emu.api(path), headers={**emu.auth(token), **dict(headers)},
                            timeout=30, **kw)


def _only_run_id(emu, token) -> str:
    runs = _api(emu, token, "GET", "/runs").json()["runs"]
    assert len(runs) == 1, runs
    return runs[0]["id"]


def test_output_is_streamed_while_the_run_still_goes(emu, account):
    env, token = account
    proc = subprocess.Popen([str(BIN / "bus-containers"), "run", "--", "sh", "-c",
                             "echo a; sleep 30"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"a\n"
        run_id = _only_run_id(emu, token)
        # The first byte came while the run goes on, through the open logs stream.
        assert _api(emu, token, "GET", f"/runs/{run_id}").json()["status"] == "running"
        assert emu.attempts("GET", f"/api/v1/containers/runs/{run_id}/logs") == 1
        proc.send_signal(signal.SIGINT)  # detach
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130 and run_id in err.decode(), err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert _api(emu, token, "DELETE", f"/runs/{run_id}").status_code == 204


def test_wait_holds_one_request_open_instead_of_polling(emu, account):
    env, token = account
    created = run_cli(["bus-containers", "run", "--detach", "--", "sh", "-c",
                       "sleep 4; exit 3"], env=env, secrets=(token,))
    run_id = created.stdout.strip()
    waited = run_cli(["bus-containers", "wait", run_id], env=env, secrets=(token,))
    assert waited.code == 3, waited.stderr
    # Polling with backoff from 0.5 s asks 4-5 times in 4 s (at 0, 0.5, 1.5, 3.5, 7.5 s);
    # a long-poll asks once (twice if the run's end and the hold's end cross).
    assert emu.attempts("GET", f"/api/v1/containers/runs/{run_id}") <= 2
def test_a_list_over_large_runs_carries_no_output_and_show_still_prints_it(emu, account):
    env, token = account
    r = _api(emu, token, "POST", "/runs", headers={"Prefer": "wait=20"},
             json={"profile": "codex", "command": ["sh", "-c", "yes abcdefgh | head -c 300000"]})
    assert r.status_code == 201, r.text
    listed = run_cli(["bus-containers", "runs", "--json"], env=env, secrets=(token,))
    assert listed.code == 0, listed.stderr
    [summary] = json.loads(listed.stdout)
    assert "stdout" not in summary and "stderr" not in summary
    assert summary["output_bytes"] == 300000
    shown = run_cli(["bus-containers", "show", summary["id"]], env=env, secrets=(token,))
    assert shown.code == 0 and "abcdefgh\n" * 10 in shown.stdout
