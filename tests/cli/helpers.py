"""Helpers shared by the CLI tests: a fake JWT, run objects, the fake clock, and `Cli`, the
invoker behind the `cli` fixture with the central checks."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from click.testing import CliRunner, Result

from bus_containers.cli import containers
from bus_containers.token import ALL_SCOPES
from tests.support.fakes import SIGNATURE, FakeClock, error_body, make_jwt, run_object

__all__ = ["ALL_SCOPES", "SIGNATURE", "error_body", "make_jwt"]

API = "http://127.0.0.1:8080"  # settings.DEFAULT_API_URL: used when nothing else is set
BASE = API + "/api/v1/containers"
FORBIDDEN_FIELDS = {"account", "account_id", "owner", "sub", "user"}
TOKEN = make_jwt()
FakeTime = FakeClock
run_obj = run_object


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
