"""Human tables and JSON documents: the only module that writes results.

stdout carries results only; messages, warnings and errors go to stderr (CONTRACT 5), so
`out=$(bus containers run -- printf OK)` is exactly `OK`.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO

# Text from the server (a run's command, a message: anything but `logs`' byte-exact
# output) must not drive the terminal: C0/C1 controls, and the Unicode line separators and
# bidi overrides that can reorder what a reader sees, become "?". In one-line fields (table
# cells, `show` values) newlines and tabs too, so a value cannot split a row.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKING = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
MIN_COMMAND_WIDTH = 20  # the COMMAND column never shrinks below this
PIPE_COMMAND_WIDTH = 200  # not a terminal: the column is still bounded (full text: --json)
MAX_MESSAGE_LINE = 1000  # an error's line as a human sees it (--json keeps the whole text)
MAX_MESSAGE_LINES = 20


def _clean(value: object) -> str:
    """Multi-line text for a terminal: newlines and tabs kept, other controls made "?"."""
    text = "-" if value is None else str(value)
    return _CONTROL.sub("?", text)


def _one_line(value: object) -> str:
    """A table cell or a `show` value: every control made "?", newlines and tabs too."""
    text = "-" if value is None else str(value)
    return _LINE_BREAKING.sub("?", text)


def _value_text(value: object) -> str:
    """A field's value as a reader expects it: JSON words (true, null), JSON for nested
    values, plain text for strings."""
    if value is None or isinstance(value, (bool, dict, list)):
        import json

        return _one_line(json.dumps(value, ensure_ascii=False))
    return _one_line(value)


def command_text(command: object) -> str:
    if isinstance(command, list) and all(isinstance(part, str) for part in command):
        return _one_line(shlex.join(command))
    return _one_line(command)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "\u2026"


def _label(key: str) -> str:
    """`show`'s label for a field, the same rule for known and new fields."""
    return "ID" if key == "id" else _one_line(key.replace("_", " ").capitalize())


@dataclass
class Invocation:
    """How the user called us, for the "run this next" hints: `prog` is the name typed
    (`bus containers` under the host, `bus-containers` standalone); `origin` and its
    source say which API a connection error was about."""

    prog: str = "bus containers"
    standalone: bool = False
    origin: str | None = None
    origin_source: str | None = None
    token_source: str | None = None  # `$BUS_AI_TOKEN`, a file's path: named in token errors


API_URL_ENV_HELP = "--api-url, $BUS_AI_API_URL or $BUS_API_BASE_URL"


def token_hint(invocation: Invocation, again: bool = False) -> str:
    """How to get a token: the host's `bus auth token`, and for a standalone user without
    the Bus CLI also the local emulator's way (docs/emulator.md: `token` signs for the
    emulator's default account; `--state-dir` must match the one `serve` was given)."""
    from .token import ALL_SCOPES

    get = "Get a new token" if again else "Get a token"
    host = f'bus auth token --scope "{ALL_SCOPES}"'
    if not invocation.standalone:
        return f"{get} with: {host}"
    return (f"{get} with the Bus CLI: {host}\n"
            "or, for a local emulator: export BUS_AI_TOKEN=\"$(bus-containers-emulator "
            "token)\"  (add --state-dir DIR if it was started with one)")


def token_on_command_line(invocation: Invocation) -> str:
    """The refusal of a literal `--token`, with the token hint in the name the user typed."""
    return ("a literal token is not accepted on the command line (it would end up in shell "
            "history and process lists). Use --token-file PATH or set $BUS_AI_TOKEN.\n"
            + token_hint(invocation))


# Request-body fields a server may name in a 400, as the option the user typed.
_OPTION_OF_FIELD = {"timeout_seconds": "--run-timeout"}


def _options_for_fields(message: str) -> str:
    for name, option in _OPTION_OF_FIELD.items():
        message = re.sub(rf"\b{name}\b", option, message)
    return message


def _replaces_server_guidance(error) -> bool:
    """For token errors (401/403) the client knows how to get a token, in the name the
    user typed: server guidance that names a token command (`bus auth token`, wrong for a
    standalone user) gives way to our hint; any other guidance is kept above it."""
    from . import errors as e

    return isinstance(error, e.AuthError) and "auth token" in (error.guidance or "")


def hint_for(error, invocation: Invocation) -> str | None:
    """The CLI's advice for an error: what to run next, in the name the user typed.
    The service raises facts (run id, scope, origin); the words are made here."""
    from . import errors as e

    prog = invocation.prog
    run_id = getattr(error, "run_id", None)
    if isinstance(error, e.AuthError):
        return token_hint(invocation, again=isinstance(error, e.TokenExpired)
                          or error.status == 401)
    if isinstance(error, e.CommandTimeout):
        if run_id:
            return (f"Check it with: {prog} show {run_id}   "
                    f"Stop it with: {prog} delete {run_id}")
        return "Try again, or raise --timeout."
    if isinstance(error, e.Interrupted):
        if getattr(error, "waiting", False) and run_id:
            return f"Wait again:  {prog} wait {run_id}"
        if getattr(error, "following", False) and run_id:
            return f"Follow it again:  {prog} logs --follow {run_id}"
        if run_id:
            return (f"Follow it:  {prog} logs --follow {run_id}\n"
                    f"Delete it:  {prog} delete {run_id}")
        if error.message != "interrupted":
            return f"See your runs with: {prog} runs --status running"
        return None
    if isinstance(error, e.RunNotFinished) and run_id:
        return f"wait for it: {prog} wait {run_id}"
    if isinstance(error, e.TooLarge) and error.biggest:
        return "The biggest files:\n" + "\n".join(
            f"  {human_bytes(size):>9}  {path}" for path, size in error.biggest)
    if isinstance(error, (e.ConnectionFailed, e.EndpointNotFound)):
        origin = error.origin or invocation.origin
        where = f"The API origin is {origin}" if origin else "Check the API origin"
        if origin and invocation.origin_source:
            where += f" (from {invocation.origin_source})"
        hint = f"{where}; set {API_URL_ENV_HELP} to change it, and check the server is up."
        from .settings import is_loopback_origin

        if isinstance(error, e.ConnectionFailed) and is_loopback_origin(origin):
            hint += f"\nFor the local emulator, start it with: {emulator_serve_command(origin)}"
        return hint
    return None


def emulator_serve_command(origin: str) -> str:
    """The command that starts the local emulator where `origin` points (its port; the
    emulator's default is 8080)."""
    from urllib.parse import urlsplit

    try:
        port = urlsplit(origin).port
    except ValueError:
        port = None
    if port is None:
        port = 443 if origin.startswith("https:") else 80
    return "bus-containers-emulator serve" + ("" if port == 8080 else f" --port {port}")


def _token_source(error, invocation: Invocation) -> str | None:
    """Where the token of a token error came from, unless the message already says."""
    from . import errors as e

    if not isinstance(error, e.AuthError) or isinstance(error, e.TokenMissing):
        return None
    source = getattr(error, "token_source", None) or invocation.token_source
    return source if source and source not in error.message else None


def error_text(error, invocation: Invocation) -> str:
    """An error as the one paragraph a human reads: message, why we stopped retrying,
    the server's guidance, our hint, the server's link."""
    from . import errors as e

    label = getattr(error, "label", "Error")
    message = error.message
    if isinstance(error, e.RunNotFinished) and error.run_id:
        # One line: "run_x is still running; wait for it: bus containers wait run_x"
        return _clean(f"{label}: {error.run_id} is still running; "
                      f"{hint_for(error, invocation)}")
    if isinstance(error, e.TooLarge) and error.size is not None and error.limit is not None:
        message = (f"the workspace is {human_bytes(error.size)}; the plan allows "
                   f"{human_bytes(error.limit)} per workspace. Leave big files out (e.g. "
                   "in .gitignore) or send a smaller directory")
    if isinstance(error, e.InvalidRequest):
        message = _options_for_fields(message)
    if getattr(error, "gave_up_early", False):
        message += (f" (gave up after {error.attempts} attempt(s): the next retry would "
                    f"pass the timeout of {error.timeout:g} s)")
    lines = [f"{label}: {message}" if label else message]
    source = _token_source(error, invocation)
    if source:
        lines.append(f"The token came from {source}.")
    if error.guidance and not _replaces_server_guidance(error):
        lines.append(error.guidance)
    hint = hint_for(error, invocation)
    if hint:
        lines.append(hint)
    if error.url:
        lines.append(f"See {error.url}")
    # Messages may come from the server: no control sequence reaches the terminal, and a
    # server cannot flood it (each line and the line count are bounded).
    shown = "\n".join(lines).split("\n")
    return "\n".join(_shorten(_clean(line), MAX_MESSAGE_LINE)
                     for line in shown[:MAX_MESSAGE_LINES])


@dataclass
class Output:
    """Where results and messages go; tests inject their own streams."""

    json: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    redact: str | None = None  # the token: masked in every message, as a last line of defence
    invocation: Invocation = field(default_factory=Invocation)
    quiet: bool = False  # `-q`: no informational lines and no progress (errors still show)

    def __post_init__(self) -> None:
        # A closed stream (`2>&-`) is None in Python; print(file=None) would write to
        # stdout, mixing messages into results. Such output goes nowhere instead.
        if self.out is None:
            self.out = open(os.devnull, "w")  # lives as long as the command
        if self.err is None:
            self.err = open(os.devnull, "w")

    def is_terminal(self) -> bool:
        """Is stdout a terminal (human niceties) rather than a pipe or a file (scripts)?"""
        return _isatty(self.out)

    def messages_on_terminal(self) -> bool:
        """Is stderr a terminal: would a person read the lines we add there?"""
        return _isatty(self.err)

    def _masked(self, text: str) -> str:
        return text.replace(self.redact, "***") if self.redact else text

    # -- stderr --------------------------------------------------------------------------
    def message(self, text: str) -> None:
        """A human line on stderr. Silent with --json (stderr then carries only JSON
        errors) and with -q."""
        if not (self.json or self.quiet):
            print(text, file=self.err, flush=True)

    def warning(self, text: str) -> None:
        """A warning on stderr; with --json one JSON line `{"warning": {"message"}}`, so a
        program reading stderr as JSON lines is not broken by it."""
        if self.json:
            import json

            message = text.removeprefix("warning: ")
            self.err.write(self._masked(json.dumps({"warning": {"message": message}})) + "\n")
            self.err.flush()
            return
        print(self._masked(text), file=self.err, flush=True)

    def error(self, error) -> None:
        """A ContainersError, as one paragraph or as the `{"error": ...}` JSON document."""
        if self.json:
            import json

            document = error.to_dict()
            source = _token_source(error, self.invocation)
            if source:
                document["error"]["token_source"] = source
            server = None if _replaces_server_guidance(error) else error.guidance
            guidance = "\n".join(filter(None, [server, hint_for(error, self.invocation)]))
            if guidance:
                document["error"]["guidance"] = guidance
            self.err.write(self._masked(json.dumps(document)) + "\n")
            self.err.flush()
            return
        print(self._masked(error_text(error, self.invocation)), file=self.err, flush=True)

    def retrying(self, error, delay: float, attempt: int, attempts: int) -> None:
        """A retry the user would otherwise wait through in silence: on a terminal only."""
        if not self.json and _isatty(self.err):
            # "\r\x1b[K" first: the line replaces a progress line being drawn, if any.
            text = _shorten(_clean(error.message), MAX_MESSAGE_LINE)
            print(self._masked(f"\r\x1b[K{text}; retrying in {delay:.1f} s "
                               f"({attempt}/{attempts})"), file=self.err, flush=True)

    # -- stdout --------------------------------------------------------------------------
    def _json(self, data, stream: TextIO) -> None:
        import json

        write_text(stream, json.dumps(data, indent=2, ensure_ascii=False) + "\n")

    def document(self, data) -> None:
        self._json(data, self.out)

    def status(self, data: dict) -> None:
        if self.json:
            return self.document(data)
        lines = [_clean(data.get("status"))]
        if data.get("message"):
            lines.append(_clean(data["message"]))
        write_text(self.out, "\n".join(lines) + "\n")

    def run_ids(self, *run_ids: str) -> None:
        write_text(self.out, "".join(f"{run_id}\n" for run_id in run_ids))

    def runs_table(self, runs: list[dict], *, more: bool = False, quiet: bool = False,
                   now: float | None = None) -> None:
        """The runs as a table; `quiet`: ids only, one a line (for xargs). On a terminal,
        times are relative and `more` (runs exist past the page) gets a footer; in a pipe,
        ISO times and no footer, so scripts see the same text whatever the terminal."""
        from .times import duration  # here: `status` needs no time formatting

        if self.json:
            return self.document(runs)
        if quiet:
            return self.run_ids(*(_clean(r.get("id")) for r in runs))
        terminal = self.is_terminal()
        when = _relative_time(now) if terminal else _clean
        header = ("ID", "STATUS", "PROFILE", "EXIT", "DURATION", "CREATED", "COMMAND")
        rows = [header] + [
            (_one_line(r.get("id")), _one_line(r.get("status")), _one_line(r.get("profile")),
             _one_line(r.get("exit_code")), duration(_run_seconds(r)),
             _one_line(when(r.get("created_at"))), command_text(r.get("command")))
            for r in runs
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        # The command is cut to what is left of the terminal's width (its full text is in
        # `show` and `--json`), so one long command cannot make every row wrap.
        command_width = PIPE_COMMAND_WIDTH
        if terminal:
            import shutil

            columns = shutil.get_terminal_size().columns
            command_width = max(MIN_COMMAND_WIDTH, columns - sum(widths) - 2 * len(widths))
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True))
                 + "  " + _shorten(row[-1], command_width) for row in rows]
        write_text(self.out, "\n".join(line.rstrip() for line in lines) + "\n")
        if more and terminal:
            self.message(f"{len(runs)} shown; more with --limit or --all")

    def run_detail(self, run: dict) -> None:
        from .times import duration

        if self.json:
            return self.document(run)
        known = ("id", "status", "profile", "command", "exit_code", "created_at",
                 "started_at", "finished_at", "usage", "output_truncated")
        # Fields a newer API added: kept and shown, never dropped.
        extra = [k for k in run if k not in known and k not in ("stdout", "stderr")]
        labels = {k: _label(k) for k in (*known, *extra)}
        labels["usage"] = "Duration"
        width = max(len(label) for label in labels.values()) + 2
        def text(key: str) -> str:
            if key == "command":
                return command_text(run.get(key))
            if key == "workspace" and isinstance(run.get(key), dict):
                return workspace_text(run[key])
            if key == "usage":
                seconds = _run_seconds(run)
                return duration(seconds) + (f" ({seconds:g} run-seconds)"
                                            if duration(seconds) != "-" else "")
            if key in known and run.get(key) is None:
                return "-"  # as in the runs table: no exit code yet, not started, ...
            return _value_text(run.get(key))

        lines = [f"{labels[k]}:".ljust(width) + text(k) for k in (*known, *extra)]
        for name in ("stdout", "stderr"):
            text = run.get(name)
            if isinstance(text, str) and text:
                lines.append(f"--- {name} ---")
                lines.append(_clean(text.rstrip("\n")))
        write_text(self.out, "\n".join(lines) + "\n")

    def run_end(self, run_id: str, run: dict, code: int) -> None:
        """The line after a run that did not succeed (`run`, `wait`): its status in words,
        and the exit code, told apart: the run's own ("exit code 3"), or ours for a run
        that has none ("exiting with 124")."""
        status = run.get("status")
        word = _STATUS_WORDS.get(status, _one_line(status))
        own = run.get("exit_code")
        if isinstance(own, int) and not isinstance(own, bool) and own == code:
            self.message(f"Run {run_id} {word} (exit code {code})")
        else:
            self.message(f"Run {run_id} {word}; exiting with {code}")

    def chunk(self, stream_name: str, data: bytes) -> None:
        """Live output from a run, to the matching local stream, byte for byte."""
        write_bytes(self.out if stream_name == "stdout" else self.err, data)

    def logs(self, run_id: str, events, offset: int, timestamps: bool = False) -> None:
        """`logs`: each output chunk as it comes; with --json, one document at the end
        (the output as text, and where to resume). `timestamps`: each line starts with
        when it was written (and --json adds the chunks with their times)."""
        captured = {"stdout": bytearray(), "stderr": bytearray()}
        chunks: list[dict] = []
        at_line_start = {"stdout": True, "stderr": True}
        end, position = None, offset
        for event in events:
            if event.get("event") == "end":
                end = event
                break
            position = event["offset"] + len(event["data"])
            if self.json:
                captured[event["stream"]] += event["data"]
                if timestamps:
                    chunks.append({"stream": event["stream"], "offset": event["offset"],
                                   "time": event.get("time"),
                                   "text": event["data"].decode("utf-8", "replace")})
            elif timestamps:
                stream = event["stream"]
                at_line_start[stream] = self._stamped(stream, event["data"], event.get("time"),
                                                      at_line_start[stream])
            else:
                self.chunk(event["stream"], event["data"])
        if self.json:
            document = {"id": run_id, "finished": end is not None,
                        "status": (end or {}).get("status"),
                        "exit_code": (end or {}).get("exit_code"),
                        "next_offset": position,
                        **{k: v.decode("utf-8", "replace") for k, v in captured.items()}}
            if timestamps:
                document["chunks"] = chunks
            self.document(document)

    def _stamped(self, stream: str, data: bytes, written: object, at_line_start: bool) -> bool:
        """Write `data` with `written` before each line that starts in it; whether the next
        byte starts a line. The bytes themselves are unchanged."""
        prefix = (_clean(written) if isinstance(written, str) else "-").encode() + b" "
        pieces = []
        for line in data.splitlines(keepends=True):
            if at_line_start:
                pieces.append(prefix)
            pieces.append(line)
            at_line_start = line.endswith(b"\n")
        self.chunk(stream, b"".join(pieces))
        return at_line_start

    def upload_progress(self) -> UploadProgress:
        """`sending workspace 40% (12.0 of 30.0 MB)` on stderr: on a terminal, without
        --json, and only once an upload has taken a second."""
        return UploadProgress(self.err,
                              enabled=not (self.json or self.quiet) and _isatty(self.err))

    def workspace_sent(self, path: str, sent: dict) -> None:
        state = ("sent" if sent["uploaded"]
                 else "already on the server, not sent again")
        self.message(f"Workspace {_clean(path)} ({workspace_text(sent)}): {state}")

    def changes_summary(self, run_id: str, files: int, git_prefix: str = "") -> None:
        """After `run --workspace`, on a terminal: what changed and how to take it. For a
        subdirectory of a git work tree, `git apply` needs --directory (else it skips the
        patch without a word)."""
        if files == 0:
            self.message("No files changed in /workspace")
            return
        noun = "file" if files == 1 else "files"
        apply = "git apply" + (f" --directory={shlex.quote(git_prefix)}" if git_prefix else "")
        self.message(f"{files} {noun} changed; see: {self.invocation.prog} diff {run_id} "
                     f"| {apply}")

    def patch(self, run_id: str, patch: bytes, files: int) -> None:
        if self.json:
            return self.document({"id": run_id, "files_changed": files,
                                  "patch": patch.decode("utf-8", "replace")})
        write_bytes(self.out, patch)

    def raw_stream(self, chunks) -> None:
        """Bytes to stdout as they come (`cp RUN:PATH -`): a tar for another tool."""
        for chunk in chunks:
            write_bytes(self.out, chunk)

    def copied(self, run_id: str, path: str, dest: str, written: list[str]) -> None:
        if self.json:
            return self.document({"id": run_id, "path": path, "dest": dest,
                                  "written": written})
        noun = "entry" if len(written) == 1 else "entries"
        self.message(f"Copied {run_id}:{_clean(path)} to {_clean(dest)} "
                     f"({len(written)} {noun})")

    def progress(self) -> Progress:
        """A progress line on stderr: only on a terminal and never with --json."""
        return Progress(self.err, enabled=not (self.json or self.quiet) and _isatty(self.err))

    def deleted(self, deleted: list[str], not_found: list[str]) -> None:
        if self.json:
            self.document({"deleted": deleted, "not_found": not_found})

    # -- cancel, usage, doctor -----------------------------------------------------------
    def cancel_result(self, run_id: str, outcome: str, run: dict | None) -> None:
        """One line per run as it is cancelled (stderr; nothing with --json)."""
        if outcome == "cancelled":
            self.message(f"Cancelled {run_id}")
        elif outcome == "finished":
            status = _clean((run or {}).get("status"))
            self.message(f"Already finished: {run_id} ({status}); left as it is")
        else:
            self.message(f"Not found: {run_id}")

    def cancelled(self, result: dict) -> None:
        if self.json:
            self.document(result)

    def usage(self, document: dict, now: float | None = None) -> None:
        """The plan, the period, each limit with what is used and left, the billing state."""
        if self.json:
            return self.document(document)
        limits = document.get("limits") if isinstance(document.get("limits"), dict) else {}
        used = document.get("used") if isinstance(document.get("used"), dict) else {}
        period = document.get("period") if isinstance(document.get("period"), dict) else {}
        billing = document.get("billing") if isinstance(document.get("billing"), dict) else {}
        lines = [f"Plan:     {_clean(document.get('plan'))}",
                 f"Period:   {_period_text(period, now, _isatty(self.out))}",
                 f"Billing:  {_clean(billing.get('status', 'unknown'))}"
                 + (f" ({_clean(billing['url'])})" if billing.get("url")
                    and billing.get("status") != "active" else ""),
                 ""]
        rows = [("LIMIT", "USED", "OF", "LEFT")]
        names = [*(n for n in _LIMIT_WORDS if n in limits or n in used),
                 *sorted(n for n in {*limits, *used} if n not in _LIMIT_WORDS)]
        for name in names:
            limit, value = limits.get(name), used.get(name)
            left = (limit - value) if _is_number(limit) and _is_number(value) else None
            rows.append((_LIMIT_WORDS.get(name, _clean(name)),
                         _amount(name, value) if name in used else "-",
                         _amount(name, limit) if _is_number(limit) else
                         ("unlimited" if name in limits and limit is None else "-"),
                         _amount(name, max(left, 0)) if left is not None else "-"))
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines += ["  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True))
                  + "  " + row[3] for row in rows]
        self.out.write("\n".join(line.rstrip() for line in lines) + "\n")

    def doctor_check(self, check, first_failure: bool = True) -> None:
        """One check, as soon as it is known: `ok`, `warn`, `FAIL` or `skip`, its title,
        what was found; the first failure's fix on the lines below it (--json has all)."""
        if self.json:
            return
        mark = {"ok": "ok", "warn": "warn", "fail": "FAIL", "skip": "skip"}.get(check.status,
                                                                              check.status)
        self.out.write(f"{mark:<5} {check.title:<18} {_clean(check.detail)}\n")
        if check.status == "fail" and check.fix and first_failure:
            for i, line in enumerate(_clean_lines(check.fix)):
                self.out.write(f"{'':<5} {'fix:' if i == 0 else '':<18} {line}\n")
        self.out.flush()

    def doctor_report(self, checks: list) -> None:
        if self.json:
            self.document([check.to_dict() for check in checks])


_STATUS_WORDS = {"timed_out": "timed out"}  # other status words read as they are

_LIMIT_WORDS = {
    "concurrent_runs": "concurrent runs",
    "runs_per_period": "runs per period",
    "run_seconds_per_period": "run-seconds per period",
    "max_run_seconds": "longest run",
    "output_bytes": "output per run",
    "workspace_bytes": "workspace size",
}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _amount(name: str, value: object) -> str:
    """A usage number in its unit: bytes as KiB/MiB/GiB, seconds with `s`."""
    if not _is_number(value):
        return _clean(value)
    if name.endswith("_bytes"):
        return human_bytes(value)
    if name == "max_run_seconds":
        return f"{value:g} s"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _period_text(period: dict, now: float | None, terminal: bool) -> str:
    from .times import duration, parse_api_time

    start, end = period.get("start"), period.get("end")
    text = f"{_clean(start)} to {_clean(end)}"
    end_time = parse_api_time(end)
    if terminal and end_time is not None:
        from datetime import datetime, timezone

        current = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc)
        left = (end_time - current).total_seconds()
        if left > 0:
            text += f" (ends in {duration(left)})"
    return text


def _clean_lines(text: str) -> list[str]:
    return [_clean(line) for line in str(text).split("\n")]


def _run_seconds(run: dict) -> object:
    usage = run.get("usage")
    return usage.get("run_seconds") if isinstance(usage, dict) else None


def _relative_time(now: float | None):
    """The CREATED column on a terminal: "3 min ago" (unparsable times as they came)."""
    from datetime import datetime, timezone

    from .times import ago, parse_api_time

    current = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc)

    def show(value: object) -> str:
        when = parse_api_time(value)
        return ago(when, current) if when is not None else _clean(value)

    return show


def write_text(stream: TextIO, text: str) -> None:
    """A result on stdout, through `write_bytes` where the stream has a byte buffer, so a
    closed pipe is noticed the same way for tables and documents as for a run's output."""
    if getattr(stream, "buffer", None) is None:
        stream.write(text)
        stream.flush()
        return
    encoding = getattr(stream, "encoding", None) or "utf-8"
    write_bytes(stream, text.encode(encoding, "replace"))


def write_bytes(stream: TextIO, data: bytes) -> None:
    """Write a run's output unchanged: through the byte buffer when the stream has one,
    so no newline translation or encoding error can alter it."""
    stream.flush()
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        # A write to a pipe whose reader left can return a partial count instead of
        # raising (the BrokenPipeError comes on the next write): write until every byte is
        # out, so a closed pipe is always noticed, whatever the timing.
        view = memoryview(data)
        while view:
            written = buffer.write(view)
            view = view[written if written else len(view):]
        buffer.flush()
    else:
        stream.write(data.decode("utf-8", "replace"))
        stream.flush()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


class Progress:
    """`running  12s` on one stderr line, redrawn every second from a background thread
    while the CLI waits with nothing to show; erased before any output or message."""

    def __init__(self, err: TextIO, enabled: bool) -> None:
        self.enabled = enabled
        self.status = "waiting"
        self._err = err
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, status: str) -> None:
        self.status = status
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()

    def update(self, run: dict) -> None:
        """on_poll callback: show the run's latest status."""
        self.status = _clean(run.get("status"))

    def _tick(self) -> None:
        while True:
            with self._lock:
                if self._stop.is_set():
                    return
                elapsed = int(time.monotonic() - self._started)
                self._err.write(f"\r\x1b[K{self.status}  {elapsed}s")
                self._err.flush()
            if self._stop.wait(1.0):
                return

    def stop(self) -> None:
        """Erase the line for good (idempotent)."""
        if self._thread is None or self._stop.is_set():
            return
        with self._lock:
            self._stop.set()
            self._err.write("\r\x1b[K")
            self._err.flush()
        self._thread.join()


def human_bytes(n: int | float) -> str:
    """Bytes in binary units (B, KiB, MiB, GiB), one decimal: the one unit system of every
    size the CLI prints (usage, workspace limits, progress)."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:g} B"


def files_text(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


def workspace_text(workspace: dict) -> str:
    """`3 files, 1.2 KiB; git 3f2a9c1e07b4 + uncommitted changes`: a workspace as sent (the
    upload's result, or the run object's `workspace` field, which `show` prints)."""
    files, size = workspace.get("files"), workspace.get("bytes")
    parts = []
    if _is_number(files):
        parts.append(files_text(int(files)))
    if _is_number(size):
        parts.append(human_bytes(size))
    text = ", ".join(parts) or "sent"
    commit = workspace.get("base_commit")
    if isinstance(commit, str) and commit:
        text += f"; git {_one_line(commit[:12])}"
        if workspace.get("dirty") is True:
            text += " + uncommitted changes"
        elif workspace.get("dirty") is False:
            text += ", clean"
    return text


class UploadProgress:
    """The upload's progress line; shown only after a second (a quick upload says nothing),
    redrawn at most ten times a second, erased at the end."""

    def __init__(self, err: TextIO, enabled: bool) -> None:
        self.enabled = enabled
        self._err = err
        self._started = time.monotonic()
        self._drawn = 0.0
        self._shown = False

    def update(self, sent: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._started < 1.0 or now - self._drawn < 0.1:
            return
        self._drawn = now
        self._shown = True
        percent = 100 * sent // total if total else 100
        self._err.write(f"\r\x1b[Ksending workspace {percent}% ({human_bytes(sent)} of "
                        f"{human_bytes(total)})")
        self._err.flush()

    def stop(self) -> None:
        if self._shown:
            self._err.write("\r\x1b[K")
            self._err.flush()
            self._shown = False
