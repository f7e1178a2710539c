"""Startup checks like ssh's (issue 9, point 7), against the real `serve` and `token`
commands: a state dir or secret that cannot be trusted or used is one line on stderr and
exit 2, never a traceback, and the secret is left as it was (never silently regenerated)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bus_containers.emulator.statedir import MIN_SECRET_BYTES
from bus_containers.emulator.tokens import TokenAuthority, default_account

SECRETS = ("jwt-secret", "admin-key")
GOOD = "a" * 64
OTHER_UID = 54321  # no account needed: only the file's owner field is set

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


def emulator(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bus_containers.emulator", *args],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)


def good_state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    for name in SECRETS:
        (state / name).write_text(GOOD + "\n")
        (state / name).chmod(0o600)
    return state


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path, 0o600)


def _symlink(path: Path) -> None:
    target = path.with_name("elsewhere")
    target.write_text(GOOD)
    target.chmod(0o600)
    path.unlink()
    path.symlink_to(target)


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir(mode=0o700)


# name -> (how to break the secret, words the one-line error must contain)
BROKEN_SECRETS = {
    "empty": (lambda p: _write(p, b""), "is empty"),
    "only whitespace": (lambda p: _write(p, b" \n\n"), "is empty"),
    "one character": (lambda p: _write(p, b"x\n"), "too short (1 bytes"),
    "31 bytes": (lambda p: _write(p, b"k" * (MIN_SECRET_BYTES - 1)), "too short (31 bytes"),
    "binary garbage": (lambda p: _write(p, bytes(range(256)) * 2), "not a secret written"),
    "spaces inside": (lambda p: _write(p, b"a" * 40 + b" " + b"b" * 40), "not a secret"),
    "readable by others": (lambda p: p.chmod(0o644), "accessible by group or others"),
    "group writable": (lambda p: p.chmod(0o620), "accessible by group or others"),
    "a directory": (_directory, "is not a regular file"),
    "a FIFO (must not hang)": (_fifo, "is not a regular file"),
    "a symlink": (_symlink, "cannot read"),
}


# Both secrets go through the same check: every case on one, a few on the other.
CASES = [(case, "jwt-secret") for case in BROKEN_SECRETS] + [
    (case, "admin-key") for case in ("empty", "binary garbage", "readable by others")]


@pytest.mark.parametrize(("case", "secret"), CASES)
def test_untrustworthy_secret_is_one_line_and_exit_2(tmp_path, case, secret):
    state = good_state(tmp_path)
    path = state / secret
    breaker, words = BROKEN_SECRETS[case]
    breaker(path)
    before = path.read_bytes() if path.is_file() and not path.is_symlink() else None
    out = emulator("serve", "--port", "0", "--state-dir", str(state))
    assert out.returncode == 2, (out.returncode, out.stderr)
    assert out.stdout == ""  # never got as far as listening
    [line] = out.stderr.splitlines()
    assert line.startswith("bus-containers-emulator: ") and str(path) in line, line
    assert words in line, line
    if before is not None:
        assert path.read_bytes() == before  # not regenerated


@root_only
@pytest.mark.parametrize("secret", SECRETS)
def test_secret_of_another_user_is_refused(tmp_path, secret):
    state = good_state(tmp_path)
    os.chown(state / secret, OTHER_UID, OTHER_UID)
    out = emulator("serve", "--port", "0", "--state-dir", str(state))
    assert out.returncode == 2
    [line] = out.stderr.splitlines()
    assert f"belongs to uid {OTHER_UID}, not to the user running the emulator" in line


@pytest.mark.parametrize("case", ["world writable", "group writable", "another user's"])
def test_untrustworthy_state_dir_is_refused(tmp_path, case):
    state = good_state(tmp_path)
    if case == "another user's":
        if os.geteuid() != 0:
            pytest.skip("chown to another uid needs root")
        os.chown(state, OTHER_UID, OTHER_UID)
        words = f"belongs to uid {OTHER_UID}"
    else:
        state.chmod(0o777 if case == "world writable" else 0o770)
        words = "writable by group or others"
    for command in (["serve", "--port", "0"], ["token", "--sub", "a"]):
        out = emulator(*command, "--state-dir", str(state))
        assert out.returncode == 2 and out.stdout == "", (command, out.stderr)
        [line] = out.stderr.splitlines()
        assert str(state) in line and words in line, line


def test_token_command_checks_the_secret_too(tmp_path):
    state = good_state(tmp_path)
    _write(state / "jwt-secret", b"")
    out = emulator("token", "--sub", "a", "--state-dir", str(state))
    assert out.returncode == 2 and out.stdout == ""
    [line] = out.stderr.splitlines()
    assert "jwt-secret is empty" in line


def test_secrets_are_generated_once_0600_in_a_0700_dir(tmp_path):
    state = tmp_path / "fresh"
    TokenAuthority(state)  # what `serve` does at start
    assert state.stat().st_mode & 0o777 == 0o700
    secret = (state / "jwt-secret").read_bytes()
    assert len(secret.strip()) >= MIN_SECRET_BYTES
    assert (state / "jwt-secret").stat().st_mode & 0o777 == 0o600
    again = emulator("token", "--sub", "a", "--state-dir", str(state))
    assert again.returncode == 0
    assert (state / "jwt-secret").read_bytes() == secret  # kept, not regenerated


def test_token_never_makes_a_state_dir_or_secret_of_its_own(tmp_path):
    """A token signed with a new secret would be refused by the emulator running with
    another state dir: `token` says so instead."""
    state = tmp_path / "never-served"
    out = emulator("token", "--state-dir", str(state))
    assert out.returncode == 2 and out.stdout == ""
    assert str(state) in out.stderr and "--state-dir" in out.stderr
    assert not state.exists()
    state.mkdir(mode=0o700)
    out = emulator("token", "--state-dir", str(state))
    assert out.returncode == 2 and "jwt-secret does not exist" in out.stderr
    assert not (state / "jwt-secret").exists()


def test_token_defaults_to_the_state_dirs_default_account_and_documents_state_dir(tmp_path):
    import jwt

    state = good_state(tmp_path)
    out = emulator("token", "--state-dir", str(state))
    assert out.returncode == 0, out.stderr
    claims = jwt.decode(out.stdout.strip(), GOOD, algorithms=["HS256"])
    assert claims["sub"] == default_account(state)
    help_text = emulator("token", "-h").stdout
    assert "the state dir the emulator was started with" in help_text


def test_a_state_dir_others_can_only_read_is_closed(tmp_path):
    state = good_state(tmp_path)
    state.chmod(0o755)
    out = emulator("token", "--sub", "a", "--state-dir", str(state))
    assert out.returncode == 0, out.stderr
    assert state.stat().st_mode & 0o777 == 0o700


def test_a_parent_others_may_write_without_the_sticky_bit_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    state = good_state(shared)
    shared.chmod(0o777)  # anyone could rename the state dir away and plant their own
    for command in (["serve", "--port", "0"], ["token", "--sub", "a"]):
        out = emulator(*command, "--state-dir", str(state))
        assert out.returncode == 2 and out.stdout == "", (command, out.stderr)
        [line] = out.stderr.splitlines()
        assert f"{shared} (above state dir {state}) is writable by group or others " \
               "without the sticky bit" in line, line
    shared.chmod(0o1777)  # sticky, like /tmp: only the owner may rename the state dir
    out = emulator("token", "--sub", "a", "--state-dir", str(state))
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("name", ["workspaces", "sandbox-root", "sandbox-skeleton"])
def test_a_symlinked_subdirectory_is_refused(tmp_path, name):
    state = good_state(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (state / name).symlink_to(elsewhere)
    out = emulator("serve", "--port", "0", "--state-dir", str(state))
    assert out.returncode == 2 and out.stdout == "", out.stderr
    [line] = out.stderr.splitlines()
    assert f"{state / name} is not a directory (a symlink?)" in line, line
    assert list(elsewhere.iterdir()) == []


def test_a_planted_database_is_one_line_and_exit_2(tmp_path):
    import sqlite3

    state = good_state(tmp_path)
    planted = sqlite3.connect(state / "state.db")
    planted.execute("PRAGMA user_version = 2")  # claims our schema, has none of it
    planted.execute("CREATE TABLE runs (x)")
    planted.close()
    (state / "state.db").chmod(0o600)
    out = emulator("serve", "--port", "0", "--state-dir", str(state))
    assert out.returncode == 2 and out.stdout == "", out.stderr
    [line] = out.stderr.splitlines()
    assert "cannot use the state database" in line and "missing" in line, line
    (state / "state.db").unlink()
    (state / "state.db").symlink_to(tmp_path / "elsewhere.db")
    out = emulator("serve", "--port", "0", "--state-dir", str(state))
    assert out.returncode == 2, out.stderr
    [line] = out.stderr.splitlines()
    assert "a symlink there is refused" in line, line
    assert not (tmp_path / "elsewhere.db").exists()


def test_an_empty_admin_key_is_not_said_to_sign_tokens(tmp_path):
    state = good_state(tmp_path)
    _write(state / "admin-key", b"")
    out = emulator("serve", "--port", "0", "--state-dir", str(state))
    assert out.returncode == 2
    [line] = out.stderr.splitlines()
    assert "is empty" in line and "signed" not in line, line
    assert "whoever holds the old key must read the new one" in line


@pytest.mark.parametrize("where", ["state dir", "--config"])
def test_a_config_file_others_may_write_is_refused(tmp_path, where):
    state = good_state(tmp_path)
    config = state / "emulator.toml" if where == "state dir" else tmp_path / "other.toml"
    config.write_text("[emulator]\nmax_wait_seconds = 5\n")
    config.chmod(0o666)
    extra = ["--config", str(config)] if where == "--config" else []
    for command in (["serve", "--port", "0"], ["token", "--sub", "a"]):
        out = emulator(*command, "--state-dir", str(state), *extra)
        assert out.returncode == 2 and out.stdout == "", (command, out.stderr)
        [line] = out.stderr.splitlines()
        assert f"config file {config} is writable by group or others (mode 666)" in line
