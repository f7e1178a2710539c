"""The sandbox without HTTP: the workspace mount for the runner's callers, the cgroup
bookkeeping, uid allocation. Real processes where a process is what is tested."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bus_containers.emulator import cgroups
from bus_containers.emulator import sandbox as sandbox_mod
from bus_containers.emulator.cgroups import Cgroups
from bus_containers.emulator.config import ConfigError, Limits, Profile
from bus_containers.emulator.sandbox import LaunchSpec, Sandbox


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    box = Sandbox(tmp_path_factory.mktemp("state"))
    if box.mode == "none":  # pragma: no cover - this machine class has namespaces
        pytest.fail(f"namespaces are expected to work here: {box.describe()}")
    yield box
    box.close()


def launch(box: Sandbox, command: list[str], **kw) -> subprocess.CompletedProcess:
    spec = LaunchSpec(tuple(command), **kw)
    prepared = box.prepare("run_test", Profile("test"), spec)
    try:
        return subprocess.run(prepared.argv, env=prepared.env, cwd=prepared.cwd,
                              stdin=spec.stdin_fd if spec.stdin_fd is not None
                              else subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=30, preexec_fn=prepared.child_setup())
    finally:
        prepared.release()


def test_workspace_is_mounted_read_write_as_the_cwd_and_handed_back(sandbox, tmp_path):
    ws = tmp_path / "a work space"  # blanks are escaped in the mount table
    ws.mkdir()
    (ws / "input.txt").write_text("from the host\n")
    done = launch(sandbox, ["sh", "-c", "pwd; cat input.txt; echo made > output.txt; "
                                        "mkdir sub && echo x > sub/y"],
                  workspace_dir=str(ws))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "/workspace\nfrom the host\n"
    assert (ws / "output.txt").read_text() == "made\n"
    # files the run made belong to the emulator's user again once the run is over
    owners = {p.stat().st_uid for p in [ws, *ws.rglob("*")]}
    assert owners == {os.getuid()}


def test_stdin_can_be_a_pipe(sandbox):
    read, write = os.pipe()
    os.write(write, b"hello from stdin\n")
    os.close(write)
    try:
        done = launch(sandbox, ["cat"], stdin_fd=read)
    finally:
        os.close(read)
    assert done.stdout == "hello from stdin\n"


def test_a_missing_command_is_127_with_a_message(sandbox):
    done = launch(sandbox, ["no-such-binary-xyz"])
    assert done.returncode == 127
    assert "cannot execute 'no-such-binary-xyz'" in done.stderr


@pytest.mark.parametrize("command", ["/etc/passwd", "/tmp"])
def test_a_command_that_is_not_executable_is_126_in_the_same_words(sandbox, command):
    done = launch(sandbox, [command])
    assert done.returncode == 126
    assert done.stderr == (f"bus-containers-emulator: cannot execute '{command}': "
                           "Permission denied\n")


def test_no_user_namespace_can_be_made_inside_a_run(sandbox):
    done = launch(sandbox, ["sh", "-c", "cat /proc/sys/user/max_user_namespaces; id -u; "
                                        "unshare -Urm true 2>&1; echo $?"])
    limit, uid, *rest = done.stdout.splitlines()
    assert limit == "0" and rest[-1] != "0", done.stdout
    # As root the run keeps its own uid (its user namespace maps it to itself).
    assert int(uid) >= sandbox_mod.RUN_UID_FIRST if sandbox.mode == "uid" else uid == "0"


def test_run_uids_are_unused_and_released(sandbox):
    if sandbox.mode != "uid":  # pragma: no cover - root here
        pytest.skip("per-run uids need root")
    a, b = sandbox._allocate_uid(), sandbox._allocate_uid()
    assert a != b and min(a, b) >= sandbox_mod.RUN_UID_FIRST
    sandbox._release_uid(a)
    sandbox._release_uid(b)
    assert not sandbox._uids


TOTALS = cgroups.Totals(memory=1000, processes=100, account_memory=500, account_processes=50)


def test_cgroup_bookkeeping_totals_and_account_cgroups(tmp_path):
    # Directories stand in for cgroupfs: only the bookkeeping is tested here; the limits
    # themselves are, end to end, below and by the memory hog test (cgroup v1 here).
    hierarchies = tmp_path / "memory", tmp_path / "pids"
    for hierarchy in hierarchies:
        hierarchy.mkdir()
    bases = tuple(cgroups._make_base(h, "tag.mine") for h in hierarchies)
    made = Cgroups(1, bases, TOTALS)
    (bases[0] / "memory.limit_in_bytes").write_text("")  # only files the kernel made
    made._limit(bases[0], TOTALS.memory, TOTALS.processes)
    assert (bases[0] / "memory.limit_in_bytes").read_text() == "1000"
    assert not (bases[0] / "pids.max").exists()
    first = made.create("run_y", 1234, 7, account="alice")
    second = made.create("run_z", 1234, 7, account="alice")
    other = made.create("run_w", 1234, 7, account="bob")
    assert [p.parent for p in first] == [p.parent for p in second] != [p.parent for p in other]
    assert all(p.parent.parent in bases and p.is_dir() for p in first + other)
    cgroups.remove(first)
    assert all(p.parent.is_dir() for p in first)  # run_z of alice is still there
    cgroups.remove(second + other)
    assert not any(p.parent.exists() for p in first + other)
    (bases[0] / "memory.limit_in_bytes").unlink()  # cgroupfs files do not stop rmdir
    cgroups.close(bases)
    assert not any(b.exists() for b in bases)


def test_only_a_dead_emulators_own_leftovers_are_removed(tmp_path):
    me, started = os.getpid(), cgroups.start_time(os.getpid())
    live = subprocess.Popen(["sleep", "30"])
    try:
        names = {
            "dead": f"{cgroups.PREFIX}999999999.1.tag.x",
            "reused_pid": f"{cgroups.PREFIX}{live.pid}.1.tag.x",  # pid alive, not the emulator
            "alive": f"{cgroups.PREFIX}{live.pid}.{cgroups.start_time(live.pid)}.tag.x",
            "other_pid_namespace": f"{cgroups.PREFIX}999999999.1.other.x",
            "old_style": f"{cgroups.PREFIX}999999998",
            "other_user": f"{cgroups.PREFIX}999999997.1.tag.x",
        }
        for name in names.values():
            (tmp_path / name / "acct-x" / "run-old").mkdir(parents=True)
        os.chown(tmp_path / names["other_user"], 12345, 12345)
        base = cgroups._make_base(tmp_path, "tag.mine")
        assert base.name == f"{cgroups.PREFIX}{me}.{started}.tag.mine"
        left = {k for k, name in names.items() if (tmp_path / name).exists()}
        assert left == {"alive", "other_pid_namespace", "old_style", "other_user"}
    finally:
        live.kill()
        live.wait()


def test_an_accounts_runs_together_stay_under_its_process_total(tmp_path):
    limits = Limits(account_processes=24)
    box = Sandbox(tmp_path, limits)
    try:
        if box.cgroups is None:  # pragma: no cover - this machine class has cgroups
            pytest.skip(box.cgroup_reason)
        holder = box.prepare("run_a", Profile("test"), LaunchSpec(
            ("sh", "-c", "for i in $(seq 16); do sleep 30 & done; echo up; wait"),
            account="alice"))
        first = subprocess.Popen(holder.argv, env=holder.env, cwd=holder.cwd,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                 preexec_fn=holder.child_setup())
        try:
            assert first.stdout.readline() == b"up\n"
            flood = "n=0; for i in $(seq 16); do sleep 30 & n=$((n+1)); done 2>/dev/null; " \
                    "kill $(jobs -p) 2>/dev/null; echo ok"
            again = launch(box, ["sh", "-c", flood], account="alice")
            assert again.returncode != 0 or "ok" not in again.stdout  # fork refused
            assert launch(box, ["sh", "-c", flood], account="bob").stdout == "ok\n"
        finally:
            first.kill()
            first.wait()
            holder.release()
    finally:
        box.close()


def test_probe_failure_means_isolation_none(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox_mod, "TOOLS", ("no-such-tool-xyz",))
    box = Sandbox(tmp_path)
    assert box.describe() == "isolation: none (util-linux tool(s) not found: no-such-tool-xyz)"
    done = launch(box, ["sh", "-c", "echo plain"])
    assert done.stdout == "plain\n"


def test_required_isolation_refuses_to_start_without_it(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox_mod, "TOOLS", ("no-such-tool-xyz",))
    monkeypatch.setenv(sandbox_mod.ISOLATION_ENV, "required")
    with pytest.raises(ConfigError, match="runs cannot be isolated here: util-linux tool"):
        Sandbox(tmp_path)


def test_loopback_comes_up_without_iproute2(sandbox, monkeypatch):
    monkeypatch.setattr(sandbox, "_lo_tool", sys.executable)  # no `ip`: Python's ioctl
    done = launch(sandbox, ["python3", "-c", "import socket; s = socket.socket(); "
                                             "s.bind(('127.0.0.1', 0)); s.listen(); "
                                             "socket.create_connection(s.getsockname()); "
                                             "print('lo up')"])
    assert done.stdout == "lo up\n", done.stderr


def test_the_root_skeleton_is_copied_read_only_and_names_no_host_path(sandbox):
    # The skeleton (built once, at startup) is shared by all runs: a run must neither change
    # it nor learn where it is; the per-run mount table goes with the run.
    skeleton = sandbox._skeleton_dir
    before = sorted((str(p), p.lstat().st_mode, p.lstat().st_mtime_ns)
                    for p in skeleton.rglob("*"))
    done = launch(sandbox, ["sh", "-c", "rm -f /dev/fd /var/tmp; touch /x /dev/x /proc/../y; "
                                        "ln -s / /bin2; cat /proc/self/mountinfo"])
    assert str(skeleton.parent) not in done.stdout + done.stderr
    assert " / / ro," in done.stdout  # the root itself, read-only
    assert sorted((str(p), p.lstat().st_mode, p.lstat().st_mtime_ns)
                  for p in skeleton.rglob("*")) == before
    assert launch(sandbox, ["sh", "-c", "ls -l /dev/fd /var/tmp >/dev/null && ls -a / "
                                        "| grep -cx x"]).stdout == "0\n"


def test_where_nested_user_namespaces_cannot_be_turned_off_runs_still_run(tmp_path,
                                                                         monkeypatch):
    # Stands in for a kernel that refuses the write (e.g. AppArmor's restriction of
    # unprivileged user namespaces): the probe falls back, says why, and runs work.
    monkeypatch.setattr(sandbox_mod, "INIT_SCRIPT", sandbox_mod.INIT_SCRIPT.replace(
        "/proc/sys/user/max_user_namespaces", "/proc/sys/user/no-such-limit"))
    box = Sandbox(tmp_path)
    try:
        assert box.mode != "none", box.describe()
        assert box.nested_userns.startswith("the kernel refused to turn them off: ")
        assert box._devpts  # the strictest setup that works: ptys kept
        assert launch(box, ["echo", "ran"]).stdout == "ran\n"
    finally:
        box.close()


def test_the_cgroup_tag_differs_in_another_pid_namespace(tmp_path):
    # A pid is judged alive or dead only in its own namespace: another one's leftovers
    # (e.g. of an emulator in another container) are never ours to remove.
    here = cgroups.namespace_tag()
    there = subprocess.run(
        ["unshare", "--pid", "--fork", sys.executable, "-c",
         "import sys; from bus_containers.emulator import cgroups; "
         "print(cgroups.namespace_tag())"],
        capture_output=True, text=True, timeout=30)
    assert there.stdout.strip() and there.stdout.strip() != here, there.stderr
