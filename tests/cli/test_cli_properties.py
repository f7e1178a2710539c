"""Property tests at the CLI level (hypothesis): run ids and --env items.

A run id either exits 2 before any request, or reaches exactly the URL path
`/api/v1/containers/runs/<id>` unchanged. An --env item either exits 2 before any request,
or is sent as NAME -> VALUE in the body. Nothing else, and never a traceback."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.cli.helpers import BASE, run_obj

VALID_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

NASTY = st.sampled_from(["/", "..", "%2F", "%", "?", "#", " ", "\n", "\x00", "\\", "&", "=",
                         ".", "~", "é", "\u202e", "\udcff"])
RUN_IDS = st.one_of(
    st.from_regex(VALID_ID, fullmatch=True),
    st.text(max_size=140),
    st.lists(st.one_of(st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True), NASTY),
             min_size=1, max_size=6).map("".join),
)


@pytest.fixture
def any_run(requests_mock):
    requests_mock.get(re.compile(re.escape(BASE) + "/runs/.*"), json=run_obj())
    requests_mock.delete(re.compile(re.escape(BASE) + "/runs/.*"), status_code=204)
    return requests_mock


def _check_run_id_outcome(result, history, run_id, method):
    if VALID_ID.fullmatch(run_id):
        assert result.exit_code == 0, result.stderr
        assert len(history) == 1
        assert history[0].method == method
        assert history[0].url == f"{BASE}/runs/{run_id}"
    else:
        assert result.exit_code == 2, (run_id, result.stderr)
        assert history == []


@PROPERTY
@given(run_id=RUN_IDS)
@example(run_id="x" * 128)
@example(run_id="x" * 129)
@example(run_id="../../status")
@example(run_id="run_1/../../x")
def test_show_run_id(cli, any_run, run_id):
    any_run.reset_mock()
    result = cli("show", "--", run_id)
    _check_run_id_outcome(result, any_run.request_history, run_id, "GET")


@PROPERTY
@given(run_id=RUN_IDS)
def test_delete_run_id(cli, any_run, run_id):
    any_run.reset_mock()
    result = cli("delete", "--json", "--", run_id)
    _check_run_id_outcome(result, any_run.request_history, run_id, "DELETE")


ENV_ITEMS = st.lists(
    st.builds(lambda name, value: f"{name}={value}",
              st.one_of(st.from_regex(ENV_NAME, fullmatch=True), st.text(max_size=10)),
              st.text(max_size=20)),
    max_size=4,
)


@PROPERTY
@given(items=ENV_ITEMS)
@example(items=["A=1", "A=2"])
@example(items=["A==b=c"])
@example(items=["A=\x00\n"])
@example(items=["A=\udcff"])
def test_env_items(cli, requests_mock, items):
    requests_mock.reset_mock()
    requests_mock.post(BASE + "/runs", status_code=201, json=run_obj())
    args = [part for item in items for part in ("--env", item)]
    result = cli("run", *args, "--", "env")
    pairs = [item.partition("=") for item in items]
    valid = all(ENV_NAME.fullmatch(name) for name, _, _ in pairs) and all(
        _utf8(item) for item in items)
    if not valid:
        assert result.exit_code == 2, result.stderr
        assert requests_mock.request_history == []
        return
    assert result.exit_code == 0, result.stderr
    body = requests_mock.last_request.json()
    expected = {name: value for name, _, value in pairs}
    assert body.get("env", {}) == expected
    assert body["command"] == ["env"]


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@PROPERTY
@given(words=st.lists(st.text(max_size=12), min_size=1, max_size=5))
def test_command_words_sent_unchanged(cli, requests_mock, words):
    """Whatever follows `--` is the remote command, word for word (or exit 2 if a word
    cannot be sent as UTF-8)."""
    requests_mock.reset_mock()
    requests_mock.post(BASE + "/runs", status_code=201, json=run_obj())
    result = cli("run", "--", *words)
    if all(_utf8(word) for word in words):
        assert result.exit_code == 0, result.stderr
        assert requests_mock.last_request.json()["command"] == words
    else:
        assert result.exit_code == 2


@pytest.mark.parametrize("args", [
    ["run", "--env", "K=\udcff", "--", "x"], ["run", "--", "printf", "\udcff"],
    ["run", "--profile", "\udcff", "--", "x"], ["runs", "--status", "\udcff"],
    ["status", "--api-url", "https://h\udcff"], ["status", "--api-url", "https://ho st"],
])
def test_non_utf8_arguments_are_usage_errors(cli, requests_mock, args):
    """A stray non-UTF-8 byte from the shell (a lone surrogate in Python) is exit 2, not
    an 'unexpected error'."""
    result = cli(*args)
    assert result.exit_code == 2, result.stderr
    assert "unexpected" not in result.stderr
    assert requests_mock.call_count == 0
