"""Issue 11 end to end: `usage`, `cancel`, `logs --tail/--since/-t`, `runs -q/--all` and
completion, as real CLI processes against one real emulator process (module-scoped: each
test uses its own account, so none sees another's runs)."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import threading
import time
import uuid
from datetime import datetime

import pytest
import requests

from tests.support.cli import BIN, SCOPES, clean_env, run_cli
from tests.support.emulator import alive, module_emulator

pytestmark = pytest.mark.e2e

CONFIG = """
[plans.unbilled]
billing = false
"""


emu = module_emulator("everyday", CONFIG)


class Account:
    """One fresh account: its env (token in $BUS_AI_TOKEN) and `cli(...)`."""

    def __init__(self, emu, tmp_path):
        self.emu = emu
        self.sub = str(uuid.uuid4())
        self.token = emu.token(self.sub, scope=SCOPES)
        self.env = clean_env(BUS_AI_TOKEN=self.token, BUS_AI_API_URL=emu.url,
                             BUS_CONFIG_DIR=str(tmp_path / "cfg"))

    def cli(self, *args: str, timeout: float = 60):
        return run_cli(["bus-containers", *args], env=self.env, secrets=(self.token,),
                       timeout=timeout)

    def api(self, method: str, path: str, **kw) -> requests.Response:
        headers = {**self.emu.auth(self.token), **kw.pop("headers", {})}
        return requests.request(method, self.emu.api(path), timeout=30, headers=headers, **kw)

    def finished_run(self, command: list[str]) -> dict:
        """A run made through the API (cheaper than a CLI process), once it has finished."""
        created = self.api("POST", "/runs", json={"profile": "codex", "command": command},
                           headers={"Prefer": "wait=20"})
        assert created.status_code == 201, created.text
        return created.json()

    def wait_for_output(self, run_id: str, want: bytes) -> None:
        """Block (on the follow stream, no polling) until the run has printed `want`."""
        seen = b""
        with self.api("GET", f"/runs/{run_id}/logs", params={"follow": "true"},
                      stream=True) as r:
            for line in r.iter_lines():
                event = json.loads(line)
                seen += base64.b64decode(event.get("data_b64", ""))
                if want in seen:
                    return
        raise AssertionError(f"the run ended without printing {want!r}: {seen!r}")


@pytest.fixture
def account(emu, tmp_path):
    return Account(emu, tmp_path)


def _time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -- usage -------------------------------------------------------------------------------------

def test_usage_shows_three_more_runs_and_their_run_seconds(account):
    before = account.cli("usage", "--json")
    assert before.code == 0, before.stderr
    before = json.loads(before.stdout)
    runs = [account.finished_run(["sleep", "0.2"]) for _ in range(3)]
    after = json.loads(account.cli("usage", "--json").stdout)
    assert after["used"]["runs_per_period"] == before["used"]["runs_per_period"] + 3
    metered = sum(r["usage"]["run_seconds"] for r in runs)
    assert metered >= 0.6
    gained = after["used"]["run_seconds_per_period"] - before["used"]["run_seconds_per_period"]
    assert abs(gained - metered) < 0.01
    human = account.cli("usage")
    assert human.code == 0 and human.stderr == ""
    assert re.search(r"^runs per period\s+3\s+unlimited", human.stdout, re.M), human.stdout
    assert re.search(r"^Billing:\s+active$", human.stdout, re.M)


def test_usage_without_billing_is_exit_5_with_guidance(account):
    account.emu.set_plan(account.sub, "unbilled")
    human = account.cli("usage")
    assert human.code == 5
    assert "Plan:     unbilled" in human.stdout  # the plan is still shown
    assert human.stderr.startswith("Error: billing is not set up")
    assert f"{account.emu.url}/billing" in human.stderr
    as_json = account.cli("usage", "--json")
    assert as_json.code == 5
    assert json.loads(as_json.stdout)["billing"]["status"] == "required"
    error = json.loads(as_json.stderr)["error"]
    assert (error["code"], error["exit_code"]) == ("billing_required", 5)
    assert error["url"].endswith("/billing") and error["guidance"]


def test_usage_with_an_old_token_without_billing_read(account):
    account.env["BUS_AI_TOKEN"] = account.emu.token(
        account.sub, scope="container:read container:run container:delete")
    got = run_cli(["bus-containers", "usage"], env=account.env)
    assert got.code == 4
    assert "billing:read" in got.stderr and "$BUS_AI_TOKEN" in got.stderr
    assert 'auth token --scope "container:read container:run container:delete billing:read"' \
        in got.stderr


# -- cancel ------------------------------------------------------------------------------------

def _sleepers(emu) -> set[int]:
    out = set()
    for pid in emu.descendants():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0")[0].endswith(b"sleep"):
                    out.add(pid)
        except OSError:
            pass
    return out


def test_cancel_stops_a_sleep_keeps_its_logs_and_leaves_finished_runs_alone(account, tmp_path):
    before = _sleepers(account.emu)
    created = account.cli("run", "--detach", "-q", "--", "sh", "-c",
                          "echo started; exec sleep 60")
    assert created.code == 0 and created.stderr == ""
    run_id = created.stdout.strip()
    account.wait_for_output(run_id, b"started\n")
    # "started" is written before `exec sleep` replaces the shell: look for the sleep with
    # a deadline rather than at once (a loaded machine showed the shell still there)
    deadline = time.monotonic() + 10
    while not (new := _sleepers(account.emu) - before) and time.monotonic() < deadline:
        time.sleep(0.02)
    mine = {pid: start for pid, start in account.emu.descendants().items() if pid in new}
    assert mine
    cancelled = account.cli("cancel", run_id)
    assert (cancelled.code, cancelled.stderr) == (0, f"Cancelled {run_id}\n")
    assert not alive(mine), "the run's sleep outlived its cancel"
    # within 2 s of the request: the server's own timing (the CLI's start-up is not the
    # cancel's, and a loaded CI machine would make a wall-clock bound flaky)
    assert _server_ms(account.emu, f"POST /api/v1/containers/runs/{run_id}/cancel") < 2000
    assert account.api("GET", f"/runs/{run_id}").json()["status"] == "cancelled"
    logs = account.cli("logs", run_id)
    assert (logs.code, logs.stdout) == (0, "started\n")
    # a finished run: left as it is, and said so
    finished = account.finished_run(["true"])
    again = account.cli("cancel", "--json", finished["id"])
    assert again.code == 0
    assert json.loads(again.stdout) == {"cancelled": [], "finished": [finished["id"]],
                                        "not_found": []}
    after = account.api("GET", f"/runs/{finished['id']}").json()
    assert (after["status"], after["finished_at"]) == ("succeeded", finished["finished_at"])
    # another account's run is not found, and stays as it was
    other = Account(account.emu, tmp_path)
    stranger = other.cli("cancel", finished["id"])
    assert (stranger.code, stranger.stderr) == (3, f"Not found: {finished['id']}\n")


def _server_ms(emu, request: str) -> float:
    """How long the emulator took to answer `request` (its request log line, written as
    the answer is closed: looked for with a deadline)."""
    pattern = re.compile(re.escape(request) + r" 200 ([\d.]+)ms")
    deadline = time.monotonic() + 10
    while True:
        found = pattern.findall(emu.log_tail(1 << 20))
        if found:
            return float(found[-1])
        assert time.monotonic() < deadline, f"no log line for {request}"
        time.sleep(0.05)


# -- logs --tail, --since, -t ------------------------------------------------------------------

FIVE_LINES = "for i in 1 2 3 4 5; do echo line$i; sleep 0.15; done"


def test_logs_tail_timestamps_and_since(account):
    run_id = account.finished_run(["sh", "-c", FIVE_LINES])["id"]
    tail = account.cli("logs", "--tail", "2", "-t", run_id)
    assert tail.code == 0
    lines = tail.stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["line4", "line5"]
    stamps = [_time(line.split(" ", 1)[0]) for line in lines]
    assert stamps[0] < stamps[1] <= time.time() + 1
    every = account.cli("logs", "-t", run_id).stdout.splitlines()
    third = every[2].split(" ", 1)[0]
    since = account.cli("logs", "--since", third, run_id)
    assert since.stdout == "line3\nline4\nline5\n"
    assert account.cli("logs", "--since", "10m", run_id).stdout.count("\n") == 5
    bad = account.cli("logs", "--since", "yesterday", run_id)
    assert bad.code == 2 and "10m" in bad.stderr


def test_logs_tail_and_since_with_follow(account):
    """Two followers join a run that has printed a, b, c and waits on its stdin: one with
    `--tail 1 -t`, one with `--since <b's time>`. Once both have printed what existed, the
    run is let go (its stdin closed) and both print d and e as they come, then stop."""
    created = account.api("POST", "/runs", json={
        "profile": "codex", "stdin": True,
        "command": ["sh", "-c", "echo a; sleep 0.1; echo b; sleep 0.1; echo c; read x; "
                    "echo d; sleep 0.1; echo e"]})
    assert created.status_code in (201, 202), created.text
    run_id = created.json()["id"]
    account.wait_for_output(run_id, b"c\n")
    b_time = account.cli("logs", "-t", run_id).stdout.splitlines()[1].split(" ", 1)[0]
    followers = {
        "tail": _start(account, "logs", "--follow", "--tail", "1", "-t", run_id),
        "since": _start(account, "logs", "--follow", "--since", b_time, run_id)}
    try:
        first = {name: proc.stdout.readline() for name, proc in followers.items()}
        assert first["tail"].endswith(" c\n") and first["since"] == "b\n"
        released = account.api("PUT", f"/runs/{run_id}/stdin", data=b"go\n",
                               headers={"Content-Type": "application/octet-stream"})
        assert released.status_code == 204, released.text
        # read(), not communicate(): the latter would skip what readline() buffered
        rest = {name: (proc.stdout.read(), proc.stderr.read())
                for name, proc in followers.items()}
        for proc in followers.values():
            proc.wait(30)
    finally:
        for proc in followers.values():
            proc.kill()
            proc.wait()
    assert all(proc.returncode == 0 for proc in followers.values()), rest
    tail = (first["tail"] + rest["tail"][0]).splitlines()
    assert [line.split(" ", 1)[1] for line in tail] == ["c", "d", "e"]
    times = [_time(line.split(" ", 1)[0]) for line in tail]
    assert times[0] < times[1] < times[2]
    assert first["since"] + rest["since"][0] == "b\nc\nd\ne\n"


def _start(account: Account, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([str(BIN / "bus-containers"), *args], env=account.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killer = threading.Timer(60, proc.kill)  # a hung follower fails the test, not the suite
    killer.daemon = True
    killer.start()
    return proc


# -- runs -q, --all ----------------------------------------------------------------------------

def test_runs_quiet_through_xargs_deletes_exactly_the_listed_runs(account):
    failed = set(account.emu.seed(account.sub, 3, status="failed"))
    kept = set(account.emu.seed(account.sub, 2, status="succeeded"))
    pipeline = (f"{BIN}/bus-containers runs -q --status failed | "
                f"xargs {BIN}/bus-containers delete")
    done = subprocess.run(["sh", "-c", pipeline], env=account.env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert {line.split()[-1] for line in done.stderr.splitlines()} == failed
    assert set(account.cli("runs", "-q").stdout.split()) == kept


def test_runs_all_returns_every_page(account):
    seeded = account.emu.seed(account.sub, 250)
    every = account.cli("runs", "--all", "-q")
    assert every.code == 0 and every.stdout.split() == list(reversed(seeded))
    assert len(account.cli("runs", "-q").stdout.split()) == 20
    assert len(json.loads(account.cli("runs", "--all", "--json").stdout)) == 250
    # in a pipe: no footer, ISO times
    page = account.cli("runs", "--limit", "5")
    assert page.stderr == "" and len(page.stdout.splitlines()) == 6
    assert re.search(r"\d{4}-\d\d-\d\dT", page.stdout)
    both = account.cli("runs", "--all", "--limit", "5")
    assert both.code == 2


# -- completion --------------------------------------------------------------------------------

def _complete(env: dict, words: str, timeout: float = 30) -> tuple[str, float]:
    env = {**env, "_BUS_CONTAINERS_COMPLETE": "bash_complete", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
    started = time.monotonic()
    done = subprocess.run([str(BIN / "bus-containers")], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return done.stdout, time.monotonic() - started


def test_completion_offers_the_accounts_run_ids(account):
    ids = account.emu.seed(account.sub, 3)
    out, _ = _complete(account.env, "bus-containers show ")
    assert {line.split(",", 1)[1] for line in out.splitlines()} == set(ids)
    out, _ = _complete(account.env, f"bus-containers cancel {ids[0][:-2]}")
    assert out.splitlines() == [f"plain,{ids[0]}"]
    out, _ = _complete(account.env, "bus-containers runs --status r")
    assert out.splitlines() == ["plain,running"]
    # under the reference host, through its own completion variable
    host = subprocess.run([str(BIN / "bus")], capture_output=True, text=True, timeout=30,
                          env={**account.env, "_BUS_COMPLETE": "bash_complete",
                               "COMP_WORDS": "bus containers logs ", "COMP_CWORD": "3"})
    assert {line.split(",", 1)[1] for line in host.stdout.splitlines()} == set(ids)


def test_completion_against_a_silent_server_gives_up_quietly(account):
    """A server that accepts and never answers: the Tab press comes back within the lookup
    limit, with nothing completed and nothing printed."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        env = {**account.env, "BUS_AI_API_URL": f"http://127.0.0.1:{server.getsockname()[1]}"}
        out, elapsed = _complete(env, "bus-containers show ")
    assert out.strip() == "" and elapsed < 10  # the lookup gives up after 1.5 s
    no_token = {k: v for k, v in account.env.items() if k != "BUS_AI_TOKEN"}
    assert _complete(no_token, "bus-containers show ")[0].strip() == ""


def test_completion_scripts_exist_for_each_shell():
    for shell in ("bash", "zsh", "fish"):
        env = {**os.environ, "_BUS_CONTAINERS_COMPLETE": f"{shell}_source"}
        done = subprocess.run([str(BIN / "bus-containers")], env=env, capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 0 and "_BUS_CONTAINERS_COMPLETE" in done.stdout
