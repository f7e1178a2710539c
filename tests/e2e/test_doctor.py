"""`doctor` end to end (issue 11): all checks pass on the demo setup; each way of being
broken gives its failing line, the fix under it and its exit code. Real processes, one
emulator for the module."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
import uuid

import pytest

from tests.support.cli import SCOPES, clean_env, run_cli
from tests.support.emulator import module_emulator

pytestmark = pytest.mark.e2e

CHECKS = ["config_dir", "token", "claims", "origin", "network", "runner", "billing"]


emu = module_emulator("doctor", "[plans.unbilled]\nbilling = false\n")


def _token_file(tmp_path, token: str, mode: int = 0o600):
    config_dir = tmp_path / "cfg"
    (config_dir / "auth").mkdir(parents=True, exist_ok=True)
    path = config_dir / "auth" / "api-token"
    path.write_text(token + "\n")
    path.chmod(mode)
    return config_dir, path


def _doctor(env: dict, *extra: str, secrets: tuple[str, ...] = ()):
    return run_cli(["bus-containers", "doctor", *extra], env=env, secrets=secrets)


def _line(stdout: str, title: str) -> str:
    found = [line for line in stdout.splitlines() if line[6:24].rstrip() == title]
    assert len(found) == 1, stdout
    return found[0]


def _failure(result, title: str) -> tuple[str, str]:
    """(the FAIL line, its fix), checking it is the first failure and the only fix."""
    lines = result.stdout.splitlines()
    failing = [i for i, line in enumerate(lines) if line.startswith("FAIL ")]
    assert failing and lines[failing[0]][6:24].rstrip() == title, result.stdout
    fix = lines[failing[0] + 1]
    assert fix.split()[0] == "fix:", result.stdout
    return lines[failing[0]], fix


def test_all_pass_on_the_demo_setup(emu, tmp_path):
    """As `make demo` sets up: `bus auth token` saves the token, the origin comes from the
    environment, and `bus containers doctor` runs under the reference host."""
    env = clean_env(BUS_API_BASE_URL=emu.url, BUS_CONFIG_DIR=str(tmp_path / "cfg"),
                    BUS_EMULATOR_ADMIN_KEY_FILE=str(emu.admin_key_file))
    issued = run_cli(["bus", "auth", "token", "--scope", SCOPES], env=env,
                     secrets=(emu.admin_key(),))
    assert issued.code == 0, issued.stderr
    token = (tmp_path / "cfg" / "auth" / "api-token").read_text().strip()
    got = run_cli(["bus", "containers", "doctor"], env=env, secrets=(token,))
    assert got.code == 0, got.stdout + got.stderr
    marks = [line.split()[0] for line in got.stdout.splitlines()]
    assert marks == ["ok"] * 7, got.stdout
    assert str(tmp_path / "cfg" / "auth" / "api-token") in _line(got.stdout, "token")
    assert "(mode 0600)" in _line(got.stdout, "token")
    assert f"{emu.url} (from $BUS_API_BASE_URL)" in _line(got.stdout, "API origin")
    assert re.search(r"DNS [\d.]+ ms, TCP [\d.]+ ms, status [\d.]+ ms",
                     _line(got.stdout, "reachability"))
    assert _line(got.stdout, "runner")[25:].startswith("ready")
    as_json = run_cli(["bus", "containers", "doctor", "--json"], env=env, secrets=(token,))
    checks = json.loads(as_json.stdout)
    assert [c["name"] for c in checks] == CHECKS
    assert all(c["status"] == "ok" and c["exit_code"] == 0 for c in checks)
    assert set(checks[4]["ms"]) == {"dns", "tcp", "status"}


def test_no_token(emu, tmp_path):
    got = _doctor(clean_env(BUS_AI_API_URL=emu.url, BUS_CONFIG_DIR=str(tmp_path / "empty")))
    assert got.code == 4
    line, fix = _failure(got, "token")
    assert "no API token found" in line
    assert 'auth token --scope "container:read container:run container:delete billing:read"' \
        in fix
    # what does not need the token still runs; what does is skipped, not failed again
    assert _line(got.stdout, "API origin").startswith("ok")
    assert "status call skipped" in _line(got.stdout, "reachability")
    assert _line(got.stdout, "runner").startswith("skip")


def test_expired_token(emu, tmp_path):
    token = emu.token(str(uuid.uuid4()), exp=int(time.time()) - 3600)
    got = _doctor(clean_env(BUS_AI_TOKEN=token, BUS_AI_API_URL=emu.url,
                            BUS_CONFIG_DIR=str(tmp_path)), secrets=(token,))
    assert got.code == 4
    line, fix = _failure(got, "token claims")
    assert "expired at" in line and "(1 h ago)" in line
    assert "Get a new token" in fix
    assert "from $BUS_AI_TOKEN" in _line(got.stdout, "token")


def test_missing_scope(emu, tmp_path):
    token = emu.token(str(uuid.uuid4()), scope="container:read container:run container:delete")
    got = _doctor(clean_env(BUS_AI_TOKEN=token, BUS_AI_API_URL=emu.url,
                            BUS_CONFIG_DIR=str(tmp_path)), secrets=(token,))
    assert got.code == 4
    line, fix = _failure(got, "token claims")
    assert "lacks billing:read (needed by usage)" in line
    assert "billing:read" in fix
    assert _line(got.stdout, "billing and quota").startswith("skip")


def test_unreachable_origin(tmp_path, emu):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = emu.token(str(uuid.uuid4()))
    got = _doctor(clean_env(BUS_AI_TOKEN=token, BUS_AI_API_URL=f"http://127.0.0.1:{port}",
                            BUS_CONFIG_DIR=str(tmp_path)), secrets=(token,))
    assert got.code == 1
    line, fix = _failure(got, "reachability")
    assert f"cannot connect to 127.0.0.1:{port}" in line
    assert f"bus-containers-emulator serve --port {port}" in fix


def test_plain_http_to_a_remote_host(emu, tmp_path):
    token = emu.token(str(uuid.uuid4()))
    got = _doctor(clean_env(BUS_AI_TOKEN=token, BUS_AI_API_URL="http://api.example.com",
                            BUS_CONFIG_DIR=str(tmp_path)), secrets=(token,))
    assert got.code == 2
    line, fix = _failure(got, "API origin")
    assert "$BUS_AI_API_URL" in line and "clear text" in line
    assert "https://" in fix
    # no request of any kind went to that host
    assert _line(got.stdout, "reachability").startswith("skip")


def test_world_readable_token_file(emu, tmp_path):
    token = emu.token(str(uuid.uuid4()))
    config_dir, path = _token_file(tmp_path, token, mode=0o644)
    got = _doctor(clean_env(BUS_AI_API_URL=emu.url, BUS_CONFIG_DIR=str(config_dir)),
                  secrets=(token,))
    assert got.code == 4
    line, fix = _failure(got, "token")
    assert str(path) in line and "mode 0644" in line
    assert fix.split(None, 1)[1] == f"chmod 600 {path}"
    named = _doctor(clean_env(BUS_AI_API_URL=emu.url, BUS_CONFIG_DIR=str(tmp_path / "none")),
                    "--token-file", str(path), secrets=(token,))
    assert f"from --token-file {path}" in _failure(named, "token")[0]


def test_billing_required(emu, tmp_path):
    sub = str(uuid.uuid4())
    emu.set_plan(sub, "unbilled")
    token = emu.token(sub)
    got = _doctor(clean_env(BUS_AI_TOKEN=token, BUS_AI_API_URL=emu.url,
                            BUS_CONFIG_DIR=str(tmp_path)), secrets=(token,))
    assert got.code == 5
    line, fix = _failure(got, "billing and quota")
    assert "plan unbilled; billing required" in line
    assert f"{emu.url}/billing" in fix
    checks = json.loads(_doctor(clean_env(BUS_AI_TOKEN=token, BUS_AI_API_URL=emu.url,
                                          BUS_CONFIG_DIR=str(tmp_path)), "--json",
                                secrets=(token,)).stdout)
    assert checks[-1]["status"] == "fail" and checks[-1]["exit_code"] == 5


def test_tls_failure_names_the_certificate(emu, tmp_path):
    """An https origin whose certificate nobody vouches for: the TLS step fails (exit 1),
    after DNS and TCP passed, and says where a private CA goes."""
    import shutil
    import ssl
    import subprocess
    import threading

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl tool to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def serve() -> None:  # handshakes (and fails them) until the socket is closed
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    token = emu.token(str(uuid.uuid4()))
    try:
        got = _doctor(clean_env(BUS_AI_TOKEN=token,
                                BUS_AI_API_URL=f"https://127.0.0.1:{server.getsockname()[1]}",
                                BUS_CONFIG_DIR=str(tmp_path)), secrets=(token,))
    finally:
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        server.close()
        thread.join(10)
    assert not thread.is_alive()
    assert got.code == 1
    line, fix = _failure(got, "reachability")
    assert "TLS with 127.0.0.1" in line and "certificate verify failed" in line
    assert "$REQUESTS_CA_BUNDLE" in fix
