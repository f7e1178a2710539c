"""The HTTP server around the app: threaded werkzeug, hardened against slow and idle
clients, JSON even for malformed HTTP, and shutdown that leaves no child process and no
temp dir behind.

Werkzeug gives each connection a thread and, on its own, waits for a request head forever.
Here (see docs/architecture.md for why werkzeug is kept):

- a connection that sends nothing is closed after `idle_timeout_seconds`, and one must
  send its whole request head (request line and headers, at most 64 KiB, else 431)
  within `header_timeout_seconds` of being accepted, however slowly it trickles; once the
  head is in, a body may go `body_idle_timeout_seconds` without a byte (then it counts as
  cut off: 400), except a run's stdin, which may pause as long as its user does; responses
  (a followed log) are never timed;
- at most `max_connections` are open at once (fewer when the open-file limit is low).
  Past it, a new connection takes the place of the oldest one still waiting for its head
  (idle and half-sent connections are what an attacker can make cheaply, and what a real
  client never leaves waiting); if every connection is busy with a request, the new one
  is answered `503` with `Retry-After` from the accept loop itself, without a thread.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import io
import json
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from werkzeug.serving import (
    ThreadedWSGIServer,
    WSGIRequestHandler,
    get_sockaddr,
    select_address_family,
)

from .app import EmulatorApp
from .config import Config, Limits, default_config
from .http import STREAM_BODY

MAX_HEAD_BYTES = 64 * 1024
LISTEN_BACKLOG = 1024
RETRY_AFTER_SECONDS = 1


class _HeadTooLarge(Exception):
    pass


class _HeadReader(io.RawIOBase):
    """The connection's input. Until the request head is complete, each read waits only
    until the head's deadline (an idle deadline before the first byte) and counts bytes
    against MAX_HEAD_BYTES; after it, a read that gets nothing for the body idle time is
    the end of the stream (the app then reports a cut-off body), unless lifted. Writes are
    never timed: the timeout is set around each read only."""

    def __init__(self, sock: socket.socket, limits: Limits):
        self._sock = sock
        self._accepted = time.monotonic()
        self._head_deadline = self._accepted + limits.header_timeout_seconds
        self._deadline: float | None = self._accepted + min(limits.idle_timeout_seconds,
                                                            limits.header_timeout_seconds)
        self._head_bytes = 0
        self._body_idle: float | None = limits.body_idle_timeout_seconds

    def readable(self) -> bool:
        return True

    def head_done(self) -> None:
        self._deadline = None

    def stream_body(self) -> None:
        """This request's body may pause for as long as it likes (a run's stdin)."""
        self._body_idle = None

    def readinto(self, buffer) -> int:
        if self._deadline is None:
            if self._body_idle is None:
                return self._sock.recv_into(buffer)
            self._sock.settimeout(self._body_idle)
            try:
                return self._sock.recv_into(buffer)
            except TimeoutError:
                return 0  # nothing for too long: treated as a client that went away
            finally:
                self._sock.settimeout(None)
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no complete request head in time")
        self._sock.settimeout(left)
        try:
            n = self._sock.recv_into(buffer)
        finally:
            self._sock.settimeout(None)  # writes (an error answer) are not cut short
        if n and self._head_bytes == 0:
            self._deadline = self._head_deadline  # something came: the head's own limit
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD_BYTES:
            raise _HeadTooLarge
        return n


class _Connections:
    """Open connections, oldest first, each either waiting for its request head or busy
    with a request; the cap, and which connection gives way to a new one."""

    def __init__(self, cap: int):
        self.cap = cap
        self._lock = threading.Lock()
        self._waiting: OrderedDict[socket.socket, None] = OrderedDict()
        self._busy: set[socket.socket] = set()
        self.evicted = 0
        self.refused = 0

    def admit(self, sock: socket.socket) -> bool:
        with self._lock:
            if len(self._waiting) + len(self._busy) >= self.cap:
                if not self._waiting:
                    self.refused += 1
                    return False
                oldest, _ = self._waiting.popitem(last=False)
                self.evicted += 1
                # Its thread, blocked reading, sees the end of the stream and closes it.
                with contextlib.suppress(OSError):
                    oldest.shutdown(socket.SHUT_RDWR)
            self._waiting[sock] = None
            return True

    def busy(self, sock: socket.socket) -> bool:
        """Mark `sock` busy; False if it was evicted meanwhile."""
        with self._lock:
            if sock in self._waiting:
                del self._waiting[sock]
                self._busy.add(sock)
                return True
            return sock in self._busy

    def release(self, sock: socket.socket) -> None:
        with self._lock:
            self._waiting.pop(sock, None)
            self._busy.discard(sock)

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return len(self._waiting), len(self._busy)


def connection_cap(limits: Limits) -> int:
    """max_connections, lowered so that connections leave a quarter of the open-file
    limit (at least 32 descriptors) to runs, pipes and the database."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return limits.max_connections
    if soft == resource.RLIM_INFINITY:
        return limits.max_connections
    return min(limits.max_connections, max(8, soft - max(32, soft // 4)))


class _Server(ThreadedWSGIServer):
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, host: str, port: int, app: EmulatorApp, fd: int):
        super().__init__(host, port, app, handler=_Handler, fd=fd)
        self.limits = app.config.limits
        self.connections = _Connections(connection_cap(self.limits))
        app.long_requests.set_connection_cap(self.connections.cap)

    def get_request(self):
        try:
            return super().get_request()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                # Out of descriptors: the listening socket stays readable, so without a
                # pause the accept loop would spin; give finishing requests a moment.
                time.sleep(0.05)
            raise

    def process_request(self, request, client_address) -> None:
        if not self.connections.admit(request):
            _refuse(request)
            return
        try:
            super().process_request(request, client_address)  # a thread for it
        except RuntimeError:  # cannot start a thread: answer as if full
            self.connections.release(request)
            _refuse(request)

    def shutdown_request(self, request) -> None:
        self.connections.release(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        pass  # the handler reports what matters; never a traceback on the log


_BUSY_BODY = json.dumps({"error": {
    "code": "unavailable",
    "message": "the emulator has too many open connections; retry shortly"}}).encode()
_BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    + f"Retry-After: {RETRY_AFTER_SECONDS}\r\nContent-Length: {len(_BUSY_BODY)}\r\n".encode()
    + b"Cache-Control: no-store\r\nConnection: close\r\n\r\n" + _BUSY_BODY)


def _refuse(sock: socket.socket) -> None:
    """503 from the accept loop: one non-blocking send, then close. What the client had
    already sent is read first (without waiting), so the close does not reset the
    connection before the client reads the answer."""
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        sock.send(_BUSY_RESPONSE)
        sock.shutdown(socket.SHUT_WR)
        with contextlib.suppress(BlockingIOError):
            sock.recv(MAX_HEAD_BYTES)
    with contextlib.suppress(OSError):
        sock.close()


class _Handler(WSGIRequestHandler):
    """Werkzeug's handler with deadlines on the request head, quiet (the app logs one line
    per request) and never HTML."""

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # replaced: the head is read under the deadlines
        self._reader = _HeadReader(self.connection, self.server.limits)
        self.rfile = io.BufferedReader(self._reader, MAX_HEAD_BYTES)

    def make_environ(self):
        environ = super().make_environ()
        environ[STREAM_BODY] = self._reader.stream_body
        return environ

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except _HeadTooLarge:
            self.send_error(431, "the request head is larger than 64 KiB")
        except TimeoutError:
            self.close_connection = True  # idle, or a head trickled too slowly: drop it

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok:
            self._reader.head_done()
            if not self.server.connections.busy(self.connection):
                self.close_connection = True
                return False  # evicted while its head was completing
        return ok

    def log_request(self, code="-", size="-") -> None:
        pass

    def log_error(self, format: str, *args) -> None:
        pass

    def log_message(self, format: str, *args) -> None:
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None
                   ) -> None:
        # http.server answers unparsable requests itself, with an HTML page by default.
        if not hasattr(self, "request_version"):  # failed before the request line
            self.request_version, self.command = "HTTP/1.0", None
        body = json.dumps({"error": {"code": "invalid_request" if code < 500 else "internal",
                                     "message": message or "malformed HTTP request"}}).encode()
        try:
            self.send_response(code, message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)
        except OSError:
            pass
        self.close_connection = True


def url_of(server: ThreadedWSGIServer) -> str:
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def build_server(app: EmulatorApp, host: str, port: int) -> ThreadedWSGIServer:
    """A threaded server on host:port. Binding failures raise OSError (werkzeug would print
    its own message and exit; binding here first lets the caller word the error)."""
    family = select_address_family(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(get_sockaddr(host, port, family))
        sock.listen(LISTEN_BACKLOG)
        return _Server(host, port, app, fd=sock.fileno())
    finally:
        sock.close()  # the server holds its own duplicate of the descriptor


@dataclass
class Handle:
    """An emulator served from a thread of this process (unit tests)."""

    app: EmulatorApp
    server: ThreadedWSGIServer
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(10)
        self.server.server_close()
        self.app.shutdown()
        atexit.unregister(self.app.shutdown)  # else every stopped test app stays referenced

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_in_thread(state_dir: Path | str, config: Config | None = None,
                    host: str = "127.0.0.1", log=None, durable: bool = False) -> Handle:
    """`durable`: keep runs in `<state_dir>/state.db` (as `serve --state-dir`), not in memory."""
    state_dir = Path(state_dir)
    app = EmulatorApp(state_dir, config or default_config(), log=log or (lambda _: None),
                      database=state_dir / "state.db" if durable else None)
    server = build_server(app, host, 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="emulator", daemon=True)
    thread.start()
    handle = Handle(app, server, thread, url_of(server))
    atexit.register(app.shutdown)
    return handle
