"""Shell completion values (click's completion drives these): run ids from the account's
recent runs, profiles, `--status` words.

A completion runs on every Tab press, so it must be quick and silent whatever happens: the
run-id lookup has a hard wall-clock limit (a thread that is abandoned when late, since DNS
and a trickling server can outlast socket timeouts), makes one attempt, and any failure
(no token, server down, hostile answer) completes nothing and prints nothing.
"""

from __future__ import annotations

import os
import threading

KNOWN_STATUSES = ("queued", "starting", "running", "succeeded", "failed", "cancelled",
                  "timed_out")
KNOWN_PROFILES = ("codex", "default")
LOOKUP_SECONDS = 1.5  # the longest a Tab press waits for run ids
RECENT_RUNS = 30


def complete_words(words, incomplete: str):
    from click.shell_completion import CompletionItem

    return [CompletionItem(word) for word in words if word.startswith(incomplete)]


def complete_status(ctx, param, incomplete: str):
    return complete_words(KNOWN_STATUSES, incomplete)


def complete_profile(ctx, param, incomplete: str):
    return complete_words(KNOWN_PROFILES, incomplete)


def complete_run_id(ctx, param, incomplete: str):
    """Ids of the account's recent runs that start with `incomplete` (status and command
    as the help text shells show), or nothing at all."""
    from click.shell_completion import CompletionItem

    runs = recent_runs(_options(ctx))
    already = set(ctx.params.get(param.name) or ()) if param.multiple or param.nargs != 1 \
        else set()
    from .responses import RUN_ID_PATTERN

    items = []
    for run in runs:
        run_id = run.get("id") if isinstance(run, dict) else None
        # Only well-formed ids: the shell inserts what we offer into the command line, so
        # a hostile server's "x; rm -rf ~" or a newline (which would also break the zsh
        # and fish framing) is never offered.
        if (isinstance(run_id, str) and RUN_ID_PATTERN.fullmatch(run_id)
                and run_id.startswith(incomplete) and run_id not in already):
            items.append(CompletionItem(run_id, help=_summary(run)))
    return items


def recent_runs(options: dict, seconds: float = LOOKUP_SECONDS) -> list[dict]:
    """The account's newest runs, or [] on any failure or when `seconds` pass first."""
    found: list[dict] = []

    def lookup() -> None:
        try:
            from .service import ContainersClient
            from .settings import resolve

            settings = resolve(command="runs", host_obj=options.get("host_obj"),
                               env=os.environ, api_url=options.get("api_url"),
                               token_file=options.get("token_file"), timeout=seconds)
            client = ContainersClient(settings.api_url, settings.token, timeout=seconds,
                                      max_retries=0)
            found.extend(client.list_runs(limit=RECENT_RUNS))
        except BaseException:  # noqa: BLE001 - a completion never shows an error
            found.clear()

    worker = threading.Thread(target=lookup, name="complete-run-ids", daemon=True)
    worker.start()
    worker.join(seconds)
    return [] if worker.is_alive() else [r for r in found if isinstance(r, dict)]


def _options(ctx) -> dict:
    """--api-url and --token-file as typed so far, after the subcommand or before it."""
    options: dict = {"host_obj": None}
    while ctx is not None:
        for name in ("api_url", "token_file"):
            if options.get(name) is None and ctx.params.get(name) is not None:
                options[name] = ctx.params[name]
        if ctx.obj is not None and options["host_obj"] is None:
            options["host_obj"] = ctx.obj
        ctx = ctx.parent
    return options


def _summary(run: dict) -> str:
    """One short line: newlines and tabs would break the shells' completion framing."""
    from .render import command_text

    text = " ".join(f"{command_text(run.get('status'))}  "
                    f"{command_text(run.get('command'))}".split())
    return text if len(text) <= 60 else text[:59] + "…"
