"""Run commands as sandboxed local subprocesses, capturing output as it is produced.

Each run gets a thread that starts the process in its own session (so the whole process
group can be killed), in a fresh temp dir, with a scrubbed environment and rlimits, then
multiplexes its stdout/stderr pipes with a selector until the process and its group are
gone. No shell is involved: the command is an argv list.

When the emulator runs as root (CI, containers), each command runs as an unprivileged user
(`nobody`, else uid/gid 65534) with no supplementary groups: it cannot read the state dir
(0700, the token secret 0600, both root's) nor the emulator's /proc entries (environ, fds,
memory). As any other user, commands run as that user: see docs/emulator.md.
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import resource
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable

from .config import Profile
from .model import Run

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
READ_SIZE = 65536
# After the main process exits and its group is killed, how long to wait for the pipes to
# reach EOF: only a process that escaped the group (setsid) can hold them open that long.
DRAIN_GRACE = 2.0
RUN_USER = "nobody"
NOBODY_ID = 65534


def run_identity() -> tuple[int, int] | None:
    """(uid, gid) that commands run as: an unprivileged user when we are root, else None
    (commands then run as the emulator's own user; they cannot drop to another one)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(RUN_USER)
        uid, gid = entry.pw_uid, entry.pw_gid
    except KeyError:
        uid = gid = NOBODY_ID
    if uid == 0 or gid == 0:  # a broken passwd must not turn the drop into a no-op
        uid = gid = NOBODY_ID
    return uid, gid


class Runner:
    def __init__(self, on_finished: Callable[[Run], None]):
        self._on_finished = on_finished
        self._lock = threading.Lock()
        self._live: dict[str, subprocess.Popen] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._temp_dirs: set[str] = set()
        self.processes_started = 0
        self.stopping = False
        self.identity = run_identity()

    # -- public ---------------------------------------------------------------------
    def start(self, run: Run, profile: Profile) -> None:
        t = threading.Thread(target=self._execute, args=(run, profile),
                             name=f"run-{run.id}", daemon=True)
        with self._lock:
            self._threads[run.id] = t
        t.start()

    def cancel(self, run: Run, timeout: float = 10.0) -> None:
        """Stop a run: kill its process group and wait for its thread to record the end."""
        with run.cond:
            run.cancel_requested = True
        self._kill_group(run.id)
        with self._lock:
            t = self._threads.get(run.id)
        if t is not None:
            t.join(timeout)
        run.finish("cancelled", None)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"processes_started": self.processes_started,
                    "processes_running": len(self._live),
                    "temp_dirs": len(self._temp_dirs)}

    def shutdown(self, timeout: float = 10.0) -> None:
        """Kill every child process group, wait for the run threads, remove temp dirs."""
        with self._lock:
            self.stopping = True
            ids = list(self._live)
            threads = list(self._threads.values())
        for run_id in ids:
            self._kill_group(run_id)
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            dirs = list(self._temp_dirs)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)

    # -- the run thread -------------------------------------------------------------
    def _execute(self, run: Run, profile: Profile) -> None:
        tmp = None
        try:
            tmp = tempfile.mkdtemp(prefix="bus-emulator-run-")
            with self._lock:
                self._temp_dirs.add(tmp)
            if self.identity is not None:
                os.chown(tmp, *self.identity)  # still 0700: only the run's user gets in
            status, code = self._run_process(run, profile, tmp)
        except Exception as e:  # a bug here must still end the run, not leave it running
            run.add_output("stderr", f"bus-containers-emulator: internal error: {e}\n".encode())
            status, code = "failed", None
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
                with self._lock:
                    self._temp_dirs.discard(tmp)
        if run.cancel_requested:
            status, code = "cancelled", None
        run.finish(status, code)
        self._on_finished(run)
        with self._lock:
            self._threads.pop(run.id, None)

    def _run_process(self, run: Run, profile: Profile, tmp: str) -> tuple[str, int | None]:
        env = {"PATH": SAFE_PATH, "HOME": tmp, "LANG": "C.UTF-8", "TMPDIR": tmp}
        env.update(run.spec.env)
        limits = _rlimits(profile, self.identity)
        drop: dict = {}
        if self.identity is not None:
            # setgroups([]), setregid, setreuid in the child before exec (and before the
            # rlimits are applied), done by _posixsubprocess: no Python code after fork.
            drop = {"user": self.identity[0], "group": self.identity[1], "extra_groups": []}
        with self._lock, run.cond:
            # Checked under both locks so a cancel or shutdown can't slip in before spawn.
            if self.stopping or run.cancel_requested:
                return "cancelled", None
            try:
                proc = subprocess.Popen(
                    list(run.spec.command), cwd=tmp, env=env, stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
                    start_new_session=True, preexec_fn=_apply_limits(limits), **drop)
            except OSError as e:
                code = 127 if e.errno in (errno.ENOENT, errno.ENOTDIR) else 126
                reason = e.strerror or str(e)
                run.add_output("stderr", f"bus-containers-emulator: cannot execute "
                                         f"{run.spec.command[0]!r}: {reason}\n".encode())
                return "failed", code
            self._live[run.id] = proc
            self.processes_started += 1
        run.set_running()
        try:
            timed_out = self._pump(run, proc, run.spec.timeout_seconds)
        finally:
            self._kill_group(run.id)
            with self._lock:
                # Out of `_live` before reaping: once reaped, the pgid may be reused, and
                # `_kill_group` only kills what is in `_live`.
                self._live.pop(run.id, None)
            proc.wait()
        if timed_out:
            return "timed_out", None
        rc = proc.returncode
        if rc == 0:
            return "succeeded", 0
        return "failed", (128 - rc if rc < 0 else rc)

    def _pump(self, run: Run, proc: subprocess.Popen, timeout: float) -> bool:
        """Copy output until both pipes close; kill the group on timeout. True if timed out.

        The main process's exit is noticed through a pidfd (or a short select timeout where
        pidfds don't exist); then the group is killed before the process is reaped, so the
        pgid can't have been reused, and background children can't hold the pipes open.
        """
        sel = selectors.DefaultSelector()
        streams = {proc.stdout.fileno(): "stdout", proc.stderr.fileno(): "stderr"}
        for fd in streams:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        pidfd = _pidfd(proc.pid)
        if pidfd is not None:
            sel.register(pidfd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        timed_out = exited = False
        drain_until = None
        try:
            while streams or not exited:
                now = time.monotonic()
                if not exited and now >= deadline:
                    timed_out = True
                    self._kill_group(run.id)
                    deadline = float("inf")
                if drain_until is not None and now >= drain_until:
                    break
                wait = min(deadline, drain_until or float("inf")) - now
                if pidfd is None:
                    wait = min(wait, 0.1)
                for key, _ in sel.select(timeout=max(0.0, min(wait, 3600.0))):
                    fd = key.fd
                    if fd == pidfd:
                        continue  # handled by the exit check below
                    try:
                        data = os.read(fd, READ_SIZE)
                    except BlockingIOError:
                        continue
                    if data:
                        run.add_output(streams[fd], data)
                    else:
                        sel.unregister(fd)
                        del streams[fd]
                if not exited and _has_exited(proc.pid):
                    exited = True
                    self._kill_group(run.id)
                    if pidfd is not None:
                        sel.unregister(pidfd)
                    drain_until = time.monotonic() + DRAIN_GRACE
        finally:
            sel.close()
            if pidfd is not None:
                os.close(pidfd)
            proc.stdout.close()
            proc.stderr.close()
        return timed_out

    def _kill_group(self, run_id: str) -> None:
        with self._lock:
            proc = self._live.get(run_id)
            if proc is None:
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _has_exited(pid: int) -> bool:
    # WNOWAIT: look without reaping, so the pid (and pgid) stays ours until the group is
    # killed; Popen.wait() reaps afterwards.
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _rlimits(profile: Profile, identity: tuple[int, int] | None = None
             ) -> list[tuple[int, int]]:
    limits = [
        (resource.RLIMIT_CPU, profile.cpu_seconds),
        (resource.RLIMIT_FSIZE, profile.file_size_bytes),
        (resource.RLIMIT_CORE, 0),
    ]
    # RLIMIT_DATA rather than RLIMIT_AS: runtimes (Go, Node, the JVM) reserve large virtual
    # ranges they never touch, which RLIMIT_AS would refuse; DATA counts what is writable.
    limits.append((getattr(resource, "RLIMIT_DATA", resource.RLIMIT_AS), profile.memory_bytes))
    nproc = getattr(resource, "RLIMIT_NPROC", None)
    uid = identity[0] if identity is not None else os.getuid()
    if nproc is not None and uid != 0:
        # RLIMIT_NPROC counts every process of the user, not only this run's, so it is set
        # relative to what the user already runs. Root ignores it: skip it there.
        limits.append((nproc, _user_process_count(uid) + profile.max_processes))
    out = []
    for which, value in limits:
        soft, hard = resource.getrlimit(which)
        # Never raise a limit above the current hard one (that would fail in the child).
        new = value if hard == resource.RLIM_INFINITY else min(value, hard)
        out.append((which, new))
    return out


def _apply_limits(limits: list[tuple[int, int]]):
    # Runs in the child between fork and exec: only setrlimit calls, nothing that could
    # take a lock another thread held at fork time.
    def apply() -> None:
        for which, value in limits:
            resource.setrlimit(which, (value, value))

    return apply


def _user_process_count(uid: int) -> int:
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    count = 0
    for name in entries:
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    count += 1
            except OSError:
                pass
    return count
