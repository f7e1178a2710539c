"""HS256 tokens signed with a per-state-dir secret, and the state-dir files behind them."""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt

from .errors import ApiError
from .statedir import ensure_state_dir, read_or_create, read_secret

ISSUER = "bus-containers-emulator"
ALL_SCOPES = "container:read container:run container:delete billing:read"
TOKEN_COMMAND = f'bus auth token --scope "{ALL_SCOPES}"'
GUIDANCE = f"Get a new token with: {TOKEN_COMMAND}"
DEFAULT_MAX_TTL = 24 * 3600


def unknown_scopes(scope: str) -> list[str]:
    """The words of `scope` that are no scope of this API (a token carrying them would
    grant nothing more, but a typo would go unnoticed)."""
    known = ALL_SCOPES.split()
    return [word for word in scope.split() if word not in known]


def default_account(state_dir: Path) -> str:
    return read_or_create(ensure_state_dir(state_dir) / "default-account", str(uuid.uuid4()))


@dataclass(frozen=True)
class Claims:
    sub: str
    scopes: frozenset[str]


class TokenAuthority:
    """Issues and verifies this emulator's tokens. Raises StateError (statedir) when the
    state dir or its `jwt-secret` cannot be trusted."""

    def __init__(self, state_dir: Path, max_ttl: int = DEFAULT_MAX_TTL,
                 generate: bool = True):
        """`generate=False` (the `token` subcommand): a missing secret is a StateError, not
        a new secret no running emulator knows."""
        ensure_state_dir(state_dir)
        self._secret = read_secret(state_dir / "jwt-secret", generate=generate)
        self.max_ttl = max_ttl

    @classmethod
    def with_secret(cls, secret: str, max_ttl: int = DEFAULT_MAX_TTL) -> TokenAuthority:
        """One for a secret read elsewhere (the launcher, which may not own the state dir)."""
        authority = cls.__new__(cls)
        authority._secret = secret
        authority.max_ttl = max_ttl
        return authority

    def issue(self, sub: str, scope: str = ALL_SCOPES, ttl: int = 3600) -> str:
        now = int(time.time())
        claims = {"sub": sub, "scope": scope, "iat": now, "nbf": now, "exp": now + ttl,
                  "iss": ISSUER}
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def verify(self, token: str) -> Claims:
        """The token's claims, or ApiError 401. Only HS256 with our secret is accepted."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=["HS256"],
                issuer=ISSUER,
                options={"require": ["exp", "sub", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise ApiError(401, "token_expired", "the token has expired",
                           guidance=GUIDANCE) from None
        except jwt.ImmatureSignatureError:
            raise _unauthenticated("the token is not valid yet") from None
        except jwt.InvalidSignatureError:
            raise _unauthenticated("the token's signature is not valid") from None
        except jwt.InvalidIssuerError:
            raise _unauthenticated("the token was not issued by this emulator") from None
        except jwt.MissingRequiredClaimError as e:
            raise _unauthenticated(f"the token has no {e.claim!r} claim") from None
        except Exception:  # PyJWT raises several types for malformed input; all mean 401.
            raise _unauthenticated("the token is not a valid token") from None
        self._check_lifetime(claims)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise _unauthenticated("the token has no usable 'sub' claim")
        return Claims(sub, _scopes(claims))

    def _check_lifetime(self, claims: dict) -> None:
        # A stolen token is worth its lifetime: refuse any that lives (or has left to
        # live) longer than the maximum, whatever its iat claims.
        # JSON numbers only: PyJWT also takes numeric strings ("9999999999"), which no
        # issuer of ours writes.
        for name in ("exp", "iat", "nbf"):
            value = claims.get(name)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, float))):
                raise _unauthenticated(f"the token's {name} is not a number")
        exp = float(claims["exp"])
        iat = float(claims["iat"]) if claims.get("iat") is not None else None
        lifetime = max(exp - iat if iat is not None else 0.0, exp - time.time())
        if not lifetime <= self.max_ttl:  # also refuses NaN
            raise _unauthenticated(f"the token lives longer than this emulator's maximum "
                                   f"of {self.max_ttl} s")


# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), separated by SP.
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def _scopes(claims: dict) -> frozenset[str]:
    """`scope` (space-separated, RFC 8693) or `scp` (a list). Parsed strictly: only ASCII
    spaces separate, and a word with other characters (tabs, NBSP or other Unicode
    spaces, lookalike letters) grants nothing, rather than being split or normalised into
    a scope the token was not meant to carry."""
    scope, scp = claims.get("scope"), claims.get("scp")
    words: list[str] = []
    if isinstance(scope, str):
        words += scope.split(" ")
    if isinstance(scp, list):
        words += [w for w in scp if isinstance(w, str)]
    return frozenset(w for w in words if _SCOPE_TOKEN.fullmatch(w))


def _unauthenticated(message: str) -> ApiError:
    return ApiError(401, "unauthenticated", message, guidance=GUIDANCE)
