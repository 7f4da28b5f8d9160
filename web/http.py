"""What every handler reads off a request besides its body: who is acting, and for whom."""

from __future__ import annotations

from aiohttp import web

from infra.logging import CORRELATION_HEADER, correlation_id_from
from web.auth.permissions import CREATOR_SCOPE, PRINCIPAL
from web.commands import Actor
from web.middleware import REQUEST_ID

MAX_CORRELATION_ID = 128


def actor_of(request: web.Request) -> Actor:
    principal = request.get(PRINCIPAL)
    # The same id request_context binds to the request's log lines.
    correlation = correlation_id_from(request.headers.get(CORRELATION_HEADER), request.get(REQUEST_ID) or "")
    return Actor(
        subject=principal.subject if principal is not None else "anonymous",
        scope=request.get(CREATOR_SCOPE),
        correlation_id=correlation[:MAX_CORRELATION_ID],
    )
