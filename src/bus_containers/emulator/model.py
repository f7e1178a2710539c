"""One run: its state, its output as written, and how it is shown in the API.

A run's durable home is the store's database; a `Run` object is the live view of it. While
the run is active, the store keeps its object so that writers (the runner) and readers
(logs followers, `Prefer: wait`) meet on one condition variable; a finished run is read back
from the database when asked for. Output is not held whole in memory: bytes go to a small
pending tail (one stream, at most MERGE_BYTES, at most FLUSH_AFTER seconds old) that is
written to the database as one chunk; readers get the stored chunks and then the tail, so a
follower sees every byte as soon as it is written.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from .stdin import StdinFeed

FINISHED = frozenset({"succeeded", "failed", "cancelled", "timed_out"})
STATUSES = ("queued", "starting", "running", *sorted(FINISHED))
ACTIVE = tuple(s for s in STATUSES if s not in FINISHED)
MERGE_BYTES = 65536
# Writes closer together than this share a chunk (and its time): a program writing a byte
# at a time costs one chunk (one row) per window, and `logs --since` / `-t` stay this
# precise. A chunk older than this is stored at the next write, or by the store's flusher
# when the run goes quiet.
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


def spec_to_json(spec: RunSpec) -> str:
    """Canonical JSON of a spec: equal specs give equal text (the stored fingerprint)."""
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=dataclasses.asdict)


def spec_from_json(text: str) -> RunSpec:
    data = json.loads(text)
    known = {f.name for f in dataclasses.fields(RunSpec)}
    return RunSpec(**{k: _tuples(v) for k, v in data.items() if k in known})


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


class RunSink(Protocol):
    """Where a run's changes go (the store): each call is one committed transaction."""

    def save_chunk(self, run: Run, stream: str, offset: int, at: float, data: bytes
                   ) -> None: ...

    def save_state(self, run: Run) -> None: ...

    def read_chunks(self, run: Run, offset: int, upto: int, max_bytes: int
                    ) -> list[Chunk]: ...


Chunk = tuple[str, int, bytes, float]  # (stream, offset, data, time written)


@dataclass(eq=False)
class Run:
    id: str
    owner: str
    seq: int  # per account, for cursors
    spec: RunSpec
    created_at: float
    status: str = "queued"
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    output_cap: int = 1024 * 1024
    truncated: bool = False
    reason: str | None = None
    message: str | None = None
    captured: int = 0  # bytes of output kept so far (stored + pending)
    pk: int = 0  # the database row
    sink: RunSink | None = None
    # The pending tail: bytes of one stream from offset `pending_at`, first written at
    # `pending_time`. Everything before `pending_at` is in the database.
    pending: bytearray = field(default_factory=bytearray)
    pending_stream: str = "stdout"
    pending_at: int = 0
    pending_time: float = 0.0
    # Notified on new output and on finish: the logs endpoint and Prefer: wait sleep on it.
    cond: threading.Condition = field(default_factory=threading.Condition)
    cancel_requested: bool = False
    removed: bool = False  # deleted from the store: nothing more is written
    # (reason, message) when the emulator, not the command, ends the run (it is stopping).
    stop_reason: tuple[str, str] | None = None
    # Work in (issue 10): the pipe a PUT /stdin feeds (runs created with stdin only), and
    # what the uploaded workspace held (the run's /workspace; stored with the run).
    stdin_feed: StdinFeed | None = None
    workspace: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    # -- writing (the runner) -------------------------------------------------------
    def add_output(self, stream: str, data: bytes, now: float | None = None) -> None:
        """Keep `data` up to the cap; past it, drop the bytes and flag the truncation."""
        now = time.time() if now is None else now
        with self.cond:
            room = self.output_cap - self.captured
            if len(data) > room:
                if not self.truncated:
                    self.truncated = True
                    self._save_state()  # `output_truncated` shows at once, not at the end
                data = data[:max(room, 0)]
            if data:
                if self.pending and (stream != self.pending_stream
                                     or len(self.pending) >= MERGE_BYTES
                                     or now - self.pending_time >= MERGE_SECONDS):
                    self._flush()
                if not self.pending:
                    self.pending_stream, self.pending_at, self.pending_time = (
                        stream, self.captured, now)
                self.pending += data
                self.captured += len(data)
            self.cond.notify_all()

    def flush(self, older_than: float = 0.0) -> None:
        """Store the pending tail if it is at least `older_than` seconds old."""
        with self.cond:
            if self.pending and time.time() - self.pending_time >= older_than:
                self._flush()

    def _flush(self) -> None:
        data = bytes(self.pending)
        self.pending.clear()
        if self.sink is not None and not self.removed:
            self.sink.save_chunk(self, self.pending_stream, self.pending_at,
                                 self.pending_time, data)

    def _save_state(self) -> None:
        if self.sink is not None and not self.removed:
            self.sink.save_state(self)

    def set_running(self) -> None:
        with self.cond:
            if self.finished:
                return
            self.status = "running"
            self.started_at = time.time()
            self._save_state()
            self.cond.notify_all()

    def finish(self, status: str, exit_code: int | None, *, reason: str | None = None,
               message: str | None = None) -> None:
        with self.cond:
            if self.finished:
                return
            if self.pending:
                self._flush()
            if self.stop_reason is not None and status != "succeeded":
                status, exit_code = "failed", None
                reason, message = self.stop_reason
            self.status = status
            self.exit_code = exit_code
            self.finished_at = time.time()
            self.reason, self.message = reason, message
            self._save_state()
            self.cond.notify_all()

    # -- reading --------------------------------------------------------------------
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

    def chunks_from(self, offset: int, max_bytes: int = 1 << 20
                    ) -> tuple[list[Chunk], bool]:
        """Output from byte `offset` on (a chunk split if needed), about `max_bytes` of it,
        and whether that is all there will ever be (the run is finished and all is read)."""
        with self.cond:
            # Stored chunks never change, so the database is read outside the condition;
            # the tail is copied under it. Together: every byte up to `captured`, once.
            stored_upto = self.pending_at if self.pending else self.captured
            tail = (self.pending_stream, self.pending_at, bytes(self.pending),
                    self.pending_time) if self.pending else None
            captured, finished = self.captured, self.finished
        out: list[Chunk] = []
        gone = False  # the run was deleted (or expired) under us: its chunks are no more
        if offset < stored_upto:
            rows = self.sink.read_chunks(self, offset, stored_upto, max_bytes) if (
                self.sink is not None) else []
            gone = not rows
            for stream, start, data, at in rows:
                skip = max(offset - start, 0)
                out.append((stream, start + skip, data[skip:], at))
        end = out[-1][1] + len(out[-1][2]) if out else offset
        if tail is not None and end >= stored_upto and offset < captured:
            stream, start, data, at = tail
            skip = max(offset - start, 0)
            out.append((stream, start + skip, data[skip:], at))
            end = captured
        return out, finished and (end >= captured or gone)

    def output(self, stream: str) -> bytes:
        parts, pos = [], 0
        while True:
            chunks, final = self.chunks_from(pos)
            parts += [data for name, _, data, _ in chunks if name == stream]
            if chunks:
                pos = chunks[-1][1] + len(chunks[-1][2])
            if final or not chunks:
                return b"".join(parts)

    @property
    def run_seconds(self) -> float:
        """Time the command has run (so far, while it runs): what the plan meters."""
        with self.cond:
            if self.started_at is None:
                return 0.0
            end = self.finished_at if self.finished_at is not None else time.time()
            return max(0.0, end - self.started_at)

    def to_json(self, summary: bool = False) -> dict[str, Any]:
        """The API's run object; a summary (lists) has `output_bytes` instead of the output,
        so a page costs the same whatever its runs printed."""
        with self.cond:
            body: dict[str, Any] = {
                "id": self.id,
                "status": self.status,
                "profile": self.spec.profile,
                "command": list(self.spec.command),
                "exit_code": self.exit_code,
                "output_truncated": self.truncated,
                "output_bytes": self.captured,
                "created_at": rfc3339(self.created_at),
                "started_at": rfc3339(self.started_at),
                "finished_at": rfc3339(self.finished_at),
                "timeout_seconds": self.spec.timeout_seconds,
                "usage": {"run_seconds": round(self.run_seconds, 3)},
            }
            if self.workspace is not None:
                body["workspace"] = {**self.workspace, **dict(self.spec.workspace_info)}
            if self.reason is not None:
                body["reason"] = self.reason
                body["message"] = self.message or self.reason
        if not summary:
            body["stdout"] = self.output("stdout").decode("utf-8", errors="replace")
            body["stderr"] = self.output("stderr").decode("utf-8", errors="replace")
        return body
