"""Start-up readiness: wait for every dependency instead of dying when one is late."""

from __future__ import annotations

import httpx
from schema_registry.client.errors import ClientError

from infra.avro import RegistryUnavailable, codec_from_settings
from infra.db import wait_for_postgres
from infra.kafka import all_logical_topics, wait_for_kafka
from infra.retry import STARTUP, retry
from infra.settings import Settings


async def wait_for_dependencies(settings: Settings) -> None:
    """Keep retrying Postgres, Kafka (with our topics) and the registry instead of dying."""
    timeout = settings.startup_retry_seconds
    await wait_for_postgres(settings, timeout)
    await wait_for_kafka(settings, timeout, topics=all_logical_topics())
    codec = codec_from_settings(settings)
    await retry(
        STARTUP,
        codec.register_all,
        what="registry",
        # A registry still booting answers 5xx (ClientError) before it answers properly.
        retry_on=(RegistryUnavailable, ClientError, httpx.HTTPError, OSError),
        deadline_seconds=timeout,
    )
