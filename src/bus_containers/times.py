"""Times as users type and read them: `--since 10m`, "3 min ago", "1m05s".

Pure functions over explicit `now` values, so the tests need no clock. Import-light (only
the standard library): completion and `--help` may import it.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_DURATION = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")
_UNITS = (7 * 86400, 86400, 3600, 60, 1)
SINCE_HELP = "e.g. 10m, 2h, 1d, 1h30m, 2026-11-30T10:00:00Z or 2026-11-30"


class BadTime(ValueError):
    """The text is neither a duration nor a date-time; the message says what is accepted."""


def parse_since(text: str, now: datetime) -> datetime:
    """A `--since` value as an aware UTC datetime: a duration before `now` (`10m`, `1h30m`,
    `2d`), an RFC 3339 date-time (`2026-11-30T10:00:00Z`; without a zone: local time), or a
    date (`2026-11-30`: local midnight)."""
    value = text.strip()
    m = _DURATION.match(value)
    if value and m and any(m.groups()):
        seconds = sum(float(g) * unit for g, unit in zip(m.groups(), _UNITS, strict=True) if g)
        try:
            return (now - timedelta(seconds=seconds)).astimezone(timezone.utc)
        except OverflowError:
            return datetime.min.replace(tzinfo=timezone.utc)
    try:
        when = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise BadTime(f"{text!r} is not a duration or a time ({SINCE_HELP})") from None
    if when.tzinfo is None:
        when = when.astimezone()  # a time without a zone is the user's local time
    return when.astimezone(timezone.utc)


def rfc3339(when: datetime) -> str:
    """UTC, milliseconds, `Z`: the form the API takes."""
    when = when.astimezone(timezone.utc)
    # The year by hand: strftime's %Y is not zero-padded for years before 1000 on glibc
    # (`--since 99999999d` reaches year 1, and "1-01-01" is not RFC 3339).
    return (f"{when.year:04d}-" + when.strftime("%m-%dT%H:%M:%S.")
            + f"{when.microsecond // 1000:03d}Z")


def parse_api_time(text: object) -> datetime | None:
    """An RFC 3339 time from the API, or None for anything else (never an error)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def ago(when: datetime, now: datetime) -> str:
    """"just now", "42 s ago", "3 min ago", "5 h ago", "2 d ago" (a clock ahead of ours
    counts as just now)."""
    seconds = (now - when).total_seconds()
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


def duration(seconds: object) -> str:
    """A run's length: "0.4s", "12s", "3m05s", "1h02m"; "-" when unknown."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0 \
            or seconds != seconds or seconds == float("inf"):
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
