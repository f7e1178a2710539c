"""CONTRACT 2, row by row, through the pure functions of `bus_containers.settings`.

Every test passes its own env dict and tmp dirs: nothing depends on the real process env
except the XDG / platformdirs rows, which set it with monkeypatch.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from bus_containers import settings as s
from bus_containers.commands import COMMANDS
from bus_containers.errors import (
    InvalidApiUrl,
    TokenFileError,
    TokenMissing,
    UsageError,
)


class Host:
    """What the host's root command sets as ctx.obj."""

    def __init__(self, config_dir=None, api_url=None):
        self.config_dir = config_dir
        self.api_url = api_url


class FsPath:
    """A PathLike that is not a str or a pathlib.Path."""

    def __init__(self, path: Path):
        self._path = path

    def __fspath__(self) -> str:
        return str(self._path)


class Warnings(list):
    def __call__(self, message: str) -> None:
        self.append(message)


def write_token(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


# -- config dir --------------------------------------------------------------------------
def test_config_dir_host_wins_over_env(tmp_path):
    host = Host(config_dir=str(tmp_path / "host"))
    env = {"BUS_CONFIG_DIR": str(tmp_path / "env")}
    assert s.resolve_config_dir(host, env) == tmp_path / "host"


def test_config_dir_host_pathlike(tmp_path):
    assert s.resolve_config_dir(Host(config_dir=tmp_path / "p"), {}) == tmp_path / "p"
    assert s.resolve_config_dir(Host(config_dir=FsPath(tmp_path / "f")), {}) == tmp_path / "f"


def test_config_dir_env_when_no_host_value(tmp_path):
    env = {"BUS_CONFIG_DIR": str(tmp_path / "env")}
    assert s.resolve_config_dir(Host(config_dir=None), env) == tmp_path / "env"
    assert s.resolve_config_dir(Host(config_dir=""), env) == tmp_path / "env"


@pytest.mark.parametrize(
    "host_obj",
    [None, {"config_dir": "/from/dict", "api_url": "https://dict.example"}, object(),
     SimpleNamespace(other=1), "a string"],
    ids=["none", "dict", "bare-object", "object-without-attrs", "str"],
)
def test_config_dir_non_host_ctx_obj_is_ignored(tmp_path, host_obj):
    env = {"BUS_CONFIG_DIR": str(tmp_path / "env")}
    assert s.resolve_config_dir(host_obj, env) == tmp_path / "env"


def test_config_dir_platformdirs_follows_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert s.resolve_config_dir(None, {}) == tmp_path / "xdg" / "bus"
    # An empty BUS_CONFIG_DIR counts as unset.
    assert s.resolve_config_dir(Host(), {"BUS_CONFIG_DIR": ""}) == tmp_path / "xdg" / "bus"


def test_config_dir_platformdirs_without_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert s.resolve_config_dir(None, {}) == tmp_path / "home" / ".config" / "bus"


@pytest.mark.parametrize("host_obj", [None, {}, object()])
def test_host_attr_for_non_host_objects(host_obj):
    assert s.host_attr(host_obj, "config_dir") is None
    assert s.host_attr(host_obj, "api_url") is None


# -- token -------------------------------------------------------------------------------
FULL_ENV = {"BUS_AI_TOKEN": "from-ai", "BUS_API_TOKEN": "from-api"}


def test_token_file_wins_over_everything(tmp_path):
    file = write_token(tmp_path / "tok", "  from-file \n")
    write_token(tmp_path / "cfg" / "auth" / "api-token", "from-config")
    warn = Warnings()
    token, source = s.resolve_token(str(file), FULL_ENV, tmp_path / "cfg", warn)
    assert (token, source) == ("from-file", str(file))
    assert warn == []


def test_token_file_accepts_pathlike(tmp_path):
    file = write_token(tmp_path / "tok", "from-file")
    assert s.resolve_token(file, FULL_ENV, tmp_path, Warnings())[0] == "from-file"


def test_bus_ai_token_before_bus_api_token(tmp_path):
    write_token(tmp_path / "auth" / "api-token", "from-config")
    assert s.resolve_token(None, FULL_ENV, tmp_path, Warnings()) == ("from-ai", "$BUS_AI_TOKEN")


def test_bus_api_token_when_ai_token_unset_or_empty(tmp_path):
    write_token(tmp_path / "auth" / "api-token", "from-config")
    for ai in (None, "", "   \n"):
        env = {"BUS_API_TOKEN": " from-api\t"}
        if ai is not None:
            env["BUS_AI_TOKEN"] = ai
        assert s.resolve_token(None, env, tmp_path, Warnings()) == ("from-api", "$BUS_API_TOKEN")


def test_config_dir_token_file_last(tmp_path):
    default = write_token(tmp_path / "auth" / "api-token", "\n from-config \n")
    env = {"BUS_AI_TOKEN": "", "BUS_API_TOKEN": " "}
    warn = Warnings()
    assert s.resolve_token(None, env, tmp_path, warn) == ("from-config", str(default))
    assert warn == []


def test_token_missing_everywhere(tmp_path):
    with pytest.raises(TokenMissing) as info:
        s.resolve_token(None, {"BUS_AI_TOKEN": "", "BUS_API_TOKEN": ""}, tmp_path, Warnings())
    error = info.value
    assert error.exit_code == 4
    assert error.guidance is None  # render words how to get one (tests/cli)
    assert str(tmp_path / "auth" / "api-token") in error.message


def test_empty_config_token_file_counts_as_missing(tmp_path):
    write_token(tmp_path / "auth" / "api-token", " \n")
    with pytest.raises(TokenMissing):
        s.resolve_token(None, {}, tmp_path, Warnings())


@pytest.mark.parametrize("case", ["missing", "empty", "whitespace", "directory", "not-utf8"])
def test_bad_token_file_is_exit_4_naming_the_path(tmp_path, case):
    path = tmp_path / "tok"
    if case == "empty":
        write_token(path, "")
    elif case == "whitespace":
        write_token(path, " \n\t\n")
    elif case == "directory":
        path.mkdir()
    elif case == "not-utf8":
        path.write_bytes(b"\xff\xfe\x00token")
        path.chmod(0o600)
    with pytest.raises(TokenFileError) as info:
        # The file is an error even when the env has a token: the flag was explicit.
        s.resolve_token(str(path), FULL_ENV, tmp_path, Warnings())
    assert info.value.exit_code == 4
    assert str(path) in info.value.message
    assert "from-ai" not in info.value.message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_token_file(tmp_path):
    path = write_token(tmp_path / "tok", "secret", mode=0o000)
    with pytest.raises(TokenFileError) as info:
        s.resolve_token(str(path), {}, tmp_path, Warnings())
    assert str(path) in info.value.message


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_group_or_other_readable_token_file_warns_once(tmp_path, mode):
    path = write_token(tmp_path / "tok", "tok-value", mode=mode)
    warn = Warnings()
    assert s.resolve_token(str(path), {}, tmp_path, warn)[0] == "tok-value"
    assert len(warn) == 1
    assert str(path) in warn[0] and "chmod 600" in warn[0]
    assert "\n" not in warn[0]
    assert "tok-value" not in warn[0]


def test_group_readable_default_token_file_warns(tmp_path):
    write_token(tmp_path / "auth" / "api-token", "tok-value", mode=0o644)
    warn = Warnings()
    assert s.resolve_token(None, {}, tmp_path, warn)[0] == "tok-value"
    assert len(warn) == 1


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_private_token_file_no_warning(tmp_path, mode):
    path = write_token(tmp_path / "tok", "tok-value", mode=mode)
    warn = Warnings()
    s.resolve_token(str(path), {}, tmp_path, warn)
    assert warn == []


# -- API origin --------------------------------------------------------------------------
ALL_URL_ENV = {"BUS_AI_API_URL": "https://ai.example", "BUS_API_BASE_URL": "https://base.example"}
HOST = Host(api_url="https://host.example")


def test_api_url_flag_wins():
    assert s.resolve_api_url("https://flag.example", ALL_URL_ENV, HOST) == "https://flag.example"


def test_api_url_bus_ai_api_url_second():
    assert s.resolve_api_url(None, ALL_URL_ENV, HOST) == "https://ai.example"


def test_api_url_bus_api_base_url_third():
    env = {"BUS_AI_API_URL": "", "BUS_API_BASE_URL": "https://base.example"}
    assert s.resolve_api_url(None, env, HOST) == "https://base.example"


def test_api_url_host_fourth():
    assert s.resolve_api_url(None, {"BUS_AI_API_URL": ""}, HOST) == "https://host.example"


@pytest.mark.parametrize("host_obj", [None, {"api_url": "https://dict.example"}, object(),
                                      Host(api_url=None)])
def test_api_url_default_last(host_obj):
    assert s.resolve_api_url(None, {}, host_obj) == s.DEFAULT_API_URL


def test_default_api_url_is_valid():
    assert s.validate_api_url(s.DEFAULT_API_URL) == s.DEFAULT_API_URL


def test_api_url_error_names_its_source():
    with pytest.raises(InvalidApiUrl) as info:
        s.resolve_api_url(None, {"BUS_AI_API_URL": "ftp://x"}, None)
    assert "$BUS_AI_API_URL" in info.value.message
    with pytest.raises(InvalidApiUrl) as info:
        s.resolve_api_url(None, {}, Host(api_url="http://example.com"))
    assert "host" in info.value.message


@pytest.mark.parametrize("value", [
    "https://api.example.com/api/v1/containers",
    "https://api.example.com/api/v1/containers/",
    "https://api.example.com/prefix/api/v1/containers",
    "http://localhost:8080/api/v1/containers/",
])
def test_api_url_with_endpoint_path_is_rejected(value):
    with pytest.raises(InvalidApiUrl) as info:
        s.validate_api_url(value)
    assert info.value.exit_code == 2
    assert "appends" in info.value.message
    assert "/api/v1/containers" in info.value.message


@pytest.mark.parametrize("value", [
    "ftp://api.example.com", "api.example.com", "file:///etc/passwd", "https://",
    "//api.example.com", "", "localhost:8080",
])
def test_api_url_not_http_is_rejected(value):
    with pytest.raises(InvalidApiUrl) as info:
        s.validate_api_url(value)
    assert info.value.exit_code == 2
    assert "appends" in info.value.message


@pytest.mark.parametrize("value", [
    "http://10.0.0.1", "http://example.com", "http://example.com:8080/prefix",
    "http://localhost.example.com", "http://[fe80::1]", "http://128.0.0.1",
])
def test_plain_http_to_non_loopback_is_rejected(value):
    with pytest.raises(InvalidApiUrl) as info:
        s.validate_api_url(value)
    assert info.value.exit_code == 2
    assert "clear text" in info.value.message


@pytest.mark.parametrize("value", [
    "http://localhost", "http://LOCALHOST:8080", "http://127.0.0.1:8080", "http://127.1.2.3",
    "http://127.255.255.254:1", "http://[::1]:8080", "http://[::1]",
])
def test_plain_http_to_loopback_is_accepted(value):
    assert s.validate_api_url(value) == value


@pytest.mark.parametrize("value", [
    "https://api.example.com", "https://10.0.0.1:8443", "https://[2001:db8::1]",
    "HTTPS://api.example.com",
])
def test_https_any_host_is_accepted(value):
    assert s.validate_api_url(value).lower() == value.lower()


@pytest.mark.parametrize("value,expected", [
    ("https://api.example.com/", "https://api.example.com"),
    ("https://api.example.com/bus", "https://api.example.com/bus"),
    ("https://api.example.com/bus/", "https://api.example.com/bus"),
    ("https://api.example.com:8443/a/b//", "https://api.example.com:8443/a/b"),
])
def test_path_prefix_kept_and_trailing_slash_dropped(value, expected):
    assert s.validate_api_url(value) == expected


@pytest.mark.parametrize("value", [
    "https://api.example.com:99999", "https://api.example.com:abc", "http://localhost:-1",
])
def test_bad_port_is_rejected(value):
    with pytest.raises(InvalidApiUrl) as info:
        s.validate_api_url(value)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("value", [
    "https://user:pw@api.example.com", "https://api.example.com/?x=1",
    "https://api.example.com/#frag",
])
def test_credentials_query_fragment_rejected(value):
    with pytest.raises(InvalidApiUrl) as info:
        s.validate_api_url(value)
    assert "pw" not in info.value.message


def test_api_url_whitespace_stripped():
    assert s.resolve_api_url("  https://api.example.com \n", {}, None) == "https://api.example.com"


# -- timeout -----------------------------------------------------------------------------
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_timeout_default_per_command(command):
    value = s.resolve_timeout(None, command)
    assert value == COMMANDS[command].timeout and value > 0


def test_run_waits_longer_than_a_single_call():
    assert COMMANDS["run"].timeout > COMMANDS["status"].timeout


@pytest.mark.parametrize("value", [0.1, 1, 2.5, 3600])
def test_timeout_positive_number(value):
    assert s.resolve_timeout(value, "status") == float(value)


@pytest.mark.parametrize("value", [0, 0.0, -1, -0.5, math.nan, math.inf, -math.inf])
def test_timeout_not_positive_finite_is_usage_error(value):
    with pytest.raises(UsageError) as info:
        s.resolve_timeout(value, "status")
    assert info.value.exit_code == 2
    assert "--timeout" in info.value.message


# -- resolve(): everything together --------------------------------------------------------
def test_resolve_combines_and_hides_the_token(tmp_path):
    result = s.resolve(command="run", host_obj=Host(config_dir=tmp_path),
                       env={"BUS_AI_TOKEN": "tok-secret"}, api_url="https://x.example/p/")
    assert result.api_url == "https://x.example/p"
    assert result.timeout == COMMANDS["run"].timeout
    assert result.config_dir == tmp_path
    assert result.token == "tok-secret" and result.token_source == "$BUS_AI_TOKEN"
    assert "tok-secret" not in repr(result)


def test_resolve_reads_token_from_host_config_dir(tmp_path):
    write_token(tmp_path / "host" / "auth" / "api-token", "host-token")
    result = s.resolve(command="status", host_obj=Host(config_dir=tmp_path / "host"),
                       env={"BUS_CONFIG_DIR": str(tmp_path / "env")})
    assert result.token == "host-token"


def test_resolve_usage_errors_before_auth_errors(tmp_path):
    with pytest.raises(InvalidApiUrl):
        s.resolve(command="status", host_obj=None, env={"BUS_CONFIG_DIR": str(tmp_path)},
                  api_url="http://example.com")
    with pytest.raises(UsageError):
        s.resolve(command="status", host_obj=None, env={"BUS_CONFIG_DIR": str(tmp_path)},
                  timeout=0)


def test_resolve_passes_warn(tmp_path):
    file = write_token(tmp_path / "tok", "tok", mode=0o644)
    warn = Warnings()
    s.resolve(command="status", host_obj=None, env={}, token_file=str(file), warn=warn)
    assert len(warn) == 1


@pytest.mark.parametrize("value", [
    "https://ho st", "https://h\udcff", "http://local host", "https://a<b>.example",
    "https://a!b.example",
])
def test_invalid_host_name_is_rejected(value):
    with pytest.raises(InvalidApiUrl) as info:
        s.validate_api_url(value)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("value", [
    "https://bücher.example", "https://my_service:8443", "https://a-b.c.example.",
])
def test_unusual_but_valid_host_names(value):
    assert s.validate_api_url(value) == value


def test_an_empty_token_file_path_says_so(tmp_path):
    from bus_containers.errors import TokenFileError

    with pytest.raises(TokenFileError) as info:
        s.resolve_token("", {}, tmp_path, lambda message: None)
    assert "empty path" in info.value.message and info.value.exit_code == 4
