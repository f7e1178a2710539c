"""Work in, results out, end to end (issue 10): the installed CLI and the reference host as
processes, against the real emulator over loopback. A git repo with a committed file, an
uncommitted edit, an untracked and an ignored file goes in; the run's changes come back as
a patch that `git apply` turns into the same tree, and files come back with `cp`."""

from __future__ import annotations

import hashlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from tests.support.cli import BIN, clean_env, run_cli
from tests.support.emulator import module_emulator
from tests.support.gitrepo import dirty_repo, git

pytestmark = pytest.mark.e2e

RUN_SCRIPT = "cat edited.txt; ls; echo new > made.txt; rm gone.txt"


emu = module_emulator("emu", "[plans.small]\nworkspace_bytes = 4000\n")


@pytest.fixture
def user(emu, tmp_path):
    """(env, token) of a fresh account, its token where `bus auth token` leaves it."""
    token = emu.token(f"io-{uuid.uuid4()}")
    config = tmp_path / "config"
    (config / "auth").mkdir(parents=True)
    (config / "auth" / "api-token").write_text(token + "\n")
    (config / "auth" / "api-token").chmod(0o600)
    return clean_env(BUS_API_BASE_URL=emu.url, BUS_CONFIG_DIR=str(config)), token


def make_repo(path: Path) -> Path:
    return dirty_repo(path, {"edited.txt": "committed\n", "gone.txt": "to remove\n",
                             "tool.sh": "#!/bin/sh\necho tool\n"},
                      then={"edited.txt": "committed\nuncommitted edit\n",
                            "untracked.txt": "untracked\n", "debug.log": "ignored\n"},
                      executable=("tool.sh",))


def tree_of(root: Path) -> dict[str, tuple]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] == ".git":
            continue
        if path.is_file():
            out[str(rel)] = (path.read_bytes(), os.access(path, os.X_OK))
    return out


RUN_ID = re.compile(r"run_[0-9a-f]{24}")


@pytest.mark.parametrize("prog", [["bus-containers"], ["bus", "containers"]],
                         ids=["standalone", "reference-host"])
def test_send_the_repo_get_a_patch_back(emu, user, tmp_path, prog):
    env, token = user
    repo = make_repo(tmp_path / "repo")
    secrets = (token,)

    def cli(*args: str, cwd: Path = repo):
        old = os.getcwd()
        os.chdir(cwd)
        try:
            return run_cli([*prog, *args], env=env, secrets=secrets)
        finally:
            os.chdir(old)

    ran = cli("run", "--workspace", ".", "--", "sh", "-c", RUN_SCRIPT)
    assert ran.code == 0, ran.stderr
    listing = ran.stdout.split("\n")
    assert ran.stdout.startswith("committed\nuncommitted edit\n")  # the edit went in
    assert "untracked.txt" in listing and "debug.log" not in listing  # ignored stayed out
    run_id = RUN_ID.search(ran.stderr).group(0)
    assert "sent" in ran.stderr and "+ uncommitted changes" in ran.stderr

    show = cli("show", "--json", run_id)
    workspace = __import__("json").loads(show.stdout)["workspace"]
    assert workspace["base_commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert workspace["dirty"] is True

    # The patch, applied to a clean copy of what was sent, gives the run's final tree.
    patch = cli("diff", run_id)
    assert patch.code == 0, patch.stderr
    clean = tmp_path / "clean"
    shutil.copytree(repo, clean, symlinks=True)
    (clean / "debug.log").unlink()
    subprocess.run(["git", "apply"], input=patch.stdout, text=True, cwd=clean, check=True)
    final = tmp_path / "final"
    assert cli("cp", f"{run_id}:.", str(final)).code == 0
    assert tree_of(clean) == tree_of(final)
    assert not (clean / "gone.txt").exists() and (clean / "made.txt").read_text() == "new\n"
    three_way = tmp_path / "three-way"
    shutil.copytree(repo, three_way, symlinks=True)
    (three_way / "debug.log").unlink()
    # A copied index has the old files' stat data: refresh it, as in the real repository.
    subprocess.run(["git", "update-index", "-q", "--refresh"], cwd=three_way)
    applied = subprocess.run(["git", "apply", "--3way"], input=patch.stdout, text=True,
                             cwd=three_way, capture_output=True)
    assert applied.returncode == 0, (applied.stderr, patch.stdout)
    assert tree_of(three_way) == tree_of(final)

    out = tmp_path / "out.txt"
    got = cli("cp", f"{run_id}:made.txt", str(out))
    assert got.code == 0, got.stderr
    assert out.read_text() == "new\n"

    # The same tree again: asked for (HEAD), not sent again.
    path = f"/api/v1/containers/workspaces/{workspace['sha256']}"
    puts = emu.attempts("PUT", path)
    again = cli("run", "-w", "--", "true")
    assert again.code == 0 and "not sent again" in again.stderr
    assert emu.attempts("PUT", path) == puts


def test_cp_while_running_says_to_wait_and_cp_to_stdout(emu, user, tmp_path):
    env, token = user
    tree = tmp_path / "plain"  # not a git repo: every file goes
    tree.mkdir()
    (tree / "a.txt").write_text("a\n")
    started = run_cli(["bus-containers", "run", "-d", "-w", str(tree), "--", "sleep", "30"],
                      env=env, secrets=(token,))
    run_id = started.stdout.strip()
    busy = run_cli(["bus-containers", "cp", f"{run_id}:a.txt", str(tmp_path / "x")],
                   env=env)
    assert busy.code == 1
    assert (f"{run_id} is still running; wait for it: bus-containers wait {run_id}"
            in busy.stderr)
    assert run_cli(["bus-containers", "delete", run_id], env=env).code == 0

    done = run_cli(["bus-containers", "run", "-w", str(tree), "--", "sh", "-c",
                    "echo b > b.txt"], env=env)
    run_id = RUN_ID.search(done.stderr).group(0)
    tar = subprocess.run([str(BIN / "bus-containers"), "cp", f"{run_id}:.", "-"], env=env,
                         capture_output=True, timeout=60)
    assert tar.returncode == 0, tar.stderr
    listed = subprocess.run(["tar", "-t"], input=tar.stdout, capture_output=True, check=True)
    assert sorted(listed.stdout.decode().split()) == ["a.txt", "b.txt"]


def test_cp_places_like_cp_and_never_through_a_link_or_over_a_device(emu, user, tmp_path):
    """The newcomer's findings (issue 10 follow-up), across processes: nested paths land by
    their own name, a link the run aimed at ~/.bashrc is refused, a FIFO DEST is never
    replaced, and `run -q -w` says nothing on stderr."""
    env, token = user
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("a\n")
    script = ("mkdir -p d/e w && echo deep > d/e/f.txt && ln -s ../.bashrc w/notes.txt "
              "&& echo z > z.txt")
    started = run_cli(["bus-containers", "run", "-q", "-d", "-w", str(tree), "--", "sh", "-c",
                       script], env=env, secrets=(token,))
    assert started.code == 0 and started.stderr == "", started.stderr  # -q: not a word
    run_id = started.stdout.strip()
    assert run_cli(["bus-containers", "wait", run_id], env=env).code == 0
    here = tmp_path / "here"
    (here / "sub").mkdir(parents=True)
    bashrc = here / ".bashrc"
    bashrc.write_text("mine\n")

    def cp(source: str, dest: str) -> tuple[int, str]:
        got = subprocess.run([str(BIN / "bus-containers"), "cp", f"{run_id}:{source}", dest],
                             env=env, cwd=here, capture_output=True, text=True, timeout=60)
        assert "Traceback" not in got.stderr and ".bus-cp" not in got.stderr, got.stderr
        return got.returncode, got.stderr

    assert cp("d/e/f.txt", "renamed.txt")[0] == 0
    assert cp("/workspace/d/e/f.txt", ".")[0] == 0
    assert cp("d/e", "sub")[0] == 0
    assert (here / "renamed.txt").read_text() == (here / "f.txt").read_text() == "deep\n"
    assert (here / "sub" / "e" / "f.txt").read_text() == "deep\n"
    assert not (here / "d").exists() and not (here / "renamed.txt").is_dir()

    code, err = cp("w", "out")
    assert code == 1 and "'notes.txt' points outside what is copied" in err
    assert not (here / "out").exists() and bashrc.read_text() == "mine\n"

    os.mkfifo(here / "fifo")
    code, err = cp("z.txt", "fifo")
    assert code == 2 and "'fifo' is a FIFO" in err
    assert (here / "fifo").is_fifo()
    code, err = cp("d", "renamed.txt")
    assert code == 2 and "'renamed.txt' is not a directory; cannot copy the directory" in err
    code, err = cp("z.txt", "newdir/")
    assert code == 2 and not (here / "newdir").exists()

    tar = subprocess.run([str(BIN / "bus-containers"), "cp", f"{run_id}:d/e/f.txt", "-"],
                         env=env, capture_output=True, timeout=60)
    listed = subprocess.run(["tar", "-t"], input=tar.stdout, capture_output=True, check=True)
    assert listed.stdout.decode().split() == ["f.txt"]  # the base name, as docker cp


STDIN_BYTES = int(os.environ.get("BUS_STDIN_TEST_BYTES", 50_000_000))


def test_stdin_streams_byte_exact_with_bounded_memory(user, tmp_path):
    """The acceptance check itself: 50 MB of random bytes (BUS_STDIN_TEST_BYTES to change)."""
    env, token = user
    data = tmp_path / "stdin.bin"
    with open(data, "wb") as f, open("/dev/urandom", "rb") as rnd:
        left = STDIN_BYTES
        while left:
            chunk = rnd.read(min(left, 1 << 20))
            f.write(chunk)
            left -= len(chunk)
    expected = hashlib.sha256(data.read_bytes()).hexdigest()

    def peak_rss_kb(argv: list[str], stdin_path: str) -> tuple[int, bytes, bytes]:
        # A wrapper process whose only child is the CLI: RUSAGE_CHILDREN is its peak.
        probe = ("import resource, subprocess, sys\n"
                 "with open(sys.argv[1], 'rb') as f:\n"
                 "    p = subprocess.run(sys.argv[2:], stdin=f, capture_output=True)\n"
                 "sys.stdout.buffer.write(p.stdout); sys.stderr.buffer.write(p.stderr)\n"
                 "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,"
                 " p.returncode, file=sys.stderr)\n")
        done = subprocess.run([sys.executable, "-c", probe, stdin_path, *argv], env=env,
                              capture_output=True, timeout=120)
        rss, code = done.stderr.decode().strip().splitlines()[-1].split()
        assert code == "0", done.stderr
        return int(rss), done.stdout, done.stderr

    cli = str(BIN / "bus-containers")
    idle, _, _ = peak_rss_kb([cli, "run", "--", "true"], os.devnull)
    busy, out, err = peak_rss_kb([cli, "run", "-i", "--", "sha256sum"], str(data))
    assert out.decode().split()[0] == expected, err
    assert (busy - idle) < 60 * 1024, f"stdin cost {(busy - idle) // 1024} MB over idle"
    assert token.encode() not in out + err

    empty, out, _ = peak_rss_kb([cli, "run", "-i", "--", "wc", "-c"], os.devnull)
    assert out.strip() == b"0"
    assert resource  # the probe uses it in the child


def test_ctrl_c_while_sending_stdin_detaches(user):
    """Our stdin still open (a producer that has not finished): Ctrl-C detaches as
    always, names the run, and the run gets EOF where the sending stopped."""
    env, token = user
    proc = subprocess.Popen([str(BIN / "bus-containers"), "run", "-i", "--", "sh", "-c",
                             "head -c 6; echo; cat > /dev/null; echo eof-seen"],
                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        proc.stdin.write(b"hello\n")
        proc.stdin.flush()
        # a CLI that never echoes must fail the test, not hang it
        watchdog = threading.Timer(60, proc.kill)
        watchdog.start()
        try:
            assert proc.stdout.readline() == b"hello\n"  # streamed while stdin is open
        finally:
            watchdog.cancel()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    text = err.decode()
    run_id = re.search(r"Detached from run (run_[0-9a-f]+)", text).group(1)
    assert "Traceback" not in text and token not in text
    done = run_cli(["bus-containers", "wait", run_id], env=env)
    assert done.code == 0  # the connection went with us: the command saw EOF and ended
    logs = run_cli(["bus-containers", "logs", run_id], env=env)
    assert logs.stdout.endswith("eof-seen\n")


def test_detach_with_stdin_sends_it_all_first(user):
    env, token = user
    started = run_cli(["bus-containers", "run", "-d", "-i", "--", "cat"], env=env,
                      input="all of it\n", secrets=(token,))
    assert started.code == 0, started.stderr
    run_id = started.stdout.strip()
    assert run_cli(["bus-containers", "wait", run_id], env=env).code == 0
    assert run_cli(["bus-containers", "logs", run_id], env=env).stdout == "all of it\n"


def test_over_the_plan_is_said_before_any_upload(emu, tmp_path):
    sub = f"io-{uuid.uuid4()}"
    emu.set_plan(sub, "small")
    env = clean_env(BUS_API_BASE_URL=emu.url, BUS_AI_TOKEN=emu.token(sub))
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "big.bin").write_bytes(b"x" * 9000)
    (tree / "small.txt").write_text("s")
    emu.reset_counters()
    got = run_cli(["bus-containers", "run", "-w", str(tree), "--", "true"], env=env)
    assert got.code == 5
    assert "the plan allows 3.9 KiB per workspace" in got.stderr
    assert got.stderr.index("big.bin") < got.stderr.index("small.txt")  # biggest first
    puts = [k for k in emu.stats()["attempts"] if k.startswith("PUT /api/v1/containers/work")]
    assert not puts
