"""`make demo` (scripts/demo.py): prints OK, and leaves no process or file behind, also
when interrupted."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bus_containers import __version__

pytestmark = pytest.mark.e2e

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_demo_runs_the_seed_flow_and_cleans_up():
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    got = subprocess.run([sys.executable, str(DEMO)], env=env, capture_output=True,
                         text=True, timeout=120)
    assert got.returncode == 0, got.stdout + got.stderr
    assert "\nOK\n" in got.stdout
    version = re.escape(__version__)
    assert re.search(rf"containers\s+{version}\s+loaded\s+register_commands", got.stdout)
    for command in ("bus auth token", "bus plugins", "bus containers status",
                    "bus containers run --profile codex -- sh -c 'printf OK'",
                    "bus containers runs", "bus containers delete run_"):
        assert f"$ {command}" in got.stdout
    state = re.search(r"state in (\S+)", got.stdout).group(1)
    assert not Path(state).exists()
    assert processes_mentioning(state) == []
    assert "Traceback" not in got.stdout + got.stderr


def test_ctrl_c_stops_the_emulator():
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    proc = subprocess.Popen([sys.executable, str(DEMO)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    state = None
    for line in proc.stdout:
        match = re.search(r"state in (\S+)", line)
        if match:
            state = match.group(1)
            break
    assert state and processes_mentioning(state)  # the emulator is up
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert processes_mentioning(state) == []
    assert not Path(state).exists()
