"""The wire under the client: reading bodies as they arrive, and telling apart the ways a
request can fail (timeouts, cut connections, unreachable servers). No retries here: the
service decides what to do with each failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from . import errors as e

MAX_BODY_BYTES = 256 * 1024 * 1024  # a run's output can be large; a body past this is refused


def is_read_timeout(exc: Exception) -> bool:
    import requests
    from urllib3.exceptions import ReadTimeoutError

    if isinstance(exc, requests.ReadTimeout):
        return True
    # While a streamed body is read, requests wraps urllib3's read timeout in ConnectionError.
    return any(isinstance(arg, ReadTimeoutError) for arg in exc.args)


def cut_after_connect(exc: Exception) -> bool:
    """The connection was made and the request sent, then the connection broke (aborted,
    reset, closed without an answer, a body cut short): the request may have been done."""
    import requests
    from urllib3.exceptions import ProtocolError

    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return True
    return isinstance(exc.args[0] if exc.args else None, ProtocolError)


def connection_refused(exc: Exception) -> bool:
    """Nothing listens at the address (ECONNREFUSED, under urllib3's wrappers)."""
    seen: list[BaseException] = []
    todo: list[object] = [exc]
    while todo and len(seen) < 20:  # the chain is short; the bound guards against cycles
        item = todo.pop()
        if not isinstance(item, BaseException) or item in seen:
            continue
        if isinstance(item, ConnectionRefusedError):
            return True
        seen.append(item)
        todo += [item.__cause__, item.__context__, getattr(item, "reason", None), *item.args]
    return False


def short_reason(exc: Exception) -> str:
    """A one-line reason from a requests exception, without the nested repr noise."""
    from urllib3.exceptions import ProtocolError

    reason = exc.args[0] if exc.args else None
    if isinstance(reason, ProtocolError) and reason.args:
        # ('Connection broken: IncompleteRead(...)', IncompleteRead(...)) and
        # ('Connection aborted.', RemoteDisconnected('Remote end closed ...')): the cause
        inner = reason.args[-1]
        text = str(inner) if isinstance(inner, BaseException) and str(inner) \
            else str(reason.args[0])
        return text[:200]
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    for marker in ("Failed to establish a new connection: ", "Connection aborted.', "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text.strip("()'\" ")[:200] or type(exc).__name__


def read_body(response, url: str, expired: Callable[[], bool] = lambda: False) -> bytes:
    chunks, size = [], 0
    for chunk in body_chunks(response):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise e.UnexpectedResponse(
                f"unexpected response from {url} (HTTP {response.status_code}): the body "
                f"is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB")
        chunks.append(chunk)
        if expired():
            # A server that drips its answer never trips a socket timeout: the command's
            # own deadline is checked between reads.
            raise e.CommandTimeout(f"the answer from {url} was still arriving at the "
                                   "end of the timeout")
    return b"".join(chunks)


def iter_lines(response, url: str, max_line: int) -> Iterator[bytes]:
    """The body's lines (without their newline) as they arrive, one socket read at a time,
    so the caller can check its deadline between reads even when a server drips blank
    lines. A line longer than `max_line` is an unexpected response: memory stays bounded."""
    line = bytearray()
    for chunk in body_chunks(response):
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            line += chunk[start:end]
            _check_line(line, max_line, url, response.status_code)
            yield bytes(line)
            line.clear()
            start = end + 1
        line += chunk[start:]
        _check_line(line, max_line, url, response.status_code)
        if start == 0:
            yield b""  # no line complete yet: still a chance to check the deadline
    if line:
        yield bytes(line)


def _check_line(line: bytearray, max_line: int, url: str, status: int) -> None:
    if len(line) > max_line:
        raise e.UnexpectedResponse(
            f"unexpected response from {url} (HTTP {status}): a line longer than "
            f"{max_line // (1024 * 1024)} MiB")


def body_chunks(response) -> Iterator[bytes]:
    """The body as it arrives, one socket read at a time where urllib3 allows it (so the
    caller can check its deadline in between), with urllib3's errors mapped the way
    requests maps them."""
    read1 = getattr(response.raw, "read1", None)
    if read1 is None:  # urllib3 before 2.3
        yield from response.iter_content(chunk_size=1 << 20)
        return
    import requests
    from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError

    try:
        while chunk := read1(1 << 20, decode_content=True):
            yield chunk
    except ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from None
    except DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from None
    except ReadTimeoutError as exc:
        raise requests.ConnectionError(exc) from None
