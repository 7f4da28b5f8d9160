"""The consume harness every agent goes through.

decode -> validate -> handle, with three outcomes:
  * undecodable / invalid input: parked in ``offer.deadletter`` with its origin, and the
    agent moves on (never a crash, never silent loss);
  * transient trouble (registry, broker or database unreachable): retried with backoff,
    holding the partition, so nothing is acknowledged before its effects are durable;
  * an unexpected handler error: retried a few times, then dead-lettered with its type.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka.errors import KafkaError
from sqlalchemy.exc import DBAPIError, OperationalError

from infra.avro import DecodeError, RegistryUnavailable
from infra.logging import get_logger
from infra.metrics import APP_ERRORS, DEAD_LETTERS, EVENTS_CONSUMED
from models.errors import InvalidEvent
from models.events import EVENT_BY_TOPIC, DeadLetter, Event

log = get_logger(__name__)

UNEXPECTED_ERROR_ATTEMPTS = 3
_TRANSIENT = (RegistryUnavailable, KafkaError, OperationalError, ConnectionError, OSError, asyncio.TimeoutError)


@dataclass(frozen=True, slots=True)
class RawMessage:
    """What an agent needs of a Kafka record, independent of Faust's types."""

    topic: str  # physical topic
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None


def from_faust(message: object) -> RawMessage:
    return RawMessage(
        topic=message.topic,  # type: ignore[attr-defined]
        partition=message.partition,  # type: ignore[attr-defined]
        offset=message.offset,  # type: ignore[attr-defined]
        key=message.key,  # type: ignore[attr-defined]
        value=message.value,  # type: ignore[attr-defined]
        timestamp=getattr(message, "timestamp", None),
    )


def derived_event_id(cause_event_id: str, topic: str) -> str:
    """Deterministic id for an event caused by another, so a redelivered cause re-publishes
    the *same* event and every consumer can drop the duplicate."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"spacemusic:{cause_event_id}:{topic}"))


def caused_by(cause: Event, topic: str, now: datetime) -> dict[str, Any]:
    """The envelope of an event caused by ``cause``: same offer, creator and correlation,
    an id derived from the cause (see ``derived_event_id``)."""
    return {
        "event_id": derived_event_id(cause.event_id, topic),
        "offer_id": cause.offer_id,
        "creator_id": cause.creator_id,
        "occurred_at": now,
        "correlation_id": cause.correlation_id,
        "causation_id": cause.event_id,
    }


Handler = Callable[[Event, RawMessage], Awaitable[None]]


class Consumer:
    def __init__(self, name: str, resources: object, namespace: str) -> None:
        self.name = name
        self.resources = resources
        self._namespace = namespace

    def logical_topic(self, physical: str) -> str:
        return physical.removeprefix(self._namespace)

    async def process(self, message: RawMessage, handler: Handler) -> None:
        topic = self.logical_topic(message.topic)
        cls = EVENT_BY_TOPIC.get(topic)
        if cls is None:
            await self.dead_letter(message, "UnknownTopic", f"no event type for topic {topic}")
            return
        event = await self._decode(cls, message)
        if event is None:
            return
        attempt = 0
        while True:
            attempt += 1
            try:
                await handler(event, message)
                EVENTS_CONSUMED.labels(agent=self.name, topic=topic).inc()
                return
            except _TRANSIENT as exc:
                await self._backoff("handler_transient_error", exc, attempt, message)
            except DBAPIError as exc:
                if exc.connection_invalidated:
                    await self._backoff("handler_transient_error", exc, attempt, message)
                    continue
                if await self._give_up(exc, attempt, message):
                    return
            except Exception as exc:  # a bug or a poison event: bounded retries, then park it
                if await self._give_up(exc, attempt, message):
                    return

    async def _decode(self, cls: type[Event], message: RawMessage) -> Event | None:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.resources.codec.decode_event(cls, message.value)  # type: ignore[attr-defined]
            except (DecodeError, InvalidEvent) as exc:
                await self.dead_letter(message, type(exc).__name__, str(exc))
                return None
            except RegistryUnavailable as exc:
                await self._backoff("registry_unavailable", exc, attempt, message)

    async def _give_up(self, exc: Exception, attempt: int, message: RawMessage) -> bool:
        APP_ERRORS.labels(component=self.name, reason=type(exc).__name__).inc()
        if attempt >= UNEXPECTED_ERROR_ATTEMPTS:
            log.error(
                "handler_failed",
                agent=self.name,
                error=type(exc).__name__,
                detail=str(exc)[:500],
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
            )
            await self.dead_letter(message, f"HandlerError:{type(exc).__name__}", str(exc))
            return True
        log.warning("handler_error_retrying", agent=self.name, error=type(exc).__name__, attempt=attempt)
        await asyncio.sleep(0.2 * attempt)
        return False

    async def _backoff(self, what: str, exc: Exception, attempt: int, message: RawMessage) -> None:
        delay = min(0.25 * 2 ** min(attempt, 6), 10.0)
        log.warning(
            what,
            agent=self.name,
            error=type(exc).__name__,
            attempt=attempt,
            retry_in=delay,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
        )
        await asyncio.sleep(delay)

    async def dead_letter(self, message: RawMessage, error_type: str, error: str) -> None:
        topic = self.logical_topic(message.topic)
        letter = DeadLetter(
            dead_letter_id=str(
                uuid.uuid5(
                    uuid.NAMESPACE_URL, f"spacemusic:dlq:{self.name}:{topic}:{message.partition}:{message.offset}"
                )
            ),
            consumer=self.name,
            original_topic=topic,
            original_partition=message.partition,
            original_offset=message.offset,
            original_key=message.key,
            original_value=message.value,
            error_type=error_type,
            error=error[:2000],
            failed_at=datetime.now(UTC),
        )
        attempt = 0
        while True:
            attempt += 1
            try:
                await self.resources.publisher.publish_deadletter(letter, message.key)  # type: ignore[attr-defined]
                break
            except _TRANSIENT as exc:
                await self._backoff("deadletter_publish_retry", exc, attempt, message)
        DEAD_LETTERS.labels(topic=topic, reason=error_type.split(":")[0]).inc()
        log.warning(
            "dead_lettered",
            agent=self.name,
            topic=topic,
            partition=message.partition,
            offset=message.offset,
            error_type=error_type,
            error=error[:300],
        )
