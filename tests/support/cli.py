"""Running the installed console scripts as real processes, with the central checks.

Every end-to-end run goes through `run_cli`, which asserts what must hold for any input
(CONTRACT 3 and 5): no traceback, and no token in any output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
SCOPES = "container:read container:run container:delete billing:read"


@dataclass
class CliResult:
    argv: list[str]
    code: int
    stdout: str
    stderr: str


def clean_env(**extra: str) -> dict[str, str]:
    """The parent environment without any Bus setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    env.update(extra)
    return env


def run_cli(argv: list[str], *, env: dict[str, str], secrets: tuple[str, ...] = (),
            timeout: float = 60, input: str | None = None) -> CliResult:
    """Run `argv[0]` from the venv's bin dir; assert no traceback and no secret leaked."""
    completed = subprocess.run([str(BIN / argv[0]), *argv[1:]], env=env, input=input,
                               capture_output=True, text=True, timeout=timeout)
    result = CliResult(argv, completed.returncode, completed.stdout, completed.stderr)
    for stream in (result.stdout, result.stderr):
        assert "Traceback" not in stream, f"traceback from {argv}:\n{stream}"
        for secret in secrets:
            assert secret not in stream, f"a token leaked in the output of {argv}"
    return result
