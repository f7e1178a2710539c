"""Work in, results out: the calls that move bytes rather than JSON (CONTRACT 9).

A mixin of `ContainersClient` (it uses the client's one `_request`): uploading a
workspace once (`HEAD` first), streaming a run's stdin, and fetching the run's diff and
files. Like the rest of the service it returns data or raises typed errors; it never
prints (progress and warnings are callbacks and data for render).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator

from . import errors as e
from .token import SCOPE_READ, SCOPE_RUN
from .transport import body_chunks, read_body

TAR = "application/x-tar"
STDIN_CHUNK = 1 << 16

Progress = Callable[[int, int], None]  # (bytes sent, bytes in all)


def workspace_fields(workspace: dict | str) -> dict:
    """The create body's fields for a workspace: its sha256 and what we know of it."""
    if isinstance(workspace, str):
        return {"workspace": workspace}
    fields: dict = {"workspace": workspace["sha256"]}
    info = {k: workspace[k] for k in ("base_commit", "dirty") if workspace.get(k) is not None}
    if info:
        fields["workspace_info"] = info
    return fields


class _Counted:
    """A file read by requests for an upload, reporting how far it got."""

    def __init__(self, f, size: int, on_progress: Progress | None):
        self._f, self._size, self._sent, self._on_progress = f, size, 0, on_progress

    def __len__(self) -> int:
        return self._size

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._sent += len(data)
        if self._on_progress is not None:
            self._on_progress(self._sent, self._size)
        return data


class _IterReader:
    """A read() over an iterator of bytes, for tarfile's stream mode (which asks for
    10 KiB at a time): one chunk is held and handed out by position, never re-copied."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks, self._chunk, self._pos = chunks, b"", 0

    def read(self, n: int = -1) -> bytes:
        parts = []
        while n < 0 or n > 0:
            if self._pos >= len(self._chunk):
                self._chunk, self._pos = next(self._chunks, b""), 0
                if not self._chunk:
                    break
            end = len(self._chunk) if n < 0 else min(len(self._chunk), self._pos + n)
            parts.append(self._chunk[self._pos:end])
            if n > 0:
                n -= end - self._pos
            self._pos = end
        return b"".join(parts)


def read_chunks(fd: int, size: int = STDIN_CHUNK) -> Iterator[bytes]:
    """A file descriptor's bytes as they come (a pipe gives what is there, at once), until
    EOF. Memory holds one chunk at a time."""
    while chunk := os.read(fd, size):
        yield chunk


class TransferCalls:
    # -- work in ---------------------------------------------------------------------------
    def upload_workspace(self, path: str | os.PathLike = ".", *,
                         on_progress: Progress | None = None) -> dict:
        """Send the tree at `path` (see `workspace.collect` for which files), unless this
        account sent the same tree before. Returns `{"sha256", "files", "bytes", "size",
        "uploaded", "base_commit", "dirty", "git_prefix", "skipped": ["path: why", ...]}`
        (`git_prefix`: where `path` sits in its git work tree, "" at the top); pass it to
        `create_run(workspace=...)`. TooLarge before any upload when the tar is over the
        plan's limit (when the token may read the plan)."""
        from . import workspace as ws

        tree = ws.collect(path)
        deadline = self._deadline(None)
        with ws.packed(tree) as (sha, size, f):
            result = {"sha256": sha, "files": tree.files, "bytes": tree.bytes, "size": size,
                      "uploaded": False, "base_commit": tree.base_commit,
                      "dirty": tree.dirty, "git_prefix": tree.git_prefix,
                      "skipped": list(tree.skipped)}
            if self._workspace_known(sha, deadline):
                return result
            limit = self._workspace_limit(deadline)
            if limit is not None and size > limit:
                raise e.TooLarge(f"the workspace is {size} bytes as a tar; the plan allows "
                                 f"{limit} bytes", size=size, limit=limit,
                                 biggest=tree.biggest())

            def body():
                f.seek(0)
                return _Counted(f, size, on_progress)

            for _ in self._request("PUT", f"/workspaces/{sha}", scope=SCOPE_RUN,
                                   deadline=deadline, expect=(200, 201), body=body,
                                   headers={"Content-Type": TAR},
                                   read=lambda response, url: iter([None])):
                break
            result["uploaded"] = True
            return result

    def _workspace_known(self, sha: str, deadline: float) -> bool:
        def read(response, url: str) -> Iterator[bool]:
            yield response.status_code == 200

        for known in self._request("HEAD", f"/workspaces/{sha}", scope=SCOPE_RUN,
                                   deadline=deadline, expect=(200, 404), read=read):
            return known
        return False

    def _workspace_limit(self, deadline: float) -> int | None:
        """The plan's `workspace_bytes`, when the token may read the plan; else None (the
        server's 413 then says it)."""
        from .token import SCOPE_BILLING

        try:
            data = self._call("GET", "/usage", scope=SCOPE_BILLING, deadline=deadline,
                              shape=lambda data, url, status: data).data
        except e.ContainersError:
            return None
        limit = data.get("limits", {}).get("workspace_bytes") if isinstance(data, dict) else None
        return limit if isinstance(limit, int) and not isinstance(limit, bool) else None

    def send_stdin(self, run_id: str, chunks: Iterable[bytes], *,
                   deadline: float | None = None) -> None:
        """Stream `chunks` to the stdin of a run created with `stdin=True`; their end is
        the command's EOF. One attempt (the bytes cannot be sent twice); the socket waits
        as long as the run does not read (back-pressure), up to the deadline."""
        from .service import validate_run_id

        validate_run_id(run_id)
        deadline = self._deadline(deadline)
        for _ in self._request("PUT", f"/runs/{run_id}/stdin", scope=SCOPE_RUN,
                               deadline=deadline, expect=(200, 204), body=lambda: iter(chunks),
                               headers={"Content-Type": "application/octet-stream"},
                               read_timeout=max(deadline - self._clock(), 1.0), retry=False,
                               read=lambda response, url: iter([None])):
            break

    # -- results out -----------------------------------------------------------------------
    def workspace_diff(self, run_id: str) -> bytes:
        """The run's changes to /workspace as a git patch (bytes, binary-safe): apply it
        with `git apply`. RunNotFinished while the run is going."""
        from .service import validate_run_id

        validate_run_id(run_id)

        def read(response, url: str) -> Iterator[bytes]:
            patch = read_body(response, url, lambda: self._clock() > deadline)
            if patch and not patch.startswith(b"diff --git "):  # an HTML page, a proxy's...
                raise e.UnexpectedResponse(f"unexpected response from {url} (HTTP "
                                           f"{response.status_code}): not a git patch",
                                           status=response.status_code)
            yield patch

        deadline = self._deadline(None)
        with _about(run_id):
            for patch in self._request("GET", f"/runs/{run_id}/workspace/diff",
                                       scope=SCOPE_READ, deadline=deadline, read=read,
                                       headers={"Accept": "text/x-diff"}):
                return patch
        return b""

    def iter_archive(self, run_id: str, path: str = ".") -> Iterator[bytes]:
        """A tar of `path` in the finished run's /workspace, as it arrives. Not retried once
        bytes came (they may already be written somewhere)."""
        from .service import validate_run_id

        validate_run_id(run_id)
        deadline = self._deadline(None)

        def read(response, url: str) -> Iterator[bytes]:
            for chunk in body_chunks(response):
                if self._clock() > deadline:
                    raise self._timeout_error(url)
                yield chunk

        def fetch() -> Iterator[bytes]:
            return self._request("GET", f"/runs/{run_id}/workspace/archive",
                                 scope=SCOPE_READ, deadline=deadline, read=read,
                                 params={"path": path}, headers={"Accept": TAR}, retry=False)

        started = False
        with _about(run_id):
            try:
                for chunk in fetch():
                    started = True
                    yield chunk
            except e.ConnectionFailed:
                if started:
                    raise
                yield from fetch()  # nothing came yet: one more go, as any GET would get

    def download(self, run_id: str, path: str, dest: str | os.PathLike) -> list[str]:
        """Copy `path` from the finished run's /workspace to `dest` (as `cp -r` does: a
        file to a file or into a directory, a directory to a new directory or into one;
        see `download`). Unsafe members are refused (UnsafeArchive): nothing lands outside
        `dest`. The paths written."""
        from .download import extract_download

        return extract_download(_IterReader(self.iter_archive(run_id, path)), dest, path)


class _about:
    """Puts the run id on errors raised inside (for the hints render makes)."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    def __enter__(self):
        return self

    def __exit__(self, kind, error, tb):
        if isinstance(error, e.ContainersError) and not error.run_id:
            error.run_id = self.run_id
        return False
