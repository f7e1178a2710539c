"""Runs in SQLite: ownership, idempotency keys, plans and quotas, pages, caps, retention,
usage counters, and crash recovery.

Every change is one committed transaction before anyone is told about it (a create is
committed before its 201/202). Active runs also live in memory (`Run` objects, the meeting
point of the runner and the readers); finished runs are read back from the database when
asked for, and pages never read output. See database.py for connections and the schema.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import Config
from .database import Database
from .errors import ApiError, invalid
from .model import (
    ACTIVE,
    FINISHED,
    Chunk,
    Run,
    RunSpec,
    new_run_id,
    spec_from_json,
    spec_to_json,
)

# Cursors are opaque to clients. Inside: the per-account sequence number of the last run
# of the previous page. Per account, so a cursor reveals nothing about other accounts; and
# every string of this shape is a valid position, so the OpenAPI pattern says it all.
CURSOR = re.compile(r"^c([0-9]{1,18})$")
RESTARTED = "runner_restarted"
RESTARTED_MESSAGE = ("the emulator stopped while this run was active (crash or kill); its "
                     "processes were stopped with it")
STOPPED_MESSAGE = "the emulator was stopped while this run was active; it stopped the run"
HEARTBEAT_SECONDS = 1.0
# Usage rows are kept at least this long, or the longest plan period.
USAGE_KEEP_SECONDS = 24 * 3600
PURGE_BATCH = 500

_RUN_COLUMNS = ("pk, id, owner, seq, status, spec, exit_code, created_at, started_at, "
                "finished_at, output_bytes, truncated, reason, message, workspace")
_ACTIVE_SQL = ", ".join(f"'{s}'" for s in ACTIVE)


def encode_cursor(seq: int) -> str:
    return f"c{seq}"


def decode_cursor(cursor: str) -> int:
    m = CURSOR.match(cursor)
    if not m:
        raise invalid("cursor is not a cursor returned by this API")
    return int(m.group(1))


class RunStore:
    def __init__(self, config: Config, path: Path | None = None, clock=time.time,
                 log: Callable[[str], None] = lambda _: None):
        """`path`: the database file (created if absent); None keeps everything in memory."""
        self.config = config
        self._clock = clock
        self._log = log
        self.db = Database(path)
        self._live: dict[str, Run] = {}
        self._live_lock = threading.Lock()
        # Told of each run removed (deleted, expired or capped), after the removal is
        # committed: its workspace tree goes with it.
        self.on_removed: Callable[[Run], None] | None = None
        self.recovered = self._recover()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._maintainer = threading.Thread(target=self._maintain, name="store-maintenance",
                                            daemon=True)
        self._maintainer.start()

    # -- creation -------------------------------------------------------------------
    def create(self, owner: str, spec: RunSpec, idem_key: str | None,
               billing_url: str) -> tuple[Run, bool]:
        """(run, created). An idempotent replay returns the existing run, created=False.

        Billing and quota are checked in the same transaction, before any process exists;
        the run is committed before this returns (so before the client is answered).
        """
        fingerprint = spec_to_json(spec)
        now = self._clock()
        removed: list[Run] = []  # told only once committed: a refusal rolls them back
        created: list[Run] = []
        try:
            answer = self._create(owner, spec, idem_key, billing_url, fingerprint, now,
                                  removed, created)
        except BaseException:
            with self._live_lock:  # the commit itself failed: the run never existed
                for run in created:
                    self._live.pop(run.id, None)
            raise
        self._removed(removed)
        return answer

    def _create(self, owner: str, spec: RunSpec, idem_key: str | None, billing_url: str,
                fingerprint: str, now: float, removed: list[Run], created: list[Run]
                ) -> tuple[Run, bool]:
        with self.db.write() as con:
            if idem_key is not None:
                row = con.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE owner = ? AND "
                                  "idem_key = ?", (owner, idem_key)).fetchone()
                if row is not None and self._expired(row[9], now):
                    removed += self._delete(con, "pk = ?", (row[0],))
                    row = None  # the key went with the run
                if row is not None:
                    if row[5] != fingerprint:
                        raise ApiError(
                            422, "idempotency_conflict",
                            "this Idempotency-Key was already used with a different request",
                            guidance="Use a new Idempotency-Key for a different request.")
                    return self._live_or(row), False
            self._ensure_account(con, owner, now)
            self._check_plan(con, owner, now, billing_url)
            seq = con.execute("UPDATE accounts SET last_seq = last_seq + 1, stored_runs = "
                              "stored_runs + 1, stored_bytes = stored_bytes + ? "
                              "WHERE owner = ? RETURNING last_seq",
                              (len(fingerprint.encode()), owner)).fetchone()[0]
            run = Run(new_run_id(), owner, seq, spec, now,
                      output_cap=self.config.limits.output_cap_bytes, sink=self)
            run.pk = con.execute(
                "INSERT INTO runs (id, owner, seq, status, profile, spec, created_at, idem_key)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING pk",
                (run.id, owner, seq, run.status, spec.profile, fingerprint, now, idem_key),
            ).fetchone()[0]
            con.execute("INSERT INTO usage_runs (run_id, owner, created_at) VALUES (?, ?, ?)",
                        (run.id, owner, now))
            removed += self._cap_runs(con, owner)
            # Live before the commit makes it visible: a reader never gets a stale copy.
            created.append(run)
            with self._live_lock:
                self._live[run.id] = run
        self._wake.set()
        return run, True

    @staticmethod
    def _ensure_account(con: sqlite3.Connection, owner: str, now: float) -> None:
        con.execute("INSERT INTO accounts (owner, period_start) VALUES (?, ?) "
                    "ON CONFLICT DO NOTHING", (owner, now))

    def _period(self, con: sqlite3.Connection, owner: str, period_seconds: float,
                now: float) -> float:
        """The start of the account's period that holds `now`: periods follow one another
        from the account's first request (like a billing cycle anchored at sign-up)."""
        row = con.execute("SELECT period_start FROM accounts WHERE owner = ?",
                          (owner,)).fetchone()
        anchor = row[0] if row is not None else now
        if now < anchor + period_seconds:
            return anchor
        return anchor + math.floor((now - anchor) / period_seconds) * period_seconds

    @staticmethod
    def _period_use(con: sqlite3.Connection, owner: str, start: float, now: float
                    ) -> tuple[int, float]:
        """(runs created, their run-seconds so far) since `start`; deleted runs included."""
        runs, seconds = con.execute(
            "SELECT count(*), total(CASE WHEN started_at IS NULL THEN 0 ELSE "
            "max(0, coalesce(finished_at, ?) - started_at) END) FROM usage_runs "
            "WHERE owner = ? AND created_at >= ?", (now, owner, start)).fetchone()
        return runs, seconds

    def _check_plan(self, con: sqlite3.Connection, owner: str, now: float,
                    billing_url: str) -> None:
        plan = self.config.plan_for(owner)
        if not plan.billing:
            raise ApiError(
                402, "billing_required",
                f"billing is not set up for this account (plan {plan.name!r})",
                guidance=f"Set up billing for this account at {billing_url}, then retry.",
                url=billing_url)
        start = self._period(con, owner, plan.period_seconds, now)
        runs, seconds = self._period_use(con, owner, start, now)
        if plan.runs_per_period is not None and runs >= plan.runs_per_period:
            raise ApiError(
                429, "quota_exhausted",
                f"the plan {plan.name!r} allows {plan.runs_per_period} runs per "
                f"{plan.period_seconds:g} seconds, and they are used up",
                guidance=f"Wait for the period to end, or upgrade the plan at {billing_url}.",
                url=billing_url)
        limit = plan.run_seconds_per_period
        if limit is not None and seconds >= limit:
            raise ApiError(
                429, "quota_exhausted",
                f"the plan {plan.name!r} allows {limit} run-seconds per "
                f"{plan.period_seconds:g} seconds, and they are used up",
                guidance=f"Wait for the period to end, or upgrade the plan at {billing_url}.",
                url=billing_url)
        if plan.concurrent_runs is not None and (
                self._active_count(con, owner) >= plan.concurrent_runs):
            raise ApiError(
                429, "quota_exhausted",
                f"the plan {plan.name!r} allows {plan.concurrent_runs} concurrent runs, "
                "and that many are active",
                guidance="Wait for a run to finish (or delete one), or upgrade the plan at "
                         f"{billing_url}.",
                url=billing_url)

    @staticmethod
    def _active_count(con: sqlite3.Connection, owner: str) -> int:
        return con.execute(f"SELECT count(*) FROM runs WHERE owner = ? AND status IN "
                           f"({_ACTIVE_SQL})", (owner,)).fetchone()[0]

    def seed(self, owner: str, count: int, status: str, profile: str,
             age_seconds: float) -> list[str]:
        """Insert finished runs with no process behind them (benchmarks, pagination tests):
        one transaction, so 200,000 take a few seconds, not minutes."""
        finished_at = self._clock() - age_seconds
        ids = [new_run_id() for _ in range(count)]
        exit_code = 0 if status == "succeeded" else None
        # The spec of `echo seed-<i>`, by substitution: JSON-encoding each costs more than
        # inserting it.
        head, tail = spec_to_json(RunSpec(profile, ("echo", "SEED"), 1)).split('"SEED"')
        specs = [f'{head}"seed-{i}"{tail}' for i in range(count)]
        spec_bytes = sum(len(spec) for spec in specs)  # ASCII: characters are bytes
        removed: list[Run] = []
        with self.db.write() as con:
            self._ensure_account(con, owner, self._clock())
            last = con.execute("UPDATE accounts SET last_seq = last_seq + ?1, stored_runs = "
                               "stored_runs + ?1, stored_bytes = stored_bytes + ?2 "
                               "WHERE owner = ?3 RETURNING last_seq",
                               (count, spec_bytes, owner)).fetchone()[0]
            first = last - count + 1
            con.executemany(
                "INSERT INTO runs (id, owner, seq, status, profile, spec, exit_code, "
                "created_at, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ((run_id, owner, first + i, status, profile, specs[i], exit_code,
                  finished_at, finished_at, finished_at) for i, run_id in enumerate(ids)))
            removed += self._cap_runs(con, owner)
        self._removed(removed)
        return ids

    def set_plan(self, owner: str, plan: str) -> None:
        """Put `owner` on `plan` (a known plan name), under the lock quotas are checked in."""
        with self.db.write():
            self.config.accounts[owner] = plan

    # -- caps and retention ---------------------------------------------------------
    def _cap_runs(self, con: sqlite3.Connection, owner: str) -> list[Run]:
        """Past the plan's cap on stored runs, the oldest finished runs go first."""
        cap = self.config.plan_for(owner).stored_runs
        if cap is None:
            return []
        stored = con.execute("SELECT stored_runs FROM accounts WHERE owner = ?",
                             (owner,)).fetchone()[0]
        if stored <= cap:
            return []
        return self._delete(con, "pk IN (SELECT pk FROM runs WHERE owner = ? AND finished_at "
                                 "IS NOT NULL ORDER BY seq LIMIT ?)", (owner, stored - cap))

    def _cap_bytes(self, con: sqlite3.Connection, owner: str, keep_pk: int) -> list[Run]:
        """Past the plan's cap on stored bytes (output plus request bodies: a body of up to
        max_body_bytes a run must not fill the disk either), the oldest finished runs go first
        (never the run that just finished: its creator may be waiting for it)."""
        cap = self.config.plan_for(owner).stored_bytes
        if cap is None:
            return []
        excess = con.execute("SELECT stored_bytes FROM accounts WHERE owner = ?",
                             (owner,)).fetchone()[0] - cap
        if excess <= 0:
            return []
        doomed, removed = [], []
        for pk, size in con.execute(
                "SELECT pk, output_bytes + length(CAST(spec AS BLOB)) FROM runs "
                "WHERE owner = ? AND finished_at IS NOT NULL"
                " AND pk != ? ORDER BY seq", (owner, keep_pk)):
            doomed.append(pk)
            excess -= size
            if excess <= 0:
                break
        for i in range(0, len(doomed), PURGE_BATCH):
            batch = doomed[i:i + PURGE_BATCH]
            removed += self._delete(con, f"pk IN ({', '.join('?' * len(batch))})", batch)
        return removed

    def _delete(self, con: sqlite3.Connection, where: str, params: Any) -> list[Run]:
        """Delete runs (their output goes by cascade); the removed runs, for _removed()."""
        gone = [self._from_row(row) for row in con.execute(
            f"DELETE FROM runs WHERE {where} RETURNING {_RUN_COLUMNS}", params)]
        if gone:
            with self._live_lock:
                for run in gone:
                    live = self._live.pop(run.id, None)
                    if live is not None:
                        live.removed = True
        return gone

    def _removed(self, runs: list[Run]) -> None:
        """Tell of removals once committed (and outside the write lock: trees take time)."""
        if self.on_removed is not None:
            for run in runs:
                self.on_removed(run)

    def _expired(self, finished_at: float | None, now: float) -> bool:
        return finished_at is not None and finished_at <= now - self._retention()

    def _retention(self) -> float:
        return self.config.limits.retention_seconds

    def purge(self) -> int:
        """Delete expired runs (in batches, so creates never wait long) and old usage rows."""
        now = self._clock()
        deleted = 0
        while True:
            with self.db.write() as con:
                gone = self._delete(con, "pk IN (SELECT pk FROM runs WHERE finished_at <= ? "
                                         "LIMIT ?)", (now - self._retention(), PURGE_BATCH))
            self._removed(gone)
            deleted += len(gone)
            if len(gone) < PURGE_BATCH:
                break
        # A period never starts before now minus its length: older rows count for nothing.
        keep = max([USAGE_KEEP_SECONDS, *(p.period_seconds for p in self.config.plans.values())])
        with self.db.write() as con:
            con.execute("DELETE FROM usage_runs WHERE created_at < ? AND finished_at IS NOT "
                        "NULL", (now - keep,))
        return deleted

    # -- the sink of live runs (called by Run, under its condition) -------------------
    def save_chunk(self, run: Run, stream: str, offset: int, at: float, data: bytes) -> None:
        if self.db.closed:
            return  # a run thread outlived the shutdown: the next start recovers the run
        try:
            self._save_chunk(run, stream, offset, at, data)
        except sqlite3.Error as e:  # e.g. a full disk: the run goes on, the bytes are lost
            self._log(f"output of {run.id} not stored: {e}")

    def _save_chunk(self, run: Run, stream: str, offset: int, at: float, data: bytes
                    ) -> None:
        with self.db.write() as con:
            # A run deleted under the runner: its chunks have nowhere to go.
            con.execute("INSERT INTO output (run, offset, stream, at, data) SELECT ?, ?, ?, ?, ?"
                        " WHERE EXISTS (SELECT 1 FROM runs WHERE pk = ?)",
                        (run.pk, offset, stream, at, data, run.pk))
            con.execute("UPDATE runs SET output_bytes = ? WHERE pk = ?",
                        (offset + len(data), run.pk))

    def save_state(self, run: Run) -> None:
        if self.db.closed:
            return  # as in save_chunk
        try:
            self._save_state(run)
        except sqlite3.Error as e:  # as in save_chunk; the run stays live, so readers
            self._log(f"state of {run.id} not stored: {e}")  # still see its true state

    def _save_state(self, run: Run) -> None:
        stored = run.pending_at if run.pending else run.captured
        workspace = json.dumps(run.workspace) if run.workspace is not None else None
        removed: list[Run] = []
        with self.db.write() as con:
            con.execute("UPDATE runs SET status = ?, exit_code = ?, started_at = ?, "
                        "finished_at = ?, truncated = ?, reason = ?, message = ?, "
                        "output_bytes = ?, workspace = ? WHERE pk = ?",
                        (run.status, run.exit_code, run.started_at, run.finished_at,
                         int(run.truncated), run.reason, run.message, stored, workspace,
                         run.pk))
            con.execute("UPDATE usage_runs SET started_at = ?, finished_at = ? WHERE run_id = ?",
                        (run.started_at, run.finished_at, run.id))
            if run.finished:
                removed = self._cap_bytes(con, run.owner, run.pk)
        self._removed(removed)
        if run.finished:
            with self._live_lock:
                if self._live.get(run.id) is run:
                    del self._live[run.id]

    def read_chunks(self, run: Run, offset: int, upto: int, max_bytes: int) -> list[Chunk]:
        out: list[Chunk] = []
        size = 0
        with self.db.read() as con:
            rows = con.execute(
                "SELECT stream, offset, at, data FROM output WHERE run = ?1 AND offset < ?3 AND "
                "offset >= coalesce((SELECT max(offset) FROM output WHERE run = ?1 AND "
                "offset <= ?2), 0) ORDER BY offset", (run.pk, offset, upto))
            for stream, start, at, data in rows:
                out.append((stream, start, bytes(data), at))
                size += len(data)
                if size >= max_bytes:
                    break
        return out

    # -- lifecycle ------------------------------------------------------------------
    def on_finished(self, run: Run) -> None:
        """Called by the runner once the run reached a finished status (already saved)."""
        with self._live_lock:
            if self._live.get(run.id) is run:
                del self._live[run.id]

    def remove(self, owner: str, run_id: str) -> bool:
        with self.db.write() as con:
            gone = self._delete(con, "id = ? AND owner = ?", (run_id, owner))
        self._removed(gone)
        return bool(gone)

    def _recover(self) -> int:
        """After a crash: runs that were active are finished, `failed` with a reason. Their
        processes died with the emulator, at a moment no one recorded: the end taken is the
        last moment the emulator is known to have been alive, the later of the last
        heartbeat (written every HEARTBEAT_SECONDS while runs are active) and the run's last
        stored output, never later. Run time (billed) ends there too."""
        now = self._clock()
        with self.db.write() as con:
            row = con.execute("SELECT value FROM meta WHERE key = 'heartbeat'").fetchone()
            beat = min(now, row[0]) if row else 0.0
            ended = con.execute(
                f"UPDATE runs SET status = 'failed', reason = ?, message = ?, "
                f"finished_at = min(?, max(coalesce(started_at, created_at), ?, "
                f"coalesce((SELECT max(at) FROM output WHERE output.run = runs.pk), 0))) "
                f"WHERE status IN ({_ACTIVE_SQL}) RETURNING id, finished_at",
                (RESTARTED, RESTARTED_MESSAGE, now, beat)).fetchall()
            con.executemany("UPDATE usage_runs SET finished_at = ? WHERE run_id = ? AND "
                            "finished_at IS NULL", [(end, run_id) for run_id, end in ended])
            # Usage rows of runs deleted while active: the heartbeat is all there is.
            con.execute("UPDATE usage_runs SET finished_at = min(?, max(coalesce(started_at, "
                        "created_at), ?)) WHERE finished_at IS NULL", (now, beat))
        return len(ended)

    def stopping(self) -> None:
        """The emulator is stopping: active runs that end from now on (killed by the stop)
        end `failed` with reason `runner_restarted`, unless they succeed first."""
        for run in self.active_runs():
            with run.cond:
                run.stop_reason = (RESTARTED, STOPPED_MESSAGE)

    def close(self) -> None:
        """Stop the maintenance thread, store what live runs have pending, close. Safe to
        call more than once (shutdown paths overlap)."""
        if self._stop.is_set() and self.db.closed:
            return
        self._stop.set()
        self._wake.set()
        if self._maintainer is not threading.current_thread():
            self._maintainer.join(10)
        for run in self.active_runs():
            run.flush()
        self.db.close()

    def _maintain(self) -> None:
        """Store quiet runs' pending output, beat the heartbeat, purge expired runs."""
        next_beat = next_purge = 0.0
        while not self._stop.is_set():
            with self._live_lock:
                live = list(self._live.values())
            now = time.monotonic()
            try:
                for run in live:
                    run.flush(older_than=0.1)
                if live and now >= next_beat:
                    next_beat = now + HEARTBEAT_SECONDS
                    with self.db.write() as con:
                        con.execute("INSERT OR REPLACE INTO meta VALUES ('heartbeat', ?)",
                                    (self._clock(),))
                if now >= next_purge:
                    next_purge = now + min(max(self._retention() / 4, 0.05), 30.0)
                    self.purge()
            except Exception as e:  # noqa: BLE001 - the thread must outlive a bad moment
                if self._stop.is_set():
                    return  # closed under us at shutdown
                self._log(f"store maintenance: {e} (retrying)")
                self._stop.wait(1.0)
            self._wake.wait(0.1 if live else min(max(next_purge - now, 0.05), 30.0))
            self._wake.clear()

    # -- reading --------------------------------------------------------------------
    def _from_row(self, row: tuple) -> Run:
        (pk, run_id, owner, seq, status, spec, exit_code, created_at, started_at,
         finished_at, output_bytes, truncated, reason, message, workspace) = row
        return Run(run_id, owner, seq, spec_from_json(spec), created_at, status=status,
                   exit_code=exit_code, started_at=started_at, finished_at=finished_at,
                   output_cap=self.config.limits.output_cap_bytes, truncated=bool(truncated),
                   reason=reason, message=message, captured=output_bytes, pk=pk, sink=self,
                   workspace=json.loads(workspace) if workspace is not None else None)

    def _live_or(self, row: tuple) -> Run:
        with self._live_lock:
            run = self._live.get(row[1])
        return run if run is not None else self._from_row(row)

    def get(self, owner: str, run_id: str) -> Run | None:
        with self._live_lock:
            run = self._live.get(run_id)
        if run is not None and run.owner == owner and not run.removed:
            return run
        with self.db.read() as con:
            row = con.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE id = ? AND owner = ?",
                              (run_id, owner)).fetchone()
        if row is None or self._expired(row[9], self._clock()):
            return None
        return self._live_or(row)

    def page(self, owner: str, limit: int, cursor: int | None, status: str | None = None,
             profile: str | None = None, since: float | None = None
             ) -> tuple[list[Run], int | None]:
        """Newest first, `limit` runs older than `cursor`; and the next cursor, if any.

        One walk down the index for the filter (owner[, profile][, status], seq) from the
        cursor: O(limit) rows read, whatever the number of runs or their output."""
        where, params = ["owner = ?"], [owner]
        if cursor is not None:
            where.append("seq < ?")
            params.append(cursor)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if profile is not None:
            where.append("profile = ?")
            params.append(profile)
        with self.db.read() as con:
            if since is not None:
                # Runs created since `since` have a sequence number from the first of them
                # on: a bound for the walk, so an old `since` over many runs stays a range.
                first = con.execute("SELECT min(seq) FROM runs WHERE owner = ? AND "
                                    "created_at >= ?", (owner, since)).fetchone()[0]
                if first is None:
                    return [], None
                where += ["seq >= ?", "created_at >= ?"]
                params += [first, since]
            where.append("(finished_at IS NULL OR finished_at > ?)")
            params.append(self._clock() - self._retention())
            rows = con.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE {' AND '.join(where)} "
                               "ORDER BY seq DESC LIMIT ?", (*params, limit + 1)).fetchall()
        runs = [self._live_or(row) for row in rows[:limit]]
        return runs, (runs[-1].seq if len(rows) > limit else None)

    def count(self) -> int:
        with self.db.read() as con:
            return con.execute("SELECT count(*) FROM runs WHERE finished_at IS NULL OR "
                               "finished_at > ?", (self._clock() - self._retention(),)
                               ).fetchone()[0]

    def active_runs(self) -> list[Run]:
        with self._live_lock:
            return [r for r in self._live.values() if r.status not in FINISHED]

    def usage(self, owner: str) -> dict[str, Any]:
        """What the account's plan allows and what it used in the current period (for
        GET /usage), and what it keeps stored. Periods count from the account's first
        request; deleted runs still count for their period."""
        plan = self.config.plan_for(owner)
        now = self._clock()
        with self.db.write() as con:  # a first request starts the account's periods
            self._ensure_account(con, owner, now)
            start = self._period(con, owner, plan.period_seconds, now)
            runs, seconds = self._period_use(con, owner, start, now)
            active = self._active_count(con, owner)
            stored_runs, stored_bytes = con.execute(
                "SELECT stored_runs, stored_bytes FROM accounts WHERE owner = ?",
                (owner,)).fetchone()
        return {"plan": plan, "period_start": start,
                "period_end": start + plan.period_seconds, "runs": runs,
                "run_seconds": round(seconds, 3), "concurrent_runs": active,
                "stored_runs": stored_runs, "stored_bytes": stored_bytes}
