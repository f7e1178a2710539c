"""The holds that make the CLI live (issue 13): the create answer at the first output
(`Prefer: wait=N, until=output`) and the long-poll of `GET /runs/{id}` (`Prefer: wait=N`).

Each test proves the answer came on the EVENT (first bytes, the end) and not at the end of
the hold: the holds are 10-15 s, the events come within about a second.
"""

from __future__ import annotations

import time

from .helpers import Api

HOLD = 10


def test_create_answers_at_the_first_output_not_at_the_end_of_the_wait(emu):
    api = Api(emu)
    started = time.monotonic()
    r = api.post_run(["sh", "-c", "echo first; sleep 30"], wait=HOLD,
                     headers={"Prefer": f"wait={HOLD}, until=output"})
    elapsed = time.monotonic() - started
    try:
        assert r.status_code == 202, r.text
        assert elapsed < HOLD / 2, elapsed
        assert r.headers["Preference-Applied"] == f"wait={HOLD}, until=output"
        run = r.json()
        assert run["status"] == "running" and run["stdout"] == "first\n"
    finally:
        api.request("DELETE", f"/runs/{r.json()['id']}")


def test_until_output_still_holds_a_silent_run_and_finishes_quick_ones(emu):
    api = Api(emu)
    r = api.post_run(["sh", "-c", "sleep 0.3; exit 4"],
                     headers={"Prefer": f"wait={HOLD}, until=output"})
    assert r.status_code == 201, r.text
    assert (r.json()["status"], r.json()["exit_code"]) == ("failed", 4)


def test_without_until_output_the_create_holds_for_the_end_as_before(emu):
    api = Api(emu)
    r = api.post_run(["sh", "-c", "echo a; sleep 0.5; echo b"], wait=HOLD)
    assert r.status_code == 201, r.text
    assert r.json()["stdout"] == "a\nb\n"
    assert r.headers["Preference-Applied"] == f"wait={HOLD}"


def test_get_run_with_prefer_wait_answers_when_the_run_ends(emu):
    api = Api(emu)
    run_id = api.post_run(["sleep", "1"]).json()["id"]
    plain = api.get(f"/runs/{run_id}")
    assert plain.json()["status"] in ("queued", "running")
    assert "Preference-Applied" not in plain.headers
    started = time.monotonic()
    r = api.get(f"/runs/{run_id}", headers={"Prefer": f"wait={HOLD}"})
    elapsed = time.monotonic() - started
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    assert elapsed < HOLD / 2, elapsed
    assert r.headers["Preference-Applied"] == f"wait={HOLD}"


def test_get_run_long_poll_ends_at_the_wait_for_a_run_still_going(emu):
    api = Api(emu)
    run_id = api.post_run(["sleep", "30"]).json()["id"]
    try:
        r = api.get(f"/runs/{run_id}", headers={"Prefer": "wait=0.3"})
        assert r.status_code == 200 and r.json()["status"] in ("queued", "running")
        assert r.headers["Preference-Applied"] == "wait=0.3"
    finally:
        api.request("DELETE", f"/runs/{run_id}")
