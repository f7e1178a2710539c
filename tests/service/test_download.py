"""Where `cp RUN:PATH DEST` puts things, as `cp -r` / `docker cp` would: named by PATH's
last part, never through a link out of what is copied, never over a device, a FIFO or a
socket, and errors that name the user's DEST (never a staging name)."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from bus_containers import errors as e
from bus_containers.download import extract_download


def tar_of(*members: tuple[str, bytes, str | bytes]) -> io.BytesIO:
    """(name, type, data or link target) -> an uncompressed tar, as the server sends."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            body = None
            if kind == tarfile.REGTYPE:
                body = io.BytesIO(extra)
                info.size = len(extra)
            elif kind == tarfile.SYMTYPE:
                info.linkname = extra
            tar.addfile(info, body)
    return io.BytesIO(buf.getvalue())


FILE = ("f.txt", tarfile.REGTYPE, b"new\n")  # what the server sends for d/e/f.txt
FOLDER = (("e", tarfile.DIRTYPE, b""), ("e/f.txt", tarfile.REGTYPE, b"new\n"))


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def no_staging_left(root: Path) -> bool:
    return not [p for p in root.rglob(".bus-cp-*")]


@pytest.mark.parametrize("source", ["d/e/f.txt", "/workspace/d/e/f.txt", "./d//e/f.txt"])
def test_a_nested_file_lands_by_its_own_name(tmp_path, monkeypatch, source):
    monkeypatch.chdir(tmp_path)
    assert extract_download(tar_of(FILE), "renamed.txt", source) == ["renamed.txt"]
    assert (tmp_path / "renamed.txt").read_bytes() == b"new\n"
    extract_download(tar_of(FILE), ".", source)
    assert (tmp_path / "f.txt").read_bytes() == b"new\n"
    assert listing(tmp_path) == ["f.txt", "renamed.txt"]  # no d/e rebuilt anywhere


def test_a_nested_folder_goes_into_an_existing_one_or_becomes_a_new_one(tmp_path):
    (tmp_path / "sub").mkdir()
    extract_download(tar_of(*FOLDER), tmp_path / "sub", "d/e")
    assert listing(tmp_path / "sub") == ["e", "e/f.txt"]
    extract_download(tar_of(*FOLDER), tmp_path / "copy", "/workspace/d/e")
    assert listing(tmp_path / "copy") == ["f.txt"]
    extract_download(tar_of(*FOLDER), f"{tmp_path}/made/", "d/e")  # a trailing / too
    assert listing(tmp_path / "made") == ["f.txt"]
    assert no_staging_left(tmp_path)


def test_the_whole_workspace_is_merged_into_dest(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine.txt").write_text("kept")
    extract_download(tar_of(*FOLDER, ("top.txt", tarfile.REGTYPE, b"t")), dest, ".")
    assert listing(dest) == ["e", "e/f.txt", "mine.txt", "top.txt"]


def test_a_link_out_of_the_copied_folder_is_refused_and_nothing_written(tmp_path):
    """The tester's run: `mkdir w; ln -s ../.bashrc w/notes.txt`, then `cp RUN:w out`."""
    (tmp_path / ".bashrc").write_text("mine\n")
    attack = tar_of(("w", tarfile.DIRTYPE, b""), ("w/notes.txt", tarfile.SYMTYPE, "../.bashrc"))
    with pytest.raises(e.UnsafeArchive) as info:
        extract_download(attack, tmp_path / "out", "w")
    assert "'notes.txt' points outside what is copied ('../.bashrc')" in info.value.message
    assert listing(tmp_path) == [".bashrc"]
    # Deeper, through a chain (a link to '.' then '..' through it), and the file itself.
    for attack, source in [
        (tar_of(("w", tarfile.DIRTYPE, b""), ("w/a", tarfile.DIRTYPE, b""),
                ("w/a/l", tarfile.SYMTYPE, "../../x")), "w"),
        (tar_of(("w", tarfile.DIRTYPE, b""), ("w/here", tarfile.SYMTYPE, "."),
                ("w/l", tarfile.SYMTYPE, "here/../x")), "w"),
        (tar_of(("notes.txt", tarfile.SYMTYPE, ".bashrc")), "w/notes.txt"),
    ]:
        with pytest.raises(e.UnsafeArchive):
            extract_download(attack, tmp_path, source)
        assert listing(tmp_path) == [".bashrc"]
    assert (tmp_path / ".bashrc").read_text() == "mine\n"


def test_links_inside_the_copied_folder_are_kept(tmp_path):
    folder = tar_of(("w", tarfile.DIRTYPE, b""), ("w/a.txt", tarfile.REGTYPE, b"a"),
                    ("w/sub", tarfile.DIRTYPE, b""), ("w/sub/l", tarfile.SYMTYPE, "../a.txt"))
    extract_download(folder, tmp_path / "out", "w")
    assert os.readlink(tmp_path / "out" / "sub" / "l") == "../a.txt"
    assert (tmp_path / "out" / "sub" / "l").read_bytes() == b"a"


def test_an_existing_file_gets_the_new_content_and_keeps_its_mode(tmp_path):
    dest = tmp_path / "ro.txt"
    dest.write_text("old, longer than the new content\n")
    dest.chmod(0o400)
    inode = dest.stat().st_ino
    if os.geteuid() != 0:
        with pytest.raises(e.WorkspaceError) as info:
            extract_download(tar_of(FILE), dest, "d/e/f.txt")
        assert "Permission denied" in info.value.message and ".bus-cp" not in info.value.message
        return
    extract_download(tar_of(FILE), dest, "d/e/f.txt")  # root may write it, as cp would
    assert dest.read_bytes() == b"new\n"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o400 and dest.stat().st_ino == inode


def test_a_link_dest_is_followed_like_cp(tmp_path):
    (tmp_path / "real.txt").write_text("old")
    (tmp_path / "link").symlink_to("real.txt")
    extract_download(tar_of(FILE), tmp_path / "link", "f.txt")
    assert (tmp_path / "link").is_symlink()
    assert (tmp_path / "real.txt").read_bytes() == b"new\n"
    (tmp_path / "dangling").symlink_to("nowhere")
    with pytest.raises(e.WorkspaceError, match="does not exist: not writing through it"):
        extract_download(tar_of(FILE), tmp_path / "dangling", "f.txt")
    assert not (tmp_path / "nowhere").exists()


def test_never_over_a_fifo_or_a_device(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "to-fifo").symlink_to("fifo")
    for dest in (fifo, tmp_path / "to-fifo", Path("/dev/null")):
        before = os.lstat(dest)
        with pytest.raises(e.WorkspaceError) as info:
            extract_download(tar_of(FILE), dest, "f.txt")
        assert info.value.exit_code == 2 and str(dest) in info.value.message
        assert "FIFO" in info.value.message or "device" in info.value.message
        assert ("symbolic link to a" in info.value.message) == dest.is_symlink()
        assert os.lstat(dest).st_mode == before.st_mode and os.lstat(dest).st_ino == before.st_ino
    # Nor inside a merge: refused before anything of the folder is written.
    into = tmp_path / "into"
    (into / "e").mkdir(parents=True)
    os.mkfifo(into / "e" / "f.txt")
    folder = tar_of(*FOLDER, ("e/g.txt", tarfile.REGTYPE, b"g"))
    with pytest.raises(e.WorkspaceError, match="is a FIFO"):
        extract_download(folder, into, "e")
    assert listing(into) == ["e", "e/f.txt"]
    assert no_staging_left(tmp_path)


def test_folder_onto_a_file_and_a_file_to_a_missing_folder_say_what_is_wrong(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(e.WorkspaceError) as info:
        extract_download(tar_of(*FOLDER), tmp_path / "afile", "d/e")
    assert info.value.message == (f"'{tmp_path}/afile' is not a directory; cannot copy the "
                                  "directory 'e' onto it")
    with pytest.raises(e.WorkspaceError) as info:
        extract_download(tar_of(FILE), f"{tmp_path}/newdir/", "f.txt")
    assert "does not exist; a DEST ending in '/' names a directory" in info.value.message
    with pytest.raises(e.WorkspaceError, match="is not a directory"):
        extract_download(tar_of(FILE), f"{tmp_path}/afile/", "f.txt")
    assert listing(tmp_path) == ["afile"] and (tmp_path / "afile").read_text() == "x"
