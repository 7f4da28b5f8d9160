"""Authentication (Auth0-compatible OIDC access tokens) and authorization for the web app.

``setup_auth(app, settings)`` wires everything; handlers declare what they need with
``@requires(...)`` (see :mod:`web.auth.permissions`) and read ``request[PRINCIPAL]`` /
``request.get(CREATOR_SCOPE)``. See docs/auth.md.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpx
from aiohttp import web

from infra.db import create_engine
from infra.logging import get_logger
from infra.settings import Settings
from state.sessions import PostgresAuthStore
from web.auth.dev_idp import PREFIX as DEV_IDP_PREFIX
from web.auth.dev_idp import DevIdp, add_dev_idp_routes, mint_token
from web.auth.guard import session_guard, session_principal
from web.auth.jwks import JwksCache
from web.auth.middleware import auth_middleware
from web.auth.oidc import OIDC, add_oidc_routes, oidc_configured
from web.auth.oidc import PREFIX as OIDC_PREFIX
from web.auth.permissions import (
    ADMIN,
    CREATOR_SCOPE,
    CREATORS_READ,
    CREATORS_WRITE,
    DEALS_READ,
    DEALS_READ_ALL,
    DEV_PUBLIC_ROUTES,
    OFFERS_WRITE,
    PAYOUTS_WRITE,
    PRINCIPAL,
    PUBLIC_ROUTES,
    PublicRoutes,
    authenticated,
    rate_limited,
    requirement_of,
    requires,
    visible_to,
)
from web.auth.sessions import (
    AUTH,
    SESSION_TTL_SECONDS,
    TICKET_TTL_SECONDS,
    AuthState,
    AuthStore,
    MemoryAuthStore,
    SignedPrincipalCodec,
    add_session_routes,
)
from web.auth.tokens import AuthError, Principal, TokenVerifier, check_algorithms, parse_scope_permissions
from web.middleware import request_context

log = get_logger(__name__)

__all__ = [
    "ADMIN",
    "AUTH",
    "CREATORS_READ",
    "CREATORS_WRITE",
    "CREATOR_SCOPE",
    "DEALS_READ",
    "DEALS_READ_ALL",
    "OFFERS_WRITE",
    "PAYOUTS_WRITE",
    "PRINCIPAL",
    "AuthError",
    "AuthStore",
    "MemoryAuthStore",
    "OIDC",
    "Principal",
    "auth_middleware",
    "authenticated",
    "mint_token",
    "rate_limited",
    "requires",
    "session_guard",
    "session_principal",
    "setup_auth",
    "visible_to",
]


def uses_dev_idp(settings: Settings) -> bool:
    """Dev verifies against the built-in IdP's key unless OIDC_JWKS_URL names another IdP."""
    if not settings.is_dev:
        return False
    return not settings.oidc_jwks_url or urlsplit(settings.oidc_jwks_url).path.startswith(f"{DEV_IDP_PREFIX}/")


def setup_auth(
    app: web.Application,
    settings: Settings,
    *,
    login_redirect: str = "/admin",
    public_routes: Iterable[str] = (),
    store: AuthStore | None = None,
) -> None:
    """Installs ``auth_middleware`` (right after ``request_context``), the /auth routes, the
    dev IdP (dev only) and the token verifier. Call it before the app starts; ``public_routes``
    extends the allowlist with canonical paths ("/x" or "/x/*")."""
    check_algorithms(settings.oidc_algorithms)
    patterns = [*PUBLIC_ROUTES, *(DEV_PUBLIC_ROUTES if settings.is_dev else ()), *public_routes]
    state = AuthState(
        verifier=None,
        tickets=SignedPrincipalCodec(
            settings.session_secret.get_secret_value(), "sse-ticket", TICKET_TTL_SECONDS, kind="ticket"
        ),
        sessions=SignedPrincipalCodec(
            settings.session_secret.get_secret_value(), "session", SESSION_TTL_SECONDS, kind="session"
        ),
        public=PublicRoutes(patterns),
        cookie_secure=not settings.is_dev,
        store=store,
        revocation_check_seconds=settings.session_check_seconds,
    )
    app[AUTH] = state
    _install_middleware(app)
    if store is None:
        app.cleanup_ctx.append(_shared_store(settings, state))
    add_session_routes(app)
    if oidc_configured(settings) and not uses_dev_idp(settings):
        add_oidc_routes(app, settings)
        state.public = PublicRoutes([*patterns, f"{OIDC_PREFIX}/*"])
    if uses_dev_idp(settings):
        idp = DevIdp.from_settings(settings)
        add_dev_idp_routes(app, idp, login_redirect=login_redirect)
        # Static keys: the process would otherwise fetch its own JWKS over HTTP from itself.
        state.verifier = TokenVerifier(
            JwksCache.from_static(idp.jwks()),
            idp.issuer,
            settings.oidc_audience,
            settings.oidc_algorithms,
            **verifier_options(settings),
        )
        log.info("auth_configured", mode="dev_idp", issuer=idp.issuer, kid=idp.kid)
    else:
        app.cleanup_ctx.append(_remote_verifier(settings, state))
        log.info("auth_configured", mode="jwks", issuer=settings.oidc_issuer, audience=settings.oidc_audience)
    app.on_startup.append(_check_routes_declared)


def verifier_options(settings: Settings) -> dict[str, Any]:
    """The fail-closed claim rules from settings (a bad scope mapping fails at setup)."""
    return {
        "scope_permissions": parse_scope_permissions(settings.oidc_scope_permissions),
        "roles_claim": settings.oidc_roles_claim,
        "creator_role": settings.oidc_creator_role,
    }


def jwks_url(settings: Settings) -> str:
    if not settings.oidc_issuer:
        raise RuntimeError("OIDC_ISSUER is required outside dev (e.g. https://<tenant>.auth0.com/)")
    url = settings.oidc_jwks_url or f"{settings.oidc_issuer.rstrip('/')}/.well-known/jwks.json"
    if urlsplit(url).scheme != "https" and not settings.is_dev:
        raise RuntimeError("OIDC_JWKS_URL must be https outside dev")
    return url


def _remote_verifier(settings: Settings, state: AuthState) -> Callable[[web.Application], AsyncIterator[None]]:
    url = jwks_url(settings)  # fails at setup, not at the first request
    options = verifier_options(settings)

    async def remote_verifier(_: web.Application) -> AsyncIterator[None]:
        async with httpx.AsyncClient(headers={"User-Agent": "spacemusic-web"}) as http:
            jwks = JwksCache(url, http)
            state.verifier = TokenVerifier(
                jwks, settings.oidc_issuer, settings.oidc_audience, settings.oidc_algorithms, **options
            )
            if not await jwks.refresh():
                log.warning("jwks_warmup_failed", url=url)
            yield
            state.verifier = None

    return remote_verifier


def _shared_store(settings: Settings, state: AuthState) -> Callable[[web.Application], AsyncIterator[None]]:
    """Sessions, ticket nonces and rate limits in Postgres, shared by every web process."""

    async def shared_store(_: web.Application) -> AsyncIterator[None]:
        engine = create_engine(settings, pool_size=2)
        state.store = PostgresAuthStore(engine)
        yield
        state.store = None
        await engine.dispose()

    return shared_store


def _install_middleware(app: web.Application) -> None:
    middlewares = app.middlewares
    if auth_middleware in middlewares:
        if request_context in middlewares and middlewares.index(auth_middleware) < middlewares.index(request_context):
            raise RuntimeError("auth_middleware must come after request_context")
    else:
        position = middlewares.index(request_context) + 1 if request_context in middlewares else 0
        middlewares.insert(position, auth_middleware)
    if session_guard not in middlewares:
        # Right before auth_middleware: it settles the shared-state part of the credential.
        middlewares.insert(middlewares.index(auth_middleware), session_guard)


async def _check_routes_declared(app: web.Application) -> None:
    """Refuses to start with a route that is neither public nor declares a permission."""
    public: PublicRoutes = app[AUTH].public
    undeclared = sorted(
        f"{route.method} {route.resource.canonical}"
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical not in public
        and requirement_of(route.handler) is None
    )
    if undeclared:
        raise RuntimeError(
            "routes without a permission (decorate the handler with @requires(...) or make it public): "
            + ", ".join(undeclared)
        )
