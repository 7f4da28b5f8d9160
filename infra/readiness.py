"""Start-up readiness: wait for every dependency instead of dying when one is late."""

from __future__ import annotations

import asyncio

from infra.avro import codec_from_settings
from infra.db import wait_for_postgres
from infra.kafka import all_logical_topics, wait_for_kafka
from infra.logging import get_logger
from infra.settings import Settings

log = get_logger(__name__)


async def wait_for_dependencies(settings: Settings) -> None:
    """Keep retrying Postgres, Kafka (with our topics) and the registry instead of dying."""
    timeout = settings.startup_retry_seconds
    await wait_for_postgres(settings, timeout)
    await wait_for_kafka(settings, timeout, topics=all_logical_topics())
    codec = codec_from_settings(settings)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            await codec.register_all()
            return
        except Exception as exc:  # noqa: BLE001 - registry not there yet
            if loop.time() >= deadline:
                raise
            log.warning("registry_not_ready", error=type(exc).__name__)
            await asyncio.sleep(2)
