"""Issue 12 bug 10: a rejected create names the argument it is about."""

from __future__ import annotations

import pytest

from bus_containers.emulator.config import default_config
from bus_containers.emulator.errors import ApiError
from bus_containers.emulator.validate import run_spec


def test_an_argument_too_long_is_named_by_its_position_and_start():
    body = {"profile": "codex", "command": ["echo", "ok", "y" * 70_000]}
    with pytest.raises(ApiError) as info:
        run_spec(body, default_config())
    assert info.value.status == 400
    message = str(info.value.message)
    assert "command argument 3 ('yyyyyyyyyyyyyyyyyyyy...')" in message
    assert "longer than 65536 characters" in message
