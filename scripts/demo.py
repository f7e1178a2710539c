"""`make demo`: the main job end to end on the local emulator, as a user would type it.

Starts the emulator on a free loopback port with a throw-away state dir, runs the seed
flow through the reference host `bus`, and always stops the emulator (also when a step
fails or on Ctrl-C), leaving no process and no files behind.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

BIN = Path(sys.executable).parent
SCOPES = "container:read container:run container:delete billing:read"
STARTUP_SECONDS = 30


def start_emulator(state_dir: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [str(BIN / "bus-containers-emulator"), "serve", "--host", "127.0.0.1", "--port", "0",
         "--state-dir", str(state_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
    )
    found: list[str] = []
    ready = threading.Event()

    def watch() -> None:
        for line in process.stdout:
            match = re.search(r"listening on (http://\S+)", line)
            if match and not found:
                found.append(match.group(1))
                ready.set()
        ready.set()  # the emulator exited

    threading.Thread(target=watch, daemon=True).start()
    if not ready.wait(STARTUP_SECONDS) or not found:
        stop_emulator(process)
        raise SystemExit("demo: the emulator did not start")
    return process, found[0]


def stop_emulator(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # graceful: it kills every run it started
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def step(argv: list[str], env: dict[str, str]) -> str:
    """Run one command as typed; show its stdout and stderr interleaved as a terminal would."""
    print(f"\n$ {shlex.join(argv)}", flush=True)
    result = subprocess.run([str(BIN / argv[0]), *argv[1:]], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sys.stdout.write(result.stdout)
    if result.stdout and not result.stdout.endswith("\n"):
        print()
    sys.stdout.flush()
    if result.returncode != 0:
        raise SystemExit(f"demo: `{shlex.join(argv)}` exited with {result.returncode}")
    return result.stdout


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bus-containers-demo-"))
    emulator = None
    try:
        emulator, url = start_emulator(workdir / "emulator")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("BUS_AI_", "BUS_API_TOKEN"))}
        env.update(BUS_API_BASE_URL=url, BUS_CONFIG_DIR=str(workdir / "config"))
        print(f"Emulator listening on {url}; state in {workdir}")
        print(f"$ export BUS_API_BASE_URL={url} BUS_CONFIG_DIR={workdir / 'config'}")
        step(["bus", "auth", "token", "--scope", SCOPES], env)
        step(["bus", "plugins"], env)
        step(["bus", "containers", "status"], env)
        ran = step(["bus", "containers", "run", "--profile", "codex", "--",
                    "sh", "-c", "printf OK"], env)
        run_id = re.search(r"\brun_[A-Za-z0-9_-]+", ran)
        if not run_id:
            raise SystemExit("demo: the run id was not shown")
        step(["bus", "containers", "runs"], env)
        step(["bus", "containers", "delete", run_id.group(0)], env)
        print("\nDemo finished: the run printed OK and was deleted.")
        return 0
    except KeyboardInterrupt:
        print("\ndemo: interrupted", file=sys.stderr)
        return 130
    finally:
        if emulator is not None:
            stop_emulator(emulator)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
