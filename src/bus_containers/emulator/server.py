"""The HTTP server around the app: threaded werkzeug, JSON even for malformed HTTP,
and shutdown that leaves no child process and no temp dir behind."""

from __future__ import annotations

import atexit
import json
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

from werkzeug.serving import (
    BaseWSGIServer,
    WSGIRequestHandler,
    get_sockaddr,
    make_server,
    select_address_family,
)

from .app import EmulatorApp
from .config import Config, default_config


class _Handler(WSGIRequestHandler):
    """Werkzeug's handler, quiet (the app logs one line per request) and never HTML."""

    def log_request(self, code="-", size="-") -> None:
        pass

    def log_error(self, format: str, *args) -> None:
        pass

    def log_message(self, format: str, *args) -> None:
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None
                   ) -> None:
        # http.server answers unparsable requests itself, with an HTML page by default.
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


def url_of(server: BaseWSGIServer) -> str:
    host, port = server.server_address[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def build_server(app: EmulatorApp, host: str, port: int) -> BaseWSGIServer:
    """A threaded server on host:port. Binding failures raise OSError (werkzeug would print
    its own message and exit; binding here first lets the caller word the error)."""
    family = select_address_family(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(get_sockaddr(host, port, family))
        sock.listen(128)
        return make_server(host, port, app, threaded=True, request_handler=_Handler,
                           fd=sock.fileno())
    finally:
        sock.close()  # the server holds its own duplicate of the descriptor


@dataclass
class Handle:
    """An emulator served from a thread of this process (unit tests)."""

    app: EmulatorApp
    server: BaseWSGIServer
    thread: threading.Thread
    url: str

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(10)
        self.server.server_close()
        self.app.shutdown()

    def __enter__(self) -> Handle:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_in_thread(state_dir: Path | str, config: Config | None = None,
                    host: str = "127.0.0.1", log=None) -> Handle:
    app = EmulatorApp(Path(state_dir), config or default_config(), log=log or (lambda _: None))
    server = build_server(app, host, 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="emulator", daemon=True)
    thread.start()
    handle = Handle(app, server, thread, url_of(server))
    atexit.register(app.shutdown)
    return handle
