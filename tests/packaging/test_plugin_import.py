"""CONTRACT 1: registering the plugin is cheap. In a FRESH interpreter, importing
`bus_containers.plugin` and calling `register_commands` (and even `--help`) leaves
requests, jwt and werkzeug unimported: the host does this on every `bus` run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

HEAVY = ("requests", "jwt", "werkzeug", "urllib3")

SCRIPT = textwrap.dedent(
    """
    import json
    import sys

    import click

    import bus_containers.plugin as plugin

    root = click.Group("bus")
    plugin.register_commands(cli=root)
    after_register = sorted(name for name in {heavy!r} if name in sys.modules)

    help_exit = None
    if {run_help!r}:
        try:
            root.main(args={help_args!r}, prog_name="bus", standalone_mode=True)
        except SystemExit as exc:
            help_exit = exc.code
    after_help = sorted(name for name in {heavy!r} if name in sys.modules)
    print(json.dumps({{
        "commands": sorted(root.commands),
        "sub": sorted(root.commands["containers"].commands),
        "after_register": after_register,
        "after_help": after_help,
        "help_exit": help_exit,
    }}), file=sys.stderr)
    """
)


def run_fresh(run_help: bool, help_args: list[str] | None = None) -> tuple[dict, str]:
    code = SCRIPT.format(heavy=HEAVY, run_help=run_help, help_args=help_args or [])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env=_env())
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stderr.strip().splitlines()[-1]), proc.stdout


def _env() -> dict:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUS_", "PYTHON"))}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def test_register_commands_imports_nothing_heavy():
    report, _ = run_fresh(run_help=False)
    assert report["commands"] == ["containers"]
    assert set(report["sub"]) >= {"status", "run", "runs", "show", "delete"}
    assert report["after_register"] == []


def test_help_through_the_host_imports_nothing_heavy():
    report, stdout = run_fresh(run_help=True, help_args=["containers", "--help"])
    assert report["help_exit"] == 0
    assert report["after_help"] == []
    for name in ("status", "run", "runs", "show", "delete"):
        assert name in stdout


def test_subcommand_help_imports_nothing_heavy():
    report, stdout = run_fresh(run_help=True, help_args=["containers", "run", "--help"])
    assert report["help_exit"] == 0
    assert report["after_help"] == []
    assert "--detach" in stdout


def test_root_help_imports_nothing_heavy():
    report, stdout = run_fresh(run_help=True, help_args=["--help"])
    assert report["help_exit"] == 0
    assert report["after_help"] == []
    assert "containers" in stdout
