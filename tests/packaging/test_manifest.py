"""CONTRACT 1: plugin-manifest.toml (at the repo root and inside the package), the
`bus.plugins` entry point, and the `bus-containers` console script."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import re
import subprocess
import sys
from pathlib import Path

import pytest

import bus_containers
from bus_containers.cli import containers

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
ROOT_MANIFEST = ROOT / "plugin-manifest.toml"
SCOPES = ["container:read", "container:run", "container:delete", "billing:read"]
COMMANDS = {"status", "run", "runs", "show", "delete", "cancel", "usage", "doctor"}


@pytest.fixture(scope="module")
def manifest() -> dict:
    return tomllib.loads(ROOT_MANIFEST.read_text(encoding="utf-8"))


def _entry_point():
    found = [ep for ep in importlib.metadata.entry_points(group="bus.plugins")
             if ep.name == "containers"]
    assert len(found) == 1, found
    return found[0]


def test_manifest_basics(manifest):
    assert manifest["schema_version"] == 1
    assert manifest["name"] == "bus-containers"
    assert isinstance(manifest["summary"], str) and manifest["summary"].strip()
    assert "\n" not in manifest["summary"]


def test_manifest_version_is_the_distribution_version(manifest):
    version = importlib.metadata.version("bus-containers")
    assert manifest["version"] == version == bus_containers.__version__


def test_manifest_entry_point_matches_the_installed_one(manifest):
    ep = _entry_point()
    assert manifest["entry_point"] == {"group": "bus.plugins", "name": "containers",
                                       "object": "bus_containers.plugin"}
    assert (ep.group, ep.name, ep.value) == (
        manifest["entry_point"]["group"], manifest["entry_point"]["name"],
        manifest["entry_point"]["object"])
    assert ep.dist is None or ep.dist.metadata["Name"] == "bus-containers"


def test_entry_point_resolves_to_the_hook_module():
    module = _entry_point().load()
    assert module is importlib.import_module("bus_containers.plugin")
    assert callable(module.register_commands)


def test_manifest_hooks_exist_and_are_pluggy_hookimpls(manifest):
    import bus_containers.plugin as plugin

    assert manifest["hooks"] == ["register_commands"]
    for hook in manifest["hooks"]:
        function = getattr(plugin, hook)
        assert hasattr(function, "bus_impl"), "not marked with HookimplMarker('bus')"


def test_manifest_commands_cover_the_group(manifest):
    names = []
    for command in manifest["commands"]:
        assert set(command) >= {"name", "help"}
        assert isinstance(command["help"], str) and command["help"].strip()
        assert "\n" not in command["help"]
        names.append(command["name"])
    assert len(names) == len(set(names))
    # Named as the host lists them ("status") or with the group ("containers status").
    assert all(name.split()[:-1] in ([], ["containers"]) for name in names)
    listed = {name.split()[-1] for name in names}
    assert listed == set(containers.commands)
    assert listed >= COMMANDS


def test_manifest_requires_host_is_a_pep440_specifier(manifest):
    value = manifest["requires_host"]
    assert isinstance(value, str) and value.strip()
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:  # pragma: no cover - packaging is normally present
        clause = r"\s*(~=|==|!=|<=|>=|<|>|===)\s*[0-9][0-9A-Za-z.*+!-]*\s*"
        assert re.fullmatch(rf"{clause}(,{clause})*", value)
    else:
        SpecifierSet(value)  # raises InvalidSpecifier


def test_manifest_permissions(manifest):
    assert manifest["permissions"]["oauth_scopes"] == SCOPES


def test_manifest_is_shipped_in_the_package():
    shipped = importlib.resources.files("bus_containers").joinpath("plugin-manifest.toml")
    assert shipped.is_file()
    text = shipped.read_text(encoding="utf-8")
    assert text == ROOT_MANIFEST.read_text(encoding="utf-8")
    assert tomllib.loads(text)["name"] == "bus-containers"


def test_wheel_build_config_ships_the_manifest():
    """hatchling ships every file under src/bus_containers; the manifest must be there,
    a real file (the root one may be a link to it)."""
    packaged = ROOT / "src" / "bus_containers" / "plugin-manifest.toml"
    assert packaged.is_file()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["entry-points"]["bus.plugins"] == {
        "containers": "bus_containers.plugin"}
    assert pyproject["project"]["scripts"]["bus-containers"] == "bus_containers.cli:main"


# -- the console script --------------------------------------------------------------------
SCRIPT = Path(sys.executable).parent / "bus-containers"


@pytest.fixture(scope="module")
def script() -> Path:
    if not SCRIPT.exists():
        pytest.skip(f"console script not installed at {SCRIPT}")
    return SCRIPT


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_console_script_help(script):
    proc = _run(str(script), "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: bus-containers")
    commands = proc.stdout.split("Commands:")[1].split()
    assert COMMANDS <= set(commands)
    assert "Traceback" not in proc.stdout + proc.stderr


def test_console_script_version(script):
    proc = _run(str(script), "--version")
    assert proc.returncode == 0
    assert proc.stdout == f"bus-containers {importlib.metadata.version('bus-containers')}\n"


def test_console_script_usage_error(script):
    proc = _run(str(script), "status", "--token", "Lit3ralTok")
    assert proc.returncode == 2
    assert "Lit3ralTok" not in proc.stdout + proc.stderr
    assert "--token-file" in proc.stderr
