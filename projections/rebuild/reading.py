"""Phase 1 (read) and phase 2 (catch-up): the log folded into the shadow tables.

Reading goes through the one topic reader (``infra.topic_reader``) a batch at a time and
decodes through the one codec; folding uses the projector's pure ``apply_event``. Every
lifecycle topic is keyed by ``offer_id``, so partition *p* of every topic holds all events
of the same offers and one reader folds its offers alone (see ``workers``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

import asyncpg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from infra.avro import DecodeError, RegistryCodec, RegistryUnavailable, codec_from_settings
from infra.retry import QUICK, retry
from infra.settings import Settings
from infra.topic_reader import PartitionRange, RawRecord, ReadPlan, ReadSpec, TopicReader, TopicReadError
from models.deal import Deal, apply_event
from models.errors import InvalidEvent
from models.events import EVENT_BY_TOPIC, LIFECYCLE_EVENTS
from projections.projector import LIVE_CONSUMER
from projections.rebuild import shadow
from projections.rebuild.report import SKIPPED_SAMPLES, TP, PartitionSpan, ReadResult, RebuildError, SkippedMessage
from projections.tables import projection_tracking
from projections.writers import Located, Position, fold_into

COPY_BATCH_ROWS = 5_000
FETCH_MAX_RECORDS = 5_000
Progress = Callable[[int], None]


def bulk_reader(settings: Settings) -> TopicReader:
    """A topic reader tuned for reading whole partitions."""
    return TopicReader(
        settings,
        client_id="spacemusic-rebuild",
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        fetch_max_wait_ms=100,
    )


async def kafka_spans(settings: Settings) -> list[PartitionSpan]:
    """Every partition of every lifecycle topic, from its first offset to its high-water mark now."""
    try:
        async with bulk_reader(settings) as reader:
            plan = await reader.plan(ReadSpec(topics=tuple(cls.TOPIC for cls in LIFECYCLE_EVENTS)))
    except TopicReadError as exc:
        raise RebuildError(f"{exc} (spacemusic topics create)") from exc
    return [PartitionSpan(settings.topic(r.topic), r.partition, r.start, r.end) for r in plan.ranges]


def plan_of(settings: Settings, spans: Sequence[PartitionSpan]) -> ReadPlan:
    logical = settings.topic_namespace
    return ReadPlan(
        tuple(
            PartitionRange(
                topic=s.topic.removeprefix(logical),
                partition=s.partition,
                start=s.begin,
                end=s.end,
                low=s.begin,
                high=s.end,
            )
            for s in spans
            if s.end > s.begin
        )
    )


class ShadowFolder:
    """Decodes records, counts what it read, and folds the valid ones into deals in memory."""

    def __init__(self, settings: Settings, codec: RegistryCodec, result: ReadResult) -> None:
        self._settings = settings
        self._codec = codec
        self.result = result
        self.deals: dict[str, Deal] = {}
        self.seen: set[str] = set()

    async def decode(self, record: RawRecord) -> Located | None:
        """The event a record holds with its position, or None when it is undecodable (the
        live projector dead-letters those; a rebuild only counts and reports them)."""
        result = self.result
        tp: TP = (self._settings.topic(record.topic), record.partition)
        result.events_read += 1
        result.consumed[tp] = record.offset
        cls = EVENT_BY_TOPIC[record.topic]
        try:
            # Transient: never report a message as undecodable because the registry blinked.
            event = await retry(
                QUICK,
                lambda: self._codec.decode_event(cls, record.value),
                what="registry",
                retry_on=(RegistryUnavailable,),
            )
        except (DecodeError, InvalidEvent) as exc:
            result.skipped += 1
            if len(result.skipped_samples) < SKIPPED_SAMPLES:
                result.skipped_samples.append(
                    SkippedMessage(tp[0], record.partition, record.offset, type(exc).__name__, str(exc)[:300])
                )
            return None
        result.applied[tp] = record.offset
        return Located(event, Position(tp[0], record.partition, record.offset))

    def fold(self, located: Located) -> bool:
        """Fold an event in; False for an event id already folded (as the projector's history drops it)."""
        event = located.event
        if event.event_id in self.seen:
            self.result.duplicates += 1
            return False
        self.seen.add(event.event_id)
        self.deals[event.offer_id] = apply_event(self.deals.get(event.offer_id), event)
        self.result.events_applied += 1
        return True


async def read_into_shadow(settings: Settings, spans: Sequence[PartitionSpan], progress: Progress | None) -> ReadResult:
    """Phase 1 for a set of partitions: fold them and COPY the result into the shadow.

    COPY of a batch runs while the next batch is decoded (Postgres works in its own
    process), so the database write mostly overlaps the CPU-bound decoding."""
    result = ReadResult()
    plan = plan_of(settings, spans)
    if not plan.ranges:
        return result
    folder = ShadowFolder(settings, codec_from_settings(settings), result)
    db = await asyncpg.connect(settings.asyncpg_dsn)
    pending: list[tuple[object, ...]] = []
    copying: asyncio.Task[None] | None = None
    try:
        async with bulk_reader(settings) as reader:
            async for batch in reader.read_batches(plan, max_records=FETCH_MAX_RECORDS):
                for record in batch:
                    located = await folder.decode(record)
                    if located is not None and folder.fold(located):
                        pending.append(shadow.event_record(located))
                if progress:
                    progress(len(batch))
                if len(pending) >= COPY_BATCH_ROWS:
                    if copying is not None:
                        await copying
                    rows, pending = pending, []
                    copying = asyncio.create_task(shadow.copy_events(db, rows))
        if copying is not None:
            await copying
            copying = None
        await shadow.copy_events(db, pending)
        await shadow.copy_offers(db, folder.deals.values())
        result.offers = len(folder.deals)
        return result
    finally:
        if copying is not None and not copying.done():
            copying.cancel()
        await db.close()


async def live_positions(conn: AsyncConnection, topics: Sequence[str]) -> dict[TP, int]:
    """The live projector's positions (last applied offset per physical topic partition)."""
    rows = await conn.execute(
        select(projection_tracking.c.topic, projection_tracking.c.partition, projection_tracking.c.offset).where(
            projection_tracking.c.consumer == LIVE_CONSUMER, projection_tracking.c.topic.in_(list(topics))
        )
    )
    return {(topic, partition): offset for topic, partition, offset in rows}


class CatchUp:
    """Follows the live positions: reads (shadow position, live position] per partition and
    folds it into the shadow tables through the projector's own row writers."""

    def __init__(self, settings: Settings, state: ReadResult) -> None:
        self._settings = settings
        self._state = state
        self._codec = codec_from_settings(settings)
        self._reader: TopicReader | None = None
        self.events = 0

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.__aexit__(None, None, None)

    async def to(self, conn: AsyncConnection, targets: Mapping[TP, int]) -> int:
        """Bring the shadow to ``targets`` where it is behind, inside ``conn``'s transaction."""
        behind = {tp: target for tp, target in targets.items() if target > self._state.consumed.get(tp, -1)}
        if not behind:
            return 0
        if self._reader is None:
            self._reader = await bulk_reader(self._settings).__aenter__()
        spans = [
            PartitionSpan(tp[0], tp[1], self._state.consumed.get(tp, -1) + 1, target + 1)
            for tp, target in behind.items()
        ]
        result = ReadResult()
        folder = ShadowFolder(self._settings, self._codec, result)
        items: list[Located] = []
        async for batch in self._reader.read_batches(plan_of(self._settings, spans), max_records=FETCH_MAX_RECORDS):
            for record in batch:
                located = await folder.decode(record)
                if located is not None:
                    items.append(located)
        folded = await fold_into(conn, shadow.SHADOW, items)
        result.events_applied = len(folded.applied)
        result.duplicates = len(items) - len(folded.applied)
        self._state.merge(result)
        self.events += result.events_read
        return result.events_read
