"""The Faust app: configuration from Settings, resources built when the app starts.

Topics carry raw bytes; agents decode Avro themselves (see ``agents.consume``) so that an
undecodable message becomes a dead letter instead of an exception inside Faust.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.avro import RegistryCodec, SchemaCatalog, new_registry_client
from infra.db import create_engine
from infra.kafka import EventPublisher
from infra.logging import get_logger
from infra.settings import Settings

log = get_logger(__name__)


@dataclass
class Resources:
    settings: Settings
    codec: RegistryCodec
    publisher: EventPublisher
    engine: AsyncEngine


class SpaceMusicApp(faust.App):
    """A Faust app that owns the project's adapters for the lifetime of the worker."""

    settings: Settings
    _resources: Resources | None = None

    @property
    def resources(self) -> Resources:
        if self._resources is None:
            raise RuntimeError("resources are built when the app starts")
        return self._resources

    async def on_start(self) -> None:
        await super().on_start()
        codec = RegistryCodec(
            new_registry_client(self.settings.schema_registry_url),
            SchemaCatalog.load(self.settings.schema_dir),
            self.settings.topic_namespace,
        )
        await codec.register_all()
        publisher = EventPublisher(self.settings, codec)
        await publisher.start()
        self._resources = Resources(self.settings, codec, publisher, create_engine(self.settings))
        log.info("worker_resources_ready", **self.settings.safe_summary())

    async def on_stop(self) -> None:
        if self._resources is not None:
            await self._resources.publisher.stop()
            await self._resources.engine.dispose()
            self._resources = None
        await super().on_stop()


def create_app(settings: Settings, **overrides: Any) -> SpaceMusicApp:
    options: dict[str, Any] = {
        "broker": f"kafka://{settings.kafka_bootstrap_servers}",
        "value_serializer": "raw",
        "key_serializer": "raw",
        "store": "memory://",
        "web_enabled": False,
        "topic_disable_leader": True,
        "topic_allow_declare": False,
        "topic_partitions": settings.topic_partitions,
        "topic_replication_factor": settings.topic_replication_factor,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "broker_commit_every": 100,
        "broker_commit_interval": 1.0,
        "stream_wait_empty": False,
        "autodiscover": False,
        "datadir": "/tmp/spacemusic-faust",
    }
    options.update(overrides)
    app = SpaceMusicApp(settings.consumer_group("workers"), **options)
    app.settings = settings

    @app.on_partitions_assigned.connect
    async def _log_assignment(sender: object, assigned: set[Any], **_: Any) -> None:
        # Operators (and the test suite) read this line as "the worker is consuming".
        log.info("partitions_assigned", count=len(assigned))

    from agents import projector, valuation  # registration needs the app; keep it explicit

    valuation.register(app)
    projector.register(app)
    return app
