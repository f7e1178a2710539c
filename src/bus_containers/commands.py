"""Per-command facts in one table: the scope each command needs, its default --timeout
and the example its help shows. cli.py builds help from it, settings takes the default
timeout from it, and the tests run their exit-code and help matrices over it, so a command
added here (cancel, usage, diff, cp, doctor) is covered everywhere at once.

Import-light on purpose: `bus --help` imports it (a NamedTuple, not a dataclass: the
dataclass and its module cost `--help` and every command about 1 ms).
"""

from __future__ import annotations

from typing import NamedTuple

from .token import SCOPE_BILLING, SCOPE_DELETE, SCOPE_READ, SCOPE_RUN


class CommandFacts(NamedTuple):
    scope: str  # what the token must grant (CONTRACT 3); "" for none (doctor)
    timeout: float  # default --timeout, seconds: a single call, or following a remote job
    example: str  # the help's example, after the program name ("bus containers")
    aliases: tuple[str, ...] = ()  # other names for the command (`ls` for `runs`)


# In the order `--help` lists them: the main job first, then following and stopping it,
# then the account, then diagnosis.
COMMANDS: dict[str, CommandFacts] = {
    "run": CommandFacts(SCOPE_RUN, 600.0, "run --profile codex -- sh -c 'printf OK'"),
    "logs": CommandFacts(SCOPE_READ, 600.0, "logs --follow --tail 20 run_0123abcd"),
    "wait": CommandFacts(SCOPE_READ, 600.0, "wait run_0123abcd"),
    "diff": CommandFacts(SCOPE_READ, 120.0, "diff run_0123abcd"),
    "cp": CommandFacts(SCOPE_READ, 600.0, "cp run_0123abcd:out/report.txt ."),
    "cancel": CommandFacts(SCOPE_RUN, 60.0, "cancel run_0123abcd"),
    "runs": CommandFacts(SCOPE_READ, 60.0, "runs --status running --limit 5", ("ls",)),
    "show": CommandFacts(SCOPE_READ, 30.0, "show run_0123abcd"),
    "delete": CommandFacts(SCOPE_DELETE, 60.0, "delete run_0123abcd run_4567efgh", ("rm",)),
    "usage": CommandFacts(SCOPE_BILLING, 30.0, "usage"),
    "status": CommandFacts(SCOPE_READ, 30.0, "status"),
    "doctor": CommandFacts("", 20.0, "doctor"),
}

ALIASES: dict[str, str] = {alias: name for name, facts in COMMANDS.items()
                           for alias in facts.aliases}
