"""A git repository the way a developer has one mid-task: committed files, then an
uncommitted edit, an untracked file and ignored ones (the workspace tests' fixture)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


def dirty_repo(path: Path, committed: dict[str, str], then: dict[str, str],
               ignore: str = "*.log\n", executable: tuple[str, ...] = ()) -> Path:
    """`committed` files (plus a .gitignore of `ignore`) in one commit, then `then` written
    over or beside them without committing; `executable` get mode 0755 before the commit."""
    path.mkdir()
    git(path, "init", "-q")
    git(path, "config", "user.email", "dev@example.com")
    git(path, "config", "user.name", "dev")
    for name, text in {**committed, ".gitignore": ignore}.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    for name in executable:
        (path / name).chmod(0o755)
    git(path, "add", ".")
    git(path, "commit", "-qm", "base")
    for name, text in then.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path
