"""Runs in memory: ownership, idempotency keys, plans and quotas, pagination, retention.

One lock guards the indexes; each run's own condition guards its state and output. Per
account, runs are kept in creation order (with a parallel list of sequence numbers), so a
page is a bisection plus `limit` steps, whatever the number of runs.
"""

from __future__ import annotations

import bisect
import heapq
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .config import Config
from .errors import ApiError, invalid
from .model import FINISHED, Run, RunSpec, new_run_id

# Cursors are opaque to clients. Inside: the per-account sequence number of the last run
# of the previous page. Per account, so a cursor reveals nothing about other accounts; and
# every string of this shape is a valid position, so the OpenAPI pattern says it all.
CURSOR = re.compile(r"^c([0-9]{1,18})$")


def encode_cursor(seq: int) -> str:
    return f"c{seq}"


def decode_cursor(cursor: str) -> int:
    m = CURSOR.match(cursor)
    if not m:
        raise invalid("cursor is not a cursor returned by this API")
    return int(m.group(1))


@dataclass
class _Account:
    runs: list[Run] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    active: set[str] = field(default_factory=set)
    last_seq: int = 0
    # Metering for the current period. Periods follow one another from the account's
    # first request; deleting a run does not give its run or its seconds back.
    period_start: float = 0.0
    period_runs: int = 0
    period_run_seconds: float = 0.0  # of the period's finished runs (active ones: live)

    def next_seq(self) -> int:
        self.last_seq += 1
        return self.last_seq


class RunStore:
    def __init__(self, config: Config, clock=time.time):
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._runs: dict[str, Run] = {}
        self._accounts: dict[str, _Account] = {}
        self._idem: dict[tuple[str, str], tuple[RunSpec, str]] = {}
        self._idem_of_run: dict[str, tuple[str, str]] = {}
        self._expiry: list[tuple[float, int, str]] = []  # heap of (finished_at, seq, id)
        # Told of each run removed (deleted or expired): its workspace tree goes with it.
        self.on_removed: Callable[[Run], None] | None = None

    # -- creation -------------------------------------------------------------------
    def create(self, owner: str, spec: RunSpec, idem_key: str | None,
               billing_url: str) -> tuple[Run, bool]:
        """(run, created). An idempotent replay returns the existing run, created=False.

        Billing and quota are checked here, under the lock, before any process exists.
        """
        with self._lock:
            self._expire()
            if idem_key is not None:
                known = self._idem.get((owner, idem_key))
                if known is not None:
                    known_spec, run_id = known
                    if known_spec != spec:
                        raise ApiError(
                            422, "idempotency_conflict",
                            "this Idempotency-Key was already used with a different request",
                            guidance="Use a new Idempotency-Key for a different request.")
                    return self._runs[run_id], False
            account = self._account(owner)
            self._check_plan(owner, account, billing_url)
            now = self._clock()
            run = Run(new_run_id(), owner, account.next_seq(), spec, now,
                      output_cap=self.config.limits.output_cap_bytes)
            self._insert(run, account)
            account.active.add(run.id)
            account.period_runs += 1
            if idem_key is not None:
                self._idem[(owner, idem_key)] = (spec, run.id)
                self._idem_of_run[run.id] = (owner, idem_key)
            return run, True

    def _check_plan(self, owner: str, account: _Account, billing_url: str) -> None:
        plan = self.config.plan_for(owner)
        if not plan.billing:
            raise ApiError(
                402, "billing_required",
                f"billing is not set up for this account (plan {plan.name!r})",
                guidance=f"Set up billing for this account at {billing_url}, then retry.",
                url=billing_url)
        self._roll_period(account, plan.period_seconds)
        if plan.runs_per_period is not None and account.period_runs >= plan.runs_per_period:
            raise ApiError(
                429, "quota_exhausted",
                f"the plan {plan.name!r} allows {plan.runs_per_period} runs per "
                f"{plan.period_seconds:g} seconds, and they are used up",
                guidance=f"Wait for the period to end, or upgrade the plan at {billing_url}.",
                url=billing_url)
        limit = plan.run_seconds_per_period
        if limit is not None and self._run_seconds(account) >= limit:
            raise ApiError(
                429, "quota_exhausted",
                f"the plan {plan.name!r} allows {limit} run-seconds per "
                f"{plan.period_seconds:g} seconds, and they are used up",
                guidance=f"Wait for the period to end, or upgrade the plan at {billing_url}.",
                url=billing_url)
        if plan.concurrent_runs is not None and len(account.active) >= plan.concurrent_runs:
            raise ApiError(
                429, "quota_exhausted",
                f"the plan {plan.name!r} allows {plan.concurrent_runs} concurrent runs, "
                "and that many are active",
                guidance="Wait for a run to finish (or delete one), or upgrade the plan at "
                         f"{billing_url}.",
                url=billing_url)

    def seed(self, owner: str, count: int, status: str, profile: str,
             age_seconds: float) -> list[str]:
        """Insert finished runs with no process behind them (benchmarks, pagination tests)."""
        finished_at = self._clock() - age_seconds
        ids = []
        with self._lock:
            account = self._account(owner)
            for i in range(count):
                spec = RunSpec(profile, ("echo", f"seed-{i}"), 1)
                run = Run(new_run_id(), owner, account.next_seq(), spec, finished_at,
                          status=status, exit_code=0 if status == "succeeded" else None,
                          started_at=finished_at, finished_at=finished_at)
                self._insert(run, account)
                heapq.heappush(self._expiry, (finished_at, run.seq, run.id))
                ids.append(run.id)
            self._expire()
        return ids

    def _insert(self, run: Run, account: _Account) -> None:
        self._runs[run.id] = run
        account.runs.append(run)
        account.seqs.append(run.seq)

    def _account(self, owner: str) -> _Account:
        account = self._accounts.get(owner)
        if account is None:
            account = self._accounts[owner] = _Account(period_start=self._clock())
        return account

    def set_plan(self, owner: str, plan: str) -> None:
        """Put `owner` on `plan` (a known plan name), under the lock quotas are checked in."""
        with self._lock:
            self.config.accounts[owner] = plan

    # -- metering -------------------------------------------------------------------
    def _roll_period(self, account: _Account, period_seconds: float) -> None:
        """Move the account to the period that holds now, with fresh counters if it ended."""
        now = self._clock()
        if now < account.period_start + period_seconds:
            return
        elapsed = (now - account.period_start) // period_seconds
        account.period_start += elapsed * period_seconds
        account.period_runs = 0
        account.period_run_seconds = 0.0

    def _run_seconds(self, account: _Account) -> float:
        """The period's run-seconds: finished runs, plus active runs of this period so far."""
        live = sum(self._runs[i].run_seconds for i in account.active
                   if i in self._runs and self._runs[i].created_at >= account.period_start)
        return account.period_run_seconds + live

    def usage(self, owner: str) -> dict:
        """What the account's plan allows and what it used in the current period."""
        plan = self.config.plan_for(owner)
        with self._lock:
            account = self._account(owner)
            self._roll_period(account, plan.period_seconds)
            return {
                "plan": plan,
                "period_start": account.period_start,
                "period_end": account.period_start + plan.period_seconds,
                "runs": account.period_runs,
                "run_seconds": self._run_seconds(account),
                "concurrent_runs": len(account.active),
            }

    # -- lifecycle ------------------------------------------------------------------
    def on_finished(self, run: Run) -> None:
        """Called once the run reached a finished status: frees its concurrency slot."""
        plan = self.config.plan_for(run.owner)
        with self._lock:
            account = self._accounts.get(run.owner)
            if account is not None and run.id in account.active:
                account.active.discard(run.id)
                self._roll_period(account, plan.period_seconds)
                if run.created_at >= account.period_start:
                    account.period_run_seconds += run.run_seconds
            if run.id in self._runs:
                heapq.heappush(self._expiry, (run.finished_at or self._clock(), run.seq, run.id))

    def remove(self, owner: str, run_id: str) -> Run | None:
        with self._lock:
            run = self._runs.get(run_id)
            if run is None or run.owner != owner:
                return None
            self._remove(run)
            return run

    def _remove(self, run: Run) -> None:
        del self._runs[run.id]
        account = self._accounts[run.owner]
        i = bisect.bisect_left(account.seqs, run.seq)
        if i < len(account.seqs) and account.seqs[i] == run.seq:
            del account.seqs[i]
            del account.runs[i]
        account.active.discard(run.id)
        key = self._idem_of_run.pop(run.id, None)
        if key is not None:
            self._idem.pop(key, None)
        if self.on_removed is not None:
            self.on_removed(run)

    def _expire(self) -> None:
        """Retention, lazily: drop finished runs older than the limit (heap, O(log n))."""
        cutoff = self._clock() - self.config.limits.retention_seconds
        while self._expiry and self._expiry[0][0] <= cutoff:
            _, _, run_id = heapq.heappop(self._expiry)
            run = self._runs.get(run_id)
            if run is not None and run.finished:
                self._remove(run)

    # -- reading --------------------------------------------------------------------
    def get(self, owner: str, run_id: str) -> Run | None:
        with self._lock:
            self._expire()
            run = self._runs.get(run_id)
            return run if run is not None and run.owner == owner else None

    def page(self, owner: str, limit: int, cursor: int | None, status: str | None,
             profile: str | None = None, since: float | None = None
             ) -> tuple[list[Run], int | None]:
        """Newest first, `limit` runs older than `cursor` (with this status and profile,
        created at or after `since`); and the next cursor, if any."""
        with self._lock:
            self._expire()
            account = self._accounts.get(owner)
            if account is None:
                return [], None
            i = len(account.seqs) if cursor is None else bisect.bisect_left(account.seqs, cursor)
            out: list[Run] = []
            more = False
            while i > 0:
                i -= 1
                run = account.runs[i]
                # No early stop on `since`: seeded runs (and a clock set back) break the
                # link between sequence and creation time.
                if ((status is None or run.status == status)
                        and (profile is None or run.spec.profile == profile)
                        and (since is None or run.created_at >= since)):
                    if len(out) == limit:
                        more = True
                        break
                    out.append(run)
            return out, (out[-1].seq if more else None)

    def count(self) -> int:
        with self._lock:
            self._expire()
            return len(self._runs)

    def active_runs(self) -> list[Run]:
        with self._lock:
            return [r for r in self._runs.values() if r.status not in FINISHED]
