"""Where a download lands (`cp RUN:PATH DEST`), placed as `cp -r` and `docker cp` place
things. No HTTP and no printing: the service streams the tar in, render words the result.

- The copy is named after PATH's last part: `d/e/f.txt` to a directory DEST lands as
  `DEST/f.txt`, never `DEST/d/e/f.txt`. The server names the tar's top entry so
  (docs/api.md).
- A file goes to DEST (an existing regular file gets the new content and keeps its mode,
  like cp; a symbolic link DEST is followed, like cp), or into DEST when it is a
  directory. A directory becomes DEST, or goes into DEST when that is a directory. The
  whole workspace (PATH `.`) is merged into DEST. DEST ending in `/` is a directory: a
  file is not written to a new name with a slash.
- Never replaced, whatever the download holds: a FIFO, socket or device where something
  would land (refused before anything is written), and a directory by a file or a file
  by a directory.
- Safety: the tar is unpacked by `tarsafe` into a staging directory beside DEST first
  (nothing absolute, no `..`, no devices); then every symbolic link must resolve inside
  what is copied (the directory that lands, or DEST for the whole workspace), as it will
  land, else the whole download is refused (UnsafeArchive) and nothing is written: a
  link `../.bashrc` in a copied folder would otherwise point next to DEST.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO

from . import errors as e
from . import tarsafe

_SPECIAL = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "device"),
            (stat.S_ISBLK, "device"))


def source_parts(source: str) -> list[str]:
    """PATH as its parts relative to /workspace (`[]`: the whole workspace)."""
    text = source.strip()
    if text == "/workspace" or text.startswith("/workspace/"):
        text = text[len("/workspace"):]
    return [p for p in text.split("/") if p not in ("", ".")]


def _special(st: os.stat_result) -> str | None:
    for test, what in _SPECIAL:
        if test(st.st_mode):
            return what
    return None


def _refuse_special(path: str, st: os.stat_result, *, via_link: bool = False) -> None:
    what = _special(st)
    if what:
        is_a = "is a symbolic link to a" if via_link else "is a"
        raise e.WorkspaceError(f"{path!r} {is_a} {what}: a download is written only to a "
                               "regular file or a directory, never over anything else",
                               path=path)


def extract_download(stream: BinaryIO, dest: str | os.PathLike, source: str) -> list[str]:
    """Unpack a downloaded tar of `source` (a path in /workspace) at `dest` (see the
    module). The paths written, as DEST-based paths. WorkspaceError for a DEST it may not
    write (checked before the first byte is read where it can be); UnsafeArchive when the
    download is refused (nothing of it is kept)."""
    dest_text = os.fspath(dest)
    dest = Path(dest_text)
    wants_dir = dest_text.endswith("/")
    dest_is_dir = False
    try:
        # Followed: a link to a directory is that directory, like cp. The text, not the
        # Path: `afile/` is not a directory, `afile` is a file.
        st = os.stat(dest_text)
    except FileNotFoundError:
        if os.path.islink(dest):
            raise e.WorkspaceError(f"{dest_text!r} is a symbolic link to "
                                   f"{os.readlink(dest)!r}, which does not exist: not "
                                   "writing through it", path=dest_text) from None
        if not dest.parent.is_dir():
            raise e.WorkspaceError(f"cannot create {dest_text!r}: {str(dest.parent)!r} is "
                                   "not an existing directory", path=dest_text) from None
        st = None
    except NotADirectoryError:
        raise e.WorkspaceError(f"{dest_text!r} is not a directory", path=dest_text) from None
    except OSError as exc:
        raise e.WorkspaceError(f"cannot write {dest_text!r}: {exc.strerror or exc}",
                               path=dest_text) from None
    if st is not None:
        _refuse_special(dest_text, st, via_link=os.path.islink(dest))
        dest_is_dir = stat.S_ISDIR(st.st_mode)
    try:
        staging = Path(tempfile.mkdtemp(prefix=".bus-cp-",
                                        dir=dest if dest_is_dir else dest.parent))
    except OSError as exc:
        where = dest_text if dest_is_dir else str(dest.parent)
        raise e.WorkspaceError(f"cannot write in {where!r}: {exc.strerror or exc}",
                               path=where) from None
    try:
        try:
            tarsafe.extract(stream, staging)
        except tarsafe.Refused as exc:
            raise e.UnsafeArchive(f"refused to unpack the download: {exc}") from None
        parts = source_parts(source)
        if not parts:  # the whole workspace: its entries, merged into DEST
            _check_links(staging)
            plan = [(item, Path(dest_text, item.name), False)
                    for item in sorted(staging.iterdir())]
            if st is not None and not dest_is_dir:
                raise e.WorkspaceError(f"{dest_text!r} is not a directory; the whole "
                                       "workspace goes into a directory", path=dest_text)
            make_dest = st is None
        else:
            item = _item(staging, parts, source)
            make_dest = False
            if os.path.islink(item):
                raise e.UnsafeArchive(f"refused to copy {source!r}: it is a symbolic link "
                                      f"(to {os.readlink(item)!r}); copy what it points to")
            if item.is_dir():
                _check_links(item)
                if dest_is_dir:
                    plan = [(item, dest / item.name, False)]
                elif st is not None:
                    raise e.WorkspaceError(f"{dest_text!r} is not a directory; cannot copy "
                                           f"the directory {parts[-1]!r} onto it",
                                           path=dest_text)
                else:
                    plan = [(item, dest, False)]
            elif dest_is_dir:
                plan = [(item, dest / item.name, False)]
            elif wants_dir:
                raise e.WorkspaceError(f"{dest_text!r} does not exist; a DEST ending in '/' "
                                       "names a directory: create it first",
                                       path=dest_text)
            else:
                plan = [(item, dest, True)]  # the user's own DEST: a link is followed
        for src, dst, follow in plan:  # every refusal before any change
            _place(src, dst, follow, check_only=True)
        if make_dest:
            _mkdir(dest_text)
        written: list[str] = []
        for src, dst, follow in plan:
            _place(src, dst, follow, check_only=False, written=written)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _item(staging: Path, parts: list[str], source: str) -> Path:
    item = staging / parts[-1]
    if not os.path.lexists(item):
        raise e.UnexpectedResponse(f"the download does not hold {parts[-1]!r} (for "
                                   f"{source!r})")
    return item


def _check_links(root: Path) -> None:
    """Every symbolic link under `root` must resolve inside it, from where it is (also
    through other links): `root` lands as a whole, so that is where the link will point."""
    real_root = os.path.realpath(root)
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(parent, name)
            if not os.path.islink(path):
                continue
            target = os.readlink(path)
            rel = os.path.relpath(path, root)
            lexical = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
            real = os.path.realpath(path)
            if (os.path.isabs(target) or lexical == ".." or lexical.startswith("../")
                    or os.path.commonpath([real_root, real]) != real_root):
                raise e.UnsafeArchive(f"refused to unpack the download: link {rel!r} points "
                                      f"outside what is copied ({target!r})")


def _mkdir(path: str) -> None:
    try:
        os.mkdir(path)
    except OSError as exc:
        raise e.WorkspaceError(f"cannot create {path!r}: {exc.strerror or exc}",
                               path=path) from None


def _place(src: Path, dst: Path, follow: bool, *, check_only: bool,
           written: list[str] | None = None) -> None:
    """Put the staged `src` at `dst`. `follow`: `dst` is the user's own DEST (a link there
    is written through, like cp); inside a merge a link is replaced, never followed."""
    shown = str(dst)
    try:
        try:
            st = os.lstat(dst)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISLNK(st.st_mode) and follow and not src.is_dir():
            st = os.stat(dst)  # the caller refused a dangling one
        src_is_dir = src.is_dir() and not src.is_symlink()
        if st is None:
            if not check_only:
                os.rename(src, dst)
                _note(dst, written)
            return
        _refuse_special(shown, st)
        if stat.S_ISLNK(st.st_mode):  # inside a merge: replaced by what comes
            if not check_only:
                if src_is_dir:
                    os.unlink(dst)
                    os.rename(src, dst)
                else:
                    os.replace(src, dst)
                _note(dst, written)
            return
        if stat.S_ISDIR(st.st_mode):
            if not src_is_dir:
                raise e.WorkspaceError(f"{shown!r} is a directory; cannot write the file "
                                       f"{src.name!r} over it", path=shown)
            for child in sorted(src.iterdir()):
                _place(child, dst / child.name, False, check_only=check_only,
                       written=written)
            return
        if src_is_dir:
            raise e.WorkspaceError(f"{shown!r} is a file; cannot copy the directory "
                                   f"{src.name!r} onto it", path=shown)
        if check_only:
            return
        if src.is_symlink():
            os.replace(src, dst)
        else:  # new content in the existing file: its inode, mode and links stay, as cp
            flags = os.O_WRONLY | os.O_TRUNC | (0 if follow else os.O_NOFOLLOW)
            with open(src, "rb") as source, open(os.open(dst, flags), "wb") as target:
                shutil.copyfileobj(source, target, 1 << 20)
        _note(dst, written)
    except OSError as exc:
        raise e.WorkspaceError(f"cannot write {shown!r}: {exc.strerror or exc}",
                               path=shown) from None


def _note(dst: Path, written: list[str] | None) -> None:
    if written is None:
        return
    written.append(str(dst))
    if dst.is_dir() and not dst.is_symlink():
        for parent, dirs, files in os.walk(dst):
            written.extend(os.path.join(parent, n) for n in sorted(dirs + files))
