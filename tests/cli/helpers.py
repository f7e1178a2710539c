"""Helpers shared by the CLI tests: a fake JWT, run objects, the fake clock, and `Cli`, the
invoker behind the `cli` fixture with the central checks."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from click.testing import CliRunner, Result

from bus_containers.cli import containers

API = "http://127.0.0.1:8080"  # settings.DEFAULT_API_URL: used when nothing else is set
BASE = API + "/api/v1/containers"
ALL_SCOPES = "container:read container:run container:delete billing:read"
SIGNATURE = "S1GNATURE-never-shown-ZyX987"
FORBIDDEN_FIELDS = {"account", "account_id", "owner", "sub", "user"}


def _b64(data: dict) -> str:
    raw = json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def make_jwt(scope: str | None = ALL_SCOPES, exp: float | None = None, **claims) -> str:
    payload = {"sub": "11111111-2222-3333-4444-555555555555",
               "exp": int(time.time() + 3600) if exp is None else exp, **claims}
    if scope is not None:
        payload["scope"] = scope
    return f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(payload)}.{SIGNATURE}"


TOKEN = make_jwt()


def run_obj(run_id: str = "run_1", status: str = "succeeded", **fields) -> dict:
    run = {"id": run_id, "status": status, "profile": "codex", "command": ["printf", "OK"],
           "exit_code": 0 if status == "succeeded" else None, "stdout": "", "stderr": "",
           "output_truncated": False, "created_at": "2025-01-01T00:00:00Z",
           "started_at": "2025-01-01T00:00:01Z",
           "finished_at": None if status in ("queued", "starting", "running")
           else "2025-01-01T00:00:02Z"}
    run.update(fields)
    return run


def error_body(code: str, message: str = "nope", **extra) -> dict:
    return {"error": {"code": code, "message": message, **extra}}


@dataclass
class FakeTime:
    """The client's clock and sleep: sleeping advances the clock, instantly."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def _request_fields(request) -> set[str]:
    names = {k.lower() for k, _ in parse_qsl(urlsplit(request.url).query,
                                               keep_blank_values=True)}
    names |= {k.lower() for k in request.headers}
    if request.body:
        try:
            body = json.loads(request.body)
        except ValueError:
            body = None
        if isinstance(body, dict):
            names |= {k.lower() for k in body}
    return names


@dataclass
class Cli:
    requests_mock: object
    config_dir: str
    secrets: list[str] = field(default_factory=lambda: [TOKEN, SIGNATURE])

    def __call__(self, *args: str, env: dict[str, str | None] | None = None, obj=None,
                 group=containers, traceback_ok: bool = False, token: str | None = TOKEN,
                 secrets: tuple[str, ...] = ()) -> Result:
        full_env: dict[str, str | None] = {"BUS_AI_TOKEN": token,
                                           "BUS_CONFIG_DIR": self.config_dir}
        full_env.update(env or {})
        before = len(self.requests_mock.request_history)
        result = CliRunner().invoke(group, list(args), env=full_env, obj=obj,
                                    catch_exceptions=True)
        output = result.stdout + result.stderr
        for secret in [*self.secrets, *secrets, *([token] if token else [])]:
            assert secret not in output, f"secret leaked in output of {args}"
        if not traceback_ok:
            assert "Traceback" not in output, output
        # Only click's own exits may leave: anything else is an unhandled bug.
        assert result.exception is None or isinstance(result.exception, SystemExit), \
            repr(result.exception)
        for request in self.requests_mock.request_history[before:]:
            leaked = _request_fields(request) & FORBIDDEN_FIELDS
            assert not leaked, f"account id field sent: {leaked}"
        return result

    @property
    def history(self):
        return self.requests_mock.request_history


def json_error(result: Result) -> dict:
    """The `{"error": {...}}` document a --json command printed on stderr, checked."""
    assert result.stdout == ""
    document = json.loads(result.stderr)
    error = document["error"]
    assert isinstance(error["code"], str) and error["code"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["exit_code"] == result.exit_code
    return error
