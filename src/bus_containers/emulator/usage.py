"""The `GET /usage` document: the account's plan, its limits and what the period used.

Built from the store's counters and the config; no state of its own. Limit names are the
API's (CONTRACT 9); `null` means the plan sets no limit.
"""

from __future__ import annotations

from typing import Any

from .config import Config
from .model import rfc3339


def usage_document(config: Config, counters: dict[str, Any], billing_url: str
                   ) -> dict[str, Any]:
    plan = counters["plan"]
    limits = {
        "concurrent_runs": plan.concurrent_runs,
        "runs_per_period": plan.runs_per_period,
        "run_seconds_per_period": plan.run_seconds_per_period,
        # The longest run any profile allows: a run's timeout cannot go past it.
        "max_run_seconds": max((p.max_timeout_seconds for p in config.profiles.values()),
                               default=None),
        "output_bytes": config.limits.output_cap_bytes,
        "workspace_bytes": plan.workspace_bytes,
    }
    used = {
        "concurrent_runs": counters["concurrent_runs"],
        "runs_per_period": counters["runs"],
        "run_seconds_per_period": round(counters["run_seconds"], 3),
    }
    # A plan without billing still answers 200: the account can see its plan and what to
    # do; the `billing` object says so (the CLI exits 5 on it, as a 402 would make it).
    billing: dict[str, Any] = {"status": "active" if plan.billing else "required"}
    if not plan.billing:
        billing["url"] = billing_url
        billing["guidance"] = f"Set up billing for this account at {billing_url}."
    return {
        "plan": plan.name,
        "period": {"start": rfc3339(counters["period_start"]),
                   "end": rfc3339(counters["period_end"])},
        "limits": limits,
        "used": used,
        "billing": billing,
    }
