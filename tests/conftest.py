"""Fixtures shared by every test directory."""

from __future__ import annotations

import pytest

from tests.support.emulator import Emulator, start_emulator


@pytest.fixture
def emulator_factory(tmp_path_factory):
    """Start emulators with a given config/faults; all are stopped (and checked) at the end:
    `emu = emulator_factory(config='[plans.free]\\nbilling = false')`."""
    started: list[Emulator] = []

    def make(**kw) -> Emulator:
        emu = start_emulator(tmp_path_factory.mktemp("emulator-state"), **kw)
        started.append(emu)
        return emu

    yield make
    errors = []
    for emu in started:
        try:
            emu.stop()
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, errors


@pytest.fixture
def emulator(emulator_factory) -> Emulator:
    """A real emulator process on a free loopback port, default config."""
    return emulator_factory()
