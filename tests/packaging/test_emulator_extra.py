"""Without the `[emulator]` extra, the emulator says how to install it: no traceback."""

from __future__ import annotations

import subprocess
import sys


def test_serve_without_werkzeug_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['werkzeug'] = None\n"
            "from bus_containers.emulator.__main__ import main\n"
            f"sys.exit(main(['serve', '--port', '0', '--state-dir', {str(tmp_path)!r}]))")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert got.returncode == 1
    assert "pip install 'bus-containers[emulator]'" in got.stderr
    assert "Traceback" not in got.stderr
