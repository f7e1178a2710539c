"""CONTRACT 1: registering the plugin is cheap. In a FRESH interpreter, importing
`bus_containers.plugin` and calling `register_commands` (and even `--help`) leaves
requests, jwt and werkzeug unimported: the host does this on every `bus` run."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import textwrap
import threading
import time

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


# -- `status`: the quickest command imports only what it uses --------------------------
# Each of these was imported by every command once (issue 13: `status` 1.38x a bare
# requests GET); they belong to `run`, `cp`, `diff`, `doctor` and the tables.
NOT_FOR_STATUS = ("tarfile", "subprocess", "signal", "bus_containers.options",
                  "bus_containers.doctor", "bus_containers.workspace",
                  "bus_containers.download", "bus_containers.tarsafe", "bus_containers.times")

STATUS_SCRIPT = textwrap.dedent(
    """
    import gc
    import json
    import sys

    from bus_containers.cli import main

    sys.argv = ["bus-containers", "status", "--api-url", {url!r}]
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    print(json.dumps({{"exit": code, "frozen": gc.get_freeze_count(),
                      "loaded": sorted(n for n in {names!r} if n in sys.modules)}}),
          file=sys.stderr)
    """
)


class _StatusHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the stdlib's name)
        ok = self.path == "/api/v1/containers/status"
        body = json.dumps({"status": "ready"} if ok else {"error": "not found"}).encode()
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_status_imports_only_what_it_uses():
    import jwt

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StatusHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        now = int(time.time())
        token = jwt.encode({"sub": "imports", "scope": "container:read", "iat": now,
                            "nbf": now, "exp": now + 600}, "k" * 32, algorithm="HS256")
        env = {**_env(), "BUS_AI_TOKEN": token, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        code = STATUS_SCRIPT.format(url=url, names=NOT_FOR_STATUS)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60, env=env)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert (report["exit"], proc.stdout.splitlines()[:1]) == (0, ["ready"]), proc.stderr
    assert report["loaded"] == []
    # The console script leaves start-up's objects to the OS at exit (cli.main freezes
    # them) instead of CPython's final collections walking them: ~20 ms of a `status`.
    assert report["frozen"] > 10_000
