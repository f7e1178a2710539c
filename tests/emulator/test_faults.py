"""Fault injection, each action observed with raw `requests` calls against a real process."""

from __future__ import annotations

import json
import socket
import time
from urllib.parse import urlsplit

import pytest
import requests

from .helpers import Api, assert_error

STATUS = "/api/v1/containers/status"


@pytest.fixture(autouse=True)
def no_faults_left(emu):
    emu.clear_faults()
    yield
    emu.clear_faults()


def test_status_fault_with_retry_after_then_normal(emu):
    api = Api(emu)
    emu.add_faults([{"action": "status", "status": 503, "retry_after": "2", "count": 2,
                     "path": STATUS}])
    for _ in range(2):
        r = api.get("/status")
        assert_error(r, 503, "unavailable")
        assert r.headers["Retry-After"] == "2"
    assert api.get("/status").status_code == 200
    assert emu.stats()["faults_pending"] == 0


def test_status_429_defaults_to_rate_limited_and_http_date_retry_after(emu):
    date = "Wed, 21 Oct 2065 07:28:00 GMT"
    emu.add_faults([{"action": "status", "status": 429, "retry_after": date}])
    r = Api(emu).get("/status")
    assert_error(r, 429, "rate_limited")
    assert r.headers["Retry-After"] == date


def test_status_fault_with_custom_code_guidance_and_url(emu):
    emu.add_faults([{"action": "status", "status": 402, "code": "billing_required",
                     "guidance": "pay", "url": "http://127.0.0.1/billing"}])
    error = assert_error(Api(emu).get("/status"), 402, "billing_required")
    assert error["guidance"] == "pay" and error["url"] == "http://127.0.0.1/billing"


def test_method_and_path_filters(emu):
    api = Api(emu)
    emu.add_faults([{"action": "status", "status": 500, "method": "POST",
                     "path_prefix": "/api/v1/containers/runs"}])
    assert api.get("/runs").status_code == 200
    assert api.get("/status").status_code == 200
    assert_error(api.post_run(["true"]), 500, "internal")


def test_path_suffix_filter(emu):
    api = Api(emu)
    run = api.run(["true"])
    emu.add_faults([{"action": "status", "status": 502, "path_suffix": "/logs"}])
    assert api.get(f"/runs/{run['id']}").status_code == 200
    assert_error(api.get(f"/runs/{run['id']}/logs"), 502, "bad_gateway")


def test_count_minus_one_is_for_ever_until_cleared(emu):
    api = Api(emu)
    emu.add_faults([{"action": "status", "status": 504, "count": -1, "path": STATUS}])
    for _ in range(5):
        assert api.get("/status").status_code == 504
    assert emu.stats()["faults_pending"] == 1
    emu.clear_faults()
    assert api.get("/status").status_code == 200


def test_delay(emu):
    emu.add_faults([{"action": "delay", "seconds": 0.5, "path": STATUS}])
    started = time.monotonic()
    assert Api(emu).get("/status").status_code == 200
    assert time.monotonic() - started >= 0.5


def test_delay_longer_than_the_client_timeout_is_a_read_timeout(emu):
    emu.add_faults([{"action": "delay", "seconds": 2, "path": STATUS}])
    with pytest.raises(requests.exceptions.ReadTimeout):
        Api(emu).get("/status", timeout=0.3)


def test_drop_closes_the_connection_without_a_response(emu):
    emu.add_faults([{"action": "drop", "path": STATUS}])
    with pytest.raises(requests.exceptions.ConnectionError):
        Api(emu).get("/status")
    assert Api(emu).get("/status").status_code == 200


def test_drop_before_does_not_create_a_run_and_drop_after_does(emu):
    api = Api(emu)
    emu.add_faults([{"action": "drop", "method": "POST", "path_prefix": "/api/v1/containers/runs"}])
    with pytest.raises(requests.exceptions.ConnectionError):
        api.post_run(["true"])
    assert api.get("/runs").json()["runs"] == []
    emu.add_faults([{"action": "drop", "when": "after", "method": "POST",
                     "path_prefix": "/api/v1/containers/runs"}])
    with pytest.raises(requests.exceptions.ConnectionError):
        api.post_run(["true"])
    assert len(api.get("/runs").json()["runs"]) == 1


def test_drop_with_a_raw_socket_sees_eof_and_no_bytes(emu, raw_get):
    emu.add_faults([{"action": "drop", "path": STATUS}])
    assert raw_get(STATUS) == b""


def test_drop_mid_sends_headers_and_part_of_the_body(emu, raw_get):
    api = Api(emu)
    emu.add_faults([{"action": "drop_mid", "path": STATUS}])
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        api.get("/status")
    emu.add_faults([{"action": "drop_mid", "path": STATUS}])
    raw = raw_get(STATUS, token=api.token)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    declared = int([x for x in head.split(b"\r\n") if x.lower().startswith(b"content-length")
                    ][0].split(b":")[1])
    assert 0 < len(body) < declared


def test_drop_mid_on_create_still_creates_the_run(emu):
    api = Api(emu)
    emu.add_faults([{"action": "drop_mid", "method": "POST"}])
    key = {"Idempotency-Key": "retry-me-1"}
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        api.post_run(["echo", "x"], headers=key)
    retry = api.post_run(["echo", "x"], headers=key)  # the client's retry: same key
    assert retry.status_code in (201, 202) and retry.headers["Idempotent-Replayed"] == "true"
    assert len(api.get("/runs").json()["runs"]) == 1


def test_html(emu):
    emu.add_faults([{"action": "html", "path": STATUS}])
    r = Api(emu).get("/status")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert r.text.startswith("<!doctype html>")
    emu.add_faults([{"action": "html", "status": 502, "body": "<p>x</p>"}])
    r = Api(emu).get("/status")
    assert (r.status_code, r.text) == (502, "<p>x</p>")


def test_truncated_json(emu):
    emu.add_faults([{"action": "truncated_json", "path": STATUS}])
    r = Api(emu).get("/status")
    assert r.status_code == 200 and r.headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError):
        json.loads(r.content)
    assert len(r.content) > 5


@pytest.mark.parametrize("body", [None, [1, 2, 3]])
def test_wrong_shape(emu, body):
    fault = {"action": "wrong_shape", "path": STATUS}
    if body is not None:
        fault["body"] = body
    emu.add_faults([fault])
    r = Api(emu).get("/status")
    assert r.status_code == 200
    assert r.json() == (body if body is not None else {"unexpected": True})


def test_huge_streams_the_declared_size(emu):
    emu.add_faults([{"action": "huge", "path": STATUS}])  # 50 MB by default
    with Api(emu).get("/status", stream=True) as r:
        assert r.status_code == 200 and r.headers["Content-Length"] == "50000000"
        first = next(r.iter_content(65536))
        assert first.startswith(b'{"pad":"')
        total = len(first) + sum(len(c) for c in r.iter_content(1 << 20))
    assert total == 50_000_000


def test_huge_small_body_is_valid_json(emu):
    emu.add_faults([{"action": "huge", "bytes": 100000, "path": STATUS}])
    assert len(Api(emu).get("/status").json()["pad"]) == 100000 - 10


def test_redirect(emu):
    emu.add_faults([{"action": "redirect", "location": "http://127.0.0.2:9/x", "path": STATUS}])
    r = Api(emu).get("/status", allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == "http://127.0.0.2:9/x"
    emu.add_faults([{"action": "redirect", "status": 307, "path": STATUS}])
    assert Api(emu).get("/status", allow_redirects=False).status_code == 307


def test_pending_shows_a_finished_run_as_running(emu):
    api = Api(emu)
    emu.add_faults([{"action": "pending", "count": 3}])
    r = api.post_run(["true"], wait=5)
    assert r.status_code == 202 and r.json()["status"] == "running"
    assert r.headers["Retry-After"] == "1"
    run_id = r.json()["id"]
    for _ in range(2):
        got = api.get(f"/runs/{run_id}")
        assert got.status_code == 200
        assert (got.json()["status"], got.json()["exit_code"]) == ("running", None)
    assert api.get(f"/runs/{run_id}").json()["status"] == "succeeded"


def test_faults_never_touch_the_admin_endpoints(emu):
    emu.add_faults([{"action": "status", "status": 500, "count": -1}])
    assert emu.stats()["faults_pending"] == 1
    assert emu.add_faults([])["pending"] == 1


def test_listing_pending_faults(emu):
    emu.add_faults([{"action": "delay", "seconds": 1, "count": 2, "method": "get"}])
    listed = requests.get(emu.url + "/_emulator/faults", timeout=10,
                      headers=emu.admin_headers()).json()["faults"]
    assert listed == [{"action": "delay", "count": 2, "method": "GET", "seconds": 1}]


@pytest.mark.parametrize("fault", [
    {"action": "explode"},
    {"action": "status"},
    {"action": "status", "status": 99},
    {"action": "status", "status": 503, "retry_after": True},
    {"action": "delay", "seconds": -1},
    {"action": "delay", "seconds": "1"},
    {"action": "drop", "when": "later"},
    {"action": "huge", "bytes": 1},
    {"action": "redirect", "status": 200},
    {"action": "html", "count": 0},
    {"action": "html", "unknown": 1},
    {"action": "html", "path": 5},
    "status",
])
def test_invalid_faults_are_400_and_none_is_added(emu, fault):
    r = requests.post(emu.url + "/_emulator/faults",
                      json={"faults": [{"action": "html"}, fault]}, timeout=10,
                      headers=emu.admin_headers())
    assert_error(r, 400, "invalid_request")
    assert emu.stats()["faults_pending"] == 0


def test_attempts_count_every_request_including_faulted_ones(emu):
    emu.reset_counters()
    emu.add_faults([{"action": "status", "status": 503, "count": 2, "path": STATUS}])
    api = Api(emu)
    for _ in range(3):
        api.get("/status")
    stats = emu.stats()
    assert stats["attempts"] == {f"GET {STATUS}": 3}
    assert stats["requests"] == 3


def test_faults_file_at_start(emulator_factory):
    emu = emulator_factory(faults=[{"action": "status", "status": 503, "path": STATUS}])
    api = Api(emu)
    assert api.get("/status").status_code == 503
    assert api.get("/status").status_code == 200


# -- a raw socket client, to see exactly what goes over the wire ---------------------------

@pytest.fixture
def raw_get(emu):
    def get(path: str, token: str | None = None) -> bytes:
        parts = urlsplit(emu.url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
            auth = f"Authorization: Bearer {token}\r\n" if token else ""
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return data
                data += chunk
    return get
