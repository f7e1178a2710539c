"""One shared emulator process for the API tests of a module (starting one costs ~0.3 s)."""

from __future__ import annotations

import pytest

from tests.support.emulator import start_emulator

CONFIG = """
[emulator]
output_cap_bytes = 4096
max_wait_seconds = 15
max_body_bytes = 65536

[profiles.quick]
default_timeout_seconds = 2
max_timeout_seconds = 30
max_processes = 64

[plans.nobilling]
billing = false

[plans.two_per_hour]
runs_per_period = 2
period_seconds = 3600

[plans.one_at_a_time]
concurrent_runs = 1

[plans.one_second]
run_seconds_per_period = 1
"""


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    emulator = start_emulator(tmp_path_factory.mktemp("emu"), config=CONFIG)
    yield emulator
    emulator.stop()
