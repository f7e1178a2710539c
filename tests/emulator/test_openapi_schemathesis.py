"""The emulator against its own OpenAPI document (docs/openapi.yaml is the same file), with
schemathesis: positive and negative examples, all default checks, zero failures."""

from __future__ import annotations

import atexit
import re
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from bus_containers import emulator as emulator_pkg
from bus_containers.emulator.statedir import read_secret
from bus_containers.emulator.tokens import TokenAuthority
from tests.support.emulator import start_emulator

VALID_KEY = re.compile(r"^[!-~]{1,255}$")
OPENAPI = Path(emulator_pkg.__file__).parent / "openapi.yaml"
# Short Prefer waits and no concurrency cap: generated runs must not slow the suite down or
# run into quota answers.
CONFIG = """
[emulator]
max_wait_seconds = 1
[plans.default]
concurrent_runs = 100000
"""


# Schemathesis builds some cases (and their auth) at collection time, before any fixture
# runs; so the state dir and its secret are made now, and the emulator started later on
# that state dir signs with the same secret.
STATE_DIR = Path(tempfile.mkdtemp(prefix="bus-emulator-schemathesis-"))
atexit.register(shutil.rmtree, STATE_DIR, True)
TokenAuthority(STATE_DIR)  # creates the secret (mode 0600)
TOKEN = TokenAuthority(STATE_DIR).issue("schemathesis", ttl=24 * 3600)
ADMIN_KEY = read_secret(STATE_DIR / "admin-key")  # the token endpoint's credential


@pytest.fixture(scope="module")
def schemathesis_emulator():
    emu = start_emulator(STATE_DIR, config=CONFIG)
    yield emu
    emu.stop()


# Workspace uploads are tars; random bytes stand for them (the sha256 in the URL never
# matches a generated body anyway: see the exclusion below).
schemathesis.openapi.media_type("application/x-tar", st.binary(max_size=2048))

# Loaded from the file (the same document the emulator serves, checked below); the base URL
# is given per call, since the emulator starts after collection.
schema = schemathesis.openapi.from_path(OPENAPI)
# Unknown query parameters are ignored on purpose (a client-sent `account_id` must be ignored,
# CONTRACT 7), so extra parameters are not "invalid data" for this API.
schema.config.generation.update(allow_extra_parameters=False)


@schema.auth()
class EmulatorToken:
    """The bearer token (the admin key for the token endpoint), declared as auth so
    schemathesis's own auth checks still apply."""

    def get(self, case, context):
        return ADMIN_KEY if case.path == "/api/v1/auth/token" else TOKEN

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case, schemathesis_emulator):
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and VALID_KEY.match(key):
        # Generated keys repeat across cases with different bodies, which is (rightly) a 422
        # idempotency_conflict; a fresh valid key keeps a valid case valid.
        case.headers["Idempotency-Key"] = str(uuid.uuid4())
    excluded = []
    if case.operation.method.upper() == "PUT" and "/workspaces/" in case.operation.path:
        # A generated body never hashes to the generated sha256 in the URL: its rejection
        # (400) is right, so "valid data accepted" cannot apply to this one operation.
        excluded.append(schemathesis.checks.positive_data_acceptance)
    case.call_and_validate(base_url=schemathesis_emulator.url, timeout=30,
                           excluded_checks=excluded)


def test_served_document_is_the_file(schemathesis_emulator):
    import requests

    served = requests.get(schemathesis_emulator.api("/openapi.yaml"), timeout=10)
    assert served.content == OPENAPI.read_bytes()


def test_document_covers_every_endpoint():
    doc = yaml.safe_load(OPENAPI.read_text())
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {
        "/api/v1/containers/status", "/api/v1/containers/runs",
        "/api/v1/containers/runs/{run_id}", "/api/v1/containers/runs/{run_id}/logs",
        "/api/v1/containers/runs/{run_id}/cancel", "/api/v1/containers/usage",
        "/api/v1/containers/openapi.yaml", "/api/v1/auth/token",
        "/api/v1/containers/workspaces/{sha256}", "/api/v1/containers/runs/{run_id}/stdin",
        "/api/v1/containers/runs/{run_id}/workspace/diff",
        "/api/v1/containers/runs/{run_id}/workspace/archive"}
    methods = {(p, m) for p, item in doc["paths"].items() for m in item if m != "parameters"}
    assert ("/api/v1/containers/runs", "post") in methods
    assert ("/api/v1/containers/runs/{run_id}", "delete") in methods
    assert ("/api/v1/containers/runs/{run_id}/cancel", "post") in methods
    assert ("/api/v1/containers/usage", "get") in methods
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            assert op.get("description") or op.get("summary"), (path, method)
            assert any(code.startswith(("4", "5")) for code in op["responses"]), (path, method)
