"""Reading the bearer token's claims, WITHOUT verifying it (CONTRACT 3).

Only the server can verify the signature; the client reads the claims to fail early with
a precise message (expired, missing scope) instead of a bare 401/403 from the server.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from .errors import MissingScope, NotAJwt, TokenExpired

# A token that expired less than this long ago is still sent: clocks drift.
EXPIRY_LEEWAY_SECONDS = 30

# The scopes (CONTRACT 3, 9), defined here and nowhere else in the client.
SCOPE_READ = "container:read"
SCOPE_RUN = "container:run"
SCOPE_DELETE = "container:delete"
SCOPE_BILLING = "billing:read"
ALL_SCOPES = " ".join((SCOPE_READ, SCOPE_RUN, SCOPE_DELETE, SCOPE_BILLING))


def read_claims(token: str) -> dict:
    """The token's payload as a dict, or NotAJwt. The token never appears in the message."""
    import jwt  # imported here: `bus --help` must not pay for it

    if token.count(".") != 2:
        raise NotAJwt("the token is not a JWT (expected three dot-separated parts)")
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except Exception:  # PyJWT raises several types; all mean "not a JWT"
        # Not the exception's class name (DecodeError): the user needs the fact, not ours.
        raise NotAJwt("the token is not a JWT (its parts are not valid base64url JSON)"
                      ) from None
    if not isinstance(claims, dict):
        raise NotAJwt("the token is not a JWT (its payload is not a JSON object)")
    return claims


def token_scopes(claims: dict) -> set[str] | None:
    """The granted scopes, or None when the token carries neither `scope` nor `scp`."""
    if isinstance(claims.get("scope"), str):
        # RFC 6749: scopes are separated by spaces, and nothing else (the server agrees).
        return {word for word in claims["scope"].split(" ") if word}
    scp = claims.get("scp")
    if isinstance(scp, list):
        return {s for s in scp if isinstance(s, str)}
    if isinstance(scp, str):
        return {word for word in scp.split(" ") if word}
    return None


def check_claims(claims: dict, scope: str | None, now: float | None = None) -> None:
    """Raise TokenExpired or MissingScope when the claims already say the server will refuse."""
    now = time.time() if now is None else now
    exp = claims.get("exp")
    if isinstance(exp, (int, float)) and not isinstance(exp, bool):
        if exp + EXPIRY_LEEWAY_SECONDS < now:
            try:
                when = datetime.fromtimestamp(exp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
            except (OverflowError, OSError, ValueError):
                when = "long ago"
            raise TokenExpired(f"the token expired at {when}")
    if not scope:  # None or "": the call needs no scope of its own
        return
    granted = token_scopes(claims)
    if granted is not None and scope not in granted:
        raise MissingScope(f"the token lacks the scope '{scope}' this call needs", scope=scope)
