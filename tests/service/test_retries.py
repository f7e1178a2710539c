"""Retries (CONTRACT 4): 4 attempts at most, backoff from 0.5 s with jitter capped at 8 s,
Retry-After (seconds or HTTP date, capped at 30 s), all inside the timeout, and the same
Idempotency-Key on every attempt of POST /runs."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest
import requests

from bus_containers import errors as e
from bus_containers import service
from bus_containers.render import Invocation, error_text
from bus_containers.service import parse_retry_after

from .helpers import BASE, CALL_IDS, CALLS, RUN_URL, error_body, ok_response, run_object


@pytest.fixture
def frozen_wall_clock(monkeypatch):
    """time.time() fixed to a whole second, so HTTP-date Retry-After values are exact."""
    now = float(int(time.time()))
    monkeypatch.setattr(service.time, "time", lambda: now)
    return now


def test_at_most_four_attempts(client, requests_mock, fake_clock):
    requests_mock.get(BASE + "/status", status_code=503)
    with pytest.raises(e.ServerError):
        client.status()
    assert requests_mock.call_count == 4
    assert len(fake_clock.sleeps) == 3


def test_max_retries_is_configurable(make_client, requests_mock, fake_clock):
    requests_mock.get(BASE + "/status", status_code=503)
    with pytest.raises(e.ServerError):
        make_client(max_retries=0).status()
    assert requests_mock.call_count == 1
    assert fake_clock.sleeps == []


def test_backoff_without_jitter_doubles_from_half_a_second(client, requests_mock, fake_clock,
                                                          no_jitter):
    requests_mock.get(BASE + "/status", status_code=503)
    with pytest.raises(e.ServerError):
        client.status()
    assert fake_clock.sleeps == [0.5, 1.0, 2.0]


def test_backoff_is_capped_at_8_seconds(make_client, requests_mock, fake_clock, no_jitter):
    requests_mock.get(BASE + "/status", status_code=503)
    with pytest.raises(e.ServerError):
        make_client(timeout=1000, max_retries=7).status()
    assert fake_clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_backoff_has_jitter_within_bounds(make_client, requests_mock, fake_clock):
    requests_mock.get(BASE + "/status", status_code=503)
    all_sleeps = []
    for _ in range(30):
        fake_clock.sleeps.clear()
        with pytest.raises(e.ServerError):
            make_client(timeout=1000, max_retries=6).status()
        for delay, nominal in zip(fake_clock.sleeps, [0.5, 1, 2, 4, 8, 8], strict=True):
            assert 0.75 * nominal <= delay <= nominal
        all_sleeps.append(tuple(fake_clock.sleeps))
    assert len(set(all_sleeps)) > 1  # the delays are not all identical: there is jitter


def test_retry_after_seconds_is_honoured(client, requests_mock, fake_clock):
    requests_mock.get(BASE + "/status", status_code=503, headers={"Retry-After": "3"})
    with pytest.raises(e.ServerError):
        client.status()
    assert fake_clock.sleeps == [3.0, 3.0, 3.0]


def test_retry_after_http_date_is_honoured(client, requests_mock, fake_clock,
                                           frozen_wall_clock):
    when = formatdate(frozen_wall_clock + 7, usegmt=True)
    requests_mock.get(BASE + "/status", [
        {"status_code": 429, "headers": {"Retry-After": when},
         "json": error_body("rate_limited", "slow down")},
        {"json": {"status": "ready"}},
    ])
    assert client.status() == {"status": "ready"}
    assert fake_clock.sleeps == [7.0]


def test_retry_after_is_capped_at_30_seconds(make_client, requests_mock, fake_clock,
                                             frozen_wall_clock):
    far = formatdate(frozen_wall_clock + 3600, usegmt=True)
    requests_mock.get(BASE + "/status", [
        {"status_code": 503, "headers": {"Retry-After": "120"}},
        {"status_code": 503, "headers": {"Retry-After": far}},
        {"status_code": 503, "headers": {"Retry-After": "1e400"}},
        {"json": {"status": "ready"}},
    ])
    make_client(timeout=1000).status()
    assert fake_clock.sleeps == [30.0, 30.0, 30.0]


def test_retry_after_in_the_past_or_negative_means_now(client, requests_mock, fake_clock,
                                                       frozen_wall_clock):
    past = formatdate(frozen_wall_clock - 100, usegmt=True)
    requests_mock.get(BASE + "/status", [
        {"status_code": 503, "headers": {"Retry-After": past}},
        {"status_code": 503, "headers": {"Retry-After": "-5"}},
        {"json": {"status": "ready"}},
    ])
    client.status()
    assert fake_clock.sleeps == [0.0, 0.0]


@pytest.mark.parametrize("junk", ["soon", "", "nan", "Mon, 32 Foo 2020 99:99:99 GMT",
                                  "12 parsecs", "Tue, 15 Nov 1994 08:12:31"])
def test_junk_retry_after_falls_back_to_backoff(client, requests_mock, fake_clock, no_jitter,
                                                junk):
    requests_mock.get(BASE + "/status", [
        {"status_code": 503, "headers": {"Retry-After": junk}},
        {"json": {"status": "ready"}},
    ])
    client.status()
    assert fake_clock.sleeps == [0.5]


@pytest.mark.parametrize("value, seconds", [
    ("0", 0.0), ("5", 5.0), (" 12 ", 12.0), ("2.5", 2.5), ("30", 30.0), ("31", 30.0),
    ("99999999999999999999", 30.0), ("-3", 0.0), (None, None), ("", None), ("nan", None),
    ("later", None), ("inf", 30.0),
])
def test_parse_retry_after(value, seconds):
    assert parse_retry_after(value) == seconds


def test_parse_retry_after_http_date():
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 12, usegmt=True), now=now) == 12.0
    assert parse_retry_after(formatdate(now + 12, usegmt=True), now=now + 2) == 10.0
    assert parse_retry_after(formatdate(now - 12, usegmt=True), now=now) == 0.0
    assert parse_retry_after(formatdate(now + 500, usegmt=True), now=now) == 30.0


def test_retries_stop_before_passing_the_deadline(make_client, requests_mock, fake_clock,
                                                  no_jitter):
    requests_mock.get(BASE + "/status", status_code=503,
                      json=error_body("unavailable", "down for maintenance"))
    with pytest.raises(e.ServerError) as info:
        make_client(timeout=2).status()
    # 0.5 fits (2 left), 1.0 fits (1.5 left), 2.0 would pass the deadline (0.5 left)
    assert fake_clock.sleeps == [0.5, 1.0]
    assert requests_mock.call_count == 3
    assert "down for maintenance" in info.value.message  # the last error, not a timeout
    assert info.value.attempts == 3 and info.value.gave_up_early
    assert "gave up after 3 attempt(s)" in error_text(info.value, Invocation())
    assert info.value.exit_code == 1
    assert fake_clock.now - 1000.0 <= 2


def test_a_retry_after_past_the_deadline_stops_at_once(make_client, requests_mock, fake_clock):
    requests_mock.post(BASE + "/runs", status_code=429, headers={"Retry-After": "10"},
                       json=error_body("rate_limited", "slow down"))
    with pytest.raises(e.RateLimited) as info:
        make_client(timeout=5).create_run(["true"])
    assert requests_mock.call_count == 1
    assert fake_clock.sleeps == []
    assert info.value.exit_code == 5


def test_an_error_that_arrives_at_the_deadline_is_reported_as_itself(
        make_client, requests_mock, fake_clock):
    client = make_client(timeout=5)

    def slow_503(request, context):
        fake_clock.now += 6  # the server took longer than the whole budget to say 503
        context.status_code = 503
        return ""

    requests_mock.get(BASE + "/status", text=slow_503)
    with pytest.raises(e.ServerError) as info:
        client.status()
    assert info.value.exit_code == 1
    assert "HTTP 503" in info.value.message
    assert requests_mock.call_count == 1


def test_requests_that_take_time_count_against_the_budget(make_client, requests_mock,
                                                          fake_clock, no_jitter):
    client = make_client(timeout=10)

    def slow_503(request, context):
        fake_clock.now += 3
        context.status_code = 503
        return ""

    requests_mock.get(BASE + "/status", text=slow_503)
    with pytest.raises(e.ServerError):
        client.status()
    # t=3 sleep .5, t=6.5 sleep 1, t=10.5 > deadline: stop (3 requests, not 4)
    assert requests_mock.call_count == 3
    assert fake_clock.sleeps == [0.5, 1.0]


def test_no_request_once_the_budget_is_spent(make_client, requests_mock, fake_clock):
    client = make_client(timeout=5)
    requests_mock.get(BASE + "/status", json={"status": "ready"})
    with pytest.raises(e.CommandTimeout):
        client.wait_for_run("run_abc", deadline=fake_clock.now - 1)
    assert requests_mock.call_count == 0


def test_post_runs_is_retried_with_the_same_idempotency_key_and_body(client, requests_mock):
    requests_mock.post(BASE + "/runs", [
        {"status_code": 503},
        {"exc": requests.exceptions.ConnectionError("reset")},
        {"status_code": 429, "json": error_body("rate_limited", "wait")},
        {"status_code": 201, "json": run_object("run_once")},
    ])
    run = client.create_run(["echo", "x"], env={"A": "b"}, timeout_seconds=5)
    assert run["id"] == "run_once"
    history = requests_mock.request_history
    assert len(history) == 4
    keys = {r.headers["Idempotency-Key"] for r in history}
    assert len(keys) == 1
    assert len({r.body for r in history}) == 1


def test_run_retries_the_create_with_one_key(client, requests_mock):
    requests_mock.post(BASE + "/runs", [{"status_code": 502}, {"status_code": 502},
                                        {"status_code": 201, "json": run_object()}])
    assert client.run(["true"])["status"] == "succeeded"
    assert len({r.headers["Idempotency-Key"] for r in requests_mock.request_history}) == 1
    assert requests_mock.call_count == 3


def test_idempotency_conflict_is_not_retried(client, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=422,
                       json=error_body("idempotency_conflict", "key reused with another body"))
    with pytest.raises(e.InvalidRequest) as info:
        client.create_run(["true"])
    assert info.value.exit_code == 2
    assert requests_mock.call_count == 1


@pytest.mark.parametrize("name, method, url, call", CALLS, ids=CALL_IDS)
def test_success_after_two_503s_returns_the_result(client, requests_mock, fake_clock,
                                                   name, method, url, call):
    requests_mock.register_uri(method, url, [{"status_code": 503}, {"status_code": 503},
                                             ok_response(name)])
    result = call(client)
    assert requests_mock.call_count == 3
    assert len(fake_clock.sleeps) == 2
    if name == "status":
        assert result == {"status": "ready"}
    elif name == "list_runs":
        assert [r["id"] for r in result] == ["run_abc"]
    elif name == "delete_run":
        assert result is None
    else:
        assert result["id"] == "run_abc"


@pytest.mark.parametrize("status, code", [
    (400, "invalid_request"), (401, "unauthenticated"), (402, "billing_required"),
    (403, "forbidden"), (404, "not_found"), (409, "conflict"), (422, "unknown_profile"),
    (429, "quota_exhausted"), (418, "teapot"),
])
@pytest.mark.parametrize("name, method, url, call", CALLS, ids=CALL_IDS)
def test_no_retry_on_4xx_other_than_rate_limited(client, requests_mock, fake_clock,
                                                 status, code, name, method, url, call):
    requests_mock.register_uri(method, url, status_code=status, headers={"Retry-After": "1"},
                               json=error_body(code, "no"))
    with pytest.raises(e.ContainersError):
        call(client)
    assert requests_mock.call_count == 1
    assert fake_clock.sleeps == []


def test_poll_requests_are_retried_too(client, requests_mock, fake_clock, no_jitter):
    requests_mock.get(RUN_URL, [{"status_code": 503}, {"json": run_object()}])
    assert client.wait_for_run("run_abc")["status"] == "succeeded"
    assert fake_clock.sleeps == [0.5, 0.5]  # the poll interval, then one backoff


# -- found by tests/faults (issue 5) ------------------------------------------------------
def _cut(reason: str = "Remote end closed connection without response"):
    from http.client import RemoteDisconnected

    from urllib3.exceptions import ProtocolError

    return requests.exceptions.ConnectionError(
        ProtocolError("Connection aborted.", RemoteDisconnected(reason)))


def test_delete_whose_answer_was_lost_then_404_is_deleted(client, requests_mock, fake_clock):
    # The first DELETE was carried out but its answer lost; the retry finds the run gone.
    requests_mock.delete(RUN_URL, [{"exc": _cut()},
                                   {"status_code": 404, "json": error_body("not_found")}])
    assert client.delete_run("run_abc") is None
    assert requests_mock.call_count == 2


@pytest.mark.parametrize("first", [
    {"status_code": 503, "json": error_body("unavailable")},  # the server said: not done
    {"exc": requests.exceptions.ConnectionError(
        "Failed to establish a new connection: [Errno 111] Connection refused")},
], ids=["503", "refused"])
def test_delete_404_after_an_answered_failure_is_still_not_found(client, requests_mock,
                                                                  fake_clock, first):
    requests_mock.delete(RUN_URL, [first, {"status_code": 404,
                                           "json": error_body("not_found")}])
    with pytest.raises(e.RunNotFound):
        client.delete_run("run_abc")


def test_a_404_after_a_lost_answer_is_not_found_for_reads(client, requests_mock, fake_clock):
    requests_mock.get(RUN_URL, [{"exc": _cut()},
                                {"status_code": 404, "json": error_body("not_found")}])
    with pytest.raises(e.RunNotFound):
        client.get_run("run_abc")


def test_a_connection_cut_mid_answer_says_so_without_repr_noise(client, requests_mock,
                                                                fake_clock):
    from urllib3.exceptions import IncompleteRead, ProtocolError

    cut = IncompleteRead(56, 57)
    requests_mock.get(BASE + "/status", exc=requests.exceptions.ChunkedEncodingError(
        ProtocolError(f"Connection broken: {cut!r}", cut)))
    with pytest.raises(e.ConnectionFailed) as info:
        client.status()
    message = info.value.message
    assert message == (f"the connection to {BASE}/status broke before the answer was "
                       "complete: IncompleteRead(56 bytes read, 57 more expected)")
    assert info.value.answer_lost
    requests_mock.get(BASE + "/status", exc=_cut())
    with pytest.raises(e.ConnectionFailed) as info:
        client.status()
    assert info.value.message.endswith(": Remote end closed connection without response")


def test_polling_uses_the_whole_timeout(make_client, requests_mock, fake_clock):
    # Backoff 0.5, 1, 2, 4: the next step would pass the deadline; one last poll still
    # comes just before it instead of giving up seconds early.
    client = make_client(timeout=10)
    requests_mock.get(RUN_URL, json=run_object(status="running"))
    with pytest.raises(e.CommandTimeout) as info:
        client.wait_for_run("run_abc")
    assert info.value.run_id == "run_abc"
    assert sum(fake_clock.sleeps) == pytest.approx(10 - service.POLL_MIN)
    assert fake_clock.now <= 1000.0 + 10


def test_a_poll_that_outlasts_the_deadline_names_the_run(make_client, requests_mock,
                                                         fake_clock):
    client = make_client(timeout=5)

    def slow(request, context):
        fake_clock.now += 5
        raise requests.exceptions.ReadTimeout("read timed out")

    requests_mock.post(BASE + "/runs", status_code=202, json=run_object(status="running"))
    requests_mock.get(RUN_URL, text=slow)
    with pytest.raises(e.CommandTimeout) as info:
        client.run(["sleep", "100"])
    assert info.value.run_id == "run_abc"
    assert "bus containers delete run_abc" in error_text(info.value, Invocation())
