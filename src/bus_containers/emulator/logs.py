"""The logs endpoint's NDJSON stream: output chunks from an offset, then an end line.

A follower sleeps on the run's condition (woken by new output or the end), with a timeout
only to notice a client that went away or a server that is stopping: no busy waiting.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
from collections.abc import Iterator

from .model import Run

IDLE_CHECK_SECONDS = 1.0


def stream(run: Run, offset: int, follow: bool, stopping: threading.Event,
           sock: socket.socket | None) -> Iterator[bytes]:
    # An empty first piece makes werkzeug send the status and headers now, so a follower
    # of a silent run knows at once that the stream is open.
    yield b""
    pos = offset
    while True:
        chunks, final = run.chunks_from(pos)
        for name, start, data in chunks:
            line = {"stream": name, "offset": start,
                    "data_b64": base64.b64encode(data).decode("ascii")}
            yield json.dumps(line).encode() + b"\n"
            pos = start + len(data)
        if final:
            with run.cond:
                end = {"event": "end", "status": run.status, "exit_code": run.exit_code}
            yield json.dumps(end).encode() + b"\n"
            return
        if not follow:
            return
        _wait_for_more(run, pos, stopping)
        if stopping.is_set() or _client_gone(sock):
            return


def _client_gone(sock: socket.socket | None) -> bool:
    if sock is None:
        return False
    try:
        with contextlib.suppress(BlockingIOError):
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except OSError:
        return True
    return False


def _wait_for_more(run: Run, pos: int, stopping: threading.Event) -> None:
    with run.cond:
        run.cond.wait_for(lambda: run.captured > pos or run.finished or stopping.is_set(),
                          timeout=IDLE_CHECK_SECONDS)
