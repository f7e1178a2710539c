"""Issue 12, the service's share: the retry policy as pure functions, the order of a quick
run's output, Retry-After kept after the log stream falls back, and the deadline and the
line cap on every byte of a log stream."""

from __future__ import annotations

import base64
import json

import pytest

from bus_containers import errors as e
from bus_containers import service
from bus_containers.service import retry_delay, should_retry

from .helpers import BASE, error_body, run_object

LOGS = BASE + "/runs/run_abc/logs"


def line(offset: int, data: bytes, stream: str) -> bytes:
    chunk = {"stream": stream, "offset": offset, "data_b64": base64.b64encode(data).decode()}
    return json.dumps(chunk).encode() + b"\n"


# -- the policy: data on the error, decided by pure functions ------------------------------
@pytest.mark.parametrize("error, retried", [
    (e.ServerError("x"), True), (e.RateLimited("x"), True), (e.ConnectionFailed("x"), True),
    (e.QuotaExhausted("x"), False), (e.BillingRequired("x"), False),
    (e.RunNotFound("x"), False), (e.UnexpectedResponse("x"), False),
    (e.CommandTimeout("x"), False), (e.ConnectionFailed("x", retryable=False), False),
])
def test_should_retry_reads_the_error(error, retried):
    assert should_retry(error, 1, 3) is retried
    assert should_retry(error, 4, 3) is False  # 4 failed attempts: the retries are spent


def test_a_quiet_stream_is_always_reopened_and_at_once():
    idle = e.ConnectionFailed("quiet", idle=True)
    assert should_retry(idle, 99, 3)
    assert retry_delay(idle, 99, 0.0) == 0.0


@pytest.mark.parametrize("failures, jitter, delay", [
    (1, 0.0, 0.5), (2, 0.0, 1.0), (3, 0.0, 2.0), (5, 0.0, 8.0), (9, 0.0, 8.0),
    (1, 1.0, 0.375),  # jitter takes off at most a quarter
])
def test_retry_delay_backs_off_exponentially_with_jitter(failures, jitter, delay):
    assert retry_delay(e.ServerError("x"), failures, jitter) == delay


def test_retry_delay_takes_the_servers_retry_after():
    assert retry_delay(e.RateLimited("x", retry_after=7.0), 1, 0.5) == 7.0


def test_each_retry_is_announced_before_its_pause(make_client, requests_mock, no_jitter):
    heard = []
    client = make_client(on_retry=lambda error, delay, attempt, attempts: heard.append(
        (type(error), delay, attempt, attempts)))
    requests_mock.get(BASE + "/status", [{"status_code": 503}, {"status_code": 503},
                                         {"json": {"status": "ready"}}])
    assert client.status() == {"status": "ready"}
    assert heard == [(e.ServerError, 0.5, 2, 4), (e.ServerError, 1.0, 3, 4)]


# -- bug 1: a quick run's output in the order it was written ------------------------------
def test_a_quick_run_that_wrote_both_streams_is_replayed_in_order(client, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_object(
        stdout="out1\nout2\n", stderr="err1\n"))
    requests_mock.get(LOGS, content=line(0, b"out1\n", "stdout") + line(5, b"err1\n", "stderr")
                      + line(10, b"out2\n", "stdout")
                      + b'{"event": "end", "status": "succeeded", "exit_code": 0}\n')
    events = list(client.follow_run(["sh", "-c", "..."]))
    written = [(ev["stream"], ev["data"]) for ev in events if "data" in ev]
    assert written == [("stdout", b"out1\n"), ("stderr", b"err1\n"), ("stdout", b"out2\n")]


def test_a_quick_run_with_one_stream_costs_one_request(client, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_object(stdout="hi\n"))
    events = list(client.follow_run(["echo", "hi"]))
    assert [ev["data"] for ev in events if "data" in ev] == [b"hi\n"]
    assert requests_mock.call_count == 1


def test_without_a_logs_endpoint_a_quick_run_still_prints_both_streams(client, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_object(
        stdout="out\n", stderr="err\n"))
    requests_mock.get(LOGS, status_code=404, json=error_body("not_found", "no route"))
    events = list(client.follow_run(["sh"]))
    assert [(ev["stream"], ev["data"]) for ev in events if "data" in ev] == [
        ("stdout", b"out\n"), ("stderr", b"err\n")]
    assert events[-1]["event"] == "end"


# -- bug 8: the create's Retry-After survives the fall back to polling --------------------
def test_polling_after_the_stream_falls_back_keeps_the_creates_retry_after(
        client, requests_mock, fake_clock):
    requests_mock.post(BASE + "/runs", status_code=202, headers={"Retry-After": "2"},
                       json=run_object(status="running", stdout=""))
    requests_mock.get(LOGS, status_code=404, json=error_body("not_found", "no route"))
    requests_mock.get(BASE + "/runs/run_abc", json=run_object())
    list(client.follow_run(["sleep", "1"]))
    assert fake_clock.sleeps[0] == 2.0


# -- bug 9: the deadline on every byte, and a bounded line ---------------------------------
class Drip:
    """A response body that gives `piece` per read and moves the fake clock `step` seconds
    each time, up to `limit` bytes: a server that talks for ever, in fast-forward."""

    def __init__(self, clock, piece: bytes, step: float, limit: int = 1 << 30) -> None:
        self.clock, self.piece, self.step, self.left = clock, piece, step, limit
        self.given = 0

    def read1(self, amt=-1) -> bytes:
        if self.left <= 0:
            return b""
        self.clock.now += self.step
        self.left -= len(self.piece)
        self.given += len(self.piece)
        return self.piece

    read = read1

    def close(self) -> None:
        pass


def test_blank_lines_do_not_keep_a_follow_stream_past_the_deadline(
        make_client, requests_mock, fake_clock):
    drip = Drip(fake_clock, b"\n", step=0.1, limit=10_000)  # 1000 s of blank lines
    requests_mock.get(LOGS, body=drip)
    client = make_client(timeout=5)
    with pytest.raises(e.CommandTimeout) as info:
        list(client.iter_logs("run_abc", follow=True))
    assert info.value.run_id == "run_abc"
    assert fake_clock.now - 1000.0 <= 5.2  # stopped at the deadline, not 25 s later


def test_a_line_without_end_is_an_unexpected_response_with_bounded_memory(
        make_client, requests_mock, fake_clock, monkeypatch):
    monkeypatch.setattr(service, "MAX_LOG_LINE_BYTES", 1 << 20)
    drip = Drip(fake_clock, b"x" * 65536, step=0.0, limit=64 << 20)
    requests_mock.get(LOGS, body=drip)
    with pytest.raises(e.UnexpectedResponse) as info:
        list(make_client(timeout=60).iter_logs("run_abc", follow=True))
    assert "longer than 1 MiB" in info.value.message
    assert drip.given <= (1 << 20) + 65536  # read no further than the cap
