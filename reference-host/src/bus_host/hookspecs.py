"""The hook specifications of the Bus CLI host (pluggy project ``"bus"``).

Plugins never import this module: they declare their implementations with
``pluggy.HookimplMarker("bus")`` and the host validates them against these specs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    import click

PROJECT_NAME = "bus"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add the plugin's commands to ``cli``, the host's root :class:`click.Group`.

    Called once per ``bus`` run, ``--help`` included, so it must be cheap: no network,
    no heavy imports. At run time the root command's ``ctx.obj`` carries ``config_dir``
    (str) and ``api_url`` (str or None).
    """
