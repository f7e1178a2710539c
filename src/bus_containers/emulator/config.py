"""Emulator configuration: profiles, plans, accounts and limits, from a TOML file.

Everything has a built-in default that allows reasonable use, so the emulator runs with no
config file at all. A config file only overrides what it names; unknown keys are errors,
because a typo in a quota silently ignored would make a test pass for the wrong reason.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

MiB = 1024 * 1024
GiB = 1024 * MiB


class ConfigError(ValueError):
    """The config file is unreadable or invalid; the message says where."""


@dataclass(frozen=True)
class Limits:
    output_cap_bytes: int = MiB
    retention_seconds: float = 24 * 3600
    max_body_bytes: int = MiB
    max_wait_seconds: float = 60
    # The seed endpoint inserts runs in one transaction; bound it so a typo cannot eat the disk.
    max_seed: int = 200_000
    # Tokens living longer than this are refused, and none is issued for longer.
    max_token_ttl_seconds: int = 24 * 3600
    # The HTTP server (server.py): a connection that sends nothing is closed after
    # idle_timeout_seconds; one must send its whole request head within
    # header_timeout_seconds; at most max_connections are open at once (fewer when the
    # open-file limit is low); a request body may go body_idle_timeout_seconds without a
    # byte (not a run's stdin, which may pause as long as its user does).
    idle_timeout_seconds: float = 5
    header_timeout_seconds: float = 10
    body_idle_timeout_seconds: float = 30
    max_connections: int = 256
    # Long-lived requests (log followers, stdin and workspace uploads, Prefer: wait) per
    # account (unset: a quarter of what all accounts may hold), and connections kept for
    # short requests whoever holds long ones (unset: a quarter of the connection cap); see
    # longrequests.py.
    long_requests_per_account: int | None = None
    short_request_reserve: int | None = None
    # All runs together (the emulator's cgroup) and one account's runs together (its own
    # cgroup), where cgroups are in force; unset: 60% of the machine's memory and half its
    # process table in all, half of that for one account (see cgroups.default_totals).
    total_memory_bytes: int | None = None
    total_processes: int | None = None
    account_memory_bytes: int | None = None
    account_processes: int | None = None


@dataclass(frozen=True)
class Profile:
    name: str
    default_timeout_seconds: int = 600
    max_timeout_seconds: int = 3600
    cpu_seconds: int = 3600
    memory_bytes: int = 4 * GiB
    file_size_bytes: int = 1 * GiB
    max_processes: int = 256
    # Size of the run's private /tmp and /dev/shm (tmpfs: they count as memory).
    tmp_bytes: int = 512 * MiB
    shm_bytes: int = 64 * MiB
    # False: the run has its own network namespace with only its own loopback.
    network: bool = False


@dataclass(frozen=True)
class Plan:
    name: str
    billing: bool = True
    runs_per_period: int | None = None  # None: unlimited
    # Seconds of run time (start to end, summed over runs) per period; None: unlimited.
    run_seconds_per_period: int | None = None
    # Periods follow one another from the account's first request (like a billing cycle
    # anchored at sign-up), so a fresh account in a test never straddles a boundary.
    period_seconds: float = 3600
    concurrent_runs: int | None = 32  # None: unlimited
    # Work in and out (issue 10): one upload's size and member count, all an account keeps
    # (uploads plus finished runs' trees), and one run's stdin.
    workspace_bytes: int | None = 512 * MiB
    workspace_files: int | None = 100_000
    storage_bytes: int | None = 4 * GiB
    stdin_bytes: int | None = 4 * GiB
    # Stored runs per account: past either cap the oldest finished runs are deleted first.
    stored_runs: int | None = 250_000
    stored_bytes: int | None = 4 * GiB  # output plus request bodies of the stored runs


@dataclass(frozen=True)
class Config:
    limits: Limits = field(default_factory=Limits)
    profiles: dict[str, Profile] = field(default_factory=dict)
    plans: dict[str, Plan] = field(default_factory=dict)
    accounts: dict[str, str] = field(default_factory=dict)  # sub -> plan name
    default_plan: str = "default"

    def plan_for(self, sub: str) -> Plan:
        return self.plans[self.accounts.get(sub, self.default_plan)]


BUILTIN_PROFILES = {
    "codex": Profile("codex", default_timeout_seconds=600, max_timeout_seconds=3600),
    "default": Profile("default", default_timeout_seconds=300, max_timeout_seconds=3600),
}
BUILTIN_PLANS = {"default": Plan("default")}


def default_config() -> Config:
    return Config(profiles=dict(BUILTIN_PROFILES), plans=dict(BUILTIN_PLANS))


def load_config(path: Path | None) -> Config:
    """Read `path` (TOML) over the built-in defaults; None means defaults only."""
    if path is None:
        return default_config()
    try:
        with open(path, "rb") as f:
            _check_config_file(path, os.fstat(f.fileno()))
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    try:
        return parse_config(data)
    except ConfigError as e:
        raise ConfigError(f"config file {path}: {e}") from None


def _check_config_file(path: Path, st: os.stat_result) -> None:
    """Like the secrets: plans, limits and fault settings must come from you (or root)."""
    if st.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"config file {path} belongs to uid {st.st_uid}, not to you "
                          f"(uid {os.geteuid()}) or root")
    if st.st_mode & 0o022:
        raise ConfigError(f"config file {path} is writable by group or others "
                          f"(mode {st.st_mode & 0o777:o}); run: chmod go-w {path}")


def parse_config(data: dict[str, Any]) -> Config:
    _check_keys("top level", data, {"emulator", "profiles", "plans", "accounts", "defaults"})
    limits = _build(Limits, "[emulator]", _table(data, "emulator"), {})
    profiles = dict(BUILTIN_PROFILES)
    for name, table in _table(data, "profiles").items():
        base = profiles.get(name, Profile(name))
        profiles[name] = _build(Profile, f"[profiles.{name}]", _as_table(name, table), base)
    plans = dict(BUILTIN_PLANS)
    for name, table in _table(data, "plans").items():
        base = plans.get(name, Plan(name))
        plans[name] = _build(Plan, f"[plans.{name}]", _as_table(name, table), base)
    accounts: dict[str, str] = {}
    for sub, table in _table(data, "accounts").items():
        table = _as_table(sub, table)
        _check_keys(f'[accounts."{sub}"]', table, {"plan"})
        accounts[sub] = _plan_name(table.get("plan"), plans, f'[accounts."{sub}"] plan')
    defaults = _table(data, "defaults")
    _check_keys("[defaults]", defaults, {"plan"})
    default_plan = _plan_name(defaults.get("plan", "default"), plans, "[defaults] plan")
    return Config(limits, profiles, plans, accounts, default_plan)


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    return _as_table(key, data.get(key, {}))


def _as_table(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{name} must be a table")
    return value


def _check_keys(where: str, table: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _plan_name(value: Any, plans: dict[str, Plan], where: str) -> str:
    if not isinstance(value, str) or value not in plans:
        raise ConfigError(f"{where}: unknown plan {value!r} (known: {', '.join(sorted(plans))})")
    return value


def _build(cls: type, where: str, table: dict[str, Any], base: Any) -> Any:
    """A `cls` from `base` (or defaults) with the table's values, each type-checked."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "name"}
    _check_keys(where, table, set(fields))
    values = {}
    for key, value in table.items():
        kind = fields[key].type
        ok = isinstance(value, bool) if kind == "bool" else (
            isinstance(value, (int, float) if "float" in kind else int)
            and not isinstance(value, bool)
            and value > 0
        )
        if not ok:
            expected = "true or false" if kind == "bool" else "a positive number"
            raise ConfigError(f"{where} {key} must be {expected}, not {value!r}")
        values[key] = value
    if base == {}:
        return cls(**values)
    return dataclasses.replace(base, **values)
