"""The one place for test doubles every layer uses: fake JWTs (unsigned-looking, with the
claims a test wants), canned run objects and error bodies, and the fake clock whose time
moves only when the client sleeps."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field

from bus_containers.token import ALL_SCOPES

SIGNATURE = "S1GNATURE-never-shown-ZyX987"  # tests assert it never shows
SUB = "11111111-2222-3333-4444-555555555555"
FINISHED_STATUSES = ("succeeded", "failed", "cancelled", "timed_out")


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def make_jwt(scope: str | None = ALL_SCOPES, exp: float | None = None, **claims) -> str:
    """header.payload.signature with the given claims; `exp` defaults to an hour from now,
    `scope=None` leaves the claim out."""
    payload = {"sub": SUB, "exp": int(time.time() + 3600) if exp is None else exp}
    if scope is not None:
        payload["scope"] = scope
    payload.update(claims)
    return f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(payload)}.{SIGNATURE}"


def run_object(run_id: str = "run_1", status: str = "succeeded", **fields) -> dict:
    """A run as the API sends it (CONTRACT 4); `fields` override any key."""
    run = {"id": run_id, "status": status, "profile": "codex", "command": ["printf", "OK"],
           "exit_code": 0 if status == "succeeded" else None, "stdout": "", "stderr": "",
           "output_truncated": False, "created_at": "2025-01-01T00:00:00Z",
           "started_at": "2025-01-01T00:00:01Z",
           "finished_at": "2025-01-01T00:00:02Z" if status in FINISHED_STATUSES else None}
    run.update(fields)
    return run


def error_body(code: str, message: str = "nope", **extra) -> dict:
    return {"error": {"code": code, "message": message, **extra}}


@dataclass
class FakeClock:
    """The client's `clock` and `sleep`: sleeping records the delay and moves time on."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, f"negative sleep {seconds}"
        self.sleeps.append(seconds)
        self.now += seconds
