"""Loopback-only admin endpoints under /_emulator/: faults, stats, seed data, plans.

They need no token (tests drive them directly) but refuse any non-loopback client.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from werkzeug.wrappers import Request, Response

from . import validate
from .errors import ApiError, invalid
from .model import FINISHED

if TYPE_CHECKING:
    from .app import EmulatorApp


def admin_routes(app: EmulatorApp) -> list:
    from .app import is_loopback, json_response

    def guard(handler):
        def wrapped(request: Request, *args) -> Response:
            if not is_loopback(request.remote_addr):
                raise ApiError(403, "forbidden", "the admin endpoints are loopback only")
            return handler(request, *args)
        return wrapped

    def body(request: Request) -> dict:
        data = validate.read_json(request, app.config.limits.max_body_bytes)
        if not isinstance(data, dict):
            raise invalid("the request body must be a JSON object")
        return data

    def get_faults(request: Request) -> Response:
        return json_response({"faults": app.faults.pending()})

    def add_faults(request: Request) -> Response:
        pending = app.faults.add(body(request).get("faults"))
        return json_response({"faults": app.faults.pending(), "pending": pending})

    def clear_faults(request: Request) -> Response:
        app.faults.clear()
        return Response(status=204)

    def stats(request: Request) -> Response:
        requests, attempts = app.counters()
        return json_response({
            **app.runner.stats(),
            "runs": app.store.count(),
            "requests": requests,
            "rss_bytes": rss_bytes(),
            "faults_pending": len(app.faults.pending()),
            "attempts": attempts,
        })

    def reset_counters(request: Request) -> Response:
        app.counters(reset=True)
        return Response(status=204)

    def seed(request: Request) -> Response:
        data = body(request)
        sub = validate.clean_str(data.get("sub"), "sub", max_len=256)
        count = data.get("count")
        limit = app.config.limits.max_seed
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= limit:
            raise invalid(f"count must be an integer from 1 to {limit}")
        status = data.get("status", "succeeded")
        if status not in FINISHED:
            raise invalid(f"status must be one of {', '.join(sorted(FINISHED))}")
        profile = data.get("profile", "codex")
        if profile not in app.config.profiles:
            raise invalid(f"unknown profile {profile!r}")
        age = data.get("age_seconds", 0)
        if isinstance(age, bool) or not isinstance(age, (int, float)) or age < 0:
            raise invalid("age_seconds must be a non-negative number")
        ids = app.store.seed(sub, count, status, profile, float(age))
        return json_response({"created": len(ids), "ids": ids})

    def set_plan(request: Request) -> Response:
        data = body(request)
        sub = validate.clean_str(data.get("sub"), "sub", max_len=256)
        plan = data.get("plan")
        if plan not in app.config.plans:
            raise invalid(f"unknown plan {plan!r} (known: {', '.join(sorted(app.config.plans))})")
        app.config.accounts[sub] = plan
        return json_response({"sub": sub, "plan": plan})

    return [
        (re.compile(r"^/_emulator/faults$"), {"GET": guard(get_faults), "POST": guard(add_faults),
                                              "DELETE": guard(clear_faults)}),
        (re.compile(r"^/_emulator/stats$"), {"GET": guard(stats),
                                             "DELETE": guard(reset_counters)}),
        (re.compile(r"^/_emulator/seed$"), {"POST": guard(seed)}),
        (re.compile(r"^/_emulator/accounts$"), {"POST": guard(set_plan)}),
    ]


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
