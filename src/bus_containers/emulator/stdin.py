"""A run's stdin: a pipe whose read end the runner gives the command, and whose write end
one `PUT /runs/{id}/stdin` request feeds.

The request body is written into the pipe as it arrives: a full pipe blocks the handler,
which then stops reading the socket (back-pressure all the way to the client), so memory
stays bounded whatever the size. The body's end closes the write end: the command's EOF.
Bytes sent before the process starts wait in the pipe.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable


class StdinClaimed(Exception):
    """Another request already sent this run's stdin."""


class StdinFeed:
    def __init__(self) -> None:
        # Both ends are close-on-exec: only the command gets the read end (as its fd 0).
        self.read_fd, self._write_fd = os.pipe()
        self._lock = threading.Lock()
        self._claimed = False
        self._closed = False  # the run ended: nothing reads any more

    def close(self, *, reader_too: bool = False) -> None:
        """The run is over. An unclaimed write end is closed here; a claimed one by its
        writer (which gets EPIPE now that no process reads). `reader_too`: the run never
        started, so the read end was never handed to the runner."""
        with self._lock:
            self._closed = True
            if not self._claimed and self._write_fd >= 0:
                os.close(self._write_fd)
                self._write_fd = -1
        if reader_too:
            with contextlib.suppress(OSError):
                os.close(self.read_fd)

    def claim(self) -> int | None:
        """The write end for one request; None if the run is already over."""
        with self._lock:
            if self._claimed:
                raise StdinClaimed()
            if self._closed:
                return None
            self._claimed = True
            return self._write_fd

    def feed(self, body: Iterable[bytes], limit: int | None) -> tuple[int, bool]:
        """Copy `body` into the claimed pipe, then close it: (bytes written, over_limit).

        Stops early, without error, when the command stopped reading (EPIPE). A client that
        goes away mid-body ends the command's stdin there too (there is no resuming)."""
        fd = self._write_fd
        written = 0
        over = False
        try:
            for chunk in body:
                if limit is not None and written + len(chunk) > limit:
                    over = True
                    break
                view = memoryview(chunk)
                while view:
                    n = os.write(fd, view)  # blocks while the pipe is full
                    view = view[n:]
                    written += n
        except BrokenPipeError:
            pass  # the command exited or closed its stdin: like a shell pipeline
        finally:
            with self._lock:
                os.close(fd)
                self._write_fd = -1
        return written, over
