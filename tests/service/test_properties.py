"""Property test: whatever the server answers (any status, headers, body, or a broken
connection), every client method returns a result or raises a ContainersError, never
another exception, and never sleeps past its timeout or leaks the token."""

from __future__ import annotations

import json
from email.utils import formatdate

import requests
import requests_mock as rmock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus_containers import errors as e
from bus_containers.service import ContainersClient

from .helpers import API, TOKEN, FakeClock, run_object

TIMEOUT = 60.0

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
statuses = st.sampled_from(["queued", "starting", "running", "succeeded", "failed",
                            "cancelled", "timed_out", "weird", ""]) | st.text(max_size=5)
run_ids = st.sampled_from(["run_abc", "run_x", "../etc", "", "a/b", "run abc"]) | st.text()


@st.composite
def almost_runs(draw):
    run = run_object(draw(run_ids), draw(statuses))
    for key in draw(st.lists(st.sampled_from(sorted(run)), max_size=3)):
        if draw(st.booleans()):
            run.pop(key, None)
        else:
            run[key] = draw(json_values)
    if draw(st.booleans()):
        run[draw(st.text(max_size=8))] = draw(json_values)
    return run


error_codes = st.sampled_from(["invalid_request", "unknown_profile", "idempotency_conflict",
                               "unauthenticated", "token_expired", "billing_required",
                               "forbidden", "insufficient_scope", "not_found", "conflict",
                               "quota_exhausted", "rate_limited"]) | st.text(max_size=10)
error_objects = st.fixed_dictionaries(
    {"code": error_codes | json_values, "message": st.text() | json_values},
    optional={"guidance": st.text() | json_values, "url": st.text() | json_values,
              "scope": st.text() | json_values})
json_bodies = st.one_of(
    json_values,
    almost_runs(),
    st.builds(lambda error: {"error": error}, error_objects),
    st.builds(lambda runs, cursor: {"runs": runs, "next_cursor": cursor},
              st.lists(almost_runs(), max_size=3) | json_values,
              st.none() | st.sampled_from(["c1", "c2", ""]) | json_values),
    st.fixed_dictionaries({"status": statuses | json_values},
                          optional={"message": st.text() | json_values}),
)
bodies = st.one_of(
    st.binary(max_size=64),
    json_bodies.map(lambda value: json.dumps(value).encode()),
    st.just(b"[" * 3000),
    st.just(b"\xef\xbb\xbf{}"),
)
retry_afters = st.one_of(
    st.integers(-10**6, 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.integers(0, 2**33).map(lambda t: formatdate(t, usegmt=True)),
    st.sampled_from(["", " ", "soon", "Mon, 32 Foo 2020 99:99:99 GMT", "1e999", "-0",
                     "Tue, 15 Nov 1994 08:12:31", "Fri, 31 Dec 9999 23:59:59 GMT",
                     "\u0663", "1_000"]),
    st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=30),
)
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30)
headers = st.fixed_dictionaries({}, optional={
    "Retry-After": retry_afters,
    "X-Request-Id": header_text,
    "Content-Type": st.sampled_from(["application/json", "text/html", "", "x/y; charset=zz"]),
    "Location": st.sampled_from(["https://evil.example.test/", "/elsewhere", ""]),
})
connection_errors = st.sampled_from([
    requests.exceptions.ConnectionError, requests.exceptions.ConnectTimeout,
    requests.exceptions.ReadTimeout, requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError, requests.exceptions.TooManyRedirects,
    requests.exceptions.InvalidURL, requests.exceptions.SSLError,
])
answers = st.one_of(
    st.builds(lambda status, hdrs, body: {"status_code": status, "headers": hdrs,
                                          "content": body},
              st.integers(100, 599), headers, bodies),
    connection_errors.map(lambda exc: {"exc": exc("boom")}),
)

METHODS = {
    "status": lambda c, a: c.status(),
    "create_run": lambda c, a: c.create_run(["echo", "hi"], env={"K": "V"}, wait=a),
    "run": lambda c, a: c.run(["echo", "hi"], timeout_seconds=5),
    "list_runs": lambda c, a: c.list_runs(limit=a),
    "list_runs_unlimited": lambda c, a: c.list_runs(status="running"),
    "get_run": lambda c, a: c.get_run("run_abc"),
    "wait_for_run": lambda c, a: c.wait_for_run("run_abc"),
    "delete_run": lambda c, a: c.delete_run("run_abc"),
}


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(method=st.sampled_from(sorted(METHODS)),
       responses=st.lists(answers, min_size=1, max_size=4),
       arg=st.integers(1, 250))
def test_every_answer_is_a_result_or_a_typed_error(method, responses, arg):
    clock = FakeClock()
    client = ContainersClient(API, TOKEN, timeout=TIMEOUT, sleep=clock.sleep,
                              clock=clock.clock)
    with rmock.Mocker() as mocker:
        mocker.register_uri(rmock.ANY, rmock.ANY, responses)
        try:
            result = METHODS[method](client, arg)
        except e.ContainersError as error:
            assert isinstance(error.exit_code, int)
            for text in (str(error), error.message, error.guidance or "",
                         json.dumps(error.to_dict())):
                assert TOKEN not in text
        else:
            assert result is None or isinstance(result, (dict, list))
        history = mocker.request_history
    # the client never outlives its budget, never follows a redirect elsewhere, and
    # never makes an unbounded number of requests
    assert clock.now - 1000.0 <= TIMEOUT
    assert all(r.hostname == "api.example.test" for r in history)
    assert len(history) <= 400
