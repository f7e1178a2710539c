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
import subprocess
import sys
import tempfile
from pathlib import Path

from bus_containers.emulator.launch import LaunchError, launch

BIN = Path(sys.executable).parent
SCOPES = "container:read container:run container:delete billing:read"


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
        try:
            # Its own session: Ctrl-C reaches the demo, which stops the emulator in order.
            emulator = launch(workdir / "emulator", new_session=True,
                              log_path=workdir / "emulator.log")
        except LaunchError as e:
            raise SystemExit(f"demo: the emulator did not start: {e}") from None
        url = emulator.url
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("BUS_AI_", "BUS_API_TOKEN", "BUS_EMULATOR_"))}
        # `bus auth token` proves it is the emulator's owner with the admin key, read from
        # the file this variable names (never passed on a command line).
        env.update(BUS_API_BASE_URL=url, BUS_CONFIG_DIR=str(workdir / "config"),
                   BUS_EMULATOR_ADMIN_KEY_FILE=str(emulator.admin_key_file))
        print(f"Emulator listening on {url}; state in {workdir}")
        print(f"$ export BUS_API_BASE_URL={url} BUS_CONFIG_DIR={workdir / 'config'} "
              f"BUS_EMULATOR_ADMIN_KEY_FILE={emulator.admin_key_file}")
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
            try:
                emulator.stop(10)  # SIGTERM: it stops every run it started
            except LaunchError as e:
                print(f"demo: {e}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
