"""Per-run cgroups: a memory limit for all of a run's processes (and its tmpfs) together,
a process limit, and a way to kill what is left.

Only below the emulator's own cgroup, and only where it may create children there:
cgroup v2 with the memory and pids controllers (`memory.max`, `pids.max`,
`cgroup.kill`), else the cgroup v1 `memory` and `pids` hierarchies of a hybrid layout
(`memory.limit_in_bytes`, `pids.max`). Otherwise `probe` says why not, and the sandbox's
rlimits are the only limits. The layout, in each hierarchy, is

    <our cgroup>/bus-emulator.<pid>.<start time>.<tag>.<instance>/acct-<hash>/run-<id>

The emulator's own cgroup (`bus-emulator.*`) limits all runs together (`Totals.memory`,
`Totals.processes`: a machine is never given away whole, however many runs are allowed),
and each account's cgroup limits that account's runs together, so one account cannot take
all of it either. `<tag>` names the PID namespace: a leftover is removed at the next
start of any emulator of the same user only when its pid is in our namespace (same tag)
and its emulator is really gone (no process with that pid and start time: a reused pid
is not the emulator).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "bus-emulator."
ACCOUNT_PREFIX = "acct-"
GONE_SECONDS = 2.0
# Account cgroups are created by one run and removed by another: not both at once.
_accounts_lock = threading.Lock()


@dataclass(frozen=True)
class Totals:
    """Aggregate limits: all runs of this emulator, and all runs of one account."""

    memory: int
    processes: int
    account_memory: int
    account_processes: int


def default_totals(memory: int | None = None, processes: int | None = None,
                   account_memory: int | None = None,
                   account_processes: int | None = None) -> Totals:
    """Totals with defaults where None: 60% of the machine's memory and half of its
    process/thread table for all runs together; half of each for one account."""
    if memory is None:
        memory = int(_meminfo_total() * 0.6)
    if processes is None:
        processes = _process_table_size() // 2
    return Totals(memory, processes,
                  account_memory if account_memory is not None else memory // 2,
                  account_processes if account_processes is not None else processes // 2)


def _meminfo_total() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 8 << 30  # unknown: assume a small machine


def _process_table_size() -> int:
    sizes = []
    for name in ("pid_max", "threads-max"):  # pids.max counts threads
        with contextlib.suppress(OSError, ValueError):
            sizes.append(int(Path(f"/proc/sys/kernel/{name}").read_text()))
    return min(sizes) if sizes else 32768


def namespace_tag() -> str:
    """Our PID namespace, in our cgroups' names: a pid is judged alive or dead only in the
    namespace it belongs to (an emulator in another container sharing the hierarchy is
    invisible in our /proc, not dead)."""
    try:
        return f"ns{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return "ns0"


def start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), None when there is none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the name, in parentheses, may hold spaces
    return fields[19] if len(fields) > 19 else None


@dataclass(frozen=True)
class Cgroups:
    version: int
    bases: tuple[Path, ...]  # our bus-emulator.* dir in each hierarchy used
    totals: Totals | None = None

    @property
    def name(self) -> str:
        return f"cgroup v{self.version} limits"

    @classmethod
    def probe(cls, tag: str, totals: Totals) -> tuple[Cgroups | None, str]:
        """Our per-run cgroup maker, or None and the reason."""
        mounts, own = _mounts(), _own_cgroups()
        reasons = []
        for attempt in (cls._v2, cls._v1):
            try:
                found = attempt(mounts, own, tag, totals)
            except OSError as e:
                reasons.append(f"cannot create child cgroups: {e.strerror or e}")
                continue
            if isinstance(found, Cgroups):
                return found, ""
            reasons.append(found)
        return None, "; ".join(reasons)

    @classmethod
    def _v2(cls, mounts: dict[str, tuple[str, str]], own: dict[str, str], tag: str,
            totals: Totals) -> Cgroups | str:
        parent = _dir(mounts.get("cgroup2"), own.get(""))
        if parent is None:
            return "no cgroup v2 hierarchy"
        available = set((parent / "cgroup.controllers").read_text().split())
        if not {"memory", "pids"} <= available:
            return "cgroup v2 has no memory and pids controllers here"
        enabled = set((parent / "cgroup.subtree_control").read_text().split())
        if not {"memory", "pids"} <= enabled:  # EBUSY if our cgroup has processes
            (parent / "cgroup.subtree_control").write_text("+memory +pids")
        made = cls(2, (_make_base(parent, tag),), totals)
        made._limit(made.bases[0], totals.memory, totals.processes)
        return made

    @classmethod
    def _v1(cls, mounts: dict[str, tuple[str, str]], own: dict[str, str], tag: str,
            totals: Totals) -> Cgroups | str:
        memory = _dir(mounts.get("memory"), own.get("memory"))
        pids = _dir(mounts.get("pids"), own.get("pids"))
        if memory is None or pids is None:
            return "no cgroup v1 memory and pids hierarchies"
        made = cls(1, (_make_base(memory, tag), _make_base(pids, tag)), totals)
        for base in made.bases:
            made._limit(base, totals.memory, totals.processes)
        return made

    def create(self, run_id: str, memory_bytes: int, max_processes: int,
               account: str = "") -> list[Path]:
        """The run's cgroups (one per hierarchy), limits written, nobody in them yet, each
        inside its account's cgroup."""
        made: list[Path] = []
        name = ACCOUNT_PREFIX + hashlib.sha256(account.encode()).hexdigest()[:16]
        try:
            with _accounts_lock:
                for base in self.bases:
                    parent = base / name
                    if not parent.is_dir():
                        parent.mkdir()
                        if self.totals is not None:
                            self._limit(parent, self.totals.account_memory,
                                        self.totals.account_processes)
                        elif self.version == 2:
                            (parent / "cgroup.subtree_control").write_text("+memory +pids")
                    path = parent / f"run-{run_id}"
                    path.mkdir()
                    made.append(path)
                    self._limit(path, memory_bytes, max_processes, leaf=True)
        except OSError:
            remove(made)
            raise
        return made

    def _limit(self, path: Path, memory_bytes: int, max_processes: int,
               leaf: bool = False) -> None:
        if self.version == 2 and not leaf:
            (path / "cgroup.subtree_control").write_text("+memory +pids")
        for name, value in self._limits(memory_bytes, max_processes):
            if (path / name).exists():
                (path / name).write_text(value)

    def _limits(self, memory_bytes: int, max_processes: int) -> list[tuple[str, str]]:
        if self.version == 2:
            return [("memory.max", str(memory_bytes)), ("memory.swap.max", "0"),
                    ("pids.max", str(max_processes))]
        # memsw (memory + swap) after the memory limit: it may never be below it.
        return [("memory.limit_in_bytes", str(memory_bytes)),
                ("memory.memsw.limit_in_bytes", str(memory_bytes)),
                ("pids.max", str(max_processes))]


def remove(paths: list[Path]) -> None:
    """Kill every process left in these cgroups, wait for them, remove the cgroups, and
    their account's cgroup once no run of the account is left in it."""
    _remove_runs(paths)
    with _accounts_lock:
        for path in paths:
            if path.parent.name.startswith(ACCOUNT_PREFIX):
                with contextlib.suppress(OSError):  # EBUSY: another run of the account
                    path.parent.rmdir()


def _remove_runs(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):  # cgroup.kill: cgroup v2, Linux 5.14 and later
            fd = os.open(path / "cgroup.kill", os.O_WRONLY)  # never created by us
            try:
                os.write(fd, b"1")
            finally:
                os.close(fd)
    deadline = time.monotonic() + GONE_SECONDS
    for path in paths:
        while True:
            try:
                path.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
            with contextlib.suppress(OSError, ValueError):
                for pid in (path / "cgroup.procs").read_text().split():
                    os.kill(int(pid), 9)
            time.sleep(0.01)  # the kernel empties a cgroup asynchronously


def clean_stale(parent: Path, tag: str) -> None:
    """Kill and remove what a previous emulator of this user, now dead, left below
    `parent` (whatever its state dir: one killed by SIGKILL never removes its own). Anything
    else is left alone: another user's, one whose pid lives in another PID namespace, one
    whose emulator lives (whatever its cgroup holds), and old-style names that say none of
    this."""
    namespace = tag.partition(".")[0]
    for base in parent.glob(PREFIX + "*"):
        parts = base.name[len(PREFIX):].split(".")
        if len(parts) != 4 or not parts[0].isdigit() or parts[2] != namespace:
            continue
        pid, started = int(parts[0]), parts[1]
        if pid == os.getpid():
            continue  # another emulator of this process (tests): alive
        with contextlib.suppress(OSError):
            if base.stat().st_uid != os.geteuid() or start_time(pid) == started:
                continue  # not ours, or its emulator is alive
            for account in sorted(base.glob(ACCOUNT_PREFIX + "*")):
                remove(sorted(account.glob("run-*")))
            remove(sorted(base.glob("run-*")))
            base.rmdir()


def _make_base(parent: Path, tag: str) -> Path:
    clean_stale(parent, tag)
    base = parent / f"{PREFIX}{os.getpid()}.{start_time(os.getpid())}.{tag}"
    base.mkdir(exist_ok=True)
    return base


def close(bases: tuple[Path, ...]) -> None:
    """Remove our (by now empty) cgroups: accounts' first, then the emulator's."""
    for base in bases:
        with contextlib.suppress(OSError):
            for account in base.glob(ACCOUNT_PREFIX + "*"):
                account.rmdir()
            base.rmdir()


def _dir(mount: tuple[str, str] | None, own: str | None) -> Path | None:
    """The directory of our cgroup in a hierarchy mounted at mount[0] from mount[1]."""
    if mount is None or own is None:
        return None
    mountpoint, root = mount
    if root != "/" and (own == root or own.startswith(root + "/")):
        own = own[len(root):]  # a container sees its own cgroup as the mount's root
    path = Path(mountpoint + own.rstrip("/"))
    return path if path.is_dir() and os.access(path, os.W_OK) else None


def _mounts() -> dict[str, tuple[str, str]]:
    """'cgroup2', 'memory', 'pids' -> (mount point, root within the hierarchy)."""
    out: dict[str, tuple[str, str]] = {}
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, (kind, _, options) = left.split(), (right.split() + ["", "", ""])[:3]
            if kind == "cgroup2":
                out.setdefault("cgroup2", (fields[4], fields[3]))
            elif kind == "cgroup":
                for controller in ("memory", "pids"):
                    if controller in options.split(","):
                        out.setdefault(controller, (fields[4], fields[3]))
    return out


def _own_cgroups() -> dict[str, str]:
    """'' (cgroup v2) and each v1 controller -> our cgroup's path in that hierarchy."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                out[controller] = path
    return out
