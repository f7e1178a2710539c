"""The client's side of workspaces: which files go (git-aware), the deterministic tar, the
size check before any upload, and safe unpacking of downloads (`cp`)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from bus_containers import errors as e
from bus_containers import workspace as ws
from bus_containers.download import extract_download
from tests.support.gitrepo import dirty_repo, git

from .helpers import BASE


@pytest.fixture
def repo(tmp_path) -> Path:
    return dirty_repo(tmp_path / "repo", {"committed.txt": "v1\n", "run.sh": "#!/bin/sh\n"},
                      then={"committed.txt": "v2, not committed\n", "new.txt": "untracked\n",
                            "debug.log": "ignored\n", "build/out.o": "ignored too\n"},
                      ignore="*.log\nbuild/\n", executable=("run.sh",))


def members(tree: ws.Tree) -> dict[str, tarfile.TarInfo]:
    buf = io.BytesIO()
    ws.write_tar(tree, buf)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        return {m.name: m for m in tar.getmembers()}


def sha_of(path: Path) -> str:
    with ws.packed(ws.collect(path)) as (sha, _size, _f):
        return sha


def test_git_tree_sends_tracked_and_untracked_not_ignored(repo):
    tree = ws.collect(repo)
    names = [x.path for x in tree.entries]
    assert names == [".gitignore", "committed.txt", "new.txt", "run.sh"]
    assert tree.dirty is True and len(tree.base_commit or "") == 40
    got = members(tree)
    assert got["run.sh"].mode == 0o755 and got["committed.txt"].mode & 0o111 == 0
    assert all(m.mtime == 0 and m.uid == 0 and m.uname == "" for m in got.values())


def test_same_tree_same_sha_whatever_the_times(repo):
    first = sha_of(repo)
    os.utime(repo / "committed.txt", (1, 1))
    assert sha_of(repo) == first
    (repo / "committed.txt").write_text("v3\n")
    assert sha_of(repo) != first


def test_clean_repo_is_not_dirty(tmp_path):
    root = tmp_path / "clean"
    root.mkdir()
    git(root, "init", "-q")
    (root / "a").write_text("a")
    git(root, "add", ".")
    git(root, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "x")
    assert ws.collect(root).dirty is False


def test_outside_git_every_file_links_inside_kept_others_skipped(tmp_path):
    root = tmp_path / "plain"
    (root / "sub" / "empty").mkdir(parents=True)
    (root / "sub" / "f.txt").write_text("f")
    (root / "debug.log").write_text("not ignored outside git")
    (root / "inside").symlink_to("sub/f.txt")
    (root / "outside").symlink_to("/etc/passwd")
    (root / "up").symlink_to("../..")
    os.mkfifo(root / "fifo")
    tree = ws.collect(root)
    names = {x.path: x.kind for x in tree.entries}
    assert names == {"debug.log": "file", "inside": "link", "sub": "dir", "sub/empty": "dir",
                     "sub/f.txt": "file"}
    assert tree.base_commit is None and tree.dirty is None
    reasons = "\n".join(tree.skipped)
    assert "outside: a symbolic link to /etc/passwd" in reasons
    assert "up: a symbolic link to ../.." in reasons and "fifo: a special file" in reasons


def test_not_a_directory_is_a_usage_error(tmp_path):
    with pytest.raises(e.WorkspaceError) as info:
        ws.collect(tmp_path / "nope")
    assert info.value.exit_code == 2


def test_over_the_limit_is_refused_before_any_upload(requests_mock, client, repo):
    (repo / "big.bin").write_bytes(b"x" * 50_000)
    requests_mock.head(requests_mock_any(BASE + "/workspaces/"), status_code=404)
    requests_mock.get(BASE + "/usage", json={"limits": {"workspace_bytes": 20_000}})
    put = requests_mock.put(requests_mock_any(BASE + "/workspaces/"), status_code=201)
    with pytest.raises(e.TooLarge) as info:
        client.upload_workspace(repo)
    error = info.value
    assert error.limit == 20_000 and error.size > 50_000 and error.exit_code == 5
    assert error.biggest[0] == ("big.bin", 50_000)
    assert put.call_count == 0

    from bus_containers.render import Invocation, error_text

    text = error_text(error, Invocation())
    assert "the plan allows 19.5 KiB per workspace" in text and "big.bin" in text


def test_a_known_tree_is_not_sent_again(requests_mock, client, repo):
    requests_mock.head(requests_mock_any(BASE + "/workspaces/"), status_code=200)
    put = requests_mock.put(requests_mock_any(BASE + "/workspaces/"), status_code=201)
    sent = client.upload_workspace(repo)
    assert sent["uploaded"] is False and put.call_count == 0 and sent["files"] == 4


def requests_mock_any(prefix: str):
    import re

    return re.compile(re.escape(prefix) + ".*")


# -- downloads: nothing lands outside DEST ---------------------------------------------------
def crafted(*members: tuple[str, bytes, str]) -> bytes:
    """A tar of (name, type, linkname/data) members, for attacks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            data = None
            if kind == tarfile.REGTYPE:
                data = extra.encode()
                info.size = len(data)
            else:
                info.linkname = extra
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


SLIPS = {
    "dotdot": [("../x", tarfile.REGTYPE, "evil")],
    "absolute": [("/etc/x", tarfile.REGTYPE, "evil")],
    "symlink to / then through it": [("root", tarfile.SYMTYPE, "/"),
                                     ("root/tmp/x", tarfile.REGTYPE, "evil")],
    "relative link out then through it": [("up", tarfile.SYMTYPE, "../.."),
                                          ("up/x", tarfile.REGTYPE, "evil")],
    "link chain": [("here", tarfile.SYMTYPE, "."), ("here/out", tarfile.SYMTYPE, "../x")],
    "device node": [("dev", tarfile.CHRTYPE, "")],
    "fifo": [("fifo", tarfile.FIFOTYPE, "")],
    "hard link out": [("h", tarfile.LNKTYPE, "../../etc/passwd")],
    "relative link out of a subdirectory": [("a", tarfile.DIRTYPE, ""),
                                            ("a/b", tarfile.DIRTYPE, ""),
                                            ("a/b/l", tarfile.SYMTYPE, "../../../x")],
    "link named with a trailing slash": [("a", tarfile.DIRTYPE, ""),
                                         ("a/l/", tarfile.SYMTYPE, "../../x")],
}


@pytest.mark.parametrize("attack", SLIPS.values(), ids=SLIPS.keys())
def test_unsafe_downloads_are_refused(tmp_path, attack):
    dest = tmp_path / "dest"
    dest.mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    data = crafted(("ok.txt", tarfile.REGTYPE, "fine"), *attack)
    with pytest.raises(e.UnsafeArchive):
        extract_download(io.BytesIO(data), dest, ".")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing beside dest
    assert list(dest.iterdir()) == []  # and nothing half-written in it


def test_unsafe_download_through_the_client(requests_mock, client, tmp_path):
    requests_mock.get(BASE + "/runs/run_abc/workspace/archive",
                      content=crafted(("../escaped", tarfile.REGTYPE, "evil")))
    with pytest.raises(e.UnsafeArchive):
        client.download("run_abc", ".", tmp_path / "dest")
    assert not (tmp_path / "escaped").exists()


def test_cp_places_files_like_cp(tmp_path):
    one = crafted(("made.txt", tarfile.REGTYPE, "new\n"))
    extract_download(io.BytesIO(one), tmp_path / "renamed.txt", "made.txt")
    assert (tmp_path / "renamed.txt").read_text() == "new\n"
    into = tmp_path / "into"
    into.mkdir()
    extract_download(io.BytesIO(one), into, "sub/made.txt")
    assert (into / "made.txt").read_text() == "new\n"
    folder = crafted(("out", tarfile.DIRTYPE, ""), ("out/a", tarfile.REGTYPE, "a"))
    extract_download(io.BytesIO(folder), tmp_path / "copy", "out")
    assert (tmp_path / "copy" / "a").read_text() == "a"
    assert not list(tmp_path.glob(".bus-cp-*"))  # no staging dir left behind


def test_a_subdirectory_of_a_repo_says_how_to_apply_there(repo):
    (repo / "sub").mkdir()
    (repo / "sub" / "x.txt").write_text("x")
    assert ws.collect(repo / "sub").git_prefix == "sub"
    assert ws.collect(repo).git_prefix == ""

    from bus_containers.render import Invocation, Output

    err = io.StringIO()
    out = Output(err=err, invocation=Invocation(prog="bus containers"))
    out.changes_summary("run_abc", 3, "sub")
    out.changes_summary("run_abc", 1)
    assert err.getvalue().splitlines() == [
        "3 files changed; see: bus containers diff run_abc | git apply --directory=sub",
        "1 file changed; see: bus containers diff run_abc | git apply"]


def test_a_repository_git_refuses_to_read_is_an_error_not_every_file(tmp_path):
    root = tmp_path / "theirs"
    root.mkdir()
    git(root, "init", "-q")
    (root / ".gitignore").write_text(".env\n")
    (root / ".env").write_text("SECRET=1\n")
    if os.geteuid() != 0:
        pytest.skip("needs root to hand the repository to another user")
    os.chown(root, 65534, 65534)  # owned by someone else: git's safe.directory check
    with pytest.raises(e.WorkspaceError) as info:
        ws.collect(root)
    assert "dubious ownership" in info.value.message


def test_cp_over_something_it_cannot_replace_is_a_clear_error(tmp_path):
    folder = crafted(("out", tarfile.DIRTYPE, ""), ("out/a", tarfile.REGTYPE, "a"))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(e.WorkspaceError) as info:
        extract_download(io.BytesIO(folder), tmp_path / "afile", "out")
    assert "is not a directory; cannot copy the directory 'out' onto it" in info.value.message
    assert ".bus-cp" not in info.value.message  # the user's DEST, never a staging name
    assert not list(tmp_path.glob(".bus-cp-*"))
    with pytest.raises(e.WorkspaceError):
        extract_download(io.BytesIO(folder), tmp_path / "no" / "such" / "dir", "out")


def test_the_download_reader_gives_exact_bytes_however_it_is_cut():
    import random

    from bus_containers.transfer import _IterReader

    data = os.urandom(200_000)
    rng = random.Random(7)
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(data)), 15))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        reader = _IterReader(iter(pieces))
        got = []
        while piece := reader.read(rng.choice([1, 513, 10240, 70000])):
            got.append(piece)
        assert b"".join(got) == data
