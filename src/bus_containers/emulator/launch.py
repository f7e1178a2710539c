"""Start a real emulator process and stop it: the one launcher shared by the tests,
`make demo` (scripts/demo.py) and the benchmarks.

    with launch(state_dir) as emu:
        token = emu.token("alice")
        requests.get(emu.url + "/api/v1/containers/status",
                     headers={"Authorization": f"Bearer {token}"})

It runs `python -m bus_containers.emulator serve --port 0` on loopback with the given state
dir, reads the URL from its `listening on URL` line, hands out tokens (signed with the
state dir's secret, as the `token` subcommand does) and the admin key, and stops the
process by its pid. The request log goes to a file, never to a pipe that could fill up.
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

from .tokens import ALL_SCOPES, TokenAuthority

START_TIMEOUT = 20.0
ADMIN_KEY_FILE = "admin-key"
API_PATH = "/api/v1/containers"


class LaunchError(RuntimeError):
    pass


class EmulatorProcess:
    def __init__(self, proc: subprocess.Popen, url: str, state_dir: Path, log_path: Path):
        self.proc = proc
        self.url = url
        self.state_dir = state_dir
        self.log_path = log_path
        self._session: Any = None

    @property
    def session(self) -> Any:
        """A requests.Session for calls to this emulator (closed by stop())."""
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    def api(self, path: str = "") -> str:
        return f"{self.url}{API_PATH}{path}"

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    @property
    def admin_key_file(self) -> Path:
        """The file a client reads the admin key from (BUS_EMULATOR_ADMIN_KEY_FILE)."""
        return self.state_dir / ADMIN_KEY_FILE

    def admin_key(self) -> str:
        # Read as the caller: the emulator itself checked the file at its start (and may
        # run as another uid than this process, e.g. under setpriv in tests).
        return self.admin_key_file.read_text().strip()

    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key()}"}

    def token(self, sub: str, scope: str = ALL_SCOPES, ttl: int = 3600) -> str:
        secret = (self.state_dir / "jwt-secret").read_text().strip()
        return TokenAuthority.with_secret(secret).issue(sub, scope, ttl)

    # -- the admin endpoints (/_emulator/*), with the admin key ---------------------------
    def admin(self, method: str, path: str, body: Any = None) -> Any:
        r = self.session.request(method, f"{self.url}/_emulator/{path}", json=body, timeout=30,
                                 headers=self.admin_headers())
        if r.status_code >= 400:
            raise LaunchError(f"{method} /_emulator/{path}: HTTP {r.status_code} {r.text}")
        return r.json() if r.content else None

    def add_faults(self, faults: list[dict[str, Any]]) -> Any:
        return self.admin("POST", "faults", {"faults": faults})

    def clear_faults(self) -> None:
        self.admin("DELETE", "faults")

    def stats(self) -> dict[str, Any]:
        return self.admin("GET", "stats")

    def reset_counters(self) -> None:
        self.admin("DELETE", "stats")

    def seed(self, sub: str, count: int, **kw: Any) -> list[str]:
        return self.admin("POST", "seed", {"sub": sub, "count": count, **kw})["ids"]

    def set_plan(self, sub: str, plan: str) -> None:
        self.admin("POST", "accounts", {"sub": sub, "plan": plan})

    def descendants(self) -> dict[int, str]:
        """pid -> start time of every live process below the emulator (Linux /proc)."""
        return descendants_of(self.proc.pid)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM (the emulator then stops every run it started), wait; SIGKILL if it
        does not exit in time. Returns the exit status."""
        if self._session is not None:
            self._session.close()
            self._session = None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(5)
            raise LaunchError(f"the emulator did not stop within {timeout} s of SIGTERM"
                              ) from None
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def launch(state_dir: Path | str, config: str | Path | None = None,
           faults: list[dict[str, Any]] | None = None, extra_args: list[str] | None = None,
           new_session: bool = False, env: dict[str, str] | None = None,
           log_path: Path | None = None, wrap: list[str] | None = None) -> EmulatorProcess:
    """Start the emulator and wait for its URL.

    `config` is TOML text (written into the state dir) or a path; `faults` are loaded at
    start; `env` is added to ours; `wrap` goes before the command (e.g. setpriv to another
    uid, which must then own the state dir); `new_session` keeps a terminal's Ctrl-C from
    reaching it (the caller stops it in order)."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    argv = [*(wrap or []), sys.executable, "-m", "bus_containers.emulator", "serve",
            "--host", "127.0.0.1", "--port", "0", "--state-dir", str(state_dir)]
    if config is not None:
        path = Path(config) if isinstance(config, Path) else state_dir / "launch-config.toml"
        if not isinstance(config, Path):
            path.write_text(config)
        argv += ["--config", str(path)]
    if faults is not None:
        fpath = state_dir / "launch-faults.json"
        fpath.write_text(json.dumps({"faults": faults}))
        argv += ["--faults", str(fpath)]
    argv += extra_args or []
    log_path = log_path or state_dir / "emulator.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log,
                                stdin=subprocess.DEVNULL,
                                env={**os.environ, **env} if env else None,
                                start_new_session=new_session)
    try:
        url = _read_url(proc, START_TIMEOUT, log_path)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)
        proc.stdout.close()
        raise
    return EmulatorProcess(proc, url, state_dir, log_path)


def _read_url(proc: subprocess.Popen, timeout: float, log_path: Path) -> str:
    """The URL from the `listening on URL` line (other lines before it, such as the
    isolation notice, are skipped), waiting on the pipe (no sleeps)."""
    prefix = b"listening on "
    deadline = time.monotonic() + timeout
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if line.startswith(prefix):
                    return line[len(prefix):].decode().strip()
            left = deadline - time.monotonic()
            if left <= 0 or len(buf) > 65536:
                raise LaunchError("the emulator did not print 'listening on' in time")
            if not sel.select(left):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                rc = proc.wait(5)
                tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
                raise LaunchError(f"the emulator exited early (rc={rc}): {' '.join(tail)}")
            buf += chunk


# -- /proc: the processes below the emulator ---------------------------------------------

def proc_stat(pid: int) -> tuple[int, str, str] | None:
    """(ppid, state, starttime) of a live pid, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), fields[0], fields[19]


def descendants_of(root: int) -> dict[int, str]:
    """pid -> start time of every live (non-zombie) process below `root`."""
    children: dict[int, list[int]] = {}
    info: dict[int, str] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return {}
    for name in names:
        if name.isdigit():
            st = proc_stat(int(name))
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
        st = proc_stat(pid)
        if st is not None and st[2] == start and st[1] != "Z":
            out[pid] = start
    return out
