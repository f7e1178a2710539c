"""Fuzz the client's input handling: run ids (nothing can change the request path), the
server-answer parser (arbitrary bytes and statuses) and `--env NAME=VALUE` parsing."""

from __future__ import annotations

import base64
import json
import os
import string
from urllib.parse import quote

import click
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bus_containers import cli, responses
from bus_containers import errors as e
from bus_containers.service import validate_run_id

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
URL = "http://127.0.0.1:1/api/v1/containers/runs/run_x"
FORBIDDEN = set("/%?#.\\") | set(string.whitespace)

# -- run ids ------------------------------------------------------------------------------

run_id_like = st.one_of(
    st.text(max_size=140),
    st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,127}\Z"),
    st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,130}\Z"),
    st.builds(lambda a, b, c: a + b + c, st.sampled_from(["run_", "", "../", "%2e"]),
              st.sampled_from(["..", "/", "%2F", "%2f", "?x=1", "#f", " ", "\n", "\x00", ".",
                               "\\", "\u2215", "\uff0f", "", "abc", "\u0430", "%00", ";"]),
              st.sampled_from(["", "abc", "/..", "%2e%2e", "\r\nX: y"])),
)


@FUZZ
@given(run_id_like)
@example("run_0123abcd")
@example("..")
@example("a" * 128)
@example("a" * 129)
@example("run_\u0661")  # an Arabic-Indic digit: str.isdigit() but not ASCII
def test_validate_run_id_cannot_change_the_path(run_id):
    try:
        got = validate_run_id(run_id)
    except e.InvalidRunId as err:
        assert err.exit_code == 2
        assert not responses.RUN_ID_PATTERN.fullmatch(run_id) or "\n" in run_id
        return
    assert got == run_id
    assert not FORBIDDEN & set(got), got
    assert got.isascii() and got.isprintable() and 1 <= len(got) <= 128
    assert quote(got, safe="") == got
    assert got not in (".", "..")


@pytest.mark.parametrize("value", [None, 1, b"run_x", ["run_x"], {"id": "run_x"}])
def test_validate_run_id_rejects_non_strings(value):
    with pytest.raises(e.InvalidRunId):
        validate_run_id(value)


# -- the response parser ------------------------------------------------------------------

json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
ERROR_CODES = ["invalid_request", "unknown_profile", "idempotency_conflict", "unauthenticated",
               "token_expired", "billing_required", "forbidden", "insufficient_scope",
               "not_found", "conflict", "quota_exhausted", "rate_limited", "x"]
error_doc = st.fixed_dictionaries(
    {"error": st.fixed_dictionaries(
        {"code": st.one_of(st.sampled_from(ERROR_CODES), json_value),
         "message": st.one_of(st.text(max_size=20), json_value)},
        optional={"guidance": json_value, "url": json_value, "scope": json_value})})
run_doc = st.fixed_dictionaries(
    {"id": st.one_of(st.text(max_size=12), json_value),
     "status": st.one_of(st.sampled_from(["running", "succeeded", "weird"]), json_value)},
    optional={"exit_code": json_value, "stdout": json_value, "finished_at": json_value})
page_doc = st.fixed_dictionaries({"runs": st.one_of(st.lists(run_doc, max_size=3), json_value),
                                  "next_cursor": st.one_of(st.none(), st.text(max_size=5),
                                                           json_value)})
body_bytes = st.one_of(
    st.binary(max_size=200),
    st.one_of(json_value, error_doc, run_doc, page_doc).map(lambda v: json.dumps(v).encode()),
    st.one_of(error_doc, run_doc).map(lambda v: json.dumps(v).encode("utf-16")),
    st.just(b"[" * 50_000), st.just(b"1" * 5000), st.just(b'{"a": NaN}'),
)
statuses = st.one_of(st.integers(100, 599), st.sampled_from([200, 201, 202, 204, 301, 400, 401,
                                                             402, 403, 404, 409, 422, 429,
                                                             500, 502, 503, 504]))
retry_after = st.one_of(st.none(), st.floats(0, 30))


@FUZZ
@given(body_bytes, statuses, retry_after, st.booleans())
def test_error_for_is_always_a_typed_error(body, status, after, run_path):
    got = responses.error_for(status, body, URL, after, run_path=run_path)
    assert isinstance(got, e.ContainersError), got
    assert got.exit_code in (1, 2, 3, 4, 5), got
    assert isinstance(got.message, str) and got.message
    if got.retryable:
        assert status >= 500 or status == 429, status
        assert got.exit_code in (1, 5)
        assert got.retry_after == after
    if status < 400:
        assert isinstance(got, e.UnexpectedResponse)


@FUZZ
@given(body_bytes, statuses)
def test_parse_json_and_shapes_give_data_or_unexpected_response(body, status):
    try:
        data = responses.parse_json(body, status, URL)
    except e.UnexpectedResponse as err:
        assert err.exit_code == 1 and f"HTTP {status}" in err.message
        return
    for check in (responses.check_run, responses.check_run_page, responses.check_status,
                  responses.check_created_run):
        try:
            out = check(data, URL, status)
        except e.UnexpectedResponse as err:
            assert err.exit_code == 1
            continue
        assert out is data and isinstance(out, dict)
        if check is responses.check_run_page:
            assert all(isinstance(r, dict) and isinstance(r["id"], str) for r in out["runs"])
        if check is responses.check_created_run:
            assert responses.RUN_ID_PATTERN.fullmatch(out["id"])


log_line = st.one_of(
    st.binary(max_size=120),
    st.fixed_dictionaries(
        {"stream": st.one_of(st.sampled_from(["stdout", "stderr"]), json_value),
         "offset": st.one_of(st.integers(-3, 10**12), json_value),
         "data_b64": st.one_of(st.binary(max_size=30).map(lambda b: base64.b64encode(b).decode()),
                               st.text(max_size=12), json_value)}).map(
        lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"event": st.sampled_from(["end", "other"]),
                           "status": json_value}).map(lambda v: json.dumps(v).encode()),
)


@FUZZ
@given(log_line)
def test_parse_log_line_gives_an_event_none_or_unexpected_response(line):
    try:
        got = responses.parse_log_line(line, URL)
    except e.UnexpectedResponse as err:
        assert err.exit_code == 1
        return
    if got is None:
        return
    assert isinstance(got, dict)
    if got.get("event") != "end":
        assert got["stream"] in ("stdout", "stderr")
        assert isinstance(got["offset"], int) and not isinstance(got["offset"], bool)
        assert got["offset"] >= 0 and isinstance(got["data"], bytes)


# -- --env NAME=VALUE ------------------------------------------------------------------------

ENV_PARAM = click.Option(["--env"], multiple=True)
valid_name = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,20}\Z")
any_name = st.one_of(valid_name, st.text(max_size=10))
value_text = st.one_of(st.text(max_size=30), st.text(st.sampled_from("=a b\n\t'\"$;"),
                                                     max_size=10))


def _ctx() -> click.Context:
    return click.Context(click.Command("run"))


@FUZZ
@given(st.lists(st.one_of(
    st.builds(lambda n, v: f"{n}={v}", any_name, value_text),
    any_name,  # no '=': takes the local value, as docker run -e NAME does
    st.text(max_size=20)), max_size=6))
def test_env_options_are_kept_exactly_or_rejected(items):
    try:
        got = cli._parse_env(_ctx(), ENV_PARAM, tuple(items))
    except click.BadParameter:
        assert any(_rejected(item) for item in items), items
        return
    want: dict[str, str] = {}
    for item in items:
        assert not _rejected(item), item
        name, sep, value = item.partition("=")
        want[name] = value if sep else os.environ[name]
    assert got == want


def _rejected(item: str) -> bool:
    name, sep, value = item.partition("=")
    if not cli.ENV_NAME.fullmatch(name):
        return True
    if not sep:
        return name not in os.environ or not _utf8(os.environ[name])
    return not _utf8(item)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


@pytest.mark.parametrize("item, want", [
    ("A=b=c", {"A": "b=c"}), ("A==", {"A": "="}), ("A=", {"A": ""}), ("_x1= sp ", {"_x1": " sp "}),
    ("A=\udcff", None), ("1A=x", None), ("A-B=x", None), ("=x", None), ("A B=x", None),
    ("\u00c4=x", None), ("A\u0661=x", None),
])
def test_env_option_examples(item, want):
    if want is None:
        with pytest.raises(click.BadParameter):
            cli._parse_env(_ctx(), ENV_PARAM, (item,))
    else:
        assert cli._parse_env(_ctx(), ENV_PARAM, (item,)) == want
