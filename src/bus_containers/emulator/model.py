"""One run: its state, its captured output, and how it is shown in the API."""

from __future__ import annotations

import bisect
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .stdin import StdinFeed

FINISHED = frozenset({"succeeded", "failed", "cancelled", "timed_out"})
STATUSES = ("queued", "starting", "running", *sorted(FINISHED))
MERGE_BYTES = 65536
# Writes closer together than this share a chunk (and its time): a program writing a byte
# at a time costs one chunk per window, and `logs --since` / `-t` stay this precise.
MERGE_SECONDS = 0.01


def new_run_id() -> str:
    return "run_" + secrets.token_hex(12)


def rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    dt = datetime.fromtimestamp(t, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class RunSpec:
    """What a client asked for, normalised: also the idempotency fingerprint."""

    profile: str
    command: tuple[str, ...]
    timeout_seconds: int
    env: tuple[tuple[str, str], ...] = ()
    stdin: bool = False
    workspace: str | None = None  # the sha256 of an upload of the same account
    workspace_info: tuple[tuple[str, Any], ...] = ()  # base_commit, dirty: as the client said


@dataclass(eq=False)
class Run:
    id: str
    owner: str
    seq: int
    spec: RunSpec
    created_at: float
    status: str = "queued"
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    output_cap: int = 1024 * 1024
    truncated: bool = False
    # Combined output, in arrival order: (stream, offset, bytes); `offsets` mirrors the
    # offsets so the logs endpoint finds a starting chunk by bisection. Consecutive writes
    # to one stream are merged up to MERGE_BYTES, so a program writing a byte at a time
    # does not cost a tuple per byte (readers address bytes, not chunks, so that is safe).
    chunks: list[tuple[str, int, bytearray]] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # when each chunk's first byte came
    captured: int = 0
    # Notified on new output and on finish: the logs endpoint and Prefer: wait sleep on it.
    cond: threading.Condition = field(default_factory=threading.Condition)
    cancel_requested: bool = False
    # Work in (issue 10): the pipe a PUT /stdin feeds (runs created with stdin only), and
    # what the uploaded workspace held (the run's /workspace).
    stdin_feed: StdinFeed | None = None
    workspace: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def add_output(self, stream: str, data: bytes, now: float | None = None) -> None:
        """Keep `data` up to the cap; past it, drop the bytes and flag the truncation."""
        now = time.time() if now is None else now
        with self.cond:
            room = self.output_cap - self.captured
            if len(data) > room:
                self.truncated = True
                data = data[:max(room, 0)]
            if data:
                last = self.chunks[-1] if self.chunks else None
                if (last is not None and last[0] == stream and len(last[2]) < MERGE_BYTES
                        and now - self.times[-1] < MERGE_SECONDS):
                    last[2].extend(data)
                else:
                    self.chunks.append((stream, self.captured, bytearray(data)))
                    self.offsets.append(self.captured)
                    self.times.append(now)
                self.captured += len(data)
            self.cond.notify_all()

    def set_running(self) -> None:
        with self.cond:
            self.status = "running"
            self.started_at = time.time()
            self.cond.notify_all()

    def finish(self, status: str, exit_code: int | None) -> None:
        with self.cond:
            if self.finished:
                return
            self.status = status
            self.exit_code = exit_code
            self.finished_at = time.time()
            self.cond.notify_all()

    def wait_finished(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.finished, timeout=timeout)

    def wait_output_or_finished(self, timeout: float, grace: float) -> None:
        """Until the run finishes or has written its first bytes (then up to `grace` more
        for it to finish, so a quick command that prints still ends in one answer), or
        until `timeout` has passed."""
        deadline = time.monotonic() + timeout
        with self.cond:
            self.cond.wait_for(lambda: self.finished or self.captured > 0, timeout=timeout)
            if not self.finished and self.captured > 0:
                self.cond.wait_for(lambda: self.finished,
                                   timeout=max(0.0, min(grace, deadline - time.monotonic())))

    def chunks_from(self, offset: int) -> tuple[list[tuple[str, int, bytes, float]], bool]:
        """Output from byte `offset` on (a chunk split if needed) as (stream, offset, bytes,
        time written), and whether it is final."""
        with self.cond:
            i = max(bisect.bisect_right(self.offsets, offset) - 1, 0)
            out = []
            for (stream, start, data), written in zip(self.chunks[i:], self.times[i:], strict=True):
                if start + len(data) <= offset:
                    continue
                skip = max(offset - start, 0)
                out.append((stream, start + skip, bytes(data[skip:]), written))
            return out, self.finished

    @property
    def run_seconds(self) -> float:
        """Time the command has run (so far, while it runs): what the plan meters."""
        with self.cond:
            if self.started_at is None:
                return 0.0
            end = self.finished_at if self.finished_at is not None else time.time()
            return max(0.0, end - self.started_at)

    def output(self, stream: str) -> bytes:
        # Derived from the chunks rather than kept twice: output is the bulk of memory.
        with self.cond:
            return b"".join(data for name, _, data in self.chunks if name == stream)

    def to_json(self) -> dict[str, Any]:
        with self.cond:
            body = {
                "id": self.id,
                "status": self.status,
                "profile": self.spec.profile,
                "command": list(self.spec.command),
                "exit_code": self.exit_code,
                "stdout": self.output("stdout").decode("utf-8", errors="replace"),
                "stderr": self.output("stderr").decode("utf-8", errors="replace"),
                "output_truncated": self.truncated,
                "created_at": rfc3339(self.created_at),
                "started_at": rfc3339(self.started_at),
                "finished_at": rfc3339(self.finished_at),
                "timeout_seconds": self.spec.timeout_seconds,
                "usage": {"run_seconds": round(self.run_seconds, 3)},
            }
            if self.workspace is not None:
                body["workspace"] = {**self.workspace, **dict(self.spec.workspace_info)}
            return body
