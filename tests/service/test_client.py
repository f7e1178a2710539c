"""ContainersClient against requests-mock: the CONTRACT 4 error table, headers, no account
id, polling after 202, pagination, run objects, run ids and --debug logging."""

from __future__ import annotations

import json
import logging
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import requests_mock as rmock

from bus_containers import __version__
from bus_containers import errors as e
from bus_containers.render import Invocation, error_text
from bus_containers.service import (
    ContainersClient,
    exit_code_for_run,
    is_finished,
    validate_run_id,
)

from .helpers import (
    ACCOUNT_WORDS,
    API,
    BASE,
    CALL_IDS,
    CALLS,
    RUN_URL,
    TOKEN,
    assert_no_token,
    error_body,
    ok_response,
    run_object,
)


# -- the error table (CONTRACT 4) -------------------------------------------------------
@pytest.mark.parametrize("status", [400, 422])
@pytest.mark.parametrize("code", ["invalid_request", "unknown_profile", "idempotency_conflict"])
def test_400_and_422_are_invalid_request_exit_2_with_server_message(
        client, requests_mock, status, code):
    requests_mock.post(BASE + "/runs", status_code=status,
                       json=error_body(code, f"the server says {code}"))
    with pytest.raises(e.InvalidRequest) as info:
        client.create_run(["true"], profile="nope")
    err = info.value
    assert err.exit_code == 2
    assert err.message == f"the server says {code}"
    assert err.code == code
    assert err.status == status
    assert requests_mock.call_count == 1


@pytest.mark.parametrize("code, cls", [("unauthenticated", e.AuthError),
                                       ("token_expired", e.TokenExpired)])
@pytest.mark.parametrize("name, method, url, call", CALLS, ids=CALL_IDS)
def test_401_is_exit_4_with_how_to_get_a_token(client, requests_mock, code, cls,
                                               name, method, url, call):
    requests_mock.register_uri(method, url, status_code=401,
                               json=error_body(code, "bad token"))
    with pytest.raises(cls) as info:
        call(client)
    err = info.value
    assert err.exit_code == 4
    assert err.message == "bad token"
    assert err.guidance is None  # the service gives facts; the CLI words the advice
    assert "bus auth token --scope" in error_text(err, Invocation())
    assert requests_mock.call_count == 1


def test_401_keeps_server_guidance_and_adds_the_token_command(client, requests_mock):
    requests_mock.get(BASE + "/status", status_code=401,
                      json=error_body("unauthenticated", "no", guidance="Sign in again."))
    with pytest.raises(e.AuthError) as info:
        client.status()
    assert info.value.guidance == "Sign in again."
    text = error_text(info.value, Invocation())
    assert "Sign in again." in text and "bus auth token --scope" in text


@pytest.mark.parametrize("name, method, url, call", CALLS, ids=CALL_IDS)
def test_402_billing_required_exit_5_message_guidance_url_no_retry(
        client, requests_mock, fake_clock, name, method, url, call):
    requests_mock.register_uri(method, url, status_code=402, json=error_body(
        "billing_required", "billing is not set up", guidance="Add a card.",
        url="https://billing.example.test/setup"))
    with pytest.raises(e.BillingRequired) as info:
        call(client)
    err = info.value
    assert err.exit_code == 5
    assert err.message == "billing is not set up"
    assert err.guidance == "Add a card."
    assert err.url == "https://billing.example.test/setup"
    assert err.to_dict()["error"]["url"] == "https://billing.example.test/setup"
    assert requests_mock.call_count == 1
    assert fake_clock.sleeps == []


@pytest.mark.parametrize("code, cls", [("forbidden", e.Forbidden),
                                       ("insufficient_scope", e.MissingScope)])
def test_403_is_exit_4_and_names_the_scope_when_given(client, requests_mock, code, cls):
    requests_mock.post(BASE + "/runs", status_code=403,
                       json=error_body(code, "not allowed", scope="container:run"))
    with pytest.raises(cls) as info:
        client.create_run(["true"])
    err = info.value
    assert err.exit_code == 4
    assert "not allowed" in err.message
    assert "container:run" in err.message
    assert err.scope == "container:run"
    assert "bus auth token" in error_text(err, Invocation())
    assert requests_mock.call_count == 1


def test_403_without_scope_keeps_the_message(client, requests_mock):
    requests_mock.get(BASE + "/status", status_code=403,
                      json=error_body("forbidden", "account suspended"))
    with pytest.raises(e.Forbidden) as info:
        client.status()
    assert info.value.exit_code == 4
    assert info.value.message == "account suspended"


@pytest.mark.parametrize("method, call", [
    ("GET", lambda c: c.get_run("run_abc")),
    ("DELETE", lambda c: c.delete_run("run_abc")),
], ids=["get", "delete"])
def test_404_on_a_run_is_run_not_found_exit_3(client, requests_mock, method, call):
    requests_mock.register_uri(method, RUN_URL, status_code=404,
                               json=error_body("not_found", "no run run_abc"))
    with pytest.raises(e.RunNotFound) as info:
        call(client)
    assert info.value.exit_code == 3
    assert info.value.message == "no run run_abc"
    assert requests_mock.call_count == 1


@pytest.mark.parametrize("name, method, url, call", [CALLS[0], CALLS[2]],
                         ids=["status", "list_runs"])
def test_404_on_an_endpoint_is_exit_1_not_a_missing_run(client, requests_mock,
                                                       name, method, url, call):
    requests_mock.register_uri(method, url, status_code=404,
                               json=error_body("not_found", "no such route"))
    with pytest.raises(e.ContainersError) as info:
        call(client)
    assert not isinstance(info.value, e.RunNotFound)
    assert info.value.exit_code == 1
    assert url in info.value.message
    assert "--api-url" in error_text(info.value, Invocation())


def test_409_is_conflict_exit_1(client, requests_mock):
    requests_mock.delete(RUN_URL, status_code=409, json=error_body("conflict", "busy"))
    with pytest.raises(e.Conflict) as info:
        client.delete_run("run_abc")
    assert info.value.exit_code == 1
    assert info.value.message == "busy"
    assert requests_mock.call_count == 1


@pytest.mark.parametrize("name, method, url, call", CALLS, ids=CALL_IDS)
def test_429_quota_exhausted_exit_5_no_retry(client, requests_mock, fake_clock,
                                            name, method, url, call):
    requests_mock.register_uri(method, url, status_code=429, headers={"Retry-After": "1"},
                               json=error_body("quota_exhausted", "no runs left",
                                               guidance="Upgrade.", url="https://b.test/p"))
    with pytest.raises(e.QuotaExhausted) as info:
        call(client)
    err = info.value
    assert err.exit_code == 5
    assert (err.message, err.guidance, err.url) == ("no runs left", "Upgrade.",
                                                    "https://b.test/p")
    assert requests_mock.call_count == 1
    assert fake_clock.sleeps == []


@pytest.mark.parametrize("name, method, url, call", CALLS, ids=CALL_IDS)
def test_429_rate_limited_is_retried_then_exit_5(client, requests_mock, fake_clock,
                                                name, method, url, call):
    requests_mock.register_uri(method, url, status_code=429, headers={"Retry-After": "2"},
                               json=error_body("rate_limited", "slow down"))
    with pytest.raises(e.RateLimited) as info:
        call(client)
    assert info.value.exit_code == 5
    assert "slow down" in info.value.message
    assert requests_mock.call_count == 4
    assert fake_clock.sleeps == [2.0, 2.0, 2.0]


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599])
@pytest.mark.parametrize("name, method, url, call", CALLS, ids=CALL_IDS)
def test_5xx_is_retried_then_exit_1(client, requests_mock, status, name, method, url, call):
    requests_mock.register_uri(method, url, status_code=status, text="<html>bad gateway</html>")
    with pytest.raises(e.ServerError) as info:
        call(client)
    assert info.value.exit_code == 1
    assert f"HTTP {status}" in info.value.message
    assert requests_mock.call_count == 4


def test_5xx_with_an_error_body_keeps_the_server_message(client, requests_mock):
    requests_mock.get(BASE + "/status", status_code=503,
                      json=error_body("unavailable", "maintenance until noon"))
    with pytest.raises(e.ServerError) as info:
        client.status()
    assert "maintenance until noon" in info.value.message


@pytest.mark.parametrize("exc", [requests.exceptions.ConnectionError,
                                 requests.exceptions.ConnectTimeout,
                                 requests.exceptions.ReadTimeout,
                                 requests.exceptions.ChunkedEncodingError])
@pytest.mark.parametrize("name, method, url, call", CALLS, ids=CALL_IDS)
def test_connection_errors_and_timeouts_are_retried_then_exit_1(
        client, requests_mock, fake_clock, exc, name, method, url, call):
    requests_mock.register_uri(method, url, exc=exc("boom"))
    with pytest.raises(e.ConnectionFailed) as info:
        call(client)
    assert info.value.exit_code == 1
    assert url in info.value.message
    assert requests_mock.call_count == 4
    assert len(fake_clock.sleeps) == 3


def test_read_timeout_at_the_deadline_is_exit_124(make_client, fake_clock, requests_mock):
    client = make_client(timeout=5)

    def slow(request, context):
        fake_clock.now += 5  # the read took the whole budget
        raise requests.exceptions.ReadTimeout("read timed out")

    requests_mock.get(BASE + "/status", text=slow)
    with pytest.raises(e.CommandTimeout) as info:
        client.status()
    assert info.value.exit_code == 124
    assert requests_mock.call_count == 1


def test_every_request_has_connect_and_read_timeouts_within_the_budget(make_client,
                                                                       requests_mock):
    client = make_client(timeout=7)
    requests_mock.get(BASE + "/status", json={"status": "ready"})
    client.status()
    connect, read = requests_mock.last_request.timeout
    assert 0 < connect <= 7 and 0 < read <= 7


@pytest.mark.parametrize("body", [
    b"<html>Hello</html>", b"", b"\xff\xfe\x00garbage", b"{\"status\": ", b"[" * 100000,
], ids=["html", "empty", "binary", "truncated-json", "deep-nesting"])
@pytest.mark.parametrize("name, method, url, call", CALLS[:4], ids=CALL_IDS[:4])
def test_non_json_body_is_unexpected_response(client, requests_mock, body,
                                              name, method, url, call):
    status = ok_response(name)["status_code"]
    requests_mock.register_uri(method, url, status_code=status, content=body)
    with pytest.raises(e.UnexpectedResponse) as info:
        call(client)
    assert info.value.exit_code == 1
    assert info.value.message.startswith(f"unexpected response from {url} (HTTP {status})")
    assert requests_mock.call_count == 1


@pytest.mark.parametrize("name, method, url, call, body", [
    ("status", "GET", BASE + "/status", lambda c: c.status(), {"state": "ready"}),
    ("status", "GET", BASE + "/status", lambda c: c.status(), {"status": 1}),
    ("status", "GET", BASE + "/status", lambda c: c.status(), ["ready"]),
    ("create_run", "POST", BASE + "/runs", lambda c: c.create_run(["x"]), {"id": "run_a"}),
    ("create_run", "POST", BASE + "/runs", lambda c: c.create_run(["x"]),
     {"id": 5, "status": "running"}),
    ("get_run", "GET", RUN_URL, lambda c: c.get_run("run_abc"), "run_abc"),
    ("get_run", "GET", RUN_URL, lambda c: c.get_run("run_abc"), None),
    ("list_runs", "GET", BASE + "/runs", lambda c: c.list_runs(), {"runs": {}}),
    ("list_runs", "GET", BASE + "/runs", lambda c: c.list_runs(),
     {"runs": [], "next_cursor": 3}),
    ("list_runs", "GET", BASE + "/runs", lambda c: c.list_runs(),
     {"runs": [{"id": "run_a"}], "next_cursor": None}),
    ("list_runs", "GET", BASE + "/runs", lambda c: c.list_runs(), [run_object()]),
], ids=["status-no-status", "status-not-str", "status-list", "create-no-status",
        "create-int-id", "get-string", "get-null", "list-runs-dict", "list-int-cursor",
        "list-bad-run", "list-bare-list"])
def test_json_of_the_wrong_shape_is_unexpected_response(client, requests_mock,
                                                        name, method, url, call, body):
    status = ok_response(name)["status_code"]
    requests_mock.register_uri(method, url, status_code=status, text=json.dumps(body))
    with pytest.raises(e.UnexpectedResponse) as info:
        call(client)
    assert info.value.exit_code == 1
    assert info.value.message.startswith(f"unexpected response from {url} (HTTP {status})")


@pytest.mark.parametrize("bad_id", ["../x", "a/b", "", "run?x", "r" * 200])
@pytest.mark.parametrize("status", [201, 202])
def test_a_created_run_with_an_invalid_id_is_an_unexpected_response(client, requests_mock,
                                                                     status, bad_id):
    requests_mock.post(BASE + "/runs", status_code=status,
                       json=run_object(bad_id, status="running"))
    with pytest.raises(e.UnexpectedResponse) as info:
        client.run(["true"])
    assert info.value.exit_code == 1  # the server's fault, not a usage error (2)
    assert info.value.message.startswith(
        f"unexpected response from {BASE}/runs (HTTP {status})")
    assert requests_mock.call_count == 1


def test_a_body_past_the_size_cap_is_refused(client, requests_mock, monkeypatch):
    from bus_containers import transport

    monkeypatch.setattr(transport, "MAX_BODY_BYTES", 1000)
    requests_mock.get(RUN_URL, json=run_object(stdout="x" * 5000))
    with pytest.raises(e.UnexpectedResponse) as info:
        client.get_run("run_abc")
    assert info.value.exit_code == 1
    assert "larger than" in info.value.message


@pytest.mark.parametrize("status", [418, 405, 413, 451])
def test_other_4xx_with_error_body_exit_1_no_retry(client, requests_mock, status):
    requests_mock.get(BASE + "/status", status_code=status, json=error_body("odd", "odd"))
    with pytest.raises(e.ContainersError) as info:
        client.status()
    assert info.value.exit_code == 1
    assert requests_mock.call_count == 1


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 409, 422])
def test_error_status_without_an_error_body_is_unexpected_response(client, requests_mock,
                                                                  status):
    requests_mock.get(RUN_URL, status_code=status, text="<html>proxy says no</html>")
    with pytest.raises(e.UnexpectedResponse) as info:
        client.get_run("run_abc")
    assert info.value.exit_code == 1
    assert info.value.message == f"unexpected response from {RUN_URL} (HTTP {status})"
    assert requests_mock.call_count == 1


def test_429_without_an_error_body_counts_as_rate_limiting(client, requests_mock):
    requests_mock.get(RUN_URL, status_code=429, text="Too Many Requests")
    with pytest.raises(e.RateLimited) as info:
        client.get_run("run_abc")
    assert info.value.exit_code == 5
    assert requests_mock.call_count == 4


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("name, method, url, call", CALLS, ids=CALL_IDS)
def test_redirects_are_not_followed(client, requests_mock, status, name, method, url, call):
    elsewhere = "https://evil.example.test/steal"
    requests_mock.register_uri(method, url, status_code=status, headers={"Location": elsewhere})
    stolen = requests_mock.register_uri(rmock.ANY, elsewhere, json={"status": "ready"})
    with pytest.raises(e.UnexpectedResponse) as info:
        call(client)
    assert info.value.exit_code == 1
    assert info.value.message == f"unexpected response from {url} (HTTP {status})"
    assert requests_mock.call_count == 1
    assert not stolen.called
    assert all(r.hostname == "api.example.test" for r in requests_mock.request_history)


# -- headers, body, no account id ----------------------------------------------------
@pytest.mark.parametrize("name, method, url, call", CALLS, ids=CALL_IDS)
def test_every_request_sends_the_contract_headers(client, requests_mock,
                                                 name, method, url, call):
    requests_mock.register_uri(method, url, **ok_response(name))
    call(client)
    sent = requests_mock.last_request.headers
    assert sent["Authorization"] == f"Bearer {TOKEN}"
    assert sent["Accept"] == "application/json"
    assert sent["User-Agent"] == f"bus-containers/{__version__}"


def test_create_run_body_and_idempotency_key(client, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_object())
    client.create_run(["sh", "-c", "echo hé"], profile="small", env={"A": "1", "B": "ü"},
                      timeout_seconds=30)
    request = requests_mock.last_request
    assert request.headers["Content-Type"].startswith("application/json")
    assert json.loads(request.body.decode("utf-8")) == {
        "profile": "small", "command": ["sh", "-c", "echo hé"], "timeout_seconds": 30,
        "env": {"A": "1", "B": "ü"}}
    key = request.headers["Idempotency-Key"]
    assert uuid.UUID(key).version == 4
    assert "Prefer" not in request.headers


def test_create_run_minimal_body_has_only_profile_and_command(client, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_object())
    client.create_run(["true"])
    assert requests_mock.last_request.json() == {"profile": "codex", "command": ["true"]}


def test_each_create_run_gets_its_own_idempotency_key(client, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_object())
    client.create_run(["true"])
    client.create_run(["true"])
    keys = [r.headers["Idempotency-Key"] for r in requests_mock.request_history]
    assert keys[0] != keys[1]


def test_create_run_with_wait_sends_prefer_wait(client, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_object())
    client.create_run(["true"], wait=20)
    assert requests_mock.last_request.headers["Prefer"] == "wait=20"


def test_prefer_wait_stays_inside_the_timeout(make_client, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_object())
    make_client(timeout=10).create_run(["true"], wait=600)
    seconds = int(requests_mock.last_request.headers["Prefer"].split("=")[1])
    assert 0 < seconds < 10


def test_run_asks_the_server_to_wait(client, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_object())
    client.run(["true"])
    assert requests_mock.last_request.headers["Prefer"].startswith("wait=")


def _walk_keys(value):
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _walk_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk_keys(item)


def test_the_client_never_sends_an_account_id(client, requests_mock):
    requests_mock.get(BASE + "/status", json={"status": "ready"})
    requests_mock.post(BASE + "/runs", [
        {"status_code": 202, "json": run_object(status="running")},
        {"status_code": 201, "json": run_object()},
    ])
    requests_mock.get(RUN_URL, [{"json": run_object(status="running")},
                                {"json": run_object()}])
    requests_mock.get(BASE + "/runs", [
        {"json": {"runs": [run_object()], "next_cursor": "c1"}},
        {"json": {"runs": [run_object()], "next_cursor": None}},
    ])
    requests_mock.delete(RUN_URL, status_code=204)

    client.status()
    client.run(["echo", "hi"], profile="codex", env={"K": "V"}, timeout_seconds=10)
    client.create_run(["echo"], wait=5)
    client.get_run("run_abc")
    client.list_runs(limit=10, status="running")
    client.delete_run("run_abc")

    history = requests_mock.request_history
    assert {r.method for r in history} == {"GET", "POST", "DELETE"}
    assert len(history) >= 8
    for request in history:
        names = {name.lower() for name in request.headers}
        query = parse_qs(urlsplit(request.url).query)
        body_keys = set(_walk_keys(request.json())) if request.body else set()
        for word in ACCOUNT_WORDS:
            assert word not in names, (request.method, request.url, word)
            assert not any(word in name.replace("-", "_").split("_") for name in names
                           if name != "user-agent"), (request.url, names)
            assert word not in query, (request.url, word)
            assert word not in body_keys, (request.url, word)
        # and the JWT's sub (the account) travels only inside the Authorization header
        sub = "6a1f0e5c-0000-4000-8000-000000000001"
        assert sub not in request.url
        assert sub not in (request.body.decode() if request.body else "")


# -- polling after 202 ---------------------------------------------------------------
def test_run_polls_after_202_until_finished(client, requests_mock, fake_clock):
    seen = []
    requests_mock.post(BASE + "/runs", status_code=202, json=run_object(status="queued"))
    requests_mock.get(RUN_URL, [
        {"json": run_object(status="running")},
        {"json": run_object(status="running")},
        {"json": run_object(status="succeeded", stdout="done\n", extra_field={"x": 1})},
    ])
    final = client.run(["echo", "done"], on_created=seen.append)
    assert final["status"] == "succeeded"
    assert final["stdout"] == "done\n"
    assert final["extra_field"] == {"x": 1}
    assert [r["status"] for r in seen] == ["queued"]
    assert [r.method for r in requests_mock.request_history] == ["POST", "GET", "GET", "GET"]
    assert fake_clock.sleeps == [0.5, 1.0, 2.0]


def test_run_returns_a_201_at_once(client, requests_mock, fake_clock):
    requests_mock.post(BASE + "/runs", status_code=201, json=run_object())
    assert client.run(["true"])["status"] == "succeeded"
    assert requests_mock.call_count == 1
    assert fake_clock.sleeps == []


def test_poll_backoff_doubles_up_to_5_seconds(client, requests_mock, fake_clock):
    requests_mock.post(BASE + "/runs", status_code=202, json=run_object(status="running"))
    requests_mock.get(RUN_URL, [{"json": run_object(status="running")}] * 7
                      + [{"json": run_object(status="failed", exit_code=3)}])
    final = client.run(["false"])
    assert final["status"] == "failed"
    assert fake_clock.sleeps == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0, 5.0]


def test_polls_honour_retry_after(client, requests_mock, fake_clock):
    requests_mock.post(BASE + "/runs", status_code=202, headers={"Retry-After": "3"},
                       json=run_object(status="running"))
    requests_mock.get(RUN_URL, [
        {"json": run_object(status="running"), "headers": {"Retry-After": "7"}},
        {"json": run_object(status="running")},
        {"json": run_object(status="running"), "headers": {"Retry-After": "1"}},
        {"json": run_object()},
    ])
    client.run(["true"])
    # 3 from the 202, 7 from the first poll, then the backoff (which kept doubling), then 1
    assert fake_clock.sleeps == [3.0, 7.0, 2.0, 1.0]


def test_poll_retry_after_zero_does_not_busy_loop(client, requests_mock, fake_clock):
    requests_mock.post(BASE + "/runs", status_code=202, json=run_object(status="running"))
    requests_mock.get(RUN_URL, json=run_object(status="running"),
                      headers={"Retry-After": "0"})
    with pytest.raises(e.CommandTimeout):
        client.run(["sleep", "1000"])
    assert min(fake_clock.sleeps) > 0
    assert requests_mock.call_count < 200


def test_run_reaching_the_deadline_is_command_timeout_naming_the_run(
        make_client, requests_mock, fake_clock):
    client = make_client(timeout=10)
    requests_mock.post(BASE + "/runs", status_code=202,
                       json=run_object("run_slow1", status="running"))
    requests_mock.get(BASE + "/runs/run_slow1", json=run_object("run_slow1", status="running"))
    with pytest.raises(e.CommandTimeout) as info:
        client.run(["sleep", "1000"])
    err = info.value
    assert err.exit_code == 124
    assert "run_slow1" in err.message
    assert err.run_id == "run_slow1"
    assert fake_clock.now <= 1000.0 + 10  # never slept past the deadline
    assert sum(fake_clock.sleeps) <= 10
    assert requests_mock.call_count >= 3


def test_wait_for_run_polls_until_an_unknown_final_status(client, requests_mock):
    requests_mock.get(RUN_URL, [
        {"json": run_object(status="paused")},  # unknown word, not finished: keep polling
        {"json": run_object(status="archived", finished_at="2025-01-01T00:00:09Z")},
    ])
    final = client.wait_for_run("run_abc")
    assert final["status"] == "archived"
    assert requests_mock.call_count == 2


def test_poll_errors_are_typed(client, requests_mock):
    requests_mock.post(BASE + "/runs", status_code=202, json=run_object(status="running"))
    requests_mock.get(RUN_URL, status_code=404, json=error_body("not_found", "gone"))
    with pytest.raises(e.RunNotFound):
        client.run(["true"])


# -- pagination ----------------------------------------------------------------------
def _queries(requests_mock):
    return [parse_qs(urlsplit(r.url).query) for r in requests_mock.request_history]


def test_list_runs_follows_next_cursor_up_to_the_limit(client, requests_mock):
    page1 = [run_object(f"run_{i}") for i in range(100)]
    page2 = [run_object(f"run_{i}") for i in range(100, 200)]
    page3 = [run_object(f"run_{i}") for i in range(200, 250)]
    requests_mock.get(BASE + "/runs", [
        {"json": {"runs": page1, "next_cursor": "c1"}},
        {"json": {"runs": page2, "next_cursor": "c2"}},
        {"json": {"runs": page3, "next_cursor": "c3"}},
    ])
    runs = client.list_runs(limit=250, status="failed")
    assert [r["id"] for r in runs] == [f"run_{i}" for i in range(250)]
    queries = _queries(requests_mock)
    assert [q.get("limit") for q in queries] == [["100"], ["100"], ["50"]]
    assert [q.get("cursor") for q in queries] == [None, ["c1"], ["c2"]]
    assert all(q["status"] == ["failed"] for q in queries)


def test_list_runs_stops_at_the_limit_even_if_a_page_has_more(client, requests_mock):
    requests_mock.get(BASE + "/runs", json={
        "runs": [run_object(f"run_{i}") for i in range(10)], "next_cursor": "more"})
    runs = client.list_runs(limit=3)
    assert len(runs) == 3
    assert requests_mock.call_count == 1
    assert _queries(requests_mock)[0]["limit"] == ["3"]
    assert "status" not in _queries(requests_mock)[0]


def test_list_runs_stops_on_a_null_cursor(client, requests_mock):
    requests_mock.get(BASE + "/runs", [
        {"json": {"runs": [run_object("run_1")], "next_cursor": "c1"}},
        {"json": {"runs": [run_object("run_2")], "next_cursor": None}},
        {"json": {"runs": [run_object("run_3")], "next_cursor": "never-asked"}},
    ])
    assert [r["id"] for r in client.list_runs(limit=50)] == ["run_1", "run_2"]
    assert requests_mock.call_count == 2


def test_list_runs_without_limit_reads_every_page(client, requests_mock):
    requests_mock.get(BASE + "/runs", [
        {"json": {"runs": [run_object("run_1")], "next_cursor": "c1"}},
        {"json": {"runs": [run_object("run_2")]}},
    ])
    assert [r["id"] for r in client.list_runs()] == ["run_1", "run_2"]
    assert _queries(requests_mock)[0]["limit"] == ["100"]


@pytest.mark.parametrize("cursors", [["c1", "c1"], ["c1", "c2", "c1"]])
def test_list_runs_stops_on_a_repeated_cursor(client, requests_mock, cursors):
    requests_mock.get(BASE + "/runs", [
        {"json": {"runs": [run_object(f"run_{i}")], "next_cursor": c}}
        for i, c in enumerate(cursors)])
    runs = client.list_runs()
    assert len(runs) == len(cursors)
    assert requests_mock.call_count == len(cursors)


def test_list_runs_stops_on_an_empty_page(client, requests_mock):
    requests_mock.get(BASE + "/runs", json={"runs": [], "next_cursor": "same-forever"})
    assert client.list_runs() == []
    assert requests_mock.call_count == 1


# -- run objects: unknown fields and words, finished, exit codes ----------------------
def test_unknown_fields_and_status_words_are_kept(client, requests_mock):
    body = run_object(status="hibernating", gpu={"model": "x"}, cost_cents=12)
    requests_mock.get(RUN_URL, json=body)
    assert client.get_run("run_abc") == body
    requests_mock.get(BASE + "/status", json={"status": "melting", "message": "hot",
                                              "regions": ["a"]})
    assert client.status() == {"status": "melting", "message": "hot", "regions": ["a"]}


@pytest.mark.parametrize("run, finished", [
    ({"status": "succeeded"}, True), ({"status": "failed"}, True),
    ({"status": "cancelled"}, True), ({"status": "timed_out"}, True),
    ({"status": "queued"}, False), ({"status": "starting"}, False),
    ({"status": "running"}, False),
    ({"status": "running", "finished_at": "2025-01-01T00:00:00Z"}, False),
    ({"status": "archived", "finished_at": "2025-01-01T00:00:00Z"}, True),
    ({"status": "archived", "finished_at": None}, False),
    ({"status": "archived"}, False),
])
def test_is_finished(run, finished):
    assert is_finished(run) is finished


@pytest.mark.parametrize("run, code", [
    ({"status": "succeeded", "exit_code": 0}, 0),
    ({"status": "succeeded", "exit_code": None}, 0),
    ({"status": "succeeded"}, 0),
    ({"status": "failed", "exit_code": 3}, 3),
    ({"status": "failed", "exit_code": 255}, 255),
    ({"status": "failed", "exit_code": None}, 1),
    ({"status": "failed"}, 1),
    ({"status": "failed", "exit_code": 0}, 1),  # never report success for a failure
    ({"status": "cancelled", "exit_code": None}, 1),
    ({"status": "cancelled", "exit_code": 137}, 137),
    ({"status": "timed_out", "exit_code": None}, 124),
    ({"status": "timed_out", "exit_code": 9}, 124),
    ({"status": "failed", "exit_code": 256}, 1),
    ({"status": "failed", "exit_code": -1}, 1),
    ({"status": "failed", "exit_code": 10**20}, 1),
    ({"status": "failed", "exit_code": "3"}, 1),
    ({"status": "failed", "exit_code": 3.0}, 1),
    ({"status": "failed", "exit_code": True}, 1),
    ({"status": "succeeded", "exit_code": 300}, 0),
    ({"status": "exploded", "finished_at": "x"}, 1),
    ({"status": "exploded", "exit_code": 7}, 7),
])
def test_exit_code_for_run(run, code):
    assert exit_code_for_run(run) == code


# -- run ids -------------------------------------------------------------------------
BAD_IDS = ["", "../x", "a/b", "%2F", "run%2Fx", "a?b", "a b", "a" * 129, "_run", "-run",
           "run\n", "run.1", "rün", "run#1", "run_\x00", None, 5, b"run_abc", ["run_abc"]]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_validate_run_id_rejects(bad):
    with pytest.raises(e.InvalidRunId) as info:
        validate_run_id(bad)
    assert info.value.exit_code == 2


@pytest.mark.parametrize("good", ["run_abc", "A-1", "a", "0", "a" * 128, "run_0123-ABCD"])
def test_validate_run_id_accepts(good):
    assert validate_run_id(good) == good


@pytest.mark.parametrize("bad", BAD_IDS)
@pytest.mark.parametrize("method", ["get_run", "delete_run", "wait_for_run"])
def test_bad_run_ids_make_no_request(client, requests_mock, fake_clock, bad, method):
    requests_mock.register_uri(rmock.ANY, rmock.ANY, json=run_object())
    with pytest.raises(e.InvalidRunId):
        getattr(client, method)(bad)
    assert requests_mock.call_count == 0
    assert fake_clock.sleeps == []


# -- the token stays secret ----------------------------------------------------------
def test_repr_hides_the_token(client):
    assert_no_token(repr(client))
    assert_no_token(str(client))
    assert API in repr(client)


@pytest.mark.parametrize("status, body", [
    (400, error_body("invalid_request", "bad")), (401, error_body("unauthenticated", "x")),
    (402, error_body("billing_required", "x")), (403, error_body("forbidden", "x")),
    (404, error_body("not_found", "x")), (409, error_body("conflict", "x")),
    (429, error_body("quota_exhausted", "x")), (429, error_body("rate_limited", "x")),
    (500, "oops"), (302, ""), (200, "not json"),
])
def test_no_error_message_contains_the_token(client, requests_mock, status, body):
    kwargs = {"json": body} if isinstance(body, dict) else {"text": body}
    requests_mock.get(RUN_URL, status_code=status, **kwargs)
    with pytest.raises(e.ContainersError) as info:
        client.get_run("run_abc")
    err = info.value
    for text in (str(err), repr(err), err.message, err.guidance or "",
                 json.dumps(err.to_dict())):
        assert_no_token(text)


def test_connection_error_text_does_not_leak_the_token(client, requests_mock):
    requests_mock.get(BASE + "/status", exc=requests.exceptions.ConnectionError(
        "Failed to establish a new connection: [Errno 111] Connection refused"))
    with pytest.raises(e.ConnectionFailed) as info:
        client.status()
    assert "Connection refused" in info.value.message
    assert info.value.origin == API
    assert "$BUS_AI_API_URL" in error_text(info.value, Invocation())
    assert_no_token(str(info.value))


def test_str_of_an_error_is_its_final_message(make_client, requests_mock, fake_clock):
    client = make_client(timeout=1)
    requests_mock.get(BASE + "/status", status_code=503)
    with pytest.raises(e.ServerError) as info:
        client.status()
    assert str(info.value) == info.value.message
    assert info.value.gave_up_early
    assert "gave up" in error_text(info.value, Invocation())


# -- --debug logging -----------------------------------------------------------------
def test_debug_log_has_one_line_per_request_and_masks_the_token(client, requests_mock,
                                                                caplog):
    caplog.set_level(logging.DEBUG, logger="bus_containers")
    requests_mock.get(BASE + "/status", [
        {"status_code": 503, "headers": {"X-Request-Id": "req-first"}},
        {"json": {"status": "ready"}, "headers": {"X-Request-Id": "req-second"}},
    ])
    client.status()
    lines = [r.getMessage() for r in caplog.records if r.name == "bus_containers"
             and " -> " in r.getMessage()]
    assert len(lines) == 2
    first, second = lines
    for line, status, attempt, request_id in ((first, 503, 1, "req-first"),
                                              (second, 200, 2, "req-second")):
        assert line.startswith(f"GET {BASE}/status -> {status} in ")
        assert " ms " in line
        assert f"attempt {attempt}" in line
        assert request_id in line
        assert "Bearer ***" in line
    assert_no_token(caplog.text)
    assert "retrying GET" in caplog.text


def test_debug_log_for_a_failed_connection(client, requests_mock, caplog):
    caplog.set_level(logging.DEBUG, logger="bus_containers")
    requests_mock.delete(RUN_URL, exc=requests.exceptions.ConnectionError("refused"))
    with pytest.raises(e.ConnectionFailed):
        client.delete_run("run_abc")
    lines = [r.getMessage() for r in caplog.records if " -> " in r.getMessage()]
    assert [f"attempt {n}" in line for n, line in enumerate(lines, 1)] == [True] * 4
    assert all(line.startswith(f"DELETE {RUN_URL} -> -") for line in lines)
    assert_no_token(caplog.text)


def test_nothing_is_logged_above_debug(client, requests_mock, caplog):
    caplog.set_level(logging.INFO, logger="bus_containers")
    requests_mock.get(BASE + "/status", json={"status": "ready"})
    client.status()
    assert [r for r in caplog.records if r.name.startswith("bus_containers")] == []


def test_client_works_with_a_given_session(fake_clock, requests_mock):
    session = requests.Session()
    client = ContainersClient(API + "/", TOKEN, session=session, sleep=fake_clock.sleep,
                              clock=fake_clock.clock)
    requests_mock.get(BASE + "/status", json={"status": "ready"})
    assert client.status() == {"status": "ready"}
    assert client.base_url == BASE


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 409, 422, 429])
def test_an_empty_server_message_still_says_what_came_back(status):
    """Found by the parser fuzz on Python 3.10: an empty message printed a bare 'Error:'."""
    from bus_containers.responses import error_for

    body = b'{"error": {"code": "", "message": "  "}}'
    got = error_for(status, body, RUN_URL, None, run_path=True)
    got = getattr(got, "error", got)  # a 429 without quota_exhausted is retried
    assert f"HTTP {status}" in got.message or "rate limited" in got.message


@pytest.mark.parametrize("body", [b'{"status": NaN}', b'{"status": "ready", "x": Infinity}',
                                  b'{"status": "ready", "x": 1e400}'])
def test_non_json_numbers_are_unexpected_responses(client, requests_mock, body):
    """NaN, Infinity and overflowing numbers are not JSON: `--json` could not print them."""
    requests_mock.get(BASE + "/status", content=body)
    with pytest.raises(e.UnexpectedResponse):
        client.status()


def test_delete_runs_checks_every_id_first_and_goes_on_past_a_missing_one(
        client, requests_mock):
    requests_mock.delete(BASE + "/runs/run_a", status_code=204)
    requests_mock.delete(BASE + "/runs/run_b", status_code=404, json=error_body("not_found"))
    with pytest.raises(e.InvalidRunId):
        client.delete_runs(["run_a", "../x"])
    assert requests_mock.call_count == 0
    heard = []
    result = client.delete_runs(["run_b", "run_a", "run_a"],
                                on_result=lambda run_id, found: heard.append((run_id, found)))
    assert result == {"deleted": ["run_a"], "not_found": ["run_b"]}
    assert heard == [("run_b", False), ("run_a", True)]
