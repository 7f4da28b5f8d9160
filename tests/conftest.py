"""Shared fixtures. Tests under tests/integration and tests/e2e run against the REAL local
stack (`make test` starts it): each test session gets its own database and its own topic
namespace, so it never collides with `make run` or another session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.avro import RegistryCodec, codec_from_settings
from infra.db import create_engine
from infra.kafka import EventPublisher
from infra.logging import configure_logging
from infra.settings import Settings
from tests.support.environments import drop_stack_env, prepare_stack_env
from tests.support.stack import Process, admin_headers


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def stack_env(run_id: str) -> Iterator[dict[str, str]]:
    """Environment for `spacemusic` processes of this test session, fully set up."""
    env = prepare_stack_env(run_id)
    yield env
    drop_stack_env(env)


@pytest.fixture(scope="session")
def settings(stack_env: dict[str, str]) -> Settings:
    configure_logging("WARNING")
    return Settings.from_env(stack_env)


@pytest.fixture(scope="session")
def worker(stack_env: dict[str, str]) -> Iterator[Process]:
    """The real Faust worker process for this session, consuming from all its partitions."""
    # No lapse sweep of its own: test_offer_lapse runs the sweep itself, and a scheduled one
    # landing between its steps lapsed the offer first (its dry run then listed nothing).
    proc = Process("worker", {**stack_env, "OFFER_LAPSE_INTERVAL_SECONDS": "0"}, "worker")
    try:
        proc.wait_for_log('"partitions_assigned"', timeout=90)
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def codec(settings: Settings) -> RegistryCodec:
    codec = codec_from_settings(settings)
    await codec.register_all()
    return codec


@pytest.fixture(scope="session")
async def publisher(settings: Settings, codec: RegistryCodec) -> AsyncIterator[EventPublisher]:
    publisher = EventPublisher(settings, codec)
    await publisher.start()
    yield publisher
    await publisher.stop()


@pytest.fixture(scope="session")
async def web_client(settings: Settings) -> AsyncIterator[TestClient]:
    """The real aiohttp app, in process, against the real stack."""
    from web.app import create_app

    client = TestClient(TestServer(create_app(settings)), headers=admin_headers(settings))
    await client.start_server()
    yield client
    await client.close()
