"""Fixtures for the CLI tests: a fake clock, a clean env, and `cli`, the ONE way these tests
invoke a command. `cli` asserts centrally, after every invocation, that the token never
appears in stdout or stderr, that no 'Traceback' is printed, that nothing escaped as an
unhandled exception, and that no request carried an account id (CONTRACT 3)."""

from __future__ import annotations

import os
import re

import pytest

from bus_containers import service
from tests.cli.helpers import Cli, FakeTime


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No BUS_* variable of the developer's shell reaches a test."""
    for name in list(os.environ):
        if name.startswith("BUS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))


@pytest.fixture(autouse=True)
def fake_time(monkeypatch) -> FakeTime:
    """Retries and polling without real waiting: the CLI builds `service.ContainersClient`
    at call time, so a subclass with a fake sleep and clock stands in for it."""
    fake = FakeTime()
    original = service.ContainersClient

    class FastClient(original):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("sleep", fake.sleep)
            kwargs.setdefault("clock", fake.clock)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(service, "ContainersClient", FastClient)
    return fake


@pytest.fixture
def cli(requests_mock, tmp_path) -> Cli:
    """Every CLI test goes through this. requests_mock is always active, so no test can
    reach a real network."""
    config = tmp_path / "config"
    config.mkdir()
    # By default the server has no logs endpoint (an older server): `run` then polls, which
    # the polling tests rely on. Streaming tests register the endpoint over this one.
    requests_mock.get(re.compile(r".*/runs/[^/]+/logs"), status_code=404,
                      json={"error": {"code": "not_found", "message": "no such endpoint"}})
    return Cli(requests_mock, str(config))
