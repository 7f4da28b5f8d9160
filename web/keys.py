"""Typed application keys: what the app factory wires and handlers read."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.avro import RegistryCodec
from infra.crypto import RecipientVault
from infra.documents import DocumentStore
from infra.kafka import EventPublisher
from infra.settings import Settings
from state.creators import KnownCreators
from web.feed import DealChangeFeed

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", AsyncEngine)
CODEC = web.AppKey("codec", RegistryCodec)
PUBLISHER = web.AppKey("publisher", EventPublisher)
FEED = web.AppKey("feed", DealChangeFeed)
VAULT = web.AppKey("vault", RecipientVault)
DOCUMENTS = web.AppKey("documents", DocumentStore)
KNOWN_CREATORS = web.AppKey("known_creators", KnownCreators)
