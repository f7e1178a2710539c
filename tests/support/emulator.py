"""Start the real emulator as a subprocess over loopback, for integration and e2e tests.

    with start_emulator(tmp_path) as emu:
        token = emu.token("alice")
        requests.get(emu.api("/status"), headers=emu.auth(token))

`stop()` sends SIGTERM, waits, asserts a clean exit and that no process the emulator had
started is still alive. Request log lines go to `emu.log_path` (never a pipe that could
fill up and block the emulator).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import requests

ALL_SCOPES = "container:read container:run container:delete billing:read"
API_PATH = "/api/v1/containers"
START_TIMEOUT = 20.0


class EmulatorError(AssertionError):
    pass


class Emulator:
    def __init__(self, proc: subprocess.Popen, url: str, state_dir: Path, log_path: Path):
        self.proc = proc
        self.url = url
        self.state_dir = state_dir
        self.log_path = log_path
        self.session = requests.Session()
        self._stopped = False

    # -- tokens ---------------------------------------------------------------------
    def token(self, sub: str, scope: str = ALL_SCOPES, ttl: int = 3600, **claims: Any) -> str:
        """A token signed with this emulator's secret (as the `token` subcommand does).

        Extra claims override the defaults (e.g. exp=..., nbf=...); a claim set to None
        is left out (e.g. sub=None is not allowed here, use token_with_claims)."""
        now = int(time.time())
        payload = {"sub": sub, "scope": scope, "iat": now, "nbf": now, "exp": now + ttl,
                   "iss": "bus-containers-emulator", **claims}
        return self.token_with_claims({k: v for k, v in payload.items() if v is not None})

    def token_with_claims(self, claims: dict[str, Any], key: str | None = None,
                          algorithm: str = "HS256") -> str:
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

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def api(self, path: str = "") -> str:
        return f"{self.url}{API_PATH}{path}"

    # -- admin ----------------------------------------------------------------------
    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        r = self.session.request(method, f"{self.url}/_emulator/{path}", json=body, timeout=30)
        if r.status_code >= 400:
            raise EmulatorError(f"{method} /_emulator/{path}: HTTP {r.status_code} {r.text}")
        return r.json() if r.content else None

    def add_faults(self, faults: list[dict[str, Any]]) -> Any:
        return self._admin("POST", "faults", {"faults": faults})

    def clear_faults(self) -> None:
        self._admin("DELETE", "faults")

    def stats(self) -> dict[str, Any]:
        return self._admin("GET", "stats")

    def reset_counters(self) -> None:
        self._admin("DELETE", "stats")

    def attempts(self, method: str, path: str) -> int:
        """How many requests reached `METHOD path` (path from /api/... on)."""
        return self.stats()["attempts"].get(f"{method} {path}", 0)

    def seed(self, sub: str, count: int, **kw: Any) -> list[str]:
        return self._admin("POST", "seed", {"sub": sub, "count": count, **kw})["ids"]

    def set_plan(self, sub: str, plan: str) -> None:
        self._admin("POST", "accounts", {"sub": sub, "plan": plan})

    def status_message(self) -> str:
        r = self.session.get(self.api("/status"), headers=self.auth(self.token("status")),
                             timeout=30)
        return r.json()["message"]

    # -- processes ------------------------------------------------------------------
    def descendants(self) -> dict[int, str]:
        """pid -> start time of every live process below the emulator (from /proc)."""
        return descendants_of(self.proc.pid)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait, and assert: exit 0, no process of ours left alive."""
        if self._stopped:
            return self.proc.returncode
        self._stopped = True
        self.session.close()
        children = self.descendants()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_tree(self.proc.pid, children)
            self.proc.wait(5)
            raise EmulatorError(
                f"the emulator did not stop within {timeout} s of SIGTERM") from None
        survivors = wait_gone(children, 5.0)
        if survivors:
            kill_tree(None, survivors)
            raise EmulatorError(f"processes outlived the emulator: {sorted(survivors)}")
        if rc != 0:
            raise EmulatorError(f"the emulator exited with {rc}: {self.log_tail()}")
        return rc

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

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
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    argv = [*(wrap or []), sys.executable, "-m", "bus_containers.emulator", "serve",
            "--host", "127.0.0.1", "--port", "0", "--state-dir", str(state_dir)]
    if config is not None:
        path = Path(config) if isinstance(config, Path) else state_dir / "test-config.toml"
        if not isinstance(config, Path):
            path.write_text(config)
        argv += ["--config", str(path)]
    if faults is not None:
        fpath = state_dir / "test-faults.json"
        fpath.write_text(json.dumps({"faults": faults}))
        argv += ["--faults", str(fpath)]
    argv += extra_args or []
    log_path = state_dir / "emulator.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log,
                                stdin=subprocess.DEVNULL,
                                env={**os.environ, **env} if env else None)
    try:
        url = _read_url(proc, START_TIMEOUT)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)
        raise
    return Emulator(proc, url, state_dir, log_path)


def _read_url(proc: subprocess.Popen, timeout: float) -> str:
    """The URL from the `listening on URL` line, waiting on the pipe (no sleeps)."""
    deadline = time.monotonic() + timeout
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise EmulatorError("the emulator did not print 'listening on' in time")
            if not sel.select(left):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise EmulatorError(f"the emulator exited early (rc={proc.wait(5)})")
            buf += chunk
    line = buf.split(b"\n", 1)[0].decode()
    prefix = "listening on "
    if not line.startswith(prefix):
        raise EmulatorError(f"unexpected first line from the emulator: {line!r}")
    return line[len(prefix):].strip()


# -- /proc helpers ----------------------------------------------------------------------

def _stat(pid: int) -> tuple[int, str, str] | None:
    """(ppid, state, starttime) of a live pid, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), fields[0], fields[19]


def descendants_of(root: int) -> dict[int, str]:
    children: dict[int, list[int]] = {}
    info: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None and st[1] != "Z":
                children.setdefault(st[0], []).append(int(name))
                info[int(name)] = st[2]
    out: dict[int, str] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out[pid] = info[pid]
        todo += children.get(pid, [])
    return out


def alive(pids: dict[int, str]) -> dict[int, str]:
    """The processes of `pids` still running (same pid AND same start time, not zombies)."""
    out = {}
    for pid, start in pids.items():
        st = _stat(pid)
        if st is not None and st[2] == start and st[1] != "Z":
            out[pid] = start
    return out


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
