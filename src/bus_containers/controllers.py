"""What each command does, without click: options in, exit code out.

`execute` is the frame every command runs in (settings -> client -> controller -> exit
code, every error mapped, no traceback); the controllers below hold the logic that is more
than one call: `run` (detach, live output, Ctrl-C, `--rm`, the exit code), `wait` and
`delete`. They take an options dataclass, the client and the `Output`, so tests drive them
with fakes; cli.py only parses options and calls them (like gh's `runCancel(opts)` behind
`NewCmdCancel`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import BillingRequired, ContainersError, ExitCode, Interrupted, RunNotFound
from .render import Invocation, Output
from .service import ContainersClient, exit_code_for_run
from .transfer import read_chunks

if TYPE_CHECKING:
    from .options import (
        CancelOptions,
        CopyOptions,
        DeleteOptions,
        DiffOptions,
        DoctorOptions,
        LogsOptions,
        RunOptions,
        RunsOptions,
        ShowOptions,
        WaitOptions,
    )

Action = Callable[[ContainersClient, Output], "int | None"]


@dataclass
class CommonOptions:
    """The options every command takes (before or after the subcommand, merged)."""

    api_url: str | None = None
    token_file: str | None = None
    timeout: float | None = None
    json: bool = False
    debug: bool = False


def __getattr__(name: str):
    """`controllers.RunOptions` and the like still resolve (they live in options.py)."""
    if name.endswith("Options"):
        from . import options

        with contextlib.suppress(AttributeError):
            return getattr(options, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def execute(command: str, common: CommonOptions, action: Action, *, host_obj: object = None,
            env: Mapping[str, str] | None = None, invocation: Invocation | None = None,
            out: Output | None = None,
            make_client: Callable[..., ContainersClient] | None = None,
            settings_free: bool = False) -> int:
    """Settings -> client -> action(client, output) -> exit code, with every error mapped.
    `action` returns the exit code (None means 0). Nothing but this exit code leaves.
    `settings_free` (doctor): no settings are resolved up front; `action(None, out)`."""
    env = os.environ if env is None else env
    out = out or Output(json=common.json)
    out.invocation = invocation or out.invocation
    debug = common.debug or env.get("BUS_DEBUG", "") not in ("", "0")
    handler = _start_debug_log(debug)
    try:
        from . import service
        from .settings import resolve

        if settings_free:
            code = action(None, out)
            return ExitCode.OK if code is None else code
        settings = resolve(command=command, host_obj=host_obj, env=env,
                           api_url=common.api_url, token_file=common.token_file,
                           timeout=common.timeout, warn=out.warning)
        out.redact = settings.token
        out.invocation.origin = settings.api_url
        out.invocation.origin_source = settings.api_url_source
        out.invocation.token_source = settings.token_source
        client = (make_client or service.ContainersClient)(
            settings.api_url, settings.token, timeout=settings.timeout,
            on_retry=out.retrying)
        code = action(client, out)
        out.out.flush()  # here, not at exit: a reader that went away is exit 141 below
        return ExitCode.OK if code is None else code
    except ContainersError as error:
        out.error(error)
        return error.exit_code
    except KeyboardInterrupt:
        out.error(Interrupted("interrupted"))
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, like a tool killed by SIGPIPE.
        _silence_stdout()
        return ExitCode.BROKEN_PIPE
    except Exception as bug:  # CONTRACT 5: a short message, the traceback only with --debug
        if debug:
            import traceback

            out.warning(traceback.format_exc())
        out.error(ContainersError(f"unexpected error: {type(bug).__name__}: {bug}",
                                  guidance="Run again with --debug for details, and report it.",
                                  code="internal"))
        return ExitCode.ERROR
    finally:
        _stop_debug_log(handler)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _start_debug_log(debug: bool):
    if not debug:
        return None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("debug: %(message)s"))
    logger = logging.getLogger("bus_containers")
    handler.previous_level = logger.level  # restored after the command: a host lives on
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return handler


def _stop_debug_log(handler) -> None:
    if handler is not None:
        logger = logging.getLogger("bus_containers")
        logger.removeHandler(handler)
        logger.setLevel(handler.previous_level)


# -- run ---------------------------------------------------------------------------------
def run(opts: RunOptions, client: ContainersClient, out: Output) -> int:
    """`run`: create, then follow (live output; with --json only the final run object),
    the exit code of the remote command. Ctrl-C detaches and names the run; `--rm`
    deletes the run once it is over (a failed delete is a warning, never the exit code).
    With -w the tree is sent first (once); with -i our stdin streams to the command's
    from a second thread while the output comes."""
    if opts.quiet:  # before the workspace goes: its line is informational too
        out.quiet = True
    workspace = _send_workspace(client, out, opts.workspace) if opts.workspace else None
    if opts.detach:
        created = client.create_run(opts.command, profile=opts.profile, env=opts.env,
                                    timeout_seconds=opts.run_timeout,
                                    stdin=opts.interactive, workspace=workspace)
        if opts.interactive:  # the whole stdin goes before we return (then it is EOF)
            client.send_stdin(created["id"], read_chunks(opts.stdin_fd))
        if out.json:
            out.document(created)
        else:
            out.run_ids(created["id"])
        return ExitCode.OK
    run_id = None
    end = None
    output_failed = False
    feeder = None
    progress = out.progress()
    events = client.follow_run(opts.command, profile=opts.profile, env=opts.env,
                               timeout_seconds=opts.run_timeout, on_poll=progress.update,
                               live=not out.json, stdin=opts.interactive,
                               workspace=workspace)
    try:
        # The create call may be held by the server for a second: a Ctrl-C then would lose
        # the answer, and with it the id we must tell the user. So the first Ctrl-C waits
        # for the answer (a second one does not).
        with _first_interrupt_deferred() as interrupted:
            created = next(events)["run"]
        run_id = created["id"]
        out.message(f"Run {run_id} (profile {created.get('profile', opts.profile)})")
        if opts.interactive:
            feeder = _StdinFeeder(client, run_id, opts.stdin_fd)
        if interrupted:
            raise KeyboardInterrupt
        progress.start(str(created.get("status", "queued")))
        for event in events:
            progress.stop()  # output or the end: the progress line goes for good
            if event.get("event") == "end":
                end = event
                break
            try:
                out.chunk(event["stream"], event["data"])
            except OSError:
                output_failed = True
                raise
    except KeyboardInterrupt:
        if run_id is None:
            raise Interrupted("interrupted before the server answered: a run may have "
                              "been created") from None
        raise Interrupted(f"Detached from run {run_id}; it keeps running.",
                          run_id=run_id) from None
    finally:
        progress.stop()
        events.close()
        # --rm when our own output broke: nobody will read the rest. Never after a detach
        # or a CLI timeout: the user was told it keeps going.
        if opts.remove and run_id and output_failed:
            _remove(client, out, run_id)
    if end is None:  # the service raises before a stream can end without its end event
        return ExitCode.ERROR
    if feeder is not None:
        feeder.report(out)
    code = _report_end(out, run_id, end)
    if workspace is not None and not out.json and out.messages_on_terminal():
        _summarize_changes(client, out, run_id, workspace.get("git_prefix") or "")
    if opts.remove:
        _remove(client, out, run_id)
    return code


def _send_workspace(client: ContainersClient, out: Output, path: str) -> dict:
    progress = out.upload_progress()
    try:
        sent = client.upload_workspace(path, on_progress=progress.update)
    finally:
        progress.stop()
    for skipped in sent["skipped"]:
        out.warning(f"warning: not sent: {skipped}")
    out.workspace_sent(path, sent)
    return sent


class _StdinFeeder:
    """Our stdin to the run's, from a daemon thread (the main thread prints the output and
    takes Ctrl-C). Memory holds one chunk; the server's pace sets ours (back-pressure)."""

    def __init__(self, client: ContainersClient, run_id: str, fd: int):
        import threading

        self.error: ContainersError | None = None
        self._thread = threading.Thread(target=self._send, args=(client, run_id, fd),
                                        name="stdin", daemon=True)
        self._thread.start()

    def _send(self, client: ContainersClient, run_id: str, fd: int) -> None:
        from .errors import ConnectionFailed

        try:
            client.send_stdin(run_id, read_chunks(fd))
        except ConnectionFailed:
            pass  # the run ended or stopped reading while we sent: its output tells
        except ContainersError as error:
            self.error = error
        except OSError as error:  # our own stdin could not be read
            self.error = ContainersError(f"cannot read stdin: {error.strerror or error}")

    def report(self, out: Output) -> None:
        """After the run: a refused stdin (over the plan's limit, ...) as a warning. Not
        waited for when our stdin is still open (a terminal nobody typed EOF into)."""
        self._thread.join(0.5)
        if self.error is not None:
            out.warning(f"warning: stdin: {self.error.message}")


def _summarize_changes(client: ContainersClient, out: Output, run_id: str,
                       git_prefix: str) -> None:
    """The one line after a workspace run: how many files changed and how to get them."""
    try:
        patch = client.workspace_diff(run_id)
    except ContainersError as error:
        out.warning(f"warning: could not fetch the changes of {run_id}: {error.message}")
        return
    out.changes_summary(run_id, count_changed_files(patch), git_prefix)


def count_changed_files(patch: bytes) -> int:
    return sum(1 for line in patch.split(b"\n") if line.startswith(b"diff --git "))


@contextlib.contextmanager
def _first_interrupt_deferred():
    """Inside: the first SIGINT is only counted (the yielded list grows); the second raises
    KeyboardInterrupt as usual. Outside the main thread signals can't be caught: no-op."""
    import signal  # here: only `run` needs it, and `status` should not pay for it

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
    if out.json:
        out.document(end.get("run") or end)
        return code
    if end.get("output_truncated"):
        out.message(f"warning: the output of {run_id} was truncated by the server")
    if end.get("status") != "succeeded":
        out.run_end(run_id, end.get("run") or end, code)
    return code


def _remove(client: ContainersClient, out: Output, run_id: str) -> None:
    try:
        client.delete_run(run_id)
        out.message(f"Removed {run_id}")
    except RunNotFound:
        pass
    except ContainersError as error:
        out.warning(f"warning: could not remove {run_id}: {error.message}")


# -- wait, delete ------------------------------------------------------------------------
def wait(opts: WaitOptions, client: ContainersClient, out: Output) -> int:
    """Wait for a run; its exit code. Ctrl-C stops waiting only (the run goes on)."""
    progress = out.progress()
    progress.start("waiting")
    try:
        run = client.wait_for_run(opts.run_id, immediate=True, on_poll=progress.update)
    except KeyboardInterrupt:
        raise Interrupted(f"stopped waiting for run {opts.run_id}; it keeps running",
                          run_id=opts.run_id, waiting=True) from None
    finally:
        progress.stop()
    code = exit_code_for_run(run)
    if out.json:
        out.document(run)
    else:
        out.run_end(run["id"], run, code)
    return code


def delete(opts: DeleteOptions, client: ContainersClient, out: Output) -> int:
    """Delete each run, one line each on stderr; exit 3 when any was not found."""
    result = client.delete_runs(opts.run_ids, on_result=lambda run_id, found: out.message(
        f"Deleted {run_id}" if found else f"Not found: {run_id}"))
    out.deleted(result["deleted"], result["not_found"])
    return ExitCode.NOT_FOUND if result["not_found"] else ExitCode.OK


# -- single calls ------------------------------------------------------------------------
def logs(opts: LogsOptions, client: ContainersClient, out: Output) -> None:
    """A run's output; Ctrl-C names the run and how to follow it again."""
    since = _since(opts.since)
    try:
        out.logs(opts.run_id, client.iter_logs(opts.run_id, offset=opts.offset,
                                               follow=opts.follow, tail=opts.tail,
                                               since=since),
                 opts.offset, timestamps=opts.timestamps)
    except KeyboardInterrupt:
        raise Interrupted(f"stopped printing the output of run {opts.run_id}",
                          run_id=opts.run_id, following=True) from None


def runs(opts: RunsOptions, client: ContainersClient, out: Output) -> None:
    """The runs, newest first. On a terminal one run more is asked for, to say whether
    there are more than the page shows."""
    limit = None if opts.all else opts.limit
    peek = limit is not None and not (out.json or opts.quiet) and out.is_terminal()
    found = client.list_runs(limit=limit + 1 if peek else limit, status=opts.status,
                             profile=opts.profile, since=_since(opts.since))
    more = peek and len(found) > limit
    out.runs_table(found[:limit] if peek else found, more=more, quiet=opts.quiet)


def _since(text: str | None) -> str | None:
    """A `--since` value as the RFC 3339 time the API takes; UsageError when it is neither
    a duration nor a time."""
    if text is None:
        return None
    from datetime import datetime, timezone

    from .errors import UsageError
    from .times import BadTime, parse_since, rfc3339

    try:
        return rfc3339(parse_since(text, datetime.now(timezone.utc)))
    except BadTime as error:
        raise UsageError(f"--since: {error}") from None


def show(opts: ShowOptions, client: ContainersClient, out: Output) -> None:
    out.run_detail(client.get_run_with_output(opts.run_id))


def status(opts: None, client: ContainersClient, out: Output) -> None:
    out.status(client.status())


# -- cancel, usage, doctor ---------------------------------------------------------------
def cancel(opts: CancelOptions, client: ContainersClient, out: Output) -> int:
    """Stop each run and keep it (with its logs), one line each on stderr; a finished run
    is left as it is. Exit 3 when any was not found."""
    result = client.cancel_runs(opts.run_ids, on_result=out.cancel_result)
    out.cancelled(result)
    return ExitCode.NOT_FOUND if result["not_found"] else ExitCode.OK


def usage(opts: None, client: ContainersClient, out: Output) -> int:
    """The plan and what is used of it. Billing missing: the document still shows, then
    the error with the server's guidance and exit 5, as a 402 on `run` would."""
    document = client.usage()
    out.usage(document)
    billing = document.get("billing") if isinstance(document.get("billing"), dict) else {}
    if billing.get("status") == "required":
        url = billing.get("url") if isinstance(billing.get("url"), str) else None
        guidance = billing.get("guidance") if isinstance(billing.get("guidance"), str) else None
        raise BillingRequired(f"billing is not set up for this account "
                              f"(plan {document.get('plan')})",
                              guidance=guidance or "Set up billing for this account.",
                              url=url)
    return ExitCode.OK


def doctor(opts: DoctorOptions, client: None, out: Output) -> int:
    """Every check in order, each printed as soon as it is known; exit 0 when none
    failed, else the first failure's code (run with `execute(..., settings_free=True)`:
    the settings are what it checks)."""
    from .doctor import diagnose, first_failure
    from .settings import resolve_timeout

    env = os.environ if opts.env is None else opts.env
    make_client = opts.make_client or (lambda origin, token, timeout: ContainersClient(
        origin, token, timeout=timeout, max_retries=0))
    checks = []
    for check in diagnose(api_url=opts.common.api_url, token_file=opts.common.token_file,
                          timeout=resolve_timeout(opts.common.timeout, "doctor"),
                          host_obj=opts.host_obj, env=env, invocation=out.invocation,
                          make_client=make_client,
                          on_token=lambda token: setattr(out, "redact", token)):
        out.doctor_check(check, first_failure=first_failure(checks) is None)
        checks.append(check)
    out.doctor_report(checks)
    failure = first_failure(checks)
    return failure.exit_code if failure else ExitCode.OK


# -- results out -------------------------------------------------------------------------
def diff(opts: DiffOptions, client: ContainersClient, out: Output) -> None:
    """`diff`: the run's changes to /workspace as a git patch on stdout."""
    patch = client.workspace_diff(opts.run_id)
    out.patch(opts.run_id, patch, count_changed_files(patch))


def copy(opts: CopyOptions, client: ContainersClient, out: Output) -> None:
    """`cp RUN:PATH DEST`: a file or directory from the finished run's /workspace."""
    if opts.dest == "-":
        out.raw_stream(client.iter_archive(opts.run_id, opts.path))
        return
    written = client.download(opts.run_id, opts.path, opts.dest)
    out.copied(opts.run_id, opts.path, opts.dest, written)
