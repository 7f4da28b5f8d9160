"""Rebuild the deal projections from the event log beside the live ones, compare, swap.

Phases (the operator's view is docs/runbooks/rebuild.md):

1. **read** (no lock): every partition of every lifecycle topic, from its first offset up
   to the high-water mark taken at the start, is decoded with the registry codec and folded
   with the projector's own pure ``apply_event`` into UNLOGGED shadow tables
   (``offers_rebuild``, ``deal_events_rebuild``) with COPY. Partitions are split across
   worker processes: every topic is keyed by ``offer_id``, so partition *p* of every topic
   holds all events of the same offers and a worker folds its offers alone.
2. **catch-up** (no lock): the shadow follows the live projector's tracking positions
   until it stands exactly where the live projector stands (the live projector keeps
   running and keeps moving; this loop just gets close).
3. **reconcile**, ONE transaction: reads the live positions, applies the last few events
   to the shadow so both reflect the same input, compares row by row and by canonical hash,
   and (``swap``) applies the shadow to the live tables.
   * verify: REPEATABLE READ, no lock. The projector commits its tracking rows with its
     projection rows, so any snapshot is a consistent (positions, tables) pair; the live
     projector is never paused.
   * swap: READ COMMITTED (each statement sees every projector commit made before we got
     the lock) after ``take_write_lock``: the live projector waits, it does not fail.

The swap is a *merge*, not a table rename or a DELETE-all + INSERT-all: renames change
table OIDs under the web processes' prepared statements; rewriting every row costs WAL and
lock time in proportion to the table and turns every row into a new version. Merging
only the rows that differ, in the same transaction, gives readers the same guarantee (old
rows until COMMIT, then the new ones; a reader never blocks and never sees a half state)
at a cost in proportion to the differences: an identical rebuild writes nothing.

Nothing here produces to Kafka, calls a provider or renders a document: the rebuild reads
Kafka and writes Postgres projection tables only.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import enum
import functools
import json
import os
import pickle
import sys
import time
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from infra.avro import (
    DecodeError,
    RegistryCodec,
    RegistryUnavailable,
    SchemaCatalog,
    _coerce,
    _plain,
    event_to_record,
    new_registry_client,
    record_to_event,
)
from infra.db import create_engine
from infra.settings import REPO_ROOT, Settings
from models.deal import Deal, apply_event
from models.errors import InvalidEvent
from models.events import LIFECYCLE_EVENTS, Event
from models.validation import validate_event
from projections.projector import NOTIFY_CHANNEL, Position, record_position, take_write_lock
from projections.rows import deal_json, deal_to_row, jsonable, row_to_deal
from projections.tables import deal_events, offers, projection_tracking

# Must equal agents.projector.AGENT (projections may not import agents; a test checks it).
LIVE_CONSUMER = "projector"
SHADOW_OFFERS = "offers_rebuild"
SHADOW_EVENTS = "deal_events_rebuild"
# Session-level advisory lock held for a whole run: two rebuilds would share shadow tables.
REBUILD_GUARD_LOCK = 0x5EA_3005_1D
CORRECTION_EVENT_TYPE = "projection.rebuilt"

# first_seq/change_seq are SSE bookkeeping a rebuild cannot recompute: never compared,
# kept from the live row on a swap. recorded_at is when the projector wrote the row.
OFFER_COLUMNS: tuple[str, ...] = tuple(c.name for c in offers.columns if c.name not in ("first_seq", "change_seq"))
EVENT_COLUMNS: tuple[str, ...] = tuple(c.name for c in deal_events.columns if c.name != "recorded_at")

COPY_BATCH_ROWS = 5_000
FETCH_MAX_RECORDS = 5_000
SKIPPED_SAMPLES = 20
REGISTRY_ATTEMPTS = 6

TP = tuple[str, int]  # (physical topic, partition): picklable, usable as a dict key
Progress = Callable[[int], None]


class RebuildError(RuntimeError):
    """The rebuild cannot proceed (nothing live was changed); the message says why."""


# ---------------------------------------------------------------- report types


@dataclass(frozen=True, slots=True)
class PartitionSpan:
    """One partition to read: offsets ``begin`` (first) up to ``end`` (high-water, exclusive)."""

    topic: str
    partition: int
    begin: int
    end: int

    @property
    def tp(self) -> TP:
        return (self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class SkippedMessage:
    topic: str
    partition: int
    offset: int
    error_type: str
    error: str


@dataclass
class ReadResult:
    """What one reader (a worker process, or the catch-up) consumed and applied."""

    consumed: dict[TP, int] = field(default_factory=dict)  # last offset read
    applied: dict[TP, int] = field(default_factory=dict)  # last offset of a valid event
    events_read: int = 0
    events_applied: int = 0
    duplicates: int = 0
    skipped: int = 0
    skipped_samples: list[SkippedMessage] = field(default_factory=list)
    offers: int = 0

    def merge(self, other: ReadResult) -> None:
        for tp, offset in other.consumed.items():
            self.consumed[tp] = max(offset, self.consumed.get(tp, -1))
        for tp, offset in other.applied.items():
            self.applied[tp] = max(offset, self.applied.get(tp, -1))
        self.events_read += other.events_read
        self.events_applied += other.events_applied
        self.duplicates += other.duplicates
        self.skipped += other.skipped
        room = SKIPPED_SAMPLES - len(self.skipped_samples)
        self.skipped_samples.extend(other.skipped_samples[: max(room, 0)])
        self.offers += other.offers


@dataclass(frozen=True, slots=True)
class RowDiff:
    table: str
    key: str
    kind: str  # "missing" (rebuild has it, live not), "extra" (live only), "differs"
    columns: tuple[str, ...] = ()
    live: Mapping[str, Any] | None = None
    shadow: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class TableComparison:
    table: str
    live_rows: int
    shadow_rows: int
    live_hash: str
    shadow_hash: str
    missing: tuple[str, ...]
    extra: tuple[str, ...]
    differing: tuple[str, ...]
    samples: tuple[RowDiff, ...]

    @property
    def differences(self) -> int:
        return len(self.missing) + len(self.extra) + len(self.differing)

    @property
    def identical(self) -> bool:
        return self.differences == 0 and self.live_hash == self.shadow_hash


@dataclass
class RebuildReport:
    mode: str  # "verify" or "swap"
    forced: bool
    workers: int
    read: ReadResult
    catch_up_events: int
    positions: dict[TP, int]  # where the shadow stands (last applied offset per partition)
    live_positions: dict[TP, int]
    live_behind: dict[TP, int]  # partitions where the live projector had not reached the shadow
    tables: tuple[TableComparison, ...]
    swapped: bool
    changed_offers: int
    handed_over: dict[TP, int]
    timings: dict[str, float]
    truncated_partitions: tuple[TP, ...] = ()

    @property
    def identical(self) -> bool:
        return all(t.identical for t in self.tables)

    @property
    def differences(self) -> int:
        return sum(t.differences for t in self.tables)

    @property
    def events_per_second(self) -> float:
        seconds = self.timings.get("read", 0.0)
        return self.read.events_read / seconds if seconds > 0 else 0.0


@dataclass(frozen=True)
class RebuildOptions:
    swap: bool = True  # False: --verify-only
    force: bool = False  # swap even when the comparison found differences
    workers: int | None = None  # None: one per CPU, at most one per partition
    live_wait_seconds: float = 30.0  # how long to wait for a lagging live projector
    samples: int = 20  # differing rows described in detail, per table


# ---------------------------------------------------------------- decoding (hot path)


_SCALARS = (str, int, bool, float)
_PASS, _STR, _COERCE = 0, 1, 2


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


@functools.cache
def _plan(cls: type[Event]) -> tuple[tuple[str, Any, int], ...]:
    """Per field: (name, type hint, how to convert). Decided once per class, where
    infra.avro.record_to_event re-evaluates every hint on every call (most of its cost)."""
    plan = []
    for name, hint in ((n, typing.get_type_hints(cls)[n]) for n in _field_names(cls)):
        inner = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_args(hint) else [hint]
        base = inner[0] if len(inner) == 1 else None
        # What infra.avro._coerce does for these hints: ints pass through, strings only turn
        # a UUID into its text; anything else (enums, datetimes, tuples) goes to _coerce.
        kind = _PASS if base in (int, bool, float) else _STR if base is str else _COERCE
        plan.append((name, hint, kind))
    return tuple(plan)


def _to_event(cls: type[Event], record: dict[str, Any]) -> Event:
    """``infra.avro.record_to_event`` (build + validate), with the per-field work planned
    once per class. _Decoder checks the two agree."""
    kwargs: dict[str, Any] = {}
    try:
        for name, hint, kind in _plan(cls):
            if name not in record:
                continue
            value = record[name]
            if kind == _STR:
                kwargs[name] = str(value) if isinstance(value, uuid.UUID) else value
            elif kind == _PASS or value is None:
                kwargs[name] = value
            else:
                kwargs[name] = _coerce(value, hint)
        event = cls(**kwargs)
    except (TypeError, ValueError, KeyError) as exc:
        raise InvalidEvent(f"record is not a valid {cls.__name__}: {exc}") from exc
    return validate_event(event)


def _jsonable_item(item: Any) -> Any:
    if item is None or type(item) in _SCALARS:
        return item
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        fields = {name: getattr(item, name) for name in _field_names(type(item))}
        if all(v is None or type(v) in _SCALARS for v in fields.values()):
            return fields
    return jsonable(_plain(item))


def _payload(event: Event) -> dict[str, Any]:
    """``jsonable(event_to_record(event))``: the projector's deal_events payload, faster."""
    out: dict[str, Any] = {}
    for name in _field_names(type(event)):
        value = getattr(event, name)
        if value is None or type(value) in _SCALARS:
            out[name] = value
        elif isinstance(value, datetime):
            out[name] = value.isoformat()
        elif isinstance(value, enum.Enum):
            out[name] = value.value
        elif isinstance(value, tuple):
            out[name] = [_jsonable_item(item) for item in value]
        else:
            out[name] = jsonable(_plain(value))
    return out


class _Decoder:
    """Registry decoding plus the fast event/payload mapping, cross-checked against the
    projector's own functions on the first message of every event type."""

    def __init__(self, codec: RegistryCodec) -> None:
        self._codec = codec
        self._checked: set[type[Event]] = set()

    async def decode(self, cls: type[Event], data: bytes | None) -> tuple[Event, dict[str, Any]]:
        attempt = 0
        while True:
            attempt += 1
            try:
                record = await self._codec.decode(cls.TOPIC, data)
                break
            except RegistryUnavailable:
                # Transient: never report a message as undecodable because the registry blinked.
                if attempt >= REGISTRY_ATTEMPTS:
                    raise
                await asyncio.sleep(0.25 * 2**attempt)
        event = _to_event(cls, record)
        payload = _payload(event)
        if cls not in self._checked:
            if event != record_to_event(cls, record) or payload != jsonable(event_to_record(event)):
                raise RebuildError(
                    f"fast decoding of {cls.TOPIC} disagrees with infra.avro: fix projections/rebuild.py"
                )
            self._checked.add(cls)
        return event, payload


def new_codec(settings: Settings) -> RegistryCodec:
    return RegistryCodec(
        new_registry_client(settings.schema_registry_url),
        SchemaCatalog.load(settings.schema_dir),
        settings.topic_namespace,
    )


def _new_consumer(settings: Settings) -> AIOKafkaConsumer:
    # No group: assign + seek. Nothing is committed, nobody's group is rebalanced.
    return AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="spacemusic-rebuild",
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
        fetch_max_wait_ms=100,
    )


# ---------------------------------------------------------------- SQL helpers


def _q(name: str) -> str:
    return f'"{name}"'


def _cols(columns: Iterable[str], prefix: str = "") -> str:
    return ", ".join(f"{prefix}{_q(c)}" for c in columns)


def _plain_value(value: Any) -> Any:
    # asyncpg returns its own UUID type; the domain (Deal, deal_json) works with strings.
    return str(value) if isinstance(value, uuid.UUID) else value


def _plain_row(record: Mapping[str, Any], columns: Sequence[str]) -> dict[str, Any]:
    return {c: _plain_value(record[c]) for c in columns}


def _offer_record(deal: Deal) -> tuple[Any, ...]:
    row = deal_to_row(deal)
    return tuple(row[c] for c in OFFER_COLUMNS)


def _event_record(event: Event, payload: dict[str, Any], topic: str, partition: int, offset: int) -> tuple[Any, ...]:
    # Column order of EVENT_COLUMNS; the same values projections.projector.apply_to_deal writes.
    return (
        event.event_id,
        event.offer_id,
        event.TOPIC,
        event.occurred_at,
        topic,
        partition,
        offset,
        json.dumps(payload, separators=(",", ":")),
    )


async def _create_shadow(conn: asyncpg.Connection) -> None:
    # UNLOGGED: throwaway tables need no WAL; keys are added after the bulk load (faster).
    await conn.execute(f"DROP TABLE IF EXISTS {SHADOW_OFFERS}, {SHADOW_EVENTS}")
    await conn.execute(f"CREATE UNLOGGED TABLE {SHADOW_OFFERS} (LIKE offers INCLUDING DEFAULTS)")
    await conn.execute(
        f"ALTER TABLE {SHADOW_OFFERS} ALTER COLUMN first_seq DROP NOT NULL, ALTER COLUMN change_seq DROP NOT NULL"
    )
    await conn.execute(f"CREATE UNLOGGED TABLE {SHADOW_EVENTS} (LIKE deal_events INCLUDING DEFAULTS)")


async def _index_shadow(conn: asyncpg.Connection) -> None:
    try:
        await conn.execute(f"ALTER TABLE {SHADOW_OFFERS} ADD PRIMARY KEY (offer_id)")
        await conn.execute(f"ALTER TABLE {SHADOW_EVENTS} ADD PRIMARY KEY (event_id)")
    except asyncpg.UniqueViolationError as exc:
        # Two workers folded the same offer: its events are not co-partitioned.
        raise RebuildError(
            "the same offer or event was read by two workers (topics not co-partitioned by offer_id?): "
            f"rerun with --workers 1 ({exc})"
        ) from exc
    await conn.execute(f"ANALYZE {SHADOW_OFFERS}, {SHADOW_EVENTS}")


async def drop_shadow(conn: asyncpg.Connection) -> None:
    await conn.execute(f"DROP TABLE IF EXISTS {SHADOW_OFFERS}, {SHADOW_EVENTS}")


# ---------------------------------------------------------------- phase 1: read


async def kafka_spans(settings: Settings) -> list[PartitionSpan]:
    """Every partition of every lifecycle topic, with its offsets at this moment."""
    topics = [settings.topic(cls.TOPIC) for cls in LIFECYCLE_EVENTS]
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, client_id="spacemusic-rebuild")
    await admin.start()
    try:
        described = {t["topic"]: t for t in await admin.describe_topics(topics)}
    finally:
        await admin.close()
    tps: list[TopicPartition] = []
    for topic in topics:
        info = described.get(topic)
        if info is None or info["error_code"] != 0 or not info["partitions"]:
            raise RebuildError(f"topic {topic} does not exist or has no partitions (spacemusic topics create)")
        tps += [TopicPartition(topic, p["partition"]) for p in sorted(info["partitions"], key=lambda p: p["partition"])]
    consumer = _new_consumer(settings)
    await consumer.start()
    try:
        begins = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return [PartitionSpan(tp.topic, tp.partition, begins[tp], ends[tp]) for tp in tps]


class _ShadowFolder:
    """The in-memory fold of one reader: deals by offer id, event ids seen, rows to COPY."""

    def __init__(self, decoder: _Decoder, result: ReadResult) -> None:
        self.decoder = decoder
        self.result = result
        self.deals: dict[str, Deal] = {}
        self.seen: set[str] = set()
        self.pending_events: list[tuple[Any, ...]] = []

    async def decode(
        self, topic: str, partition: int, offset: int, value: bytes | None, cls: type[Event]
    ) -> tuple[Event, dict[str, Any]] | None:
        """Decode one message and account for it; None when it is skipped as undecodable."""
        result = self.result
        result.events_read += 1
        result.consumed[(topic, partition)] = offset
        try:
            decoded = await self.decoder.decode(cls, value)
        except (DecodeError, InvalidEvent) as exc:
            # The live projector dead-letters these; a rebuild only counts and reports them.
            result.skipped += 1
            if len(result.skipped_samples) < SKIPPED_SAMPLES:
                result.skipped_samples.append(
                    SkippedMessage(topic, partition, offset, type(exc).__name__, str(exc)[:300])
                )
            return None
        result.applied[(topic, partition)] = offset
        return decoded

    async def add(self, topic: str, partition: int, offset: int, value: bytes | None, cls: type[Event]) -> None:
        decoded = await self.decode(topic, partition, offset, value, cls)
        if decoded is None:
            return
        event, payload = decoded
        if event.event_id in self.seen:
            self.result.duplicates += 1  # the projector's history table drops it the same way
            return
        self.seen.add(event.event_id)
        self.deals[event.offer_id] = apply_event(self.deals.get(event.offer_id), event)
        self.pending_events.append(_event_record(event, payload, topic, partition, offset))
        self.result.events_applied += 1


async def _copy(conn: asyncpg.Connection, table: str, columns: Sequence[str], rows: list[tuple[Any, ...]]) -> None:
    if rows:
        await conn.copy_records_to_table(table, records=rows, columns=list(columns))


async def read_into_shadow(settings: Settings, spans: Sequence[PartitionSpan], progress: Progress | None) -> ReadResult:
    """Phase 1 for a set of partitions: fold them and COPY the result into the shadow.

    COPY of a batch runs while the next batch is decoded (Postgres works in its own
    process), so the database write mostly overlaps the CPU-bound decoding.
    """
    result = ReadResult()
    todo = {span.tp: span for span in spans if span.end > span.begin}
    if not todo:
        return result
    codec = new_codec(settings)
    folder = _ShadowFolder(_Decoder(codec), result)
    classes = {settings.topic(cls.TOPIC): cls for cls in LIFECYCLE_EVENTS}
    db = await asyncpg.connect(settings.asyncpg_dsn)
    consumer = _new_consumer(settings)
    await consumer.start()
    copying: asyncio.Task[None] | None = None
    try:
        assignment = [TopicPartition(*tp) for tp in todo]
        consumer.assign(assignment)
        for tp in assignment:
            consumer.seek(tp, todo[(tp.topic, tp.partition)].begin)
        remaining = set(assignment)
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=FETCH_MAX_RECORDS)
            read = 0
            for tp, messages in batch.items():
                end = todo[(tp.topic, tp.partition)].end
                cls = classes[tp.topic]
                for message in messages:
                    if message.offset >= end:
                        break  # written after the start: the catch-up phase reads it
                    await folder.add(tp.topic, tp.partition, message.offset, message.value, cls)
                    read += 1
                # position(), not the last offset seen: it steps over offsets that hold no record
                if await consumer.position(tp) >= end:
                    remaining.discard(tp)
            if progress and read:
                progress(read)
            if len(folder.pending_events) >= COPY_BATCH_ROWS:
                if copying is not None:
                    await copying
                rows, folder.pending_events = folder.pending_events, []
                copying = asyncio.create_task(_copy(db, SHADOW_EVENTS, EVENT_COLUMNS, rows))
        if copying is not None:
            await copying
            copying = None
        await _copy(db, SHADOW_EVENTS, EVENT_COLUMNS, folder.pending_events)
        folder.pending_events = []
        await _copy(db, SHADOW_OFFERS, OFFER_COLUMNS, [_offer_record(d) for d in folder.deals.values()])
        result.offers = len(folder.deals)
        return result
    finally:
        if copying is not None and not copying.done():
            copying.cancel()
        await consumer.stop()
        await db.close()


def split_by_partition(spans: Sequence[PartitionSpan], workers: int) -> list[list[PartitionSpan]]:
    """Partition *p* of every topic goes to the same worker (co-partitioned by offer_id)."""
    numbers = sorted({s.partition for s in spans})
    groups: list[list[PartitionSpan]] = [[] for _ in range(min(workers, len(numbers)) or 1)]
    for i, number in enumerate(numbers):
        groups[i % len(groups)].extend(s for s in spans if s.partition == number)
    return [g for g in groups if g]


async def _read_phase(
    settings: Settings, spans: Sequence[PartitionSpan], workers: int, progress: Progress | None
) -> ReadResult:
    groups = split_by_partition(spans, workers)
    if len(groups) == 1:
        return await read_into_shadow(settings, groups[0], progress)
    results = await asyncio.gather(*(_run_reader(settings, group, progress) for group in groups))
    merged = ReadResult()
    for result in results:
        merged.merge(result)
    return merged


async def _run_reader(settings: Settings, spans: list[PartitionSpan], progress: Progress | None) -> ReadResult:
    """One reader process: ``python -m projections.rebuild`` (a fresh interpreter that never
    imports the caller's __main__, unlike multiprocessing's spawn). Arguments go in on
    stdin, progress and the result come back as lines on stdout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "projections.rebuild",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        limit=16 * 1024 * 1024,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    errors = asyncio.create_task(proc.stderr.read())  # drained concurrently: a full pipe would block the child
    result: ReadResult | None = None
    try:
        proc.stdin.write(pickle.dumps((settings, spans)))
        await proc.stdin.drain()
        proc.stdin.close()
        async for line in proc.stdout:
            kind, _, body = line.decode().partition(" ")
            if kind == "progress" and progress:
                progress(int(body))
            elif kind == "result":
                result = pickle.loads(base64.b64decode(body))  # our own child: trusted
        code = await proc.wait()
        stderr = (await errors).decode(errors="replace")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if code != 0 or result is None:
        raise RebuildError(f"reader process failed (exit {code}): {stderr.strip()[-2000:]}")
    return result


def _reader_main() -> None:
    """Entry point of a reader process (see _run_reader)."""
    settings, spans = pickle.loads(sys.stdin.buffer.read())
    out = sys.stdout

    def progress(n: int) -> None:
        out.write(f"progress {n}\n")
        out.flush()

    result = asyncio.run(read_into_shadow(settings, spans, progress))
    out.write("result " + base64.b64encode(pickle.dumps(result)).decode() + "\n")
    out.flush()


# ---------------------------------------------------------------- phase 2: catch-up


async def live_positions(conn: AsyncConnection, topics: Iterable[str]) -> dict[TP, int]:
    """The live projector's positions (last applied offset per physical topic partition)."""
    rows = await conn.execute(
        select(projection_tracking.c.topic, projection_tracking.c.partition, projection_tracking.c.offset).where(
            projection_tracking.c.consumer == LIVE_CONSUMER, projection_tracking.c.topic.in_(list(topics))
        )
    )
    return {(topic, partition): offset for topic, partition, offset in rows}


class _CatchUp:
    """Follows the live positions: reads (shadow position, live position] per partition and
    applies it to the shadow tables the way the projector applies to the live ones."""

    def __init__(self, settings: Settings, state: ReadResult) -> None:
        self._settings = settings
        self._state = state
        self._decoder = _Decoder(new_codec(settings))
        self._classes = {settings.topic(cls.TOPIC): cls for cls in LIFECYCLE_EVENTS}
        self._consumer: AIOKafkaConsumer | None = None
        self.events = 0

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def _kafka(self, tps: Sequence[TopicPartition]) -> AIOKafkaConsumer:
        if self._consumer is None:
            self._consumer = _new_consumer(self._settings)
            await self._consumer.start()
        self._consumer.assign(list(tps))
        return self._consumer

    async def to(self, db: asyncpg.Connection, targets: Mapping[TP, int]) -> int:
        """Bring the shadow to ``targets`` where it is behind; returns events read."""
        behind = {tp: target for tp, target in targets.items() if target > self._state.consumed.get(tp, -1)}
        if not behind:
            return 0
        consumer = await self._kafka([TopicPartition(*tp) for tp in behind])
        for tp in behind:
            consumer.seek(TopicPartition(*tp), self._state.consumed.get(tp, -1) + 1)
        result = ReadResult()
        folder = _ShadowFolder(self._decoder, result)
        events: list[Event] = []
        records: list[tuple[Any, ...]] = []
        remaining = {TopicPartition(*tp) for tp in behind}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000, max_records=FETCH_MAX_RECORDS)
            for tp, messages in batch.items():
                target = behind[(tp.topic, tp.partition)]
                for message in messages:
                    if message.offset > target:
                        break
                    decoded = await folder.decode(
                        tp.topic, tp.partition, message.offset, message.value, self._classes[tp.topic]
                    )
                    if decoded is not None:
                        events.append(decoded[0])
                        records.append(_event_record(decoded[0], decoded[1], tp.topic, tp.partition, message.offset))
                if await consumer.position(tp) > target:
                    remaining.discard(tp)
        result.events_applied, result.duplicates = await _apply_to_shadow(db, events, records)
        self._state.merge(result)
        self.events += result.events_read
        return result.events_read


async def _apply_to_shadow(
    db: asyncpg.Connection, events: list[Event], records: list[tuple[Any, ...]]
) -> tuple[int, int]:
    """Fold a few events into the shadow tables (deals loaded from, and written back to,
    ``offers_rebuild``; an event id already there is a duplicate, as in the projector).
    Returns (applied, duplicates)."""
    if not events:
        return 0, 0
    known = {
        str(r[0])
        for r in await db.fetch(
            f"SELECT event_id FROM {SHADOW_EVENTS} WHERE event_id = ANY($1::uuid[])", [e.event_id for e in events]
        )
    }
    rows = await db.fetch(
        f"SELECT {_cols(OFFER_COLUMNS)} FROM {SHADOW_OFFERS} WHERE offer_id = ANY($1::uuid[])",
        sorted({e.offer_id for e in events}),
    )
    deals = {deal.offer_id: deal for deal in (row_to_deal(_plain_row(r, OFFER_COLUMNS)) for r in rows)}
    new_records: list[tuple[Any, ...]] = []
    touched: set[str] = set()
    duplicates = 0
    for event, record in zip(events, records, strict=True):
        if event.event_id in known:
            duplicates += 1
            continue
        known.add(event.event_id)
        deals[event.offer_id] = apply_event(deals.get(event.offer_id), event)
        touched.add(event.offer_id)
        new_records.append(record)
    await _copy(db, SHADOW_EVENTS, EVENT_COLUMNS, new_records)
    if touched:
        updates = ", ".join(f"{_q(c)} = EXCLUDED.{_q(c)}" for c in OFFER_COLUMNS if c != "offer_id")
        placeholders = ", ".join(f"${i}" for i in range(1, len(OFFER_COLUMNS) + 1))
        await db.executemany(
            f"INSERT INTO {SHADOW_OFFERS} ({_cols(OFFER_COLUMNS)}) VALUES ({placeholders}) "
            f"ON CONFLICT (offer_id) DO UPDATE SET {updates}",
            [_offer_record(deals[offer_id]) for offer_id in sorted(touched)],
        )
    return len(new_records), duplicates


# ---------------------------------------------------------------- phase 3: compare


@dataclass(frozen=True, slots=True)
class TableSpec:
    live: str
    shadow: str
    columns: tuple[str, ...]  # the compared columns
    key: str
    jsonb: tuple[str, ...] = ()

    def row_hash(self, alias: str) -> str:
        """A 64-bit hash of one row's compared columns: the text of the scalar columns (a ROW's
        text keeps NULL and '' apart) plus Postgres' own hash of each jsonb value, which is
        key-order independent and much cheaper than printing the jsonb."""
        scalars = [c for c in self.columns if c not in self.jsonb]
        text = f"ROW({_cols(scalars, alias)})::text" + "".join(
            f" || ':' || coalesce(jsonb_hash_extended({alias}{_q(c)}, 0)::text, '')" for c in self.jsonb
        )
        return f"hashtextextended({text}, 0)"


OFFERS_SPEC = TableSpec("offers", SHADOW_OFFERS, OFFER_COLUMNS, "offer_id")
EVENTS_SPEC = TableSpec(
    "deal_events",
    SHADOW_EVENTS,
    EVENT_COLUMNS,
    "event_id",
    tuple(c.name for c in deal_events.columns if isinstance(c.type, JSONB) and c.name in EVENT_COLUMNS),
)


def _fold_hash(total: Any) -> str:
    # The table hash is the sum of the row hashes mod 2^64: independent of row order, so no
    # sort is needed; one pass over each table computes it together with the row diff.
    return f"{int(total or 0) % 2**64:016x}"


async def table_hash(db: asyncpg.Connection, spec: TableSpec, table: str | None = None) -> tuple[int, str]:
    """(rows, canonical hash) of one table; comparable with the hashes in a RebuildReport
    computed by the same Postgres server."""
    row = await db.fetchrow(f"SELECT count(*) AS n, sum({spec.row_hash('')}) AS h FROM {table or spec.live}")
    assert row is not None
    return int(row["n"]), _fold_hash(row["h"])


async def canonical_hashes(db: asyncpg.Connection) -> dict[str, tuple[int, str]]:
    """The live tables' canonical hashes (what a rebuild's shadow hashes are compared with)."""
    return {spec.live: await table_hash(db, spec) for spec in (OFFERS_SPEC, EVENTS_SPEC)}


async def compare_table(db: asyncpg.Connection, spec: TableSpec, samples: int) -> TableComparison:
    """Row by row (by key and row hash) and as a whole (canonical hash), in one pass."""
    key = _q(spec.key)
    row = await db.fetchrow(
        "SELECT count(l.k) AS live_rows, sum(l.h) AS live_sum, count(s.k) AS shadow_rows, sum(s.h) AS shadow_sum, "
        "coalesce(array_agg(s.k::text ORDER BY s.k) FILTER (WHERE l.k IS NULL), '{}') AS missing, "
        "coalesce(array_agg(l.k::text ORDER BY l.k) FILTER (WHERE s.k IS NULL), '{}') AS extra, "
        "coalesce(array_agg(l.k::text ORDER BY l.k) FILTER (WHERE l.h <> s.h), '{}') AS differs "
        f"FROM (SELECT {key} AS k, {spec.row_hash('')} AS h FROM {spec.live}) l "
        f"FULL JOIN (SELECT {key} AS k, {spec.row_hash('')} AS h FROM {spec.shadow}) s ON s.k = l.k"
    )
    assert row is not None
    kinds = {"missing": list(row["missing"]), "extra": list(row["extra"]), "differs": list(row["differs"])}
    sampled = [(k, kind) for kind, keys in kinds.items() for k in keys][:samples]
    details: list[RowDiff] = []
    if sampled:
        keys = [k for k, _ in sampled]
        query = f"SELECT {_cols(spec.columns)} FROM {{table}} WHERE {key} = ANY($1::uuid[])"
        live_rows = {
            str(r[spec.key]): _plain_row(r, spec.columns) for r in await db.fetch(query.format(table=spec.live), keys)
        }
        shadow_rows = {
            str(r[spec.key]): _plain_row(r, spec.columns) for r in await db.fetch(query.format(table=spec.shadow), keys)
        }
        others = [c for c in spec.columns if c != spec.key]
        for k, kind in sampled:
            left, right = live_rows.get(k), shadow_rows.get(k)
            changed = tuple(c for c in others if left and right and left[c] != right[c])
            details.append(RowDiff(spec.live, k, kind, changed, left, right))
    return TableComparison(
        table=spec.live,
        live_rows=int(row["live_rows"]),
        shadow_rows=int(row["shadow_rows"]),
        live_hash=_fold_hash(row["live_sum"]),
        shadow_hash=_fold_hash(row["shadow_sum"]),
        missing=tuple(kinds["missing"]),
        extra=tuple(kinds["extra"]),
        differing=tuple(kinds["differs"]),
        samples=tuple(details),
    )


# ---------------------------------------------------------------- phase 3: swap


async def _swap(db: asyncpg.Connection, run_id: str, offers_cmp: TableComparison, events_cmp: TableComparison) -> int:
    """Make the live tables equal to the shadow (the caller holds the projection write lock,
    inside the reconcile transaction). Only differing rows are written; key lists are joined
    through unnest. Returns the number of offers inserted or corrected."""
    if events_cmp.extra:
        await db.execute(
            "DELETE FROM deal_events l USING unnest($1::uuid[]) AS u(k) WHERE l.event_id = u.k",
            list(events_cmp.extra),
        )
    upsert_events = [*events_cmp.missing, *events_cmp.differing]
    if upsert_events:
        sets = ", ".join(f"{_q(c)} = EXCLUDED.{_q(c)}" for c in EVENT_COLUMNS if c != "event_id")
        await db.execute(
            f"INSERT INTO deal_events ({_cols(EVENT_COLUMNS)}) "
            f"SELECT {_cols(EVENT_COLUMNS, 's.')} FROM {SHADOW_EVENTS} s JOIN unnest($1::uuid[]) AS u(k) "
            f"ON s.event_id = u.k ON CONFLICT (event_id) DO UPDATE SET {sets}",
            upsert_events,
        )
    if offers_cmp.extra:
        # A live deal no event supports. SSE clients learn of it on their next full load.
        await db.execute(
            "DELETE FROM offers l USING unnest($1::uuid[]) AS u(k) WHERE l.offer_id = u.k", list(offers_cmp.extra)
        )
    changed = [*offers_cmp.missing, *offers_cmp.differing]
    if not changed:
        return 0
    # Every corrected deal gets a change-log row (its SSE id), as the projector writes per event.
    rows = await db.fetch(
        f"SELECT {_cols(OFFER_COLUMNS, 's.')} FROM {SHADOW_OFFERS} s JOIN unnest($1::uuid[]) AS u(k) "
        "ON s.offer_id = u.k ORDER BY s.offer_id",
        changed,
    )
    columns: list[list[Any]] = [[], [], [], [], []]
    for record in rows:
        row = _plain_row(record, OFFER_COLUMNS)
        offer_id = row["offer_id"]
        columns[0].append(offer_id)
        columns[1].append(row["creator_id"])
        columns[2].append(str(uuid.uuid5(uuid.NAMESPACE_URL, f"spacemusic:rebuild:{run_id}:{offer_id}")))
        columns[3].append(row["status"])
        columns[4].append(json.dumps(deal_json(row), separators=(",", ":")))
    seqs = await db.fetch(
        "INSERT INTO deal_changes (offer_id, creator_id, event_id, event_type, status, deal) "
        "SELECT o, c, e, $6::text, s, d::jsonb FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[]) "
        "AS u(o, c, e, s, d) RETURNING offer_id, seq",
        *columns,
        CORRECTION_EVENT_TYPE,
    )
    by_offer = {str(r["offer_id"]): int(r["seq"]) for r in seqs}
    sets = ", ".join(f"{_q(c)} = EXCLUDED.{_q(c)}" for c in (*OFFER_COLUMNS, "change_seq") if c != "offer_id")
    await db.execute(
        f"INSERT INTO offers ({_cols(OFFER_COLUMNS)}, first_seq, change_seq) "
        f"SELECT {_cols(OFFER_COLUMNS, 's.')}, u.seq, u.seq FROM {SHADOW_OFFERS} s "
        f"JOIN unnest($1::uuid[], $2::bigint[]) AS u(offer_id, seq) ON u.offer_id = s.offer_id "
        f"ON CONFLICT (offer_id) DO UPDATE SET {sets}",  # first_seq stays: the deal keeps its place in lists
        list(by_offer),
        list(by_offer.values()),
    )
    # One wake-up is enough: the feeds re-read everything after the last sequence they sent.
    await db.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(max(by_offer.values())))
    return len(by_offer)


# ---------------------------------------------------------------- orchestration


async def _raw(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under a SQLAlchemy one (same session, same transaction)."""
    raw = await conn.get_raw_connection()
    return raw.driver_connection  # type: ignore[return-value]


def _default_workers(spans: Sequence[PartitionSpan]) -> int:
    return max(1, min(os.cpu_count() or 1, len({s.partition for s in spans})))


async def rebuild_projections(
    settings: Settings,
    options: RebuildOptions,
    *,
    progress: Callable[[int, int], None] | None = None,
    phase: Callable[[str], None] | None = None,
) -> RebuildReport:
    """Run the rebuild. ``progress(advance, total)`` is called as events are read;
    ``phase(name)`` when a phase starts. Raises RebuildError if it cannot proceed."""
    timings: dict[str, float] = {}
    started = time.perf_counter()
    say = phase or (lambda _: None)
    guard = await asyncpg.connect(settings.asyncpg_dsn)
    engine = create_engine(settings, pool_size=1)
    catch_up: _CatchUp | None = None
    owner = False
    try:
        if not await guard.fetchval("SELECT pg_try_advisory_lock($1)", REBUILD_GUARD_LOCK):
            raise RebuildError("another rebuild-projections is running against this database")
        owner = True
        await _create_shadow(guard)
        spans = await kafka_spans(settings)
        total = sum(s.end - s.begin for s in spans)
        truncated = tuple(s.tp for s in spans if s.begin > 0)
        workers = options.workers or _default_workers(spans)

        say("read")
        t = time.perf_counter()
        advance = (lambda n: progress(n, total)) if progress else None
        state = await _read_phase(settings, spans, workers, advance)
        timings["read"] = time.perf_counter() - t
        read_stats = dataclasses.replace(
            state,
            consumed=dict(state.consumed),
            applied=dict(state.applied),
            skipped_samples=list(state.skipped_samples),
        )

        say("index")
        t = time.perf_counter()
        await _index_shadow(guard)
        timings["index"] = time.perf_counter() - t

        say("catch-up")
        t = time.perf_counter()
        topics = [settings.topic(cls.TOPIC) for cls in LIFECYCLE_EVENTS]
        catch_up = _CatchUp(settings, state)
        await _follow_live(engine, guard, catch_up, state, topics, options.live_wait_seconds)
        timings["catch_up"] = time.perf_counter() - t

        say("compare" if not options.swap else "lock, compare, swap")
        t = time.perf_counter()
        run_id = uuid.uuid4().hex
        async with engine.connect() as conn:
            if not options.swap:
                conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                if options.swap:
                    await take_write_lock(conn)
                lock_at = time.perf_counter()
                if options.swap:
                    timings["lock_wait"] = lock_at - t
                live = await live_positions(conn, topics)  # verify: this statement fixes the snapshot
                db = await _raw(conn)
                await catch_up.to(db, live)
                behind = {
                    tp: applied - live.get(tp, -1)
                    for tp, applied in state.applied.items()
                    if applied > live.get(tp, -1)
                }
                t_cmp = time.perf_counter()
                tables = (
                    await compare_table(db, OFFERS_SPEC, options.samples),
                    await compare_table(db, EVENTS_SPEC, options.samples),
                )
                timings["compare"] = time.perf_counter() - t_cmp
                identical = all(c.identical for c in tables)
                swapped, changed, handed = False, 0, {}
                if options.swap and (identical or options.force):
                    t_swap = time.perf_counter()
                    changed = await _swap(db, run_id, *tables)
                    # Hand over: the live projector resumes after what the live tables now hold.
                    for tp, offset in sorted(state.applied.items()):
                        if offset > live.get(tp, -1):
                            await record_position(conn, LIVE_CONSUMER, Position(tp[0], tp[1], offset))
                            handed[tp] = offset
                    swapped = True
                    timings["swap"] = time.perf_counter() - t_swap
            timings["locked" if options.swap else "snapshot"] = time.perf_counter() - lock_at
        timings["reconcile"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - started
        return RebuildReport(
            mode="swap" if options.swap else "verify",
            forced=options.force,
            workers=workers,
            read=read_stats,
            catch_up_events=catch_up.events,
            positions=dict(state.applied),
            live_positions=live,
            live_behind=behind,
            tables=tables,
            swapped=swapped,
            changed_offers=changed,
            handed_over=handed,
            timings=timings,
            truncated_partitions=truncated,
        )
    finally:
        if catch_up is not None:
            await catch_up.close()
        await engine.dispose()
        try:
            if owner:  # never the shadow tables of the run that holds the guard
                await drop_shadow(guard)
        finally:
            await guard.close()  # also releases the guard lock


async def _follow_live(
    engine: AsyncEngine,
    db: asyncpg.Connection,
    catch_up: _CatchUp,
    state: ReadResult,
    topics: Sequence[str],
    wait_seconds: float,
) -> None:
    """Without any lock: catch the shadow up to the moving live positions, and give a
    lagging live projector time to reach the shadow, so the locked step has little to do."""
    deadline = time.monotonic() + wait_seconds
    while True:
        async with engine.connect() as conn:
            live = await live_positions(conn, topics)
        await catch_up.to(db, live)
        lagging = any(applied > live.get(tp, -1) for tp, applied in state.applied.items())
        if not lagging or time.monotonic() >= deadline:
            return
        await asyncio.sleep(0.2)


if __name__ == "__main__":
    # Run the function of the module under its real name, so what is pickled back to the
    # parent is projections.rebuild.ReadResult, not __main__.ReadResult.
    from projections.rebuild import _reader_main as reader_main

    reader_main()
