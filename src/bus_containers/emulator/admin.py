"""The admin endpoints under /_emulator/ (faults, stats, seed data, plans) and the admin
credential that guards them and the token endpoint.

An `Admin` is handed what it reads and changes (config, store, faults, counters, runner
stats, the credential); it does not know the app. Every admin call must come from loopback
AND present the emulator's admin key (`<state-dir>/admin-key`, readable only by the
emulator's owner) as `Authorization: Bearer <key>`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from typing import Any

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from . import validate
from .config import Config
from .errors import ApiError, invalid
from .faults import FaultSet
from .http import is_loopback, json_response
from .model import FINISHED
from .store import RunStore

ADMIN_GUIDANCE = ("The emulator's owner finds the admin key in the file admin-key of its "
                  "state dir; send it as 'Authorization: Bearer <key>' (the reference "
                  "host's `bus auth token` reads the file named by "
                  "BUS_EMULATOR_ADMIN_KEY_FILE).")


class AdminCredential:
    """The admin key check: loopback peer (the socket's, never a header's), then the key,
    compared in constant time (both sides hashed first, so not even the length leaks)."""

    def __init__(self, key: str):
        self._digest = hashlib.sha256(key.encode("ascii")).digest()

    def require(self, request: Request, what: str) -> None:
        if not is_loopback(request.remote_addr):
            raise ApiError(403, "forbidden", f"{what} is only for loopback clients")
        scheme, _, presented = request.headers.get("Authorization", "").strip().partition(" ")
        digest = hashlib.sha256(presented.strip().encode("utf-8", "surrogateescape")).digest()
        if not (hmac.compare_digest(digest, self._digest) and scheme.lower() == "bearer"):
            raise ApiError(401, "unauthenticated",
                           f"{what} needs the emulator's admin key", guidance=ADMIN_GUIDANCE,
                           headers={"WWW-Authenticate": 'Bearer realm="bus-containers-emulator"'})


class Admin:
    def __init__(self, config: Config, store: RunStore, faults: FaultSet,
                 counters: Callable[..., tuple[int, dict[str, int]]],
                 runner_stats: Callable[[], dict[str, Any]], credential: AdminCredential):
        self.credential = credential
        self.config = config
        self.store = store
        self.faults = faults
        self.counters = counters
        self.runner_stats = runner_stats

    def rules(self) -> list[Rule]:
        """The admin routes; every endpoint passes through `guard` first."""
        def rule(path: str, **methods: Callable[[Request], Response]) -> list[Rule]:
            return [Rule(path, methods=[m], endpoint=self._guarded(h))
                    for m, h in methods.items()]

        return [
            *rule("/_emulator/faults", GET=self.get_faults, POST=self.add_faults,
                  DELETE=self.clear_faults),
            *rule("/_emulator/stats", GET=self.stats, DELETE=self.reset_counters),
            *rule("/_emulator/seed", POST=self.seed),
            *rule("/_emulator/accounts", POST=self.set_plan),
        ]

    def _guarded(self, handler: Callable[[Request], Response]) -> Callable[..., Response]:
        def guarded(request: Request) -> Response:
            self.guard(request)
            return handler(request)
        return guarded

    def guard(self, request: Request) -> None:
        self.credential.require(request, "each admin endpoint")

    def _body(self, request: Request) -> dict:
        return validate.read_json_object(request, self.config.limits.max_body_bytes)

    # -- handlers ---------------------------------------------------------------------
    def get_faults(self, request: Request) -> Response:
        return json_response({"faults": self.faults.pending()})

    def add_faults(self, request: Request) -> Response:
        pending = self.faults.add(self._body(request).get("faults"))
        return json_response({"faults": self.faults.pending(), "pending": pending})

    def clear_faults(self, request: Request) -> Response:
        self.faults.clear()
        return Response(status=204)

    def stats(self, request: Request) -> Response:
        requests, attempts = self.counters()
        return json_response({
            **self.runner_stats(),
            "runs": self.store.count(),
            "requests": requests,
            "rss_bytes": rss_bytes(),
            "faults_pending": len(self.faults.pending()),
            "attempts": attempts,
        })

    def reset_counters(self, request: Request) -> Response:
        self.counters(reset=True)
        return Response(status=204)

    def seed(self, request: Request) -> Response:
        data = self._body(request)
        sub = validate.clean_str(data.get("sub"), "sub", max_len=256)
        count = data.get("count")
        limit = self.config.limits.max_seed
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= limit:
            raise invalid(f"count must be an integer from 1 to {limit}")
        status = data.get("status", "succeeded")
        if status not in FINISHED:
            raise invalid(f"status must be one of {', '.join(sorted(FINISHED))}")
        profile = data.get("profile", "codex")
        if profile not in self.config.profiles:
            raise invalid(f"unknown profile {profile!r}")
        age = data.get("age_seconds", 0)
        if isinstance(age, bool) or not isinstance(age, (int, float)) or age < 0:
            raise invalid("age_seconds must be a non-negative number")
        ids = self.store.seed(sub, count, status, profile, float(age))
        return json_response({"created": len(ids), "ids": ids})

    def set_plan(self, request: Request) -> Response:
        data = self._body(request)
        sub = validate.clean_str(data.get("sub"), "sub", max_len=256)
        plan = data.get("plan")
        plans = self.config.plans
        if plan not in plans:
            raise invalid(f"unknown plan {plan!r} (known: {', '.join(sorted(plans))})")
        self.store.set_plan(sub, plan)
        return json_response({"sub": sub, "plan": plan})


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
