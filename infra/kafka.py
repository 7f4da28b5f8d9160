"""Kafka adapters: the event publisher (acks=all, idempotent), topic administration and the
start-up wait that keeps a process retrying while the broker is not there yet."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError

from infra.avro import RegistryCodec
from infra.logging import get_logger
from infra.metrics import EVENTS_PUBLISHED
from infra.retry import STARTUP, retry
from infra.settings import Settings
from models.events import DEADLETTER_TOPIC, LIFECYCLE_EVENTS, DeadLetter, Event

log = get_logger(__name__)

Headers = list[tuple[str, bytes]]


def all_logical_topics() -> list[str]:
    return [cls.TOPIC for cls in LIFECYCLE_EVENTS] + [DEADLETTER_TOPIC]


@dataclass(frozen=True, slots=True)
class EncodedEvent:
    """An event as it goes to the broker (logical topic, key, registry-framed value, headers):
    what the outbox stores, so a later send is byte for byte the same message."""

    event_id: str
    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


class EventPublisher:
    """Encodes events through the registry and waits for the broker's acknowledgement, so a
    caller that returns has a durable event behind it."""

    def __init__(self, settings: Settings, codec: RegistryCodec) -> None:
        self._settings = settings
        self._codec = codec
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            client_id="spacemusic-publisher",
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def ping(self, timeout: float = 3.0) -> bool:
        """Whether a broker answers now, over the producer's own connection (a probe opens
        no connection of its own)."""
        try:
            async with asyncio.timeout(timeout):
                return bool(await self._producer.client.force_metadata_update())
        except (TimeoutError, KafkaError, OSError):
            return False

    async def publish(self, event: Event, extra_headers: Headers | None = None) -> None:
        await self.publish_many([event], extra_headers)

    async def publish_many(self, events: Sequence[Event], extra_headers: Headers | None = None) -> None:
        """Send every event without waiting for each acknowledgement, then wait for all of
        them: one round trip per batch instead of one per event. Returns only when every
        event is durable (acks=all); raises the first failure otherwise."""
        await self.send_encoded([await self.encode(event, extra_headers) for event in events])

    async def encode(self, event: Event, extra_headers: Headers | None = None) -> EncodedEvent:
        """The message for ``event`` (the registry is asked only for a schema id not cached)."""
        headers = (
            ("event_type", event.TOPIC.encode()),
            ("event_id", event.event_id.encode()),
            ("correlation_id", event.correlation_id.encode()),
            *(extra_headers or []),
        )
        value = await self._codec.encode_event(event)
        return EncodedEvent(event.event_id, event.TOPIC, event.offer_id.encode(), value, headers)

    async def send_encoded(self, messages: Sequence[EncodedEvent]) -> None:
        """Send already-encoded events, pipelined like ``publish_many``; returns when all are durable."""
        deliveries = [await self._send(m.topic, m.key, m.value, list(m.headers)) for m in messages]
        await self._delivered(deliveries)

    async def publish_deadletter(self, letter: DeadLetter, key: bytes | None) -> None:
        value = await self._codec.encode_event(letter)
        headers: Headers = [("consumer", letter.consumer.encode()), ("original_topic", letter.original_topic.encode())]
        await self.send_raw(DEADLETTER_TOPIC, key, value, headers)

    async def send_raw(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers) -> None:
        """Send already-encoded bytes to a logical topic (replay and re-drive use this)."""
        await self._delivered([await self._send(topic, key, value, headers)])

    async def _send(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers
    ) -> tuple[str, asyncio.Future[Any]]:
        # send() returns once the record is in the producer's buffer; the future resolves
        # when the broker has acknowledged it.
        future = await self._producer.send(self._settings.topic(topic), value=value, key=key, headers=headers)
        return topic, future

    @staticmethod
    async def _delivered(deliveries: Sequence[tuple[str, asyncio.Future[Any]]]) -> None:
        results = await asyncio.gather(*(future for _, future in deliveries), return_exceptions=True)
        for (topic, _), result in zip(deliveries, results, strict=True):
            if isinstance(result, BaseException):
                raise result
            EVENTS_PUBLISHED.labels(topic=topic).inc()


async def ensure_topics(settings: Settings, logical_topics: Iterable[str] | None = None) -> list[str]:
    """Create missing topics with the configured partitions; returns the ones created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, client_id="spacemusic-admin")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [settings.topic(t) for t in (logical_topics or all_logical_topics())]
        missing = [t for t in wanted if t not in existing]
        if missing:
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            name=t,
                            num_partitions=settings.topic_partitions,
                            replication_factor=settings.topic_replication_factor,
                            topic_configs={"min.insync.replicas": "1", "retention.ms": "-1"},
                        )
                        for t in missing
                    ]
                )
            except TopicAlreadyExistsError:
                pass  # a concurrent creator won the race; the topic is there, which is all we need
        return missing
    finally:
        await admin.close()


async def list_topics(settings: Settings) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, client_id="spacemusic-admin")
    await admin.start()
    try:
        return sorted(await admin.list_topics())
    finally:
        await admin.close()


class TopicsMissing(RuntimeError):
    """The broker answers but our topics are not created yet (`spacemusic topics create`)."""


async def wait_for_kafka(settings: Settings, timeout: float, topics: Sequence[str] = ()) -> None:
    """Retry with backoff until the broker answers (and the topics exist), or give up."""

    async def check() -> None:
        present = set(await list_topics(settings))
        missing = [settings.topic(t) for t in topics if settings.topic(t) not in present]
        if missing:
            raise TopicsMissing(f"topics missing: {', '.join(missing)}")

    try:
        await retry(
            STARTUP,
            check,
            what="kafka",
            retry_on=(KafkaConnectionError, KafkaError, OSError, TopicsMissing),
            deadline_seconds=timeout,
        )
    except (KafkaError, OSError, TopicsMissing) as exc:
        raise TimeoutError(
            f"Kafka at {settings.kafka_bootstrap_servers} not ready after {timeout:.0f}s ({type(exc).__name__}: {exc})"
        ) from exc
