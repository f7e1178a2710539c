"""Fuzz the settings resolver (CONTRACT 2): any mix of env vars, flags, host context and
token files gives the documented precedence, or a ContainersError with exit code 2 or 4;
never another exception, and never a token with surrounding whitespace."""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus_containers import settings as s
from bus_containers.commands import COMMANDS as TABLE
from bus_containers.errors import ContainersError, InvalidApiUrl, UsageError

FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
WS = st.sampled_from(["", " ", "\t", "\n", "\r\n", " \n\t ", "\u00a0", "\u2003", "\x0b"])
token_text = st.one_of(
    st.text(max_size=40),
    st.builds(lambda a, t, b: a + t + b, WS,
              st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=40), WS),
)
url_text = st.one_of(
    st.text(max_size=40),
    st.builds(lambda scheme, host, port, path, ws: ws + scheme + host + port + path + ws,
              st.sampled_from(["http://", "https://", "ftp://", "", "HTTP://", "http:/"]),
              st.sampled_from(["127.0.0.1", "localhost", "[::1]", "example.com", "10.0.0.1",
                               "127.1.2.3", "ex ample.com", "", "user:pw@localhost", "[::1",
                               "xn--bcher-kva.example", "b\u00fccher.example"]),
              st.sampled_from(["", ":8080", ":0", ":99999", ":x", ":"]),
              st.sampled_from(["", "/", "/prefix", "/api/v1/containers", "/api/v1/containers/",
                               "/p?q=1", "/#f", "/a/../b"]),
              WS),
)
COMMANDS = sorted(TABLE) + ["other"]


@st.composite
def token_file_spec(draw):
    """What to put at a token file path: None (no file), a directory, or (bytes, mode)."""
    kind = draw(st.sampled_from(["missing", "dir", "file", "file"]))
    if kind != "file":
        return kind
    content = draw(st.one_of(token_text.map(lambda t: t.encode("utf-8", "surrogatepass")),
                             st.binary(max_size=40)))
    mode = draw(st.sampled_from([0o600, 0o644, 0o640, 0o400, 0o000, 0o777]))
    return content, mode


def _make(path: Path, spec) -> None:
    if spec == "missing":
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if spec == "dir":
        path.mkdir()
        return
    content, mode = spec
    path.write_bytes(content)
    os.chmod(path, mode)


def _file_token(path: Path, spec) -> str | None:
    """The token the model expects from a file, None for 'unusable' (missing, dir, bad UTF-8,
    or unreadable: as root, mode 000 is still readable)."""
    if spec in ("missing", "dir"):
        return None
    content, mode = spec
    if os.geteuid() != 0 and not mode & 0o400:
        return None
    try:
        return content.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None


@FUZZ
@given(
    env_values=st.fixed_dictionaries({}, optional={
        "BUS_AI_TOKEN": token_text, "BUS_API_TOKEN": token_text,
        "BUS_AI_API_URL": url_text, "BUS_API_BASE_URL": url_text,
        "BUS_CONFIG_DIR": st.sampled_from(["<tmp>", "", "<tmp>/nested"])}),
    host=st.one_of(st.none(), st.just({}), st.builds(
        lambda cd, url: SimpleNamespace(config_dir=cd, api_url=url),
        st.sampled_from(["<host>", "", None, 42]), st.one_of(st.none(), url_text))),
    flag_url=st.one_of(st.none(), url_text),
    flag_timeout=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True),
                           st.integers(-5, 10**6)),
    use_token_file=st.booleans(),
    token_file=token_file_spec(),
    default_file=token_file_spec(),
    command=st.sampled_from(COMMANDS),
)
def test_resolve_follows_the_precedence_or_fails_with_2_or_4(
        env_values, host, flag_url, flag_timeout, use_token_file, token_file, default_file,
        command):
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        env = {k: v.replace("<tmp>", str(tmp / "envcfg")) for k, v in env_values.items()}
        if isinstance(host, SimpleNamespace) and host.config_dir == "<host>":
            host.config_dir = str(tmp / "hostcfg")
        # The config dir the resolver should pick, and the default token file in it.
        config_dir = s.resolve_config_dir(host, env)
        if isinstance(getattr(host, "config_dir", None), str) and host.config_dir:
            assert config_dir == Path(host.config_dir)
        elif env.get("BUS_CONFIG_DIR"):
            assert config_dir == Path(env["BUS_CONFIG_DIR"])
        default_path = config_dir / "auth" / "api-token"
        if str(default_path).startswith(tmp_name):
            _make(default_path, default_file)
        else:
            default_file = "missing"  # the real user config dir: never written to
            if default_path.exists():
                return
        flag_path = tmp / "flag" / "token" if use_token_file else None
        if flag_path is not None:
            _make(flag_path, token_file)
        warnings: list[str] = []
        try:
            got = s.resolve(command=command, host_obj=host, env=env, api_url=flag_url,
                            token_file=str(flag_path) if flag_path else None,
                            timeout=flag_timeout, warn=warnings.append)
        except ContainersError as e:
            assert e.exit_code in (2, 4), (type(e), e)
            outcome: object = e
        else:
            outcome = got

        # -- the model -------------------------------------------------------------------
        url_sources = [flag_url, env.get("BUS_AI_API_URL"), env.get("BUS_API_BASE_URL"),
                       getattr(host, "api_url", None)]
        chosen = next((u for u in url_sources if isinstance(u, str) and u.strip()), None)
        if chosen is not None:
            try:
                want_url = s.validate_api_url(chosen.strip())
            except InvalidApiUrl:
                assert isinstance(outcome, InvalidApiUrl), outcome
                return
        else:
            want_url = s.DEFAULT_API_URL
        if flag_timeout is not None and not (math.isfinite(flag_timeout) and flag_timeout > 0):
            assert isinstance(outcome, UsageError) and outcome.exit_code == 2, outcome
            return
        default = TABLE[command].timeout if command in TABLE else 60.0
        want_timeout = default if flag_timeout is None else float(flag_timeout)
        if flag_path is not None:
            want_token = _file_token(flag_path, token_file) or None
        else:
            want_token = next((v.strip() for k in s.TOKEN_ENV_VARS
                               if (v := env.get(k) or "").strip()), None)
            if want_token is None:
                want_token = _file_token(default_path, default_file) or None
        if want_token is None:
            assert isinstance(outcome, ContainersError) and outcome.exit_code == 4, outcome
            return
        assert isinstance(outcome, s.Settings), outcome
        assert outcome.api_url == want_url
        assert outcome.timeout == want_timeout
        assert outcome.config_dir == config_dir
        assert outcome.token == want_token
        assert outcome.token == outcome.token.strip() and outcome.token
        # The token does not show in the repr: it is the same whatever the token is.
        assert repr(outcome) == repr(dataclasses.replace(outcome, token="another"))


@FUZZ
@given(st.one_of(url_text, st.text(max_size=80)))
def test_validate_api_url_result_or_exit_2(value):
    try:
        url = s.validate_api_url(value)
    except InvalidApiUrl as e:
        assert e.exit_code == 2
        return
    assert url.startswith(("http://", "https://"))
    assert "?" not in url and "#" not in url
    assert not url.rstrip("/").endswith(s.API_PATH)
    assert s.validate_api_url(url) == url  # normalised: stable


@FUZZ
@given(st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(),
                 st.text(max_size=5), st.booleans()),
       st.sampled_from(COMMANDS))
def test_resolve_timeout_positive_or_exit_2(value, command):
    try:
        seconds = s.resolve_timeout(value, command)
    except UsageError as e:
        assert e.exit_code == 2
        return
    assert isinstance(seconds, float) and math.isfinite(seconds) and seconds > 0
