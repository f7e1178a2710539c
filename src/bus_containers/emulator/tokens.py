"""HS256 tokens signed with a per-state-dir secret, and the state-dir files behind them."""

from __future__ import annotations

import os
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import jwt

from .errors import ApiError

ISSUER = "bus-containers-emulator"
ALL_SCOPES = "container:read container:run container:delete billing:read"
TOKEN_COMMAND = f'bus auth token --scope "{ALL_SCOPES}"'
GUIDANCE = f"Get a new token with: {TOKEN_COMMAND}"
MAX_TTL = 30 * 24 * 3600


def ensure_state_dir(state_dir: Path) -> Path:
    """The state dir, created 0700; an existing one of ours open to others is closed to
    0700 (it holds the token secret; runs execute as another user when we are root)."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    _private(state_dir, 0o700)
    return state_dir


def _private(path: Path, mode: int) -> None:
    st = path.stat()
    if st.st_uid == os.geteuid() and st.st_mode & 0o077:
        os.chmod(path, mode)


def read_or_create(path: Path, make: str) -> str:
    """The content of `path`, creating it with `make` (mode 0600) if absent.

    Written to a temp file then hard-linked into place, so a concurrent `token` command and
    `serve` never see a half-written secret and the first writer wins.
    """
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(make + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text().strip()


def default_account(state_dir: Path) -> str:
    return read_or_create(ensure_state_dir(state_dir) / "default-account", str(uuid.uuid4()))


@dataclass(frozen=True)
class Claims:
    sub: str
    scopes: frozenset[str]


class TokenAuthority:
    def __init__(self, state_dir: Path):
        ensure_state_dir(state_dir)
        self._secret = read_or_create(state_dir / "jwt-secret", secrets.token_hex(32))
        _private(state_dir / "jwt-secret", 0o600)

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
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise ApiError(401, "token_expired", "the token has expired",
                           guidance=GUIDANCE) from None
        except jwt.ImmatureSignatureError:
            raise _unauthenticated("the token is not valid yet") from None
        except jwt.InvalidSignatureError:
            raise _unauthenticated("the token's signature is not valid") from None
        except jwt.MissingRequiredClaimError as e:
            raise _unauthenticated(f"the token has no {e.claim!r} claim") from None
        except Exception:  # PyJWT raises several types for malformed input; all mean 401.
            raise _unauthenticated("the token is not a valid token") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise _unauthenticated("the token has no usable 'sub' claim")
        return Claims(sub, _scopes(claims))


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
