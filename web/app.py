"""The aiohttp app factory: resources live in ``cleanup_ctx``, nothing is built at import."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from infra.avro import codec_from_settings
from infra.crypto import RecipientVault
from infra.db import create_engine
from infra.documents import DocumentStore
from infra.kafka import EventPublisher
from infra.settings import Settings
from state.creators import KnownCreators
from web import calculator, health
from web.admin import setup_admin
from web.auth import auth_middleware, setup_auth
from web.feed import DealChangeFeed
from web.keys import CODEC, DOCUMENTS, ENGINE, FEED, KNOWN_CREATORS, PUBLISHER, SETTINGS, VAULT
from web.middleware import json_errors, request_context
from web.relay import relay_ctx
from web.routes import add_routes, public_paths
from web.validation import MAX_BODY_BYTES


async def _database(app: web.Application) -> AsyncIterator[None]:
    app[ENGINE] = create_engine(app[SETTINGS], pool_size=10)
    yield
    await app[ENGINE].dispose()


async def _kafka(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    codec = codec_from_settings(settings)
    await codec.register_all()
    app[CODEC] = codec
    publisher = EventPublisher(settings, codec)
    await publisher.start()
    app[PUBLISHER] = publisher
    yield
    await publisher.stop()


async def _documents(app: web.Application) -> AsyncIterator[None]:
    async with DocumentStore.from_settings(app[SETTINGS]) as store:
        app[DOCUMENTS] = store
        yield


async def _feed(app: web.Application) -> AsyncIterator[None]:
    feed = DealChangeFeed(app[SETTINGS].asyncpg_dsn, app[ENGINE])
    await feed.start()
    app[FEED] = feed
    yield
    await feed.stop()


def _metrics_listener(app: web.Application) -> Callable[[web.Application], AsyncIterator[None]]:
    """/metrics and detailed /readyz on METRICS_HOST:WEB_METRICS_PORT, a port the API's
    ingress never routes to (Prometheus and the kubelet reach it inside the cluster)."""

    async def listener(_: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        if not settings.web_metrics_port:
            yield
            return
        side = web.Application()
        side.router.add_get("/metrics", health.metrics)
        side.router.add_get("/readyz", functools.partial(health.readyz_details, app))
        side.router.add_get("/healthz", health.healthz)
        runner = web.AppRunner(side, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, settings.metrics_host, settings.web_metrics_port).start()
        yield
        await runner.cleanup()

    return listener


def create_app(settings: Settings) -> web.Application:
    # Middleware order matters: request context (ids, access log) wraps everything, then
    # authentication (and rate limits), then the translation of errors into JSON bodies.
    app = web.Application(middlewares=[request_context, auth_middleware, json_errors], client_max_size=MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app[VAULT] = RecipientVault.from_settings(settings)
    app[KNOWN_CREATORS] = KnownCreators()
    setup_auth(app, settings, public_routes=public_paths())
    app.cleanup_ctx.extend(
        [_database, _kafka, relay_ctx, _documents, _feed, calculator.flags_ctx, _metrics_listener(app)]
    )
    add_routes(app)
    setup_admin(app)
    return app
