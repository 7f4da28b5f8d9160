"""The consume loop every agent goes through: batches in, effects, acknowledgements out.

An agent's body is ``await consume(stream, consumer, handle_batch)``. Per batch:
  * every message is decoded and validated; undecodable or invalid input is parked in
    ``offer.deadletter`` with its origin and the agent moves on (never a crash, never
    silent loss);
  * the valid events go to the agent's batch handler, retried with backoff while the
    trouble is transient (registry, broker or database unreachable);
  * an unexpected handler error splits the batch: each event is retried a few times on
    its own, then dead-lettered with its error type, so one poison event never holds
    the others back;
  * only then are the batch's messages acknowledged, so Faust commits an offset only
    once its effects are durable (at-least-once in).

Messages are read with acknowledgements off and acknowledged here, after the batch: a
worker killed mid-batch commits nothing of it, and the next owner of the partition sees
it again (the effects are idempotent, so that is harmless).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka.errors import KafkaError
from sqlalchemy.exc import DBAPIError, OperationalError

from infra.avro import DecodeError, RegistryUnavailable
from infra.documents import is_storage_outage
from infra.logging import event_log_context, get_logger
from infra.metrics import APP_ERRORS, DEAD_LETTERS, EVENTS_CONSUMED
from infra.retry import TRANSIENT_IO, RetryPolicy, retry
from models.errors import InvalidEvent
from models.events import EVENT_BY_TOPIC, DeadLetter, Event

log = get_logger(__name__)

UNEXPECTED_ERROR_ATTEMPTS = 3
BATCH_MAX = 500
# Batches grow by themselves under load (messages queue up while the previous batch is being
# processed), so the wait for more after the first is short: latency stays low when idle.
BATCH_WITHIN_SECONDS = 0.005
_TRANSIENT = (RegistryUnavailable, KafkaError, OperationalError, ConnectionError, OSError, asyncio.TimeoutError)
# A handler bug or poison event: a few quick retries on its own before it is parked.
_UNEXPECTED = RetryPolicy("unexpected_error", 0.2, 1.0, max_attempts=UNEXPECTED_ERROR_ATTEMPTS)


def is_transient(exc: BaseException) -> bool:
    """Trouble that goes away by itself: wait it out, holding the partition."""
    if isinstance(exc, _TRANSIENT) or is_storage_outage(exc):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


@dataclass(frozen=True, slots=True)
class RawMessage:
    """What an agent needs of a Kafka record, independent of Faust's types."""

    topic: str  # physical topic
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None


@dataclass(frozen=True, slots=True)
class Decoded:
    event: Event
    message: RawMessage


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
BatchHandler = Callable[[Sequence[Decoded]], Awaitable[None]]


class Consumer:
    def __init__(self, name: str, resources: object, namespace: str) -> None:
        self.name = name
        self.resources = resources
        self._namespace = namespace

    def logical_topic(self, physical: str) -> str:
        return physical.removeprefix(self._namespace)

    # ------------------------------------------------------------ one message at a time

    async def process(self, message: RawMessage, handler: Handler) -> None:
        """Decode one message and hand it to ``handler`` (dead letter if it cannot be)."""
        decoded = await self.decode(message)
        if decoded is None:
            return
        await self._handle_alone(decoded, lambda batch: handler(batch[0].event, batch[0].message))

    # ------------------------------------------------------------ a batch at a time

    async def process_batch(self, messages: Sequence[RawMessage], handler: BatchHandler) -> None:
        """Decode a batch, hand the valid events to ``handler`` in one call; on an
        unexpected error fall back to one event at a time."""
        decoded = [d for d in [await self.decode(m) for m in messages] if d is not None]
        if not decoded:
            return
        try:
            await retry(TRANSIENT_IO, lambda: handler(decoded), what=f"{self.name}_batch", retry_on=is_transient)
        except Exception as exc:  # not transient: find the event that causes it
            log.warning("batch_failed_splitting", agent=self.name, error=type(exc).__name__, size=len(decoded))
            for item in decoded:
                await self._handle_alone(item, handler)
            return
        per_topic = collections.Counter(item.message.topic for item in decoded)
        for topic, count in per_topic.items():
            EVENTS_CONSUMED.labels(agent=self.name, topic=self.logical_topic(topic)).inc(count)

    async def _handle_alone(self, item: Decoded, handler: BatchHandler) -> None:
        message = item.message
        with event_log_context(item.event):
            try:
                await retry(
                    TRANSIENT_IO,
                    lambda: retry(
                        _UNEXPECTED,
                        lambda: handler([item]),
                        what=f"{self.name}_handler",
                        retry_on=lambda exc: not is_transient(exc) and isinstance(exc, Exception),
                        offset=message.offset,
                    ),
                    what=f"{self.name}_handler",
                    retry_on=is_transient,
                    topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                )
            except Exception as exc:  # a bug or a poison event: bounded retries, then park it
                APP_ERRORS.labels(component=self.name, reason=type(exc).__name__).inc()
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
                return
        EVENTS_CONSUMED.labels(agent=self.name, topic=self.logical_topic(message.topic)).inc()

    # ------------------------------------------------------------ decoding and dead letters

    async def decode(self, message: RawMessage) -> Decoded | None:
        topic = self.logical_topic(message.topic)
        cls = EVENT_BY_TOPIC.get(topic)
        if cls is None:
            await self.dead_letter(message, "UnknownTopic", f"no event type for topic {topic}")
            return None
        codec = self.resources.codec  # type: ignore[attr-defined]
        try:
            event = await retry(
                TRANSIENT_IO,
                lambda: codec.decode_event(cls, message.value),
                what="registry",
                retry_on=(RegistryUnavailable,),
                agent=self.name,
            )
        except (DecodeError, InvalidEvent) as exc:
            await self.dead_letter(message, type(exc).__name__, str(exc))
            return None
        return Decoded(event, message)

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
        publisher = self.resources.publisher  # type: ignore[attr-defined]
        await retry(
            TRANSIENT_IO,
            lambda: publisher.publish_deadletter(letter, message.key),
            what="deadletter_publish",
            retry_on=_TRANSIENT,
            agent=self.name,
        )
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


async def consume_batches(
    stream: Any,
    consumer: Consumer,
    handler: BatchHandler,
    *,
    max_batch: int = BATCH_MAX,
    within: float = BATCH_WITHIN_SECONDS,
) -> None:
    """The body of a batching agent: take up to ``max_batch`` messages (waiting at most
    ``within`` seconds once the first has arrived), process them, then acknowledge them.

    Faust acknowledges a message when the agent asks for the next one; reading with
    acknowledgements off and acknowledging after the batch keeps every offset uncommitted
    until its effects are durable. A pump task feeds a bounded queue so the wait for the
    rest of a batch can time out without cancelling the stream's own iteration."""
    unacked = stream.noack()
    queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=max_batch)

    async def pump() -> None:
        async for event in unacked.events():
            await queue.put(event)

    pumping = asyncio.create_task(pump(), name=f"{consumer.name}-pump")
    try:
        while (batch := await _take(queue, pumping, max_batch, within)) is not None:
            await consumer.process_batch([from_faust(e.message) for e in batch], handler)
            for event in batch:
                await unacked.ack(event)
    finally:
        pumping.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pumping


async def _take(
    queue: asyncio.Queue[Any], pumping: asyncio.Task[None], max_batch: int, within: float
) -> list[Any] | None:
    """The next batch: the first message (waiting as long as it takes), what queued up
    meanwhile, then whatever arrives within ``within``. None when the stream stopped."""
    first = await _first(queue, pumping)
    if first is _ENDED:
        return None
    batch = [first]
    while len(batch) < max_batch and not queue.empty():
        batch.append(queue.get_nowait())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while len(batch) < max_batch and (remaining := deadline - loop.time()) > 0:
        try:
            batch.append(await asyncio.wait_for(queue.get(), timeout=remaining))
        except TimeoutError:
            break
    return batch


_ENDED = object()


async def _first(queue: asyncio.Queue[Any], pumping: asyncio.Task[None]) -> Any:
    """The next message; ``_ENDED`` when the stream stopped; the pump's own failure raised
    (never a silent stall)."""
    getting = asyncio.ensure_future(queue.get())
    done, _ = await asyncio.wait({getting, pumping}, return_when=asyncio.FIRST_COMPLETED)
    if getting in done:
        return getting.result()
    getting.cancel()
    pumping.result()  # raises what stopped the pump
    return _ENDED
