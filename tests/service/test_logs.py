"""iter_logs and follow_run: live output, resume without loss or repeats, fallbacks."""

from __future__ import annotations

import base64
import json

import pytest
import requests

from bus_containers import errors as e

from .helpers import BASE, error_body, run_object

LOGS = BASE + "/runs/run_abc/logs"


def ndjson(*events) -> bytes:
    return b"".join(json.dumps(ev).encode() + b"\n" for ev in events)


def out(offset: int, data: bytes, stream: str = "stdout") -> dict:
    return {"stream": stream, "offset": offset, "data_b64": base64.b64encode(data).decode()}


END = {"event": "end", "status": "succeeded", "exit_code": 0}


def collect(events) -> tuple[dict[str, bytes], dict | None]:
    got = {"stdout": b"", "stderr": b""}
    end = None
    for ev in events:
        if ev.get("event") == "end":
            end = ev
        elif "data" in ev:
            got[ev["stream"]] += ev["data"]
    return got, end


def test_non_follow_returns_what_exists(client, requests_mock):
    requests_mock.get(LOGS, content=ndjson(out(0, b"ab"), out(2, b"\xff\x00", "stderr"), END))
    got, end = collect(client.iter_logs("run_abc"))
    assert got == {"stdout": b"ab", "stderr": b"\xff\x00"}
    assert end["exit_code"] == 0
    assert requests_mock.last_request.qs == {"follow": ["false"], "offset": ["0"]}
    assert requests_mock.last_request.headers["Accept"] == "application/x-ndjson"


def test_a_cut_follow_stream_resumes_at_the_next_byte_without_repeats(client, requests_mock):
    requests_mock.get(LOGS, [
        {"content": ndjson(out(0, b"hello "))},  # cut before the end line
        # the server repeats part of what we had: only the unseen bytes count
        {"content": ndjson(out(3, b"lo world"), out(11, b"!"), END)},
    ])
    got, end = collect(client.iter_logs("run_abc", follow=True))
    assert got["stdout"] == b"hello world!"
    assert end is not None
    offsets = [r.qs["offset"] for r in requests_mock.request_history]
    assert offsets == [["0"], ["6"]]


def test_a_dropped_connection_is_retried_then_resumed(client, requests_mock, fake_clock):
    requests_mock.get(LOGS, [
        {"exc": requests.ConnectionError("reset by peer")},
        {"content": ndjson(out(0, b"x"), END)},
    ])
    got, _ = collect(client.iter_logs("run_abc", follow=True))
    assert got["stdout"] == b"x"
    assert len(fake_clock.sleeps) == 1 and 0.3 <= fake_clock.sleeps[0] <= 0.5


def test_resume_gives_up_after_four_failures_in_a_row(client, requests_mock):
    requests_mock.get(LOGS, exc=requests.ConnectionError("down"))
    with pytest.raises(e.ConnectionFailed):
        list(client.iter_logs("run_abc", follow=True))
    assert requests_mock.call_count == 4


def test_progress_resets_the_failure_count(client, requests_mock):
    # Each response brings a byte and then ends early: never 4 failures *in a row*.
    responses = [{"content": ndjson(out(i, b"z"))} for i in range(6)]
    responses.append({"content": ndjson(END)})
    requests_mock.get(LOGS, responses)
    got, end = collect(client.iter_logs("run_abc", follow=True))
    assert got["stdout"] == b"z" * 6 and end is not None


def test_unknown_run_is_not_found(client, requests_mock):
    requests_mock.get(LOGS, status_code=404, json=error_body("not_found"))
    with pytest.raises(e.RunNotFound):
        list(client.iter_logs("run_abc"))


@pytest.mark.parametrize("line", [b"not json", b'{"stream": "stdout", "offset": -1, '
                                  b'"data_b64": "eA=="}', b'{"stream": "stdout", "offset": 0, '
                                  b'"data_b64": "***"}', b"[1, 2]"])
def test_malformed_lines_are_unexpected_responses(client, requests_mock, line):
    requests_mock.get(LOGS, content=line + b"\n")
    with pytest.raises(e.UnexpectedResponse):
        list(client.iter_logs("run_abc"))


def test_unknown_events_are_ignored(client, requests_mock):
    requests_mock.get(LOGS, content=ndjson({"event": "heartbeat"}, {"new": 1}, out(0, b"k"),
                                           END))
    got, end = collect(client.iter_logs("run_abc", follow=True))
    assert got["stdout"] == b"k" and end is not None


def test_invalid_run_id_makes_no_request(client, requests_mock):
    with pytest.raises(e.InvalidRunId):
        list(client.iter_logs("../etc"))
    assert requests_mock.call_count == 0


# -- follow_run ---------------------------------------------------------------------------
def test_quick_run_costs_one_request(client, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_object(stdout="OK"))
    events = list(client.follow_run(["printf", "OK"]))
    assert [ev.get("event") for ev in events] == ["created", None, "end"]
    assert events[1]["data"] == b"OK"
    assert requests_mock.call_count == 1
    assert requests_mock.last_request.headers["Prefer"] == "wait=1, until=output"


def test_quick_run_with_lossy_text_fetches_the_exact_bytes(client, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_object(stdout="\ufffd"))
    requests_mock.get(LOGS, content=ndjson(out(0, b"\xff"), END))
    got, _ = collect(client.follow_run(["x"]))
    assert got["stdout"] == b"\xff"


def test_long_run_is_streamed(client, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=202, json=run_object(status="running"))
    requests_mock.get(LOGS, content=ndjson(out(0, b"1\n"), out(2, b"2\n"), END))
    got, end = collect(client.follow_run(["x"]))
    assert got["stdout"] == b"1\n2\n" and end["status"] == "succeeded"


def test_server_without_logs_endpoint_is_polled(client, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=202, json=run_object(status="running"))
    requests_mock.get(LOGS, status_code=404, json=error_body("not_found"))
    requests_mock.get(BASE + "/runs/run_abc", json=run_object(stdout="late", exit_code=0))
    polled = []
    got, end = collect(client.follow_run(["x"], on_poll=polled.append))
    assert got["stdout"] == b"late" and end["exit_code"] == 0 and len(polled) == 1


def test_404_after_output_is_not_a_fallback(client, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=202, json=run_object(status="running"))
    requests_mock.get(LOGS, [{"content": ndjson(out(0, b"a"))},
                             {"status_code": 404, "json": error_body("not_found")}])
    with pytest.raises(e.RunNotFound):
        list(client.follow_run(["x"]))


def test_wait_for_run_immediate_polls_at_once(client, requests_mock, fake_clock):
    requests_mock.get(BASE + "/runs/run_abc", json=run_object())
    assert client.wait_for_run("run_abc", immediate=True)["status"] == "succeeded"
    assert fake_clock.sleeps == []
