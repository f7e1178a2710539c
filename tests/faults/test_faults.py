"""The CLI against the emulator's fault injection, as real processes (issue 5).

One table, one row per fault: which command meets which fault (docs/emulator.md, "Fault
injection"), and what must happen. Every row checks the exit code, how many requests the
emulator saw, that the wall time stays within `--timeout` + 1 s, the key phrase of the
message, and (in `run_cli`) that no traceback and no token appears. The table is also
docs/reliability.md. One emulator serves the whole module: each row has its own account
and clears the faults and the request counters first.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import pytest

from tests.support.cli import clean_env, run_cli
from tests.support.emulator import start_emulator

pytestmark = pytest.mark.e2e

API = "/api/v1/containers"
STATUS, RUNS = f"{API}/status", f"{API}/runs"
ONE_RUN = f"{API}/runs/{{run}}"      # {run}: a finished run seeded for the row's account
NEW_RUN = f"{API}/runs/{{new}}"      # {new}: whatever run the command created
RUN_ID = r"run_[0-9a-f]{24}"
TIMEOUT = 6  # --timeout of every row unless it says otherwise: 3 retries fit in it


@dataclass
class Row:
    id: str
    argv: list[str]                 # after the program; "{run}" is the seeded run's id
    faults: list[dict[str, Any]]
    code: int
    attempts: dict[str, int]        # "METHOD path" (with {run} / {new}) -> requests seen
    message: str                    # a regex that stderr must contain
    timeout: float = TIMEOUT
    host: bool = False              # through the reference host: `bus containers ...`
    stdout: str | None = None       # exact stdout, when it matters
    runs_after: int | None = None   # runs the account has at the end (idempotent retries)
    debug_attempts: int | None = None  # attempts the client logged with --debug
    json: bool = False
    min_elapsed: float = 0.0        # a Retry-After that must have been waited for


def _where(rule: dict[str, Any], path: str | None) -> dict[str, Any]:
    """`path` exact; a path with {new} (a run created during the row, id unknown yet)
    becomes a prefix and a suffix."""
    if path is not None and "{new}" in path:
        prefix, suffix = path.split("{new}")
        rule["path_prefix"] = prefix
        if suffix:
            rule["path_suffix"] = suffix
    elif path is not None:
        rule["path"] = path
    return rule


def st(status: int, *, path: str = STATUS, method: str = "GET", count: int = 1,
       retry_after: str | None = None, **kw: Any) -> dict[str, Any]:
    rule = {"action": "status", "status": status, "method": method, "count": count, **kw}
    if retry_after is not None:
        rule["retry_after"] = retry_after
    return _where(rule, path)


def act(action: str, *, path: str = STATUS, method: str = "GET", count: int = 1,
        **kw: Any) -> dict[str, Any]:
    return _where({"action": action, "method": method, "count": count, **kw}, path)


DATE = "{date}"  # an HTTP date 2 s ahead, made when the row's faults are added
FOREVER = -1
RUN_CMD = ["run", "--json", "--", "sh", "-c", "printf ok"]

ROWS = [
    # -- 5xx, without and with Retry-After (seconds, HTTP date), transient and persistent
    Row("500-transient", ["status"], [st(500, count=2)], 0, {f"GET {STATUS}": 3}, "",
        stdout=None),
    Row("500-persistent", ["status"], [st(500, count=FOREVER)], 1, {f"GET {STATUS}": 4},
        r"server error from \S+/status \(HTTP 500\)"),
    Row("500-retry-after-date-persistent", ["runs"], [st(500, path=RUNS, count=FOREVER,
                                                        retry_after=DATE)],
        1, {f"GET {RUNS}": 4}, r"HTTP 500"),
    Row("502-transient-retry-after-1", ["status"], [st(502, retry_after="1")], 0,
        {f"GET {STATUS}": 2}, "", min_elapsed=1.0),
    Row("502-persistent-retry-after-1", ["show", "{run}"],
        [st(502, path=ONE_RUN, count=FOREVER, retry_after="1")], 1, {f"GET {ONE_RUN}": 4},
        r"HTTP 502", min_elapsed=3.0),
    Row("503-transient-retry-after-date", ["status"], [st(503, retry_after=DATE)], 0,
        {f"GET {STATUS}": 2}, "", min_elapsed=0.9),  # the date has whole seconds
    Row("503-persistent", ["delete", "{run}"],
        [st(503, path=ONE_RUN, method="DELETE", count=FOREVER)], 1, {f"DELETE {ONE_RUN}": 4},
        r"HTTP 503"),
    Row("503-retry-after-past-the-timeout", ["status"], [st(503, retry_after="25")], 1,
        {f"GET {STATUS}": 1}, r"HTTP 503.*gave up after 1 attempt"),
    Row("504-transient-3-times", ["runs"], [st(504, path=RUNS, count=3)], 0,
        {f"GET {RUNS}": 4}, ""),
    Row("504-persistent-retry-after-date", ["status"],
        [st(504, count=FOREVER, retry_after=DATE)], 1, {f"GET {STATUS}": 4}, r"HTTP 504"),
    Row("503-transient-on-create", RUN_CMD, [st(503, path=RUNS, method="POST", count=2)], 0,
        {f"POST {RUNS}": 3}, "", runs_after=1),
    Row("500-persistent-on-create", RUN_CMD,
        [st(500, path=RUNS, method="POST", count=FOREVER, retry_after="1")], 1,
        {f"POST {RUNS}": 4}, r'"code": "server_error"', runs_after=0, json=True,
        min_elapsed=3.0),
    Row("503-transient-on-delete", ["delete", "{run}"],
        [st(503, path=ONE_RUN, method="DELETE", retry_after="1")], 0,
        {f"DELETE {ONE_RUN}": 2}, r"Deleted run_"),
    Row("502-transient-via-host", ["run", "--", "printf", "ok"],
        [st(502, path=RUNS, method="POST")], 0, {f"POST {RUNS}": 2}, "Run run_",
        host=True, stdout="ok", runs_after=1),
    # -- 429 rate_limited: retried, then success; for ever: exit 5
    Row("429-transient-retry-after-1", ["status"], [st(429, retry_after="1")], 0,
        {f"GET {STATUS}": 2}, "", min_elapsed=1.0),
    Row("429-persistent", ["runs"], [st(429, path=RUNS, count=FOREVER)], 5, {f"GET {RUNS}": 4},
        r"rate limited by \S+/runs"),
    Row("429-persistent-on-create", RUN_CMD,
        [st(429, path=RUNS, method="POST", count=FOREVER, retry_after=DATE)], 5,
        {f"POST {RUNS}": 4}, r'"code": "rate_limited"', runs_after=0, json=True),
    Row("429-retry-after-past-the-cap", ["status"], [st(429, retry_after="120")], 5,
        {f"GET {STATUS}": 1}, r"rate limited.*gave up after 1 attempt"),
    # -- the connection: refused, dropped before the answer, cut in the middle of it
    # A refused loopback port is a stopped server, not a blip: one quick retry, then the
    # hint to start the emulator.
    Row("connection-refused", ["status", "--api-url", "{closed}", "--debug"], [], 1, {},
        r"cannot reach http://127\.0\.0\.1:\d+/api/v1/containers/status.*"
        r"bus-containers-emulator serve", debug_attempts=2),
    Row("drop-transient", ["show", "{run}"], [act("drop", path=ONE_RUN)], 0,
        {f"GET {ONE_RUN}": 2}, ""),
    Row("drop-persistent", ["status"], [act("drop", count=FOREVER)], 1, {f"GET {STATUS}": 4},
        r"the connection to \S+/status broke before the answer was complete: Remote end "
        r"closed connection without response"),
    Row("drop-after-create-is-one-run", RUN_CMD,
        [act("drop", path=RUNS, method="POST", when="after")], 0, {f"POST {RUNS}": 2}, "",
        runs_after=1),
    Row("drop-after-delete-still-deleted", ["delete", "{run}"],
        [act("drop", path=ONE_RUN, method="DELETE", when="after")], 0,
        {f"DELETE {ONE_RUN}": 2}, r"Deleted run_"),
    Row("drop-mid-transient", ["runs"], [act("drop_mid", path=RUNS)], 0, {f"GET {RUNS}": 2},
        ""),
    Row("drop-mid-persistent", ["status"], [act("drop_mid", count=FOREVER)], 1,
        {f"GET {STATUS}": 4},
        r"the connection to \S+/status broke before the answer was complete: IncompleteRead"),
    Row("drop-mid-on-create", RUN_CMD, [act("drop_mid", path=RUNS, method="POST")], 0,
        {f"POST {RUNS}": 2}, "", runs_after=1),
    Row("drop-mid-log-stream-resumes", ["run", "--", "sh", "-c", "printf a; sleep 1.5; printf b"],
        [act("drop_mid", path=f"{NEW_RUN}/logs", after_lines=0)], 0,
        {f"POST {RUNS}": 1, f"GET {NEW_RUN}/logs": 2}, "Run run_", host=True, stdout="ab"),
    # -- slower than --timeout
    Row("slower-than-the-timeout", ["status"], [act("delay", seconds=6)], 124,
        {f"GET {STATUS}": 1}, r"no answer from \S+/status within the timeout of 3 s",
        timeout=3),
    Row("slower-than-the-timeout-on-show", ["show", "{run}"],
        [act("delay", path=ONE_RUN, seconds=6)], 124, {f"GET {ONE_RUN}": 1},
        r"no answer from \S+/runs/run_\w+ within", timeout=3),
    Row("slow-but-within-the-timeout", ["status"], [act("delay", seconds=1.5)], 0,
        {f"GET {STATUS}": 1}, "", timeout=3),
    # -- bodies that are not what they should be
    Row("html-200", ["status"], [act("html")], 1, {f"GET {STATUS}": 1},
        r"unexpected response from \S+/status \(HTTP 200\)"),
    Row("html-502-from-a-proxy-transient", ["runs"], [act("html", path=RUNS, status=502)], 0,
        {f"GET {RUNS}": 2}, ""),
    Row("html-on-show", ["show", "{run}"], [act("html", path=ONE_RUN)], 1,
        {f"GET {ONE_RUN}": 1}, r"unexpected response from \S+/runs/run_\w+ \(HTTP 200\)"),
    Row("truncated-json", ["status"], [act("truncated_json")], 1, {f"GET {STATUS}": 1},
        r"unexpected response from \S+/status \(HTTP 200\)"),
    Row("truncated-json-on-runs", ["runs"], [act("truncated_json", path=RUNS)], 1,
        {f"GET {RUNS}": 1}, r"unexpected response from \S+/runs \(HTTP 200\)"),
    Row("truncated-json-on-create", RUN_CMD, [act("truncated_json", path=RUNS, method="POST")],
        1, {f"POST {RUNS}": 1}, r"unexpected response from \S+/runs \(HTTP 200\)", json=True),
    Row("wrong-shape", ["status"], [act("wrong_shape")], 1, {f"GET {STATUS}": 1},
        r"unexpected response from \S+/status \(HTTP 200\): not a status object"),
    Row("wrong-shape-on-runs", ["runs"],
        [act("wrong_shape", path=RUNS, body={"runs": [{"id": 7}], "next_cursor": None})], 1,
        {f"GET {RUNS}": 1}, r"unexpected response from \S+/runs \(HTTP 200\): not a run"),
    Row("wrong-shape-on-show", ["show", "{run}"], [act("wrong_shape", path=ONE_RUN, body=[1])],
        1, {f"GET {ONE_RUN}": 1}, r"not a run object"),
    Row("wrong-shape-on-create", RUN_CMD,
        [act("wrong_shape", path=RUNS, method="POST", body={"id": "../x", "status": "queued"})],
        1, {f"POST {RUNS}": 1}, r"unexpected response from \S+/runs", json=True),
    Row("huge-50MB", ["status"], [act("huge")], 1, {f"GET {STATUS}": 1},
        r"unexpected response from \S+/status \(HTTP 200\)"),
    Row("huge-50MB-on-runs", ["runs"], [act("huge", path=RUNS)], 1, {f"GET {RUNS}": 1},
        r"unexpected response from \S+/runs \(HTTP 200\)"),
    # -- a redirect to another origin: never followed (the token stays home)
    Row("redirect-302-elsewhere", ["status"], [act("redirect", location="{elsewhere}")], 1,
        {f"GET {STATUS}": 1}, r"unexpected response from \S+/status \(HTTP 302\)"),
    Row("redirect-307-on-create", RUN_CMD,
        [act("redirect", path=RUNS, method="POST", status=307, location="{elsewhere}")], 1,
        {f"POST {RUNS}": 1}, r"HTTP 307", runs_after=0, json=True),
    Row("redirect-301-on-delete-via-host", ["delete", "{run}"],
        [act("redirect", path=ONE_RUN, method="DELETE", status=301, location="{elsewhere}")],
        1, {f"DELETE {ONE_RUN}": 1}, r"HTTP 301", host=True),
    # -- 202 for ever: the CLI's timeout ends it, naming the run (which keeps going)
    Row("pending-forever", RUN_CMD,
        [act("pending", path=RUNS, method="POST", count=FOREVER),
         act("pending", path=NEW_RUN, count=FOREVER)], 124,
        {f"POST {RUNS}": 1, f"GET {NEW_RUN}": "polls"},
        r"run run_\w+ did not finish within the timeout of 4 s", timeout=4, json=True),
    Row("pending-forever-live-no-logs-endpoint", ["run", "--", "true"],
        [act("status", path=f"{NEW_RUN}/logs", status=404, count=FOREVER),
         act("pending", path=RUNS, method="POST", count=FOREVER),
         act("pending", path=NEW_RUN, count=FOREVER)], 124,
        {f"POST {RUNS}": 1, f"GET {NEW_RUN}/logs": 1, f"GET {NEW_RUN}": "polls"},
        r"bus containers delete run_\w+", timeout=4, host=True),
]


# -- running the table ------------------------------------------------------------------------
# Most rows spend their time asleep (backoff, Retry-After, timeouts), so the rows run in
# LANES threads, each lane with its own emulator and its rows one after another: a lane's
# faults and request counters are its current row's alone. The tests then check the outcomes.
LANES = 3


@dataclass
class Outcome:
    code: int = -1
    stdout: str = ""
    stderr: str = ""
    elapsed: float = 0.0
    attempts: dict[str, int] = field(default_factory=dict)
    seeded: str = ""
    argv: list[str] = field(default_factory=list)
    runs_after: int | None = None
    error: BaseException | None = None  # run_cli's own checks (traceback, token) failing


class Listener:
    """A TCP listener on 127.0.0.2 that records every connection: a redirect target that
    must never be reached."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.2", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.2:{self.sock.getsockname()[1]}/elsewhere"
        self.received: list[bytes] = []
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                try:
                    self.received.append(conn.recv(65536) or b"<connected>")
                except OSError:
                    self.received.append(b"<connected>")

    def close(self) -> None:
        self.stopping = True
        self.thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def elsewhere():
    try:
        listener = Listener()
    except OSError:  # no 127.0.0.2 here: the emulator's default target (port 9) then
        yield None
        return
    yield listener
    listener.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, noted, closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_account(emu, tmp_path) -> tuple[dict[str, str], str, str]:
    sub = f"faults-{uuid.uuid4()}"
    token = emu.token(sub)
    config_dir = tmp_path / "config"
    (config_dir / "auth").mkdir(parents=True)
    token_file = config_dir / "auth" / "api-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    return clean_env(BUS_API_BASE_URL=emu.url, BUS_CONFIG_DIR=str(config_dir)), token, sub


def fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        for name, text in names.items():
            value = value.replace("{" + name + "}", text)
        return value
    if isinstance(value, dict):
        return {k: fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, names) for v in value]
    return value


def seen(attempts: dict[str, int], key: str, run: str) -> int:
    """Requests the emulator saw for a "METHOD path" key with {run} / {new} in it."""
    pattern = re.escape(key).replace(re.escape("{run}"), re.escape(run)) \
        .replace(re.escape("{new}"), RUN_ID)
    return sum(n for k, n in attempts.items() if re.fullmatch(pattern, k))


def account_runs(emu, token: str) -> list[str]:
    r = emu.session.get(emu.api("/runs"), params={"limit": 100}, headers=emu.auth(token),
                        timeout=10)
    assert r.status_code == 200, r.text
    return [run["id"] for run in r.json()["runs"]]


def play(row: Row, emu, tmp_path, elsewhere: Listener | None) -> Outcome:
    """Run one row against `emu` (nothing else uses it meanwhile)."""
    out = Outcome()
    env, token, sub = make_account(emu, tmp_path)
    out.seeded = emu.seed(sub, 1)[0] if any("{run}" in a for a in row.argv) else ""
    names = {"run": out.seeded,
             "date": formatdate(time.time() + 2, usegmt=True),
             "elsewhere": elsewhere.url if elsewhere else "http://127.0.0.2:9/elsewhere",
             "closed": f"http://127.0.0.1:{closed_port()}"}
    argv = fill(row.argv, names)
    out.argv = [argv[0], "--timeout", f"{row.timeout:g}", *argv[1:]]  # before run's `--`
    program = ["bus", "containers"] if row.host else ["bus-containers"]
    emu.clear_faults()
    emu.reset_counters()
    if row.faults:
        emu.add_faults(fill(row.faults, names))
    started = time.monotonic()
    try:
        got = run_cli([*program, *out.argv], env=env, secrets=(token,),
                      timeout=row.timeout + 30)
        out.code, out.stdout, out.stderr = got.code, got.stdout, got.stderr
    except (AssertionError, OSError, subprocess.SubprocessError) as error:
        out.error = error
    out.elapsed = time.monotonic() - started
    out.attempts = emu.stats()["attempts"]
    emu.clear_faults()
    if row.runs_after is not None:
        out.runs_after = len(account_runs(emu, token))
    return out


def selected_rows(request) -> list[Row]:
    """The rows whose tests pytest will run (all of them, unless -k or an id narrows it)."""
    wanted = {item.callspec.params["row"].id for item in request.session.items
              if getattr(item, "module", None) is request.module
              and hasattr(item, "callspec") and "row" in item.callspec.params}
    return [row for row in ROWS if row.id in wanted] or ROWS


def cost(row: Row) -> float:
    persistent = any(f.get("count") == FOREVER for f in row.faults)
    return row.timeout if row.code == 124 else 3.5 if persistent else 1.0


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory, elsewhere) -> dict[str, Outcome]:
    rows = sorted(selected_rows(request), key=cost, reverse=True)
    lanes: list[list[Row]] = [[] for _ in range(LANES)]
    for row in rows:  # the longest first, each to the least loaded lane
        min(lanes, key=lambda lane: sum(map(cost, lane))).append(row)
    emulators = [start_emulator(tmp_path_factory.mktemp("faults-emulator"))
                 for lane in lanes if lane]  # one per lane that has rows
    results: dict[str, Outcome] = {}

    def drive(lane: list[Row], emu) -> None:
        for row in lane:
            try:
                results[row.id] = play(row, emu, tmp_path_factory.mktemp("row"), elsewhere)
            except BaseException as error:  # an admin call failing: shown in the row's test
                results[row.id] = Outcome(error=error)

    busy = [lane for lane in lanes if lane]
    threads = [threading.Thread(target=drive, args=(lane, emu))
               for lane, emu in zip(busy, emulators, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    yield results
    for emu in emulators:
        emu.stop()  # asserts a clean exit and no process left behind


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_fault(row: Row, outcomes, elsewhere):
    got = outcomes[row.id]
    if got.error is not None:
        raise got.error
    shown = f"{got.argv}\nstdout: {got.stdout}\nstderr: {got.stderr}"
    assert got.code == row.code, shown
    assert got.elapsed <= row.timeout + 1, f"took {got.elapsed:.2f} s, --timeout {row.timeout}"
    assert got.elapsed >= row.min_elapsed, f"Retry-After not honoured: {got.elapsed:.2f} s"
    if row.code == 124:  # the timeout was used, not given up on early
        assert got.elapsed >= row.timeout - 1, f"gave up after {got.elapsed:.2f} s"
    assert re.search(row.message, got.stderr, re.S), shown
    for key, expected in row.attempts.items():
        n = seen(got.attempts, key, got.seeded)
        if expected == "polls":  # polled until the timeout: more than once, not a flood
            assert 2 <= n <= 4 * row.timeout, (key, got.attempts)
        else:
            assert n == expected, (key, got.attempts)
    if not row.attempts:
        assert sum(got.attempts.values()) == 0, got.attempts
    if row.debug_attempts is not None:
        logged = re.findall(r"\(attempt (\d+),", got.stderr)
        assert [int(n) for n in logged] == list(range(1, row.debug_attempts + 1)), shown
        assert "Bearer ***" in got.stderr
    if row.stdout is not None:
        assert got.stdout == row.stdout, shown
    if row.code != 0:
        assert got.stdout == "", shown  # stdout carries only results
        if row.json:  # one JSON document on stderr
            assert json.loads(got.stderr)["error"]["exit_code"] == row.code, shown
        else:
            assert re.search(r"^Error: ", got.stderr, re.M), shown
    if row.code == 124 and got.argv[0] == "run":
        run_id = re.search(RUN_ID, got.stderr).group(0)
        prog = "bus containers" if row.host else "bus-containers"  # the name the user typed
        assert f"{prog} delete {run_id}" in got.stderr, shown  # named, and how to stop
    if row.runs_after is not None:
        assert got.runs_after == row.runs_after
    if any(f.get("action") == "redirect" for f in row.faults) and elsewhere is not None:
        # every row has run by now: nothing, from any row, reached the other origin
        assert elsewhere.received == [], "a request followed the redirect"
