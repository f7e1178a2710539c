"""One exception hierarchy for the client: each error knows its exit code and its guidance.

The service raises these; the CLI maps them to exit codes (CONTRACT 6) without knowing
which HTTP status produced them, so a Python caller of `ContainersClient` gets the same
errors the command line shows.
"""

from __future__ import annotations

ALL_SCOPES = "container:read container:run container:delete billing:read"
TOKEN_COMMAND = f'bus auth token --scope "{ALL_SCOPES}"'


class ContainersError(Exception):
    """Base class. `code` is a stable machine-readable word, shown in `--json` errors."""

    exit_code = 1
    code = "error"
    label = "Error"  # how a human sees it start: "Error: <message>"

    def __init__(
        self,
        message: str,
        *,
        guidance: str | None = None,
        url: str | None = None,
        code: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.guidance = guidance
        self.url = url
        self.status = status
        if code:
            self.code = code

    def __str__(self) -> str:  # `message` may be completed after raising (retries)
        return self.message

    def to_dict(self) -> dict:
        error = {"code": self.code, "message": self.message, "exit_code": self.exit_code}
        if self.guidance:
            error["guidance"] = self.guidance
        if self.url:
            error["url"] = self.url
        return {"error": error}


# -- exit 2: usage ---------------------------------------------------------------------
class UsageError(ContainersError):
    exit_code = 2
    code = "usage"


class InvalidApiUrl(UsageError):
    code = "invalid_api_url"


class InvalidRunId(UsageError):
    code = "invalid_run_id"


class InvalidRequest(UsageError):
    """400/422 from the server: the request itself was rejected."""

    code = "invalid_request"


# -- exit 3: not found -----------------------------------------------------------------
class RunNotFound(ContainersError):
    exit_code = 3
    code = "not_found"


# -- exit 4: authentication and permission ---------------------------------------------
class AuthError(ContainersError):
    exit_code = 4
    code = "unauthenticated"


class TokenMissing(AuthError):
    code = "token_missing"


class TokenFileError(AuthError):
    code = "token_file"


class NotAJwt(AuthError):
    code = "not_a_jwt"


class TokenExpired(AuthError):
    code = "token_expired"


class MissingScope(AuthError):
    code = "insufficient_scope"


class Forbidden(AuthError):
    code = "forbidden"


# -- exit 5: billing, quota, rate limits -----------------------------------------------
class BillingError(ContainersError):
    exit_code = 5


class BillingRequired(BillingError):
    code = "billing_required"


class QuotaExhausted(BillingError):
    code = "quota_exhausted"


class RateLimited(BillingError):
    code = "rate_limited"


# -- exit 1: server trouble ------------------------------------------------------------
class Conflict(ContainersError):
    code = "conflict"


class ApiError(ContainersError):
    """A well-formed error answer the contract has no row for (405, 413, ...)."""

    code = "api_error"


class ServerError(ContainersError):
    code = "server_error"


class ConnectionFailed(ContainersError):
    code = "connection_failed"


class UnexpectedResponse(ContainersError):
    code = "unexpected_response"


# -- exit 124: out of time -------------------------------------------------------------
class CommandTimeout(ContainersError):
    """The CLI's own --timeout was reached (the run, if any, keeps going on the server)."""

    exit_code = 124
    code = "timeout"

    def __init__(self, message: str, *, run_id: str | None = None, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.run_id = run_id


# -- exit 130: Ctrl-C ------------------------------------------------------------------
class Interrupted(ContainersError):
    """Ctrl-C. When a run exists, it keeps going: the message names it."""

    exit_code = 130
    code = "interrupted"
    label = None

    @classmethod
    def detached(cls, run_id: str | None) -> Interrupted:
        if run_id is None:
            return cls("interrupted before the server answered: a run may have been created",
                       guidance="See your runs with: bus containers runs --status running")
        return cls(f"Detached from run {run_id}; it keeps running.",
                   guidance=f"Follow it:  bus containers logs --follow {run_id}\n"
                            f"Delete it:  bus containers delete {run_id}")
