"""Run commands as local subprocesses, capturing output as it is produced.

Each run gets a thread that asks the sandbox how to launch it (namespaces, or the plain
fallback: see sandbox.py), starts that in its own session (so the whole process group can
be killed), with a scrubbed environment and rlimits, then multiplexes its stdout/stderr
pipes with a selector until the process and its group are gone. No shell is involved for
the command itself: it is an argv list.

The thread that spawns a run also waits for it: the launcher's parent-death signal fires
when that thread ends, so it must not end first.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable

from .config import Profile
from .model import Run
from .sandbox import Launch, LaunchSpec, Sandbox

READ_SIZE = 65536
# After the main process exits and its group is killed, how long to wait for the pipes to
# reach EOF: only a process that escaped the group (setsid) can hold them open that long
# (without namespaces; with them, the kernel has killed it already).
DRAIN_GRACE = 2.0


class Runner:
    def __init__(self, on_finished: Callable[[Run], None], sandbox: Sandbox):
        self._on_finished = on_finished
        self.sandbox = sandbox
        self._lock = threading.Lock()
        self._live: dict[str, subprocess.Popen] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._launches: dict[str, Launch] = {}
        self.processes_started = 0
        self.stopping = False

    # -- public ---------------------------------------------------------------------
    def start(self, run: Run, profile: Profile, stdin_fd: int | None = None,
              workspace_dir: str | None = None) -> None:
        """Start `run` in a thread. `stdin_fd`: the command's stdin (default /dev/null);
        the runner closes it once the process has it. `workspace_dir`: a host directory
        mounted read-write at /workspace, the run's cwd (default: none, cwd /tmp)."""
        spec = LaunchSpec(run.spec.command, run.spec.env, stdin_fd, workspace_dir, run.owner)
        t = threading.Thread(target=self._execute, args=(run, profile, spec),
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
                    "temp_dirs": sum(1 for launch in self._launches.values()
                                     if launch.host_dir is not None)}

    def shutdown(self, timeout: float = 10.0) -> None:
        """Kill every child process group, wait for the run threads, release what they
        held (temp dirs, uids, cgroups)."""
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
            launches = list(self._launches.values())
            self._launches.clear()
        for launch in launches:
            launch.release()
        self.sandbox.close()

    # -- the run thread -------------------------------------------------------------
    def _execute(self, run: Run, profile: Profile, spec: LaunchSpec) -> None:
        launch = None
        try:
            launch = self.sandbox.prepare(run.id, profile, spec)
            with self._lock:
                self._launches[run.id] = launch
            status, code = self._run_process(run, launch, spec)
        except Exception as e:  # a bug here must still end the run, not leave it running
            run.add_output("stderr", f"bus-containers-emulator: internal error: {e}\n".encode())
            status, code = "failed", None
        finally:
            if spec.stdin_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(spec.stdin_fd)
            if launch is not None:
                with self._lock:
                    self._launches.pop(run.id, None)
                launch.release()
        if run.cancel_requested:
            status, code = "cancelled", None
        run.finish(status, code)
        self._on_finished(run)
        with self._lock:
            self._threads.pop(run.id, None)

    def _run_process(self, run: Run, launch: Launch, spec: LaunchSpec
                     ) -> tuple[str, int | None]:
        stdin = spec.stdin_fd if spec.stdin_fd is not None else subprocess.DEVNULL
        with self._lock, run.cond:
            # Checked under both locks so a cancel or shutdown can't slip in before spawn.
            if self.stopping or run.cancel_requested:
                return "cancelled", None
            try:
                proc = subprocess.Popen(
                    launch.argv, cwd=launch.cwd, env=launch.env, stdin=stdin,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, close_fds=True,
                    start_new_session=True, preexec_fn=launch.child_setup(),
                    **launch.drop)
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
