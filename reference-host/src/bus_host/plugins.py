"""Loading plugins with pluggy, one at a time, so that a broken one breaks nothing else."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bus_host.discovery import EntryPoint, find_entry_points

if TYPE_CHECKING:  # pragma: no cover
    import click

MANIFEST_NAME = "plugin-manifest.toml"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def disabled_plugins() -> bool | set[str]:
    """``BUS_DISABLE_PLUGINS``: True (all), a set of entry point names, or False (none)."""
    raw = os.environ.get("BUS_DISABLE_PLUGINS", "").strip()
    if raw.lower() in _FALSE:
        return False
    if raw.lower() in _TRUE or raw.lower() == "all":
        return True
    return {part.strip() for part in raw.split(",") if part.strip()}


def describe_error(exc: BaseException) -> str:
    """``Type: message`` on one line."""
    message = " ".join(str(exc).split())
    name = type(exc).__name__
    return f"{name}: {message}" if message else name


@dataclass
class PluginRecord:
    """What happened to one entry point of ``bus.plugins`` during startup."""

    entry_point: EntryPoint
    loaded: bool = False
    error: str | None = None
    disabled: bool = False
    hooks: list[str] = field(default_factory=list)  # from the registered hookimpls
    commands: list[str] = field(default_factory=list)  # root commands it added

    @property
    def name(self) -> str:
        return self.entry_point.name


class PluginLoadError(Exception):
    """Raised in strict mode (``BUS_STRICT_PLUGINS=1``) when a plugin failed."""

    def __init__(self, records: list[PluginRecord]) -> None:
        self.records = records
        super().__init__("; ".join(f"{r.name}: {r.error}" for r in records))


def _warn(message: str) -> None:
    try:
        sys.stderr.write(f"bus: warning: {message}\n")
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):  # closed (None) or broken stderr
        pass


def load_plugins(root: click.Group, *, strict: bool | None = None) -> list[PluginRecord]:
    """Load every ``bus.plugins`` entry point and let it register its commands on ``root``.

    Each plugin is imported, registered with a ``pluggy.PluginManager("bus")`` and its
    ``register_commands`` implementations are called on their own (a subset hook caller),
    so an exception in one plugin is recorded for that plugin only; the commands it may
    have added before failing are removed again. Failures are reported as one warning line
    each on stderr, or raised as :class:`PluginLoadError` in strict mode.
    """
    disabled = disabled_plugins()
    if disabled is True:
        return []
    if strict is None:
        strict = env_flag("BUS_STRICT_PLUGINS")

    entry_points = find_entry_points()
    if not entry_points:
        return []

    import pluggy

    from bus_host import hookspecs

    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)

    records: list[PluginRecord] = []
    for ep in entry_points:
        record = PluginRecord(ep)
        records.append(record)
        if disabled and ep.name in disabled:
            record.disabled = True
            continue
        _load_one(pm, root, record)
        if record.error is not None and not strict:
            _warn(f"plugin {ep.name!r} failed to load: {record.error}")

    failed = [r for r in records if r.error is not None]
    if strict and failed:
        raise PluginLoadError(failed)
    return records


def _load_one(pm: Any, root: click.Group, record: PluginRecord) -> None:
    ep = record.entry_point
    registered = False
    before = dict(root.commands)
    try:
        plugin = ep.load()
        pm.register(plugin, name=ep.name)
        registered = True
        record.hooks = sorted(
            {
                hook.name
                for hook in pm.get_hookcallers(plugin) or []
                if not hook.name.startswith("_")
            }
        )
        others = [p for p in pm.get_plugins() if p is not plugin]
        pm.subset_hook_caller("register_commands", remove_plugins=others)(cli=root)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - isolation is the point
        record.error = describe_error(exc)
        # Undo a half-done registration: a failed plugin contributes nothing.
        root.commands.clear()
        root.commands.update(before)
        if registered:
            try:
                pm.unregister(name=ep.name)
            except Exception:  # noqa: BLE001
                pass
        return
    # A command name belongs to whoever registered it first (the host's own included):
    # a later plugin cannot silently take `bus containers` over.
    for name, cmd in before.items():
        if root.commands.get(name) is not cmd:
            root.commands[name] = cmd
            _warn(f"plugin '{ep.name}' tried to replace the command '{name}'; "
                  "the one registered first is kept")
    record.loaded = True
    record.commands = [name for name, cmd in root.commands.items() if before.get(name) is not cmd]


# --------------------------------------------------------------------------- listing


@dataclass
class Manifest:
    name: str | None = None
    version: str | None = None
    summary: str | None = None
    hooks: list[str] | None = None
    commands: list[str] | None = None


def _manifest_text(package: str) -> str | None:
    """The text of ``<package>/plugin-manifest.toml``, without running plugin code.

    A package that is already imported is asked through ``importlib.resources``; one that
    is not (it failed to import, or plugins are disabled) is located with ``find_spec``,
    which does not execute the package.
    """
    import importlib.resources
    import importlib.util

    module = sys.modules.get(package)
    if module is not None and not hasattr(module, "__path__"):
        return None  # a plain module, not a package: it cannot ship a manifest file
    if module is not None and getattr(module, "__spec__", None) is not None:
        resource = importlib.resources.files(module).joinpath(MANIFEST_NAME)
        return resource.read_text(encoding="utf-8") if resource.is_file() else None
    spec = importlib.util.find_spec(package)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(location, MANIFEST_NAME)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                return fh.read()
    return None


def read_manifest(package: str) -> Manifest | None:
    """Parse the plugin's shipped manifest; None when there is none.

    Raises ``ValueError`` when the manifest exists but cannot be read or parsed.
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    try:
        text = _manifest_text(package)
    except Exception as exc:  # noqa: BLE001 - a broken plugin package must not break listing
        raise ValueError(describe_error(exc)) from None
    if text is None:
        return None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(describe_error(exc)) from None

    def _str(value: object) -> str | None:
        return value if isinstance(value, str) else None

    hooks = data.get("hooks")
    commands = data.get("commands")
    return Manifest(
        name=_str(data.get("name")),
        version=_str(data.get("version")),
        summary=_str(data.get("summary")),
        hooks=[h for h in hooks if isinstance(h, str)] if isinstance(hooks, list) else None,
        commands=(
            [c["name"] for c in commands if isinstance(c, dict) and isinstance(c.get("name"), str)]
            if isinstance(commands, list)
            else None
        ),
    )


def plugin_info(record: PluginRecord) -> dict[str, Any]:
    """The row of ``bus plugins`` for one entry point (the ``--json`` object)."""
    import importlib.metadata

    ep = record.entry_point
    distribution = version = None
    try:
        dist = importlib.metadata.Distribution.at(ep.metadata_path)
        distribution, version = dist.metadata["Name"], dist.version
    except Exception:  # noqa: BLE001 - broken metadata must not break the listing
        pass

    hooks, commands, summary = record.hooks, record.commands, None
    try:
        manifest = read_manifest(ep.top_level_package)
    except ValueError as exc:
        _warn(f"plugin {ep.name!r}: cannot read {MANIFEST_NAME}: {exc}")
        manifest = None
    if manifest is not None:
        summary = manifest.summary
        if manifest.hooks is not None:
            hooks = manifest.hooks
        if manifest.commands is not None:
            commands = manifest.commands

    if record.disabled:
        error: str | None = "disabled by BUS_DISABLE_PLUGINS"
    else:
        error = record.error
    return {
        "name": ep.name,
        "distribution": distribution,
        "version": version,
        "summary": summary,
        "entry_point": ep.value,
        "hooks": list(hooks),
        "commands": list(commands),
        "loaded": record.loaded,
        "error": error,
    }
