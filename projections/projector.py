"""Apply lifecycle events to the Postgres projections, exactly once per event, a batch at a time.

One transaction per batch holds: the projection write lock, the tracking rows (skip
anything at or below the stored offset per partition), the deal history rows (the event id
is the primary key), one upsert per touched deal, one change-log row per applied event,
one NOTIFY, and one tracking row per partition. Redelivery and replay are no-ops.

Change sequences must become visible in order, or an SSE reader that has seen seq N could
later miss N-1 committed after it. A transaction-level advisory lock (the projection write
lock) taken at the start of every projector transaction serialises "draw + commit" across
projector instances; `rebuild-projections` takes the same lock for its catch-up-and-swap
step, so the live projector pauses for that moment instead of racing it.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select, text, tuple_
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from models.events import Event
from projections.tables import projection_tracking
from projections.writers import LIVE, NOTIFY_CHANNEL, Located, Position, fold_into, notify

__all__ = [
    "LIVE_CONSUMER",
    "NOTIFY_CHANNEL",
    "PROJECTION_WRITE_LOCK",
    "BatchResult",
    "Located",
    "Outcome",
    "Position",
    "apply_to_deal",
    "project_batch",
    "project_event",
    "record_position",
    "record_positions",
    "take_write_lock",
]

# The live projector's consumer name: its tracking rows, read by the rebuild's hand-over.
LIVE_CONSUMER = "projector"
PROJECTION_WRITE_LOCK = 0x5EA_3005_1C  # arbitrary, constant: the projection write lock


class Outcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE_EVENT = "duplicate_event"
    ALREADY_TRACKED = "already_tracked"


@dataclass(frozen=True)
class BatchResult:
    applied: int
    duplicates: int  # event ids already folded in (a replay or re-publish)
    already_tracked: int  # at or below the stored position (a redelivery)
    last_seq: int | None


_TAKE_WRITE_LOCK = text("SELECT pg_advisory_xact_lock(:key)")


async def take_write_lock(conn: AsyncConnection) -> None:
    await conn.execute(_TAKE_WRITE_LOCK, {"key": PROJECTION_WRITE_LOCK})


async def tracked_offsets(
    conn: AsyncConnection, consumer: str, partitions: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    wanted = sorted(set(partitions))
    if not wanted:
        return {}
    rows = await conn.execute(
        select(projection_tracking.c.topic, projection_tracking.c.partition, projection_tracking.c.offset)
        .where(
            projection_tracking.c.consumer == consumer,
            tuple_(projection_tracking.c.topic, projection_tracking.c.partition).in_(wanted),
        )
        .with_for_update()
    )
    return {(topic, partition): offset for topic, partition, offset in rows}


def _tracking_upsert() -> Insert:
    stmt = insert(projection_tracking)
    return stmt.on_conflict_do_update(
        index_elements=["consumer", "topic", "partition"],
        set_={"offset": stmt.excluded.offset, "updated_at": func.now()},
        where=projection_tracking.c.offset < stmt.excluded.offset,
    )


# Built once: a batch records a position per partition it read, every batch.
_TRACKING_UPSERT = _tracking_upsert()


async def record_positions(conn: AsyncConnection, consumer: str, positions: Iterable[Position]) -> None:
    """Move the consumer's tracking rows forward (never back), one statement for all."""
    rows = [
        {"consumer": consumer, "topic": p.topic, "partition": p.partition, "offset": p.offset}
        for p in sorted(positions, key=lambda p: (p.topic, p.partition))
    ]
    if rows:
        await conn.execute(_TRACKING_UPSERT, rows)


async def record_position(conn: AsyncConnection, consumer: str, position: Position) -> None:
    await record_positions(conn, consumer, [position])


async def project_batch(conn: AsyncConnection, consumer: str | None, items: Sequence[Located]) -> BatchResult:
    """Apply a batch inside the caller's transaction. ``consumer`` None: no tracking rows
    (a replay into the projections leaves the live projector's positions alone)."""
    await take_write_lock(conn)
    fresh = list(items)
    if consumer is not None:
        stored = await tracked_offsets(conn, consumer, ((i.position.topic, i.position.partition) for i in items))
        fresh = [i for i in items if i.position.offset > stored.get((i.position.topic, i.position.partition), -1)]
    folded = await fold_into(conn, LIVE, fresh)
    if folded.last_seq is not None:
        await notify(conn, folded.last_seq)
    if consumer is not None:
        last: dict[tuple[str, int], int] = {}
        for item in items:
            key = (item.position.topic, item.position.partition)
            last[key] = max(last.get(key, -1), item.position.offset)
        await record_positions(conn, consumer, (Position(t, p, offset) for (t, p), offset in last.items()))
    return BatchResult(
        applied=len(folded.applied),
        duplicates=len(fresh) - len(folded.applied),
        already_tracked=len(items) - len(fresh),
        last_seq=folded.last_seq,
    )


async def project_event(conn: AsyncConnection, consumer: str, event: Event, position: Position) -> Outcome:
    """Apply one event inside the caller's transaction."""
    return _outcome(await project_batch(conn, consumer, [Located(event, position)]))


async def apply_to_deal(conn: AsyncConnection, event: Event, position: Position) -> Outcome:
    """Fold one event into its deal without touching any tracking row."""
    return _outcome(await project_batch(conn, None, [Located(event, position)]))


def _outcome(result: BatchResult) -> Outcome:
    if result.already_tracked:
        return Outcome.ALREADY_TRACKED
    return Outcome.APPLIED if result.applied else Outcome.DUPLICATE_EVENT
