"""Browser credentials derived from a verified access token: SSE tickets and the admin
session cookie, both HMAC-signed with ``settings.session_secret`` so any web process
accepts them without shared storage.

- ``POST /auth/sse-ticket``: a 60 s ticket for ``EventSource(url + "?ticket=...")``, which
  cannot send an Authorization header. Single use is enforced per process only (an
  in-memory nonce set); across processes a ticket could be replayed within its 60 s.
- ``POST /auth/session``: exchanges a bearer token for an HttpOnly, SameSite=Strict cookie
  (Secure outside dev) valid 8 h. Stateless: logout clears the browser's copy, but a copied
  cookie stays valid until it expires (rotate SESSION_SECRET to revoke every session).
- ``POST /auth/logout``: clears the cookie.

Tickets and cookies are signed with different derived keys, so neither passes for the other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from web.auth.permissions import PRINCIPAL, PublicRoutes, authenticated, creator_scope_for
from web.auth.tokens import AuthError, Principal, TokenVerifier, normalize_creator_id

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

    def issue(self, principal: Principal, *, now: float | None = None) -> str:
        issued = int(time.time() if now is None else now)
        payload = {
            "sub": principal.subject,
            "prm": sorted(principal.permissions),
            "cid": principal.creator_id,
            "iat": issued,
            "exp": issued + self.ttl,
            "nce": secrets.token_urlsafe(16),
        }
        body = _b64encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        signing_input = f"{_VERSION}.{body}"
        return f"{signing_input}.{self._sign(signing_input)}"

    def load(self, value: str, *, now: float | None = None) -> Grant:
        invalid = AuthError(f"invalid_{self._kind}", f"the {self._kind} is invalid")
        if not isinstance(value, str) or not value or len(value) > MAX_SIGNED_CHARS:
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
    """Nonces already redeemed in this process, kept until their credential expires."""

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


AUTH = web.AppKey("auth", AuthState)


def set_session_cookie(response: web.StreamResponse, state: AuthState, principal: Principal) -> None:
    response.set_cookie(
        state.cookie_name,
        state.sessions.issue(principal),
        max_age=state.sessions.ttl,
        path="/",
        httponly=True,
        secure=state.cookie_secure,
        samesite="Strict",
    )


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
    response = _no_store(
        web.json_response(
            {
                "subject": principal.subject,
                "expires_in": SESSION_TTL_SECONDS,
                "permissions": sorted(principal.permissions),
            }
        )
    )
    set_session_cookie(response, request.config_dict[AUTH], principal)
    return response


async def logout(request: web.Request) -> web.Response:
    response = web.Response(status=204)
    clear_session_cookie(response, request.config_dict[AUTH])
    return response


def add_session_routes(app: web.Application) -> None:
    app.router.add_post("/auth/sse-ticket", issue_sse_ticket)
    app.router.add_post("/auth/session", create_session)
    app.router.add_post("/auth/logout", logout)
