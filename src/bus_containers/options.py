"""The options each command's controller takes beyond the common ones: plain data that
cli.py fills from click's parse and the controllers in controllers.py read.

Apart from controllers.py on purpose: a dataclass costs about 0.3 ms to create, and ten
of them were a tenth of `status`'s own start-up, which needs none. A command imports this
module when it builds its options (`status` and `usage` take none).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .controllers import CommonOptions
    from .service import ContainersClient


@dataclass
class RunOptions:
    command: list[str]
    profile: str = "codex"
    env: dict[str, str] = field(default_factory=dict)
    run_timeout: int | None = None
    detach: bool = False
    remove: bool = False
    quiet: bool = False  # no progress and no informational lines on stderr
    interactive: bool = False  # -i: our stdin streams to the command's
    workspace: str | None = None  # -w PATH: the tree the run starts in, at /workspace
    stdin_fd: int = 0


@dataclass
class WaitOptions:
    run_id: str


@dataclass
class DeleteOptions:
    run_ids: list[str]


@dataclass
class LogsOptions:
    run_id: str
    follow: bool = False
    offset: int = 0
    tail: int | None = None
    since: str | None = None  # as typed: a duration (10m) or a time
    timestamps: bool = False


@dataclass
class RunsOptions:
    limit: int | None = 20  # None with `all`
    status: str | None = None
    profile: str | None = None
    since: str | None = None  # as typed: a duration (10m) or a time
    all: bool = False
    quiet: bool = False


@dataclass
class ShowOptions:
    run_id: str


@dataclass
class CancelOptions:
    run_ids: list[str]


@dataclass
class DoctorOptions:
    common: CommonOptions
    host_obj: object = None
    env: Mapping[str, str] | None = None
    make_client: Callable[..., ContainersClient] | None = None


@dataclass
class DiffOptions:
    run_id: str


@dataclass
class CopyOptions:
    run_id: str
    path: str
    dest: str  # "-": a tar stream on stdout
