"""Liveness, readiness (Kafka and Postgres really answer) and Prometheus metrics."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from infra.logging import get_logger
from web.auth.permissions import ADMIN, METRICS_READ
from web.auth.sessions import AUTH
from web.auth.tokens import AuthError
from web.keys import ENGINE, PUBLISHER

log = get_logger(__name__)


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


# Probes from a load balancer come often; one check a second is plenty.
READY_CACHE_SECONDS = 1.0
_last_check: dict[int, tuple[float, dict[str, str]]] = {}
# Whether each app was ready at its last probe: the log says when readiness changes, once
# per outage, not at every probe of it.
_was_ready: dict[int, bool] = {}


async def _checks(app: web.Application) -> dict[str, str]:
    """Postgres and Kafka through the app's pooled clients (the engine's pool, the
    publisher's producer): a probe opens no connection of its own."""
    cached = _last_check.get(id(app))
    if cached is not None and time.monotonic() - cached[0] < READY_CACHE_SECONDS:
        return cached[1]
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(3):
            async with app[ENGINE].connect() as conn:
                await conn.execute(text("SELECT 1"))
        checks["postgres"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["postgres"] = f"failed: {type(exc).__name__}"
    # The producer's own broker connection; fresh metadata proves a broker answers.
    checks["kafka"] = "ok" if await app[PUBLISHER].ping(timeout=5) else "failed: no broker answered"
    _last_check[id(app)] = (time.monotonic(), checks)
    return checks


async def _may_see_details(request: web.Request) -> bool:
    """Details (which dependency failed, and how) only for a bearer token with metrics:read
    or admin; everyone else learns ready or not."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    verifier = request.config_dict[AUTH].verifier
    if scheme.lower() != "bearer" or not token.strip() or verifier is None:
        return False
    try:
        principal = await verifier.verify(token.strip())
    except AuthError:
        return False
    return bool({ADMIN, METRICS_READ} & principal.permissions)


async def readyz(request: web.Request) -> web.Response:
    checks = await _checks(request.app)
    ready = all(v == "ok" for v in checks.values())
    before = _was_ready.get(id(request.app), True)
    if before and not ready:
        log.warning("not_ready", **checks)
    elif ready and not before:
        log.info("ready_again")
    _was_ready[id(request.app)] = ready
    body: dict[str, object] = {"status": "ready" if ready else "not_ready"}
    if await _may_see_details(request):
        body["checks"] = checks
    return web.json_response(body, status=200 if ready else 503)


async def readyz_details(app: web.Application, _: web.Request) -> web.Response:
    """The metrics listener's /readyz: every check, by name (no credential on that port)."""
    checks = await _checks(app)
    ready = all(v == "ok" for v in checks.values())
    status = "ready" if ready else "not_ready"
    return web.json_response({"status": status, "checks": checks}, status=200 if ready else 503)


async def metrics(_: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})
