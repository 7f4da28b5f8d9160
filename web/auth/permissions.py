"""What a principal may do: permission names, per-route requirements, creator scoping,
the public allowlist and per-subject rate limits.

Deny by default: a route is reachable only if its handler declares a requirement with
:func:`requires` / :func:`authenticated`, or its path is on the public allowlist. An
undeclared route fails the app's start-up and, should one slip through, answers 500.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from aiohttp import web

from web.auth.tokens import Principal
from web.errors import json_error

# Permission names: Auth0 API permissions, copied into the token's ``permissions`` claim.
DEALS_READ = "deals:read"
# Read every creator's deals; without it a principal with a creator claim only sees its own.
DEALS_READ_ALL = "deals:read:all"
OFFERS_WRITE = "offers:write"
PAYOUTS_WRITE = "payouts:write"
CREATORS_READ = "creators:read"
CREATORS_WRITE = "creators:write"
# Satisfies every requirement and is never creator-scoped.
ADMIN = "admin"

ALL_PERMISSIONS = frozenset(
    {DEALS_READ, DEALS_READ_ALL, OFFERS_WRITE, PAYOUTS_WRITE, CREATORS_READ, CREATORS_WRITE, ADMIN}
)

PRINCIPAL = web.RequestKey("principal", Principal)
CREATOR_SCOPE = web.RequestKey("creator_scope", str)

Credential = Literal["bearer", "cookie", "ticket"]
REQUIREMENT_ATTR = "__spacemusic_requirement__"

# Canonical route paths (as registered, e.g. "/offers/{offer_id}") open without a token.
# "/x/*" means /x and everything under it. The admin shell is static HTML that itself calls
# the API; /auth/logout only clears a cookie.
PUBLIC_ROUTES: tuple[str, ...] = (
    "/healthz",
    "/readyz",
    "/metrics",
    "/auth/logout",
    "/admin",
    "/admin/",
    "/admin/login",
    "/admin/static/*",
)
DEV_PUBLIC_ROUTES: tuple[str, ...] = ("/dev-idp/*",)

H = TypeVar("H", bound=Callable[..., Any])


@dataclass(frozen=True)
class Requirement:
    permissions: frozenset[str]
    credentials: frozenset[Credential]

    def satisfied_by(self, principal: Principal) -> bool:
        return ADMIN in principal.permissions or self.permissions <= principal.permissions


def _declare(handler: H, requirement: Requirement) -> H:
    setattr(handler, REQUIREMENT_ATTR, requirement)
    return handler


def requires(*permissions: str, ticket: bool = False) -> Callable[[H], H]:
    """Declares the permissions (all of them) a route needs.

    ``ticket=True`` additionally accepts a ``?ticket=`` from ``POST /auth/sse-ticket``: only
    for EventSource routes, which cannot send an Authorization header.
    """
    if not permissions or not all(isinstance(p, str) and p for p in permissions):
        raise ValueError("requires() needs at least one permission; use authenticated() for none")
    credentials: set[Credential] = {"bearer", "cookie"}
    if ticket:
        credentials.add("ticket")
    requirement = Requirement(frozenset(permissions), frozenset(credentials))
    return lambda handler: _declare(handler, requirement)


def authenticated(*, cookie: bool = True) -> Callable[[H], H]:
    """Any valid principal, no particular permission (the /auth endpoints).

    ``cookie=False`` insists on a bearer token: exchanging a session cookie for a fresh
    session would let a stolen cookie live forever.
    """
    credentials: set[Credential] = {"bearer", "cookie"} if cookie else {"bearer"}
    requirement = Requirement(frozenset(), frozenset(credentials))
    return lambda handler: _declare(handler, requirement)


def requirement_of(handler: Any) -> Requirement | None:
    requirement = getattr(handler, REQUIREMENT_ATTR, None)
    return requirement if isinstance(requirement, Requirement) else None


class PublicRoutes:
    def __init__(self, patterns: Iterable[str]) -> None:
        self._exact = frozenset(p for p in patterns if not p.endswith("/*"))
        self._prefixes = tuple(p[:-2] for p in patterns if p.endswith("/*"))

    def __contains__(self, canonical: object) -> bool:
        if not isinstance(canonical, str):
            return False
        if canonical in self._exact:
            return True
        return any(canonical == base or canonical.startswith(base + "/") for base in self._prefixes)


def creator_scope_for(principal: Principal) -> str | None:
    """The creator whose deals alone this principal may see; None means every deal."""
    if principal.creator_id is None:
        return None
    if ADMIN in principal.permissions or DEALS_READ_ALL in principal.permissions:
        return None
    return principal.creator_id


def visible_to(request: web.Request, creator_id: str | None) -> bool:
    """Whether a deal of ``creator_id`` may be shown; callers answer 404 when it may not, so
    a creator cannot probe which offer ids exist."""
    scope = request.get(CREATOR_SCOPE)
    return scope is None or scope == creator_id


# --- rate limits --------------------------------------------------------------------------


class TokenBucketLimiter:
    """Per-key token buckets, in this process only: N web processes allow N times the rate."""

    MAX_KEYS = 10_000

    def __init__(self, per_minute: int, burst: int | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be positive")
        self.per_minute = per_minute
        self.capacity = float(burst if burst is not None else per_minute)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def acquire(self, key: str) -> float | None:
        """Takes one token: None when allowed, else the seconds until one is available."""
        now = self._clock()
        tokens, updated = self._buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - updated) * self._rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self._rate
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > self.MAX_KEYS:
            self._forget_idle(now)
        return None

    def _forget_idle(self, now: float) -> None:
        # A bucket that has refilled completely is indistinguishable from a new one.
        full_after = self.capacity / self._rate
        for key, (_, updated) in list(self._buckets.items()):
            if now - updated >= full_after:
                del self._buckets[key]


_LIMITERS: dict[str, TokenBucketLimiter] = {}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def limiter_for(bucket: str, per_minute: int, burst: int | None = None) -> TokenBucketLimiter:
    """One limiter per bucket name in this process, shared by every handler naming it."""
    limiter = _LIMITERS.get(bucket)
    if limiter is None:
        limiter = _LIMITERS[bucket] = TokenBucketLimiter(per_minute, burst)
    elif limiter.per_minute != per_minute:
        raise ValueError(f"rate limit bucket {bucket!r} is already {limiter.per_minute}/min")
    return limiter


def rate_limited(bucket: str, per_minute: int, burst: int | None = None) -> Callable[[Handler], Handler]:
    """Limits a handler per principal subject; over the limit it answers 429 + Retry-After.

    Keeps the handler's declared requirement, so it stacks with :func:`requires` either way.
    """
    limiter = limiter_for(bucket, per_minute, burst)

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def limited(request: web.Request) -> web.StreamResponse:
            principal = request.get(PRINCIPAL)
            key = f"sub:{principal.subject}" if principal is not None else f"ip:{request.remote}"
            retry_after = limiter.acquire(key)
            if retry_after is not None:
                response = json_error(429, "rate_limited", f"too many {bucket} requests; retry later")
                response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
                return response
            return await handler(request)

        return limited

    return decorate
