"""What a principal may do: permission names, per-route requirements, creator scoping,
the public allowlist and per-caller rate limits.

Deny by default: a route is reachable only if its handler declares a requirement with
:func:`requires` / :func:`authenticated`, or its path is on the public allowlist. An
undeclared route fails the app's start-up and, should one slip through, answers 500.
The API's own routes are all declared in one table, ``web/routes.py``, which applies these
declarations; the decorators remain for the routes other modules register (/auth, admin).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from aiohttp import web
from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage, Storage
from limits.strategies import MovingWindowRateLimiter

from models import rules
from web.auth.tokens import Principal

# Permission names: Auth0 API permissions, copied into the token's ``permissions`` claim.
DEALS_READ = "deals:read"
# Read every creator's deals; without it a principal with a creator claim only sees its own.
DEALS_READ_ALL = "deals:read:all"
OFFERS_WRITE = "offers:write"
PAYOUTS_WRITE = "payouts:write"
CREATORS_READ = "creators:read"
CREATORS_WRITE = "creators:write"
# Prometheus scrapes of GET /metrics (business volume is not public).
METRICS_READ = "metrics:read"
# Satisfies every requirement and is never creator-scoped.
ADMIN = "admin"

ALL_PERMISSIONS = frozenset(
    {DEALS_READ, DEALS_READ_ALL, OFFERS_WRITE, PAYOUTS_WRITE, CREATORS_READ, CREATORS_WRITE, METRICS_READ, ADMIN}
)

PRINCIPAL = web.RequestKey("principal", Principal)
CREATOR_SCOPE = web.RequestKey("creator_scope", str)

Credential = Literal["bearer", "cookie", "ticket"]
REQUIREMENT_ATTR = "__spacemusic_requirement__"
RATE_LIMIT_ATTR = "__spacemusic_rate_limit__"

# Canonical route paths (as registered, e.g. "/offers/{offer_id}") open without a token.
# "/x/*" means /x and everything under it. The admin shell is static HTML that itself calls
# the API; /auth/logout only clears a cookie.
PUBLIC_ROUTES: tuple[str, ...] = (
    "/healthz",
    "/readyz",
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
    a creator cannot probe which offer ids exist (the rule: ``models.rules.visible_to``)."""
    return rules.visible_to(request.get(CREATOR_SCOPE), creator_id)


# --- rate limits --------------------------------------------------------------------------
#
# Moving windows from the ``limits`` package, keyed by bucket and caller. The storage is
# chosen in one place, :func:`rate_limit_storage`: in-process memory today, so N web
# processes allow N times the rate; a shared storage (Redis, ...) makes the limit global.


@dataclass(frozen=True)
class RateLimit:
    """``per_minute`` requests per caller in any 60 s; routes naming one bucket share it."""

    bucket: str
    per_minute: int

    def __post_init__(self) -> None:
        if self.per_minute <= 0:
            raise ValueError("per_minute must be positive")

    async def acquire(self, caller: str) -> int | None:
        """Counts one request: None when allowed, else the seconds until one is. (Async so a
        shared storage can be awaited here; the in-memory one answers at once.)"""
        limiter = rate_limiter()
        item = RateLimitItemPerMinute(self.per_minute)
        if limiter.hit(item, self.bucket, caller):
            return None
        reset_at = limiter.get_window_stats(item, self.bucket, caller).reset_time
        return max(1, math.ceil(reset_at - time.time()))


def rate_limit_storage() -> Storage:
    """Where the counters live: the one place to swap in a shared storage."""
    return MemoryStorage()


@functools.cache
def rate_limiter() -> MovingWindowRateLimiter:
    """This process's limiter, built on first use (not at import)."""
    return MovingWindowRateLimiter(rate_limit_storage())


_BUCKETS: dict[str, int] = {}


def declare_rate_limit(bucket: str, per_minute: int) -> RateLimit:
    """A bucket has one rate in this process, whichever routes name it."""
    known = _BUCKETS.setdefault(bucket, per_minute)
    if known != per_minute:
        raise ValueError(f"rate limit bucket {bucket!r} is already {known}/min")
    return RateLimit(bucket, per_minute)


def rate_limited(bucket: str, per_minute: int) -> Callable[[H], H]:
    """Declares a per-caller limit on a route; over it the auth middleware answers 429 with
    ``Retry-After``. Counted after authorization, so a 403 uses up no budget. Stacks with
    :func:`requires` in either order."""
    limit = declare_rate_limit(bucket, per_minute)

    def decorate(handler: H) -> H:
        setattr(handler, RATE_LIMIT_ATTR, limit)
        return handler

    return decorate


def rate_limit_of(handler: Any) -> RateLimit | None:
    limit = getattr(handler, RATE_LIMIT_ATTR, None)
    return limit if isinstance(limit, RateLimit) else None
