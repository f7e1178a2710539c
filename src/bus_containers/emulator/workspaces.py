"""Workspaces on disk: uploads per account, each run's tree, its diff and its files.

Layout under `<state>/workspaces/<account>/` (`<account>` is a hash of the token's `sub`,
so a directory name reveals no account id):

    uploads/<sha256>.tar    the verified upload, as sent
    uploads/<sha256>.json   {"files", "bytes"} of its regular files
    runs/<run_id>/tree      the run's /workspace: extracted per run, kept after the end
    runs/<run_id>/base.tar  a link to the upload it started from (the diff's base)
    runs/<run_id>/git       made at the first diff request: a bare git dir whose one
                            index took the base, then the final tree; the diff is
                            `git diff-tree` between the two

Uploads are per account: another account's hash is simply absent (no existence oracle).
Stored bytes (uploads plus kept trees) count against the plan's `storage_bytes`; uploads
are a cache, so the least recently used are evicted first to make room.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .. import tarsafe
from .errors import ApiError, invalid, not_found
from .statedir import private_subdir
from .validate import SHA256

CHUNK = 1 << 16
GIT_TIMEOUT = 300


def account_dir_name(owner: str) -> str:
    return hashlib.sha256(owner.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def too_large(message: str) -> ApiError:
    return ApiError(413, "too_large", message, headers={"Connection": "close"})


def _git_env(git_dir: Path, work_tree: Path | None = None) -> dict[str, str]:
    # Only our own config: no system or user config can add filters, hooks or pagers.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GIT_DIR": str(git_dir),
           "HOME": str(git_dir), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull,
           "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    if work_tree is not None:
        env["GIT_WORK_TREE"] = str(work_tree)
    return env


def _git(git_dir: Path, *args: str, work_tree: Path | None = None) -> str:
    # Level 0: the objects live as long as the run and are read once; speed over space.
    done = subprocess.run(["git", "-c", "core.looseCompression=0", "-c", "core.autocrlf=false",
                           "-c", "core.symlinks=true", *args],
                          env=_git_env(git_dir, work_tree), stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=GIT_TIMEOUT, check=False,
                          cwd=str(work_tree or git_dir))
    if done.returncode != 0:
        raise RuntimeError(f"git {args[0]} failed: "
                           f"{done.stderr.decode(errors='replace').strip()[:500]}")
    return done.stdout.decode().strip()


def _tree_bytes(path: Path) -> int:
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


class Workspaces:
    def __init__(self, state_dir: Path):
        self.root = private_subdir(state_dir / "workspaces")
        self._lock = threading.Lock()  # storage accounting and eviction, per process
        self._run_locks: dict[str, threading.Lock] = {}

    # -- uploads --------------------------------------------------------------------
    def _uploads(self, owner: str) -> Path:
        return self.root / account_dir_name(owner) / "uploads"

    def _runs(self, owner: str) -> Path:
        return self.root / account_dir_name(owner) / "runs"

    def info(self, owner: str, sha: str) -> dict | None:
        """{"sha256", "files", "bytes"} of this account's upload, or None."""
        if not SHA256.match(sha):
            return None
        meta = self._uploads(owner) / f"{sha}.json"
        try:
            data = json.loads(meta.read_text())
        except (OSError, ValueError):
            return None
        with contextlib.suppress(OSError):
            os.utime(meta)  # recently used: evicted last
        return {"sha256": sha, "files": data["files"], "bytes": data["bytes"]}

    def store(self, owner: str, sha: str, body: Iterable[bytes], length: int | None, *,
              max_bytes: int | None, max_files: int | None,
              storage_bytes: int | None) -> dict:
        """Stream `body` to disk, verify its sha256 and contents; {"sha256", "files", "bytes"}."""
        if not SHA256.match(sha):
            raise invalid("the workspace id must be a lowercase hex sha256 (64 characters)")
        if max_bytes is not None and length is not None and length > max_bytes:
            raise too_large(f"the workspace is {length} bytes; the plan allows "
                            f"{max_bytes} bytes per workspace")
        uploads = self._uploads(owner)
        uploads.mkdir(parents=True, mode=0o700, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=uploads, prefix=".upload-", suffix=".tar")
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(fd, "wb") as out:
                for chunk in body:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise too_large(f"the workspace is over {max_bytes} bytes, the "
                                        "plan's limit per workspace")
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha:
                raise invalid(f"the body's sha256 is {digest.hexdigest()}, not the {sha} "
                              "in the URL")
            totals = self._validate(tmp, uploads, max_bytes, max_files)
            with self._lock:
                self._make_room(owner, size, storage_bytes, keep=sha)
                meta = {"files": totals.files, "bytes": totals.bytes}
                (uploads / f"{sha}.json.tmp").write_text(json.dumps(meta))
                os.replace(tmp, uploads / f"{sha}.tar")
                os.replace(uploads / f"{sha}.json.tmp", uploads / f"{sha}.json")
            return {"sha256": sha, **meta}
        finally:
            tmp.unlink(missing_ok=True)

    def _validate(self, archive: Path, where: Path, max_bytes: int | None,
                  max_files: int | None) -> tarsafe.Totals:
        # A trial extraction: the same checks a run's extraction makes, so a bad archive is
        # refused when it is sent, not when a run starts.
        trial = Path(tempfile.mkdtemp(dir=where, prefix=".check-"))
        try:
            return tarsafe.extract(archive, trial, max_bytes=max_bytes, max_members=max_files)
        except tarsafe.Refused as e:
            raise ApiError(422, "invalid_workspace", f"the workspace was refused: {e}") from None
        finally:
            shutil.rmtree(trial, ignore_errors=True)

    def used_bytes(self, owner: str) -> int:
        """Bytes this account stores: uploads and runs' trees (with their git objects)."""
        total = 0
        uploads = self._uploads(owner)
        with contextlib.suppress(OSError):
            for entry in os.scandir(uploads):
                if entry.name.endswith(".tar") and not entry.name.startswith("."):
                    total += entry.stat().st_size
        runs = self._runs(owner)
        with contextlib.suppress(OSError):
            for entry in os.scandir(runs):
                total += self._run_size(Path(entry.path))
        return total

    def _run_size(self, run_dir: Path) -> int:
        try:
            return int((run_dir / "size").read_text())
        except (OSError, ValueError):
            return _tree_bytes(run_dir)

    def _make_room(self, owner: str, incoming: int, storage_bytes: int | None,
                   keep: str | None = None) -> None:
        if storage_bytes is None:
            return
        used = self.used_bytes(owner)
        if used + incoming <= storage_bytes:
            return
        uploads = self._uploads(owner)
        olds = []
        with contextlib.suppress(OSError):
            for entry in os.scandir(uploads):
                name = entry.name
                if name.endswith(".tar") and not name.startswith(".") and name[:-4] != keep:
                    meta = uploads / f"{name[:-4]}.json"
                    with contextlib.suppress(OSError):
                        olds.append((meta.stat().st_mtime, name[:-4], entry.stat().st_size))
        for _, sha, size in sorted(olds):
            if used + incoming <= storage_bytes:
                break
            (uploads / f"{sha}.json").unlink(missing_ok=True)
            (uploads / f"{sha}.tar").unlink(missing_ok=True)
            used -= size
        if used + incoming > storage_bytes:
            raise too_large(f"this account stores {used} bytes of workspaces and finished "
                            f"runs' files; {incoming} more would pass the plan's "
                            f"{storage_bytes} bytes. Delete finished runs to make room.")

    def check_room(self, owner: str, incoming: int, storage_bytes: int | None) -> None:
        with self._lock:
            self._make_room(owner, incoming, storage_bytes)

    # -- runs -----------------------------------------------------------------------
    def run_dir(self, owner: str, run_id: str) -> Path:
        return self._runs(owner) / run_id

    def prepare_run(self, owner: str, run_id: str, sha: str) -> Path:
        """Extract the upload into the run's tree; the tree's path. The run keeps its own
        link to the upload (the base of its diff), so evicting the upload later changes
        nothing for it. Nothing else happens before the run starts: git only runs when a
        diff is asked for.

        The sandbox hands the tree to the run's user for the run and takes it back after."""
        archive = self._uploads(owner) / f"{sha}.tar"
        run_dir = self.run_dir(owner, run_id)
        run_dir.mkdir(parents=True, mode=0o700)
        (run_dir / "owner").write_text(owner)  # for the sweep after a restart
        try:
            os.link(archive, run_dir / "base.tar")
        except OSError:  # another file system: a copy then
            shutil.copyfile(archive, run_dir / "base.tar")
        tree = run_dir / "tree"
        tree.mkdir(mode=0o755)
        tarsafe.extract(archive, tree)
        return tree

    def finish_run(self, owner: str, run_id: str) -> None:
        """The run is over: record what its directory costs."""
        run_dir = self.run_dir(owner, run_id)
        if run_dir.is_dir():
            (run_dir / "size").write_text(str(_tree_bytes(run_dir)))

    def remove_run(self, owner: str, run_id: str) -> None:
        """Gone at once (a rename); the files are removed in the background (a big tree
        must not hold the caller, which may hold the store's lock)."""
        self._run_locks.pop(run_id, None)
        run_dir = self.run_dir(owner, run_id)
        trash = run_dir.with_name(f".removed-{run_id}")
        try:
            os.rename(run_dir, trash)
        except OSError:
            return
        threading.Thread(target=shutil.rmtree, args=(trash,), kwargs={"ignore_errors": True},
                         name="remove-tree", daemon=True).start()

    def sweep(self, is_live: Callable[[str, str], bool]) -> None:
        """Remove run directories whose run is gone (`is_live(owner, run_id)` is false: the
        run expired while we were down, or the store does not outlive a restart), and
        leftovers of removals a crash cut short."""
        with contextlib.suppress(OSError):
            for account in os.scandir(self.root):
                runs = Path(account.path) / "runs"
                with contextlib.suppress(OSError):
                    for entry in os.scandir(runs):
                        try:
                            owner = (Path(entry.path) / "owner").read_text()
                        except OSError:
                            owner = None
                        if owner is None or not is_live(owner, entry.name):
                            shutil.rmtree(entry.path, ignore_errors=True)

    def has_tree(self, owner: str, run_id: str) -> bool:
        return (self.run_dir(owner, run_id) / "base.tar").is_file()

    def diff(self, owner: str, run_id: str) -> Iterator[bytes]:
        """The run's changes as a binary git patch, streamed from `git diff-tree`."""
        run_dir = self.run_dir(owner, run_id)
        git_dir = run_dir / "git"
        with self._run_locks.setdefault(run_id, threading.Lock()):
            if not (run_dir / "final").is_file():
                self._write_trees(run_dir, git_dir)
            base = (run_dir / "base").read_text()
            final = (run_dir / "final").read_text()
        return _stream_process(
            ["git", "diff-tree", "-r", "-p", "--binary", "--full-index", "-M", "--no-color",
             "--no-ext-diff", "--no-textconv", base, final], env=_git_env(git_dir),
            cwd=str(git_dir))

    def _write_trees(self, run_dir: Path, git_dir: Path) -> None:
        """The base and final git trees of a finished run, once: the sent tree (from the
        run's base.tar) added with --force (all that was sent is the base, even what a
        .gitignore names), then the final tree into the same index (sent files stay
        tracked even if the run's .gitignore now names them; new files follow the
        .gitignore files, as git status would)."""
        _git(run_dir, "init", "-q", "--bare", str(git_dir))
        base_tree = Path(tempfile.mkdtemp(dir=run_dir, prefix=".base-"))
        try:
            tarsafe.extract(run_dir / "base.tar", base_tree)
            _git(git_dir, "add", "--all", "--force", ".", work_tree=base_tree)
            (run_dir / "base").write_text(_git(git_dir, "write-tree", work_tree=base_tree))
        finally:
            shutil.rmtree(base_tree, ignore_errors=True)
        tree = run_dir / "tree"
        _git(git_dir, "add", "--all", ".", work_tree=tree)
        (run_dir / "final").write_text(_git(git_dir, "write-tree", work_tree=tree))

    def archive(self, owner: str, run_id: str, path: str) -> Iterator[bytes]:
        """A tar of `path` (file or directory) inside the run's tree; links stay links."""
        tree = self.run_dir(owner, run_id) / "tree"
        target, arcname = resolve_inside(tree, path)
        return _stream_tar(target, arcname)


def resolve_inside(tree: Path, path: str) -> tuple[Path, str]:
    """(the path on disk, its name in the archive) for `path` relative to /workspace.

    No symlink is followed on the way (a link the run made to /etc stays a link), and
    `..` is refused: nothing outside the tree can be named."""
    text = path.strip()
    if text.startswith("/workspace"):
        text = text[len("/workspace"):]
        if text and not text.startswith("/"):
            raise not_found(f"no such path in the workspace: {path}")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if ".." in parts or "\x00" in text:
        raise invalid("path must stay inside /workspace (no '..')")
    current = tree
    for i, part in enumerate(parts):
        current = current / part
        try:
            st = os.lstat(current)
        except OSError:
            raise not_found(f"no such path in the workspace: {path}") from None
        # `f.txt/` names a directory, as for cp: a file there is not what was asked for.
        last_is_dir = i < len(parts) - 1 or text.endswith("/")
        if last_is_dir and not stat.S_ISDIR(st.st_mode):
            raise not_found(f"no such path in the workspace: {path} "
                            f"({'/'.join(parts[:i + 1])} is not a directory)")
    # Named by its last part, as `docker cp` and `cp -r` name a copy: `d/e/f.txt` comes
    # as `f.txt`, so it lands as DEST/f.txt, not DEST/d/e/f.txt.
    return current, parts[-1] if parts else "."


def _stream_process(argv: list[str], **popen: Any) -> Iterator[bytes]:
    # Started inside the generator: an answer never iterated (a HEAD, a client gone before
    # the first chunk) is closed unstarted, and then no `finally` would reap the process.
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, **popen)
    try:
        while True:
            chunk = proc.stdout.read1(CHUNK)
            if not chunk:
                break
            yield chunk
    finally:
        proc.stdout.close()
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def _stream_tar(target: Path, arcname: str) -> Iterator[bytes]:
    """Write the tar from a thread into a pipe; yield what comes out (memory bounded)."""
    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def clean(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = int(time.time()) if info.mtime < 0 else info.mtime
        return info if (info.isreg() or info.isdir() or info.issym() or info.islnk()) else None

    def write() -> None:
        try:
            with os.fdopen(write_fd, "wb") as out, \
                    tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                if arcname == ".":  # the whole workspace: its entries, not "./"
                    for name in sorted(os.listdir(target)):
                        tar.add(str(target / name), arcname=name, filter=clean)
                else:
                    tar.add(str(target), arcname=arcname, filter=clean)
        except BrokenPipeError:
            pass  # the client went away
        except BaseException as e:  # noqa: BLE001 - reported by truncating the stream
            failure.append(e)

    writer = threading.Thread(target=write, name="archive", daemon=True)
    writer.start()
    reader = os.fdopen(read_fd, "rb")
    try:
        while True:
            chunk = reader.read1(CHUNK) if hasattr(reader, "read1") else reader.read(CHUNK)
            if not chunk:
                break
            yield chunk
    finally:
        reader.close()
        writer.join(10)
