"""Soak: 16 concurrent clients from 4 accounts create, list, show and delete runs through
the real emulator process while faults are injected, for SOAK_SECONDS (CI: a short run;
`make soak`: SOAK_SECONDS=600).

At the end every created run is accounted for (deleted, or listed by its owner only), there
was no unexpected error, the emulator's memory is flat, and no child process and no run
temp dir is left behind. The figures are printed (run with -s to see them).
"""

from __future__ import annotations

import collections
import contextlib
import email.utils
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path
from unittest import mock

import pytest
import requests

from bus_containers import errors as e
from bus_containers.service import ContainersClient, is_finished
from tests.emulator.helpers import wait_until

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "40"))
ACCOUNTS = 4
CLIENTS_PER_ACCOUNT = 4
CALL_TIMEOUT = 20.0
MAX_KEPT = 25  # runs a client keeps before it deletes one
FAULT_EVERY = 1.0
CONFIG = """
[emulator]
max_wait_seconds = 10
"""
RUNS = "/api/v1/containers/runs"
# Errors a client may legitimately end with while faults are injected: its retries ran out.
RETRIES_EXHAUSTED = (e.ServerError, e.ConnectionFailed, e.RateLimited, e.CommandTimeout)
COMMANDS = [(["true"], ""), (["echo", "x"], "x\n"), (["sleep", "0.2"], ""),
            (["sh", "-c", "printf soak; echo err >&2"], "soak")]


def _faults(rng: random.Random) -> list[dict]:
    http_date = email.utils.formatdate(time.time() + 1, usegmt=True)
    return [rng.choice([
        {"action": "status", "status": 503, "retry_after": "1", "count": 2},
        {"action": "status", "status": 502, "count": 1},
        {"action": "status", "status": 504, "retry_after": http_date, "count": 1},
        {"action": "status", "status": 429, "retry_after": "1", "count": 1},
        {"action": "drop", "count": 2},
        {"action": "drop", "when": "after", "method": "POST", "path": RUNS, "count": 1},
        {"action": "drop", "when": "after", "method": "DELETE", "count": 1},
        {"action": "delay", "seconds": 0.5, "count": 3},
        {"action": "drop_mid", "method": "GET", "path": RUNS, "count": 1},
    ])]


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: collections.Counter[str] = collections.Counter()
        self.expected: collections.Counter[str] = collections.Counter()
        self.unexpected: list[str] = []
        self.created: dict[str, set[str]] = collections.defaultdict(set)
        self.deleted: dict[str, set[str]] = collections.defaultdict(set)
        self.lost_creates: collections.Counter[str] = collections.Counter()

    def note(self, what: str) -> None:
        with self.lock:
            self.calls[what] += 1


def _worker(emu, sub: str, token: str, seed: int, stop: threading.Event, tally: Tally) -> None:
    rng = random.Random(seed)
    session = requests.Session()
    client = ContainersClient(emu.url, token, timeout=CALL_TIMEOUT, session=session)
    mine: list[str] = []
    try:
        while not stop.is_set():
            op = rng.choices(["create", "list", "show", "delete"], [4, 2, 3, 2])[0]
            if op in ("show", "delete") and not mine:
                op = "create"
            elif len(mine) >= MAX_KEPT:
                op = "delete"  # a steady state: memory can only be flat if the data is
            try:
                if op == "create":
                    command, want = rng.choice(COMMANDS)
                    run = client.create_run(command, wait=rng.choice([0, 2, 5]))
                    with tally.lock:
                        tally.created[sub].add(run["id"])
                    mine.append(run["id"])
                    if is_finished(run) and run["status"] == "succeeded" \
                            and run["stdout"] != want:
                        raise AssertionError(f"{command}: stdout {run['stdout']!r}")
                elif op == "list":
                    runs = client.list_runs(limit=rng.choice([5, 20, 100]))
                    with tally.lock:
                        foreign = [r["id"] for r in runs
                                   if any(r["id"] in ids for owner, ids in tally.created.items()
                                          if owner != sub)]
                    if foreign:
                        raise AssertionError(f"{sub} listed other accounts' runs {foreign}")
                elif op == "show":
                    run_id = rng.choice(mine)
                    run = client.get_run(run_id)
                    if run["id"] != run_id:
                        raise AssertionError(f"asked for {run_id}, got {run['id']}")
                else:
                    run_id = mine.pop(rng.randrange(len(mine)))
                    client.delete_run(run_id)  # RunNotFound here would be a finding
                    with tally.lock:
                        tally.deleted[sub].add(run_id)
                tally.note(op)
            except RETRIES_EXHAUSTED as err:
                with tally.lock:
                    tally.expected[f"{op}: {type(err).__name__}"] += 1
                    if op == "create":
                        tally.lost_creates[sub] += 1  # may exist server-side, id unknown
                    if op == "delete":
                        mine.append(run_id)  # not known to be gone: try again later
            except Exception as err:  # noqa: BLE001 - every other outcome is a finding
                with tally.lock:
                    tally.unexpected.append(f"{op} ({sub[:8]}): {type(err).__name__}: {err}")
    finally:
        session.close()


def _rss_mb(emu) -> float:
    # VmRSS now (the stats endpoint's rss_bytes may be a peak where /proc is missing).
    with open(f"/proc/{emu.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return emu.stats()["rss_bytes"] / 2**20


@pytest.mark.soak
@pytest.mark.timeout(SOAK_SECONDS + 120)
def test_soak(emulator_factory):
    # A private TMPDIR (traversable by the unprivileged run user): leftover run dirs of
    # this emulator are then exactly what is in it, whatever else runs on the machine.
    run_tmp = Path(tempfile.mkdtemp(prefix="bus-soak-tmp-"))
    os.chmod(run_tmp, 0o755)
    try:
        with mock.patch.dict(os.environ, {"TMPDIR": str(run_tmp)}):
            emu = emulator_factory(config=CONFIG)
        _soak(emu, run_tmp)
    finally:
        shutil.rmtree(run_tmp, ignore_errors=True)


def _soak(emu, run_tmp: Path) -> None:
    subs = [str(uuid.uuid4()) for _ in range(ACCOUNTS)]
    tokens = {sub: emu.token(sub, ttl=int(SOAK_SECONDS) + 3600) for sub in subs}
    tally = Tally()
    stop = threading.Event()
    started = time.monotonic()
    warmup = min(10.0, SOAK_SECONDS / 4)
    threads = [threading.Thread(target=_worker, name=f"soak-{i}", daemon=True,
                                args=(emu, subs[i % ACCOUNTS], tokens[subs[i % ACCOUNTS]],
                                      1000 + i, stop, tally))
               for i in range(ACCOUNTS * CLIENTS_PER_ACCOUNT)]
    for t in threads:
        t.start()
    rng = random.Random(7)
    faults_added = 0
    rss_warm = None
    while (elapsed := time.monotonic() - started) < SOAK_SECONDS:
        if rss_warm is None and elapsed >= warmup:
            rss_warm = _rss_mb(emu)
        emu.add_faults(_faults(rng))
        faults_added += 1
        time.sleep(FAULT_EVERY)
    stop.set()
    for t in threads:
        t.join(CALL_TIMEOUT * 4 + 30)
    assert not any(t.is_alive() for t in threads), "a client hung"
    duration = time.monotonic() - started
    emu.clear_faults()
    stats = emu.stats()

    # -- every created run is accounted for ----------------------------------------------
    clients = {sub: ContainersClient(emu.url, tokens[sub], timeout=60) for sub in subs}
    listed = {}
    for sub in subs:
        runs = clients[sub].list_runs()
        for run in runs:  # let what is still running finish (sleep 0.2 at most)
            if not is_finished(run):
                clients[sub].wait_for_run(run["id"], immediate=True)
        listed[sub] = {r["id"] for r in runs}
    for sub in subs:
        alive = tally.created[sub] - tally.deleted[sub]
        assert not listed[sub] & tally.deleted[sub], "deleted runs still listed"
        assert alive <= listed[sub], f"runs lost: {sorted(alive - listed[sub])[:5]}"
        orphans = listed[sub] - tally.created[sub]
        assert len(orphans) <= tally.lost_creates[sub], sorted(orphans)[:5]
        for other in subs:
            if other != sub:
                assert not listed[other] & tally.created[sub], "listed by another account"
                assert not listed[other] & orphans
    for sub in subs:  # clean up, then nothing may be left
        for run_id in listed[sub]:
            clients[sub].delete_run(run_id)
    rss_end = _rss_mb(emu)
    wait_until(lambda: not emu.descendants(), 10, "no child process left")
    end_stats = emu.stats()
    assert end_stats["processes_running"] == 0
    assert end_stats["temp_dirs"] == 0
    assert end_stats["runs"] == 0
    assert not list(run_tmp.iterdir()), "run temp dirs left behind"
    assert not tally.unexpected, tally.unexpected[:10]

    requests_total = stats["requests"]
    created = sum(len(v) for v in tally.created.values())
    deleted = sum(len(v) for v in tally.deleted.values())
    expected_errors = sum(tally.expected.values())
    print(f"\nsoak: {duration:.1f} s, {ACCOUNTS} accounts x {CLIENTS_PER_ACCOUNT} clients, "
          f"{faults_added} fault rules injected")
    print(f"  client calls ok: {dict(tally.calls)} = {sum(tally.calls.values())}")
    print(f"  HTTP requests seen by the emulator: {requests_total} "
          f"({requests_total / duration:.0f}/s), processes started: "
          f"{stats['processes_started']}")
    print(f"  runs created: {created}, deleted during the soak: {deleted}, left and "
          f"accounted for: {sum(len(v) for v in listed.values())}, orphans of lost "
          f"creates: {sum(len(listed[s] - tally.created[s]) for s in subs)}")
    print(f"  expected errors (retries exhausted under faults): {expected_errors} "
          f"{dict(tally.expected)}; unexpected: {len(tally.unexpected)}")
    print(f"  RSS: after warm-up ({warmup:.0f} s) {rss_warm:.1f} MB, at the end "
          f"{rss_end:.1f} MB")
    assert rss_end < 1.5 * rss_warm + 20, (rss_warm, rss_end)
    with contextlib.suppress(Exception):
        emu.reset_counters()


def test_delete_retried_after_a_dropped_answer_is_not_a_404(emulator):
    """DELETE is retried freely (CONTRACT 4): when the first attempt deleted the run and
    only its answer was lost, the retry's 404 must not become RunNotFound (`delete` would
    exit 3, "not found", for a run it has just deleted). The soak injects exactly this."""
    sub = str(uuid.uuid4())
    client = ContainersClient(emulator.url, emulator.token(sub), timeout=20)
    run = client.create_run(["true"], wait=5)
    emulator.add_faults([{"action": "drop", "when": "after", "method": "DELETE",
                          "path": f"{RUNS}/{run['id']}"}])
    try:
        client.delete_run(run["id"])
    except e.RunNotFound:
        pytest.fail("delete_run raised RunNotFound for the run its first attempt deleted")
    assert emulator.attempts("DELETE", f"{RUNS}/{run['id']}") == 2
