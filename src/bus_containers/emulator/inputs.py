"""The API for work in and results out: workspace uploads, a run's stdin, its diff and
its files. Storage and tar handling live in `workspaces`; this module is HTTP only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from .config import Config
from .errors import ApiError, invalid, not_found
from .http import STREAM_BODY, json_response
from .longrequests import LongRequests
from .model import Run
from .stdin import StdinClaimed
from .workspaces import SHA256, Workspaces, too_large

CHUNK = 1 << 16


def run_not_finished(run: Run) -> ApiError:
    return ApiError(409, "run_not_finished",
                    f"run {run.id} is {run.status}; its workspace is ready when it ends",
                    run_id=run.id, headers={"Retry-After": "1"})


class RunInputs:
    def __init__(self, api: str, config: Config, workspaces: Workspaces,
                 auth: Callable[[Request, str], Any], owned_run: Callable[[Any, str], Run],
                 cancel: Callable[[Run], None], long_requests: LongRequests):
        self.api = api
        self.config = config
        self.workspaces = workspaces
        self.auth = auth
        self.owned_run = owned_run
        self.cancel = cancel
        self.long_requests = long_requests

    def rules(self) -> list[Rule]:
        api = self.api
        return [
            Rule(f"{api}/workspaces/<sha>", methods=["GET"], endpoint=self.get_workspace),
            Rule(f"{api}/workspaces/<sha>", methods=["PUT"], endpoint=self.put_workspace),
            Rule(f"{api}/runs/<run_id>/stdin", methods=["PUT"], endpoint=self.put_stdin),
            Rule(f"{api}/runs/<run_id>/workspace/diff", methods=["GET"], endpoint=self.diff),
            Rule(f"{api}/runs/<run_id>/workspace/archive", methods=["GET"],
                 endpoint=self.archive),
        ]

    # -- workspaces -------------------------------------------------------------------
    def get_workspace(self, request: Request, sha: str) -> Response:
        """HEAD (or GET) /workspaces/{sha256}: 200 with its size if this account sent it."""
        claims = self.auth(request, "container:run")
        info = self.workspaces.info(claims.sub, sha)
        if info is None:  # unknown, malformed, or another account's: all the same
            raise not_found("no workspace with this sha256 in this account")
        return json_response(info)

    def put_workspace(self, request: Request, sha: str) -> Response:
        claims = self.auth(request, "container:run")
        if not SHA256.match(sha):
            raise invalid("the workspace id must be a lowercase hex sha256 (64 characters)")
        mimetype = request.mimetype
        if mimetype not in ("application/x-tar", "application/octet-stream", ""):
            raise ApiError(415, "unsupported_media_type",
                           f"the workspace must be sent as application/x-tar, not {mimetype}")
        plan = self.config.plan_for(claims.sub)
        release = self.long_requests.acquire(claims.sub)
        try:
            info = self.workspaces.store(
                claims.sub, sha, _body(request), request.content_length,
                max_bytes=plan.workspace_bytes, max_files=plan.workspace_files,
                storage_bytes=plan.storage_bytes)
        finally:
            release()
        return json_response(info, 201)

    # -- stdin ------------------------------------------------------------------------
    def put_stdin(self, request: Request, run_id: str) -> Response:
        claims = self.auth(request, "container:run")
        run = self.owned_run(claims, run_id)
        feed = run.stdin_feed
        if feed is None:
            raise ApiError(409, "conflict", f"run {run.id} was created without stdin "
                           '(create it with "stdin": true)', run_id=run.id)
        limit = self.config.plan_for(claims.sub).stdin_bytes
        release = self.long_requests.acquire(claims.sub)  # before the claim: a 429 keeps it
        try:
            return self._feed_stdin(request, run, feed, limit)
        finally:
            release()

    def _feed_stdin(self, request: Request, run: Run, feed, limit: int | None) -> Response:
        try:
            fd = feed.claim()
        except StdinClaimed:
            raise ApiError(409, "conflict", f"the stdin of run {run.id} was already sent",
                           run_id=run.id) from None
        if fd is None:
            # The run ended before reading: nothing to deliver. Not an error for the
            # sender: like writing into a pipeline whose reader exited.
            return Response(status=204, headers={"Connection": "close"})
        declared = request.content_length
        if limit is not None and declared is not None and declared > limit:
            feed.feed((), limit)  # closes our end: nothing of it is sent
            raise self._stdin_over(run, limit, declared)
        # A user may type nothing for minutes: no idle bound on this body.
        request.environ.get(STREAM_BODY, lambda: None)()
        _, over = feed.feed(_body(request), limit)
        if over:
            raise self._stdin_over(run, limit)
        return Response(status=204, headers={"Connection": "close"}
                        if not _fully_read(request) else None)

    def _stdin_over(self, run: Run, limit: int, declared: int | None = None) -> ApiError:
        """Past the plan's stdin limit the run is stopped (half an input is worse than
        none), with a line on its stderr saying why."""
        run.add_output("stderr", f"bus-containers-emulator: stdin passed the plan's limit "
                                 f"of {limit} bytes; the run was stopped\n".encode())
        self.cancel(run)
        what = (f"stdin is {declared} bytes" if declared is not None
                else "stdin went past the limit")
        return too_large(f"{what}; the plan allows {limit} bytes of stdin, and the run "
                         "was stopped")

    # -- results ----------------------------------------------------------------------
    def _finished_with_tree(self, request: Request, run_id: str) -> tuple[Any, Run]:
        claims = self.auth(request, "container:read")
        run = self.owned_run(claims, run_id)
        if not run.finished:
            raise run_not_finished(run)
        if not self.workspaces.has_tree(claims.sub, run.id):
            raise not_found(f"run {run.id} has no workspace (it was created without one)")
        return claims, run

    def diff(self, request: Request, run_id: str) -> Response:
        claims, run = self._finished_with_tree(request, run_id)
        body = self.workspaces.diff(claims.sub, run.id)
        return Response(body, 200, mimetype="text/x-diff", direct_passthrough=True)

    def archive(self, request: Request, run_id: str) -> Response:
        claims, run = self._finished_with_tree(request, run_id)
        path = request.args.get("path", ".")
        body = self.workspaces.archive(claims.sub, run.id, path)
        return Response(body, 200, mimetype="application/x-tar", direct_passthrough=True)


def _body(request: Request) -> Iterator[bytes]:
    """The request body in pieces as they arrive (chunked or with a length).

    werkzeug's development server de-chunks a chunked body in `readinto`, which waits
    until the whole buffer is full: a `run -i` whose user typed one line would wait for
    64 KiB. So from that reader we ask for what its current chunk still holds (its `_len`;
    one byte at a chunk boundary, which makes it read the next chunk's size)."""
    stream = request.stream
    dechunker = stream if hasattr(stream, "_len") and hasattr(stream, "_done") else None
    while True:
        size = CHUNK
        if dechunker is not None:
            left = dechunker._len
            size = min(left, CHUNK) if left > 0 else 1
        try:
            chunk = stream.read(size)
        except (HTTPException, OSError):
            return  # the client went away mid-body (or sent a broken chunk)
        if not chunk:
            return
        yield chunk


def _fully_read(request: Request) -> bool:
    try:
        return request.stream.read(1) == b""
    except (HTTPException, OSError):
        return False
