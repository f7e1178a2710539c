"""Small helpers for the emulator tests (raw HTTP with requests; no client code)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import requests

from tests.support.emulator import Emulator, alive

TIMEOUT = 30


def new_sub() -> str:
    return str(uuid.uuid4())


class Api:
    """One account's view of the API: `api.post_run(...)`, `api.get(...)`."""

    def __init__(self, emu: Emulator, sub: str | None = None, scope: str | None = None):
        self.emu = emu
        self.sub = sub or new_sub()
        self.token = emu.token(self.sub) if scope is None else emu.token(self.sub, scope)
        self.headers = emu.auth(self.token)

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        return requests.request(method, self.emu.api(path), headers=headers,
                                timeout=kw.pop("timeout", TIMEOUT), **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.request("GET", path, **kw)

    def post_run(self, command: list[str], profile: str = "codex", wait: float | None = None,
                 **fields: Any) -> requests.Response:
        headers = {"Prefer": f"wait={wait:g}"} if wait is not None else {}
        headers.update(fields.pop("headers", {}))
        return self.request("POST", "/runs", json={"profile": profile, "command": command,
                                                   **fields}, headers=headers)

    def run(self, command: list[str], **fields: Any) -> dict[str, Any]:
        """Create a run and return it finished (the server holds the answer)."""
        r = self.post_run(command, wait=20, **fields)
        assert r.status_code in (201, 202), r.text
        return self.wait(r.json()["id"])

    def wait(self, run_id: str) -> dict[str, Any]:
        """The run once finished: following its logs blocks server-side until the end."""
        with self.get(f"/runs/{run_id}/logs", params={"follow": "true"}, stream=True) as r:
            assert r.status_code == 200, r.text
            for _ in r.iter_lines():
                pass
        run = self.get(f"/runs/{run_id}").json()
        assert run["finished_at"], run
        return run

    def logs(self, run_id: str, **params: Any) -> list[dict[str, Any]]:
        r = self.get(f"/runs/{run_id}/logs", params=params)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in r.content.splitlines()]


def output_of(lines: list[dict[str, Any]], stream: str | None = None) -> bytes:
    return b"".join(base64.b64decode(x["data_b64"]) for x in lines
                    if "data_b64" in x and (stream is None or x["stream"] == stream))


def assert_error(r: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    error = r.json()["error"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    return error


def wait_until(predicate, timeout: float = 10.0, what: str = "condition"):
    """Poll an external process state with a deadline (no event to wait on)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def sleepers(emu: Emulator) -> dict[int, str]:
    """The emulator's descendant processes running `sleep`."""
    out = {}
    for pid, start in emu.descendants().items():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().split(b"\0")[0].endswith(b"sleep"):
                    out[pid] = start
        except OSError:
            pass
    return out


__all__ = ["Api", "alive", "assert_error", "new_sub", "output_of", "sleepers", "wait_until"]
