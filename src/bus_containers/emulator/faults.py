"""Fault injection: rules that make the next matching requests misbehave.

A rule matches on method and path, is consumed `count` times (-1: for ever), and turns the
request into one of the failures a client must survive: an error status, a delay, a dropped
connection (before or in the middle of a response), a body that is HTML, truncated JSON,
JSON of the wrong shape, an enormous body, a redirect, or a run that never finishes.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from .errors import invalid

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]

_COMMON = {"action", "method", "path", "path_prefix", "path_suffix", "count"}
OPTIONS: dict[str, set[str]] = {
    "status": {"status", "code", "message", "retry_after", "guidance", "url"},
    "delay": {"seconds"},
    "drop": {"when"},
    "drop_mid": {"after_lines"},
    "html": {"status", "body"},
    "truncated_json": set(),
    "wrong_shape": {"body"},
    "huge": {"bytes"},
    "redirect": {"status", "location"},
    "pending": set(),
}
DEFAULT_CODES = {400: "invalid_request", 401: "unauthenticated", 402: "billing_required",
                 403: "forbidden", 404: "not_found", 409: "conflict", 413: "payload_too_large",
                 422: "invalid_request", 429: "rate_limited", 500: "internal",
                 502: "bad_gateway", 503: "unavailable", 504: "gateway_timeout"}


@dataclass
class Rule:
    action: str
    count: int = 1
    method: str | None = None
    path: str | None = None
    path_prefix: str | None = None
    path_suffix: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def matches(self, method: str, path: str) -> bool:
        return ((self.method is None or self.method == method)
                and (self.path is None or self.path == path)
                and (self.path_prefix is None or path.startswith(self.path_prefix))
                and (self.path_suffix is None or path.endswith(self.path_suffix)))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action, "count": self.count}
        for key in ("method", "path", "path_prefix", "path_suffix"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out.update(self.options)
        return out


def parse_rule(data: Any) -> Rule:
    if not isinstance(data, dict):
        raise invalid("each fault must be a JSON object")
    action = data.get("action")
    if action not in OPTIONS:
        raise invalid(f"fault action must be one of {', '.join(sorted(OPTIONS))}")
    unknown = set(data) - _COMMON - OPTIONS[action]
    if unknown:
        raise invalid(f"unknown field(s) for fault {action!r}: {', '.join(sorted(unknown))}")
    count = data.get("count", 1)
    if not _is_int(count) or not (count >= 1 or count == -1):
        raise invalid("fault count must be a positive integer, or -1 for ever")
    rule = Rule(action, count)
    for key in ("method", "path", "path_prefix", "path_suffix"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise invalid(f"fault {key} must be a string")
        setattr(rule, key, value.upper() if key == "method" and value else value)
    rule.options = {k: data[k] for k in OPTIONS[action] if k in data}
    _check_options(action, rule.options)
    return rule


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_options(action: str, o: dict[str, Any]) -> None:
    def number(key: str, lo: float, hi: float, integer: bool = True) -> None:
        v = o.get(key)
        if v is None:
            return
        ok = _is_int(v) if integer else isinstance(v, (int, float)) and not isinstance(v, bool)
        if not ok or not lo <= v <= hi:
            raise invalid(f"fault {key} must be a number between {lo:g} and {hi:g}")

    if action == "status" and "status" not in o:
        raise invalid("a 'status' fault needs a status, e.g. 503")
    lo, hi = (300, 399) if action == "redirect" else (100, 599)
    number("status", lo, hi)
    number("seconds", 0, 600, integer=False)
    number("after_lines", 0, 10**9)
    number("bytes", 2, 2**34)
    for key in ("code", "message", "guidance", "url", "location", "body"):
        if key in o and not isinstance(o[key], str) and not (key == "body"
                                                             and action == "wrong_shape"):
            raise invalid(f"fault {key} must be a string")
    if "retry_after" in o:
        if isinstance(o["retry_after"], bool) or not isinstance(o["retry_after"], (str, int)):
            raise invalid("fault retry_after must be a string (seconds or an HTTP date)")
        o["retry_after"] = str(o["retry_after"])
    if o.get("when", "before") not in ("before", "after"):
        raise invalid("fault when must be 'before' or 'after'")


class FaultSet:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Rule] = []

    def add(self, items: Any) -> int:
        if not isinstance(items, list):
            raise invalid("faults must be a JSON array of fault objects")
        rules = [parse_rule(item) for item in items]  # all valid, or none added
        with self._lock:
            self._rules.extend(rules)
            return len(self._rules)

    def clear(self) -> int:
        with self._lock:
            n, self._rules = len(self._rules), []
            return n

    def take(self, method: str, path: str) -> Rule | None:
        """The first rule matching this request, consuming one of its uses."""
        with self._lock:
            for i, rule in enumerate(self._rules):
                if rule.matches(method, path):
                    if rule.count > 0:
                        rule.count -= 1
                        if rule.count == 0:
                            del self._rules[i]
                    return rule
        return None

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.to_json() for r in self._rules]


# -- applying a rule: each returns a WSGI app wrapping the real one ------------------------

def apply(rule: Rule, inner: WSGIApp, sleep: Callable[[float], None]) -> WSGIApp:
    o = rule.options
    if rule.action == "status":
        status = o["status"]
        body = {"code": o.get("code", DEFAULT_CODES.get(status, "error")),
                "message": o.get("message", f"injected fault: HTTP {status}")}
        body.update({k: o[k] for k in ("guidance", "url") if k in o})
        headers = [("Retry-After", o["retry_after"])] if "retry_after" in o else []
        return _fixed(status, "application/json", json.dumps({"error": body}).encode(), headers)
    if rule.action == "delay":
        def delayed(environ, start_response):
            sleep(o.get("seconds", 1))
            return inner(environ, start_response)
        return delayed
    if rule.action == "drop":
        return _drop_after(inner) if o.get("when") == "after" else _drop_before
    if rule.action == "drop_mid":
        return _drop_mid(inner, o.get("after_lines"))
    if rule.action == "html":
        body = o.get("body", "<!doctype html><html><head><title>502 Bad Gateway</title></head>"
                             "<body><h1>Bad Gateway</h1><p>nginx</p></body></html>")
        return _fixed(o.get("status", 200), "text/html; charset=utf-8", body.encode())
    if rule.action == "truncated_json":
        return _rewrite(inner, _truncate)
    if rule.action == "wrong_shape":
        body = json.dumps(o.get("body", {"unexpected": True})).encode()
        return _fixed(200, "application/json", body)
    if rule.action == "huge":
        return _huge(o.get("bytes", 50_000_000))
    if rule.action == "redirect":
        location = o.get("location", "http://127.0.0.2:9/elsewhere")
        return _fixed(o.get("status", 302), "text/plain", b"", [("Location", location)])
    if rule.action == "pending":
        return _rewrite(inner, _pending)
    raise AssertionError(rule.action)  # parse_rule only lets known actions through


def _status_line(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Status"


def _fixed(status: int, ctype: str, body: bytes, headers: list | None = None) -> WSGIApp:
    def app(environ, start_response):
        start_response(_status_line(status), [("Content-Type", ctype),
                                              ("Content-Length", str(len(body))),
                                              *(headers or [])])
        return [body]
    return app


def cut_connection(environ: dict) -> None:
    """Close the client connection for real: werkzeug then treats it as dropped."""
    sock = environ.get("werkzeug.socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    # Raising a ConnectionError from the response iterable makes werkzeug's server stop
    # writing and log nothing (it treats it as a client that went away).
    raise ConnectionAbortedError("connection dropped by fault injection")


def _drop_before(environ, start_response):
    def gen() -> Iterator[bytes]:
        cut_connection(environ)
        yield b""  # pragma: no cover - unreachable, makes this a generator
    return gen()


def _call(inner: WSGIApp, environ: dict) -> tuple[str, list, bytes]:
    captured: dict[str, Any] = {}

    def start_response(status, headers, exc_info=None):
        captured["status"], captured["headers"] = status, headers
        return lambda data: None

    it = inner(environ, start_response)
    try:
        body = b"".join(it)
    finally:
        if hasattr(it, "close"):
            it.close()
    return captured["status"], captured["headers"], body


def _drop_after(inner: WSGIApp) -> WSGIApp:
    def app(environ, start_response):
        _call(inner, environ)  # the request is fully handled; only the answer is lost
        return _drop_before(environ, start_response)
    return app


def _drop_mid(inner: WSGIApp, after_lines: int | None) -> WSGIApp:
    def app(environ, start_response):
        captured: dict[str, Any] = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        it = inner(environ, capture)
        headers = captured["headers"]
        ctype = dict((k.lower(), v) for k, v in headers).get("content-type", "")
        if "ndjson" in ctype:
            # A stream: pass `after_lines` lines (default 1) through, then cut.
            start_response(captured["status"], headers)
            return _cut_after(environ, it, 1 if after_lines is None else after_lines)
        try:
            body = b"".join(it)
        finally:
            if hasattr(it, "close"):
                it.close()
        declared = max(len(body), 64)
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        start_response(captured["status"], [*headers, ("Content-Length", str(declared))])

        def gen() -> Iterator[bytes]:
            yield body[: len(body) // 2]
            cut_connection(environ)
        return gen()
    return app


def _cut_after(environ: dict, it: Iterable[bytes], lines: int) -> Iterator[bytes]:
    try:
        sent = 0
        for part in it:
            if sent >= lines:
                break
            yield part
            sent += part.count(b"\n")
        cut_connection(environ)
    finally:
        if hasattr(it, "close"):
            it.close()


def _rewrite(inner: WSGIApp, change: Callable[[str, list, bytes, dict], tuple]) -> WSGIApp:
    def app(environ, start_response):
        status, headers, body = change(*_call(inner, environ), environ)
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        start_response(status, [*headers, ("Content-Length", str(len(body)))])
        return [body]
    return app


def _truncate(status: str, headers: list, body: bytes, environ: dict) -> tuple:
    if len(body) < 4:
        body = b'{"status": "ready", "message": "this body was cut"}'
    headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
    return "200 OK", [*headers, ("Content-Type", "application/json")], body[: len(body) // 2]


def _pending(status: str, headers: list, body: bytes, environ: dict) -> tuple:
    """Show the run as still running, whatever it really is: a server stuck at 202."""
    try:
        run = json.loads(body)
    except ValueError:
        return status, headers, body
    if not isinstance(run, dict) or "id" not in run or "status" not in run:
        return status, headers, body
    run.update(status="running", exit_code=None, finished_at=None)
    headers = [(k, v) for k, v in headers if k.lower() not in ("retry-after", "location")]
    if environ.get("REQUEST_METHOD") == "POST":
        status = "202 Accepted"
        headers += [("Retry-After", "1"), ("Location", f"/api/v1/containers/runs/{run['id']}")]
    return status, headers, json.dumps(run).encode()


def _huge(size: int) -> WSGIApp:
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(size))])

        def gen() -> Iterator[bytes]:
            # `{"pad":"xxxx...x"}`, exactly `size` bytes, in 64 KiB pieces.
            head, tail = b'{"pad":"', b'"}'
            if size < len(head) + len(tail):
                yield b"x" * size
                return
            yield head
            left = size - len(head) - len(tail)
            block = b"x" * 65536
            while left > 0:
                n = min(left, len(block))
                yield block[:n]
                left -= n
            yield tail
        return gen()
    return app
