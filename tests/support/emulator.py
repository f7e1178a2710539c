"""The real emulator as a subprocess over loopback, for integration and e2e tests.

    with start_emulator(tmp_path) as emu:
        token = emu.token("alice")
        requests.get(emu.api("/status"), headers=emu.auth(token))

Started by the package's own launcher (bus_containers.emulator.launch, shared with
`make demo` and the benchmarks); this adds what tests need: tokens with arbitrary claims,
the admin endpoints, and a `stop()` that asserts a clean exit and that no process the
emulator had started is still alive.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt

from bus_containers.emulator.launch import (
    EmulatorProcess,
    LaunchError,
    alive,
    launch,
)
from bus_containers.emulator.tokens import ALL_SCOPES, ISSUER


class EmulatorError(AssertionError):
    pass


class Emulator(EmulatorProcess):
    def __init__(self, launched: EmulatorProcess):
        super().__init__(launched.proc, launched.url, launched.state_dir, launched.log_path)
        self._stopped = False

    # -- tokens ---------------------------------------------------------------------
    def token(self, sub: str, scope: str = ALL_SCOPES, ttl: int = 3600, **claims: Any) -> str:
        """A token signed with this emulator's secret (as the `token` subcommand does).

        Extra claims override the defaults (e.g. exp=..., nbf=...); a claim set to None
        is left out (e.g. sub=None is not allowed here, use token_with_claims)."""
        now = int(time.time())
        payload = {"sub": sub, "scope": scope, "iat": now, "nbf": now, "exp": now + ttl,
                   "iss": ISSUER, **claims}
        return self.token_with_claims({k: v for k, v in payload.items()
                                       if v is not None or k == "iss"})

    def token_with_claims(self, claims: dict[str, Any], key: str | None = None,
                          algorithm: str = "HS256") -> str:
        """Exactly these claims, plus this emulator's `iss` unless they name one
        (`"iss": None` leaves it out)."""
        claims = {"iss": ISSUER, **claims}
        if claims["iss"] is None:
            del claims["iss"]
        return jwt.encode(claims, key if key is not None else self.secret(),
                          algorithm=algorithm)

    def secret(self) -> str:
        return (self.state_dir / "jwt-secret").read_text().strip()

    def token_cli(self, sub: str, scope: str | None = None, ttl: int | None = None) -> str:
        """A token from the real `token` subcommand."""
        argv = [sys.executable, "-m", "bus_containers.emulator", "token", "--sub", sub,
                "--state-dir", str(self.state_dir)]
        if scope is not None:
            argv += ["--scope", scope]
        if ttl is not None:
            argv += ["--ttl", str(ttl)]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
        return out.stdout.strip()

    def attempts(self, method: str, path: str) -> int:
        """How many requests reached `METHOD path` (path from /api/... on)."""
        return self.stats()["attempts"].get(f"{method} {path}", 0)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        try:
            return super().admin(method, path, body)
        except LaunchError as e:
            raise EmulatorError(str(e)) from None

    def status_message(self) -> str:
        r = self.session.get(self.api("/status"), headers=self.auth(self.token("status")),
                             timeout=30)
        return r.json()["message"]

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait, and assert: exit 0, no process of ours left alive."""
        if self._stopped:
            return self.proc.returncode
        self._stopped = True
        children = self.descendants()
        try:
            rc = super().stop(timeout)
        except LaunchError as e:
            kill_tree(None, children)
            raise EmulatorError(str(e)) from None
        survivors = wait_gone(children, 5.0)
        if survivors:
            kill_tree(None, survivors)
            raise EmulatorError(f"processes outlived the emulator: {sorted(survivors)}")
        if rc != 0:
            raise EmulatorError(f"the emulator exited with {rc}: {self.log_tail()}")
        return rc

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_emulator(state_dir: Path, config: str | Path | None = None,
                   faults: list[dict[str, Any]] | None = None,
                   extra_args: list[str] | None = None, wrap: list[str] | None = None,
                   env: dict[str, str] | None = None) -> Emulator:
    """Start `python -m bus_containers.emulator serve --port 0` and wait for its URL.

    `config` is TOML text or a path to a TOML file; `faults` are loaded at start; `wrap`
    goes before the command (e.g. setpriv to another uid); `env` is added to ours."""
    try:
        return Emulator(launch(state_dir, config=config, faults=faults,
                               extra_args=extra_args, wrap=wrap, env=env))
    except LaunchError as e:
        raise EmulatorError(str(e)) from None


def module_emulator(name: str, config: str | None = None, **kw: Any):
    """A module-scoped pytest fixture: one real emulator shared by a module's tests,
    stopped (and checked) after them. `emu = module_emulator("slow-clients", CONFIG)`."""
    import pytest

    @pytest.fixture(scope="module")
    def emu(tmp_path_factory):
        emulator = start_emulator(tmp_path_factory.mktemp(name), config=config, **kw)
        yield emulator
        emulator.stop()

    return emu


# -- /proc helpers ----------------------------------------------------------------------

def wait_gone(pids: dict[int, str], timeout: float) -> dict[int, str]:
    # Polling with a deadline: another process's exit cannot be waited on from here.
    deadline = time.monotonic() + timeout
    left = alive(pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = alive(left)
    return left


def kill_tree(root: int | None, pids: dict[int, str]) -> None:
    for pid in ([root] if root else []) + list(alive(pids)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
