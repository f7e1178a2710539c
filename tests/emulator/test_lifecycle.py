"""The emulator as a process: start, config, tokens, retention, shutdown with no leftovers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest

from bus_containers.emulator.launch import descendants_of
from tests.support.emulator import start_emulator, wait_gone

from .helpers import Api, assert_error, sleepers, wait_until


def _emulator(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bus_containers.emulator", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_kills_running_children_and_removes_temp_dirs(tmp_path, sig):
    emu = start_emulator(tmp_path / "state")
    api = Api(emu)
    for _ in range(3):
        api.post_run(["sh", "-c", "sleep 100 & sleep 100"])
    procs = wait_until(lambda: len(sleepers(emu)) >= 6 and sleepers(emu), what="6 sleeps")
    stats = emu.stats()
    # With namespaces, a run's files live in its own tmpfs: no temp dir on the host.
    host_dirs = 3 if "isolation: none" in emu.status_message() else 0
    assert stats["processes_running"] == 3 and stats["temp_dirs"] == host_dirs
    tmp_dirs = [p for p in os.listdir("/tmp") if p.startswith("bus-emulator-run-")
                and host_dirs]  # with namespaces, any such dir is another emulator's
    assert len(tmp_dirs) >= host_dirs
    everything = emu.descendants()
    emu.proc.send_signal(sig)
    assert emu.proc.wait(20) == 0
    assert wait_gone(everything, 5) == {} and wait_gone(procs, 1) == {}
    left = {p for p in os.listdir("/tmp") if p.startswith("bus-emulator-run-")}
    assert not left & set(tmp_dirs)
    emu.stop()  # already exited: only the bookkeeping


def test_listening_line_and_request_log(tmp_path):
    emu = start_emulator(tmp_path)
    try:
        assert emu.url.startswith("http://127.0.0.1:")
        Api(emu).get("/status")
    finally:
        emu.stop()
    log = emu.log_tail(10**6)
    assert "GET /api/v1/containers/status 200" in log
    assert "Traceback" not in log


def test_config_from_state_dir_is_used(tmp_path):
    (tmp_path / "emulator.toml").write_text("[defaults]\nplan = 'nob'\n[plans.nob]\n"
                                            "billing = false\n")
    emu = start_emulator(tmp_path)
    try:
        assert_error(Api(emu).post_run(["true"]), 402, "billing_required")
    finally:
        emu.stop()


@pytest.mark.parametrize(("toml", "message"), [
    ("[emulator]\noutput_cap = 5\n", "unknown key(s) output_cap"),
    ("[plans.x]\nbilling = 'no'\n", "billing must be true or false"),
    ("[profiles.x]\nmax_processes = -1\n", "max_processes must be a positive number"),
    ("[accounts.a]\nplan = 'gold'\n", "unknown plan 'gold'"),
    ("not toml [", "not valid TOML"),
])
def test_bad_config_exits_2_with_a_message_and_no_traceback(tmp_path, toml, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    out = _emulator("serve", "--port", "0", "--state-dir", str(tmp_path), "--config", str(cfg))
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert out.stdout == ""


def test_missing_config_file_and_bad_faults_file(tmp_path):
    out = _emulator("serve", "--port", "0", "--state-dir", str(tmp_path),
                    "--config", str(tmp_path / "nope.toml"))
    assert out.returncode == 2 and "cannot read config file" in out.stderr
    bad = tmp_path / "f.json"
    bad.write_text('{"faults": [{"action": "explode"}]}')
    out = _emulator("serve", "--port", "0", "--state-dir", str(tmp_path), "--faults", str(bad))
    assert out.returncode == 2 and "fault action must be one of" in out.stderr
    assert "Traceback" not in out.stderr


def test_port_in_use_is_a_clean_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = _emulator("serve", "--port", str(port), "--state-dir", str(tmp_path))
    assert out.returncode == 1 and "cannot listen" in out.stderr
    assert "Traceback" not in out.stderr


def test_token_subcommand(tmp_path):
    from bus_containers.emulator.tokens import TokenAuthority

    TokenAuthority(tmp_path)  # the secret, as `serve` makes it
    out = _emulator("token", "--sub", "abc", "--scope", "container:read", "--ttl", "60",
                    "--state-dir", str(tmp_path))
    assert out.returncode == 0, out.stderr
    import jwt

    secret = (tmp_path / "jwt-secret").read_text().strip()
    claims = jwt.decode(out.stdout.strip(), secret, algorithms=["HS256"])
    assert claims["sub"] == "abc" and claims["scope"] == "container:read"
    assert claims["exp"] - claims["iat"] == 60 and claims["iss"] == "bus-containers-emulator"
    assert (tmp_path / "jwt-secret").stat().st_mode & 0o777 == 0o600
    default = _emulator("token", "--sub", "abc", "--state-dir", str(tmp_path))
    claims = jwt.decode(default.stdout.strip(), secret, algorithms=["HS256"])
    assert claims["scope"] == "container:read container:run container:delete billing:read"
    bad = _emulator("token", "--sub", "abc", "--ttl", "0", "--state-dir", str(tmp_path))
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_tokens_of_another_state_dir_are_rejected(tmp_path):
    emu_a = start_emulator(tmp_path / "a")
    emu_b = start_emulator(tmp_path / "b")
    try:
        foreign = emu_b.token("someone")
        r = Api(emu_a).get("/status", headers={"Authorization": f"Bearer {foreign}"})
        assert_error(r, 401, "unauthenticated")
    finally:
        emu_a.stop()
        emu_b.stop()


def test_retention_removes_old_finished_runs(tmp_path):
    emu = start_emulator(tmp_path, config="[emulator]\nretention_seconds = 1\n")
    try:
        api = Api(emu)
        old = emu.seed(api.sub, 3, age_seconds=60)
        assert api.get("/runs").json()["runs"] == []
        assert_error(api.get(f"/runs/{old[0]}"), 404, "not_found")
        run = api.run(["true"])
        wait_until(lambda: api.get(f"/runs/{run['id']}").status_code == 404, timeout=10,
                   what="retention")
        assert emu.stats()["runs"] == 0
    finally:
        emu.stop()


def test_stop_checks_find_no_leftover_after_many_runs(tmp_path):
    emu = start_emulator(tmp_path)
    try:
        api = Api(emu)
        ids = [api.post_run(["sh", "-c", "echo $$"]).json()["id"] for _ in range(10)]
        for run_id in ids:
            assert api.wait(run_id)["status"] == "succeeded"
        stats = emu.stats()
        assert stats["processes_started"] == 10 and stats["processes_running"] == 0
        assert stats["temp_dirs"] == 0
        assert descendants_of(emu.proc.pid) == {}
    finally:
        emu.stop()
