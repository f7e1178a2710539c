"""Fixtures for the reference host tests: fake plugins on PYTHONPATH, `bus` as a subprocess,
a tiny token server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from bus_host.discovery import find_entry_points

BUS = shutil.which("bus", path=str(Path(sys.executable).parent))


def bus_command() -> list[str]:
    """The installed console script, else `python -m bus_host`."""
    return [BUS] if BUS else [sys.executable, "-m", "bus_host"]


# Plugins installed in the environment (bus-containers, ...) are not under test here:
# disable them by name so that these tests only see the fake plugins they create.
FOREIGN_PLUGINS = sorted({ep.name for ep in find_entry_points()})


HOOKIMPL_HEADER = 'import click\nimport pluggy\n\nhookimpl = pluggy.HookimplMarker("bus")\n'

GOOD_PLUGIN = HOOKIMPL_HEADER + textwrap.dedent(
    '''
    import os
    import sys

    marker = os.environ.get("GOODPLUG_IMPORT_MARKER")
    if marker:
        open(marker, "w").close()


    @click.command("hello")
    @click.pass_context
    def hello(ctx):
        """Say hello and show the host context."""
        click.echo(f"config_dir={getattr(ctx.obj, 'config_dir', None)}")
        click.echo(f"api_url={getattr(ctx.obj, 'api_url', None)}")
        click.echo(f"requests_imported={'requests' in sys.modules}")


    @click.command("crash")
    def crash():
        """Fail with an unexpected exception."""
        raise RuntimeError("unexpected failure in plugin command")


    @hookimpl
    def register_commands(cli):
        cli.add_command(hello)
        cli.add_command(crash)
    '''
)

GOOD_MANIFEST = textwrap.dedent(
    """
    schema_version = 1
    name = "goodplug"
    version = "1.0"
    summary = "A fake plugin for the host tests."
    hooks = ["register_commands"]

    [[commands]]
    name = "hello"
    help = "Say hello."

    [[commands]]
    name = "crash"
    help = "Fail."
    """
)


@dataclass
class PluginSite:
    """A directory put on PYTHONPATH holding fake plugin packages and their dist-info."""

    root: Path
    header: str = HOOKIMPL_HEADER  # the imports and the hookimpl marker of a fake plugin

    def add(
        self,
        package: str,
        code: str,
        *,
        ep_name: str | None = None,
        ep_value: str | None = None,
        dist: str | None = None,
        version: str = "1.0",
        manifest: str | None = None,
        files: dict[str, str] | None = None,
    ) -> None:
        pkg_dir = self.root / package
        pkg_dir.mkdir(parents=True)
        (pkg_dir / "__init__.py").write_text(code)
        for name, text in (files or {}).items():
            (pkg_dir / name).write_text(text)
        if manifest is not None:
            (pkg_dir / "plugin-manifest.toml").write_text(manifest)
        dist = dist or package
        info = self.root / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(
            f"[console_scripts]\nnot-a-plugin = {package}:main\n\n"
            f"[bus.plugins]\n{ep_name or package} = {ep_value or package}\n"
        )

    def add_good(self, **kwargs) -> None:
        kwargs.setdefault("ep_name", "good")
        kwargs.setdefault("dist", "goodplug")
        kwargs.setdefault("manifest", GOOD_MANIFEST)
        self.add("goodplug", GOOD_PLUGIN, **kwargs)

    def add_bad_import(self) -> None:
        self.add(
            "badimport",
            'raise RuntimeError("boom on import")\n',
            ep_name="badimport",
            dist="badimport-plugin",
            version="0.3",
        )

    def add_bad_register(self) -> None:
        code = HOOKIMPL_HEADER + textwrap.dedent(
            '''
            @click.command("half")
            def half():
                """Added before the plugin fails."""


            @hookimpl
            def register_commands(cli):
                cli.add_command(half)
                raise ValueError("cannot register\\nsecond line")
            '''
        )
        self.add("badregister", code, ep_name="badregister", version="2.0")


@dataclass
class Bus:
    tmp: Path
    site: PluginSite
    env: dict[str, str] = field(default_factory=dict)

    @property
    def config_dir(self) -> Path:
        return Path(self.env["BUS_CONFIG_DIR"])

    def run(
        self, *args: str, env: dict[str, str | None] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        full_env = dict(self.env)
        for key, value in (env or {}).items():
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        result = subprocess.run(
            [*bus_command(), *args],
            env=full_env,
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if full_env.get("BUS_DEBUG") != "1":
            assert "Traceback" not in result.stdout + result.stderr, result.stderr
        return result


@pytest.fixture
def site(tmp_path: Path) -> PluginSite:
    root = tmp_path / "site"
    root.mkdir()
    return PluginSite(root)


@pytest.fixture
def bus(tmp_path: Path, site: PluginSite) -> Bus:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUS_")}
    home = tmp_path / "home"
    home.mkdir()
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        BUS_CONFIG_DIR=str(tmp_path / "config"),
        PYTHONPATH=str(site.root),
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.pop("PYTHONSTARTUP", None)
    if FOREIGN_PLUGINS:
        env["BUS_DISABLE_PLUGINS"] = ",".join(FOREIGN_PLUGINS)
    return Bus(tmp_path, site, env)


# --------------------------------------------------------------------------- token server


@dataclass
class TokenServer:
    url: str
    requests: list[dict] = field(default_factory=list)
    status: int = 200
    body: bytes | None = None
    content_type: str = "application/json"


@pytest.fixture
def token_server():
    state = TokenServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            state.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
            if state.body is not None:
                payload = state.body
            else:
                req = body if isinstance(body, dict) else {}
                payload = json.dumps(
                    {
                        "token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.SECRET-SIGNATURE",
                        "token_type": "Bearer",
                        "expires_in": req.get("ttl", 3600),
                        "sub": req.get("sub", "11111111-2222-3333-4444-555555555555"),
                        "scope": req.get("scope", ""),
                    }
                ).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", state.content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
