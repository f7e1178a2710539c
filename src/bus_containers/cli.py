"""The click commands: options only. Each one parses its options into the controller's
options dataclass and calls `controllers.execute` with it; the logic lives there.

No HTTP here, and nothing heavy at import time: the host imports this module for every
`bus` invocation, `--help` included (controllers, the service, requests and jwt are
imported when a command runs).
"""

from __future__ import annotations

import functools
import gc
import os
import re

import click

from . import __version__
from .commands import ALIASES, COMMANDS
from .completion import KNOWN_STATUSES, complete_profile, complete_run_id, complete_status
from .errors import ExitCode

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
OPTION_NAMES = ("api_url", "token_file", "timeout")
META_KEY = "bus_containers.group_options"
ARGS_KEY = "bus_containers.args"
STANDALONE_NAME = "bus-containers"

def _reject_token(ctx, param, value):
    if value is not None:
        from .render import token_on_command_line

        raise click.UsageError(token_on_command_line(invocation_of(ctx)), ctx=ctx)


def common_options(function):
    """The options that work both before and after the subcommand (CONTRACT 2)."""
    options = [
        click.option("--api-url", metavar="URL",
                     help="API origin, e.g. https://host (the CLI appends /api/v1/containers)."),
        click.option("--token-file", metavar="PATH", help="Read the bearer token from PATH."),
        click.option("--timeout", type=float, metavar="SECONDS",
                     help="Give up after SECONDS (retries and waiting included)."),
        click.option("--json", "json_output", is_flag=True,
                     help="Print one JSON document on stdout; errors as JSON on stderr."),
        click.option("--debug", is_flag=True,
                     help="Log each request on stderr (token masked); tracebacks on bugs."),
        click.option("--token", hidden=True, is_flag=False, flag_value="", default=None,
                     expose_value=False, callback=_reject_token),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _args_ask_for_json(args: list[str]) -> bool:
    return "--json" in args[: args.index("--")] if "--" in args else "--json" in args


def _json_usage_error(ctx: click.Context, exc: click.UsageError):
    from .errors import UsageError
    from .render import Output

    Output(json=True).error(UsageError(exc.format_message()))
    ctx.exit(ExitCode.USAGE)


class ContainersCommand(click.Command):
    """A subcommand whose help ends with its example from the command table, in the name
    the user typed (`bus containers run ...` or `bus-containers run ...`)."""

    def format_epilog(self, ctx: click.Context, formatter) -> None:
        super().format_epilog(ctx, formatter)
        facts = COMMANDS.get(self.name)
        if facts is not None:
            formatter.write_paragraph()
            formatter.write_text(f"Example: {invocation_of(ctx).prog} {facts.example}")
            if facts.aliases:
                formatter.write_text(f"Alias: {', '.join(facts.aliases)}")


class ContainersGroup(click.Group):
    """Shows usage errors as a JSON document when --json was asked for (CONTRACT 5)."""

    command_class = ContainersCommand

    def list_commands(self, ctx: click.Context) -> list[str]:
        """In the command table's order (`run` first), not alphabetical."""
        order = list(COMMANDS)
        return sorted(self.commands, key=lambda n: (order.index(n) if n in order else 99, n))

    def get_command(self, ctx: click.Context, name: str):
        """`ls` and `rm` are `runs` and `delete` (not listed twice in the help)."""
        return super().get_command(ctx, ALIASES.get(name, name))

    def resolve_command(self, ctx: click.Context, args: list[str]):
        # The canonical name, so the subcommand's context (and its help) says `runs`.
        name, command, rest = super().resolve_command(ctx, args)
        return (command.name if command is not None else name), command, rest

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            # A bare `bus-containers` asks what there is, as bare `gh` and `docker` do:
            # the help, and exit 0 (click's default calls it an error, exit 2).
            click.echo(ctx.get_help(), color=ctx.color)
            ctx.exit(ExitCode.OK)
        # The group's own options (`containers --json --timeout abc status`) fail here,
        # before `invoke`: they get the JSON form too.
        original = list(args)
        ctx.meta[ARGS_KEY] = original
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            if not _args_ask_for_json(original):
                raise
            _json_usage_error(ctx, exc)

    def invoke(self, ctx: click.Context):
        args = ctx.meta.get(ARGS_KEY, [])
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:
            if not (ctx.params.get("json_output") or _args_ask_for_json(args)):
                raise
            _json_usage_error(ctx, exc)


EPILOG = """\b
Exit codes: 0 success, 1 server error or unexpected response, 2 usage,
3 not found, 4 authentication or permission, 5 billing/quota/rate limit,
124 timeout; `run` exits with the remote command's own code.
"""


@click.group(cls=ContainersGroup, epilog=EPILOG,
             context_settings={"help_option_names": ["-h", "--help"]})
@common_options
@click.version_option(__version__, "--version", prog_name=STANDALONE_NAME,
                      message="%(prog)s %(version)s")
@click.pass_context
def containers(ctx: click.Context, **options):
    """Run short, isolated jobs on the AI Platform container runner."""
    ctx.meta[META_KEY] = options


def invocation_of(ctx: click.Context):
    """How the user called us: `bus containers` under a host, `bus-containers` alone."""
    from .render import Invocation

    group_ctx = ctx
    while group_ctx.parent is not None and group_ctx.command is not containers:
        group_ctx = group_ctx.parent
    if group_ctx.parent is None:  # our group is the root: the console script
        return Invocation(prog=STANDALONE_NAME, standalone=True)
    return Invocation(prog=group_ctx.command_path)


def _common(ctx: click.Context, options: dict):
    """The options given before and after the subcommand, merged (after wins)."""
    from . import controllers

    group = ctx.meta.get(META_KEY, {})
    merged = {name: options.get(name) if options.get(name) is not None else group.get(name)
              for name in OPTION_NAMES}
    return controllers.CommonOptions(
        **merged, json=bool(options.get("json_output") or group.get("json_output")),
        debug=bool(options.get("debug") or group.get("debug")))


def execute(ctx: click.Context, command: str, options: dict, controller, opts=None) -> None:
    """Run `controller(opts, client, out)` in the controllers' frame, exit with its code."""
    from . import controllers

    code = controllers.execute(command, _common(ctx, options),
                               functools.partial(controller, opts),
                               host_obj=ctx.obj, invocation=invocation_of(ctx))
    ctx.exit(int(code))


STATUS_WORDS = ", ".join(KNOWN_STATUSES)
SINCE_METAVAR = "DURATION|TIME"


# -- commands ------------------------------------------------------------------------------
@containers.command()
@common_options
@click.pass_context
def status(ctx, **options):
    """Show the runner's state (ready, starting, degraded, ...)."""
    from .controllers import status

    execute(ctx, "status", options, status)


def _require_utf8(ctx, param, value):
    """The API's JSON bodies and URLs are UTF-8: an argument that is not (a stray byte from
    the shell, seen by Python as a lone surrogate) is a usage error, not a crash later."""
    for text in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise click.BadParameter(f"{text!r} is not valid UTF-8",
                                         ctx=ctx, param=param) from None
    return value


# The largest count or offset sent in a query: 18 digits, what a server can be sure to
# take as a 64-bit integer (no log holds more lines or bytes).
MAX_QUERY_INT = 10**18 - 1


def _at_least(minimum: int, maximum: int | None = None):
    """A callback refusing integers below `minimum` (or above `maximum`), in the option's
    name (the help shows the metavar, `N`, not click's `INTEGER RANGE` / `[x>=1]`)."""
    def check(ctx, param, value):
        if value is not None and value < minimum:
            raise click.BadParameter(f"{value} is less than {minimum}", ctx=ctx, param=param)
        if value is not None and maximum is not None and value > maximum:
            raise click.BadParameter(f"{value} is more than {maximum}", ctx=ctx, param=param)
        return value

    return check


def _parse_env(ctx, param, values) -> dict[str, str]:
    env = {}
    _require_utf8(ctx, param, values)
    for item in values:
        name, sep, value = item.partition("=")
        if not ENV_NAME.fullmatch(name):
            raise click.BadParameter(f"{item!r}: expected NAME=VALUE with a valid NAME",
                                     ctx=ctx, param=param)
        if not sep:  # `--env NAME` takes the local value, as `docker run -e NAME` does
            if name not in os.environ:
                raise click.BadParameter(f"{name} is not set locally; use {name}=VALUE",
                                         ctx=ctx, param=param)
            value = _require_utf8(ctx, param, os.environ[name])
        env[name] = value
    return env


# No ignore_unknown_options: a mistyped option (`run --prof gpu -- cmd`) must be a usage
# error, not part of the remote command. `allow_interspersed_args=False` alone already
# passes everything after the first word of COMMAND through (`run ls -la`).
@containers.command(context_settings={"allow_interspersed_args": False})
@click.option("--profile", default="codex", show_default=True, callback=_require_utf8,
              metavar="PROFILE", shell_complete=complete_profile, help="Runner profile.")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE", callback=_parse_env,
              help="Environment variable for the command (repeatable).")
@click.option("--run-timeout", type=int, callback=_at_least(1), metavar="SECONDS",
              help="Server-side limit for the command itself (status timed_out, exit 124).")
@click.option("--detach", "-d", is_flag=True, help="Print the run id and return at once.")
@click.option("--rm", "remove", is_flag=True,
              help="Delete the run once it has finished (like docker run --rm).")
@click.option("--quiet", "-q", is_flag=True,
              help="No run id, workspace line or progress on stderr (with --detach: only "
                   "the id on stdout).")
@click.option("--interactive", "-i", is_flag=True,
              help="Stream our stdin to the command's until EOF (else its stdin is empty).")
@click.option("--workspace", "-w", is_flag=False, flag_value=".", default=None,
              metavar="[PATH]",
              help="Send PATH's tree (default .; in git: tracked and untracked, not "
                   "ignored files); the command starts in it, at /workspace.")
@common_options
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED,
                callback=_require_utf8)
@click.pass_context
def run(ctx, profile, env, run_timeout, detach, remove, quiet, interactive, workspace,
        command, **options):
    """Run COMMAND in a fresh container, streaming its output as it comes.

    \b
    Ctrl-C detaches: the run keeps going (see `logs --follow`, `delete`).
    Exit code: the command's own; 124 when it (or --timeout) ran out of time.
    With -w, put -- before COMMAND (`run -w -- make test`); get the changes
    with `diff RUN_ID | git apply` and files with `cp RUN_ID:PATH DEST`.
    """
    from .controllers import run
    from .options import RunOptions

    if detach and remove:
        raise click.UsageError("--rm cannot be combined with --detach", ctx=ctx)
    _require_utf8(ctx, None, workspace)
    if workspace is not None and not os.path.isdir(workspace):
        hint = (" (to send the current directory, put -- before the command: "
                f"run -w -- {workspace} ...)" if not os.path.exists(workspace) else "")
        raise click.BadParameter(f"{workspace!r} is not a directory{hint}", ctx=ctx,
                                 param_hint="'--workspace'")
    execute(ctx, "run", options, run,
            RunOptions(list(command), profile=profile, env=env, run_timeout=run_timeout,
                       detach=detach, remove=remove, quiet=quiet, interactive=interactive,
                       workspace=workspace))


@containers.command()
@click.argument("run_id", shell_complete=complete_run_id)
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the run finishes.")
@click.option("--tail", type=int, callback=_at_least(0, MAX_QUERY_INT), metavar="N",
              help="Start at the last N lines (both streams counted together).")
@click.option("--since", metavar=SINCE_METAVAR, callback=_require_utf8,
              help="Only output written since then: 10m, 2h, 1d, or a time such as "
                   "2026-11-30T10:00:00Z.")
@click.option("--timestamps", "-t", is_flag=True,
              help="Start each line with when it was written (RFC 3339, UTC).")
@click.option("--offset", type=int, callback=_at_least(0, MAX_QUERY_INT), default=0,
              show_default=True,
              metavar="N",
              help="Start at byte N of the output (both streams counted together).")
@common_options
@click.pass_context
def logs(ctx, run_id, follow, tail, since, timestamps, offset, **options):
    """Print a run's output (stdout and stderr to ours, byte for byte)."""
    from .controllers import logs
    from .options import LogsOptions

    execute(ctx, "logs", options, logs,
            LogsOptions(run_id, follow=follow, offset=offset, tail=tail, since=since,
                        timestamps=timestamps))


@containers.command()
@click.argument("run_id", shell_complete=complete_run_id)
@common_options
@click.pass_context
def wait(ctx, run_id, **options):
    """Wait for a run to finish; exit with its exit code (124 on --timeout)."""
    from .controllers import wait
    from .options import WaitOptions

    execute(ctx, "wait", options, wait, WaitOptions(run_id))


@containers.command()
@click.option("--limit", type=int, callback=_at_least(1), metavar="N",
              help="Show at most N runs  [default: 20]")
@click.option("--all", "all_runs", is_flag=True, help="Every run (all pages).")
@click.option("--status", "status_filter", metavar="STATUS", callback=_require_utf8,
              shell_complete=complete_status,
              help=f"Only runs in this status: {STATUS_WORDS}.")
@click.option("--profile", metavar="PROFILE", callback=_require_utf8,
              shell_complete=complete_profile, help="Only runs of this profile.")
@click.option("--since", metavar=SINCE_METAVAR, callback=_require_utf8,
              help="Only runs created since then: 10m, 2h, 1d, or a time.")
@click.option("--quiet", "-q", is_flag=True, help="Only the ids, one a line (for xargs).")
@common_options
@click.pass_context
def runs(ctx, limit, all_runs, status_filter, profile, since, quiet, **options):
    """List your runs, newest first."""
    from .controllers import runs
    from .options import RunsOptions

    if all_runs and limit is not None:
        raise click.UsageError("--all and --limit cannot be combined", ctx=ctx)
    execute(ctx, "runs", options, runs,
            RunsOptions(limit=20 if limit is None else limit, all=all_runs,
                        status=status_filter, profile=profile, since=since, quiet=quiet))


@containers.command()
@click.argument("run_id", shell_complete=complete_run_id)
@common_options
@click.pass_context
def show(ctx, run_id, **options):
    """Show one run in full."""
    from .controllers import show
    from .options import ShowOptions

    execute(ctx, "show", options, show, ShowOptions(run_id))


@containers.command()
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN_ID...",
                shell_complete=complete_run_id)
@common_options
@click.pass_context
def delete(ctx, run_ids, **options):
    """Delete runs and their output (a running one is stopped first)."""
    from .controllers import delete
    from .options import DeleteOptions

    execute(ctx, "delete", options, delete, DeleteOptions(list(run_ids)))


@containers.command()
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN_ID...",
                shell_complete=complete_run_id)
@common_options
@click.pass_context
def cancel(ctx, run_ids, **options):
    """Stop runs and keep them with their output (a finished run is left as it is)."""
    from .controllers import cancel
    from .options import CancelOptions

    execute(ctx, "cancel", options, cancel, CancelOptions(list(run_ids)))


@containers.command()
@common_options
@click.pass_context
def usage(ctx, **options):
    """Show your plan, its limits, what this period used and what is left."""
    from .controllers import usage

    execute(ctx, "usage", options, usage)


@containers.command()
@common_options
@click.pass_context
def doctor(ctx, **options):
    """Check the setup step by step (config, token, origin, network, runner, billing);
    the first failure's fix, and its exit code."""
    from . import controllers
    from .options import DoctorOptions

    code = controllers.execute(
        "doctor", common := _common(ctx, options),
        functools.partial(controllers.doctor, DoctorOptions(common, host_obj=ctx.obj)),
        host_obj=ctx.obj, invocation=invocation_of(ctx), settings_free=True)
    ctx.exit(int(code))


@containers.command()
@click.argument("run_id", shell_complete=complete_run_id)
@common_options
@click.pass_context
def diff(ctx, run_id, **options):
    """Print the changes a run made to /workspace, as a git patch.

    \b
    Apply them to your tree with: diff RUN_ID | git apply
    (binary files, renames, deletions and modes included).
    """
    from .controllers import diff
    from .options import DiffOptions

    execute(ctx, "diff", options, diff, DiffOptions(run_id))


@containers.command()
@click.argument("source", metavar="RUN_ID:PATH", shell_complete=complete_run_id)
@click.argument("dest", metavar="DEST")
@common_options
@click.pass_context
def cp(ctx, source, dest, **options):
    """Copy a file or directory from a finished run's /workspace to DEST.

    \b
    PATH is relative to /workspace; the copy is named by its last part
    (RUN:d/e/f.txt . gives ./f.txt), as cp -r and docker cp do. DEST -
    writes a tar stream to stdout (not with --json). Nothing is written
    outside DEST (absolute paths, '..', links out of what is copied and
    device files are refused), and never over a FIFO or a device.
    """
    from .controllers import copy
    from .options import CopyOptions

    run_id, sep, path = source.partition(":")
    if not sep or not run_id or not path:
        raise click.BadParameter(f"{source!r}: expected RUN_ID:PATH, e.g. "
                                 "run_0123abcd:out/report.txt", ctx=ctx,
                                 param_hint="'RUN_ID:PATH'")
    _require_utf8(ctx, None, path)
    if dest == "-" and _common(ctx, options).json:
        # stdout cannot be both the tar and a JSON document; a script asking for JSON
        # must not get bytes it would try to parse.
        raise click.UsageError("--json cannot be combined with DEST '-' (the tar stream on "
                               "stdout is the result); drop --json, or give a DEST path",
                               ctx=ctx)
    execute(ctx, "cp", options, copy, CopyOptions(run_id, path, dest))


def main() -> None:
    """Console script `bus-containers`: the same group, standalone, in its own process."""
    try:
        containers.main(prog_name=STANDALONE_NAME)
    finally:
        # The process ends here. At exit CPython clears the ~300 modules start-up loaded
        # (click, requests, PyJWT, ours) and its final collections walk their ~45,000
        # objects to free the cycles among them (functions and their globals, classes):
        # ~20 ms of a 150 ms `status`. Frozen, those are left to the OS, as all memory is
        # at exit. Exit handlers still run and stdout/stderr are still flushed; only
        # finalizers of objects in leftover cycles are skipped, which CPython never
        # promises to run at exit. Only here: a host's process (`bus containers`) never
        # calls this function.
        gc.freeze()
