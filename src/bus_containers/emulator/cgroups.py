"""Per-run cgroups: a memory limit for all of a run's processes (and its tmpfs) together,
a process limit, and a way to kill what is left.

Only below the emulator's own cgroup, and only where it may create children there:
cgroup v2 with the memory and pids controllers (`memory.max`, `pids.max`,
`cgroup.kill`), else the cgroup v1 `memory` and `pids` hierarchies of a hybrid layout
(`memory.limit_in_bytes`, `pids.max`). Otherwise `probe` says why not, and the sandbox's
rlimits are the only limits. The layout is `<our cgroup>/bus-emulator.<pid>/run-<id>` in
each hierarchy, so a dead emulator's leftovers are recognised (and removed) at the next
start without touching anyone else's.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "bus-emulator."
GONE_SECONDS = 2.0


@dataclass(frozen=True)
class Cgroups:
    version: int
    bases: tuple[Path, ...]  # our bus-emulator.<pid> dir in each hierarchy used

    @property
    def name(self) -> str:
        return f"cgroup v{self.version} limits"

    @classmethod
    def probe(cls) -> tuple[Cgroups | None, str]:
        """Our per-run cgroup maker, or None and the reason."""
        mounts, own = _mounts(), _own_cgroups()
        reasons = []
        for attempt in (cls._v2, cls._v1):
            try:
                found = attempt(mounts, own)
            except OSError as e:
                reasons.append(f"cannot create child cgroups: {e.strerror or e}")
                continue
            if isinstance(found, Cgroups):
                return found, ""
            reasons.append(found)
        return None, "; ".join(reasons)

    @classmethod
    def _v2(cls, mounts: dict[str, tuple[str, str]], own: dict[str, str]) -> Cgroups | str:
        parent = _dir(mounts.get("cgroup2"), own.get(""))
        if parent is None:
            return "no cgroup v2 hierarchy"
        available = set((parent / "cgroup.controllers").read_text().split())
        if not {"memory", "pids"} <= available:
            return "cgroup v2 has no memory and pids controllers here"
        enabled = set((parent / "cgroup.subtree_control").read_text().split())
        if not {"memory", "pids"} <= enabled:  # EBUSY if our cgroup has processes
            (parent / "cgroup.subtree_control").write_text("+memory +pids")
        base = _make_base(parent)
        (base / "cgroup.subtree_control").write_text("+memory +pids")
        return cls(2, (base,))

    @classmethod
    def _v1(cls, mounts: dict[str, tuple[str, str]], own: dict[str, str]) -> Cgroups | str:
        memory = _dir(mounts.get("memory"), own.get("memory"))
        pids = _dir(mounts.get("pids"), own.get("pids"))
        if memory is None or pids is None:
            return "no cgroup v1 memory and pids hierarchies"
        return cls(1, (_make_base(memory), _make_base(pids)))

    def create(self, run_id: str, memory_bytes: int, max_processes: int) -> list[Path]:
        """The run's cgroups (one per hierarchy), limits written, nobody in them yet."""
        made: list[Path] = []
        try:
            for base in self.bases:
                path = base / f"run-{run_id}"
                path.mkdir()
                made.append(path)
                for name, value in self._limits(memory_bytes, max_processes):
                    if (path / name).exists():
                        (path / name).write_text(value)
        except OSError:
            remove(made)
            raise
        return made

    def _limits(self, memory_bytes: int, max_processes: int) -> list[tuple[str, str]]:
        if self.version == 2:
            return [("memory.max", str(memory_bytes)), ("memory.swap.max", "0"),
                    ("pids.max", str(max_processes))]
        # memsw (memory + swap) after the memory limit: it may never be below it.
        return [("memory.limit_in_bytes", str(memory_bytes)),
                ("memory.memsw.limit_in_bytes", str(memory_bytes)),
                ("pids.max", str(max_processes))]


def remove(paths: list[Path]) -> None:
    """Kill every process left in these cgroups, wait for them, remove the cgroups."""
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


def clean_stale(parent: Path) -> None:
    """Kill and remove what a previous emulator (now dead) left below `parent`."""
    for base in parent.glob(PREFIX + "*"):
        pid = base.name[len(PREFIX):]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            with contextlib.suppress(OSError):
                remove(sorted(base.glob("run-*")))
                base.rmdir()


def _make_base(parent: Path) -> Path:
    clean_stale(parent)
    base = parent / f"{PREFIX}{os.getpid()}"
    base.mkdir(exist_ok=True)
    return base


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
