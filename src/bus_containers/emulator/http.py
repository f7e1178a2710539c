"""HTTP helpers shared by the API and the admin endpoints: JSON bodies, JSON errors,
the loopback test, and one-line printable log text. No emulator state lives here."""

from __future__ import annotations

import ipaddress
import json
import sys
import time
from typing import Any

from werkzeug.wrappers import Response

from .errors import ApiError

# The server bounds how long a request body may go without a byte (a trickled body must
# not hold a connection forever). An endpoint whose body is a stream with pauses (a run's
# stdin) calls environ[STREAM_BODY]() to lift that bound for its request.
STREAM_BODY = "bus_emulator.stream_body"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    return Response(json.dumps(body), status, headers=headers, mimetype="application/json")


def error_response(e: ApiError) -> Response:
    return json_response(e.body(), e.status, e.headers)


def is_loopback(addr: str | None) -> bool:
    """Whether the socket peer is on loopback. Only the peer address counts: headers
    such as X-Forwarded-For are the client's word and are never consulted."""
    try:
        ip = ipaddress.ip_address((addr or "").split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def printable(text: str, limit: int = 200) -> str:
    # Paths come from clients: keep log lines one line each and readable.
    text = text if len(text) <= limit else text[:limit] + "..."
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


def stderr_log(line: str) -> None:
    try:
        sys.stderr.write(time.strftime("%H:%M:%S ") + line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr closed: logging must never break a request
