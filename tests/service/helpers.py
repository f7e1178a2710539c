"""Helpers for the ContainersClient unit tests: hand-made JWTs, a fake clock whose time
only moves when the client sleeps, canned run and error bodies, and the table of calls."""

from __future__ import annotations

import base64
import json
import time

API = "https://api.example.test"
BASE = API + "/api/v1/containers"
ALL_SCOPES = "container:read container:run container:delete"
ACCOUNT_WORDS = ("account", "account_id", "owner", "sub", "user")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_token(*, scope: str | None = ALL_SCOPES, exp: float | None = None, **claims) -> str:
    """An unsigned-looking JWT (header.payload.signature) with the given claims.

    `exp` defaults to an hour from now; pass scope=None to leave the claim out."""
    payload = {"sub": "6a1f0e5c-0000-4000-8000-000000000001"}
    if scope is not None:
        payload["scope"] = scope
    payload["exp"] = int(time.time()) + 3600 if exp is None else exp
    payload.update(claims)
    header = {"alg": "HS256", "typ": "JWT"}
    return ".".join([_b64(json.dumps(header).encode()), _b64(json.dumps(payload).encode()),
                     _b64(b"not-a-real-signature-0123456789")])


TOKEN = make_token()


class FakeClock:
    """`clock()` for the client's deadline; `sleep()` records each delay and moves time."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, f"negative sleep {seconds}"
        self.sleeps.append(seconds)
        self.now += seconds


def run_object(run_id: str = "run_abc", status: str = "succeeded", **fields) -> dict:
    run = {
        "id": run_id, "status": status, "profile": "codex", "command": ["echo", "hi"],
        "exit_code": 0 if status == "succeeded" else None, "stdout": "hi\n", "stderr": "",
        "output_truncated": False, "created_at": "2025-01-01T00:00:00Z",
        "started_at": "2025-01-01T00:00:01Z",
        "finished_at": "2025-01-01T00:00:02Z" if status in (
            "succeeded", "failed", "cancelled", "timed_out") else None,
    }
    run.update(fields)
    return run


def error_body(code: str, message: str = "nope", **extra) -> dict:
    return {"error": {"code": code, "message": message, **extra}}


RUN_URL = BASE + "/runs/run_abc"

# (name, HTTP method, URL, call) for every public method that makes one request
CALLS = [
    ("status", "GET", BASE + "/status", lambda c: c.status()),
    ("create_run", "POST", BASE + "/runs", lambda c: c.create_run(["echo", "hi"])),
    ("list_runs", "GET", BASE + "/runs", lambda c: c.list_runs(limit=5)),
    ("get_run", "GET", RUN_URL, lambda c: c.get_run("run_abc")),
    ("delete_run", "DELETE", RUN_URL, lambda c: c.delete_run("run_abc")),
]
CALL_IDS = [call[0] for call in CALLS]


def ok_response(name: str) -> dict:
    """A well-formed success answer for the call `name`."""
    return {
        "status": {"status_code": 200, "json": {"status": "ready"}},
        "create_run": {"status_code": 201, "json": run_object()},
        "list_runs": {"status_code": 200, "json": {"runs": [run_object()], "next_cursor": None}},
        "get_run": {"status_code": 200, "json": run_object()},
        "delete_run": {"status_code": 204},
    }[name]


def assert_no_token(text: str) -> None:
    assert TOKEN not in text
    for part in TOKEN.split("."):
        assert part not in text
