"""The aiohttp app factory: resources live in ``cleanup_ctx``, nothing is built at import."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from infra.avro import codec_from_settings
from infra.crypto import RecipientVault
from infra.db import create_engine
from infra.documents import DocumentStore
from infra.kafka import EventPublisher
from infra.settings import Settings
from web import calculator, creators, deals, documents, health, lifecycle, offers, stream
from web.admin import setup_admin
from web.auth import (
    CREATORS_READ,
    CREATORS_WRITE,
    DEALS_READ,
    OFFERS_WRITE,
    PAYOUTS_WRITE,
    auth_middleware,
    rate_limited,
    requires,
    setup_auth,
)
from web.feed import DealChangeFeed
from web.keys import CODEC, DOCUMENTS, ENGINE, FEED, PUBLISHER, SETTINGS, VAULT
from web.middleware import json_errors, request_context

# Money-moving and bank-detail endpoints are rate limited per caller (per process).
PAYOUTS_PER_MINUTE = 10
RECIPIENTS_PER_MINUTE = 10


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


def create_app(settings: Settings) -> web.Application:
    # Middleware order matters: request context (ids, access log) wraps everything, then
    # authentication, then the translation of errors into JSON bodies.
    app = web.Application(
        middlewares=[request_context, auth_middleware, json_errors], client_max_size=offers.MAX_BODY_BYTES
    )
    app[SETTINGS] = settings
    app[VAULT] = RecipientVault.from_settings(settings)
    setup_auth(app, settings)
    app.cleanup_ctx.extend([_database, _kafka, _documents, _feed, calculator.flags_ctx])
    add = app.router
    add.add_post("/creators", requires(CREATORS_WRITE)(creators.create_creator))
    add.add_get("/creators/{creator_id}", requires(CREATORS_READ)(creators.show_creator))
    add.add_post(
        "/creators/{creator_id}/recipients",
        requires(CREATORS_WRITE)(rate_limited("recipients", per_minute=RECIPIENTS_PER_MINUTE)(creators.add_recipient)),
    )
    add.add_post("/offers", requires(OFFERS_WRITE)(offers.create_offer))
    add.add_post("/calculator", calculator.calculate_offer)
    add.add_get("/offers/events/deals", requires(DEALS_READ, ticket=True)(stream.deals_stream))
    add.add_get("/offers/{offer_id}", requires(DEALS_READ)(deals.get_offer))
    add.add_get("/offers/{offer_id}/events", requires(DEALS_READ)(deals.get_offer_history))
    add.add_get("/offers/{offer_id}/documents/{kind}", requires(DEALS_READ)(documents.get_document))
    add.add_post("/offers/{offer_id}/accept", requires(OFFERS_WRITE)(lifecycle.accept_offer))
    add.add_post(
        "/offers/{offer_id}/payout",
        requires(PAYOUTS_WRITE)(rate_limited("payouts", per_minute=PAYOUTS_PER_MINUTE)(lifecycle.request_payout)),
    )
    add.add_get("/deals", requires(DEALS_READ)(deals.get_deals))
    add.add_get("/healthz", health.healthz)
    add.add_get("/readyz", health.readyz)
    add.add_get("/metrics", health.metrics)
    setup_admin(app)
    return app
