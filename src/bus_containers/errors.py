"""One exception hierarchy for the client, and the one table of exit codes (CONTRACT 6).

The service raises these with structured fields (the run id, the origin, whether another
try may help); it never words advice for a command line. `render.py` turns an error into
the paragraph a user reads, with the "run this next" hints in the name the user typed, so a
Python caller of `ContainersClient` gets the same errors without any CLI advice.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """CONTRACT 6. `run` also exits with the remote command's own code (any int)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    NOT_FOUND = 3
    AUTH = 4
    BILLING = 5
    TIMEOUT = 124
    INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
    BROKEN_PIPE = 141  # 128 + SIGPIPE, as a tool killed by a closed pipe


class ContainersError(Exception):
    """Base class. `code` is a stable machine-readable word, shown in `--json` errors.

    Fields the retry policy reads (`service.should_retry`): `retryable` (another attempt
    may succeed), `retry_after` (the server's Retry-After, seconds), `answer_lost` (the
    request may have been carried out, only its answer lost). After the retries, `attempts`
    is how many were made and `gave_up_early` says the next retry would have passed the
    deadline. `retry_limit` caps the retries for this error below the client's own.
    `run_id` and `origin` say what the error is about, for the hints render makes.
    """

    exit_code = ExitCode.ERROR
    code = "error"
    label = "Error"  # how a human sees it start: "Error: <message>"
    retryable = False
    retry_limit: int | None = None

    def __init__(
        self,
        message: str,
        *,
        guidance: str | None = None,
        url: str | None = None,
        code: str | None = None,
        status: int | None = None,
        run_id: str | None = None,
        origin: str | None = None,
        retry_after: float | None = None,
        answer_lost: bool = False,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.guidance = guidance  # the server's own guidance (or a fact, never a command)
        self.url = url
        self.status = status
        self.run_id = run_id
        self.origin = origin
        self.retry_after = retry_after
        self.answer_lost = answer_lost
        self.attempts = 1
        self.gave_up_early = False
        self.timeout: float | None = None
        if retryable is not None:
            self.retryable = retryable
        if code:
            self.code = code

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        error = {"code": self.code, "message": self.message, "exit_code": int(self.exit_code)}
        if self.guidance:
            error["guidance"] = self.guidance
        if self.url:
            error["url"] = self.url
        if self.run_id:
            error["run_id"] = self.run_id
        return {"error": error}


# -- exit 2: usage ---------------------------------------------------------------------
class UsageError(ContainersError):
    exit_code = ExitCode.USAGE
    code = "usage"


class InvalidApiUrl(UsageError):
    code = "invalid_api_url"


class InvalidRunId(UsageError):
    code = "invalid_run_id"


class InvalidRequest(UsageError):
    """400/422 from the server: the request itself was rejected."""

    code = "invalid_request"


class WorkspaceError(UsageError):
    """A local path that cannot be sent or written (`run --workspace`, `cp`)."""

    code = "workspace"

    def __init__(self, message: str, *, path: str | None = None, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.path = path


# -- exit 3: not found -----------------------------------------------------------------
class RunNotFound(ContainersError):
    exit_code = ExitCode.NOT_FOUND
    code = "not_found"


# -- exit 4: authentication and permission ---------------------------------------------
class AuthError(ContainersError):
    """Every token problem; render adds how to get a (new) token. `token_source` says
    where the token came from (a path, `$BUS_AI_TOKEN`), when known."""

    exit_code = ExitCode.AUTH
    code = "unauthenticated"

    def __init__(self, message: str, *, scope: str | None = None,
                 token_source: str | None = None, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.scope = scope
        self.token_source = token_source


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
    exit_code = ExitCode.BILLING


class BillingRequired(BillingError):
    code = "billing_required"


class QuotaExhausted(BillingError):
    code = "quota_exhausted"


class TooLarge(BillingError):
    """Over a plan's limit (413 `too_large`, or found before uploading): `size` and
    `limit` in bytes when known, `biggest` the largest paths as (path, bytes)."""

    code = "too_large"

    def __init__(self, message: str, *, size: int | None = None, limit: int | None = None,
                 biggest: list[tuple[str, int]] | None = None, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.size = size
        self.limit = limit
        self.biggest = biggest or []


class RateLimited(BillingError):
    code = "rate_limited"
    retryable = True


# -- exit 1: server trouble ------------------------------------------------------------
class Conflict(ContainersError):
    code = "conflict"


class RunNotFinished(Conflict):
    """The run's workspace is asked for while it is still going (409 `run_not_finished`)."""

    code = "run_not_finished"


class UnsafeArchive(ContainersError):
    """A download holds a member that would land outside the destination: nothing of it
    is kept."""

    code = "unsafe_archive"


class ApiError(ContainersError):
    """A well-formed error answer the contract has no row for (405, 413, ...)."""

    code = "api_error"


class EndpointNotFound(ApiError):
    """404 on a path that is not a run: the endpoint is missing, so the origin is wrong."""

    code = "endpoint_not_found"


class ServerError(ContainersError):
    code = "server_error"
    retryable = True


class ConnectionFailed(ContainersError):
    """The server could not be reached, or the connection broke. `idle` marks a follow
    stream that was only quiet: reopened without counting as a failed attempt. `refused`:
    nothing listened at the address (a stopped server, not a network blip)."""

    code = "connection_failed"
    retryable = True

    def __init__(self, message: str, *, idle: bool = False, refused: bool = False,
                 **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.idle = idle
        self.refused = refused


class UnexpectedResponse(ContainersError):
    code = "unexpected_response"


# -- exit 124: out of time -------------------------------------------------------------
class CommandTimeout(ContainersError):
    """The CLI's own --timeout was reached. With `run_id`, the run keeps going."""

    exit_code = ExitCode.TIMEOUT
    code = "timeout"


# -- exit 130: Ctrl-C ------------------------------------------------------------------
class Interrupted(ContainersError):
    """Ctrl-C. With `run_id`, the run keeps going; `waiting` says we only stopped waiting
    (so the hint is to wait again, not to follow), `following` that we stopped printing
    its output (`logs`: the hint is to follow it again)."""

    exit_code = ExitCode.INTERRUPTED
    code = "interrupted"
    label = None

    def __init__(self, message: str, *, waiting: bool = False, following: bool = False,
                 **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.waiting = waiting
        self.following = following
