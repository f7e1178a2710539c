"""The click commands: thin. Each one resolves settings, calls the service, renders.

No HTTP here, and nothing heavy at import time: the host imports this module for every
`bus` invocation, `--help` included (requests and jwt are imported by the service, late).
"""

from __future__ import annotations

import os
import re
import sys

import click

from . import __version__

# The contract's exit codes, by meaning (CONTRACT 6).
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
OPTION_NAMES = ("api_url", "token_file", "timeout")
META_KEY = "bus_containers.group_options"

TOKEN_ON_COMMAND_LINE = (
    "a literal token is not accepted on the command line (it would end up in shell "
    "history and process lists). Use --token-file PATH, set $BUS_AI_TOKEN, or run: "
    'bus auth token --scope "container:read container:run container:delete billing:read"'
)  # spelled out, not imported from errors: this module stays import-light


def _reject_token(ctx, param, value):
    if value is not None:
        raise click.UsageError(TOKEN_ON_COMMAND_LINE, ctx=ctx)


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
    ctx.exit(EXIT_USAGE)


class ContainersGroup(click.Group):
    """Shows usage errors as a JSON document when --json was asked for (CONTRACT 5)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # The group's own options (`containers --json --timeout abc status`) fail here,
        # before `invoke`: they get the JSON form too.
        original = list(args)
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            if not _args_ask_for_json(original):
                raise
            _json_usage_error(ctx, exc)

    def invoke(self, ctx: click.Context):
        args = [*getattr(ctx, "_protected_args", []), *ctx.args]
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


@click.group(cls=ContainersGroup, epilog=EPILOG)
@common_options
@click.version_option(__version__, "--version", prog_name="bus-containers",
                      message="%(prog)s %(version)s")
@click.pass_context
def containers(ctx: click.Context, **options):
    """Run short, isolated jobs on the AI Platform container runner."""
    ctx.meta[META_KEY] = options


def execute(ctx: click.Context, command: str, options: dict, action) -> None:
    """Settings -> client -> action(client, output) -> exit code, with every error mapped.

    `action` returns the exit code (None means 0). Nothing but click's own exits leaves
    this function, so a host running us never shows a traceback.
    """
    from .errors import ContainersError
    from .render import Output

    group = ctx.meta.get(META_KEY, {})
    merged = {name: options.get(name) if options.get(name) is not None else group.get(name)
              for name in OPTION_NAMES}
    json_output = bool(options.get("json_output") or group.get("json_output"))
    debug = bool(options.get("debug") or group.get("debug")
                 or os.environ.get("BUS_DEBUG", "") not in ("", "0"))
    output = Output(json=json_output)
    handler = _start_debug_log(debug)
    code = 0
    try:
        from .service import ContainersClient
        from .settings import resolve

        settings = resolve(command=command, host_obj=ctx.obj, env=os.environ,
                           api_url=merged["api_url"], token_file=merged["token_file"],
                           timeout=merged["timeout"], warn=output.warning)
        output.redact = settings.token
        client = ContainersClient(settings.api_url, settings.token, timeout=settings.timeout)
        code = action(client, output) or 0
    except ContainersError as error:
        output.error(error)
        code = error.exit_code
    except KeyboardInterrupt:
        from .errors import Interrupted

        output.error(Interrupted("interrupted"))
        code = EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, like a tool killed by SIGPIPE.
        _silence_stdout()
        code = EXIT_BROKEN_PIPE
    except Exception as bug:  # CONTRACT 5: a short message, the traceback only with --debug
        if debug:
            import traceback

            output.warning(traceback.format_exc())
        output.error(ContainersError(f"unexpected error: {type(bug).__name__}: {bug}",
                          guidance="Run again with --debug for details, and report it.",
                          code="internal"))
        code = 1
    finally:
        _stop_debug_log(handler)
    ctx.exit(code)


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _start_debug_log(debug: bool):
    if not debug:
        return None
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("debug: %(message)s"))
    logger = logging.getLogger("bus_containers")
    handler.previous_level = logger.level  # restored after the command: a host lives on
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return handler


def _stop_debug_log(handler) -> None:
    if handler is not None:
        import logging

        logger = logging.getLogger("bus_containers")
        logger.removeHandler(handler)
        logger.setLevel(handler.previous_level)


# -- commands ------------------------------------------------------------------------------
@containers.command()
@common_options
@click.pass_context
def status(ctx, **options):
    """Show the runner's state (ready, starting, degraded, ...)."""
    execute(ctx, "status", options, lambda client, out: out.status(client.status()))


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
              help="Runner profile.")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE", callback=_parse_env,
              help="Environment variable for the command (repeatable).")
@click.option("--run-timeout", type=click.IntRange(min=1), metavar="SECONDS",
              help="Server-side limit for the command itself (status timed_out, exit 124).")
@click.option("--detach", "-d", is_flag=True, help="Print the run id and return at once.")
@click.option("--rm", "remove", is_flag=True,
              help="Delete the run once it has finished (like docker run --rm).")
@common_options
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED,
                callback=_require_utf8)
@click.pass_context
def run(ctx, profile, env, run_timeout, detach, remove, command, **options):
    """Run COMMAND in a fresh container, streaming its output as it comes.

    \b
    Example: bus containers run --profile codex -- sh -c 'printf OK'
    Ctrl-C detaches: the run keeps going (see `logs --follow`, `delete`).
    Exit code: the command's own; 124 when it (or --timeout) ran out of time.
    """
    if detach and remove:
        raise click.UsageError("--rm cannot be combined with --detach", ctx=ctx)

    def action(client, out):
        from .service import exit_code_for_run

        if detach:
            created = client.create_run(list(command), profile=profile, env=env,
                                        timeout_seconds=run_timeout)
            if out.json:
                out.document(created)
            else:
                out.run_ids(created["id"])
            return 0
        if not out.json:
            from .attach import run_attached

            return run_attached(client, out, list(command), profile=profile, env=env,
                                run_timeout=run_timeout, remove=remove)
        created: list[str] = []
        try:
            finished = client.run(list(command), profile=profile, env=env,
                                  timeout_seconds=run_timeout,
                                  on_created=lambda run: created.append(run["id"]))
        except KeyboardInterrupt:
            from .errors import Interrupted

            raise Interrupted.detached(created[0] if created else None) from None
        out.document(finished)
        if remove:
            client.delete_run(finished["id"])
        return exit_code_for_run(finished)

    execute(ctx, "run", options, action)


@containers.command()
@click.argument("run_id")
@click.option("--follow", "-f", is_flag=True, help="Keep printing until the run finishes.")
@click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True,
              help="Start at this byte of the output (both streams counted together).")
@common_options
@click.pass_context
def logs(ctx, run_id, follow, offset, **options):
    """Print a run's output (stdout and stderr to ours, byte for byte)."""
    execute(ctx, "logs", options, lambda client, out: out.logs(
        run_id, client.iter_logs(run_id, offset=offset, follow=follow), offset))


@containers.command()
@click.argument("run_id")
@common_options
@click.pass_context
def wait(ctx, run_id, **options):
    """Wait for a run to finish; exit with its exit code (124 on --timeout)."""
    def action(client, out):
        from .service import exit_code_for_run

        progress = out.progress()
        progress.start("waiting")
        try:
            run = client.wait_for_run(run_id, immediate=True, on_poll=progress.update)
        except KeyboardInterrupt:
            from .errors import Interrupted

            raise Interrupted(f"stopped waiting for run {run_id}; it keeps running",
                              guidance=f"Wait again:  bus containers wait {run_id}") from None
        finally:
            progress.stop()
        code = exit_code_for_run(run)
        if out.json:
            out.document(run)
        else:
            out.message(f"Run {run['id']} {run.get('status')} (exit code {code})")
        return code

    execute(ctx, "wait", options, action)


@containers.command()
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="Show at most N runs.")
@click.option("--status", "status_filter", metavar="STATUS", callback=_require_utf8,
              help="Only runs in this status (e.g. running, failed).")
@common_options
@click.pass_context
def runs(ctx, limit, status_filter, **options):
    """List your runs, newest first."""
    execute(ctx, "runs", options, lambda client, out: out.runs_table(
        client.list_runs(limit=limit, status=status_filter)))


@containers.command()
@click.argument("run_id")
@common_options
@click.pass_context
def show(ctx, run_id, **options):
    """Show one run in full."""
    execute(ctx, "show", options, lambda client, out: out.run_detail(client.get_run(run_id)))


@containers.command()
@click.argument("run_ids", nargs=-1, required=True, metavar="RUN_ID...")
@common_options
@click.pass_context
def delete(ctx, run_ids, **options):
    """Delete runs (a running one is stopped first)."""
    def action(client, out):
        result = client.delete_runs(list(run_ids), on_result=lambda run_id, found: out.message(
            f"Deleted {run_id}" if found else f"Not found: {run_id}"))
        out.deleted(result["deleted"], result["not_found"])
        return 3 if result["not_found"] else 0

    execute(ctx, "delete", options, action)


def main() -> None:
    """Console script `bus-containers`: the same group, standalone."""
    containers.main(prog_name="bus-containers")
