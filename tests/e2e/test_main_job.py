"""End to end, as users run it: the reference host `bus` and the installed plugin, as real
processes, against the real emulator over loopback (issue 3)."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from bus_containers import __version__
from tests.support.cli import SCOPES, clean_env, run_cli

pytestmark = pytest.mark.e2e

BILLING_CONFIG = """
[plans.unbilled]
billing = false

[plans.tiny]
runs_per_period = 1
period_seconds = 3600
"""


def account(emulator, tmp_path, name="alice", scope=SCOPES):
    """(env, token) for a fresh account whose token sits in its own config dir, as
    `bus auth token` would leave it."""
    sub = f"{name}-{uuid.uuid4()}"
    token = emulator.token(sub, scope=scope)
    config_dir = tmp_path / f"config-{name}"
    (config_dir / "auth").mkdir(parents=True)
    token_file = config_dir / "auth" / "api-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    env = clean_env(BUS_API_BASE_URL=emulator.url, BUS_CONFIG_DIR=str(config_dir))
    return env, token, sub


def test_seed_flow_through_the_reference_host(emulator, tmp_path):
    env = clean_env(BUS_API_BASE_URL=emulator.url, BUS_CONFIG_DIR=str(tmp_path / "cfg"),
                    BUS_EMULATOR_ADMIN_KEY_FILE=str(emulator.admin_key_file))

    got = run_cli(["bus", "auth", "token", "--scope", SCOPES], env=env,
                  secrets=(emulator.admin_key(),))
    assert got.code == 0, got.stderr
    token_file = tmp_path / "cfg" / "auth" / "api-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    secrets = (token,)

    plugins = run_cli(["bus", "plugins", "--json"], env=env, secrets=secrets)
    ours = [p for p in json.loads(plugins.stdout) if p["name"] == "containers"]
    assert ours and ours[0]["loaded"] and ours[0]["version"] == __version__
    assert ours[0]["hooks"] == ["register_commands"]
    assert {"status", "run", "runs", "show", "delete"} <= set(ours[0]["commands"])

    status = run_cli(["bus", "containers", "status"], env=env, secrets=secrets)
    assert (status.code, status.stdout.splitlines()[0]) == (0, "ready")

    ran = run_cli(["bus", "containers", "run", "--profile", "codex", "--",
                   "sh", "-c", "printf OK"], env=env, secrets=secrets)
    assert (ran.code, ran.stdout) == (0, "OK")
    run_id = re.search(r"\brun_[0-9a-f]+", ran.stderr).group(0)

    listed = run_cli(["bus", "containers", "runs"], env=env, secrets=secrets)
    assert listed.code == 0 and run_id in listed.stdout
    assert listed.stdout.splitlines()[0].split() == [
        "ID", "STATUS", "PROFILE", "EXIT", "DURATION", "CREATED", "COMMAND"]

    deleted = run_cli(["bus", "containers", "delete", run_id], env=env, secrets=secrets)
    assert deleted.code == 0 and run_id in deleted.stderr
    gone = run_cli(["bus", "containers", "show", run_id], env=env, secrets=secrets)
    assert gone.code == 3


def test_standalone_script_matches_the_host_command(emulator, tmp_path):
    env, token, _ = account(emulator, tmp_path)
    via_host = run_cli(["bus", "containers", "status", "--json"], env=env, secrets=(token,))
    standalone = run_cli(["bus-containers", "status", "--json"], env=env, secrets=(token,))
    assert via_host.code == standalone.code == 0
    assert json.loads(via_host.stdout)["status"] == json.loads(standalone.stdout)["status"]


def test_another_account_cannot_list_show_or_delete(emulator, tmp_path):
    env_a, token_a, _ = account(emulator, tmp_path, "a")
    env_b, token_b, _ = account(emulator, tmp_path, "b")
    secrets = (token_a, token_b)
    created = run_cli(["bus", "containers", "run", "--detach", "--", "true"], env=env_a,
                      secrets=secrets)
    run_id = created.stdout.strip()
    assert created.code == 0 and re.fullmatch(r"run_[0-9a-f]+", run_id)

    listed = run_cli(["bus", "containers", "runs", "--json"], env=env_b, secrets=secrets)
    assert listed.code == 0 and run_id not in {r["id"] for r in json.loads(listed.stdout)}
    assert run_cli(["bus", "containers", "show", run_id], env=env_b, secrets=secrets).code == 3
    deleted = run_cli(["bus", "containers", "delete", "--json", run_id], env=env_b,
                      secrets=secrets)
    assert deleted.code == 3
    assert json.loads(deleted.stdout) == {"deleted": [], "not_found": [run_id]}

    shown = run_cli(["bus", "containers", "show", "--json", run_id], env=env_a, secrets=secrets)
    assert shown.code == 0 and json.loads(shown.stdout)["id"] == run_id


def test_account_without_billing_gets_exit_5_and_no_process(emulator_factory, tmp_path):
    emulator = emulator_factory(config=BILLING_CONFIG)
    env, token, sub = account(emulator, tmp_path)
    emulator.set_plan(sub, "unbilled")
    before = emulator.stats()["processes_started"]
    got = run_cli(["bus", "containers", "run", "--", "sh", "-c", "echo should-not-run"],
                  env=env, secrets=(token,))
    assert got.code == 5
    assert "billing" in got.stderr.lower() and "http" in got.stderr  # guidance + url
    assert got.stdout == ""
    assert emulator.stats()["processes_started"] == before
    assert emulator.attempts("POST", "/api/v1/containers/runs") == 1  # no retry on 402


def test_quota_exhausted_gets_exit_5(emulator_factory, tmp_path):
    emulator = emulator_factory(config=BILLING_CONFIG)
    env, token, sub = account(emulator, tmp_path)
    emulator.set_plan(sub, "tiny")
    first = run_cli(["bus", "containers", "run", "--", "true"], env=env, secrets=(token,))
    assert first.code == 0
    second = run_cli(["bus", "containers", "run", "--json", "--", "true"], env=env,
                     secrets=(token,))
    assert second.code == 5
    error = json.loads(second.stderr)["error"]
    assert error["code"] == "quota_exhausted" and error["exit_code"] == 5
    assert emulator.stats()["processes_started"] == 1


def test_server_side_timeout_gives_124_and_leaves_no_process(emulator, tmp_path):
    env, token, _ = account(emulator, tmp_path)
    got = run_cli(["bus", "containers", "run", "--run-timeout", "1", "--",
                   "sh", "-c", "sleep 60 & sleep 60"], env=env, secrets=(token,))
    assert got.code == 124
    assert "timed out; exiting with 124" in got.stderr
    assert emulator.stats()["processes_running"] == 0
    assert emulator.descendants() == {}


def test_cli_timeout_gives_124_names_the_run_and_it_keeps_going(emulator, tmp_path):
    env, token, _ = account(emulator, tmp_path)
    got = run_cli(["bus", "containers", "run", "--timeout", "2", "--", "sleep", "30"],
                  env=env, secrets=(token,))
    assert got.code == 124
    run_id = re.search(r"\brun_[0-9a-f]+", got.stderr).group(0)
    assert f"bus containers delete {run_id}" in got.stderr
    shown = run_cli(["bus", "containers", "show", "--json", run_id], env=env, secrets=(token,))
    assert json.loads(shown.stdout)["status"] == "running"
    assert run_cli(["bus", "containers", "delete", run_id], env=env, secrets=(token,)).code == 0
    assert emulator.stats()["processes_running"] == 0


def test_output_over_the_cap_is_truncated_and_flagged(emulator_factory, tmp_path):
    emulator = emulator_factory(config="[emulator]\noutput_cap_bytes = 1000\n")
    env, token, _ = account(emulator, tmp_path)
    got = run_cli(["bus", "containers", "run", "--json", "--",
                   "sh", "-c", "head -c 5000 /dev/zero | tr '\\0' x"], env=env,
                  secrets=(token,))
    run = json.loads(got.stdout)
    assert got.code == 0 and run["output_truncated"] is True
    assert 0 < len(run["stdout"]) <= 1000
    human = run_cli(["bus", "containers", "run", "--", "sh", "-c",
                     "head -c 5000 /dev/zero | tr '\\0' x"], env=env, secrets=(token,))
    assert "truncated" in human.stderr and len(human.stdout) <= 1000


@pytest.mark.parametrize("fault", [
    {"action": "status", "status": 503},
    {"action": "status", "status": 503, "retry_after": "1"},
    {"action": "status", "status": 429, "code": "rate_limited", "retry_after": "1"},
    {"action": "drop"},
], ids=["503", "503-retry-after", "429-rate-limited", "dropped-connection"])
def test_transient_faults_are_survived(emulator, tmp_path, fault):
    env, token, _ = account(emulator, tmp_path)
    emulator.add_faults([{"method": "GET", "path_prefix": "/api/v1/containers/status",
                          "count": 1, **fault}])
    got = run_cli(["bus", "containers", "status"], env=env, secrets=(token,))
    assert (got.code, got.stdout.splitlines()[0]) == (0, "ready")
    assert emulator.attempts("GET", "/api/v1/containers/status") == 2


def test_a_retried_create_starts_one_run(emulator, tmp_path):
    env, token, _ = account(emulator, tmp_path)
    emulator.add_faults([{"method": "POST", "path_prefix": "/api/v1/containers/runs",
                          "count": 2, "action": "status", "status": 503}])
    got = run_cli(["bus", "containers", "run", "--json", "--", "sh", "-c", "printf once"],
                  env=env, secrets=(token,))
    assert got.code == 0 and json.loads(got.stdout)["stdout"] == "once"
    listed = run_cli(["bus", "containers", "runs", "--json"], env=env, secrets=(token,))
    assert len(json.loads(listed.stdout)) == 1


BROKEN_PLUGIN = """
import pluggy
hookimpl = pluggy.HookimplMarker("bus")

@hookimpl
def register_commands(cli):
    raise RuntimeError("this plugin is broken on purpose")
"""


def test_a_broken_plugin_next_to_ours_does_not_break_bus_containers(emulator, tmp_path):
    site = tmp_path / "site"
    (site / "brokenplug").mkdir(parents=True)
    (site / "brokenplug" / "__init__.py").write_text(BROKEN_PLUGIN)
    dist = site / "brokenplug-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: brokenplug\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[bus.plugins]\nbroken = brokenplug\n")
    env, token, _ = account(emulator, tmp_path)
    env["PYTHONPATH"] = str(site)

    status = run_cli(["bus", "containers", "status"], env=env, secrets=(token,))
    assert status.code == 0 and status.stdout.startswith("ready")
    assert "broken" in status.stderr and "warning" in status.stderr

    listed = run_cli(["bus", "plugins", "--json"], env=env, secrets=(token,))
    by_name = {p["name"]: p for p in json.loads(listed.stdout)}
    assert by_name["containers"]["loaded"] is True
    assert by_name["broken"]["loaded"] is False
    assert "broken on purpose" in by_name["broken"]["error"]


def test_20_cli_processes_at_once_for_3_accounts(emulator, tmp_path):
    """Twenty `bus containers run` processes at once, from three accounts: every run is
    accounted for, each visible only to its owner, and no process is left behind."""
    import subprocess

    from tests.support.cli import BIN

    accounts = [account(emulator, tmp_path, f"acct{n}") for n in range(3)]
    procs = []
    for i in range(20):
        env, _, _ = accounts[i % 3]
        procs.append((i % 3, subprocess.Popen(
            [str(BIN / "bus"), "containers", "run", "--json", "--", "sh", "-c", f"echo {i}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    created: dict[int, set[str]] = {0: set(), 1: set(), 2: set()}
    for owner, proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        created[owner].add(json.loads(out)["id"])
    assert sum(len(ids) for ids in created.values()) == 20
    for owner, (env, token, _) in enumerate(accounts):
        listed = run_cli(["bus", "containers", "runs", "--json", "--limit", "100"], env=env,
                         secrets=(token,))
        assert {r["id"] for r in json.loads(listed.stdout)} == created[owner]
    assert emulator.stats()["processes_running"] == 0
    assert emulator.descendants() == {}
