"""`--since` parsing and the human times of `runs` (times.py): pure, no clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from bus_containers.times import BadTime, ago, duration, parse_since, rfc3339

NOW = datetime(2026, 11, 30, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(("text", "before"), [
    ("10m", timedelta(minutes=10)), ("2h", timedelta(hours=2)), ("1d", timedelta(days=1)),
    ("1h30m", timedelta(minutes=90)), ("90s", timedelta(seconds=90)),
    ("0.5s", timedelta(seconds=0.5)), ("1w", timedelta(days=7)), (" 5m ", timedelta(minutes=5)),
])
def test_durations_count_back_from_now(text, before):
    assert parse_since(text, NOW) == NOW - before


def test_times_and_dates():
    assert parse_since("2026-11-30T10:00:00Z", NOW) == datetime(2026, 11, 30, 10,
                                                                tzinfo=timezone.utc)
    assert parse_since("2026-11-30T11:00:00+01:00", NOW) == datetime(2026, 11, 30, 10,
                                                                     tzinfo=timezone.utc)
    local = parse_since("2026-11-30", NOW)
    assert local == datetime(2026, 11, 30).astimezone().astimezone(timezone.utc)
    assert rfc3339(parse_since("2026-11-30T10:00:00.25Z", NOW)) == "2026-11-30T10:00:00.250Z"
    assert parse_since("99999d", NOW).year < 2026  # far back, never an overflow


@pytest.mark.parametrize("text", ["", "10", "m", "10 minutes", "yesterday", "1h-5m",
                                  "2026-13-01", "10m5h"])
def test_anything_else_is_a_clear_error(text):
    with pytest.raises(BadTime, match="e.g. 10m"):
        parse_since(text, NOW)


def test_ago_and_duration():
    assert ago(NOW - timedelta(seconds=2), NOW) == "just now"
    assert ago(NOW + timedelta(minutes=5), NOW) == "just now"  # a server clock ahead
    assert ago(NOW - timedelta(seconds=42), NOW) == "42 s ago"
    assert ago(NOW - timedelta(minutes=3, seconds=59), NOW) == "3 min ago"
    assert ago(NOW - timedelta(hours=5), NOW) == "5 h ago"
    assert ago(NOW - timedelta(days=2, hours=23), NOW) == "2 d ago"
    assert [duration(x) for x in (0.42, 12.9, 185, 3725, None, -1, True, float("nan"))] == [
        "0.4s", "12s", "3m05s", "1h02m", "-", "-", "-", "-"]
