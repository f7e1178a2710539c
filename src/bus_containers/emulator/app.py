"""The WSGI application: routing, authentication, the API handlers, JSON errors, logging."""

from __future__ import annotations

import contextlib
import re
import secrets
import sqlite3
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from werkzeug.exceptions import MethodNotAllowed, NotFound
from werkzeug.routing import Map, RequestRedirect, Rule
from werkzeug.wrappers import Request, Response

from .. import __version__
from . import faults as faults_mod
from . import logs, validate
from .admin import Admin, AdminCredential
from .config import Config
from .errors import ApiError, invalid, not_found
from .http import error_response, json_response, printable, stderr_log
from .inputs import RunInputs
from .longrequests import LongRequests, ReleasedAfter
from .model import FINISHED
from .runner import Runner
from .sandbox import Sandbox
from .statedir import read_secret
from .stdin import StdinFeed
from .store import RESTARTED, RunStore, decode_cursor, encode_cursor
from .tokens import (
    ALL_SCOPES,
    GUIDANCE,
    Claims,
    TokenAuthority,
    default_account,
    unknown_scopes,
)
from .usage import usage_document
from .workspaces import Workspaces

API = "/api/v1/containers"
# Bound the attempts table: paths carry run ids, and a long soak must not grow memory.
MAX_ATTEMPT_KEYS = 10_000
# The same patterns as TokenRequest in openapi.yaml: the server refuses exactly what the
# document refuses (schemathesis checks both directions).
_SCOPES = re.compile(r"^[!-~]{1,128}( [!-~]{1,128})*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# `Prefer: until=output`: after the first bytes, how long the create answer still waits for
# the run to end. A command that prints and exits (`printf OK`) ends within it and stays one
# round trip; a longer one shows its first bytes at most this late.
OUTPUT_GRACE_SECONDS = 0.02

class EmulatorApp:
    def __init__(self, state_dir: Path, config: Config, *, log: Callable[[str], None] | None
                 = None, database: Path | None = None):
        """`database`: the SQLite file of durable state; None keeps runs in memory."""
        self.config = config
        # Each raises statedir.StateError when the state dir cannot be trusted.
        self.tokens = TokenAuthority(state_dir, config.limits.max_token_ttl_seconds)
        self.credential = AdminCredential(read_secret(state_dir / "admin-key"))
        self.default_sub = default_account(state_dir)
        self._log = log or stderr_log
        self.store = RunStore(config, database, log=self._log)
        if self.store.recovered:
            self._log(f"{self.store.recovered} run(s) active at the last stop are now failed "
                      f"(reason {RESTARTED})")
        self.workspaces = Workspaces(state_dir)
        # Trees of runs the store no longer has (expired, or a store that does not outlive
        # a restart) go; the others stay with their runs.
        self.workspaces.sweep(lambda owner, run_id: self.store.get(owner, run_id) is not None)
        self.store.on_removed = self._run_removed
        self.faults = faults_mod.FaultSet()
        self.stopping = threading.Event()
        self.sandbox = Sandbox(state_dir, config.limits)
        self.runner = Runner(self._run_finished, self.sandbox)
        self._log(self.sandbox.describe())
        if self.sandbox.nested_userns:
            self._log("runs may make user namespaces of their own: "
                      + self.sandbox.nested_userns)
        self._counter_lock = threading.Lock()
        self._requests = 0
        self._attempts: Counter[str] = Counter()
        # The server sets its real connection cap at start (server.connection_cap).
        self.long_requests = LongRequests(config.limits.long_requests_per_account,
                                          config.limits.short_request_reserve,
                                          config.limits.max_connections)
        self.inputs = RunInputs(API, config, self.workspaces, self.auth, self.owned_run,
                                self.runner.cancel, self.long_requests)
        self.admin = Admin(config, self.store, self.faults, self.counters, self.runner.stats,
                           self.credential)
        # Endpoints are the handlers themselves; werkzeug answers HEAD for GET rules and
        # reports the allowed methods of a path matched with the wrong one (405 + Allow).
        # No slash merging or redirects: a path is served exactly as written, or 404.
        self.url_map = Map([
            Rule(f"{API}/status", methods=["GET"], endpoint=self.status),
            Rule(f"{API}/openapi.yaml", methods=["GET"], endpoint=self.openapi),
            Rule(f"{API}/runs", methods=["GET"], endpoint=self.list_runs),
            Rule(f"{API}/runs", methods=["POST"], endpoint=self.create_run),
            Rule(f"{API}/runs/<run_id>", methods=["GET"], endpoint=self.get_run),
            Rule(f"{API}/runs/<run_id>", methods=["DELETE"], endpoint=self.delete_run),
            Rule(f"{API}/runs/<run_id>/logs", methods=["GET"], endpoint=self.run_logs),
            Rule(f"{API}/runs/<run_id>/cancel", methods=["POST"], endpoint=self.cancel_run),
            Rule(f"{API}/usage", methods=["GET"], endpoint=self.usage),
            Rule("/api/v1/auth/token", methods=["POST"], endpoint=self.issue_token),
            *self.admin.rules(),
            *self.inputs.rules(),
        ], merge_slashes=False, redirect_defaults=False)
        self._routes = self.url_map.bind("emulator")

    # -- WSGI entry -----------------------------------------------------------------
    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        started = time.monotonic()
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "") or "/"
        request_id = "req_" + secrets.token_hex(8)
        outcome: dict[str, Any] = {"status": "-"}

        def start(status: str, headers: list, exc_info=None):
            outcome["status"] = status.split(" ", 1)[0]
            headers = [*headers, ("X-Request-Id", request_id)]
            return start_response(status, headers, exc_info)

        app: Callable = self.dispatch
        if not path.startswith("/_emulator/"):
            self._count(method, path)
            rule = self.faults.take(method, path)
            if rule is not None:
                app = faults_mod.apply(rule, self.dispatch, self._sleep)
        try:
            body = app(environ, start)
        except ConnectionError:
            body = []
            outcome["status"] = "dropped"

        def done(error: BaseException | None) -> None:
            ms = (time.monotonic() - started) * 1000
            status = "dropped" if isinstance(error, ConnectionError) else outcome["status"]
            self._log(f"{method} {printable(path)} {status} {ms:.1f}ms")

        return _Logged(body, done)

    def _count(self, method: str, path: str) -> None:
        key = f"{method} {path}"
        with self._counter_lock:
            self._requests += 1
            if key in self._attempts or len(self._attempts) < MAX_ATTEMPT_KEYS:
                self._attempts[key] += 1

    def counters(self, reset: bool = False) -> tuple[int, dict[str, int]]:
        with self._counter_lock:
            out = self._requests, dict(self._attempts)
            if reset:
                self._requests = 0
                self._attempts.clear()
            return out

    def _sleep(self, seconds: float) -> None:
        self.stopping.wait(seconds)  # a shutdown cuts delays short

    def dispatch(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self._route(request)
        except ApiError as e:
            response = error_response(e)
        except sqlite3.Error as e:  # e.g. a disk full or a file changed under us: one line
            self._log(f"internal error: the state database failed: {printable(str(e))}")
            response = error_response(ApiError(500, "internal", "internal emulator error"))
        except Exception:  # a bug: never an HTML page, never a dead connection
            self._log("internal error:\n" + traceback.format_exc().rstrip())
            response = error_response(ApiError(500, "internal", "internal emulator error"))
        response.headers.setdefault("Cache-Control", "no-store")
        return response(environ, start_response)

    def _route(self, request: Request) -> Response:
        path = request.path
        try:
            handler, args = self._routes.match(path, request.method)
        except MethodNotAllowed as e:
            allow = ", ".join(sorted(set(e.valid_methods or ()) - {"HEAD"}))
            raise ApiError(405, "method_not_allowed",
                           f"{request.method} is not allowed on {printable(path)}",
                           headers={"Allow": allow}) from None
        except (NotFound, RequestRedirect):
            raise not_found(f"no such endpoint: {printable(path)}") from None
        return handler(request, **args)

    # -- auth -----------------------------------------------------------------------
    def auth(self, request: Request, scope: str) -> Claims:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ApiError(401, "unauthenticated", "this call needs a bearer token",
                           guidance=GUIDANCE,
                           headers={"WWW-Authenticate": 'Bearer realm="bus-containers"'})
        try:
            claims = self.tokens.verify(token.strip())
        except ApiError as e:
            e.headers["WWW-Authenticate"] = 'Bearer error="invalid_token"'
            raise
        if scope not in claims.scopes:
            raise ApiError(403, "insufficient_scope",
                           f"this call needs the scope {scope}, which the token does not carry",
                           guidance=GUIDANCE, scope=scope,
                           headers={"WWW-Authenticate":
                                    f'Bearer error="insufficient_scope", scope="{scope}"'})
        return claims

    def owned_run(self, claims: Claims, run_id: str):
        # Malformed ids, traversal attempts and other accounts' runs all look the same: 404.
        run = self.store.get(claims.sub, run_id) if validate.RUN_ID.match(run_id) else None
        if run is None:
            raise not_found(f"no run {printable(run_id)} in this account")
        return run

    # -- API handlers ---------------------------------------------------------------
    def status(self, request: Request) -> Response:
        self.auth(request, "container:read")
        if self.stopping.is_set():
            return json_response({"status": "unavailable", "message": "shutting down",
                                  "version": __version__})
        return json_response({"status": "ready",
                              "message": "bus-containers local emulator: runs execute on "
                                         f"this machine; {self.sandbox.describe()}",
                              "version": __version__})

    def openapi(self, request: Request) -> Response:
        text = resources.files(__package__).joinpath("openapi.yaml").read_bytes()
        return Response(text, 200, mimetype="application/yaml")

    def create_run(self, request: Request) -> Response:
        claims = self.auth(request, "container:run")
        body = validate.read_json(request, self.config.limits.max_body_bytes)
        spec = validate.run_spec(body, self.config)
        key = validate.idempotency_key(request)
        wait = validate.prefer_wait(request)
        if self.stopping.is_set() or self.runner.stopping:
            raise ApiError(503, "unavailable", "the emulator is shutting down",
                           headers={"Retry-After": "5"})
        workspace = self._workspace_for(claims.sub, spec)
        run, created = self.store.create(claims.sub, spec, key, _billing_url(request))
        if created:
            self._start(run, workspace)
        headers = {"Location": f"{API}/runs/{run.id}"}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        release = None
        if wait and not spec.stdin:  # a run waiting for its stdin would hold the answer
            # The run exists now: with no long-request slot left, answer without waiting
            # (a preference the server may decline) rather than refuse it.
            with contextlib.suppress(ApiError):
                release = self.long_requests.acquire(claims.sub)
        if release is not None:
            seconds = min(wait, self.config.limits.max_wait_seconds)
            try:
                if validate.prefer_until_output(request):
                    # Live output must not wait for the hold: answer at the first bytes too.
                    run.wait_output_or_finished(seconds, OUTPUT_GRACE_SECONDS)
                    headers["Preference-Applied"] = f"wait={seconds:g}, until=output"
                else:
                    run.wait_finished(seconds)
                    headers["Preference-Applied"] = f"wait={seconds:g}"
            finally:
                release()
        if run.finished:
            return json_response(run.to_json(), 201, headers)
        headers["Retry-After"] = "1"
        return json_response(run.to_json(), 202, headers)

    def _workspace_for(self, owner: str, spec) -> dict | None:
        if spec.workspace is None:
            return None
        info = self.workspaces.info(owner, spec.workspace)
        if info is None:
            raise not_found(f"no workspace {spec.workspace} in this account: upload it "
                            f"first (PUT {API}/workspaces/{spec.workspace})")
        # Its tree (and the run's changes) will be kept with the run: room for it first.
        self.workspaces.check_room(owner, info["bytes"],
                                   self.config.plan_for(owner).storage_bytes)
        return info

    def _start(self, run, workspace: dict | None) -> None:
        if run.spec.stdin:
            run.stdin_feed = StdinFeed()
        workspace_dir = None
        if workspace is not None:
            run.workspace = {k: workspace[k] for k in ("sha256", "files", "bytes")}
            try:
                workspace_dir = str(self.workspaces.prepare_run(run.owner, run.id,
                                                                run.spec.workspace))
            except Exception as e:  # noqa: BLE001 - the run fails, with the reason to read
                self._log(f"workspace of {run.id} could not be prepared: {e}")
                run.add_output("stderr", b"bus-containers-emulator: the workspace could not "
                                         b"be prepared: " + str(e).encode() + b"\n")
                if run.stdin_feed is not None:
                    run.stdin_feed.close(reader_too=True)
                run.finish("failed", None)
                self._run_finished(run)
                return
        # The sandbox mounts the tree at /workspace (the cwd) and hands it to the run's
        # user; the runner owns the read end of the stdin pipe from here on.
        self.runner.start(run, self.config.profiles[run.spec.profile],
                          stdin_fd=run.stdin_feed.read_fd if run.stdin_feed else None,
                          workspace_dir=workspace_dir)

    def _run_finished(self, run) -> None:
        self.store.on_finished(run)
        if run.stdin_feed is not None:
            run.stdin_feed.close()
        if run.workspace is not None:
            self.workspaces.finish_run(run.owner, run.id)

    def _run_removed(self, run) -> None:
        if run.workspace is not None:
            self.workspaces.remove_run(run.owner, run.id)

    def list_runs(self, request: Request) -> Response:
        claims = self.auth(request, "container:read")
        limit, cursor, status, profile, since = validate.list_query(request, self.config)
        seq = decode_cursor(cursor) if cursor is not None else None
        runs, next_seq = self.store.page(claims.sub, limit, seq, status, profile, since)
        return json_response({"runs": [r.to_json(summary=True) for r in runs],
                              "next_cursor": encode_cursor(next_seq) if next_seq else None})

    def get_run(self, request: Request, run_id: str) -> Response:
        claims = self.auth(request, "container:read")
        run = self.owned_run(claims, run_id)
        wait = validate.prefer_wait(request)
        headers = {}
        if wait and not run.finished:
            # A long-poll: `wait` hears of the end at once, with one open request.
            release = self.long_requests.acquire(claims.sub)
            seconds = min(wait, self.config.limits.max_wait_seconds)
            try:
                run.wait_finished(seconds)
            finally:
                release()
            headers["Preference-Applied"] = f"wait={seconds:g}"
        return json_response(run.to_json(), headers=headers)

    def delete_run(self, request: Request, run_id: str) -> Response:
        claims = self.auth(request, "container:delete")
        run = self.owned_run(claims, run_id)
        if run.status not in FINISHED:
            self.runner.cancel(run)
        self.store.remove(claims.sub, run_id)
        return Response(status=204)

    def cancel_run(self, request: Request, run_id: str) -> Response:
        """Stop a run and keep it (status `cancelled`, output kept); a finished run is
        answered as it is, so a repeated or late cancel changes nothing."""
        claims = self.auth(request, "container:run")
        run = self.owned_run(claims, run_id)
        if not run.finished:
            self.runner.cancel(run)
        return json_response(run.to_json())

    def usage(self, request: Request) -> Response:
        claims = self.auth(request, "billing:read")
        return json_response(usage_document(self.config, self.store.usage(claims.sub),
                                            _billing_url(request)))

    def run_logs(self, request: Request, run_id: str) -> Response:
        claims = self.auth(request, "container:read")
        run = self.owned_run(claims, run_id)
        args = request.args
        follow = validate.flag(args.get("follow"), "follow")
        offset = validate.non_negative_int(args.get("offset"), "offset")
        tail = validate.non_negative_int(args["tail"], "tail") if "tail" in args else None
        since = validate.timestamp(args.get("since"), "since")
        release = self.long_requests.acquire(claims.sub) if follow else None
        lines = logs.stream(run, offset, follow, self.stopping,
                            request.environ.get("werkzeug.socket"), tail=tail, since=since)
        if release is not None:
            lines = ReleasedAfter(lines, release)
        return Response(lines, 200, mimetype="application/x-ndjson",
                        headers={"X-Accel-Buffering": "no"}, direct_passthrough=True)

    def issue_token(self, request: Request) -> Response:
        self.credential.require(request, "issuing tokens")
        body = validate.read_json_object(request, self.config.limits.max_body_bytes,
                                         allow_empty=True)
        scope = body.get("scope", ALL_SCOPES)
        if not isinstance(scope, str) or not _SCOPES.match(scope):
            raise invalid("scope must be scopes separated by single spaces, e.g. "
                          f'"{ALL_SCOPES}"')
        unknown = unknown_scopes(scope)
        if unknown:
            raise invalid(f"unknown scope(s) {' '.join(unknown)}; the scopes are: "
                          f"{ALL_SCOPES}")
        sub = body.get("sub", self.default_sub)
        sub = validate.clean_str(sub, "sub", max_len=256)
        if _CONTROL.search(sub):
            raise invalid("sub must not contain control characters")
        max_ttl = self.config.limits.max_token_ttl_seconds
        ttl = validate.as_int(body.get("ttl", min(3600, max_ttl)))
        if ttl is None or not 1 <= ttl <= max_ttl:
            raise invalid(f"ttl must be an integer from 1 to {max_ttl}")
        token = self.tokens.issue(sub, scope, ttl)
        return json_response({"token": token, "token_type": "Bearer", "expires_in": ttl,
                              "sub": sub, "scope": scope})

    # -- lifecycle ------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop everything this app started; safe to call more than once."""
        self.stopping.set()
        # Runs the stop kills end `failed` with the reason, not with a mysterious 137.
        self.store.stopping()
        self.runner.shutdown()
        for run in self.store.active_runs():
            run.finish("failed", None)
        self.store.close()


class _Logged:
    """The response body, with a callback when the server is done with it (log line)."""

    def __init__(self, body: Iterable[bytes], done: Callable[[BaseException | None], None]):
        self._body = body
        self._done = done
        self._error: BaseException | None = None
        self._closed = False

    def __iter__(self):
        try:
            yield from self._body
        except BaseException as e:
            self._error = e
            raise

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if hasattr(self._body, "close"):
                self._body.close()
        finally:
            self._done(self._error)


def _billing_url(request: Request) -> str:
    return f"{request.host_url.rstrip('/')}/billing"
