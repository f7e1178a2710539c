"""The state dir and its secrets, checked at every start the way ssh checks its keys.

The dir and each secret must belong to the user running the emulator and not be writable
by group or others; every directory above the state dir, up to /, must belong to root or
to that user and not be writable by group or others unless sticky (as /tmp), so no one
else can replace the state dir, or anything in it, after these checks; the directories
the emulator makes in it (workspaces, the sandbox's mount point) must be real directories,
never symlinks (secrets: no access at all for group or others, i.e. 0600). A secret
that is absent is generated (0600, written whole then linked into place, so concurrent
starts agree on one); one that exists but is empty, short, not text or unreadable is a
StateError, never regenerated: that would silently invalidate every token issued with it.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path

MIN_SECRET_BYTES = 32
# Secrets are printable ASCII with no spaces (hex when generated).
_SECRET_TEXT = re.compile(rb"[!-~]+")


class StateError(Exception):
    """The state dir or a secret in it cannot be trusted or used; one line, says the fix."""


def ensure_state_dir(state_dir: Path) -> Path:
    """The state dir, created 0700 when absent; an existing one must be ours and not
    writable by group or others."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = state_dir.stat()
    except OSError as e:
        raise StateError(f"cannot use state dir {state_dir}: {e.strerror or e}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StateError(f"state dir {state_dir} is not a directory")
    _check_parents(state_dir)
    _check_owner(state_dir, st)
    if st.st_mode & 0o022:
        raise StateError(f"state dir {state_dir} is writable by group or others "
                         f"(mode {st.st_mode & 0o777:o}); run: chmod 700 {state_dir}")
    if st.st_mode & 0o077:
        # Readable by others but not writable: nothing can have been planted, so closing
        # it (runs' output and the database live here too) is safe and needs no one.
        try:
            os.chmod(state_dir, 0o700)
        except OSError as e:
            raise StateError(f"cannot close state dir {state_dir} to mode 700: "
                             f"{e.strerror or e}") from None
    return state_dir


def _check_parents(state_dir: Path) -> None:
    real = Path(os.path.realpath(state_dir))
    for parent in real.parents:
        try:
            st = parent.stat()
        except OSError as e:
            raise StateError(f"cannot check {parent}: {e.strerror or e}") from None
        if st.st_uid not in (0, os.geteuid()):
            raise StateError(f"{parent} (above state dir {state_dir}) belongs to uid "
                             f"{st.st_uid}, who could replace the state dir; use a state dir "
                             "whose parents belong to root or to you")
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise StateError(f"{parent} (above state dir {state_dir}) is writable by group "
                             f"or others without the sticky bit (mode {st.st_mode & 0o7777:o}), "
                             "so anyone could replace the state dir; use another state dir "
                             f"or run: chmod go-w {parent}")


def private_subdir(path: Path) -> Path:
    """`path` (in the state dir), created 0700 when absent: a real directory (never a
    symlink: it would send what the emulator writes elsewhere), ours, not group/world
    writable."""
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = path.lstat()
    except OSError as e:
        raise StateError(f"cannot use {path}: {e.strerror or e}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StateError(f"{path} is not a directory (a symlink?); move it away")
    _check_owner(path, st)
    if st.st_mode & 0o022:
        raise StateError(f"{path} is writable by group or others "
                         f"(mode {st.st_mode & 0o777:o}); run: chmod 700 {path}")
    return path


def _check_owner(path: Path, st: os.stat_result) -> None:
    uid = os.geteuid()
    if st.st_uid != uid:
        raise StateError(f"{path} belongs to uid {st.st_uid}, not to the user running the "
                         f"emulator (uid {uid}); use a state dir of your own")


def read_secret(path: Path, generate: bool = True) -> str:
    """The secret in `path`, generated when absent (if `generate`); StateError otherwise."""
    try:
        return _read_checked(path)
    except FileNotFoundError:
        if not generate:
            raise StateError(f"{path} does not exist: start the emulator once (serve) to "
                             "create it, or pass the --state-dir it was started with"
                             ) from None
    _create(path, secrets.token_hex(MIN_SECRET_BYTES))  # 256 random bits, as hex
    try:
        return _read_checked(path)
    except FileNotFoundError:
        raise StateError(f"{path} vanished right after it was created") from None


def _read_checked(path: Path) -> str:
    try:
        # O_NOFOLLOW: a symlink planted in place of a secret is refused, not followed;
        # O_NONBLOCK: a FIFO there cannot hang the start.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise StateError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StateError(f"{path} is not a regular file")
        _check_owner(path, st)
        if st.st_mode & 0o077:
            raise StateError(f"{path} is accessible by group or others "
                             f"(mode {st.st_mode & 0o777:o}); run: chmod 600 {path}")
        data = os.read(fd, 4096)
    except OSError as e:
        raise StateError(f"cannot read {path}: {e.strerror or e}") from None
    finally:
        os.close(fd)
    text = data.strip()
    if not text:
        raise StateError(f"{path} is empty; restore it, or delete it to have a new one "
                         f"generated ({_what_breaks(path)})")
    if not _SECRET_TEXT.fullmatch(text):
        raise StateError(f"{path} is not a secret written by the emulator (binary or "
                         "spaces in it); restore it, or delete it to have a new one generated")
    if len(text) < MIN_SECRET_BYTES:
        raise StateError(f"{path} is too short ({len(text)} bytes, at least "
                         f"{MIN_SECRET_BYTES} needed); delete it to have a new one generated")
    return text.decode("ascii")


def _what_breaks(path: Path) -> str:
    if path.name == "jwt-secret":
        return "tokens signed with the old one stop working"
    return "whoever holds the old key must read the new one"


def _create(path: Path, value: str) -> None:
    """Write `value` to a 0600 temp file, then hard-link it into place: readers never see
    a half-written file, and of concurrent creators the first one wins."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, value.encode("ascii") + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    except OSError as e:
        raise StateError(f"cannot create {path}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)


def read_or_create(path: Path, make: str) -> str:
    """A non-secret value file (e.g. the default account), created when absent."""
    try:
        value = path.read_text().strip()
    except FileNotFoundError:
        _create(path, make)
        value = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise StateError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if not value:
        raise StateError(f"{path} is empty; delete it to have a new one generated")
    return value
