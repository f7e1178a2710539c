"""`bus auth token` against a tiny token server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import stat

import pytest

SCOPES = "container:read container:run container:delete billing:read"
SUB = "6f1c2b9e-0000-4000-8000-00000000000a"


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_token_saved_0600_and_never_printed(bus, token_server):
    result = bus.run(
        "--api-url",
        token_server.url,
        "auth",
        "token",
        "--scope",
        SCOPES,
        "--sub",
        SUB,
        "--ttl",
        "600",
    )
    assert result.returncode == 0, result.stderr

    token_file = bus.config_dir / "auth" / "api-token"
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.SECRET-SIGNATURE"
    assert token_file.read_text().strip() == token
    assert mode(token_file) == 0o600
    assert mode(token_file.parent) == 0o700
    assert sorted(p.name for p in token_file.parent.iterdir()) == ["api-token"]  # no temp left

    assert result.stdout == ""
    assert "SECRET" not in result.stdout + result.stderr
    assert "eyJ" not in result.stdout + result.stderr
    assert result.stderr == (
        f"Token saved to {token_file} (account {SUB}, scopes {SCOPES}, expires in 600 s)\n"
    )

    [request] = token_server.requests
    assert request["path"] == "/api/v1/auth/token"
    assert request["body"] == {"scope": SCOPES, "sub": SUB, "ttl": 600}
    assert request["headers"]["Content-Type"] == "application/json"
    assert "Authorization" not in request["headers"]


def test_api_url_from_env_and_config_file(bus, token_server):
    # env, with a trailing slash; only scope in the body when --sub/--ttl are not given
    result = bus.run(
        "auth",
        "token",
        "--scope",
        "container:read",
        env={"BUS_API_BASE_URL": token_server.url + "/"},
    )
    assert result.returncode == 0, result.stderr
    assert token_server.requests[-1]["path"] == "/api/v1/auth/token"
    assert token_server.requests[-1]["body"] == {"scope": "container:read"}

    # config.toml
    (bus.config_dir / "config.toml").write_text(f'api_url = "{token_server.url}"\n')
    result = bus.run("auth", "token", "--scope", "container:read")
    assert result.returncode == 0, result.stderr
    assert len(token_server.requests) == 2


def test_existing_token_is_replaced_and_permissions_tightened(bus, token_server):
    auth_dir = bus.config_dir / "auth"
    auth_dir.mkdir(parents=True)
    os.chmod(auth_dir, 0o755)
    old = auth_dir / "api-token"
    old.write_text("old-token\n")
    os.chmod(old, 0o644)
    result = bus.run("--api-url", token_server.url, "auth", "token", "--scope", SCOPES)
    assert result.returncode == 0, result.stderr
    assert "old-token" not in old.read_text()
    assert mode(old) == 0o600
    assert mode(auth_dir) == 0o700


def test_api_url_order_and_default_follow_the_plugin(bus, token_server):
    """CONTRACT 2's order: $BUS_AI_API_URL before $BUS_API_BASE_URL; with nothing given,
    the plugin's default origin (not "no API URL", exit 2)."""
    result = bus.run("auth", "token", "--scope", SCOPES,
                     env={"BUS_AI_API_URL": token_server.url,
                          "BUS_API_BASE_URL": "http://127.0.0.1:9"})
    assert result.returncode == 0, result.stderr
    assert len(token_server.requests) == 1
    from bus_host.auth import TOKEN_PATH, token_endpoint

    from bus_containers.settings import DEFAULT_API_URL

    assert token_endpoint(None) == DEFAULT_API_URL + TOKEN_PATH


@pytest.mark.parametrize(
    "url",
    ["ftp://127.0.0.1:21", "127.0.0.1:8080", "http://", "http://example.com", "http://1.2.3.4"],
)
def test_bad_api_urls(bus, url):
    result = bus.run("--api-url", url, "auth", "token", "--scope", SCOPES)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1


def test_connection_refused(bus):
    with socket.socket() as sock:  # a port that was free a moment ago
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = bus.run("--api-url", f"http://127.0.0.1:{port}", "auth", "token", "--scope", SCOPES)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"bus: error: cannot reach http://127.0.0.1:{port}/api/v1/auth/token: connection refused"
    ]


@pytest.mark.parametrize("status", [401, 403])
def test_refused_is_exit_4(bus, token_server, status):
    token_server.status = status
    token_server.body = json.dumps(
        {"error": {"code": "forbidden", "message": "token endpoint is loopback only"}}
    ).encode()
    result = bus.run("--api-url", token_server.url, "auth", "token", "--scope", SCOPES)
    assert result.returncode == 4
    hint = {
        401: "; set BUS_EMULATOR_ADMIN_KEY_FILE to the file admin-key in the emulator's "
        "state dir",
        403: "",
    }[status]
    assert result.stderr.splitlines() == [
        f"bus: error: token request refused (HTTP {status}): "
        f"token endpoint is loopback only (forbidden){hint}"
    ]
    assert not (bus.config_dir / "auth" / "api-token").exists()


def test_admin_key_from_the_file_named_by_env(bus, token_server, tmp_path):
    key_file = tmp_path / "admin-key"
    key_file.write_text("k" * 64 + "\n")
    result = bus.run("--api-url", token_server.url, "auth", "token", "--scope", SCOPES,
                     env={"BUS_EMULATOR_ADMIN_KEY_FILE": str(key_file)})
    assert result.returncode == 0, result.stderr
    assert token_server.requests[-1]["headers"]["Authorization"] == "Bearer " + "k" * 64
    assert "k" * 64 not in result.stdout + result.stderr

    token_server.status = 401
    token_server.body = b'{"error": {"code": "unauthenticated", "message": "no"}}'
    result = bus.run("--api-url", token_server.url, "auth", "token", "--scope", SCOPES,
                     env={"BUS_EMULATOR_ADMIN_KEY_FILE": str(key_file)})
    assert result.returncode == 4
    assert "the admin key sent (from BUS_EMULATOR_ADMIN_KEY_FILE) is not this emulator's" in (
        result.stderr)


@pytest.mark.parametrize("content", [None, "", b"\xff\xfe"])
def test_unusable_admin_key_file_is_a_usage_error(bus, token_server, tmp_path, content):
    key_file = tmp_path / "admin-key"
    if isinstance(content, bytes):
        key_file.write_bytes(content)
    elif content is not None:
        key_file.write_text(content)
    result = bus.run("--api-url", token_server.url, "auth", "token", "--scope", SCOPES,
                     env={"BUS_EMULATOR_ADMIN_KEY_FILE": str(key_file)})
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "admin key" in result.stderr and str(key_file) in result.stderr
    assert token_server.requests == []  # nothing sent


@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected"),
    [
        (500, b"<html>oops</html>", "text/html", "unexpected response from"),
        (200, b"not json", "text/plain", "unexpected response from"),
        (200, b'{"token": ""}', "application/json", "unexpected response from"),
        (302, b"", "text/plain", "unexpected response from"),
        (
            422,
            b'{"error": {"code": "invalid_request", "message": "bad scope"}}',
            "application/json",
            "token request failed (HTTP 422): bad scope (invalid_request)",
        ),
    ],
)
def test_bad_answers_are_exit_1(bus, token_server, status, body, content_type, expected):
    token_server.status, token_server.body = status, body
    token_server.content_type = content_type
    result = bus.run("--api-url", token_server.url, "auth", "token", "--scope", SCOPES)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert expected in result.stderr
    assert not (bus.config_dir / "auth" / "api-token").exists()


def test_scope_is_required(bus, token_server):
    result = bus.run("--api-url", token_server.url, "auth", "token")
    assert result.returncode == 2
    result = bus.run("--api-url", token_server.url, "auth", "token", "--scope", "  ")
    assert result.returncode == 2
    assert token_server.requests == []


def test_real_emulator_issues_tokens_only_with_its_admin_key(bus, emulator):
    """End to end: without the key the real emulator refuses (exit 4, a hint naming the
    variable, nothing saved); with BUS_EMULATOR_ADMIN_KEY_FILE the token is issued."""
    token_file = bus.config_dir / "auth" / "api-token"
    refused = bus.run("--api-url", emulator.url, "auth", "token", "--scope", SCOPES)
    assert refused.returncode == 4
    assert "needs the emulator's admin key" in refused.stderr
    assert "set BUS_EMULATOR_ADMIN_KEY_FILE" in refused.stderr
    assert not token_file.exists()

    key_file = str(emulator.admin_key_file)
    ok = bus.run("--api-url", emulator.url, "auth", "token", "--scope", SCOPES,
                 env={"BUS_EMULATOR_ADMIN_KEY_FILE": key_file})
    assert ok.returncode == 0, ok.stderr
    assert emulator.admin_key() not in ok.stdout + ok.stderr
    import requests

    r = requests.get(emulator.api("/status"), timeout=10,
                     headers=emulator.auth(token_file.read_text().strip()))
    assert r.json()["status"] == "ready"
