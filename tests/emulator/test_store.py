"""The SQLite store in-process: restart and recovery, idempotency, caps, retention, filters,
summaries that never read output, and pages whose cost does not grow with the runs stored."""

from __future__ import annotations

import sqlite3

import pytest

from bus_containers.emulator import config as cfg
from bus_containers.emulator.database import DatabaseError
from bus_containers.emulator.errors import ApiError
from bus_containers.emulator.model import RunSpec
from bus_containers.emulator.store import RESTARTED, RunStore

SPEC = RunSpec("codex", ("echo", "hi"), 5)


def crash(store: RunStore) -> None:
    """What SIGKILL leaves: committed rows, nothing finished, no goodbye."""
    store._stop.set()
    store._wake.set()
    store._maintainer.join(5)
    store.db.close()


@pytest.fixture
def path(tmp_path):
    return tmp_path / "state.db"


def config(**plan) -> cfg.Config:
    return cfg.parse_config({"plans": {"default": plan}} if plan else {})


def finished(store: RunStore, owner: str = "a", out: bytes = b"", status: str = "succeeded",
             key: str | None = None, spec: RunSpec = SPEC):
    run, created = store.create(owner, spec, key, "u")
    assert created
    run.set_running()
    if out:
        run.add_output("stdout", out)
    run.finish(status, 0 if status == "succeeded" else 1)
    store.on_finished(run)
    return run


def test_restart_keeps_runs_output_and_keys_and_fails_the_active_ones(path):
    store = RunStore(config(), path)
    done = finished(store, out=b"kept\n", key="k1")
    active, _ = store.create("a", RunSpec("codex", ("sleep", "9"), 5), "k2", "u")
    active.set_running()
    active.add_output("stderr", b"partial")
    active.flush()
    queued, _ = store.create("a", RunSpec("codex", ("true",), 5), None, "u")
    crash(store)

    store = RunStore(config(), path)
    try:
        assert store.recovered == 2
        runs, cursor = store.page("a", 10, None)
        assert [r.id for r in runs] == [queued.id, active.id, done.id] and cursor is None
        again = store.get("a", active.id).to_json()
        assert again["status"] == "failed" and again["reason"] == RESTARTED
        assert again["message"] and again["finished_at"] and again["exit_code"] is None
        assert again["stderr"] == "partial"
        assert store.get("a", done.id).to_json()["stdout"] == "kept\n"
        assert store.active_runs() == []
        # Replays return the same runs and create nothing; a changed body is refused.
        run, created = store.create("a", SPEC, "k1", "u")
        assert (run.id, created) == (done.id, False)
        run, created = store.create("a", RunSpec("codex", ("sleep", "9"), 5), "k2", "u")
        assert (run.id, created, run.status) == (active.id, False, "failed")
        with pytest.raises(ApiError) as e:
            store.create("a", RunSpec("codex", ("other",), 5), "k1", "u")
        assert e.value.status == 422
        # Per-account numbering goes on where it was: cursors stay valid across restarts.
        newer, _ = store.create("a", SPEC, None, "u")
        assert newer.seq == queued.seq + 1
    finally:
        store.close()


def test_a_second_store_on_the_same_file_is_refused_and_garbage_is_one_error(path, tmp_path):
    store = RunStore(config(), path)
    try:
        with pytest.raises(DatabaseError, match="another emulator"):
            RunStore(config(), path)
    finally:
        store.close()
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not a database at all" * 100)
    with pytest.raises(DatabaseError, match="bad.db"):
        RunStore(config(), bad)
    assert (path.stat().st_mode & 0o077) == 0


def test_retention_and_idempotency_keys_go_with_the_run():
    now = [1000.0]
    store = RunStore(cfg.parse_config({"emulator": {"retention_seconds": 10}}),
                     clock=lambda: now[0])
    try:
        run, created = store.create("a", SPEC, "k", "http://x/billing")
        assert created and store.create("a", SPEC, "k", "u") == (run, False)
        run.finish("succeeded", 0)
        now[0] = run.finished_at + 5
        assert store.get("a", run.id).id == run.id
        now[0] = run.finished_at + 11
        assert store.get("a", run.id) is None and store.page("a", 5, None) == ([], None)
        again, created = store.create("a", SPEC, "k", "u")
        assert created  # the key went with the run
        again.finish("succeeded", 0)
        now[0] = again.finished_at + 11
        store.purge()
        assert store.count() == 0 and store.usage("a")["stored_runs"] == 0
    finally:
        store.close()


def test_cap_on_stored_runs_expires_the_oldest_finished_first():
    store = RunStore(config(stored_runs=3))
    try:
        active, _ = store.create("a", SPEC, None, "u")  # oldest, but active: kept
        old = [finished(store).id for _ in range(3)]
        assert store.get("a", old[0]) is None
        assert store.get("a", active.id) is not None
        ids = [r.id for r in store.page("a", 10, None)[0]]
        assert ids == [old[2], old[1], active.id]
        store.seed("a", 5, "failed", "codex", 0)
        assert store.usage("a")["stored_runs"] == 3
        assert store.get("a", active.id) is not None
        store.seed("b", 2, "failed", "codex", 0)  # another account is not touched
        assert store.usage("b")["stored_runs"] == 2
    finally:
        store.close()


def test_cap_on_stored_bytes_expires_the_oldest_finished_first():
    store = RunStore(config(stored_bytes=2500))
    first = finished(store, out=b"w" * 2000)
    try:
        runs = [finished(store, out=b"x" * 1000) for _ in range(2)]
        assert store.get("a", first.id) is None  # 3000 > 2500: the oldest went
        assert store.get("a", runs[0].id) is not None
        last = finished(store, out=b"y" * 1000)  # 3000 again: the next oldest goes
        assert [store.get("a", r.id) is None for r in runs] == [True, False]
        assert store.get("a", last.id).to_json()["stdout"] == "y" * 1000
        kept = store.usage("a")["stored_bytes"]  # two outputs and their requests
        assert 2000 + 2 * len('{"command":["echo","hi"]') < kept <= 2500
    finally:
        store.close()


def test_filters_match_a_brute_force_scan():
    now = [10_000.0]
    store = RunStore(config(), clock=lambda: now[0])
    try:
        expected = []
        for i in range(60):
            now[0] += 1
            status = ("succeeded", "failed", "timed_out")[i % 3]
            profile = ("codex", "default")[i % 2]
            expected += [(s, status, profile, now[0])
                         for s in store.seed("a", 1, status, profile, 0)]
        store.seed("b", 30, "failed", "codex", 0)
        expected.reverse()
        cases = [dict(status="failed"), dict(profile="default"),
                 dict(status="failed", profile="codex"), dict(since=10_030.0),
                 dict(since=10_030.0, status="succeeded"), dict(since=99_999.0), {}]
        for case in cases:
            want = [e[0] for e in expected
                    if e[1] == case.get("status", e[1]) and e[2] == case.get("profile", e[2])
                    and e[3] >= case.get("since", 0)]
            got, cursor = [], None
            while True:
                runs, cursor = store.page("a", 7, cursor, **case)
                got += [r.id for r in runs]
                if cursor is None:
                    break
            assert got == want, case
    finally:
        store.close()


def _vm_steps(store: RunStore, fn) -> tuple[int, set[str]]:
    """SQLite VM steps (in units of 100) and tables read while `fn` runs: a measure of work
    that does not depend on the machine's speed."""
    con = store.db._writer  # the in-memory store has one connection
    steps = [0]
    tables: set[str] = set()

    def progress():
        steps[0] += 1
        return 0

    def authorizer(action, arg1, arg2, db, trigger):
        if action == sqlite3.SQLITE_READ:
            tables.add(arg1)
        return sqlite3.SQLITE_OK

    con.set_progress_handler(progress, 100)
    con.set_authorizer(authorizer)
    try:
        fn()
    finally:
        con.set_progress_handler(None, 100)
        con.set_authorizer(None)
    return steps[0], tables


def test_a_filtered_page_costs_the_same_over_20000_runs_as_over_200():
    def cost(n: int) -> list[int]:
        store = RunStore(config())
        try:
            store.seed("a", n, "succeeded", "codex", 0)
            store.seed("a", 30, "failed", "default", 0)
            store.seed("a", n, "succeeded", "codex", 0)
            out = []
            for case in (dict(status="failed"), dict(profile="default"),
                         dict(status="failed", profile="default"), {}):
                out.append(_vm_steps(store, lambda c=case: store.page("a", 20, None, **c))[0])
            # a second page from the cursor, and a page far down the list
            _, cursor = store.page("a", 20, None, status="failed")
            out.append(_vm_steps(store, lambda: store.page("a", 20, cursor,
                                                           status="failed"))[0])
            return out
        finally:
            store.close()

    small, large = cost(100), cost(10_000)
    for s, big in zip(small, large, strict=True):
        assert big <= 2 * s + 10, (small, large)


def test_a_page_never_reads_output_whatever_the_runs_printed():
    store = RunStore(config())
    try:
        for _ in range(5):
            finished(store, out=b"z" * 200_000)
        steps_big, tables = _vm_steps(store, lambda: store.page("a", 20, None))
        assert "output" not in tables and "runs" in tables
        summary = store.page("a", 20, None)[0][0].to_json(summary=True)
        assert "stdout" not in summary and "stderr" not in summary
        assert summary["output_bytes"] == 200_000
        assert set(summary["usage"]) == {"run_seconds"}
    finally:
        store.close()


def test_output_is_chunked_with_times_and_a_live_tail_is_readable_at_once():
    store = RunStore(config())
    # Times here are made up: the flusher (stores tails older than 0.1 s) stays out.
    store._stop.set()
    store._wake.set()
    store._maintainer.join(5)
    try:
        run, _ = store.create("a", SPEC, None, "u")
        run.set_running()
        for b in b"abc":
            run.add_output("stdout", bytes([b]), now=100.0)
        run.add_output("stderr", b"DE", now=100.0)
        # Nothing waits for a flush: readers get the pending tail with the stored chunks.
        chunks, final = run.chunks_from(0)
        assert chunks == [("stdout", 0, b"abc", 100.0), ("stderr", 3, b"DE", 100.0)]
        assert not final
        assert run.chunks_from(4)[0] == [("stderr", 4, b"E", 100.0)]
        run.add_output("stdout", b"fg", now=101.0)
        run.add_output("stdout", b"h", now=101.005)  # within the merge window: one chunk
        run.add_output("stdout", b"i", now=102.0)  # further apart: its own time
        run.finish("succeeded", 0)
        again = store.get("a", run.id)
        assert again is not run  # read back from the database
        assert again.chunks_from(3)[0] == [("stderr", 3, b"DE", 100.0),
                                           ("stdout", 5, b"fgh", 101.0),
                                           ("stdout", 8, b"i", 102.0)]
        assert again.output("stdout") == b"abcfghi" and again.output("stderr") == b"DE"
        assert again.chunks_from(9) == ([], True)
    finally:
        store.close()


def test_output_cap_truncates_and_says_so():
    store = RunStore(cfg.parse_config({"emulator": {"output_cap_bytes": 10}}))
    try:
        run, _ = store.create("a", SPEC, None, "u")
        run.add_output("stdout", b"0123456")
        run.add_output("stdout", b"789abc")
        run.finish("succeeded", 0)
        body = store.get("a", run.id).to_json()
        assert body["stdout"] == "0123456789" and body["output_truncated"] is True
        assert body["output_bytes"] == 10
    finally:
        store.close()


def test_usage_counts_the_period_from_the_first_request_deleted_runs_included():
    now = [1000.0]
    store = RunStore(config(period_seconds=100), clock=lambda: now[0])
    try:
        run, _ = store.create("a", SPEC, None, "u")  # the account's first request
        run.started_at, run.finished_at, run.status = 1000.0, 1010.0, "succeeded"
        store.save_state(run)
        assert store.remove("a", run.id)
        now[0] = 1020.0
        live, _ = store.create("a", SPEC, None, "u")
        live.started_at, live.status = 1020.0, "running"
        store.save_state(live)
        now[0] = 1030.0
        used = store.usage("a")
        assert (used["period_start"], used["period_end"]) == (1000.0, 1100.0)
        assert used["runs"] == 2 and used["run_seconds"] == 10.0 + 10.0
        assert used["concurrent_runs"] == 1 and used["stored_runs"] == 1
        now[0] = 1250.0  # two periods on: fresh counters; the live run began before
        used = store.usage("a")
        assert (used["period_start"], used["runs"], used["run_seconds"]) == (1200.0, 0, 0.0)
        assert store.usage("nobody")["runs"] == 0
    finally:
        store.close()


def test_quotas_survive_a_restart(path):
    conf = config(runs_per_period=2, concurrent_runs=1)
    store = RunStore(conf, path)
    finished(store)
    store.create("a", SPEC, None, "u")  # active: holds the one concurrent slot
    crash(store)
    store = RunStore(conf, path)
    try:
        with pytest.raises(ApiError, match="2 runs per"):
            store.create("a", SPEC, None, "u")
    finally:
        store.close()


def test_another_accounts_run_is_invisible():
    store = RunStore(config())
    try:
        run = finished(store, owner="a")
        assert store.get("b", run.id) is None
        assert not store.remove("b", run.id)
        assert store.page("b", 10, None) == ([], None)
        assert store.get("a", run.id) is not None
    finally:
        store.close()


def test_runs_killed_by_a_stop_say_so_and_a_run_that_succeeds_first_keeps_it():
    store = RunStore(config())
    try:
        killed, _ = store.create("a", SPEC, None, "u")
        lucky, _ = store.create("a", SPEC, None, "u")
        store.stopping()
        killed.finish("failed", 137)  # what the runner sees of a SIGKILL
        lucky.finish("succeeded", 0)
        body = store.get("a", killed.id).to_json()
        assert (body["status"], body["exit_code"], body["reason"]) == (
            "failed", None, RESTARTED)
        assert "stopped" in body["message"]
        assert store.get("a", lucky.id).to_json()["status"] == "succeeded"
    finally:
        store.close()


def test_removals_are_told_only_once_committed():
    now = [1000.0]
    conf = cfg.parse_config({"emulator": {"retention_seconds": 10},
                             "plans": {"nobill": {"billing": False}}})
    store = RunStore(conf, clock=lambda: now[0])
    told = []
    store.on_removed = lambda run: told.append(run.id)
    try:
        old, _ = store.create("a", SPEC, "k", "u")
        old.finish("succeeded", 0)
        now[0] = old.finished_at + 11  # expired: the key's next use deletes it first...
        store._stop.set()  # (and not the background purge)
        store._maintainer.join(5)
        store.set_plan("a", "nobill")
        with pytest.raises(ApiError):  # ...but this create is refused: rolled back
            store.create("a", SPEC, "k", "u")
        assert told == []
        store.set_plan("a", "default")
        assert store.create("a", SPEC, "k", "u")[1] is True
        assert told == [old.id]
    finally:
        store.close()


def test_a_failing_write_is_logged_and_the_run_goes_on(monkeypatch):
    logged = []
    store = RunStore(config(), log=logged.append)
    try:
        run, _ = store.create("a", SPEC, None, "u")

        def full(*args):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(store, "_save_chunk", full)
        monkeypatch.setattr(store, "_save_state", full)
        run.add_output("stdout", b"x", now=1.0)
        run.add_output("stdout", b"y", now=2.0)  # stores (fails) the first chunk
        run.finish("succeeded", 0)
        assert run.finished and store.get("a", run.id) is run  # still live: the truth
        assert any("not stored" in line and "disk is full" in line for line in logged)
    finally:
        monkeypatch.undo()
        store.close()


def test_a_run_active_at_a_crash_ends_at_the_last_heartbeat_and_bills_no_more(path):
    now = [1000.0]
    store = RunStore(config(), path, clock=lambda: now[0])
    run, _ = store.create("a", SPEC, None, "u")
    run.started_at, run.status = 1000.0, "running"
    store.save_state(run)
    now[0] = 1005.0  # the last heartbeat (the maintainer may write the same)
    with store.db.write() as con:
        con.execute("INSERT OR REPLACE INTO meta VALUES ('heartbeat', ?)", (now[0],))
    crash(store)
    now[0] = 1100.0  # restarted long after the crash
    store = RunStore(config(), path, clock=lambda: now[0])
    try:
        again = store.get("a", run.id)
        assert again.status == "failed" and again.finished_at == 1005.0
        assert store.usage("a")["run_seconds"] == 5.0
    finally:
        store.close()
