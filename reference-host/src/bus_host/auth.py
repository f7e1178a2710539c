"""``bus auth token``: ask the token endpoint for a token and save it, mode 0600.

Imported only when the command runs (it pulls in requests).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
from typing import Any
from urllib.parse import urlsplit

import click

from bus_host import __version__

TOKEN_PATH = "/api/v1/auth/token"
# The same default origin as the containers plugin (CONTRACT 2: the local emulator's
# address), written here again: the host never imports a plugin.
DEFAULT_API_URL = "http://127.0.0.1:8080"
# The local emulator issues tokens only to its owner: the caller presents the emulator's
# admin key, read from this file (never from the command line, where `ps` would show it).
ADMIN_KEY_ENV = "BUS_EMULATOR_ADMIN_KEY_FILE"
EMULATOR_APP_NAME = "bus-containers-emulator"  # its default state dir's platformdirs name
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_AUTH = 4


class AuthError(click.ClickException):
    """A one-line error with its own exit code (click prints ``Error: ...``)."""

    def __init__(self, message: str, exit_code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"bus: error: {self.format_message()}", err=True)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_endpoint(api_url: str | None) -> str:
    """``{api_url}/api/v1/auth/token`` after checking the origin (the default origin when
    none was given, as the plugin does); exit 2 when unusable."""
    api_url = api_url or DEFAULT_API_URL
    try:
        parts = urlsplit(api_url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise AuthError(f"invalid API URL {api_url!r}", EXIT_USAGE) from None
    if parts.scheme not in ("http", "https") or not host:
        raise AuthError(
            f"invalid API URL {api_url!r}: expected http(s)://host[:port][/prefix]", EXIT_USAGE
        )
    if parts.query or parts.fragment:
        raise AuthError(f"invalid API URL {api_url!r}: no query or fragment allowed", EXIT_USAGE)
    if parts.scheme == "http" and not _is_loopback(host):
        raise AuthError(
            f"refusing plain http:// for non-loopback host {host!r}: the token would travel "
            "in clear text; use https://",
            EXIT_USAGE,
        )
    return api_url.rstrip("/") + TOKEN_PATH


def _connection_reason(exc: Exception) -> str:
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(exc))
    if match:
        return match.group(1).strip().lower()
    return type(exc).__name__


def _server_message(response: Any) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        message = error.get("message")
        code = error.get("code")
        if isinstance(message, str) and message:
            text = " ".join(message.split())
            return f"{text} ({code})" if isinstance(code, str) and code else text
    return None


def admin_key_file() -> str | None:
    """``$BUS_EMULATOR_ADMIN_KEY_FILE``, else the admin key of an emulator started with its
    default state dir, if there is one; else None."""
    path = os.environ.get(ADMIN_KEY_ENV)
    if path:
        return path
    import platformdirs

    default = os.path.join(platformdirs.user_data_dir(EMULATOR_APP_NAME), "admin-key")
    return default if os.path.isfile(default) else None


def read_admin_key(path: str) -> str:
    try:
        with open(path, encoding="ascii") as fh:
            key = fh.read(4096).strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not a text file"
        raise AuthError(f"cannot read the emulator's admin key from {path} ({ADMIN_KEY_ENV}): "
                        f"{reason}", EXIT_USAGE) from None
    if not key:
        raise AuthError(f"the emulator's admin key file {path} ({ADMIN_KEY_ENV}) is empty",
                        EXIT_USAGE)
    return key


def request_token(url: str, body: dict[str, Any], admin_key: str | None = None
                  ) -> dict[str, Any]:
    import requests

    headers = {
        "Accept": "application/json",
        "User-Agent": f"bus-reference-host/{__version__}",
    }
    if admin_key is not None:
        headers["Authorization"] = f"Bearer {admin_key}"
    try:
        response = requests.post(
            url,
            json=body,
            headers=headers,
            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
            allow_redirects=False,
        )
    except requests.exceptions.Timeout:
        raise AuthError(f"no answer from {url} (timed out)") from None
    except requests.exceptions.RequestException as exc:
        raise AuthError(f"cannot reach {url}: {_connection_reason(exc)}") from None

    status = response.status_code
    if status in (401, 403):
        detail = _server_message(response) or "not allowed"
        hint = ""
        if status == 401:
            hint = (f"; set {ADMIN_KEY_ENV} to the file admin-key in the emulator's state dir"
                    if admin_key is None else
                    f"; the admin key sent (from {ADMIN_KEY_ENV}) is not this emulator's")
        raise AuthError(f"token request refused (HTTP {status}): {detail}{hint}", EXIT_AUTH)
    if not 200 <= status < 300:
        detail = _server_message(response)
        if detail:
            raise AuthError(f"token request failed (HTTP {status}): {detail}")
        raise AuthError(f"unexpected response from {url} (HTTP {status})")
    try:
        data = response.json()
    except ValueError:
        data = None
    token = data.get("token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token.strip():
        raise AuthError(f"unexpected response from {url} (HTTP {status})")
    return data


def save_token(config_dir: str, token: str) -> str:
    """Write ``<config dir>/auth/api-token`` atomically: a 0600 temp file, then rename."""
    auth_dir = os.path.join(config_dir, "auth")
    path = os.path.join(auth_dir, "api-token")
    try:
        os.makedirs(config_dir, mode=0o700, exist_ok=True)
        os.makedirs(auth_dir, mode=0o700, exist_ok=True)
        os.chmod(auth_dir, 0o700)
        fd, tmp = tempfile.mkstemp(prefix=".api-token.", dir=auth_dir)  # created 0600
    except OSError as exc:
        raise AuthError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(token + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise AuthError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def obtain_and_save_token(obj: Any, *, scope: str, sub: str | None, ttl: int | None) -> None:
    scope = " ".join(scope.split())
    if not scope:
        raise AuthError("--scope must name at least one scope", EXIT_USAGE)
    config_dir = getattr(obj, "config_dir", None)
    url = token_endpoint(getattr(obj, "api_url", None))

    body: dict[str, Any] = {"scope": scope}
    if sub:
        body["sub"] = sub
    if ttl is not None:
        body["ttl"] = ttl
    # The admin key only ever goes to a loopback emulator, never to a remote origin.
    key_file = admin_key_file() if _is_loopback(urlsplit(url).hostname or "") else None
    data = request_token(url, body, read_admin_key(key_file) if key_file else None)
    path = save_token(str(config_dir), data["token"].strip())

    details = []
    account = data.get("sub") or sub
    if account:
        details.append(f"account {account}")
    granted = data.get("scope")
    details.append(f"scopes {granted if isinstance(granted, str) and granted else scope}")
    expires = data.get("expires_in")
    if isinstance(expires, (int, float)) and not isinstance(expires, bool):
        details.append(f"expires in {int(expires)} s")
    click.echo(f"Token saved to {path} ({', '.join(details)})", err=True)
