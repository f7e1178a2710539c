"""Helpers for the ContainersClient unit tests: hand-made JWTs, a fake clock whose time
only moves when the client sleeps, canned run and error bodies, and the table of calls."""

from __future__ import annotations

from bus_containers.token import ALL_SCOPES
from tests.support import fakes
from tests.support.fakes import FakeClock, error_body

API = "https://api.example.test"
BASE = API + "/api/v1/containers"
ACCOUNT_WORDS = ("account", "account_id", "owner", "sub", "user")
__all__ = ["ALL_SCOPES", "FakeClock", "error_body"]


def make_token(*, scope: str | None = ALL_SCOPES, exp: float | None = None, **claims) -> str:
    return fakes.make_jwt(scope=scope, exp=exp, **claims)


TOKEN = make_token()


def run_object(run_id: str = "run_abc", status: str = "succeeded", **fields) -> dict:
    """The shared run object, with this suite's id and output."""
    return fakes.run_object(run_id, status, **{"command": ["echo", "hi"], "stdout": "hi\n",
                                               **fields})


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
