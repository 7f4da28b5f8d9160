"""Request context, the one access-log line per request, and JSON error handling."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from infra.logging import CORRELATION_HEADER, bind_request_context, correlation_id_from, get_logger
from infra.metrics import HTTP_LATENCY, HTTP_REQUESTS
from web.errors import error_answer, json_error

log = get_logger("web.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID = web.RequestKey("request_id", str)


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Binds request and correlation ids to every log line of the request, then writes a
    single access-log line (aiohttp's own access logger is disabled)."""
    request_id = request.headers.get("X-Request-ID") or str(uuid.uuid4())
    if len(request_id) > 128:
        request_id = str(uuid.uuid4())
    request[REQUEST_ID] = request_id
    structlog.contextvars.clear_contextvars()
    # The id the request's events carry (web/http.py), on every log line of the request.
    bind_request_context(request_id, correlation_id_from(request.headers.get(CORRELATION_HEADER), request_id))
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        response.headers["X-Request-ID"] = request_id
        return response
    except web.HTTPException as exc:
        status = exc.status
        exc.headers["X-Request-ID"] = request_id
        raise
    finally:
        elapsed = time.perf_counter() - started
        route = _route_name(request)
        HTTP_REQUESTS.labels(method=request.method, route=route, status=str(status)).inc()
        HTTP_LATENCY.labels(method=request.method, route=route).observe(elapsed)
        log.info(
            "http_request",
            method=request.method,
            path=request.path,
            route=route,
            status=status,
            duration_ms=round(elapsed * 1000, 2),
            remote=request.remote,
        )


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as JSON; bad input is a 4xx, never a 500. Validation, not-found,
    conflict and rule errors raised anywhere below map through :func:`error_answer`."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        return json_error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)
    except Exception as exc:
        answer = error_answer(exc)
        if answer is not None:
            status, body = answer
            return web.json_response(body, status=status)
        log.exception("unhandled_error", path=request.path)
        return json_error(500, "internal_error", f"unexpected error; request id {request.get(REQUEST_ID)}")
