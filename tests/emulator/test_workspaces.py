"""Work in, results out, on the emulator: workspace uploads (per account, verified, safe),
a run's stdin, its diff (`git apply` reproduces the run's changes) and its files."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest
import requests

from tests.emulator.helpers import Api, assert_error, output_of
from tests.support.emulator import module_emulator

CONFIG = """
[plans.small]
workspace_bytes = 4096
stdin_bytes = 100000
storage_bytes = 20000
"""


emu = module_emulator("emu", CONFIG)


def make_tar(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = mode
    return info, data


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return info, None


def upload(api: Api, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    r = api.request("PUT", f"/workspaces/{sha}", data=data,
                    headers={"Content-Type": "application/x-tar"})
    assert r.status_code == 201, r.text
    return sha


def sample_tree() -> bytes:
    return make_tar(file("edited.txt", b"committed\nedited\n"),
                    file("gone.txt", b"to be removed\n"),
                    file("run.sh", b"#!/bin/sh\necho hi\n", 0o755),
                    special("sub", tarfile.DIRTYPE),
                    file("sub/bin.dat", bytes(range(256)) * 4),
                    special("link", tarfile.SYMTYPE, "edited.txt"))


# -- uploads ------------------------------------------------------------------------------
def test_upload_is_per_account_and_verified(emu):
    alice, bob = Api(emu), Api(emu)
    data = sample_tree()
    sha = hashlib.sha256(data).hexdigest()
    assert alice.request("HEAD", f"/workspaces/{sha}").status_code == 404
    assert upload(alice, data) == sha
    head = alice.request("HEAD", f"/workspaces/{sha}")
    assert head.status_code == 200
    assert alice.get(f"/workspaces/{sha}").json() == {"sha256": sha, "files": 4,
                                                      "bytes": 17 + 14 + 18 + 1024}
    # Bob cannot learn that alice sent it, nor use it.
    assert_error(bob.get(f"/workspaces/{sha}"), 404, "not_found")
    assert bob.request("HEAD", f"/workspaces/{sha}").status_code == 404
    assert_error(bob.post_run(["true"], workspace=sha), 404, "not_found")
    # A body that does not hash to the URL's sha256 is refused and not stored.
    wrong = "0" * 64
    r = bob.request("PUT", f"/workspaces/{wrong}", data=data,
                    headers={"Content-Type": "application/x-tar"})
    assert "sha256" in assert_error(r, 400, "invalid_request")["message"]
    assert bob.request("HEAD", f"/workspaces/{wrong}").status_code == 404


def test_upload_over_the_plan_is_413_with_the_limit(emu):
    small = Api(emu)
    emu.set_plan(small.sub, "small")
    data = make_tar(file("big", b"x" * 5000))
    sha = hashlib.sha256(data).hexdigest()
    r = small.request("PUT", f"/workspaces/{sha}", data=data,
                      headers={"Content-Type": "application/x-tar"})
    assert "4096" in assert_error(r, 413, "too_large")["message"]


TAR_SLIPS = {
    "dotdot": [file("../x", b"evil")],
    "absolute": [file("/etc/x", b"evil")],
    "symlink to / then through it": [special("root", tarfile.SYMTYPE, "/"),
                                     file("root/etc/x", b"evil")],
    "symlink out then through it": [special("up", tarfile.SYMTYPE, "../.."),
                                    file("up/x", b"evil")],
    "link chain": [special("here", tarfile.SYMTYPE, "."),
                   special("here/out", tarfile.SYMTYPE, "../outside")],
    "hard link out": [special("h", tarfile.LNKTYPE, "../../etc/passwd")],
    "relative link out of a subdirectory": [special("a", tarfile.DIRTYPE),
                                            special("a/b", tarfile.DIRTYPE),
                                            special("a/b/l", tarfile.SYMTYPE, "../../../x")],
    # Lands as a/l: its target counts from a, not from a/l (tarfile's filter missed it).
    "link named with a trailing slash": [special("a", tarfile.DIRTYPE),
                                         special("a/l/", tarfile.SYMTYPE, "../../x")],
    "link named with a trailing /.": [special("a", tarfile.DIRTYPE),
                                      special("a/l/.", tarfile.SYMTYPE, "../../x")],
    "device node": [special("dev", tarfile.CHRTYPE)],
    "fifo": [special("fifo", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("members", TAR_SLIPS.values(), ids=TAR_SLIPS.keys())
def test_unsafe_uploads_are_refused(emu, members):
    api = Api(emu)
    data = make_tar(file("ok.txt", b"fine"), *members)
    sha = hashlib.sha256(data).hexdigest()
    r = api.request("PUT", f"/workspaces/{sha}", data=data,
                    headers={"Content-Type": "application/x-tar"})
    assert "refused" in assert_error(r, 422, "invalid_workspace")["message"]
    assert api.request("HEAD", f"/workspaces/{sha}").status_code == 404
    # (the sandbox's root skeleton has a dev/ of its own, built at startup)
    landed = [p for p in emu.state_dir.glob("**/dev") if "sandbox-skeleton" not in p.parts]
    assert not list(emu.state_dir.glob("**/x")) and not landed


def test_a_tar_bomb_stops_at_the_limit(emu):
    small = Api(emu)
    emu.set_plan(small.sub, "small")
    # A sparse-looking bomb: tiny on the wire, a huge declared size.
    info = tarfile.TarInfo("bomb")
    info.size = 10**12
    header = info.tobuf(tarfile.PAX_FORMAT)
    sha = hashlib.sha256(header).hexdigest()
    r = small.request("PUT", f"/workspaces/{sha}", data=header,
                      headers={"Content-Type": "application/x-tar"})
    assert "4096 bytes" in assert_error(r, 422, "invalid_workspace")["message"]


# -- runs with a workspace ---------------------------------------------------------------
SCRIPT = ("cat edited.txt; ls; echo new > made.txt; rm gone.txt; echo more >> edited.txt; "
          "chmod +x edited.txt; mv sub/bin.dat sub/moved.dat; printf '\\0\\1\\2' > b.bin; "
          "ln -s /etc/passwd escape; pwd")


def test_run_sees_the_tree_and_its_diff_reproduces_the_changes(emu, tmp_path):
    api = Api(emu)
    data = sample_tree()
    sha = upload(api, data)
    run = api.run(["sh", "-c", SCRIPT], workspace=sha,
                  workspace_info={"base_commit": "abc1234", "dirty": True})
    assert run["status"] == "succeeded", run
    assert run["stdout"].startswith("committed\nedited\n")
    assert "gone.txt" in run["stdout"] and "run.sh" in run["stdout"]
    if "isolation: none" not in api.get("/status").json()["message"]:
        assert run["stdout"].endswith("\n/workspace\n")  # the sandbox mounts it there
    assert run["workspace"] == {"sha256": sha, "files": 4, "bytes": 1073,
                                "base_commit": "abc1234", "dirty": True}

    r = api.get(f"/runs/{run['id']}/workspace/diff")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/x-diff")
    patch = r.content
    assert b"GIT binary patch" in patch and b"rename from sub/bin.dat" in patch

    # Apply it to a clean copy of what was sent: the result is the run's final tree.
    clean = tmp_path / "clean"
    clean.mkdir()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(clean, filter="data")
    subprocess.run(["git", "init", "-q"], cwd=clean, check=True)
    subprocess.run(["git", "apply", "-"], input=patch, cwd=clean, check=True)
    shutil.rmtree(clean / ".git")
    final = tmp_path / "final"
    final.mkdir()
    r = api.get(f"/runs/{run['id']}/workspace/archive", params={"path": "."})
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        tar.extractall(final, filter="fully_trusted")  # our own tree, compared below
    assert snapshot(clean) == snapshot(final)
    # The run's link to /etc/passwd came back as a link, not as the host's file.
    assert os.readlink(final / "escape") == "/etc/passwd"


def snapshot(root: Path) -> dict[str, tuple]:
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_file():
            out[rel] = ("file", path.read_bytes(), os.access(path, os.X_OK))
    return out


def test_archive_of_one_file_and_refusals(emu):
    api, other = Api(emu), Api(emu)
    sha = upload(api, sample_tree())
    run = api.run(["sh", "-c", "echo made > made.txt; ln -s /etc escape; mkdir -p d/e; "
                   "echo deep > d/e/f.txt"], workspace=sha)
    rid = run["id"]
    r = api.get(f"/runs/{rid}/workspace/archive", params={"path": "made.txt"})
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        assert tar.getnames() == ["made.txt"]
        assert tar.extractfile("made.txt").read() == b"made\n"
    # Named by the last part, as docker cp names a copy (never the parents d/e).
    for path, names in [("d/e/f.txt", ["f.txt"]), ("/workspace/d/e", ["e", "e/f.txt"])]:
        r = api.get(f"/runs/{rid}/workspace/archive", params={"path": path})
        with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
            assert tar.getnames() == names
    r = api.get(f"/runs/{rid}/workspace/archive", params={"path": "/workspace/made.txt"})
    assert r.status_code == 200
    assert_error(api.get(f"/runs/{rid}/workspace/archive", params={"path": "nope"}),
                 404, "not_found")
    assert_error(api.get(f"/runs/{rid}/workspace/archive", params={"path": "made.txt/"}),
                 404, "not_found")  # a trailing / names a directory, as for cp
    assert_error(api.get(f"/runs/{rid}/workspace/archive", params={"path": "../x"}),
                 400, "invalid_request")
    # Through the run's link to /etc: not followed.
    assert_error(api.get(f"/runs/{rid}/workspace/archive", params={"path": "escape/passwd"}),
                 404, "not_found")
    # Another account sees nothing.
    assert_error(other.get(f"/runs/{rid}/workspace/diff"), 404, "not_found")
    assert_error(other.get(f"/runs/{rid}/workspace/archive"), 404, "not_found")


def test_before_the_end_is_409_and_delete_removes_the_tree(emu):
    api = Api(emu)
    sha = upload(api, sample_tree())
    r = api.post_run(["sleep", "30"], workspace=sha)
    rid = r.json()["id"]
    assert_error(api.get(f"/runs/{rid}/workspace/diff"), 409, "run_not_finished")
    assert_error(api.get(f"/runs/{rid}/workspace/archive"), 409, "run_not_finished")
    trees = [p for p in emu.state_dir.glob("workspaces/*/runs/*") if p.name == rid]
    assert trees and (trees[0] / "tree" / "edited.txt").is_file()
    assert api.request("DELETE", f"/runs/{rid}").status_code == 204
    assert not trees[0].exists()


def test_a_run_cannot_make_the_emulator_run_git_hooks_or_follow_its_links(emu, tmp_path):
    """The diff runs git (as the emulator's user) over a tree the run wrote: a .git of the
    run's own with an fsmonitor hook, a nested repository and a FIFO change nothing."""
    api = Api(emu)
    sha = upload(api, sample_tree())
    marker = tmp_path / "pwned"
    hook = f"[core]\\n\\tfsmonitor = touch {marker}\\n"
    script = (f"mkdir -p .git sub/.git && printf '{hook}' > .git/config && "
              f"printf '{hook}' > sub/.git/config && echo 'ref: refs/heads/x' > sub/.git/HEAD "
              "&& mkfifo pipe && echo changed > edited.txt")
    run = api.run(["sh", "-c", script], workspace=sha)
    assert run["status"] == "succeeded", run
    r = api.get(f"/runs/{run['id']}/workspace/diff")
    assert r.status_code == 200 and b"+changed" in r.content
    r = api.get(f"/runs/{run['id']}/workspace/archive", params={"path": "."})
    assert r.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        assert "pipe" not in tar.getnames()  # a FIFO is not a file to send back
        assert b"fsmonitor = touch" in tar.extractfile(".git/config").read()  # it was set
    assert not marker.exists()


def test_a_run_without_workspace_has_no_diff(emu):
    api = Api(emu)
    run = api.run(["true"])
    assert "workspace" not in run
    assert_error(api.get(f"/runs/{run['id']}/workspace/diff"), 404, "not_found")


# -- stdin ---------------------------------------------------------------------------------
def put_stdin(api: Api, run_id: str, body) -> int:
    return api.request("PUT", f"/runs/{run_id}/stdin", data=body,
                       headers={"Content-Type": "application/octet-stream"}).status_code


def test_stdin_streams_exact_bytes(emu):
    api = Api(emu)
    data = os.urandom(3 * 1024 * 1024 + 7)
    r = api.post_run(["sha256sum"], stdin=True, wait=5)
    assert r.status_code == 202  # a run waiting for stdin does not hold the answer
    rid = r.json()["id"]
    chunks = (data[i:i + 100_000] for i in range(0, len(data), 100_000))  # chunked upload
    assert put_stdin(api, rid, chunks) == 204
    run = api.wait(rid)
    assert run["stdout"].split()[0] == hashlib.sha256(data).hexdigest()
    assert_error(api.request("PUT", f"/runs/{rid}/stdin", data=b"again"), 409, "conflict")


def test_empty_stdin_and_a_run_without_stdin(emu):
    api = Api(emu)
    rid = api.post_run(["wc", "-c"], stdin=True).json()["id"]
    assert put_stdin(api, rid, b"") == 204
    assert api.wait(rid)["stdout"].strip() == "0"
    plain = api.run(["true"])
    assert_error(api.request("PUT", f"/runs/{plain['id']}/stdin", data=b"x"), 409, "conflict")
    assert_error(Api(emu).request("PUT", f"/runs/{rid}/stdin", data=b"x"), 404, "not_found")


def test_stdin_has_back_pressure_and_a_command_may_stop_reading(emu):
    api = Api(emu)
    rid = api.post_run(["head", "-c", "10"], stdin=True).json()["id"]
    # Far more than head reads: the server stops writing at EPIPE and says 204.
    big = (b"y" * 65536 for _ in range(200))
    try:
        status = put_stdin(api, rid, big)
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
        status = 204  # the server may close before the body ends
    assert status == 204
    run = api.wait(rid)
    assert run["stdout"] == "y" * 10 and run["status"] == "succeeded"


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "with-length"])
def test_stdin_over_the_plan_stops_the_run(emu, declared):
    api = Api(emu)
    emu.set_plan(api.sub, "small")
    rid = api.post_run(["cat"], stdin=True).json()["id"]
    body = b"z" * 150_000 if declared else (b"z" * 50_000 for _ in range(3))
    r = api.request("PUT", f"/runs/{rid}/stdin", data=body)
    assert "100000" in assert_error(r, 413, "too_large")["message"]
    run = api.wait(rid)
    assert run["status"] == "cancelled"
    assert "limit" in output_of(api.logs(run["id"]), "stderr").decode()


def test_stdin_sent_before_the_process_starts_waits_for_it(emu):
    api = Api(emu)
    rid = api.post_run(["cat"], stdin=True).json()["id"]
    got = []
    t = threading.Thread(target=lambda: got.append(put_stdin(api, rid, b"early\n")))
    t.start()
    t.join(20)
    assert got == [204]
    assert api.wait(rid)["stdout"] == "early\n"


def test_a_restart_keeps_only_the_trees_of_runs_the_store_has(tmp_path):
    from bus_containers.emulator.workspaces import Workspaces

    spaces = Workspaces(tmp_path)
    data = sample_tree()
    sha = hashlib.sha256(data).hexdigest()
    spaces.store("alice", sha, [data], len(data), max_bytes=None, max_files=None,
                 storage_bytes=None)
    for run_id in ("run_kept", "run_gone"):
        spaces.prepare_run("alice", run_id, sha)
    spaces.sweep(lambda owner, run_id: (owner, run_id) == ("alice", "run_kept"))
    assert spaces.has_tree("alice", "run_kept")
    assert not spaces.run_dir("alice", "run_gone").exists()
