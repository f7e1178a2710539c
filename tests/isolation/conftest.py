"""The real emulator as a process, started as root and as an unprivileged user.

The unprivileged case runs the emulator through `setpriv --reuid/--regid --clear-groups`
to a uid no account has (no account is added to the machine), with a state dir it owns.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support.emulator import start_emulator

CONFIG = """
[emulator]
max_wait_seconds = 30

[profiles.iso]
default_timeout_seconds = 30
max_timeout_seconds = 60
max_processes = 64
memory_bytes = 268435456
tmp_bytes = 8388608
shm_bytes = 4194304

[profiles.net]
network = true
default_timeout_seconds = 30
"""

if os.geteuid() != 0:  # pragma: no cover - CI and this machine class run as root
    pytest.skip("starting the emulator as root and as another uid needs root",
                allow_module_level=True)


def unused_uid() -> int:
    """A uid with no account and no process (below the emulator's per-run range)."""
    busy = set()
    for pid in os.listdir("/proc"):
        with contextlib.suppress(OSError):  # a process may end while we look
            busy.add(os.stat(f"/proc/{pid}").st_uid)
    while True:
        uid = random.randrange(1_500_000_000, 1_900_000_000)
        try:
            pwd.getpwuid(uid)
        except KeyError:
            if uid not in busy:
                return uid


class Started:
    """How an emulator of one mode is started: as root, or as an unused uid."""

    def __init__(self, mode: str):
        self.mode = mode
        self.uid = 0 if mode == "root" else unused_uid()
        self.dirs: list[Path] = []

    def state_dir(self) -> Path:
        d = Path(tempfile.mkdtemp(prefix="bus-iso-state-"))
        os.chown(d, self.uid, self.uid)
        self.dirs.append(d)
        return d

    def start(self, **kw):
        wrap = None
        if self.uid:
            wrap = ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}",
                    "--clear-groups", "--"]
        return start_emulator(self.state_dir(), config=CONFIG, wrap=wrap, **kw)

    def cleanup(self) -> None:
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module", params=["root", "user"])
def started(request):
    s = Started(request.param)
    yield s
    s.cleanup()


@pytest.fixture(scope="module")
def emu(started):
    emulator = started.start()
    yield emulator
    emulator.stop()
