"""Live means live (issue 13), in the client: the create asks to be answered at the first
output, `wait` long-polls (one open request, the end heard at once) and falls back to
polling on servers that do not hold, `show` reads the output from the logs endpoint when
the run object leaves it out."""

from __future__ import annotations

import base64
import json

from .helpers import BASE, RUN_URL, run_object

LOGS = RUN_URL + "/logs"


def held_answer(fake_clock, *, status="running", seconds=25.0, **fields):
    """A GET /runs/{id} answer the server held for `seconds` (the fake clock moves on)."""
    def body(request, context):
        fake_clock.now += seconds
        context.headers["Preference-Applied"] = f"wait={seconds:g}"
        return run_object(status=status, **fields)
    return {"json": body}


def test_a_live_run_asks_to_be_answered_at_its_first_output(client, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_object())
    list(client.follow_run(["true"]))
    assert requests_mock.last_request.headers["Prefer"] == "wait=1, until=output"


def test_the_json_run_does_not_ask_for_early_answers(client, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_object())
    list(client.follow_run(["true"], live=False))
    assert requests_mock.last_request.headers["Prefer"] == "wait=1"


def test_wait_long_polls_without_sleeping(client, requests_mock, fake_clock):
    requests_mock.get(RUN_URL, [held_answer(fake_clock, seconds=10)] * 3
                      + [held_answer(fake_clock, status="failed", seconds=3, exit_code=2)])
    run = client.wait_for_run("run_abc", immediate=True)
    assert run["status"] == "failed"
    assert fake_clock.sleeps == []
    assert [r.headers["Prefer"] for r in requests_mock.request_history] == ["wait=25"] * 4


def test_the_hold_stays_inside_the_timeout(make_client, requests_mock, fake_clock):
    client = make_client(timeout=10)
    requests_mock.get(RUN_URL, [held_answer(fake_clock, status="succeeded", seconds=1)])
    client.wait_for_run("run_abc", immediate=True)
    assert requests_mock.last_request.headers["Prefer"] == "wait=9"


def test_a_server_that_does_not_hold_is_polled_with_backoff(client, requests_mock,
                                                            fake_clock):
    requests_mock.get(RUN_URL, [{"json": run_object(status="running")}] * 3
                      + [{"json": run_object()}])
    client.wait_for_run("run_abc", immediate=True)
    assert fake_clock.sleeps == [1.0, 2.0, 4.0]  # the backoff of CONTRACT 4
    prefers = [r.headers.get("Prefer") for r in requests_mock.request_history]
    assert prefers == ["wait=25", None, None, None]  # asked once, then plain polls


def test_a_server_claiming_to_hold_but_answering_at_once_is_not_hammered(
        client, requests_mock, fake_clock):
    requests_mock.get(RUN_URL, [held_answer(fake_clock, seconds=0)] * 3
                      + [{"json": run_object()}])
    client.wait_for_run("run_abc", immediate=True)
    assert fake_clock.sleeps == [1.0, 2.0, 4.0]  # the backoff of CONTRACT 4


def test_show_reads_the_output_from_the_logs_when_the_run_leaves_it_out(client,
                                                                        requests_mock):
    summary = {k: v for k, v in run_object().items() if k not in ("stdout", "stderr")}
    requests_mock.get(RUN_URL, json={**summary, "output_bytes": 5})
    lines = [{"stream": "stdout", "offset": 0, "data_b64": base64.b64encode(b"out\n").decode()},
             {"stream": "stderr", "offset": 4, "data_b64": base64.b64encode(b"\xff").decode()},
             {"event": "end", "status": "succeeded", "exit_code": 0}]
    requests_mock.get(LOGS, content=b"".join(json.dumps(x).encode() + b"\n" for x in lines))
    run = client.get_run_with_output("run_abc")
    assert (run["stdout"], run["stderr"]) == ("out\n", "\ufffd")
    assert run["output_bytes"] == 5
    assert "follow=false" in requests_mock.last_request.url


def test_show_uses_the_runs_own_output_when_it_has_it(client, requests_mock):
    requests_mock.get(RUN_URL, json=run_object(stdout="OK"))
    assert client.get_run_with_output("run_abc")["stdout"] == "OK"
    assert requests_mock.call_count == 1
