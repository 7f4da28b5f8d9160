"""Browser credentials derived from a verified access token: SSE tickets and the admin
session cookie, both HMAC-signed with ``settings.session_secret``, and both backed by shared
state in Postgres (``state/sessions.py``) so every web process and every restart agrees.

- ``POST /auth/sse-ticket``: a 60 s ticket for ``EventSource(url + "?ticket=...")``, which
  cannot send an Authorization header. Single use across every process: its nonce is
  inserted into ``auth_ticket_nonces`` on redemption (web/auth/guard.py).
- ``POST /auth/session``: exchanges a bearer token for an HttpOnly, SameSite=Strict cookie
  (Secure outside dev). The session lives server-side (``auth_sessions``) and ends at the
  token's ``exp`` (at most 8 h): a token expiring in seconds makes a session of seconds.
- ``POST /auth/logout``: revokes the server-side session and clears the cookie;
  ``spacemusic sessions revoke`` revokes by subject, id or all. An SSE stream opened with a
  session or ticket is closed when it expires or is revoked.

Tickets and cookies are signed with different derived keys, so neither passes for the other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from infra.logging import get_logger
from web.auth.permissions import PRINCIPAL, PublicRoutes, authenticated, creator_scope_for
from web.auth.tokens import AuthError, Principal, TokenVerifier, normalize_creator_id
from web.errors import json_error

log = get_logger(__name__)

TICKET_TTL_SECONDS = 60
SESSION_TTL_SECONDS = 8 * 3600
# The __Host- prefix makes browsers refuse the cookie unless Secure, Path=/ and host-only.
SECURE_COOKIE_NAME = "__Host-sm_session"
DEV_COOKIE_NAME = "sm_session"
MIN_SECRET_CHARS = 32
MAX_SIGNED_CHARS = 8192
# Tolerated clock difference between the web processes that issue and accept a credential.
CLOCK_SKEW_SECONDS = 5
_VERSION = "v1"


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Grant:
    """A verified ticket or session: who, until when, and its one-time nonce."""

    principal: Principal
    nonce: str
    expires_at: int


class SignedPrincipalCodec:
    """``v1.<payload>.<hmac>``: a principal, its expiry and a nonce, under a purpose-bound key."""

    def __init__(self, secret: str, purpose: str, ttl: int, *, kind: str) -> None:
        if len(secret) < MIN_SECRET_CHARS:
            raise ValueError(f"SESSION_SECRET must be at least {MIN_SECRET_CHARS} characters")
        self._key = hmac.new(secret.encode(), f"spacemusic/{purpose}/{_VERSION}".encode(), hashlib.sha256).digest()
        self.ttl = ttl
        self._kind = kind  # the error-code prefix: "ticket" or "session"

    def issue(
        self,
        principal: Principal,
        *,
        now: float | None = None,
        nonce: str | None = None,
        expires_at: int | None = None,
    ) -> str:
        issued = int(time.time() if now is None else now)
        payload = {
            "sub": principal.subject,
            "prm": sorted(principal.permissions),
            "cid": principal.creator_id,
            "iat": issued,
            "exp": min(issued + self.ttl, expires_at) if expires_at is not None else issued + self.ttl,
            "nce": nonce or secrets.token_urlsafe(16),
        }
        body = _b64encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        signing_input = f"{_VERSION}.{body}"
        return f"{signing_input}.{self._sign(signing_input)}"

    def load(self, value: str, *, now: float | None = None) -> Grant:
        invalid = AuthError(f"invalid_{self._kind}", f"the {self._kind} is invalid")
        if not isinstance(value, str) or not value or len(value) > MAX_SIGNED_CHARS or not value.isascii():
            # Non-ASCII can never be ours (and would make the HMAC comparison raise: a 500).
            raise invalid
        parts = value.split(".")
        if len(parts) != 3 or parts[0] != _VERSION:
            raise invalid
        signing_input = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._sign(signing_input), parts[2]):
            raise invalid
        try:
            payload = json.loads(_b64decode(parts[1]))
            grant = self._grant(payload)
        except (ValueError, TypeError, KeyError, binascii.Error) as exc:
            # Signed by us yet unreadable: a bug or a leaked key; refuse either way.
            raise invalid from exc
        current = time.time() if now is None else now
        if grant.expires_at <= current:
            raise AuthError(f"{self._kind}_expired", f"the {self._kind} has expired")
        if payload["iat"] > current + CLOCK_SKEW_SECONDS:
            raise invalid
        return grant

    def _sign(self, signing_input: str) -> str:
        return _b64encode(hmac.new(self._key, signing_input.encode("ascii"), hashlib.sha256).digest())

    @staticmethod
    def _grant(payload: Any) -> Grant:
        subject, permissions, creator = payload["sub"], payload["prm"], payload["cid"]
        nonce, expires, issued = payload["nce"], payload["exp"], payload["iat"]
        if not isinstance(subject, str) or not subject or not isinstance(nonce, str) or not nonce:
            raise ValueError("bad subject or nonce")
        if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
            raise ValueError("bad permissions")
        if not isinstance(expires, int) or not isinstance(issued, int):
            raise ValueError("bad times")
        principal = Principal(
            subject=subject,
            permissions=frozenset(permissions),
            creator_id=None if creator is None else normalize_creator_id(creator),
            raw_claims={"sub": subject, "iat": issued, "exp": expires},
        )
        return Grant(principal=principal, nonce=nonce, expires_at=expires)


class NonceStore:
    """Nonces already redeemed in this process, kept until their credential expires (a cheap
    first filter; the shared store decides across processes)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._seen: dict[str, float] = {}
        self._clock = clock

    def consume(self, nonce: str, expires_at: float) -> bool:
        """True the first time a nonce is seen; False on every replay."""
        now = self._clock()
        if len(self._seen) > 1024:
            self._seen = {n: exp for n, exp in self._seen.items() if exp > now}
        if nonce in self._seen:
            return False
        self._seen[nonce] = expires_at
        return True


class AuthStore(Protocol):
    """Shared security state: ``state.sessions.PostgresAuthStore`` in every real process."""

    async def create_session(
        self,
        session_id: str,
        subject: str,
        permissions: Iterable[str],
        creator_id: str | None,
        expires_at: float,
        correlation_id: str | None = None,
    ) -> None: ...

    async def session_expiry(self, session_id: str) -> float | None: ...

    async def revoke_session(self, session_id: str, reason: str = "logout") -> bool: ...

    async def consume_nonce(self, nonce: str, expires_at: float) -> bool: ...

    async def acquire(self, bucket: str, key: str, per_minute: int, burst: int | None = None) -> float | None: ...


class MemoryAuthStore:
    """The same interface in one process's memory: for tests and tools without a database.
    Never what ``setup_auth`` picks by itself."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.sessions: dict[str, tuple[float, bool]] = {}
        self._nonces = NonceStore(clock)
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}

    async def create_session(
        self,
        session_id: str,
        subject: str,
        permissions: Iterable[str],
        creator_id: str | None,
        expires_at: float,
        correlation_id: str | None = None,
    ) -> None:
        self.sessions[session_id] = (expires_at, False)

    async def session_expiry(self, session_id: str) -> float | None:
        entry = self.sessions.get(session_id)
        if entry is None or entry[1] or entry[0] <= self._clock():
            return None
        return entry[0]

    async def revoke_session(self, session_id: str, reason: str = "logout") -> bool:
        entry = self.sessions.get(session_id)
        if entry is None or entry[1]:
            return False
        self.sessions[session_id] = (entry[0], True)
        return True

    async def consume_nonce(self, nonce: str, expires_at: float) -> bool:
        return self._nonces.consume(nonce, expires_at)

    async def acquire(self, bucket: str, key: str, per_minute: int, burst: int | None = None) -> float | None:
        capacity, rate, now = float(burst if burst is not None else per_minute), per_minute / 60.0, self._clock()
        tokens, updated = self._buckets.get((bucket, key), (capacity, now))
        tokens = min(capacity, tokens + (now - updated) * rate)
        if tokens < 1.0:
            self._buckets[(bucket, key)] = (tokens, now)
            return (1.0 - tokens) / rate
        self._buckets[(bucket, key)] = (tokens - 1.0, now)
        return None


@dataclass
class AuthState:
    """Everything the auth middleware and the /auth handlers share, in ``app[AUTH]``."""

    # None until the app's cleanup context has built the HTTP client for the JWKS.
    verifier: TokenVerifier | None
    tickets: SignedPrincipalCodec
    sessions: SignedPrincipalCodec
    public: PublicRoutes
    cookie_secure: bool
    nonces: NonceStore = field(default_factory=NonceStore)
    # None until the cleanup context has connected to Postgres (or a test passed one).
    store: AuthStore | None = None
    # How often an open SSE stream re-checks that its session is still active.
    revocation_check_seconds: float = 5.0

    @property
    def cookie_name(self) -> str:
        return SECURE_COOKIE_NAME if self.cookie_secure else DEV_COOKIE_NAME

    def redeem_ticket(self, value: str) -> Principal:
        grant = self.tickets.load(value)
        if not self.nonces.consume(grant.nonce, grant.expires_at):
            raise AuthError("ticket_reused", "the ticket has already been used")
        return grant.principal

    def load_session(self, value: str) -> Principal:
        return self.sessions.load(value).principal

    def require_store(self) -> AuthStore:
        if self.store is None:
            raise AuthError("auth_unavailable", "authentication is not ready yet", status=503)
        return self.store


AUTH = web.AppKey("auth", AuthState)


async def shared_rate_limit(state: AuthState, limit: Any, caller: str) -> int | None:
    """A route's rate limit counted in the shared store (Postgres: every web process and
    restart share the bucket); the in-process limiter only while the store is not up yet.
    None when allowed, else the whole seconds to wait (``Retry-After``)."""
    if state.store is None:
        return await limit.acquire(caller)
    try:
        wait = await state.store.acquire(limit.bucket, caller, limit.per_minute)
    except Exception as exc:  # the store is down: this process's limiter still holds the line
        log.warning("rate_limit_store_unavailable", error=type(exc).__name__, bucket=limit.bucket)
        return await limit.acquire(caller)
    return None if wait is None else max(1, math.ceil(wait))


def set_session_cookie(response: web.StreamResponse, state: AuthState, value: str, max_age: int) -> None:
    response.set_cookie(
        state.cookie_name,
        value,
        max_age=max(0, max_age),
        path="/",
        httponly=True,
        secure=state.cookie_secure,
        samesite="Strict",
    )


async def open_session(state: AuthState, principal: Principal, *, correlation_id: str | None = None) -> tuple[str, int]:
    """A server-side session for ``principal`` ending at its token's ``exp`` (at most 8 h):
    the signed cookie value and its lifetime in seconds."""
    now = int(time.time())
    expires_at = now + SESSION_TTL_SECONDS
    token_exp = principal.raw_claims.get("exp")
    if isinstance(token_exp, int | float) and not isinstance(token_exp, bool):
        expires_at = min(expires_at, int(token_exp))
    if expires_at <= now:
        raise AuthError("token_expired", "the token has expired")
    session_id = secrets.token_urlsafe(32)
    try:
        await state.require_store().create_session(
            session_id, principal.subject, principal.permissions, principal.creator_id, expires_at, correlation_id
        )
    except AuthError:
        raise
    except Exception as exc:
        log.warning("session_store_unavailable", error=type(exc).__name__)
        raise AuthError("auth_unavailable", "sessions are unavailable; retry later", status=503) from exc
    return state.sessions.issue(principal, now=now, nonce=session_id, expires_at=expires_at), expires_at - now


def clear_session_cookie(response: web.StreamResponse, state: AuthState) -> None:
    response.del_cookie(state.cookie_name, path="/", secure=state.cookie_secure, httponly=True, samesite="Strict")


def _no_store(response: web.Response) -> web.Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@authenticated()
async def issue_sse_ticket(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    ticket = request.config_dict[AUTH].tickets.issue(principal)
    return _no_store(
        web.json_response(
            {
                "ticket": ticket,
                "expires_in": TICKET_TTL_SECONDS,
                "creator_scope": creator_scope_for(principal),
            }
        )
    )


@authenticated(cookie=False)
async def create_session(request: web.Request) -> web.Response:
    principal = request[PRINCIPAL]
    state = request.config_dict[AUTH]
    try:
        value, lifetime = await open_session(state, principal, correlation_id=request.headers.get("X-Correlation-ID"))
    except AuthError as exc:
        return _no_store(json_error(exc.status, exc.code, exc.message))
    response = _no_store(
        web.json_response(
            {
                "subject": principal.subject,
                "expires_in": lifetime,
                "permissions": sorted(principal.permissions),
            }
        )
    )
    set_session_cookie(response, state, value, lifetime)
    return response


async def logout(request: web.Request) -> web.Response:
    """Revokes the server-side session (if the cookie names a valid one) and clears it."""
    state = request.config_dict[AUTH]
    cookie = request.cookies.get(state.cookie_name)
    if cookie is not None and state.store is not None:
        try:
            grant = state.sessions.load(cookie)
        except AuthError:
            pass  # forged or expired: nothing to revoke
        else:
            if await state.store.revoke_session(grant.nonce, "logout"):
                log.info("session_revoked", reason="logout", subject=grant.principal.subject)
    response = web.Response(status=204)
    clear_session_cookie(response, state)
    return response


def add_session_routes(app: web.Application) -> None:
    app.router.add_post("/auth/sse-ticket", issue_sse_ticket)
    app.router.add_post("/auth/session", create_session)
    app.router.add_post("/auth/logout", logout)
