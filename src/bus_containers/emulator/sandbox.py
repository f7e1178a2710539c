"""How a run is launched: in its own Linux namespaces when the kernel allows it.

`Sandbox` probes once, at startup, what this machine allows, and then turns a run's
command into a `Launch` (argv, environment, cwd, rlimits) for the runner to spawn:

- **namespaces** (the normal case on Linux): util-linux `setpriv --pdeathsig` then
  `unshare --pid --fork --kill-child --mount --ipc --uts [--net] [--user]` then a short
  `sh` init script that builds a fresh root (read-only binds of /usr, /etc, ..., a fresh
  /proc, a minimal /dev, size-limited tmpfs /tmp and /dev/shm, optionally /workspace),
  pivots into it and runs the command as a child. The run sees and can signal only its own
  processes, sees no host file outside those binds (no state dir, no other run, no home),
  and has its own loopback only. When the command exits, the namespace's init exits and
  the kernel kills everything left in it; when the emulator dies, the parent-death signal
  takes `unshare`, and `--kill-child` takes the init.
  As root, each run also gets its own uid, picked from a high range no account uses, so
  RLIMIT_NPROC, signals and /proc are per run. As any other user, a user namespace maps
  the emulator's uid to root inside (no capabilities left once the command starts).
- **cgroup** limits (cgroups.py) on top, where the emulator may create child cgroups of
  its own with the memory and pids controllers (v2, or v1 on a hybrid layout): memory for
  the whole run, processes, and kill-all; otherwise rlimits only.
- **none**: namespaces refused (not Linux, a locked-down container, a missing tool, or
  BUS_CONTAINERS_EMULATOR_ISOLATION=none): the old plain subprocess, as `nobody` when root.

Shell and util-linux rather than syscalls from Python: see docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import resource
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from . import cgroups
from .cgroups import Cgroups
from .config import ConfigError, Limits, Profile
from .statedir import StateError, private_subdir

SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
# "none" turns namespaces off; "required" refuses to start without them; else "auto".
ISOLATION_ENV = "BUS_CONTAINERS_EMULATOR_ISOLATION"
TOOLS = ("setpriv", "unshare", "prlimit", "mount", "umount", "pivot_root", "sh")
TOOL_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# Per-run uids (root only): a range far above any account's or subuid range's usual place,
# below 2^31 so no tool mistakes them for negative numbers.
RUN_UID_FIRST = 2_000_000_000
RUN_UID_COUNT = 1 << 24
FALLBACK_USER, NOBODY_ID = "nobody", 65534

# Runs as PID 1 of the run's PID namespace (root, or root of a user namespace), in a
# private mount namespace. Each program it runs costs ~1.5 ms of the run's start, so it
# runs few: one `cp` fills a fresh tmpfs from a skeleton the emulator built once at startup
# (directories, symlinks, device mountpoints), and one `mount --all` reads a table of
# every other mount, the first of which binds that tmpfs read-only as the run's root (a
# bind of the tmpfs, not of the skeleton: the run's mountinfo names no host path). The
# command's rlimits (RLIMIT_NPROC too, as root) come from the emulator's spawn.
# The arguments are the command. The script, the mount table's path and the rest come in
# the environment (unset before the command starts): staging dir, mountpoint, skeleton,
# the tools' host paths (found before the run's PATH is in force), loopback tool or ""
# (shared network), run uid or "" (user namespace), the run's passwd, the run's process
# limit, cwd. So `ps` on the host stays readable, and the run's /proc/1/cmdline shows no
# host path.
INIT_SCRIPT = r"""
set -eu
run_path=$PATH
PATH=/usr/sbin:/usr/bin:/sbin:/bin
table=$BUS_CONTAINERS_SANDBOX_TABLE root=$BUS_CONTAINERS_SANDBOX_ROOT
stage=$BUS_CONTAINERS_SANDBOX_STAGE skeleton=$BUS_CONTAINERS_SANDBOX_SKELETON
setpriv=$BUS_CONTAINERS_SANDBOX_SETPRIV prlimit=$BUS_CONTAINERS_SANDBOX_PRLIMIT
unshare=$BUS_CONTAINERS_SANDBOX_UNSHARE shell=$BUS_CONTAINERS_SANDBOX_SH
lo_tool=$BUS_CONTAINERS_SANDBOX_LO run_uid=$BUS_CONTAINERS_SANDBOX_UID
passwd=${BUS_CONTAINERS_SANDBOX_PASSWD-}
nproc=$BUS_CONTAINERS_SANDBOX_NPROC cwd=$BUS_CONTAINERS_SANDBOX_CWD
nested=$BUS_CONTAINERS_SANDBOX_NESTED
unset BUS_CONTAINERS_SANDBOX_INIT BUS_CONTAINERS_SANDBOX_TABLE BUS_CONTAINERS_SANDBOX_ROOT \
  BUS_CONTAINERS_SANDBOX_STAGE BUS_CONTAINERS_SANDBOX_SKELETON BUS_CONTAINERS_SANDBOX_SETPRIV \
  BUS_CONTAINERS_SANDBOX_PRLIMIT BUS_CONTAINERS_SANDBOX_UNSHARE BUS_CONTAINERS_SANDBOX_SH \
  BUS_CONTAINERS_SANDBOX_LO BUS_CONTAINERS_SANDBOX_UID BUS_CONTAINERS_SANDBOX_PASSWD \
  BUS_CONTAINERS_SANDBOX_NPROC BUS_CONTAINERS_SANDBOX_CWD \
  BUS_CONTAINERS_SANDBOX_NESTED
case $lo_tool in
  "") ;;
  */ip) "$lo_tool" link set lo up ;;
  *) "$lo_tool" -I -S -c 'import fcntl, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sh", fcntl.ioctl(s, 0x8913, struct.pack("16sh22x", b"lo", 0))[:18])[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sh22x", b"lo", flags | 1))' ;;
esac
mount -t tmpfs -o size=4m,mode=0755,nosuid,nodev bus-run "$stage"
cp -a "$skeleton/." "$stage"
# whoami, getpwuid and friends find the run's user (the table binds this on etc/passwd)
[ -z "$run_uid" ] || printf '%s' "$passwd" >"$stage/.passwd"
mount --all --fstab "$table"
cd "$root"
pivot_root . .
umount -l .
cd "$cwd"
unset OLDPWD
set +e
PATH=$run_path
if ! found=$(command -v -- "$1" 2>/dev/null); then
  printf "bus-containers-emulator: cannot execute '%s': No such file or directory\n" "$1" >&2
  exit 127
fi
case $found in
  /*) if [ -d "$found" ] || [ ! -x "$found" ]; then
        printf "bus-containers-emulator: cannot execute '%s': Permission denied\n" "$1" >&2
        exit 126
      fi ;;
esac
# No user namespaces inside the run (they would give it mounts of its own): the limit of
# the run's user namespace is set to 0 while this side still has the capability to, then
# every capability is dropped. As root the run gets a user namespace of its own for that
# (its uid mapped to itself, nothing else changes); else it already is in one. Where the
# kernel refuses that (e.g. AppArmor's restriction of unprivileged user namespaces), the
# probe found so and nested=allow skips it.
no_userns='echo 0 >/proc/sys/user/max_user_namespaces && exec "$@"'
if [ "$nested" = allow ]; then
  no_userns='exec "$@"'
fi
# The command runs as a child, so this shell (PID 1) reaps orphans, and its exit (with the
# command's status) makes the kernel kill whatever the run left behind. RLIMIT_NPROC is
# per run: the run's uid is its own (set at spawn: root, and so this shell, ignores it), or
# counted in the run's own user namespace (set here: the emulator's user may have more).
if [ -n "$run_uid" ] && [ "$nested" = allow ]; then
  "$setpriv" --reuid="$run_uid" --regid="$run_uid" \
    --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs -- "$@"
elif [ -n "$run_uid" ]; then
  "$setpriv" --reuid="$run_uid" --regid="$run_uid" \
    --clear-groups -- "$unshare" --user --map-current-user --keep-caps -- \
    "$shell" -c "$no_userns" sh \
    "$setpriv" --inh-caps=-all --bounding-set=-all --no-new-privs -- "$@"
else
  "$prlimit" --nproc="$nproc" -- "$shell" -c "$no_userns" sh \
    "$setpriv" --inh-caps=-all --bounding-set=-all --no-new-privs -- "$@"
fi
exit $?
"""
HOST_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "opt")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


@dataclass(frozen=True)
class LaunchSpec:
    """What to run, and how it meets the outside. `stdin_fd` (None: /dev/null) and
    `workspace_dir` (None: none; else bind-mounted read-write at /workspace, the cwd)."""

    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    stdin_fd: int | None = None
    workspace_dir: str | None = None
    account: str = ""  # the run's owner: its runs share one account cgroup


@dataclass
class Launch:
    """A run ready to spawn: Popen arguments, and what to undo when it has ended."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    rlimits: list[tuple[int, int]]
    cgroup_procs: list[str] = field(default_factory=list)  # joined by the child at spawn
    drop: dict = field(default_factory=dict)  # Popen user/group/extra_groups (mode none)
    host_dir: str | None = None  # a temp dir on the host, removed on release
    _undo: list = field(default_factory=list)

    def child_setup(self):
        """Popen's preexec_fn: the rlimits, then the run's cgroups (before any namespace)."""
        return apply_limits(self.rlimits, self.cgroup_procs)

    def release(self) -> None:
        """Remove what the run had on the host. Call after its process was reaped."""
        for undo in reversed(self._undo):
            with contextlib.suppress(OSError):
                undo()
        self._undo.clear()
        if self.host_dir is not None:
            shutil.rmtree(self.host_dir, ignore_errors=True)
            self.host_dir = None


class Sandbox:
    def __init__(self, state_dir: Path, limits: Limits | None = None):
        limits = limits or Limits()
        self._totals = cgroups.default_totals(
            limits.total_memory_bytes, limits.total_processes, limits.account_memory_bytes,
            limits.account_processes)
        # Our PID namespace (whose dead emulators' cgroups we may judge) and this instance.
        self._tag = f"{cgroups.namespace_tag()}.{secrets.token_hex(4)}"
        self._lock = threading.Lock()
        self._uids: set[int] = set()
        self.mode = "none"  # "uid" (root, per-run uid), "userns" (user namespace), "none"
        self.reason = ""
        self.cgroups: Cgroups | None = None
        # Empty, or why runs may make user namespaces of their own (not turned off here).
        self.nested_userns = ""
        self.cgroup_reason = ""
        self._mountpoint = str(Path(state_dir).absolute() / "sandbox-root")
        # Built once at startup: the runs' root skeletons (copied, never mounted, into a
        # run), the empty dir where a run's init fills its root, and the mount tables.
        self._skeleton_dir = Path(state_dir).absolute() / "sandbox-skeleton"
        self._stage = str(self._skeleton_dir / "stage")
        self._devpts = True  # a private /dev/pts, unless the probe finds it refused
        self._lo_tool = shutil.which("ip", path=TOOL_PATH) or sys.executable
        self._tools: dict[str, str | None] = {}
        self._probe()
        if self.mode == "none" and _wanted() == "required":
            # For a shared machine: better no emulator than one whose runs are not apart.
            raise ConfigError(f"{ISOLATION_ENV}=required, but runs cannot be isolated here: "
                              f"{self.reason}")

    # -- what is in force -------------------------------------------------------------
    def describe(self) -> str:
        """One line for the startup log and `status`: what keeps runs apart."""
        if self.mode == "none":
            return f"isolation: none ({self.reason})"
        who = "per-run uid" if self.mode == "uid" else "user namespace"
        limits = self.cgroups.name if self.cgroups else "rlimits"
        return f"isolation: namespaces ({who}, {limits})"

    def _probe(self) -> None:
        if _wanted() == "none":
            self.reason = f"turned off by {ISOLATION_ENV}=none"
            return
        if not sys.platform.startswith("linux"):
            self.reason = f"Linux namespaces are not available on {sys.platform}"
            return
        self._tools = {t: shutil.which(t, path=TOOL_PATH) for t in TOOLS}
        missing = [t for t, where in self._tools.items() if where is None]
        if missing:
            self.reason = f"util-linux tool(s) not found: {', '.join(missing)}"
            return
        # A symlink here would have the run's root mounted wherever it points.
        private_subdir(Path(self._mountpoint))  # StateError: the emulator does not start
        private_subdir(self._skeleton_dir)
        try:
            for workspace in (False, True):
                _build_skeleton(self._skeleton(workspace), workspace)
            os.makedirs(self._stage, mode=0o700, exist_ok=True)
        except OSError as e:
            raise StateError(f"cannot build {self._skeleton_dir}: {e.strerror or e}") from None
        self.mode = "uid" if os.geteuid() == 0 else "userns"
        # Some kernels or containers refuse a new devpts instance (runs then have no ptys,
        # as before), or to turn nested user namespaces off (then allowed, and logged):
        # the first combination that starts a run is kept, the strictest first.
        first = ""
        for devpts, nested in ((True, False), (True, True), (False, False), (False, True)):
            self._devpts = devpts
            self.nested_userns = ("the kernel refused to turn them off: "
                                  + first.splitlines()[-1][:200]) if nested else ""
            failure = self._trial()
            first = first or failure
            if not failure:
                break
        else:
            failure, self.nested_userns = first, ""
        if failure:
            self.mode = "none"
            self.reason = "the kernel refused namespaces: " + failure.splitlines()[-1][:200]
            return
        self.cgroups, self.cgroup_reason = Cgroups.probe(self._tag, self._totals)

    def _trial(self) -> str:
        """Start `true` the way runs start: "" when that worked, else why not."""
        trial = self.prepare("probe", Profile("probe"), LaunchSpec(("true",)), cgroup=False)
        try:
            done = subprocess.run(trial.argv, env=trial.env, cwd=trial.cwd,
                                  preexec_fn=trial.child_setup(),
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
            return "" if done.returncode == 0 else (
                done.stderr.decode(errors="replace").strip()
                or f"exit status {done.returncode}")
        except (OSError, subprocess.SubprocessError) as e:
            return str(e) or type(e).__name__
        finally:
            trial.release()

    # -- one run ----------------------------------------------------------------------
    def prepare(self, run_id: str, profile: Profile, spec: LaunchSpec, *, cgroup: bool = True
                ) -> Launch:
        env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8"}
        if self.mode == "none":
            return self._plain(profile, spec, env)
        env.update(HOME="/tmp", TMPDIR="/tmp")
        env.update(spec.env)
        launch = Launch([], env, "/", [])
        try:
            self._namespaced(launch, run_id, profile, spec, cgroup)
        except BaseException:
            launch.release()  # the uid, the cgroups: nothing held for a run never started
            raise
        return launch

    def _namespaced(self, launch: Launch, run_id: str, profile: Profile, spec: LaunchSpec,
                    cgroup: bool) -> None:
        env = launch.env
        uid = ""
        if self.mode == "uid":
            run_uid = self._allocate_uid()
            launch._undo.append(lambda: self._release_uid(run_uid))
            uid = str(run_uid)
            if spec.workspace_dir:
                _chown_tree(spec.workspace_dir, run_uid, run_uid)
                launch._undo.append(lambda: _chown_tree(spec.workspace_dir, os.getuid(),
                                                        os.getgid()))
        # RLIMIT_NPROC: as root, at spawn (counted for the run's own uid; root, and so the
        # launcher and init, ignore it); in a user namespace, inside, by prlimit.
        launch.rlimits = rlimits(profile, 0 if uid else None)
        ns = ["--pid", "--fork", "--kill-child=KILL", "--mount", "--ipc", "--uts"]
        if not profile.network:
            ns.append("--net")
        if self.mode == "userns":
            ns += ["--user", "--map-root-user"]
        tool = self._tools
        argv = [tool["setpriv"], "--pdeathsig", "KILL", "--"]
        if cgroup and self.cgroups is not None:
            paths = self.cgroups.create(run_id, profile.memory_bytes, profile.max_processes,
                                        spec.account)
            launch._undo.append(lambda: cgroups.remove(paths))
            # The spawned child moves itself into the run's cgroups (preexec), so all of
            # the run, launcher included, is in them from its first instruction.
            launch.cgroup_procs = [str(path / "cgroup.procs") for path in paths]
        if uid:
            env["BUS_CONTAINERS_SANDBOX_PASSWD"] = _passwd_with(uid)
        table = self._write_table(run_id, self._table(profile, spec, bool(uid)))
        launch._undo.append(lambda: os.unlink(table))
        env.update(BUS_CONTAINERS_SANDBOX_INIT=INIT_SCRIPT, BUS_CONTAINERS_SANDBOX_TABLE=table,
                   BUS_CONTAINERS_SANDBOX_ROOT=self._mountpoint,
                   BUS_CONTAINERS_SANDBOX_STAGE=self._stage,
                   BUS_CONTAINERS_SANDBOX_SKELETON=str(self._skeleton(bool(spec.workspace_dir))),
                   BUS_CONTAINERS_SANDBOX_SETPRIV=tool["setpriv"],
                   BUS_CONTAINERS_SANDBOX_PRLIMIT=tool["prlimit"],
                   BUS_CONTAINERS_SANDBOX_UNSHARE=tool["unshare"],
                   BUS_CONTAINERS_SANDBOX_SH=tool["sh"],
                   BUS_CONTAINERS_SANDBOX_LO="" if profile.network else self._lo_tool,
                   BUS_CONTAINERS_SANDBOX_UID=uid,
                   BUS_CONTAINERS_SANDBOX_NPROC=str(profile.max_processes),
                   BUS_CONTAINERS_SANDBOX_CWD="/workspace" if spec.workspace_dir else "/tmp",
                   BUS_CONTAINERS_SANDBOX_NESTED="allow" if self.nested_userns else "")
        argv += [tool["unshare"], *ns, "--", tool["sh"], "-c",
                 'eval "$BUS_CONTAINERS_SANDBOX_INIT"', "bus-run-init", *spec.command]
        launch.argv = argv

    def _skeleton(self, workspace: bool) -> Path:
        return self._skeleton_dir / ("root-workspace" if workspace else "root")

    def _write_table(self, run_id: str, text: str) -> str:
        """The run's mount table, in a dir only the emulator's user reads."""
        path = self._skeleton_dir / f"fstab-{run_id}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        return str(path)

    def _table(self, profile: Profile, spec: LaunchSpec, own_passwd: bool) -> str:
        """The mount table of one run's root, in order: the filled tmpfs (read-only),
        then what goes into it."""
        root = self._mountpoint
        table = []

        def mount(source: str, target: str, kind: str, options: str) -> None:
            table.append(f"{_fstab_escape(source)} {_fstab_escape(root + target)} "
                         f"{kind} {options} 0 0")

        mount(self._stage, "", "none", "bind,ro,nosuid,nodev")
        for name in HOST_DIRS:
            host = "/" + name
            if not os.path.islink(host) and os.path.isdir(host):
                mount(host, host, "none", "rbind,ro")  # read-only (the top mount)
        if own_passwd:
            mount(self._stage + "/.passwd", "/etc/passwd", "none", "bind,ro")
        mount("proc", "/proc", "proc", "nosuid,nodev,noexec")
        for name in DEVICES:
            if os.path.exists("/dev/" + name):  # e.g. no /dev/tty in some containers
                mount("/dev/" + name, "/dev/" + name, "none", "bind")
        if self._devpts:
            mount("devpts", "/dev/pts", "devpts",
                  "newinstance,ptmxmode=0666,mode=0620,nosuid,noexec")
        mount("bus-shm", "/dev/shm", "tmpfs", f"size={profile.shm_bytes},mode=1777,nosuid,nodev")
        mount("bus-tmp", "/tmp", "tmpfs", f"size={profile.tmp_bytes},mode=1777,nosuid,nodev")
        if spec.workspace_dir:
            mount(spec.workspace_dir, "/workspace", "none", "bind")
        return "\n".join(table)

    def _plain(self, profile: Profile, spec: LaunchSpec, env: dict[str, str]) -> Launch:
        """No namespaces: the command in a fresh temp dir, as `nobody` when we are root."""
        identity = _fallback_identity()
        cwd = spec.workspace_dir or tempfile.mkdtemp(prefix="bus-emulator-run-")
        env.update(HOME=cwd, TMPDIR=cwd)
        env.update(spec.env)
        uid = identity[0] if identity else os.getuid()
        # RLIMIT_NPROC counts every process of the user, not only this run's: set relative to
        # what the user already runs (so shared between runs). Root ignores it: skip it.
        base = _user_process_count(uid) if uid != 0 else None
        launch = Launch(list(spec.command), env, cwd, rlimits(profile, base),
                        host_dir=None if spec.workspace_dir else cwd)
        if identity is not None:
            _chown_tree(cwd, *identity)  # a temp dir stays 0700: only the run's user gets in
            if spec.workspace_dir:
                launch._undo.append(lambda: _chown_tree(cwd, os.getuid(), os.getgid()))
            launch.drop = {"user": identity[0], "group": identity[1], "extra_groups": []}
        return launch

    def close(self) -> None:
        """Remove our (by now empty) cgroups; call once every run has been released."""
        if self.cgroups is not None:
            cgroups.close(self.cgroups.bases)

    # -- per-run uids -----------------------------------------------------------------
    def _allocate_uid(self) -> int:
        """A uid no account, no subuid range, no live process and no other run has.

        Random in a 16M range, so two emulators on one machine practically never pick the
        same one at once; the /proc check catches a uid whose processes are still dying."""
        busy = _uids_with_processes()
        with self._lock:
            for _ in range(1000):
                uid = RUN_UID_FIRST + secrets.randbelow(RUN_UID_COUNT)
                if uid in self._uids or uid in busy or _uid_known(uid):
                    continue
                self._uids.add(uid)
                return uid
        raise OSError(errno.EAGAIN, "no free uid for the run")

    def _release_uid(self, uid: int) -> None:
        with self._lock:
            self._uids.discard(uid)


# -- rlimits -----------------------------------------------------------------------------

def rlimits(profile: Profile, nproc_base: int | None) -> list[tuple[int, int]]:
    """The per-process limits of a run; RLIMIT_NPROC at `nproc_base` + the profile's
    process count, or not at all when `nproc_base` is None."""
    limits = [
        (resource.RLIMIT_CPU, profile.cpu_seconds),
        (resource.RLIMIT_FSIZE, profile.file_size_bytes),
        (resource.RLIMIT_CORE, 0),
    ]
    # RLIMIT_DATA rather than RLIMIT_AS: runtimes (Go, Node, the JVM) reserve large virtual
    # ranges they never touch, which RLIMIT_AS would refuse; DATA counts what is writable.
    limits.append((getattr(resource, "RLIMIT_DATA", resource.RLIMIT_AS), profile.memory_bytes))
    nproc = getattr(resource, "RLIMIT_NPROC", None)
    if nproc is not None and nproc_base is not None:
        limits.append((nproc, nproc_base + profile.max_processes))
    out = []
    for which, value in limits:
        soft, hard = resource.getrlimit(which)
        # Never raise a limit above the current hard one (that would fail in the child).
        new = value if hard == resource.RLIM_INFINITY else min(value, hard)
        out.append((which, new))
    return out


def apply_limits(limits: list[tuple[int, int]], cgroup_procs: list[str] = ()):
    # Runs in the child between fork and exec: only setrlimit and open/write calls, nothing
    # that could take a lock another thread held at fork time. An error fails the spawn.
    def apply() -> None:
        for which, value in limits:
            resource.setrlimit(which, (value, value))
        for procs in cgroup_procs:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, b"0")  # 0: the writing process itself
            finally:
                os.close(fd)

    return apply


# -- helpers -----------------------------------------------------------------------------

def _passwd_with(uid: str) -> str:
    """The host's /etc/passwd plus the run's own user."""
    try:
        host = Path("/etc/passwd").read_text(errors="replace")
    except OSError:
        host = ""
    if host and not host.endswith("\n"):
        host += "\n"
    return f"{host}run:x:{uid}:{uid}:bus-containers run:/tmp:/bin/sh\n"


def _build_skeleton(top: Path, workspace: bool) -> None:
    """A run's root before its mounts: the mountpoints (directories, and empty files for
    the devices), the host's top-level symlinks (bin -> usr/bin, ...) and /dev's. Built
    afresh at each start (the host may have changed); each run gets a copy of it."""
    if top.is_symlink():
        top.unlink()
    shutil.rmtree(top, ignore_errors=True)
    top.mkdir(mode=0o755)
    os.chmod(top, 0o755)  # whatever the umask: the run's uid must get through its /
    dirs = ["proc", "tmp", "var", "dev", "dev/shm", "dev/pts"]
    dirs += ["workspace"] if workspace else []
    for name in HOST_DIRS:
        host = "/" + name
        if os.path.islink(host):
            os.symlink(os.readlink(host), top / name)
        elif os.path.isdir(host):
            dirs.append(name)
    for name in dirs:
        (top / name).mkdir(mode=0o755)
        os.chmod(top / name, 0o755)
    for name in DEVICES:
        (top / "dev" / name).touch(mode=0o644)
    for name, target in (("dev/fd", "/proc/self/fd"), ("dev/stdin", "/proc/self/fd/0"),
                         ("dev/stdout", "/proc/self/fd/1"), ("dev/stderr", "/proc/self/fd/2"),
                         ("dev/ptmx", "pts/ptmx"), ("var/tmp", "/tmp")):
        os.symlink(target, top / name)


def _wanted() -> str:
    return os.environ.get(ISOLATION_ENV, "auto").strip().lower()


def _fstab_escape(path: str) -> str:
    # fstab fields are separated by blanks; libmount decodes these octal escapes.
    for char, code in (("\\", "\\134"), (" ", "\\040"), ("\t", "\\011"),
                       ("\n", "\\012")):
        path = path.replace(char, code)
    return path


def _fallback_identity() -> tuple[int, int] | None:
    """Without namespaces: (uid, gid) of `nobody` when we are root, else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(FALLBACK_USER)
        uid, gid = entry.pw_uid, entry.pw_gid
    except KeyError:
        uid = gid = NOBODY_ID
    if uid == 0 or gid == 0:  # a broken passwd must not turn the drop into a no-op
        uid = gid = NOBODY_ID
    return uid, gid


def _uid_known(uid: int) -> bool:
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(uid)
            return True
        except KeyError:
            pass
    for path in ("/etc/subuid", "/etc/subgid"):
        with contextlib.suppress(OSError, ValueError):
            for line in Path(path).read_text().splitlines():
                parts = line.split(":")
                if len(parts) == 3 and int(parts[1]) <= uid < int(parts[1]) + int(parts[2]):
                    return True
    return False


def _uids_with_processes() -> set[int]:
    out = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                out.add(os.stat(f"/proc/{name}").st_uid)
    return out


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


def _chown_tree(top: str, uid: int, gid: int) -> None:
    os.lchown(top, uid, gid)
    for parent, dirs, files in os.walk(top):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                os.lchown(os.path.join(parent, name), uid, gid)
