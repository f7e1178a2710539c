"""The ``bus`` command: root group, plugin loading, ``bus plugins`` and ``bus auth token``."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import click

from bus_host import __version__
from bus_host.plugins import PluginRecord, env_flag

CONFIG_FILE = "config.toml"


@dataclass
class HostContext:
    """``ctx.obj`` of every ``bus`` command; plugins read it with ``getattr``."""

    config_dir: str
    api_url: str | None = None


class BusGroup(click.Group):
    """The root group; remembers what happened to each plugin at startup."""

    plugin_records: list[PluginRecord] | None = None


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def default_config_dir() -> str:
    """`~/.config/bus` (or `$XDG_CONFIG_HOME/bus`) on Linux and macOS, as the plugin reads
    it: platformdirs' Unix rules, not its macOS `~/Library/Application Support`."""
    import platformdirs

    if sys.platform == "win32":
        return platformdirs.user_config_dir("bus", appauthor=False)
    from platformdirs.unix import Unix

    return Unix("bus").user_config_dir


def _api_url_from_config(config_dir: str) -> str | None:
    """``api_url`` from ``<config dir>/config.toml``; a broken file is a warning, not a stop."""
    path = os.path.join(config_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, ValueError) as exc:  # TOMLDecodeError is a ValueError
        click.echo(f"bus: warning: ignoring {path}: {' '.join(str(exc).split())}", err=True)
        return None
    value = data.get("api_url")
    if value is None:
        return None
    if not isinstance(value, str):
        click.echo(f"bus: warning: ignoring api_url in {path}: not a string", err=True)
        return None
    return value.strip() or None


@click.group(
    cls=BusGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Plugins add more commands; `bus plugins` lists them.",
)
@click.version_option(__version__, "--version", prog_name="bus", message="%(prog)s %(version)s")
@click.option(
    "--config-dir",
    metavar="DIR",
    help="Configuration directory [default: $BUS_CONFIG_DIR, else the user config dir].",
)
@click.option(
    "--api-url",
    metavar="URL",
    help="API origin [default: $BUS_AI_API_URL, $BUS_API_BASE_URL, api_url in "
    "<config dir>/config.toml, else http://127.0.0.1:8080].",
)
@click.pass_context
def bus(ctx: click.Context, config_dir: str | None, api_url: str | None) -> None:
    """Bus CLI (reference host): runs the commands of installed Bus plugins."""
    config_dir = config_dir or _env("BUS_CONFIG_DIR") or default_config_dir()
    config_dir = os.path.expanduser(config_dir)
    # CONTRACT 2's order, as the plugin reads it: the flag, $BUS_AI_API_URL,
    # $BUS_API_BASE_URL, the config file; None here means the default (auth.DEFAULT_API_URL),
    # so a plugin can still tell "the default" from an origin the user chose.
    api_url = (api_url or _env("BUS_AI_API_URL") or _env("BUS_API_BASE_URL")
               or _api_url_from_config(config_dir))
    ctx.obj = HostContext(config_dir=config_dir, api_url=api_url)


# --------------------------------------------------------------------------- bus plugins


@bus.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array.")
@click.pass_context
def plugins_command(ctx: click.Context, as_json: bool) -> None:
    """List installed plugins and whether they loaded."""
    from bus_host.plugins import plugin_info

    root = ctx.find_root().command
    records = getattr(root, "plugin_records", None)
    if records is None:  # BUS_DISABLE_PLUGINS=1: nothing was discovered at startup
        from bus_host.discovery import find_entry_points

        records = [PluginRecord(ep, disabled=True) for ep in find_entry_points()]
    rows = [plugin_info(r) for r in records]

    if as_json:
        import json

        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("bus: no plugins installed (entry point group 'bus.plugins')", err=True)
        return

    def status(row: dict) -> str:
        if row["loaded"]:
            return "loaded"
        if row["error"] and row["error"].startswith("disabled"):
            return "disabled"
        return f"failed: {row['error']}"

    table = [("NAME", "VERSION", "STATUS", "HOOKS", "COMMANDS")] + [
        (
            row["name"],
            row["version"] or "-",
            status(row),
            ", ".join(row["hooks"]) or "-",
            ", ".join(row["commands"]) or "-",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(4)]
    for line in table:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(line[:4])] + [line[4]]
        click.echo("  ".join(cells).rstrip())


# --------------------------------------------------------------------------- bus auth


@bus.group("auth")
def auth_group() -> None:
    """Obtain an API token."""


@auth_group.command("token")
@click.option(
    "--scope",
    required=True,
    help='Space-separated scopes, e.g. "container:read container:run".',
)
@click.option("--sub", metavar="ID", help="Account id to ask for (the emulator accepts one).")
@click.option("--ttl", metavar="S", type=click.IntRange(min=1), help="Lifetime in seconds.")
@click.pass_obj
def auth_token_command(obj: HostContext, scope: str, sub: str | None, ttl: int | None) -> None:
    """Get a token from the API's token endpoint and save it to <config dir>/auth/api-token.

    The token itself is never printed.
    """
    from bus_host.auth import obtain_and_save_token

    obtain_and_save_token(obj, scope=scope, sub=sub, ttl=ttl)


# --------------------------------------------------------------------------- main


def _error(message: str) -> None:
    try:
        click.echo(f"bus: error: {message}", err=True)
    except Exception:  # noqa: BLE001 - stderr gone
        pass


def load_plugins_into(root: BusGroup) -> None:
    """Load the plugins onto ``root`` (unless ``BUS_DISABLE_PLUGINS=1``); strict mode exits 1."""
    from bus_host.plugins import PluginLoadError, disabled_plugins, load_plugins

    if disabled_plugins() is True:
        root.plugin_records = None
        return
    try:
        root.plugin_records = load_plugins(root)
    except PluginLoadError as exc:
        for record in exc.records:
            _error(f"plugin {record.name!r} failed to load: {record.error}")
        _error("BUS_STRICT_PLUGINS is set: stopping (unset it to run without these plugins)")
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    """Console script entry point: load plugins, then run ``bus``. Never shows a traceback
    unless ``BUS_DEBUG=1``."""
    try:
        load_plugins_into(bus)
        bus.main(args=argv, prog_name="bus", standalone_mode=True)
    except SystemExit:
        raise
    except KeyboardInterrupt:
        _error("interrupted")
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - last line of defence
        from bus_host.plugins import describe_error

        if env_flag("BUS_DEBUG"):
            import traceback

            traceback.print_exc()
            _error(f"unexpected error: {describe_error(exc)}")
        else:
            _error(f"unexpected error: {describe_error(exc)} (set BUS_DEBUG=1 for the traceback)")
        sys.exit(1)
