"""The aiohttp app factory: resources live in ``cleanup_ctx``, nothing is built at import."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from infra.avro import RegistryCodec, SchemaCatalog, new_registry_client
from infra.crypto import RecipientVault
from infra.db import create_engine
from infra.documents import DocumentStore
from infra.kafka import EventPublisher
from infra.settings import Settings
from web import creators, deals, documents, health, lifecycle, offers, stream
from web.feed import DealChangeFeed
from web.keys import CODEC, DOCUMENTS, ENGINE, FEED, PUBLISHER, SETTINGS, VAULT
from web.middleware import json_errors, request_context


async def _database(app: web.Application) -> AsyncIterator[None]:
    app[ENGINE] = create_engine(app[SETTINGS], pool_size=10)
    yield
    await app[ENGINE].dispose()


async def _kafka(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    codec = RegistryCodec(
        new_registry_client(settings.schema_registry_url),
        SchemaCatalog.load(settings.schema_dir),
        settings.topic_namespace,
    )
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
    # Middleware order matters: request context (ids, access log) wraps everything; the
    # authentication middleware belongs right after it, before JSON error translation.
    app = web.Application(middlewares=[request_context, json_errors], client_max_size=offers.MAX_BODY_BYTES)
    app[SETTINGS] = settings
    app[VAULT] = RecipientVault.from_settings(settings)
    app.cleanup_ctx.extend([_database, _kafka, _documents, _feed])
    app.router.add_post("/creators", creators.create_creator)
    app.router.add_get("/creators/{creator_id}", creators.show_creator)
    app.router.add_post("/creators/{creator_id}/recipients", creators.add_recipient)
    app.router.add_post("/offers", offers.create_offer)
    app.router.add_get("/offers/events/deals", stream.deals_stream)
    app.router.add_get("/offers/{offer_id}", deals.get_offer)
    app.router.add_get("/offers/{offer_id}/events", deals.get_offer_history)
    app.router.add_get("/offers/{offer_id}/documents/{kind}", documents.get_document)
    app.router.add_post("/offers/{offer_id}/accept", lifecycle.accept_offer)
    app.router.add_post("/offers/{offer_id}/payout", lifecycle.request_payout)
    app.router.add_get("/deals", deals.get_deals)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/metrics", health.metrics)
    return app
