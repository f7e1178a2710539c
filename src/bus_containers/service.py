"""`ContainersClient`: the container-runner API (CONTRACT 4) for Python callers and the CLI.

It makes the HTTP calls, retries, polls and paginates; it returns plain data (dicts and
lists as the server sent them, unknown fields kept) or raises the typed errors of
`errors.py`, with structured fields and no command-line advice. It never prints: requests
are logged on the `bus_containers` logger at DEBUG level, with the Authorization header
masked.

Every request goes through one function, `_request`, and its one retry loop; whether an
error is worth another try is data on the error (`retryable`, `retry_after`, `idle`), read
by the pure policy functions `should_retry` and `retry_delay`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from typing import NamedTuple

from . import __version__
from . import errors as e
from .responses import (
    RUN_ID_PATTERN,
    check_created_run,
    check_run,
    check_run_page,
    check_status,
    check_usage,
    error_for,
    parse_json,
    parse_log_line,
)
from .settings import API_PATH, is_loopback_origin
from .token import (
    SCOPE_BILLING,
    SCOPE_DELETE,
    SCOPE_READ,
    SCOPE_RUN,
    check_claims,
    read_claims,
)
from .transfer import TransferCalls, workspace_fields
from .transport import (
    connection_refused,
    cut_after_connect,
    is_read_timeout,
    iter_lines,
    read_body,
    short_reason,
)

log = logging.getLogger("bus_containers")

FINISHED_STATUSES = frozenset({"succeeded", "failed", "cancelled", "timed_out"})

MAX_RETRIES = 3  # 4 attempts in all
BACKOFF_START = 0.5
BACKOFF_CAP = 8.0
LOOPBACK_REFUSED_RETRIES = 1  # a refused loopback port: one quick retry, not three
RETRY_AFTER_CAP = 30.0
POLL_START = 0.5
POLL_CAP = 5.0
POLL_MIN = 0.5  # a poll's Retry-After below this (e.g. 0) is raised to it
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
STREAM_IDLE_TIMEOUT = 30.0  # a silent follow stream is reopened after this, not failed
STREAM_PREFER_WAIT = 1  # seconds a streamed run may finish within its create call
# Each `wait` GET asks the server to hold it this long (a long-poll): well under
# READ_TIMEOUT, and under the idle cut-off of common proxies.
LONG_POLL_SECONDS = 25
PREFER_WAIT_CAP = 60  # what we ask the server to hold a POST /runs for, at most
PAGE_SIZE = 100
MAX_LOG_LINE_BYTES = 16 * 1024 * 1024  # one NDJSON log line; longer is not a log line
REQUEST_ID_HEADERS = ("X-Request-Id", "Request-Id", "X-Amzn-RequestId")

RetryHook = Callable[[e.ContainersError, float, int, int], None]


class Answer(NamedTuple):
    """One API answer: the checked body, the server's Retry-After (seconds) if any, and
    whether it held the answer as `Prefer: wait` asked (its `Preference-Applied`)."""

    data: object
    retry_after: float | None
    held: bool = False


# -- the retry policy: pure functions of the error and the attempt count ----------------
def should_retry(error: e.ContainersError, failures: int, max_retries: int) -> bool:
    """Another attempt after `failures` failed ones? A quiet follow stream (`idle`) is not
    a failure and is always reopened; the deadline is the caller's to check."""
    if not error.retryable:
        return False
    if error.retry_limit is not None:
        max_retries = min(max_retries, error.retry_limit)
    return getattr(error, "idle", False) or failures <= max_retries


def retry_delay(error: e.ContainersError, failures: int, jitter: float) -> float:
    """Seconds before the next attempt: the server's Retry-After when it gave one, else
    exponential backoff from BACKOFF_START (capped), shortened by up to 25 % `jitter`
    (0..1) so clients that failed together do not retry together."""
    if getattr(error, "idle", False):
        return 0.0
    if error.retry_after is not None:
        return error.retry_after
    backoff = min(BACKOFF_CAP, BACKOFF_START * 2 ** (failures - 1))
    return backoff * (1 - 0.25 * jitter)


def validate_run_id(run_id: object) -> str:
    """The id unchanged, or InvalidRunId: nothing else can reach the URL path."""
    if not isinstance(run_id, str) or not RUN_ID_PATTERN.fullmatch(run_id):
        raise e.InvalidRunId(
            f"invalid run id {run_id!r}: ids are letters, digits, '_' and '-' "
            "(e.g. run_0123abcd), at most 128 characters"
        )
    return run_id


def is_finished(run: dict) -> bool:
    """Finished per CONTRACT 4; an unknown status word counts as finished once it has
    a `finished_at`, so a newer server's final states do not make us poll forever."""
    status = run.get("status")
    if status in FINISHED_STATUSES:
        return True
    return status not in ("queued", "starting", "running") and bool(run.get("finished_at"))


def exit_code_for_run(run: dict) -> int:
    """The process exit code `run` reports for a finished run (CONTRACT 5)."""
    if run.get("status") == "timed_out":
        return e.ExitCode.TIMEOUT
    code = run.get("exit_code")
    valid = isinstance(code, int) and not isinstance(code, bool) and 0 <= code <= 255
    if run.get("status") == "succeeded":
        return code if valid else 0
    # failed, cancelled or an unknown final word: never report success without a code
    return code if valid and code != 0 else e.ExitCode.ERROR


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None or when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, min(seconds, RETRY_AFTER_CAP))


class ContainersClient(TransferCalls):
    """Client of the container-runner API.

    `api_url` is the origin (`https://host[/prefix]`); `timeout` is the budget in seconds
    for each public call, retries and polling included. `on_retry(error, delay, attempt,
    attempts)` hears of each retry before its pause (e.g. to tell a waiting user).
    """

    def __init__(
        self,
        api_url: str,
        token: str,
        *,
        timeout: float = 60.0,
        session=None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        max_retries: int = MAX_RETRIES,
        on_retry: RetryHook | None = None,
    ) -> None:
        self.origin = api_url.rstrip("/")
        self.base_url = self.origin + API_PATH
        self.timeout = timeout
        self.max_retries = max_retries
        self.on_retry = on_retry
        self._token = token
        self._claims: dict | None = None
        self._session = session
        self._sleep = sleep
        self._clock = clock

    def __repr__(self) -> str:  # the token stays out of reprs and tracebacks
        return f"ContainersClient({self.base_url!r})"

    # -- public API ----------------------------------------------------------------------
    def status(self) -> dict:
        return self._call("GET", "/status", scope=SCOPE_READ, shape=check_status).data

    def usage(self) -> dict:
        """The account's plan, period, limits, what is used and the billing state, as the
        server sent them (`billing.status` "required" is an answer here, not an error)."""
        return self._call("GET", "/usage", scope=SCOPE_BILLING, shape=check_usage).data

    def create_run(
        self,
        command: list[str],
        *,
        profile: str = "codex",
        env: dict[str, str] | None = None,
        timeout_seconds: int | None = None,
        wait: float | None = None,
        deadline: float | None = None,
        stdin: bool = False,
        workspace: dict | str | None = None,
    ) -> dict:
        """POST /runs once (retried with the same Idempotency-Key). Returns the run as the
        server sent it: finished (201) or not yet (202); see `is_finished`.

        `stdin=True`: the command reads what `send_stdin` sends (else its stdin is empty).
        `workspace`: what `upload_workspace` returned (or a sha256): the run starts in
        /workspace holding that tree."""
        return self._create_run(command, profile=profile, env=env,
                                timeout_seconds=timeout_seconds, wait=wait,
                                deadline=deadline, stdin=stdin, workspace=workspace).data

    def _create_run(self, command, *, profile, env, timeout_seconds, wait, deadline,
                    until_output: bool = False, stdin=False, workspace=None) -> Answer:
        """create_run, with the answer's Retry-After (the first poll's delay after a 202).
        `until_output`: the server may answer (202) as soon as the run has printed, so its
        output can be streamed live (docs/api.md); a server that does not know it holds
        the whole `wait`."""
        body: dict = {"profile": profile, "command": list(command)}
        if timeout_seconds is not None:
            body["timeout_seconds"] = timeout_seconds
        if env:
            body["env"] = dict(env)
        if stdin:
            body["stdin"] = True
        if workspace is not None:
            body.update(workspace_fields(workspace))
        deadline = self._deadline(deadline)
        headers = {"Idempotency-Key": str(uuid.uuid4())}  # one key for every attempt
        if wait:
            # Leave a second of the budget to read the answer.
            seconds = int(min(wait, PREFER_WAIT_CAP, deadline - self._clock() - 1))
            if seconds > 0:
                headers["Prefer"] = f"wait={seconds}" + (", until=output" if until_output
                                                         else "")
        return self._call("POST", "/runs", scope=SCOPE_RUN, json_body=body, headers=headers,
                          deadline=deadline, expect=(201, 202), shape=check_created_run)

    def wait_for_run(self, run_id: str, *, deadline: float | None = None,
                     retry_after: float | None = None, immediate: bool = False,
                     on_poll: Callable[[dict], None] | None = None) -> dict:
        """Ask GET /runs/{id} until the run is finished; CommandTimeout at the deadline.
        `immediate` makes the first request without waiting; `on_poll` sees every answer.

        Each request asks the server to hold it until the run ends (`Prefer: wait`, a
        long-poll), so the end is heard at once with one open request. A server that does
        not hold it (no `Preference-Applied`) is polled with backoff (CONTRACT 4) instead."""
        validate_run_id(run_id)
        deadline = self._deadline(deadline)
        delay = POLL_START
        long_poll = True  # until the server shows it does not hold
        while True:
            # Retry-After: 0 on every poll would hammer the server until the deadline.
            wait = max(retry_after, POLL_MIN) if retry_after is not None else delay
            if immediate:
                wait, immediate = 0.0, False
            else:
                # The last poll comes just before the deadline (leaving it POLL_MIN to be
                # answered), not one backoff step early: the run gets the whole timeout.
                left = deadline - self._clock() - POLL_MIN
                if left <= 0:
                    raise self._still_running(run_id)
                wait = min(wait, left)
            if wait:
                self._sleep(wait)
            # Leave POLL_MIN of the budget for the answer to come back in.
            hold = int(min(LONG_POLL_SECONDS, deadline - self._clock() - POLL_MIN))
            headers = {"Prefer": f"wait={hold}"} if long_poll and hold >= 1 else None
            asked = self._clock()
            try:
                run, retry_after, held = self._call("GET", f"/runs/{run_id}",
                                                    scope=SCOPE_READ, deadline=deadline,
                                                    headers=headers, shape=check_run)
            except e.CommandTimeout:  # a poll that did not answer before the deadline
                raise self._still_running(run_id) from None
            if on_poll is not None:
                on_poll(run)
            if is_finished(run):
                return run
            if headers is not None and not held:
                long_poll = False  # an older server: poll with backoff from here on
            # The server held the answer for the time asked: ask again at once. (One that
            # claims to hold but answers at once is polled with backoff, never hammered.)
            if held and self._clock() - asked >= POLL_MIN:
                immediate = True
                continue
            delay = min(delay * 2, POLL_CAP)

    def follow_run(self, command: list[str], *, profile: str = "codex",
                   env: dict[str, str] | None = None, timeout_seconds: int | None = None,
                   on_poll: Callable[[dict], None] | None = None,
                   live: bool = True, stdin: bool = False,
                   workspace: dict | str | None = None) -> Iterator[dict]:
        """Create a run and yield its life as events, all inside `timeout`:
        `{"event": "created", "run"}`, output chunks as `iter_logs` yields them (live),
        then `{"event": "end", "status", "exit_code"}`. With `live=False` the run is
        polled instead, and only the end comes, with the final `run` object.

        The create asks the server to hold on for a second, so a quick command costs one
        round trip; a longer one is then streamed from its first byte. A server without
        the logs endpoint (404 before any output) is polled instead, and the output comes
        at the end.
        """
        deadline = self._deadline(None)
        run, retry_after, _ = self._create_run(command, profile=profile, env=env,
                                               timeout_seconds=timeout_seconds,
                                               wait=STREAM_PREFER_WAIT, deadline=deadline,
                                               until_output=live, stdin=stdin,
                                               workspace=workspace)
        yield {"event": "created", "run": run}
        if not live:
            if not is_finished(run):
                run = self.wait_for_run(run["id"], deadline=deadline,
                                        retry_after=retry_after, on_poll=on_poll)
            yield _end_event(run)
            return
        # A run finished within the create call carries its output as two texts, which
        # lose the order in which its stdout and stderr lines were written, and bytes that
        # were not UTF-8. When either matters (both streams wrote, or the text is lossy),
        # the logs endpoint gives the exact bytes in order, each chunk with its stream.
        if not is_finished(run) or _lossy(run) or _both_streams(run):
            streamed = False
            try:
                for event in self.iter_logs(run["id"], follow=True, deadline=deadline):
                    streamed = streamed or "data" in event
                    yield event
                return
            except e.ContainersError as error:
                if error.status != 404 or streamed:
                    raise
            if not is_finished(run):
                run = self.wait_for_run(run["id"], deadline=deadline,
                                        retry_after=retry_after, on_poll=on_poll)
        for name in ("stdout", "stderr"):
            if isinstance(run.get(name), str) and run[name]:
                yield {"stream": name, "offset": None,
                       "data": run[name].encode("utf-8", "surrogateescape")}
        yield _end_event(run)

    def run(self, command: list[str], *, profile: str = "codex",
            env: dict[str, str] | None = None, timeout_seconds: int | None = None,
            wait: float | None = None,
            on_created: Callable[[dict], None] | None = None,
            workspace: dict | str | None = None) -> dict:
        """Create a run and wait for it to finish, all inside `timeout`. The create call
        may be held by the server for `wait` seconds (default: the whole timeout);
        `on_created` is called with the run as first returned (e.g. to show its id).
        `workspace`: see `create_run`."""
        deadline = self._deadline(None)
        run, retry_after, _ = self._create_run(command, profile=profile, env=env,
                                               timeout_seconds=timeout_seconds,
                                               wait=self.timeout if wait is None else wait,
                                               deadline=deadline, workspace=workspace)
        if on_created is not None:
            on_created(run)
        if is_finished(run):
            return run
        return self.wait_for_run(run["id"], deadline=deadline, retry_after=retry_after)

    def get_run(self, run_id: str) -> dict:
        validate_run_id(run_id)
        return self._call("GET", f"/runs/{run_id}", scope=SCOPE_READ, shape=check_run).data

    def get_run_with_output(self, run_id: str) -> dict:
        """The run in full: as GET /runs/{id} sends it or, when it carries no output (run
        objects may leave it out, as list summaries do), with `stdout`/`stderr` read from
        the logs endpoint (decoded as the server decodes them: invalid UTF-8 as U+FFFD)."""
        run = self.get_run(run_id)
        if "stdout" in run or "stderr" in run:
            return run
        output = {"stdout": bytearray(), "stderr": bytearray()}
        try:
            for event in self.iter_logs(run_id):
                if "data" in event:
                    output[event["stream"]] += event["data"]
        except e.RunNotFound:
            return run  # no logs endpoint (or the run went since): the run as it is
        return {**run, **{name: data.decode("utf-8", "replace")
                          for name, data in output.items()}}

    def iter_runs(self, *, limit: int | None = None, status: str | None = None,
                  profile: str | None = None, since: str | None = None) -> Iterator[dict]:
        """The account's runs, newest first, following next_cursor until `limit` (None:
        every page). Filters: `status`, `profile`, `since` (RFC 3339: created at or after)."""
        deadline = self._deadline(None)
        cursor, seen_cursors, count = None, set(), 0
        while limit is None or count < limit:
            page_size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - count)
            params = {"limit": page_size}
            if cursor:
                params["cursor"] = cursor
            if status:
                params["status"] = status
            if profile:
                params["profile"] = profile
            if since:
                params["since"] = since
            page = self._call("GET", "/runs", scope=SCOPE_READ, params=params,
                              deadline=deadline, shape=check_run_page).data
            for run in page["runs"][: None if limit is None else limit - count]:
                count += 1
                yield run
            cursor = page.get("next_cursor")
            # A server that hands back a cursor it gave before would loop us forever.
            if not cursor or cursor in seen_cursors or not page["runs"]:
                return
            seen_cursors.add(cursor)

    def list_runs(self, *, limit: int | None = None, status: str | None = None,
                  profile: str | None = None, since: str | None = None) -> list[dict]:
        return list(self.iter_runs(limit=limit, status=status, profile=profile, since=since))

    def cancel_run(self, run_id: str) -> dict:
        """Stop a run and keep it: the run as the server answers, `cancelled`, or unchanged
        when it had already finished (then its own final status)."""
        validate_run_id(run_id)
        return self._call("POST", f"/runs/{run_id}/cancel", scope=SCOPE_RUN,
                          shape=check_run).data

    def cancel_runs(self, run_ids: list[str],
                    on_result: Callable[[str, str, dict | None], None] | None = None) -> dict:
        """Cancel each run (every id checked before the first request); one missing run
        does not stop the others. `{"cancelled": [...], "finished": [...], "not_found":
        [...]}` (`finished`: it had already ended, and was left as it was); `on_result(id,
        outcome, run)` hears of each as it happens."""
        for run_id in run_ids:
            validate_run_id(run_id)
        result: dict[str, list[str]] = {"cancelled": [], "finished": [], "not_found": []}
        for run_id in dict.fromkeys(run_ids):
            run = None
            try:
                run = self.cancel_run(run_id)
            except e.RunNotFound:
                outcome = "not_found"
            else:
                outcome = "cancelled" if run.get("status") == "cancelled" else "finished"
            result[outcome].append(run_id)
            if on_result is not None:
                on_result(run_id, outcome, run)
        return result

    def delete_run(self, run_id: str) -> None:
        validate_run_id(run_id)
        self._call("DELETE", f"/runs/{run_id}", scope=SCOPE_DELETE, expect=(200, 202, 204),
                   gone_means_done=True)

    def delete_runs(self, run_ids: list[str],
                    on_result: Callable[[str, bool], None] | None = None) -> dict:
        """Delete each run (every id checked before the first request); one missing run
        does not stop the others. `{"deleted": [...], "not_found": [...]}`; `on_result`
        hears of each as it happens."""
        for run_id in run_ids:
            validate_run_id(run_id)
        result: dict[str, list[str]] = {"deleted": [], "not_found": []}
        for run_id in dict.fromkeys(run_ids):
            try:
                self.delete_run(run_id)
            except e.RunNotFound:
                found = False
            else:
                found = True
            result["deleted" if found else "not_found"].append(run_id)
            if on_result is not None:
                on_result(run_id, found)
        return result

    def iter_logs(self, run_id: str, *, offset: int = 0, follow: bool = False,
                  tail: int | None = None, since: str | None = None,
                  deadline: float | None = None) -> Iterator[dict]:
        """A run's output as events: `{"stream", "offset", "data": bytes, "time"?}` in
        order, then `{"event": "end", "status", "exit_code"}` once the run is finished.

        `tail`: from the last N lines (of what exists when the server first answers);
        `since` (RFC 3339): only output written at or after it; both hold while following.

        A dropped or cut stream is reopened at the next byte not yet yielded (retries as
        CONTRACT 4), so no byte is lost or repeated. A follow stream that is merely quiet is
        reopened without counting as a failure. The deadline holds on every byte, and a
        line longer than MAX_LOG_LINE_BYTES is an unexpected response (memory stays
        bounded). RunNotFound (404) for an unknown run, and for a server without the logs
        endpoint.
        """
        validate_run_id(run_id)
        deadline = self._deadline(deadline)
        position = offset
        started = False  # once output came, a reopened stream resumes at `position` only

        def params() -> dict:
            query: dict = {"follow": "true" if follow else "false", "offset": position}
            if tail is not None and not started:
                query["tail"] = tail  # counted again from a later end, it would skip lines
            if since is not None:
                query["since"] = since
            return query

        def read(response, url: str) -> Iterator[dict]:
            nonlocal position, started
            for line in iter_lines(response, url, MAX_LOG_LINE_BYTES):
                if self._clock() >= deadline:  # a server that never stops talking
                    raise self._still_running(run_id) if follow else self._timeout_error(url)
                event = parse_log_line(line, url)
                if event is None:
                    continue
                if event.get("event") == "end":
                    yield event
                    return
                chunk = _unseen_part(event, position)
                if chunk is not None:
                    position = chunk["offset"] + len(chunk["data"])
                    started = True
                    yield chunk
            if follow:
                raise e.ConnectionFailed(
                    f"the output stream of {run_id} ended before the run did",
                    run_id=run_id, origin=self.origin)

        try:
            yield from self._request(
                "GET", f"/runs/{run_id}/logs", scope=SCOPE_READ, deadline=deadline,
                params=params,
                headers={"Accept": "application/x-ndjson"}, read=read,
                read_timeout=STREAM_IDLE_TIMEOUT, quiet_is_idle=follow)
        except e.CommandTimeout as error:
            if not follow or error.run_id:
                raise
            raise self._still_running(run_id) from None

    # -- plumbing ------------------------------------------------------------------------
    def _deadline(self, deadline: float | None) -> float:
        return self._clock() + self.timeout if deadline is None else deadline

    def _still_running(self, run_id: str) -> e.CommandTimeout:
        error = e.CommandTimeout(
            f"run {run_id} did not finish within the timeout of {self.timeout:g} s; "
            "it keeps running on the server", run_id=run_id)
        error.timeout = self.timeout
        return error

    def _timeout_error(self, url: str) -> e.CommandTimeout:
        error = e.CommandTimeout(
            f"no answer from {url} within the timeout of {self.timeout:g} s")
        error.timeout = self.timeout
        return error

    def _check_token(self, scope: str) -> None:
        if self._claims is None:
            self._claims = read_claims(self._token)
        check_claims(self._claims, scope)

    def _get_session(self):
        if self._session is None:
            import requests  # here, not at module top: `--help` must not import requests

            self._session = requests.Session()
        return self._session

    def _call(self, method, path, *, scope, params=None, json_body=None, headers=None,
              deadline=None, expect=(200,), shape=None, gone_means_done=False) -> Answer:
        """One API call with retries: its Answer (the body checked by `shape`).

        `gone_means_done` (DELETE): a 404 on a retry, after an attempt whose answer was
        lost, is that attempt's own doing; the call succeeded."""
        def read(response, url: str) -> Iterator[Answer]:
            body = read_body(response, url, lambda: self._clock() > deadline)
            data = None
            if shape is not None:
                # A run's output can be tens of MB: the bytes are dropped once decoded,
                # so bytes, text and the parsed strings are never all alive at once.
                text, body = _json_text(body), None
                data = shape(parse_json(text, response.status_code, url), url,
                             response.status_code)
            yield Answer(data, parse_retry_after(response.headers.get("Retry-After")),
                         _held(response.headers.get("Preference-Applied")))

        deadline = self._deadline(deadline)
        for answer in self._request(method, path, scope=scope, params=params,
                                    json_body=json_body, headers=headers, deadline=deadline,
                                    expect=expect, read=read, gone_means_done=gone_means_done):
            return answer
        raise AssertionError("unreachable: a call's read yields one answer")

    def _request(self, method: str, path: str, *, scope: str, deadline: float,
                 read: Callable[..., Iterator], params=None, json_body=None, headers=None,
                 expect=(200,), read_timeout: float = READ_TIMEOUT,
                 quiet_is_idle: bool = False, gone_means_done: bool = False,
                 body: Callable[[], object] | None = None, retry: bool = True) -> Iterator:
        """THE request function, with the one retry loop. Each attempt sends the request
        and yields what `read(response, url)` yields from an expected answer; any other
        answer or a broken connection is a typed error, retried while `should_retry` says
        so and the pause fits before the deadline. `params` may be a function, called per
        attempt (a resumed stream asks from where it got to). Whatever `read` yields is
        progress: a later failure starts a fresh count. `body` makes a raw request body per
        attempt (an upload is read from its start again); `retry=False` makes one attempt
        only (a body that cannot be read twice, a download whose bytes are already out)."""
        self._check_token(scope)
        url = self.base_url + path
        failures = attempt = 0
        answer_lost = False
        while True:
            attempt += 1
            try:
                with self._transport_errors(url, deadline, quiet_is_idle), \
                        self._send(method, url, params() if callable(params) else params,
                                   json_body, headers, deadline, attempt,
                                   read_timeout, body() if body else None) as response:
                    status = response.status_code
                    if status == 404 and gone_means_done and answer_lost:
                        log.debug("%s %s: 404 after a lost answer, taken as done", method, url)
                        yield Answer(None, None)
                        return
                    if status not in expect:
                        raise error_for(status, read_body(response, url), url,
                                        parse_retry_after(response.headers.get("Retry-After")),
                                        run_path=path.startswith("/runs/"))
                    for item in read(response, url):
                        failures = 0
                        yield item
                return
            except e.ContainersError as error:
                if not retry:
                    raise
                answer_lost = answer_lost or error.answer_lost
                if not getattr(error, "idle", False):
                    failures += 1
                self._pause_before_retry(error, failures, deadline, method, url)

    def _pause_before_retry(self, error: e.ContainersError, failures: int, deadline: float,
                            method: str, url: str) -> None:
        """Sleep before the next attempt, or raise `error` when the policy says no or the
        pause would pass the deadline (the error then records why, for render)."""
        error.attempts = failures
        if not should_retry(error, failures, self.max_retries):
            raise error
        delay = retry_delay(error, failures, random.random())
        if delay >= deadline - self._clock():
            error.gave_up_early, error.timeout = True, self.timeout
            raise error
        log.debug("retrying %s %s in %.2f s", method, url, delay)
        if getattr(error, "idle", False):
            return  # a quiet stream is reopened at once, and silently
        if self.on_retry is not None:
            self.on_retry(error, delay, failures + 1, self.max_retries + 1)
        self._sleep(delay)

    def _send(self, method, url, params, json_body, headers, deadline, attempt,
              read_timeout: float = READ_TIMEOUT, raw_body=None):
        """Send one request; the response comes back open, its body not yet read."""
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise self._timeout_error(url)
        send_headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
            "User-Agent": f"bus-containers/{__version__}",
        }
        if headers:
            send_headers.update(headers)
        data = raw_body  # bytes, a file or an iterator of bytes (sent chunked)
        if json_body is not None:
            data = json.dumps(json_body, ensure_ascii=False).encode("utf-8")
            send_headers["Content-Type"] = "application/json; charset=utf-8"
        started = time.perf_counter()
        status: int | str = "-"
        request_id = None
        try:
            response = self._get_session().request(
                method, url, params=params, data=data, headers=send_headers,
                timeout=(min(CONNECT_TIMEOUT, remaining), min(read_timeout, remaining)),
                allow_redirects=False,  # the token must never follow a redirect elsewhere
                stream=True,
            )
            status = response.status_code
            request_id = next((response.headers[h] for h in REQUEST_ID_HEADERS
                               if h in response.headers), None)
            return response
        finally:
            log.debug("%s %s -> %s in %d ms (attempt %d, request id %s) "
                      "[Authorization: Bearer ***]", method, url, status,
                      (time.perf_counter() - started) * 1000, attempt, request_id or "-")

    @contextlib.contextmanager
    def _transport_errors(self, url: str, deadline: float, quiet_is_idle: bool = False):
        """Map requests' exceptions to typed errors: ConnectionFailed (retryable; `idle`
        for a follow stream that was only quiet), CommandTimeout once the budget is spent."""
        import requests

        try:
            yield
        except (requests.ConnectionError, requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError) as exc:
            if is_read_timeout(exc):
                if deadline - self._clock() <= 0.05:
                    raise self._timeout_error(url) from None
                raise e.ConnectionFailed(f"{url} did not answer in time", answer_lost=True,
                                         idle=quiet_is_idle, origin=self.origin) from None
            if cut_after_connect(exc):
                # Connected, then cut: the server (or a proxy) closed it before a full answer.
                raise e.ConnectionFailed(
                    f"the connection to {url} broke before the answer was complete: "
                    f"{short_reason(exc)}", answer_lost=True, origin=self.origin) from None
            error = e.ConnectionFailed(f"cannot reach {url}: {short_reason(exc)}",
                                       origin=self.origin, refused=connection_refused(exc))
            if error.refused and is_loopback_origin(self.origin):
                # Nothing listens on this machine's port: a stopped server (the local
                # emulator), not a network blip. One quick retry (it may be restarting),
                # not a backoff of seconds before the user hears of it.
                error.retry_limit = LOOPBACK_REFUSED_RETRIES
            raise error from None
        except requests.RequestException as exc:
            raise e.ConnectionFailed(f"request to {url} failed: {short_reason(exc)}",
                                     origin=self.origin, retryable=False) from None


def _held(preference_applied: str | None) -> bool:
    """Whether a server honoured `Prefer: wait` (RFC 7240 `Preference-Applied: wait=N`)."""
    return any(part.strip().lower().startswith("wait")
               for part in (preference_applied or "").split(","))


def _end_event(run: dict) -> dict:
    return {"event": "end", "status": run.get("status"), "exit_code": run.get("exit_code"),
            "output_truncated": run.get("output_truncated"), "run": run}


def _both_streams(run: dict) -> bool:
    return all(isinstance(run.get(name), str) and run[name] for name in ("stdout", "stderr"))


def _lossy(run: dict) -> bool:
    return any(isinstance(run.get(name), str) and "\ufffd" in run[name]
               for name in ("stdout", "stderr"))


def _unseen_part(chunk: dict, position: int) -> dict | None:
    """The part of an output chunk at or after `position` (what a resumed stream may repeat
    is dropped), or None when all of it was already seen."""
    start, data = chunk["offset"], chunk["data"]
    if start + len(data) <= position:
        return None
    if start < position:
        return {**chunk, "offset": position, "data": data[position - start:]}
    return chunk  # start > position: the server skipped bytes (e.g. past its output cap)


def _json_text(body: bytes) -> str | bytes:
    """The body decoded exactly as `json.loads(body)` would decode it, or the bytes
    themselves when they do not decode (for `parse_json` to reject as before)."""
    try:
        return body.decode(json.detect_encoding(body), "surrogatepass")
    except (UnicodeDecodeError, LookupError):
        return body
