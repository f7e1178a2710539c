"""Crash recovery end to end (issue 9 point 6): SIGKILL the real emulator during a burst of
creates from 8 clients, restart it on the same state dir, and check every promise."""

from __future__ import annotations

import os
import queue
import signal
import threading
import uuid

import requests

from tests.emulator.helpers import wait_until
from tests.support.emulator import start_emulator, wait_gone

CONFIG = """
[plans.default]
concurrent_runs = 100
"""
CREATES = 50
CLIENTS = 8
KILL_AFTER = 20  # answered creates before the SIGKILL


def _body(i: int) -> dict:
    # Half finish at once, half would run long: both kinds must come back right.
    command = ["echo", f"done-{i}"] if i % 2 else ["sh", "-c", "echo started; sleep 60"]
    return {"profile": "codex", "command": command}


def _list_all(url: str, headers: dict) -> list[dict]:
    runs, cursor = [], None
    while True:
        params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        r = requests.get(f"{url}/runs", params=params, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        runs += r.json()["runs"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return runs


def test_sigkill_during_a_burst_of_creates_loses_no_answered_run(tmp_path):
    state = tmp_path / "state"
    emu = start_emulator(state, config=CONFIG)
    token = emu.token("crash-account")
    headers = {**emu.auth(token), "Content-Type": "application/json"}
    keys = [str(uuid.uuid4()) for _ in range(CREATES)]
    answered: dict[str, str] = {}  # key -> run id, for every 201/202 the server sent
    lock = threading.Lock()
    enough = threading.Event()
    work: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(CREATES):
        work.put(i)

    def client() -> None:
        with requests.Session() as session:
            while True:
                try:
                    i = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    r = session.post(emu.api("/runs"), json=_body(i), timeout=30,
                                     headers={**headers, "Idempotency-Key": keys[i]})
                except requests.RequestException:
                    continue  # the emulator died under this request: not answered
                if r.status_code in (201, 202):
                    with lock:
                        answered[keys[i]] = r.json()["id"]
                        if len(answered) >= KILL_AFTER:
                            enough.set()

    before_dirs = {p for p in os.listdir("/tmp") if p.startswith("bus-emulator-run-")}
    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        assert enough.wait(60), "the creates did not get answered"
        processes = emu.descendants()
        emu.proc.send_signal(signal.SIGKILL)
        emu.proc.wait(10)
    finally:
        for t in threads:
            t.join(60)
        if emu.proc.poll() is None:
            emu.proc.kill()
        emu._stopped = True  # killed on purpose: stop() would expect a clean exit
    assert len(answered) >= KILL_AFTER
    # The runs' processes die with the emulator (the sandbox's job) and leave no files.
    assert wait_gone(processes, 5) == {}
    left = {p for p in os.listdir("/tmp") if p.startswith("bus-emulator-run-")} - before_dirs
    assert not left

    again = start_emulator(state, config=CONFIG)
    try:
        api = again.api("")
        runs = {r["id"]: r for r in _list_all(api, headers)}
        assert set(answered.values()) <= set(runs), "an answered run was lost"
        for run in runs.values():
            assert run["status"] not in ("queued", "starting", "running"), run
            if run["status"] == "failed" and run["exit_code"] is None:
                assert run["reason"] == "runner_restarted" and run["message"], run
        assert any(r.get("reason") == "runner_restarted" for r in runs.values())
        # Finished runs keep their output.
        for key, run_id in answered.items():
            if runs[run_id]["status"] == "succeeded":
                r = requests.get(f"{api}/runs/{run_id}", headers=headers, timeout=30)
                assert r.json()["stdout"] == f"done-{keys.index(key)}\n"
        assert again.stats()["processes_started"] == 0

        # Retries with the answered keys: the same runs, nothing started.
        for key, run_id in answered.items():
            i = keys.index(key)
            r = requests.post(f"{api}/runs", json=_body(i), timeout=30,
                              headers={**headers, "Idempotency-Key": key})
            assert r.status_code == 201, r.text
            assert r.json()["id"] == run_id and r.headers["Idempotent-Replayed"] == "true"
        assert again.stats()["processes_started"] == 0

        # Retries of the unanswered ones: a create committed but not answered is
        # replayed (nothing starts); one never committed is created now, once.
        new = 0
        for i, key in enumerate(keys):
            if key in answered:
                continue
            r = requests.post(f"{api}/runs", json=_body(i), timeout=30,
                              headers={**headers, "Idempotency-Key": key})
            if r.headers.get("Idempotent-Replayed") == "true":
                assert r.json()["id"] in runs
            else:
                assert r.status_code in (201, 202) and r.json()["id"] not in runs
                new += 1
        wait_until(lambda: again.stats()["processes_started"] == new, what="new runs start")
    finally:
        again.stop()

