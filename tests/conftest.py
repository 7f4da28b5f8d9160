"""Shared fixtures. Tests under tests/integration and tests/e2e run against the REAL local
stack (`make test` starts it): each test session gets its own database and its own topic
namespace, so it never collides with `make run` or another session."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.avro import RegistryCodec, codec_from_settings
from infra.db import create_engine
from infra.kafka import EventPublisher
from infra.logging import configure_logging
from infra.settings import Settings
from tests.stack import Process, admin_headers, dev_env, run_cli


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


async def _admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def prepare_stack_env(name: str, **overrides: str) -> dict[str, str]:
    """A database and a topic namespace of its own, migrated, with schemas and topics."""
    import os

    env = {**os.environ, **dev_env()}
    base_dsn = env["DATABASE_URL"]
    database = f"sm_test_{name}"
    asyncio.run(_admin(base_dsn, f'CREATE DATABASE "{database}"'))
    env.update(
        {
            "DATABASE_URL": base_dsn.rsplit("/", 1)[0] + f"/{database}",
            "TOPIC_NAMESPACE": f"t{name}.",
            "CONSUMER_GROUP_PREFIX": f"test{name}",
            "LOG_LEVEL": "INFO",
            "STARTUP_RETRY_SECONDS": "120",
            "SSE_HEARTBEAT_SECONDS": "2",
            "METRICS_PORT": "0",
            "S3_BUCKET": f"sm-test-{name}",
            **overrides,
        }
    )
    run_cli(env, "migrate")
    run_cli(env, "schemas", "register")
    run_cli(env, "topics", "create")
    return env


def drop_stack_env(env: dict[str, str]) -> None:
    admin_dsn = env["DATABASE_URL"].rsplit("/", 1)[0] + "/spacemusic"
    database = env["DATABASE_URL"].rsplit("/", 1)[1]
    asyncio.run(_admin(admin_dsn, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


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
    proc = Process("worker", stack_env, "worker")
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
