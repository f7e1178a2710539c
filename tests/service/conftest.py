"""Fixtures for the ContainersClient unit tests (helpers live in helpers.py)."""

from __future__ import annotations

import pytest

from bus_containers.service import ContainersClient

from .helpers import API, TOKEN, FakeClock


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_client(fake_clock):
    """make_client(token=TOKEN, timeout=60, **kwargs) -> ContainersClient on the fake clock."""

    def make(token: str = TOKEN, timeout: float = 60.0, **kwargs) -> ContainersClient:
        return ContainersClient(API, token, timeout=timeout, sleep=fake_clock.sleep,
                                clock=fake_clock.clock, **kwargs)

    return make


@pytest.fixture
def client(make_client) -> ContainersClient:
    return make_client()


@pytest.fixture
def no_jitter(monkeypatch):
    """Make the backoff jitter deterministic: random.random() -> 0 (no reduction)."""
    from bus_containers import service

    monkeypatch.setattr(service.random, "random", lambda: 0.0)
