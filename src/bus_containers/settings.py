"""Where the API origin, the token, the config dir and the timeout come from (CONTRACT 2).

Every precedence rule lives here and nowhere else. The functions take the environment,
the host's `ctx.obj` and the flags as arguments, so tests can drive every row without
touching the real process state.
"""

from __future__ import annotations

import ipaddress
import math
import os
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .commands import COMMANDS
from .errors import InvalidApiUrl, TokenFileError, TokenMissing, UsageError

# The deployment default: the local emulator's default address (CONTRACT 7, "the embedded
# default"), so `bus-containers-emulator serve` then `bus-containers status` just works.
DEFAULT_API_URL = "http://127.0.0.1:8080"

API_PATH = "/api/v1/containers"

TOKEN_ENV_VARS = ("BUS_AI_TOKEN", "BUS_API_TOKEN")
API_URL_ENV_VARS = ("BUS_AI_API_URL", "BUS_API_BASE_URL")


@dataclass(frozen=True)
class Settings:
    api_url: str
    timeout: float
    config_dir: Path
    token: str = field(repr=False)  # repr=False: never in a traceback or a debug dump
    token_source: str = ""
    api_url_source: str = "the default"  # where the origin came from, for error messages


def host_attr(host_obj: object, name: str) -> object:
    """The host's context attribute, or None for any ctx.obj that is not a host context."""
    return getattr(host_obj, name, None) if host_obj is not None else None


def resolve_config_dir(host_obj: object, env: Mapping[str, str]) -> Path:
    from_host = host_attr(host_obj, "config_dir")
    if isinstance(from_host, (str, os.PathLike)) and str(from_host):
        return Path(from_host)
    if env.get("BUS_CONFIG_DIR"):
        return Path(env["BUS_CONFIG_DIR"])
    return default_config_dir()


def default_config_dir(platform: str | None = None) -> Path:
    """`$XDG_CONFIG_HOME/bus` or `~/.config/bus` on Linux AND macOS (platformdirs' Unix
    rules: where `bus auth token` saves the token, as the docs say), platformdirs' own
    folder on Windows. Not `platformdirs.user_config_dir` on macOS: that is
    `~/Library/Application Support/bus`, where no token is ever saved."""
    platform = sys.platform if platform is None else platform
    if platform == "win32":
        import platformdirs

        return Path(platformdirs.user_config_dir("bus", appauthor=False))
    from platformdirs.unix import Unix

    return Path(Unix("bus").user_config_dir)


def resolve_config_dir_and_source(host_obj: object, env: Mapping[str, str]
                                  ) -> tuple[Path, str]:
    """(config dir, where it came from: the host, `$BUS_CONFIG_DIR` or `the default`)."""
    path = resolve_config_dir(host_obj, env)
    from_host = host_attr(host_obj, "config_dir")
    if isinstance(from_host, (str, os.PathLike)) and str(from_host):
        return path, "the host's config_dir"
    return path, "$BUS_CONFIG_DIR" if env.get("BUS_CONFIG_DIR") else "the default"


def resolve_api_url(flag: str | None, env: Mapping[str, str], host_obj: object) -> str:
    return resolve_api_url_and_source(flag, env, host_obj)[0]


def resolve_api_url_and_source(flag: str | None, env: Mapping[str, str],
                               host_obj: object) -> tuple[str, str]:
    """(origin, where it came from: `--api-url`, `$BUS_AI_API_URL`, ..., `the default`)."""
    candidates: list[tuple[str, object]] = [("--api-url", flag)]
    candidates += [(f"${name}", env.get(name)) for name in API_URL_ENV_VARS]
    candidates.append(("the host's api_url", host_attr(host_obj, "api_url")))
    for source, value in candidates:
        if isinstance(value, str) and value.strip():
            return validate_api_url(value.strip(), source), source
    return DEFAULT_API_URL, "the default"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_origin(origin: str | None) -> bool:
    """Is the origin on this machine (localhost, 127.0.0.0/8, ::1)?"""
    try:
        host = urlsplit(origin).hostname if origin else None
    except ValueError:
        return False
    return bool(host) and _is_loopback(host)


def _is_valid_host(host: str) -> bool:
    """An IP address or a DNS name (IDNA letters allowed): no spaces, controls or stray
    punctuation, which would otherwise fail later as a confusing request error (exit 1)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return all(char.isalnum() or char in "-._" for char in host)


def validate_api_url(value: str, source: str = "--api-url") -> str:
    """Normalise an API origin (scheme://host[:port][/prefix]) or raise InvalidApiUrl."""
    appends = f"The CLI appends {API_PATH}/... itself; give only the origin, e.g. https://host."
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise InvalidApiUrl(f"{source}: '{value}' is not a valid URL. {appends}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidApiUrl(f"{source}: '{value}' is not an http(s) URL. {appends}")
    if not _is_valid_host(parts.hostname):
        raise InvalidApiUrl(f"{source}: '{value}' does not have a valid host name. {appends}")
    if parts.username or parts.password:
        raise InvalidApiUrl(f"{source}: credentials do not belong in the URL; use a token file.")
    if parts.query or parts.fragment:
        raise InvalidApiUrl(f"{source}: '{value}' has a query or fragment. {appends}")
    path = parts.path.rstrip("/")
    if path.endswith(API_PATH):
        raise InvalidApiUrl(f"{source}: '{value}' already ends in {API_PATH}. {appends}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise InvalidApiUrl(
            f"{source}: '{value}' uses plain http:// to a non-loopback host; a bearer token "
            "is never sent in clear text. Use https://, or http:// only for localhost."
        )
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def resolve_timeout(flag: float | None, command: str) -> float:
    if flag is None:
        facts = COMMANDS.get(command)
        return facts.timeout if facts else 60.0
    if not isinstance(flag, (int, float)) or not math.isfinite(flag) or flag <= 0:
        raise UsageError(f"--timeout must be a positive number of seconds, not {flag!r}")
    return float(flag)


# A token is a few hundred bytes, a big JWT a few KiB: a file past this is not a token
# (and a read must never grow without bound, e.g. --token-file /dev/zero).
MAX_TOKEN_FILE_BYTES = 64 * 1024


def _read_token_file(path: Path, warn: Callable[[str], None]) -> str:
    """The file's text, stripped. Only a regular file is read, and at most
    MAX_TOKEN_FILE_BYTES of it: a FIFO or a device would block or never end (and take no
    notice of --timeout). O_NONBLOCK so that opening a FIFO cannot block either; the type
    is checked on the opened file, so it cannot change between the check and the read."""
    def refuse(reason: str) -> TokenFileError:
        return TokenFileError(f"cannot read the token file {path}: {reason}",
                              token_source=str(path))

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise refuse(exc.strerror or "unreadable") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                    else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
            raise refuse(f"it is {kind}; give a regular file holding the token")
        data = b""
        while len(data) <= MAX_TOKEN_FILE_BYTES:
            piece = os.read(fd, MAX_TOKEN_FILE_BYTES + 1 - len(data))
            if not piece:
                break
            data += piece
    except OSError as exc:
        raise refuse(exc.strerror or "unreadable") from None
    finally:
        os.close(fd)
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise refuse(f"it is larger than {MAX_TOKEN_FILE_BYTES // 1024} KiB; a token is "
                     "much smaller")
    try:
        text = data.decode("utf-8")  # bytes as written: no newline translation
    except UnicodeDecodeError:
        raise refuse("it is not text (not UTF-8); it should hold only the token") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        # Like ssh: a warning, not a failure; the user may be on a shared machine on purpose.
        warn(f"warning: token file {path} is accessible by others; run: chmod 600 {path}")
    return text.strip()


def resolve_token(
    token_file: str | os.PathLike | None,
    env: Mapping[str, str],
    config_dir: Path,
    warn: Callable[[str], None],
) -> tuple[str, str]:
    """(token, where it came from). Raises TokenFileError / TokenMissing (exit 4)."""
    if token_file is not None:
        if not str(token_file).strip():
            raise TokenFileError("--token-file was given an empty path")
        path = Path(token_file)
        token = _read_token_file(path, warn)
        if not token:
            raise TokenFileError(f"the token file {path} is empty", token_source=str(path))
        return token, str(path)
    for name in TOKEN_ENV_VARS:
        value = (env.get(name) or "").strip()
        if value:
            return value, f"${name}"
    default = config_dir / "auth" / "api-token"
    if default.exists():
        token = _read_token_file(default, warn)
        if token:
            return token, str(default)
    raise TokenMissing(
        "no API token found (looked at --token-file, $BUS_AI_TOKEN, $BUS_API_TOKEN and "
        f"{default})")


def resolve(
    *,
    command: str,
    host_obj: object,
    env: Mapping[str, str],
    api_url: str | None = None,
    token_file: str | None = None,
    timeout: float | None = None,
    warn: Callable[[str], None] = lambda message: None,
) -> Settings:
    """All settings for one command, in the order usage errors (2) before auth errors (4)."""
    origin, origin_source = resolve_api_url_and_source(api_url, env, host_obj)
    seconds = resolve_timeout(timeout, command)
    config_dir = resolve_config_dir(host_obj, env)
    token, source = resolve_token(token_file, env, config_dir, warn)
    return Settings(api_url=origin, timeout=seconds, config_dir=config_dir, token=token,
                    token_source=source, api_url_source=origin_source)
