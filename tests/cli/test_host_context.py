"""The plugin under a real click root group, as a host runs it (CONTRACT 1 and 2): the
host's ctx.obj gives the config dir and the API origin; any other ctx.obj is ignored."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import click
import pytest

from bus_containers import plugin
from tests.cli.helpers import BASE, make_jwt, run_obj

HOST_TOKEN = make_jwt(jti="host-config-token")
HOST_URL = "http://localhost:9999"


class HostContext:
    def __init__(self, config_dir, api_url=None):
        self.config_dir = config_dir
        self.api_url = api_url


def make_root(obj_factory) -> click.Group:
    @click.group()
    @click.pass_context
    def bus(ctx):
        ctx.obj = obj_factory()

    plugin.register_commands(cli=bus)
    return bus


def write_host_token(config_dir: Path, token: str = HOST_TOKEN) -> None:
    (config_dir / "auth").mkdir(parents=True)
    (config_dir / "auth" / "api-token").write_text(token + "\n")
    (config_dir / "auth" / "api-token").chmod(0o600)


def test_register_adds_one_containers_group():
    root = click.Group("bus")
    plugin.register_commands(cli=root)
    assert list(root.commands) == ["containers"]
    assert set(root.commands["containers"].commands) >= {"status", "run", "runs", "show",
                                                          "delete"}


@pytest.mark.parametrize("as_path", [str, Path, os.fspath])
def test_host_config_dir_and_api_url(cli, requests_mock, tmp_path, as_path):
    host_dir = tmp_path / "host-config"
    write_host_token(host_dir)
    root = make_root(lambda: HostContext(as_path(host_dir), HOST_URL))
    requests_mock.get(HOST_URL + "/api/v1/containers/status", json={"status": "ready"})
    result = cli("containers", "status", group=root, token=None, secrets=(HOST_TOKEN,))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "ready\n"
    request = requests_mock.last_request
    assert request.url == HOST_URL + "/api/v1/containers/status"
    assert request.headers["Authorization"] == f"Bearer {HOST_TOKEN}"


def test_host_config_dir_beats_bus_config_dir(cli, requests_mock, tmp_path):
    host_dir = tmp_path / "host-config"
    write_host_token(host_dir)
    write_host_token(Path(cli.config_dir), make_jwt(jti="env-config-token"))
    root = make_root(lambda: HostContext(host_dir))
    requests_mock.get(BASE + "/status", json={"status": "ready"})
    result = cli("containers", "status", group=root, token=None, secrets=(HOST_TOKEN,))
    assert result.exit_code == 0
    assert requests_mock.last_request.headers["Authorization"] == f"Bearer {HOST_TOKEN}"


def test_host_without_api_url_uses_default(cli, requests_mock, tmp_path):
    host_dir = tmp_path / "host-config"
    write_host_token(host_dir)
    root = make_root(lambda: HostContext(host_dir, None))
    requests_mock.get(BASE + "/runs/run_1", json=run_obj())
    result = cli("containers", "show", "run_1", group=root, token=None, secrets=(HOST_TOKEN,))
    assert result.exit_code == 0
    assert requests_mock.last_request.url == BASE + "/runs/run_1"


def test_env_and_flag_beat_the_host_api_url(cli, requests_mock, tmp_path):
    host_dir = tmp_path / "host-config"
    write_host_token(host_dir)
    root = make_root(lambda: HostContext(host_dir, HOST_URL))
    requests_mock.get("http://localhost:7777/api/v1/containers/status", json={"status": "e"})
    requests_mock.get("http://localhost:6666/api/v1/containers/status", json={"status": "f"})
    env = {"BUS_API_BASE_URL": "http://localhost:7777"}
    result = cli("containers", "status", group=root, token=None, env=env,
                 secrets=(HOST_TOKEN,))
    assert result.stdout == "e\n"
    result = cli("containers", "--api-url", "http://localhost:6666", "status", group=root,
                 token=None, env=env, secrets=(HOST_TOKEN,))
    assert result.stdout == "f\n"


def test_env_token_beats_host_config_file(cli, requests_mock, tmp_path):
    host_dir = tmp_path / "host-config"
    write_host_token(host_dir)
    root = make_root(lambda: HostContext(host_dir, HOST_URL))
    requests_mock.get(HOST_URL + "/api/v1/containers/status", json={"status": "ready"})
    env_token = make_jwt(jti="env")
    result = cli("containers", "status", group=root, token=env_token, secrets=(HOST_TOKEN,))
    assert result.exit_code == 0
    assert requests_mock.last_request.headers["Authorization"] == f"Bearer {env_token}"


def test_host_api_url_is_validated(cli, requests_mock, tmp_path):
    root = make_root(lambda: HostContext(tmp_path, "http://example.com"))
    result = cli("containers", "status", group=root)
    assert result.exit_code == 2
    assert "clear text" in result.stderr
    assert requests_mock.call_count == 0


@pytest.mark.parametrize("factory", [
    lambda: None,
    lambda: {"config_dir": "/nonexistent/dict", "api_url": "http://localhost:9999"},
    lambda: object(),
    lambda: SimpleNamespace(unrelated=True),
], ids=["none", "dict", "object", "object-without-attrs"])
def test_no_host_context(cli, requests_mock, factory):
    """Any other ctx.obj: the token comes from $BUS_CONFIG_DIR, the URL is the default."""
    write_host_token(Path(cli.config_dir))
    root = make_root(factory)
    requests_mock.get(BASE + "/status", json={"status": "ready"})
    result = cli("containers", "status", group=root, token=None, secrets=(HOST_TOKEN,))
    assert result.exit_code == 0, result.stderr
    request = requests_mock.last_request
    assert request.url == BASE + "/status"
    assert request.headers["Authorization"] == f"Bearer {HOST_TOKEN}"


def test_no_host_context_xdg_config(cli, requests_mock, tmp_path, monkeypatch):
    xdg = tmp_path / "xdg-home"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    write_host_token(xdg / "bus")
    root = make_root(lambda: None)
    requests_mock.get(BASE + "/status", json={"status": "ready"})
    result = cli("containers", "status", group=root, token=None, secrets=(HOST_TOKEN,),
                 env={"BUS_CONFIG_DIR": None, "XDG_CONFIG_HOME": str(xdg)})
    assert result.exit_code == 0, result.stderr


def test_host_missing_token_names_host_config_dir(cli, requests_mock, tmp_path):
    root = make_root(lambda: HostContext(tmp_path / "empty-host"))
    result = cli("containers", "status", group=root, token=None)
    assert result.exit_code == 4
    assert str(tmp_path / "empty-host" / "auth" / "api-token") in result.stderr


def test_obj_passed_directly_to_the_group(cli, requests_mock, tmp_path):
    """A host may also hand ctx.obj straight to the group (CliRunner obj=)."""
    from bus_containers.cli import containers

    write_host_token(tmp_path / "h")
    requests_mock.get(HOST_URL + "/api/v1/containers/status", json={"status": "ready"})
    result = cli("status", group=containers, obj=HostContext(tmp_path / "h", HOST_URL),
                 token=None, secrets=(HOST_TOKEN,))
    assert result.exit_code == 0


@pytest.mark.parametrize("args", [["containers", "status", "--json", "--timeout", "0"],
                                  ["containers", "show", "--json", "bad/id"]])
def test_json_usage_errors_under_a_host(cli, requests_mock, tmp_path, args):
    import json

    root = make_root(lambda: HostContext(tmp_path))
    result = cli(*args, group=root)
    assert result.exit_code == 2
    assert json.loads(result.stderr)["error"]["exit_code"] == 2


def test_help_under_host(cli):
    root = make_root(lambda: None)
    result = cli("containers", "--help", group=root)
    assert result.exit_code == 0
    for name in ("status", "run", "runs", "show", "delete"):
        assert name in result.stdout
