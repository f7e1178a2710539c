"""Human tables and JSON documents: the only module that writes results.

stdout carries results only; messages, warnings and errors go to stderr (CONTRACT 5), so
`out=$(bus containers run -- printf OK)` is exactly `OK`.
"""

from __future__ import annotations

import re
import shlex
import sys
from dataclasses import dataclass, field
from typing import TextIO

# Control characters from the server (not the run's own output) must not drive the terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _clean(value: object) -> str:
    text = "-" if value is None else str(value)
    return _CONTROL.sub("?", text)


def _command_text(command: object) -> str:
    if isinstance(command, list) and all(isinstance(part, str) for part in command):
        return shlex.join(command)
    return _clean(command)


@dataclass
class Output:
    """Where results and messages go; tests inject their own streams."""

    json: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    redact: str | None = None  # the token: masked in every message, as a last line of defence

    def _masked(self, text: str) -> str:
        return text.replace(self.redact, "***") if self.redact else text

    # -- stderr --------------------------------------------------------------------------
    def message(self, text: str) -> None:
        """A human line on stderr. Silent with --json: stderr then carries only JSON errors."""
        if not self.json:
            print(text, file=self.err, flush=True)

    def warning(self, text: str) -> None:
        print(self._masked(text), file=self.err, flush=True)

    def error(self, error) -> None:
        """A ContainersError, as one paragraph or as the `{"error": ...}` JSON document."""
        if self.json:
            import json

            self.err.write(self._masked(json.dumps(error.to_dict())) + "\n")
            self.err.flush()
            return
        text = f"Error: {error.message}"
        if error.guidance:
            text += f"\n{error.guidance}"
        if error.url:
            text += f"\nSee {error.url}"
        print(self._masked(text), file=self.err, flush=True)

    # -- stdout --------------------------------------------------------------------------
    def _json(self, data, stream: TextIO) -> None:
        import json

        stream.write(json.dumps(data, indent=2, ensure_ascii=False))
        stream.write("\n")
        stream.flush()

    def document(self, data) -> None:
        self._json(data, self.out)

    def status(self, data: dict) -> None:
        if self.json:
            return self.document(data)
        lines = [_clean(data.get("status"))]
        if data.get("message"):
            lines.append(_clean(data["message"]))
        self.out.write("\n".join(lines) + "\n")

    def run_ids(self, *run_ids: str) -> None:
        self.out.write("".join(f"{run_id}\n" for run_id in run_ids))

    def run_output(self, run: dict) -> None:
        """The remote command's own stdout and stderr, byte for byte, to ours."""
        if self.json:
            return self.document(run)
        for text, stream in ((run.get("stdout"), self.out), (run.get("stderr"), self.err)):
            if isinstance(text, str) and text:
                write_raw(stream, text)

    def runs_table(self, runs: list[dict]) -> None:
        if self.json:
            return self.document(runs)
        header = ("ID", "STATUS", "PROFILE", "EXIT", "CREATED", "COMMAND")
        rows = [header] + [
            (_clean(r.get("id")), _clean(r.get("status")), _clean(r.get("profile")),
             _clean(r.get("exit_code")), _clean(r.get("created_at")),
             _command_text(r.get("command")))
            for r in runs
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True))
                 + "  " + row[-1] for row in rows]
        self.out.write("\n".join(line.rstrip() for line in lines) + "\n")

    def run_detail(self, run: dict) -> None:
        if self.json:
            return self.document(run)
        known = ("id", "status", "profile", "command", "exit_code", "created_at",
                 "started_at", "finished_at", "output_truncated")
        lines = [f"{'ID' if k == 'id' else k.replace('_', ' ').capitalize()}:".ljust(14)
                 + (_command_text(run.get(k)) if k == "command" else _clean(run.get(k)))
                 for k in known]
        # Fields a newer API added: kept and shown, never dropped.
        lines += [f"{_clean(k)}:".ljust(14) + _clean(v) for k, v in run.items()
                  if k not in known and k not in ("stdout", "stderr")]
        for name in ("stdout", "stderr"):
            text = run.get(name)
            if isinstance(text, str) and text:
                lines.append(f"--- {name} ---")
                lines.append(text.rstrip("\n"))
        self.out.write("\n".join(lines) + "\n")

    def deleted(self, deleted: list[str], not_found: list[str]) -> None:
        if self.json:
            self.document({"deleted": deleted, "not_found": not_found})


def write_raw(stream: TextIO, text: str) -> None:
    """Write the run's output unchanged: through the byte buffer when the stream has one,
    so no newline translation or encoding error can alter it."""
    stream.flush()
    buffer = getattr(stream, "buffer", None)
    if buffer is not None:
        buffer.write(text.encode("utf-8", "surrogateescape"))
        buffer.flush()
    else:
        stream.write(text)
        stream.flush()
