"""A server that drips its answer (never silent long enough for a socket timeout) must
not hold a command past its --timeout. Real sockets on 127.0.0.1, real clock."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time

import pytest

from bus_containers import errors as e
from bus_containers.service import ContainersClient

from .helpers import TOKEN


class DripServer:
    """Accepts connections and answers each with `head`, then `drip()` pieces slowly."""

    def __init__(self, head: bytes, piece, interval: float = 0.1):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.head, self.piece, self.interval = head, piece, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(self.head)
                n = 0
                while not self.stop.wait(self.interval):
                    try:
                        conn.sendall(self.piece(n))
                    except OSError:
                        break
                    n += 1

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def drip():
    servers = []

    def make(*args, **kw):
        servers.append(DripServer(*args, **kw))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_a_dripped_json_answer_stops_at_the_deadline(drip):
    server = drip(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100000\r\n\r\n", lambda n: b" ")
    client = ContainersClient(server.url, TOKEN, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(e.CommandTimeout):
        client.status()
    assert time.monotonic() - started < 2.0


def test_a_log_stream_that_never_ends_stops_at_the_deadline(drip):
    def line(n):
        event = {"stream": "stdout", "offset": n, "data_b64": base64.b64encode(b"x").decode()}
        data = json.dumps(event).encode() + b"\n"
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    server = drip(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n", line)
    client = ContainersClient(server.url, TOKEN, timeout=1.0)
    started, got = time.monotonic(), 0
    with pytest.raises(e.CommandTimeout) as caught:
        for _ in client.iter_logs("run_abc", follow=True):
            got += 1
    assert time.monotonic() - started < 2.0
    assert got >= 3 and "run_abc" in caught.value.message
