"""`run` in the foreground: live output, Ctrl-C to detach, `--rm` (docker run's manners).

The service yields the run's life as events; this module turns them into output, the
progress line and an exit code. Kept out of cli.py so the commands stay thin.
"""

from __future__ import annotations

import contextlib
import signal

from .errors import Interrupted
from .render import Output
from .service import ContainersClient, exit_code_for_run


def run_attached(client: ContainersClient, out: Output, command: list[str], *, profile: str,
                 env: dict[str, str], run_timeout: int | None, remove: bool) -> int:
    run_id = None
    finished = output_failed = False
    progress = out.progress()
    events = client.follow_run(command, profile=profile, env=env,
                               timeout_seconds=run_timeout, on_poll=progress.update)
    try:
        # The create call may be held by the server for a second: a Ctrl-C then would lose
        # the answer, and with it the id we must tell the user. So the first Ctrl-C waits
        # for the answer (a second one does not).
        with _first_interrupt_deferred() as interrupted:
            created = next(events)["run"]
        run_id = created["id"]
        out.message(f"Run {run_id} (profile {created.get('profile', profile)})")
        if interrupted:
            raise KeyboardInterrupt
        progress.start(str(created.get("status", "queued")))
        for event in events:
            kind = event.get("event")
            if kind == "end":
                progress.stop()
                finished = True
                return _report_end(out, run_id, event)
            progress.stop()  # output to show: the progress line goes for good
            try:
                out.chunk(event["stream"], event["data"])
            except OSError:
                output_failed = True
                raise
        return 1  # the stream ended without an end event: the service raises before this
    except KeyboardInterrupt:
        raise Interrupted.detached(run_id) from None
    finally:
        progress.stop()
        events.close()
        # --rm: once the run is over, or when our own output broke (nobody will read the
        # rest). Never after a detach or a CLI timeout: the user was told it keeps going.
        if remove and run_id and (finished or output_failed):
            _remove(client, out, run_id)


@contextlib.contextmanager
def _first_interrupt_deferred():
    """Inside: the first SIGINT is only counted (the yielded list grows); the second raises
    KeyboardInterrupt as usual. Outside the main thread signals can't be caught: no-op."""
    count: list[int] = []

    def remember(signum, frame):
        if count:
            raise KeyboardInterrupt
        count.append(signum)

    try:
        previous = signal.signal(signal.SIGINT, remember)
    except ValueError:
        yield count
        return
    try:
        yield count
    finally:
        signal.signal(signal.SIGINT, previous)


def _report_end(out: Output, run_id: str, end: dict) -> int:
    code = exit_code_for_run(end)
    if end.get("output_truncated"):
        out.message(f"warning: the output of {run_id} was truncated by the server")
    if end.get("status") != "succeeded":
        out.message(f"Run {run_id} {end.get('status')} (exit code {code})")
    return code


def _remove(client: ContainersClient, out: Output, run_id: str) -> None:
    from .errors import ContainersError, RunNotFound

    try:
        client.delete_run(run_id)
        out.message(f"Removed {run_id}")
    except RunNotFound:
        pass
    except ContainersError as error:
        out.warning(f"warning: could not remove {run_id}: {error.message}")
