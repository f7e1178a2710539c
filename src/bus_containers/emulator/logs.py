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

from .model import Run, rfc3339

IDLE_CHECK_SECONDS = 1.0


def stream(run: Run, offset: int, follow: bool, stopping: threading.Event,
           sock: socket.socket | None, *, tail: int | None = None,
           since: float | None = None) -> Iterator[bytes]:
    """`tail`: start at the last `tail` lines of the output there is now (never before
    `offset`); `since`: only chunks written at or after that time (following included)."""
    # An empty first piece makes werkzeug send the status and headers now, so a follower
    # of a silent run knows at once that the stream is open.
    yield b""
    pos = offset if tail is None else max(offset, tail_offset(run, tail))
    while True:
        chunks, final = run.chunks_from(pos)
        for name, start, data, written in chunks:
            pos = start + len(data)
            if since is not None and written < since:
                continue
            line = {"stream": name, "offset": start, "time": rfc3339(written),
                    "data_b64": base64.b64encode(data).decode("ascii")}
            yield json.dumps(line).encode() + b"\n"
        if final:
            with run.cond:
                # output_truncated: a client that streamed the output can say it was cut
                end = {"event": "end", "status": run.status, "exit_code": run.exit_code,
                       "output_truncated": run.truncated}
            yield json.dumps(end).encode() + b"\n"
            return
        if not follow:
            if chunks:
                continue  # a long output comes in several reads
            return
        _wait_for_more(run, pos, stopping)
        if stopping.is_set() or _client_gone(sock):
            return


def tail_offset(run: Run, lines: int) -> int:
    """Where the last `lines` lines of the output so far start. Lines end with a newline,
    counted over both streams together; an unfinished last line counts as one."""
    chunks, _ = run.chunks_from(0)
    end = chunks[-1][1] + len(chunks[-1][2]) if chunks else 0
    if lines == 0:
        return end
    newlines = 0
    for _, start, data, _ in reversed(chunks):
        stop = len(data)
        if start + stop == end and data.endswith(b"\n"):
            stop -= 1  # the newline that ends the last line separates nothing
        while (i := data.rfind(b"\n", 0, stop)) != -1:
            newlines += 1
            if newlines == lines:
                return start + i + 1
            stop = i
    return 0


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
