"""Finding and loading the entry points of group ``bus.plugins``, cheaply.

``importlib.metadata.entry_points()`` is the reference, but importing
``importlib.metadata`` (email, zipfile, csv, ...) and building a ``Distribution`` per
installed package costs about 40 ms, most of a ``bus --help`` run. The host needs only
the entry points of one group at startup, so this module scans the same places
``importlib.metadata`` scans (every directory on ``sys.path``, its ``*.dist-info`` and
``*.egg-info`` children, first distribution of a given name wins) and parses
``entry_points.txt`` the same way, without those imports. Zip archives on ``sys.path``
are not scanned (no plugin is installed that way in practice).

``bus plugins``, which needs distribution names and versions, uses ``importlib.metadata``
on the directory found here, so both views agree.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

GROUP = "bus.plugins"

_SUFFIXES = (".dist-info", ".egg-info")
_VALUE_RE = re.compile(r"^(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?(?P<extras>\[.*\])?\s*$")


@dataclass(frozen=True)
class EntryPoint:
    """One entry point of :data:`GROUP`: ``name = value`` from ``metadata_path``."""

    name: str
    value: str
    metadata_path: str  # the *.dist-info / *.egg-info directory it comes from

    @property
    def module(self) -> str:
        match = _VALUE_RE.match(self.value)
        return match.group("module") if match else self.value

    @property
    def top_level_package(self) -> str:
        return self.module.split(".", 1)[0]

    def load(self) -> object:
        """Import the module and return the object the entry point names."""
        import importlib

        match = _VALUE_RE.match(self.value)
        if match is None:
            raise ValueError(f"malformed entry point value {self.value!r}")
        obj: object = importlib.import_module(match.group("module"))
        for attr in filter(None, (match.group("attr") or "").split(".")):
            obj = getattr(obj, attr)
        return obj


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _dist_key(entry_name: str) -> str:
    """The normalized distribution name of a ``name-version.dist-info`` directory."""
    stem = entry_name.rsplit(".", 1)[0]
    return _normalize(stem.split("-", 1)[0])


def parse_entry_points(text: str, group: str = GROUP) -> list[tuple[str, str]]:
    """``(name, value)`` pairs of ``group`` in an ``entry_points.txt`` text (INI-like)."""
    pairs: list[tuple[str, str]] = []
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if section != group:
            continue
        name, sep, value = line.partition("=")
        if sep and name.strip() and value.strip():
            pairs.append((name.strip(), value.strip()))
    return pairs


def find_entry_points(group: str = GROUP, path: list[str] | None = None) -> list[EntryPoint]:
    """Every entry point of ``group`` installed on ``path`` (default ``sys.path``)."""
    found: list[EntryPoint] = []
    seen: set[str] = set()
    for entry in sys.path if path is None else path:
        directory = entry or "."
        try:
            with os.scandir(directory) as children:
                names = sorted(c.name for c in children if c.name.endswith(_SUFFIXES))
        except OSError:  # missing dir, a zip archive, no permission
            continue
        for name in names:
            key = _dist_key(name)
            if key in seen:
                continue
            seen.add(key)
            meta_dir = os.path.join(directory, name)
            try:
                with open(os.path.join(meta_dir, "entry_points.txt"), encoding="utf-8") as fh:
                    text = fh.read()
            except OSError:
                continue
            for ep_name, value in parse_entry_points(text, group):
                found.append(EntryPoint(ep_name, value, meta_dir))
    return found
