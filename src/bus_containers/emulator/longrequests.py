"""Slots for long-lived requests: log followers, stdin and workspace uploads, long-polls.

Each holds a connection (and a thread) for as long as its client likes, so without a bound
one account could take every connection and lock all others out (the server's cap then
answers even a `status` call 503). Two bounds, both checked when such a request starts:

- per account, `long_requests_per_account` (default a quarter of the total below): past
  it that account (only) gets `429 rate_limited` with Retry-After;
- for all accounts together, the connection cap less a reserve kept for short requests
  (`short_request_reserve`, default a quarter of the cap): past it, `503 unavailable`.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from .errors import ApiError

RETRY_AFTER = "2"


class LongRequests:
    def __init__(self, per_account: int | None, reserve: int | None, connection_cap: int):
        self._per_account = per_account
        self.per_account = 1
        self._reserve = reserve
        self._lock = threading.Lock()
        self._held: Counter[str] = Counter()
        self.total = 0
        self.set_connection_cap(connection_cap)

    def set_connection_cap(self, cap: int) -> None:
        """The server's real cap (lowered under a small open-file limit) decides the total."""
        reserve = self._reserve if self._reserve is not None else max(1, cap // 4)
        self.total = max(1, cap - reserve)
        self.per_account = (self._per_account if self._per_account is not None
                            else max(1, self.total // 4))

    def acquire(self, account: str) -> Callable[[], None]:
        """A slot for `account`'s long request, or ApiError; call the result to free it."""
        with self._lock:
            if self._held[account] >= self.per_account:
                raise ApiError(429, "rate_limited",
                               f"this account already has {self.per_account} long-lived "
                               "requests open (log followers, uploads, waits); close one "
                               "or retry later", headers={"Retry-After": RETRY_AFTER})
            if sum(self._held.values()) >= self.total:
                raise ApiError(503, "unavailable", "the emulator has too many long-lived "
                               "requests open; retry shortly",
                               headers={"Retry-After": RETRY_AFTER})
            self._held[account] += 1
        released = threading.Event()

        def release() -> None:
            if released.is_set():
                return
            released.set()
            with self._lock:
                self._held[account] -= 1
                if self._held[account] <= 0:
                    del self._held[account]

        return release


class ReleasedAfter:
    """`body`, streamed; the slot is freed when the server closes it (the stream ended,
    or the client went away), even if it was never iterated."""

    def __init__(self, body: Iterable[bytes], release: Callable[[], None]):
        self._body = body
        self._release = release

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._release()
