"""The shared-state half of browser credentials: runs right before ``auth_middleware``.

``auth_middleware`` checks a ticket's or a session cookie's signature and expiry. This guard
adds what only the shared store (Postgres) can say, for the credential the middleware is about
to use (same precedence: a bearer header wins, then ``?ticket=`` on ticket routes, then the
cookie):

- a ticket is redeemed in ``auth_ticket_nonces``: a second redemption, on any web process or
  after a restart, is ``401 ticket_reused``;
- a session cookie must name an active ``auth_sessions`` row: a revoked (logout,
  ``spacemusic sessions revoke``) or expired one is ``401 invalid_session`` and the cookie is
  cleared;
- on EventSource routes (declared ``ticket=True``) the stream is closed when its ticket or
  session expires, and within ``revocation_check_seconds`` of a revocation.

A credential whose signature does not verify is left to ``auth_middleware``, which answers it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from infra.logging import get_logger
from web.auth.permissions import requirement_of
from web.auth.sessions import AUTH, AuthState, Grant, clear_session_cookie
from web.auth.tokens import AuthError, Principal
from web.errors import json_error

log = get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REALM = "spacemusic"


def _canonical(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else ""


def _auth_failure(state: AuthState, exc: AuthError) -> web.Response:
    """The same answer ``auth_middleware`` gives (JSON body, challenge, cookie cleared)."""
    response = json_error(exc.status, exc.code, exc.message)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = (
            f'Bearer realm="{REALM}", error="invalid_token", error_description="{exc.code}"'
        )
        if exc.code.endswith("_session") or exc.code == "session_expired":
            clear_session_cookie(response, state)
    elif exc.status == 503:
        response.headers["Retry-After"] = "30"
    return response


async def active_session(state: AuthState, value: str) -> tuple[Grant, float]:
    """A signed session cookie whose server-side row is active: its grant and the moment it
    ends (the earlier of the cookie's and the row's expiry)."""
    grant = state.sessions.load(value)
    expiry = await state.require_store().session_expiry(grant.nonce)
    if expiry is None:
        raise AuthError("invalid_session", "the session has ended (signed out, revoked or expired)")
    return grant, min(float(grant.expires_at), expiry)


async def session_principal(state: AuthState, value: str) -> Principal | None:
    """For handlers that check the cookie themselves (the admin page shell)."""
    try:
        return (await active_session(state, value))[0].principal
    except AuthError:
        return None


@web.middleware
async def session_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    match_info = request.match_info
    if match_info.http_exception is not None:
        return await handler(request)
    state = request.config_dict[AUTH]
    requirement = requirement_of(match_info.handler)
    if _canonical(request) in state.public or requirement is None or "Authorization" in request.headers:
        return await handler(request)
    deadline: float | None = None
    session_id: str | None = None
    kind = ""
    try:
        if "ticket" in requirement.credentials and "ticket" in request.query:
            try:
                grant = state.tickets.load(request.query["ticket"])
            except AuthError:
                return await handler(request)  # auth_middleware answers it
            if not await state.require_store().consume_nonce(grant.nonce, grant.expires_at):
                raise AuthError("ticket_reused", "the ticket has already been used")
            deadline, kind = float(grant.expires_at), "ticket"
        elif "cookie" in requirement.credentials and state.cookie_name in request.cookies:
            try:
                state.sessions.load(request.cookies[state.cookie_name])
            except AuthError:
                return await handler(request)
            grant, deadline = await active_session(state, request.cookies[state.cookie_name])
            session_id, kind = grant.nonce, "session"
    except AuthError as exc:
        log.info("auth_rejected", code=exc.code, route=_canonical(request))
        return _auth_failure(state, exc)
    except Exception as exc:  # the shared store is down: refuse (fail closed), never a 500
        log.warning("auth_store_unavailable", error=type(exc).__name__, route=_canonical(request))
        return _auth_failure(state, AuthError("auth_unavailable", "authentication is unavailable", status=503))
    if deadline is None or "ticket" not in requirement.credentials:
        return await handler(request)
    # An EventSource route: the stream lives no longer than its credential.
    watcher = asyncio.create_task(_close_when_ended(request, state, deadline, session_id, kind))
    try:
        return await handler(request)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _close_when_ended(
    request: web.Request, state: AuthState, deadline: float, session_id: str | None, kind: str
) -> None:
    reason = "expired"
    while True:
        remaining = deadline - time.time()
        if remaining <= 0:
            break
        await asyncio.sleep(min(remaining, state.revocation_check_seconds) if session_id else remaining)
        if session_id is None or time.time() >= deadline:
            continue
        try:
            expiry = await state.require_store().session_expiry(session_id)
        except Exception as exc:  # a database blip must not end every stream at once
            log.warning("session_check_failed", error=type(exc).__name__)
            continue
        if expiry is None:
            reason = "revoked"
            break
        deadline = min(deadline, expiry)
    log.info("sse_closed_by_auth", credential=kind, reason=reason)
    transport = request.transport
    if transport is not None:
        # The browser sees the stream end now; the handler notices within a heartbeat.
        transport.close()
