"""`run` in the foreground: live output, Ctrl-C to detach, `--rm` (docker run's manners).

The service yields the run's life as events; this module turns them into output, the
progress line and an exit code. Kept out of cli.py so the commands stay thin.
"""

from __future__ import annotations

from .render import Output
from .service import ContainersClient, exit_code_for_run

EXIT_DETACHED = 130


def run_attached(client: ContainersClient, out: Output, command: list[str], *, profile: str,
                 env: dict[str, str], run_timeout: int | None, remove: bool) -> int:
    run_id = None
    finished = output_failed = False
    progress = out.progress()
    try:
        for event in client.follow_run(command, profile=profile, env=env,
                                       timeout_seconds=run_timeout, on_poll=progress.update):
            kind = event.get("event")
            if kind == "created":
                run_id = event["run"]["id"]
                out.message(f"Run {run_id} (profile {event['run'].get('profile', profile)})")
                progress.start(str(event["run"].get("status", "queued")))
            elif kind == "end":
                progress.stop()
                finished = True
                return _report_end(out, run_id, event)
            else:
                progress.stop()  # output to show: the progress line goes for good
                try:
                    out.chunk(event["stream"], event["data"])
                except OSError:
                    output_failed = True
                    raise
        return 1  # the stream ended without an end event: the service raises before this
    except KeyboardInterrupt:
        progress.stop()
        if run_id is None:
            raise
        out.warning(f"Detached from run {run_id}; it keeps running.\n"
                    f"Follow it:  bus containers logs --follow {run_id}\n"
                    f"Delete it:  bus containers delete {run_id}")
        return EXIT_DETACHED
    finally:
        progress.stop()
        # --rm: once the run is over, or when our own output broke (nobody will read the
        # rest). Never after a detach or a CLI timeout: the user was told it keeps going.
        if remove and run_id and (finished or output_failed):
            _remove(client, out, run_id)


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
