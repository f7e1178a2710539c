"""The token (CONTRACT 3): claims read without verification, expiry with 30 s leeway,
scopes per method checked before any request, and the token never shown."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
import requests_mock as rmock

from bus_containers import errors as e
from bus_containers.commands import COMMANDS
from bus_containers.token import (
    EXPIRY_LEEWAY_SECONDS,
    check_claims,
    read_claims,
    token_scopes,
)

from .helpers import BASE, make_token, run_object

EXACT_COMMAND = ('bus auth token --scope '
                 '"container:read container:run container:delete billing:read"')
NOW = 1_750_000_000.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


HEADER = _b64(b'{"alg":"HS256","typ":"JWT"}')
NOT_JWTS = [
    "", "abc", "a.b", "a.b.c.d", "....", "opaque-api-key-1234567890",
    f"{HEADER}.!!!notbase64!!!.sig",
    f"{HEADER}.{_b64(b'not json at all')}.sig",
    f"{HEADER}.{_b64(b'[1, 2, 3]')}.sig",
    f"{HEADER}.{_b64(b'42')}.sig",
    f"{_b64(b'not json')}.{_b64(b'{}')}.sig",
    f"{HEADER}.{_b64(json.dumps({'sub': 'x'}).encode())}.sig\n",
]


@pytest.mark.parametrize("token", NOT_JWTS)
def test_not_a_jwt(token):
    with pytest.raises(e.NotAJwt) as info:
        read_claims(token)
    err = info.value
    assert err.exit_code == 4
    assert "not a JWT" in err.message
    if token:
        assert token not in err.message
        assert token not in (err.guidance or "")


def test_read_claims_does_not_verify_the_signature():
    secret = "a-test-secret-that-is-long-enough-for-hs256"
    signed = jwt.encode({"sub": "u", "scope": "container:read"}, secret, algorithm="HS256")
    assert read_claims(signed)["scope"] == "container:read"
    assert read_claims(make_token(scope="x"))["scope"] == "x"


def test_read_claims_does_not_check_expiry_itself():
    # read_claims only decodes; check_claims decides (with the leeway)
    assert read_claims(make_token(exp=1))["exp"] == 1


def test_expired_beyond_leeway_names_when_and_how():
    exp = NOW - EXPIRY_LEEWAY_SECONDS - 1
    with pytest.raises(e.TokenExpired) as info:
        check_claims({"exp": exp}, "container:read", now=NOW)
    err = info.value
    assert err.exit_code == 4
    assert time.strftime("%Y-%m-%d %H:%M", time.gmtime(exp)) in err.message
    assert err.guidance is None  # no CLI advice from the service: render words the hint


@pytest.mark.parametrize("ago", [0, 1, 29, 30])
def test_expired_within_leeway_is_still_sent(ago):
    check_claims({"exp": NOW - ago}, "container:read", now=NOW)


@pytest.mark.parametrize("exp", [-1e20, -(2**62)])
def test_absurd_expiry_is_expired_without_crashing(exp):
    with pytest.raises(e.TokenExpired):
        check_claims({"exp": exp}, None, now=NOW)


@pytest.mark.parametrize("exp", ["1", None, True, [1], {"t": 1}, NOW + 100, 1e300])
def test_non_numeric_or_future_exp_is_not_expired(exp):
    check_claims({"exp": exp}, None, now=NOW)


@pytest.mark.parametrize("claims, scopes", [
    ({"scope": "container:read container:run"}, {"container:read", "container:run"}),
    ({"scope": ""}, set()),
    ({"scp": ["container:read", "container:delete"]}, {"container:read", "container:delete"}),
    ({"scp": ["container:read", 7, None]}, {"container:read"}),
    ({"scp": "container:read container:run"}, {"container:read", "container:run"}),
    ({}, None),
    ({"scope": 5}, None),
])
def test_token_scopes(claims, scopes):
    assert token_scopes(claims) == scopes


@pytest.mark.parametrize("claims", [
    {"scope": "container:read container:run container:delete billing:read"},
    {"scp": ["container:read", "container:run", "container:delete", "billing:read"]},
    {},  # neither claim: the server decides
])
@pytest.mark.parametrize("scope", sorted({facts.scope for facts in COMMANDS.values()}))
def test_scope_present_or_undeclared_passes(claims, scope):
    check_claims(claims, scope, now=NOW)


@pytest.mark.parametrize("claims", [
    {"scope": "container:read billing:read"},
    {"scp": ["container:read"]},
    {"scope": "container:run:extra container"},  # no prefix or substring matching
])
def test_missing_scope_names_it_and_the_exact_command(claims):
    with pytest.raises(e.MissingScope) as info:
        check_claims(claims, "container:run", now=NOW)
    err = info.value
    assert err.exit_code == 4
    assert "container:run" in err.message
    assert err.scope == "container:run"
    assert err.guidance is None  # no CLI advice from the service: render words the hint


def test_scope_per_command():
    assert {name: facts.scope for name, facts in COMMANDS.items()} == {
        "status": "container:read", "runs": "container:read", "show": "container:read",
        "logs": "container:read", "wait": "container:read", "run": "container:run",
        "delete": "container:delete", "cancel": "container:run", "usage": "billing:read",
        "doctor": "", "diff": "container:read", "cp": "container:read"}


# -- the client checks the token before any request -------------------------------------
METHODS = {
    "status": ("container:read", lambda c: c.status()),
    "get_run": ("container:read", lambda c: c.get_run("run_abc")),
    "list_runs": ("container:read", lambda c: c.list_runs(limit=3)),
    "wait_for_run": ("container:read", lambda c: c.wait_for_run("run_abc")),
    "create_run": ("container:run", lambda c: c.create_run(["true"])),
    "run": ("container:run", lambda c: c.run(["true"])),
    "delete_run": ("container:delete", lambda c: c.delete_run("run_abc")),
}
SCOPES = ["container:read", "container:run", "container:delete"]


def _mock_everything(requests_mock):
    requests_mock.get(BASE + "/status", json={"status": "ready"})
    requests_mock.get(BASE + "/runs", json={"runs": [run_object()], "next_cursor": None})
    requests_mock.get(BASE + "/runs/run_abc", json=run_object())
    requests_mock.post(BASE + "/runs", status_code=201, json=run_object())
    requests_mock.delete(BASE + "/runs/run_abc", status_code=204)


@pytest.mark.parametrize("granted", SCOPES)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_client_checks_the_scope_of_each_method_before_any_request(
        make_client, requests_mock, method, granted):
    needed, call = METHODS[method]
    _mock_everything(requests_mock)
    token = make_token(scope=f"{granted} billing:read")
    client = make_client(token=token)
    if needed == granted:
        call(client)
        assert requests_mock.call_count >= 1
        return
    with pytest.raises(e.MissingScope) as info:
        call(client)
    assert needed in info.value.message
    assert info.value.scope == needed
    assert requests_mock.call_count == 0
    assert token not in info.value.message


@pytest.mark.parametrize("method", sorted(METHODS))
def test_scp_list_works_through_the_client(make_client, requests_mock, method):
    _mock_everything(requests_mock)
    token = make_token(scope=None, scp=[METHODS[method][0]])
    METHODS[method][1](make_client(token=token))
    assert requests_mock.call_count >= 1


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_token_without_scope_claims_is_sent_as_is(make_client, requests_mock, method):
    _mock_everything(requests_mock)
    token = make_token(scope=None)
    METHODS[method][1](make_client(token=token))
    assert requests_mock.last_request.headers["Authorization"] == f"Bearer {token}"


@pytest.mark.parametrize("method", sorted(METHODS))
def test_expired_token_fails_before_any_request(make_client, requests_mock, fake_clock,
                                                method):
    _mock_everything(requests_mock)
    token = make_token(exp=int(time.time()) - 3600)
    with pytest.raises(e.TokenExpired) as info:
        METHODS[method][1](make_client(token=token))
    assert info.value.exit_code == 4
    assert "expired" in info.value.message
    assert info.value.guidance is None  # the CLI adds how to get a token, not the service
    assert token not in info.value.message
    assert requests_mock.call_count == 0


def test_recently_expired_token_within_leeway_is_sent(make_client, requests_mock):
    _mock_everything(requests_mock)
    make_client(token=make_token(exp=int(time.time()) - 5)).status()
    assert requests_mock.call_count == 1


@pytest.mark.parametrize("token", NOT_JWTS[:8])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_not_a_jwt_fails_before_any_request(make_client, method, token):
    with rmock.Mocker() as mocker:
        mocker.register_uri(rmock.ANY, rmock.ANY, json=run_object())
        client = make_client(token=token)
        with pytest.raises(e.NotAJwt) as info:
            METHODS[method][1](client)
        assert mocker.call_count == 0
    assert info.value.exit_code == 4
    if token:
        assert token not in str(info.value)
        assert token not in repr(client)


def test_scopes_are_separated_by_spaces_only():
    """RFC 6749, as the server parses it: a tab-joined claim is one unknown word."""
    from bus_containers.token import token_scopes

    assert token_scopes({"scope": "container:read\tcontainer:run"}) == {
        "container:read\tcontainer:run"}
    assert token_scopes({"scope": " container:read  container:run "}) == {
        "container:read", "container:run"}
