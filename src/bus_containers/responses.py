"""Reading the server's answers: JSON bodies, their shapes, and the typed error for each
status (the CONTRACT 4 error table). Pure functions of (status, body, url): no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import re

from . import errors as e

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")

# HTTP status -> error class, for well-formed error bodies (CONTRACT 4 error table).
_ERROR_BY_STATUS = {
    400: e.InvalidRequest,
    401: e.AuthError,
    402: e.BillingRequired,
    403: e.Forbidden,
    404: e.RunNotFound,
    409: e.Conflict,
    413: e.TooLarge,
    422: e.InvalidRequest,
}


def _finite(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError("not a finite number")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def strict_json(text: str | bytes):
    """json.loads, but NaN, Infinity and numbers too big for a float are errors: they are
    not JSON (RFC 8259), and `--json` must print only what a JSON parser accepts."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite)


def parse_json(body: bytes, status: int, url: str):
    if not body:
        return None
    try:
        return strict_json(body)
    except (ValueError, RecursionError):
        raise e.UnexpectedResponse(f"unexpected response from {url} (HTTP {status})",
                                   status=status) from None


def error_body(body: bytes) -> dict | None:
    """The `error` object of a well-formed error body, or None."""
    try:
        data = strict_json(body) if body else None
    except (ValueError, RecursionError):
        return None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str) \
            and isinstance(error.get("message"), str):
        return error
    return None


def error_for(status: int, body: bytes, url: str, retry_after: float | None,
              run_path: bool = True) -> e.ContainersError:
    """The typed error for an answer outside the expected statuses. Whether it is worth
    another try is on the error (`retryable`, `retry_after`), not decided here."""
    error = error_body(body)
    code = error["code"] if error else None
    extra = {"status": status, "retry_after": retry_after}
    if error:
        extra.update({k: error[k] for k in ("guidance", "url") if isinstance(error.get(k), str)})
    if status >= 500 or (status == 429 and code != "quota_exhausted"):
        message = error["message"] if error else f"HTTP {status}"
        if status == 429:
            return e.RateLimited(f"rate limited by {url}: {message}", **extra)
        return e.ServerError(f"server error from {url} (HTTP {status}): {message}", **extra)
    if error is None or status < 400:
        return e.UnexpectedResponse(f"unexpected response from {url} (HTTP {status})",
                                    status=status)
    # An empty message would print as a bare "Error:": say at least what came back.
    message = error["message"].strip() or f"{url} answered HTTP {status} ({code or 'no code'})"
    if status == 429:
        return e.QuotaExhausted(message, **extra)
    if status == 401:
        cls = e.TokenExpired if code == "token_expired" else e.AuthError
        return cls(message, code=code, **extra)
    if status == 403:
        scope = error.get("scope") if isinstance(error.get("scope"), str) else None
        if scope and scope not in message:
            message += f" (needs scope '{scope}')"
        cls = e.MissingScope if code == "insufficient_scope" else e.Forbidden
        return cls(message, scope=scope, **extra)
    if status == 404 and not run_path:
        # Not a run that is missing: the endpoint itself is, so the origin is probably wrong.
        return e.EndpointNotFound(f"{url} was not found (HTTP 404): {message}", **extra)
    cls = _ERROR_BY_STATUS.get(status, e.ApiError)
    if status == 409 and code == "run_not_finished":
        cls = e.RunNotFinished
    if status == 413 and code != "too_large":
        cls = e.ApiError  # a body over the server's request limit: not a plan's limit
    return cls(message, code=code, **extra)


def check_status(data, url: str, status: int) -> dict:
    if not (isinstance(data, dict) and isinstance(data.get("status"), str)):
        raise e.UnexpectedResponse(
            f"unexpected response from {url} (HTTP {status}): not a status object",
            status=status)
    return data


def check_run(data, url: str, status: int) -> dict:
    if not (isinstance(data, dict) and isinstance(data.get("id"), str)
            and isinstance(data.get("status"), str)):
        raise e.UnexpectedResponse(
            f"unexpected response from {url} (HTTP {status}): not a run object",
            status=status)
    return data


def check_created_run(data, url: str, status: int) -> dict:
    """A new run's id is what we poll (and what the user is told): it must be a valid id,
    else a bad server answer would surface as a usage error (exit 2) of the user's."""
    run = check_run(data, url, status)
    if not RUN_ID_PATTERN.fullmatch(run["id"]):
        raise e.UnexpectedResponse(
            f"unexpected response from {url} (HTTP {status}): not a valid run id",
            status=status)
    return run


def check_usage(data, url: str, status: int) -> dict:
    """A usage document: an object; its parts are shown as far as they have the API's
    shape (a newer server may add limits, or billing words)."""
    if not (isinstance(data, dict) and isinstance(data.get("plan"), str)):
        raise e.UnexpectedResponse(
            f"unexpected response from {url} (HTTP {status}): not a usage document",
            status=status)
    return data


def check_run_page(data, url: str, status: int) -> dict:
    runs = data.get("runs") if isinstance(data, dict) else None
    cursor = data.get("next_cursor") if isinstance(data, dict) else None
    if not isinstance(runs, list) or not (cursor is None or isinstance(cursor, str)):
        raise e.UnexpectedResponse(
            f"unexpected response from {url} (HTTP {status}): not a list of runs",
            status=status)
    for run in runs:
        check_run(run, url, status)
    return data


def parse_log_line(line: bytes, url: str) -> dict | None:
    """One NDJSON line of the logs endpoint: an output chunk `{"stream", "offset", "data"}`,
    the `{"event": "end", ...}` line, or None for blank lines and events we don't know
    (the API may grow)."""
    if not line.strip():
        return None
    try:
        event = strict_json(line)
    except (ValueError, RecursionError):
        event = None
    if not isinstance(event, dict):
        raise e.UnexpectedResponse(f"unexpected response from {url}: a log line is not JSON")
    if event.get("event") == "end":
        return event
    if "data_b64" not in event:
        return None
    stream, offset, encoded = event.get("stream"), event.get("offset"), event.get("data_b64")
    if (stream not in ("stdout", "stderr") or not isinstance(encoded, str)
            or not isinstance(offset, int) or isinstance(offset, bool) or offset < 0):
        raise e.UnexpectedResponse(f"unexpected response from {url}: a malformed log line")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise e.UnexpectedResponse(
            f"unexpected response from {url}: a log line's data is not base64") from None
    chunk = {"stream": stream, "offset": offset, "data": data}
    if isinstance(event.get("time"), str):
        chunk["time"] = event["time"]  # when it was written (CONTRACT 9), for `logs -t`
    return chunk
