"""One shared emulator process for the API tests of a module (starting one costs ~0.3 s)."""

from __future__ import annotations

from tests.support.emulator import module_emulator

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


emu = module_emulator("emu", CONFIG)
