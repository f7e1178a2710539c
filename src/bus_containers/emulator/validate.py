"""Request parsing: JSON bodies, run specs, query parameters. Every refusal is a 4xx."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request

from .config import Config
from .errors import ApiError, invalid
from .model import STATUSES, RunSpec

RUN_ID = re.compile(r"^run_[0-9a-f]{24}$")
_PREFER_WAIT = re.compile(r'(?:^|[,;\s])wait\s*=\s*"?([0-9]{1,9}(?:\.[0-9]+)?)"?', re.I)
_PREFER_UNTIL_OUTPUT = re.compile(r'(?:^|[,;\s])until\s*=\s*"?output"?(?:$|[,;\s])', re.I)
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_ENV_NAME = re.compile(r"^[^=\x00]+$")
_RFC3339 = re.compile(r"^([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
                      r"(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})$", re.ASCII)
_COMMIT = re.compile(r"^[0-9a-f]{4,64}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_COMMAND_ARGS = 4096
MAX_ENV = 1024


def read_json(request: Request, limit: int, *, allow_empty: bool = False) -> Any:
    length = request.content_length
    if length is not None and length > limit:
        raise _too_large(limit)
    try:
        data = request.stream.read(limit + 1)
    except HTTPException:  # client went away mid-body, bad chunked encoding, ...
        raise invalid("the request body could not be read") from None
    if len(data) > limit:
        raise _too_large(limit)
    if not data.strip() and allow_empty:
        return {}
    mimetype = request.mimetype
    if data and mimetype and mimetype != "application/json" and not mimetype.endswith("+json"):
        raise ApiError(415, "unsupported_media_type",
                       f"the request body must be application/json, not {mimetype}")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise invalid("the request body is not valid JSON (UTF-8)") from None


def read_json_object(request: Request, limit: int, *, allow_empty: bool = False) -> dict:
    """`read_json` for the calls whose body must be one JSON object."""
    data = read_json(request, limit, allow_empty=allow_empty)
    if not isinstance(data, dict):
        raise invalid("the request body must be a JSON object")
    return data


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "payload_too_large", f"the request body is over {limit} bytes",
                    headers={"Connection": "close"})


def _preview(value: Any) -> str:
    """The start of a value, for a message that must say which one it is about."""
    if not isinstance(value, str):
        return type(value).__name__
    return repr(value[:20] + "..." if len(value) > 20 else value)


def clean_str(value: Any, what: str, *, empty_ok: bool = False, max_len: int = 65536) -> str:
    """A string that can reach argv/env: no NUL, encodable, bounded."""
    if not isinstance(value, str):
        raise invalid(f"{what} must be a string")
    if not value and not empty_ok:
        raise invalid(f"{what} must not be empty")
    if "\x00" in value:
        raise invalid(f"{what} must not contain NUL characters")
    if len(value) > max_len:
        raise invalid(f"{what} is longer than {max_len} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid(f"{what} is not valid Unicode") from None
    return value


def run_spec(body: Any, config: Config) -> RunSpec:
    """The run a POST /runs body asks for. Fields other than the four known are ignored
    (account ids included: the owner is the token's `sub`)."""
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    profile_name = clean_str(body.get("profile"), "profile", max_len=128)
    profile = config.profiles.get(profile_name)
    command = body.get("command")
    if not isinstance(command, list) or not command:
        raise invalid("command must be a non-empty list of strings")
    if len(command) > MAX_COMMAND_ARGS:
        raise invalid(f"command has more than {MAX_COMMAND_ARGS} arguments")
    # Name the argument (1 = the program): "each argument" would leave the user searching.
    argv = tuple(clean_str(a, f"command argument {n} ({_preview(a)})", empty_ok=True)
                 for n, a in enumerate(command, 1))
    env = body.get("env", {})
    if not isinstance(env, dict) or len(env) > MAX_ENV:
        raise invalid(f"env must be an object of at most {MAX_ENV} string values")
    pairs = []
    for k, v in env.items():
        clean_str(k, f"env name {_preview(k)}", max_len=1024)
        if not _ENV_NAME.match(k):
            raise invalid("env names must not contain '='")
        pairs.append((k, clean_str(v, f"env {k!r}", empty_ok=True)))
    if profile is None:
        known = ", ".join(sorted(config.profiles))
        raise ApiError(400, "unknown_profile", f"unknown profile {profile_name!r}",
                       guidance=f"Use one of: {known}.")
    if "timeout_seconds" not in body:
        timeout = profile.default_timeout_seconds
    else:
        timeout = as_int(body["timeout_seconds"])
    if timeout is None or timeout <= 0:
        raise invalid("timeout_seconds must be a positive integer")
    elif timeout > profile.max_timeout_seconds:
        raise invalid(f"timeout_seconds is over the profile's maximum "
                      f"({profile.max_timeout_seconds})")
    return RunSpec(profile_name, argv, timeout, tuple(sorted(pairs)), *_inputs(body))


def _inputs(body: dict) -> tuple[bool, str | None, tuple[tuple[str, Any], ...]]:
    """(stdin, workspace sha256, workspace_info) of a create body (issue 10)."""
    stdin = body.get("stdin", False)
    if not isinstance(stdin, bool):
        raise invalid("stdin must be true or false")
    workspace = body.get("workspace")
    if "workspace" in body and (not isinstance(workspace, str)
                                or not SHA256.match(workspace)):
        raise invalid("workspace must be the lowercase hex sha256 of an uploaded workspace")
    raw = body.get("workspace_info", {})
    if not isinstance(raw, dict):
        raise invalid("workspace_info must be an object")
    info: list[tuple[str, Any]] = []
    commit = raw.get("base_commit")
    if "base_commit" in raw:
        if not isinstance(commit, str) or not _COMMIT.match(commit):
            raise invalid("workspace_info.base_commit must be a hex commit id")
        info.append(("base_commit", commit))
    dirty = raw.get("dirty")
    if "dirty" in raw:
        if not isinstance(dirty, bool):
            raise invalid("workspace_info.dirty must be true or false")
        info.append(("dirty", dirty))
    # What the client says of a tree it did not send means nothing: dropped.
    return stdin, workspace, tuple(info) if workspace is not None else ()


def as_int(value: Any) -> int | None:
    """An integer as JSON Schema sees it (5 and 5.0 alike), else None; never a bool."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.match(key):
        raise invalid("Idempotency-Key must be 1 to 255 visible ASCII characters")
    return key


def prefer_wait(request: Request) -> float | None:
    """Seconds from `Prefer: wait=N` (RFC 7240); other preferences are ignored."""
    m = _PREFER_WAIT.search(request.headers.get("Prefer", ""))
    return float(m.group(1)) if m else None


def prefer_until_output(request: Request) -> bool:
    """`Prefer: until=output` (with wait=N on POST /runs): end the hold at the first output."""
    return bool(_PREFER_UNTIL_OUTPUT.search(request.headers.get("Prefer", "")))


def list_query(request: Request, config: Config
               ) -> tuple[int, str | None, str | None, str | None, float | None]:
    """(limit, cursor, status, profile, since) of a list call."""
    args = request.args
    raw = args.get("limit")
    limit = 20
    if raw is not None:
        if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= 100:
            raise invalid("limit must be an integer from 1 to 100")
        limit = int(raw)
    status = args.get("status")
    if status is not None and status not in STATUSES:
        raise invalid(f"status must be one of {', '.join(STATUSES)}")
    profile = args.get("profile")
    if profile is not None and profile not in config.profiles:
        raise ApiError(400, "unknown_profile", f"unknown profile {profile[:128]!r}",
                       guidance=f"Use one of: {', '.join(sorted(config.profiles))}.")
    return limit, args.get("cursor"), status, profile, timestamp(args.get("since"), "since")


def timestamp(value: str | None, name: str) -> float | None:
    """An RFC 3339 date-time (e.g. 2026-11-30T10:00:00Z) as a POSIX time, or None."""
    if value is None:
        return None
    m = _RFC3339.match(value)
    if m is None:
        raise invalid(f"{name} must be an RFC 3339 date-time, e.g. 2026-11-30T10:00:00Z")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction = float(m.group(7) or 0)
    zone = m.group(8)
    offset = timedelta(0)
    if zone not in ("Z", "z"):
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            raise invalid(f"{name} has an invalid time zone offset")
        offset = timedelta(hours=hours, minutes=minutes) * (1 if zone[0] == "+" else -1)
    if year == 0:  # valid RFC 3339, outside Python's calendar: before any run anyway
        return float("-inf")
    leap = second == 60  # RFC 3339 allows a leap second: the same as the next instant
    try:
        dt = datetime(year, month, day, hour, minute, 59 if leap else second,
                      tzinfo=timezone(offset))
    except ValueError:
        raise invalid(f"{name} is not a valid date-time") from None
    return dt.timestamp() + fraction + (1 if leap else 0)


def flag(value: str | None, name: str) -> bool:
    if value is None:
        return False
    if value in ("true", "false"):
        return value == "true"
    raise invalid(f"{name} must be true or false")


def non_negative_int(value: str | None, name: str) -> int:
    if value is None:
        return 0
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise invalid(f"{name} must be a non-negative integer")
    return int(value)
