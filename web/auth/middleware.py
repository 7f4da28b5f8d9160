"""The authentication/authorization middleware: sits right after ``request_context``.

Credentials, in order (the first one present decides, an invalid one is never skipped):
the ``Authorization: Bearer`` header; ``?ticket=`` on routes declared ``ticket=True``; the
session cookie. A bearer token in the query string is never accepted (URLs end up in logs).
Its own failures are answered here as JSON, since ``json_errors`` sits inside it. A route's
declared rate limit is counted here too, once the caller is known and authorized.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from infra.logging import get_logger
from web.auth.permissions import (
    CREATOR_SCOPE,
    PRINCIPAL,
    Credential,
    Requirement,
    creator_scope_for,
    rate_limit_of,
    requirement_of,
)
from web.auth.sessions import AUTH, AuthState, clear_session_cookie, shared_rate_limit
from web.auth.tokens import AuthError, Principal
from web.errors import json_error

log = get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REALM = "spacemusic"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _canonical(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else ""


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    match_info = request.match_info
    if match_info.http_exception is not None:
        # 404/405: no handler will run, so there is nothing to protect.
        return await handler(request)
    state = request.config_dict[AUTH]
    if _canonical(request) in state.public:
        return await handler(request)
    requirement = requirement_of(match_info.handler)
    if requirement is None:
        log.error("route_without_permission", route=_canonical(request), method=request.method)
        return json_error(500, "route_not_protected", "this route declares no permission")
    try:
        principal, credential = await _authenticate(request, state, requirement)
    except AuthError as exc:
        log.info("auth_rejected", code=exc.code, route=_canonical(request))
        return _auth_failure(request, state, exc)
    if not requirement.satisfied_by(principal):
        missing = " ".join(sorted(requirement.permissions - principal.permissions))
        response = json_error(403, "insufficient_permission", f"this route requires: {missing}")
        response.headers["WWW-Authenticate"] = f'Bearer realm="{REALM}", error="insufficient_scope", scope="{missing}"'
        return response
    if credential == "cookie" and request.method not in SAFE_METHODS and not _same_origin(request):
        # SameSite=Strict already stops cross-site requests; this covers older browsers.
        return json_error(403, "cross_origin", "cookie-authenticated writes must come from this origin")
    request[PRINCIPAL] = principal
    scope = creator_scope_for(principal)
    if scope is not None:
        request[CREATOR_SCOPE] = scope
    structlog.contextvars.bind_contextvars(subject=principal.subject)
    limit = rate_limit_of(match_info.handler)
    if limit is not None:
        retry_after = await shared_rate_limit(state, limit, f"sub:{principal.subject}")
        if retry_after is not None:
            response = json_error(429, "rate_limited", f"too many {limit.bucket} requests; retry later")
            response.headers["Retry-After"] = str(retry_after)
            return response
    return await handler(request)


async def _authenticate(
    request: web.Request, state: AuthState, requirement: Requirement
) -> tuple[Principal, Credential]:
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("invalid_request", "the Authorization header must be 'Bearer <token>'")
        if state.verifier is None:
            raise AuthError("auth_unavailable", "authentication is not ready yet", status=503)
        return await state.verifier.verify(token.strip()), "bearer"
    if "ticket" in requirement.credentials and "ticket" in request.query:
        return state.redeem_ticket(request.query["ticket"]), "ticket"
    if "cookie" in requirement.credentials:
        cookie = request.cookies.get(state.cookie_name)
        if cookie is not None:
            return state.load_session(cookie), "cookie"
    raise AuthError("missing_token", "authentication required: send 'Authorization: Bearer <token>'")


def _auth_failure(request: web.Request, state: AuthState, exc: AuthError) -> web.Response:
    response = json_error(exc.status, exc.code, exc.message)
    if exc.status == 401:
        challenge = f'Bearer realm="{REALM}"'
        if exc.code not in ("missing_token", "invalid_request"):
            challenge += f', error="invalid_token", error_description="{exc.code}"'
        elif exc.code == "invalid_request":
            challenge += ', error="invalid_request"'
        response.headers["WWW-Authenticate"] = challenge
        if exc.code.endswith("_session") or exc.code == "session_expired":
            clear_session_cookie(response, state)
    elif exc.status == 503:
        response.headers["Retry-After"] = "30"
    return response


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == request.host.lower()
