"""Safe extraction of a workspace tar, member by member: the emulator unpacking an upload
and the client unpacking a download (`cp`) both go through `extract`. Import-light (stdlib
only), so the emulator may use it without the client's dependencies.

Refused outright (the whole archive, with the member named): absolute names, `..`
components, device files and FIFOs, links whose target is absolute or leaves the root, and
anything over the plan's byte or file count (a tar bomb stops at the limit, not at the
disk's end). Then tarfile's own `data` filter runs on each member: it resolves link targets
against what is already on disk, so a chain of links that leaves the root (`x -> .`, then
`x/l -> ../y`) is refused too.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


class Refused(Exception):
    """The archive is not a safe workspace; the message names the member and why."""


@dataclass
class Totals:
    files: int = 0
    bytes: int = 0
    members: int = 0


def _shown(name: str) -> str:
    return repr(name if len(name) <= 200 else name[:200] + "...")


def check_member(member: tarfile.TarInfo, totals: Totals, max_bytes: int | None,
                 max_members: int | None) -> None:
    """Raise Refused if `member` may not be extracted; count it otherwise."""
    name = member.name
    shown = _shown(name)
    if "\x00" in name or not name.strip("/"):
        raise Refused(f"member {shown} has an empty or invalid name")
    if name.startswith("/") or os.path.isabs(name):
        raise Refused(f"member {shown} has an absolute path")
    if ".." in name.split("/"):
        raise Refused(f"member {shown} has a '..' component")
    if member.ischr() or member.isblk() or member.isfifo():
        raise Refused(f"member {shown} is a device file or FIFO")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise Refused(f"member {shown} is of an unsupported type")
    if member.issym() or member.islnk():
        target = member.linkname
        if not target or target.startswith("/") or os.path.isabs(target):
            raise Refused(f"link {shown} points to an absolute path")
        # The name normalized first: a symlink member named `a/l/` (or `a/l/.`) lands as
        # `a/l`, so its target is relative to `a`, not to `a/l`.
        base = posixpath.dirname(posixpath.normpath(name)) if member.issym() else ""
        resolved = posixpath.normpath(posixpath.join(base, target))
        if resolved == ".." or resolved.startswith("../"):
            raise Refused(f"link {shown} points outside the workspace")
    totals.members += 1
    if max_members is not None and totals.members > max_members:
        raise Refused(f"the archive has more than {max_members} members")
    if member.isreg():
        totals.files += 1
        totals.bytes += member.size
        if max_bytes is not None and totals.bytes > max_bytes:
            raise Refused(f"the files add up to more than {max_bytes} bytes")


def extract(archive: Path | BinaryIO, dest: Path, *, max_bytes: int | None = None,
            max_members: int | None = None) -> Totals:
    """Extract `archive` (an uncompressed tar: a path, or a stream read once) into the
    directory `dest`."""
    if not hasattr(tarfile, "data_filter"):  # Python < 3.10.12 / 3.11.4
        raise Refused("this Python has no tarfile data filter; upgrade Python to accept "
                      "workspaces")
    totals = Totals()

    def safe(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        check_member(member, totals, max_bytes, max_members)
        try:
            return tarfile.data_filter(member, path)
        except tarfile.FilterError as e:
            raise Refused(f"member {_shown(member.name)} refused: {e}") from None

    try:
        opened = (tarfile.open(archive, mode="r:") if isinstance(archive, (str, Path))
                  else tarfile.open(fileobj=archive, mode="r|"))
        with opened as tar:
            # One member at a time (streaming): never the whole member list in memory.
            for member in tar:
                tar.extract(member, dest, filter=safe)
    except tarfile.TarError as e:
        raise Refused(f"not a valid tar archive: {e}") from None
    except OSError as e:
        raise Refused(f"the archive could not be extracted: {e.strerror or e}") from None
    return totals
