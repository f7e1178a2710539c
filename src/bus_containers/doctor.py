"""`doctor`: what is in use and what is wrong, one check at a time, each with its fix.

The checks run in the order a request needs things: the config dir, the token (where it
comes from, its file's permissions), its claims (account, scopes for every command, expiry),
the API origin (and where it comes from), reachability (DNS, TCP, TLS, a `status` call,
with timings), the runner's state, billing and quota (via `usage`). A check that needs an
earlier one that failed is skipped, not failed again. The first failure decides the exit
code; its fix is the exact thing to do. The checks are data (`Check`); render words them.
"""

from __future__ import annotations

import os
import socket
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from . import errors as e
from .commands import COMMANDS
from .errors import ExitCode
from .render import Invocation, emulator_serve_command, token_hint
from .settings import (
    API_URL_ENV_VARS,
    is_loopback_origin,
    resolve_api_url_and_source,
    resolve_config_dir_and_source,
    resolve_token,
)
from .times import ago, duration
from .token import EXPIRY_LEEWAY_SECONDS, SCOPE_BILLING, read_claims, token_scopes

PROBE_TIMEOUT = 5.0  # each of DNS, TCP, TLS, status and usage, at most; inside --timeout


@dataclass
class Check:
    name: str  # stable word for --json: config_dir, token, claims, origin, network, ...
    title: str  # what a human reads first
    status: str  # ok, warn, fail, skip
    detail: str
    fix: str | None = None
    exit_code: int = ExitCode.OK
    ms: dict[str, float] = field(default_factory=dict)  # timings of the network steps

    def to_dict(self) -> dict:
        data = asdict(self)
        data["exit_code"] = int(self.exit_code)
        return data


@dataclass
class _Found:
    """What the checks learned so far, for the ones after them."""

    config_dir: Path | None = None
    token: str | None = None
    claims: dict | None = None
    scopes: set[str] | None = None
    token_usable: bool = False
    origin: str | None = None
    origin_source: str | None = None
    client: object = None  # a ContainersClient once the origin and token are known
    status: dict | None = None  # the status call's answer: the API is reachable


def diagnose(*, api_url: str | None, token_file: str | None, timeout: float,
             host_obj: object, env: Mapping[str, str], invocation: Invocation,
             make_client: Callable, on_token: Callable[[str], None] = lambda token: None,
             now: float | None = None) -> Iterator[Check]:
    """Yield the checks in order, each as soon as it is known. `on_token` hears of the
    token once found (to mask it in any output)."""
    now = time.time() if now is None else now
    deadline = time.monotonic() + timeout
    found = _Found()
    yield _config_dir(found, host_obj, env)
    check = _token(found, token_file, env, invocation)
    if found.token:
        on_token(found.token)
    yield check
    yield _claims(found, invocation, now)
    yield _origin(found, api_url, env, host_obj)
    yield _network(found, invocation, deadline, make_client, env)
    yield _runner(found)
    yield _billing(found, invocation)


def first_failure(checks: list[Check]) -> Check | None:
    return next((c for c in checks if c.status == "fail"), None)


# -- the checks ----------------------------------------------------------------------------
def _config_dir(found: _Found, host_obj: object, env: Mapping[str, str]) -> Check:
    path, source = resolve_config_dir_and_source(host_obj, env)
    found.config_dir = path
    where = f"{path} (from {source})"
    if path.exists() and not path.is_dir():
        return Check("config_dir", "config dir", "fail", f"{where} is not a directory",
                     # Never advise removing it: it is not ours (BUS_CONFIG_DIR=/etc/passwd).
                     fix=f"{path} is not a directory; point $BUS_CONFIG_DIR at a directory "
                         "(or unset it for the default).",
                     exit_code=ExitCode.USAGE)
    if not path.exists():
        return Check("config_dir", "config dir", "ok", f"{where}; not created yet")
    return Check("config_dir", "config dir", "ok", where)


def _token(found: _Found, token_file: str | None, env: Mapping[str, str],
           invocation: Invocation) -> Check:
    try:
        token, source = resolve_token(token_file, env, found.config_dir, lambda _: None)
    except e.TokenMissing as error:
        return Check("token", "token", "fail", error.message, fix=token_hint(invocation),
                     exit_code=error.exit_code)
    except e.AuthError as error:  # --token-file unreadable or empty
        return Check("token", "token", "fail", error.message,
                     fix=f"Check the path given to --token-file, or drop it. "
                         f"{token_hint(invocation)}", exit_code=error.exit_code)
    found.token = token
    if source.startswith("$"):
        return Check("token", "token", "ok", f"from {source}")
    mode = os.stat(source).st_mode
    where = f"--token-file {source}" if token_file is not None else source
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return Check("token", "token", "fail",
                     f"from {where}, which others can read (mode {stat.S_IMODE(mode):04o})",
                     fix=f"chmod 600 {_quoted(source)}", exit_code=ExitCode.AUTH)
    return Check("token", "token", "ok", f"from {where} (mode {stat.S_IMODE(mode):04o})")


def _claims(found: _Found, invocation: Invocation, now: float) -> Check:
    if found.token is None:
        return Check("claims", "token claims", "skip", "no token")
    try:
        claims = read_claims(found.token)
    except e.NotAJwt as error:
        return Check("claims", "token claims", "fail", error.message,
                     fix=token_hint(invocation), exit_code=error.exit_code)
    found.claims = claims
    sub = claims.get("sub")
    account = f"account {sub}" if isinstance(sub, str) and sub else "no account (sub)"
    exp = claims.get("exp")
    expiry = ""
    if isinstance(exp, (int, float)) and not isinstance(exp, bool):
        if exp + EXPIRY_LEEWAY_SECONDS < now:
            return Check("claims", "token claims", "fail",
                         f"{account}; the token expired {_when(exp, now)}",
                         fix=token_hint(invocation).replace("Get a token", "Get a new token"),
                         exit_code=ExitCode.AUTH)
        expiry = f"; expires in {duration(exp - now)}"
    scopes = token_scopes(claims)
    found.scopes = scopes
    found.token_usable = True
    if scopes is None:
        return Check("claims", "token claims", "warn",
                     f"{account}; no scope claim (the server decides){expiry}")
    missing: dict[str, list[str]] = {}
    for command, scope in sorted(_needed_scopes().items()):
        if scope not in scopes:
            missing.setdefault(scope, []).append(command)
    if missing:
        lacks = "; ".join(f"lacks {scope} (needed by {', '.join(commands)})"
                          for scope, commands in sorted(missing.items()))
        return Check("claims", "token claims", "fail", f"{account}; {lacks}",
                     fix=token_hint(invocation), exit_code=ExitCode.AUTH)
    return Check("claims", "token claims", "ok",
                 f"{account}; scopes for every command{expiry}")


def _origin(found: _Found, api_url: str | None, env: Mapping[str, str],
            host_obj: object) -> Check:
    try:
        origin, source = resolve_api_url_and_source(api_url, env, host_obj)
    except e.InvalidApiUrl as error:
        return Check("origin", "API origin", "fail", error.message,
                     fix=_origin_fix(error.message), exit_code=error.exit_code)
    found.origin, found.origin_source = origin, source
    return Check("origin", "API origin", "ok", f"{origin} (from {source})")


def _network(found: _Found, invocation: Invocation, deadline: float,
             make_client: Callable, env: Mapping[str, str]) -> Check:
    if found.origin is None:
        return Check("network", "reachability", "skip", "no valid API origin")
    parts = urlsplit(found.origin)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    ms: dict[str, float] = {}
    where = f"{found.origin} (from {found.origin_source})"

    def fail(detail: str, fix: str, code: int = ExitCode.ERROR) -> Check:
        return Check("network", "reachability", "fail", detail, fix=fix, exit_code=code,
                     ms=ms)

    def left() -> float:
        return max(0.05, min(PROBE_TIMEOUT, deadline - time.monotonic()))

    started = time.perf_counter()
    try:
        addresses = _resolve(host, port, left())
    except (OSError, UnicodeError) as exc:
        return fail(f"cannot resolve {host}: {_reason(exc)}",
                    f"Check the host name of {where}.")
    ms["dns"] = _ms(started)
    started = time.perf_counter()
    try:
        family, kind, proto, _, address = addresses[0]
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(left())
            sock.connect(address)
            ms["tcp"] = _ms(started)
            if parts.scheme == "https":
                started = time.perf_counter()
                context = _tls_context(env)
                with context.wrap_socket(sock, server_hostname=host):
                    ms["tls"] = _ms(started)
    except OSError as exc:
        if "tcp" not in ms:
            return fail(f"cannot connect to {host}:{port}: {_reason(exc)}",
                        _start_fix(found.origin))
        return fail(f"TLS with {host}:{port} failed: {_reason(exc)}",
                    f"Check the certificate of {host}; a private CA goes in "
                    "$REQUESTS_CA_BUNDLE (a PEM file).")
    if not found.token_usable or (found.scopes is not None
                                  and COMMANDS["status"].scope not in found.scopes):
        return Check("network", "reachability", "ok",
                     f"{_timings(ms)}; status call skipped (no usable token)", ms=ms)
    # The status call is a network step too: at most PROBE_TIMEOUT, as the docs say.
    client = make_client(found.origin, found.token, timeout=left())
    found.client = client
    started = time.perf_counter()
    try:
        answer = client.status()
    except e.ContainersError as error:
        ms["status"] = _ms(started)
        return fail(f"{_timings(ms)}; the status call failed: {error.message}",
                    _error_fix(error, invocation, where), error.exit_code)
    ms["status"] = _ms(started)
    found.status = answer
    return Check("network", "reachability", "ok", _timings(ms), ms=ms)


def _runner(found: _Found) -> Check:
    answer = found.status
    if answer is None:
        return Check("runner", "runner", "skip", "no status answer")
    state = str(answer.get("status"))
    message = answer.get("message")
    detail = state + (f": {message}" if isinstance(message, str) and message else "")
    if state == "ready":
        return Check("runner", "runner", "ok", detail)
    if state in ("starting", "degraded"):
        return Check("runner", "runner", "warn", detail)
    return Check("runner", "runner", "fail", detail,
                 fix="The runner does not take runs now; try again later.",
                 exit_code=ExitCode.ERROR)


def _billing(found: _Found, invocation: Invocation) -> Check:
    scope = SCOPE_BILLING
    if found.status is None:
        return Check("billing", "billing and quota", "skip", "no status answer")
    if found.scopes is not None and scope not in found.scopes:
        return Check("billing", "billing and quota", "skip", f"the token lacks {scope}")
    try:
        usage = found.client.usage()
    except e.ContainersError as error:
        return Check("billing", "billing and quota", "fail", error.message,
                     fix=_error_fix(error, invocation, found.origin or ""),
                     exit_code=error.exit_code)
    plan = usage.get("plan", "?")
    billing = usage.get("billing") if isinstance(usage.get("billing"), dict) else {}
    status = billing.get("status")
    url = billing.get("url")
    if status != "active":
        fix = billing.get("guidance") or (f"Set up billing at {url}." if url else
                                          "Set up billing for this account.")
        return Check("billing", "billing and quota", "fail",
                     f"plan {plan}; billing {status or 'unknown'}", fix=fix,
                     exit_code=ExitCode.BILLING)
    exhausted = _exhausted(usage)
    if exhausted:
        end = (usage.get("period") or {}).get("end")
        until = f" until {end}" if isinstance(end, str) else ""
        where = f" at {url}" if url else ""
        return Check("billing", "billing and quota", "fail",
                     f"plan {plan}; {exhausted} used up{until}",
                     fix=f"Wait for the period to end, or upgrade the plan{where}.",
                     exit_code=ExitCode.BILLING)
    used = usage.get("used") or {}
    limits = usage.get("limits") or {}
    runs = used.get("runs_per_period")
    of = limits.get("runs_per_period")
    runs_text = f"; {runs} of {of if of is not None else 'unlimited'} runs this period" \
        if isinstance(runs, int) else ""
    return Check("billing", "billing and quota", "ok", f"plan {plan}; billing active{runs_text}")


# -- helpers -------------------------------------------------------------------------------
def _tls_context(env: Mapping[str, str]):
    """The certificates requests (the service) trusts, so this check agrees with the
    calls: $REQUESTS_CA_BUNDLE or $CURL_CA_BUNDLE, else requests' own bundle."""
    import ssl

    from requests.utils import DEFAULT_CA_BUNDLE_PATH

    cafile = env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or DEFAULT_CA_BUNDLE_PATH
    return ssl.create_default_context(cafile=cafile)


def _resolve(host: str, port: int, seconds: float) -> list:
    """getaddrinfo with a limit: the resolver has no timeout of its own, so it runs in a
    thread that is abandoned when late (a broken DNS must not hang `doctor`)."""
    import threading

    result: list = []
    failure: list[BaseException] = []

    def lookup() -> None:
        try:
            result.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:
            failure.append(exc)

    worker = threading.Thread(target=lookup, name="doctor-dns", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeoutError("timed out")
    if failure:
        raise failure[0]
    if not result:
        raise OSError("no address")
    return result


def _needed_scopes() -> dict[str, str]:
    return {name: facts.scope for name, facts in COMMANDS.items() if facts.scope}


def _exhausted(usage: dict) -> str | None:
    limits = usage.get("limits") if isinstance(usage.get("limits"), dict) else {}
    used = usage.get("used") if isinstance(usage.get("used"), dict) else {}
    words = {"runs_per_period": "runs per period", "run_seconds_per_period":
             "run-seconds per period", "concurrent_runs": "concurrent runs"}
    for name, words_for in words.items():
        limit, value = limits.get(name), used.get(name)
        if _number(limit) and _number(value) and value >= limit:
            return f"{words_for} ({value:g} of {limit:g})"
    return None


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _origin_fix(message: str) -> str:
    if "clear text" in message:
        return "Use the https:// origin of the API (plain http:// only for localhost)."
    names = ", ".join(f"${name}" for name in API_URL_ENV_VARS)
    return f"Give only the origin, e.g. https://host (in --api-url, {names})."


def _start_fix(origin: str) -> str:
    if is_loopback_origin(origin):
        return (f"Start the local emulator: {emulator_serve_command(origin)}  "
                f"(or set $BUS_AI_API_URL to the API's origin)")
    return f"Check that {origin} is the API's origin and that it is up."


def _error_fix(error: e.ContainersError, invocation: Invocation, where: str) -> str:
    if isinstance(error, e.AuthError):
        return token_hint(invocation)
    if error.guidance:
        return error.guidance + (f" {error.url}" if error.url else "")
    return f"Check that {where} is the API's origin and that it is up."


def _timings(ms: dict[str, float]) -> str:
    names = {"dns": "DNS", "tcp": "TCP", "tls": "TLS", "status": "status"}
    return ", ".join(f"{names[k]} {v:.1f} ms" for k, v in ms.items())


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def _when(exp: float, now: float) -> str:
    from datetime import datetime, timezone

    try:
        when = datetime.fromtimestamp(exp, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return "long ago"
    return f"at {when:%Y-%m-%d %H:%M:%SZ} ({ago(when, datetime.fromtimestamp(now, timezone.utc))})"


def _quoted(path: str) -> str:
    import shlex

    return shlex.quote(path)

