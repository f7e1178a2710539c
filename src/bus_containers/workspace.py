"""The local side of workspaces: which files to send, as a deterministic tar (what comes
back is placed by `download`). No HTTP and no printing: the service uploads, render words.

Inside a git work tree the files are what `git ls-files --cached --others
--exclude-standard` lists (tracked files plus untracked ones that are not ignored), with
their working-tree contents; the base commit and whether the tree is dirty are recorded.
Outside git, every file under the path. Symbolic links are sent as links when they stay
inside the path; links leaving it and special files (FIFOs, sockets, devices) are skipped,
each with a warning. The tar is the same bytes for the same tree (sorted, fixed owner and
time), so its sha256 names the tree and an unchanged tree is uploaded once.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from . import errors as e

GIT_TIMEOUT = 120
BIGGEST_SHOWN = 5


@dataclass
class Entry:
    path: str  # relative, '/'-separated
    kind: str  # "file", "dir" or "link"
    size: int = 0
    mode: int = 0o644
    target: str = ""  # a link's target


@dataclass
class Tree:
    root: Path
    entries: list[Entry] = field(default_factory=list)
    base_commit: str | None = None
    dirty: bool | None = None
    # Where the tree sits in its git work tree ("" at the top): `git apply` run inside a
    # subdirectory silently skips a patch unless told with --directory.
    git_prefix: str = ""
    skipped: list[str] = field(default_factory=list)  # "path: why", for warnings

    @property
    def files(self) -> int:
        return sum(1 for x in self.entries if x.kind == "file")

    @property
    def bytes(self) -> int:
        return sum(x.size for x in self.entries if x.kind == "file")

    def biggest(self, n: int = BIGGEST_SHOWN) -> list[tuple[str, int]]:
        files = sorted((x for x in self.entries if x.kind == "file"),
                       key=lambda x: (-x.size, x.path))
        return [(x.path, x.size) for x in files[:n]]


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=GIT_TIMEOUT, check=False)


def _inside_git(root: Path) -> bool:
    """Whether `root` is in a git work tree. A repository git refuses to read (dubious
    ownership, a broken .git) is an error: sending every file instead would send what
    .gitignore keeps home (node_modules, secrets in .env) without a word."""
    try:
        done = _git(root, "rev-parse", "--is-inside-work-tree")
    except (OSError, subprocess.TimeoutExpired):
        return False  # no git here: every file is sent
    if done.returncode == 0:
        return done.stdout.strip() == b"true"
    reason = done.stderr.decode(errors="replace").strip()
    if "not a git repository" in reason:
        return False
    raise e.WorkspaceError(f"git cannot read the repository at {root}: "
                           f"{reason.splitlines()[0] if reason else 'unknown error'}",
                           path=str(root))


def collect(path: str | os.PathLike) -> Tree:
    """The tree to send from `path` (a directory). WorkspaceError when it is not one."""
    root = Path(path)
    try:
        if not root.is_dir():
            raise e.WorkspaceError(f"workspace {str(path)!r} is not a directory", path=str(path))
    except OSError as exc:
        raise e.WorkspaceError(f"workspace {str(path)!r}: {exc.strerror}",
                               path=str(path)) from None
    root = root.resolve()
    tree = Tree(root)
    if _inside_git(root):
        names = _git_names(root, tree)
    else:
        names = _walk_names(root)
    for name in sorted(set(names)):
        _add(tree, name)
    return tree


def _git_names(root: Path, tree: Tree) -> list[str]:
    listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if listed.returncode != 0:
        raise e.WorkspaceError(f"git ls-files failed in {root}: "
                               f"{listed.stderr.decode(errors='replace').strip()}",
                               path=str(root))
    head = _git(root, "rev-parse", "--verify", "-q", "HEAD")
    if head.returncode == 0:
        tree.base_commit = head.stdout.decode().strip()
    prefix = _git(root, "rev-parse", "--show-prefix")
    tree.git_prefix = prefix.stdout.decode().strip().rstrip("/") if prefix.returncode == 0 else ""
    status = _git(root, "status", "--porcelain", "-z", "--untracked-files=normal", "--", ".")
    tree.dirty = status.returncode == 0 and bool(status.stdout)
    return [os.fsdecode(n) for n in listed.stdout.split(b"\0") if n]


def _walk_names(root: Path) -> list[str]:
    names = []
    for parent, dirs, files in os.walk(root):  # symlinked directories are not entered
        if ".git" in dirs:  # a repository git is not installed to read: not its database
            dirs.remove(".git")
        rel = os.path.relpath(parent, root)
        for name in dirs + files:
            names.append(name if rel == "." else f"{rel}/{name}")
    return names


def _add(tree: Tree, name: str) -> None:
    full = tree.root / name
    try:
        st = os.lstat(full)
    except OSError:
        return  # tracked but deleted in the work tree: not part of what is sent
    mode = st.st_mode
    if stat.S_ISREG(mode):
        tree.entries.append(Entry(name, "file", st.st_size, stat.S_IMODE(mode) & 0o777))
    elif stat.S_ISDIR(mode):
        if (full / ".git").exists() and name:
            tree.skipped.append(f"{name}: a nested git repository (submodule), not sent")
        else:
            tree.entries.append(Entry(name, "dir", 0, stat.S_IMODE(mode) & 0o777))
    elif stat.S_ISLNK(mode):
        target = os.readlink(full)
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
            tree.skipped.append(f"{name}: a symbolic link to {target}, outside the workspace")
        else:
            tree.entries.append(Entry(name, "link", 0, 0o777, target))
    else:
        tree.skipped.append(f"{name}: a special file (FIFO, socket or device), not sent")


def write_tar(tree: Tree, out: BinaryIO) -> None:
    """The tree as an uncompressed tar: the same bytes for the same tree."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for entry in tree.entries:
            info = tarfile.TarInfo(entry.path)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = entry.mode
            if entry.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind == "link":
                info.type = tarfile.SYMTYPE
                info.linkname = entry.target
                tar.addfile(info)
            else:
                info.size = entry.size
                try:
                    with open(tree.root / entry.path, "rb") as f:
                        tar.addfile(info, f)
                except OSError as exc:
                    raise e.WorkspaceError(
                        f"cannot read {entry.path}: {exc.strerror or exc} (did it change "
                        "while being sent?)", path=entry.path) from None


@contextlib.contextmanager
def packed(tree: Tree):
    """(sha256, size, file) of the tree's tar, in a temporary file removed afterwards."""
    import hashlib

    with tempfile.TemporaryFile(prefix="bus-workspace-") as f:
        write_tar(tree, f)
        size = f.tell()
        f.seek(0)
        digest = hashlib.sha256()
        while chunk := f.read(1 << 20):
            digest.update(chunk)
        f.seek(0)
        yield digest.hexdigest(), size, f
