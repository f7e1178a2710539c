"""Issue 11 on the emulator: POST /runs/{id}/cancel, GET /usage, logs `tail` and `since`,
list `profile` and `since` (raw HTTP; the CLI's own tests are in tests/e2e)."""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime

from .helpers import Api, assert_error, output_of, sleepers, wait_until


def _seconds(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _first_line(api: Api, run_id: str) -> dict:
    """The first output chunk of a running run (the follow stream blocks until it comes)."""
    with api.get(f"/runs/{run_id}/logs", params={"follow": "true"}, stream=True) as r:
        return json.loads(next(r.iter_lines()))


# -- cancel ------------------------------------------------------------------------------------

def test_cancel_stops_the_run_keeps_it_and_its_output(emu):
    api = Api(emu)
    before = set(sleepers(emu))
    run_id = api.post_run(["sh", "-c", "echo started; exec sleep 60"]).json()["id"]
    assert base64.b64decode(_first_line(api, run_id)["data_b64"]) == b"started\n"
    mine = wait_until(lambda: set(sleepers(emu)) - before, what="the run's sleep")
    started = time.monotonic()
    r = api.request("POST", f"/runs/{run_id}/cancel")
    assert r.status_code == 200, r.text
    assert time.monotonic() - started < 2.0
    run = r.json()
    assert run["status"] == "cancelled" and run["exit_code"] is None and run["finished_at"]
    assert run["usage"]["run_seconds"] > 0
    assert not (set(sleepers(emu)) & mine), "the run's process outlived its cancel"
    # kept: get, list and logs still have it and what it wrote
    assert api.get(f"/runs/{run_id}").json()["status"] == "cancelled"
    assert output_of(api.logs(run_id)) == b"started\n"
    assert api.logs(run_id)[-1] == {"event": "end", "status": "cancelled",
                                     "exit_code": None, "output_truncated": False}


def test_cancel_of_a_finished_run_changes_nothing(emu):
    api = Api(emu)
    run = api.run(["printf", "done"])
    r = api.request("POST", f"/runs/{run['id']}/cancel")
    assert r.status_code == 200
    assert r.json() == api.get(f"/runs/{run['id']}").json()
    assert r.json()["status"] == "succeeded" and r.json()["finished_at"] == run["finished_at"]


def test_cancel_of_another_accounts_run_is_not_found_and_does_nothing(emu):
    owner, other = Api(emu), Api(emu)
    run_id = owner.post_run(["sleep", "30"], profile="quick", timeout_seconds=30).json()["id"]
    assert_error(other.request("POST", f"/runs/{run_id}/cancel"), 404, "not_found")
    assert_error(other.request("POST", "/runs/run_nope/cancel"), 404, "not_found")
    assert owner.get(f"/runs/{run_id}").json()["status"] in ("queued", "starting", "running")
    assert owner.request("POST", f"/runs/{run_id}/cancel").json()["status"] == "cancelled"


def test_cancel_needs_container_run(emu):
    reader = Api(emu, scope="container:read container:delete billing:read")
    error = assert_error(reader.request("POST", "/runs/run_0123456789abcdef01234567/cancel"),
                         403, "insufficient_scope")
    assert error["scope"] == "container:run"


# -- usage -------------------------------------------------------------------------------------

def test_usage_counts_runs_and_run_seconds_of_the_period(emu):
    api = Api(emu)
    before = api.get("/usage")
    assert before.status_code == 200, before.text
    doc = before.json()
    assert doc["plan"] == "default" and doc["billing"] == {"status": "active"}
    assert set(doc["limits"]) == {"concurrent_runs", "runs_per_period", "run_seconds_per_period",
                                  "max_run_seconds", "output_bytes", "workspace_bytes"}
    assert doc["limits"]["output_bytes"] == 4096 and doc["limits"]["concurrent_runs"] == 32
    assert doc["used"] == {"concurrent_runs": 0, "runs_per_period": 0,
                           "run_seconds_per_period": 0}
    start, end = _seconds(doc["period"]["start"]), _seconds(doc["period"]["end"])
    assert start <= time.time() < end and end - start == 3600
    runs = [api.run(["sleep", "0.2"]) for _ in range(3)]
    after = api.get("/usage").json()
    assert after["used"]["runs_per_period"] == 3
    metered = sum(r["usage"]["run_seconds"] for r in runs)
    assert metered >= 0.6
    assert abs(after["used"]["run_seconds_per_period"] - metered) < 0.01
    assert after["period"] == doc["period"]
    # deleting a run gives neither the run nor its seconds back
    api.request("DELETE", f"/runs/{runs[0]['id']}")
    assert api.get("/usage").json()["used"] == after["used"]


def test_usage_of_a_plan_without_billing_is_200_with_billing_required(emu):
    api = Api(emu)
    emu.set_plan(api.sub, "nobilling")
    doc = api.get("/usage").json()
    assert doc["plan"] == "nobilling"
    assert doc["billing"]["status"] == "required"
    assert doc["billing"]["url"].endswith("/billing") and doc["billing"]["guidance"]
    assert_error(api.post_run(["true"]), 402, "billing_required")


def test_run_seconds_quota_is_checked_before_the_run_starts(emu):
    api = Api(emu)
    emu.set_plan(api.sub, "one_second")
    api.run(["sleep", "1.1"])
    error = assert_error(api.post_run(["true"]), 429, "quota_exhausted")
    assert "run-seconds" in error["message"] and error["url"]
    assert api.get("/usage").json()["used"]["runs_per_period"] == 1


def test_usage_needs_billing_read(emu):
    api = Api(emu, scope="container:read container:run container:delete")
    error = assert_error(api.get("/usage"), 403, "insufficient_scope")
    assert error["scope"] == "billing:read"


# -- logs tail and since -----------------------------------------------------------------------

FIVE_LINES = ["sh", "-c", "for i in 1 2 3 4 5; do echo line$i; sleep 0.1; done"]


def test_logs_tail_and_since(emu):
    api = Api(emu)
    run = api.run(FIVE_LINES)
    lines = [x for x in api.logs(run["id"]) if "data_b64" in x]
    assert len(lines) == 5 and all("time" in x for x in lines)
    times = [_seconds(x["time"]) for x in lines]
    assert times == sorted(times) and times[-1] - times[0] >= 0.35
    assert output_of(api.logs(run["id"], tail=2)) == b"line4\nline5\n"
    assert output_of(api.logs(run["id"], tail=0)) == b""
    assert output_of(api.logs(run["id"], tail=99)) == b"".join(
        f"line{i}\n".encode() for i in range(1, 6))
    assert api.logs(run["id"], tail=2)[-1]["event"] == "end"
    # since: from the third line's time on (inclusive)
    assert output_of(api.logs(run["id"], since=lines[2]["time"])) == b"line3\nline4\nline5\n"
    future = "2999-01-01T00:00:00Z"
    assert output_of(api.logs(run["id"], since=future)) == b""
    assert output_of(api.logs(run["id"], since="2000-01-01T00:00:00+02:00")).count(b"\n") == 5
    assert_error(api.get(f"/runs/{run['id']}/logs", params={"since": "10m"}), 400,
                 "invalid_request")
    assert_error(api.get(f"/runs/{run['id']}/logs", params={"tail": "-1"}), 400,
                 "invalid_request")


def test_logs_tail_with_follow_then_streams_the_rest(emu):
    api = Api(emu)
    run_id = api.post_run(["sh", "-c", "echo a; echo b; echo c; sleep 1; echo d"]).json()["id"]
    with api.get(f"/runs/{run_id}/logs", params={"follow": "true"}, stream=True) as r:
        seen = b""
        for line in r.iter_lines():
            seen += output_of([json.loads(line)])
            if seen == b"a\nb\nc\n":
                break
    with api.get(f"/runs/{run_id}/logs", params={"follow": "true", "tail": "1"},
                 stream=True) as r:
        got = [json.loads(line) for line in r.iter_lines()]
    assert output_of(got) == b"c\nd\n"  # the last line there was, then what came after
    assert got[-1]["event"] == "end"


# -- list filters ------------------------------------------------------------------------------

def test_list_filters_by_profile_and_since(emu):
    api = Api(emu)
    old = api.run(["true"], profile="default")
    cut = api.run(["true"], profile="quick")
    new = api.run(["true"], profile="default")
    ids = [r["id"] for r in api.get("/runs", params={"profile": "default"}).json()["runs"]]
    assert ids == [new["id"], old["id"]]
    ids = [r["id"] for r in api.get("/runs", params={"since": cut["created_at"]}).json()["runs"]]
    assert ids == [new["id"], cut["id"]]
    assert_error(api.get("/runs", params={"profile": "nope"}), 400, "unknown_profile")
    assert_error(api.get("/runs", params={"since": "yesterday"}), 400, "invalid_request")
