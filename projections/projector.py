"""Apply lifecycle events to the Postgres projections, exactly once per event.

One transaction per message holds: the tracking row (skip anything at or below the stored
offset), the deal history row (the event id is the primary key), the folded deal, and a
change-log row whose sequence NOTIFYs the SSE streams. Redelivery and replay are no-ops.

Change sequences must become visible in order, or an SSE reader that has seen seq N could
later miss N-1 committed after it. A transaction-level advisory lock (the projection write
lock) taken at the start of every projector transaction serialises "draw + commit" across
projector instances; `rebuild-projections` takes the same lock for its catch-up-and-swap
step, so the live projector pauses for that moment instead of racing it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from infra.avro import event_to_record
from models.deal import apply_event
from models.events import Event
from projections.rows import deal_json, deal_to_row, jsonable, row_to_deal
from projections.tables import deal_changes, deal_events, offers, projection_tracking

NOTIFY_CHANNEL = "deal_changes"
PROJECTION_WRITE_LOCK = 0x5EA_3005_1C  # arbitrary, constant: the projection write lock


@dataclass(frozen=True, slots=True)
class Position:
    topic: str
    partition: int
    offset: int


class Outcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE_EVENT = "duplicate_event"
    ALREADY_TRACKED = "already_tracked"


async def tracked_offset(conn: AsyncConnection, consumer: str, topic: str, partition: int) -> int | None:
    return await conn.scalar(
        select(projection_tracking.c.offset)
        .where(
            projection_tracking.c.consumer == consumer,
            projection_tracking.c.topic == topic,
            projection_tracking.c.partition == partition,
        )
        .with_for_update()
    )


async def record_position(conn: AsyncConnection, consumer: str, position: Position) -> None:
    stmt = insert(projection_tracking).values(
        consumer=consumer, topic=position.topic, partition=position.partition, offset=position.offset
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["consumer", "topic", "partition"],
            set_={"offset": stmt.excluded.offset, "updated_at": func.now()},
            where=projection_tracking.c.offset < stmt.excluded.offset,
        )
    )


async def take_write_lock(conn: AsyncConnection) -> None:
    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PROJECTION_WRITE_LOCK})


async def project_event(conn: AsyncConnection, consumer: str, event: Event, position: Position) -> Outcome:
    """Apply one event inside the caller's transaction."""
    await take_write_lock(conn)
    stored = await tracked_offset(conn, consumer, position.topic, position.partition)
    if stored is not None and position.offset <= stored:
        return Outcome.ALREADY_TRACKED
    outcome = await apply_to_deal(conn, event, position)
    await record_position(conn, consumer, position)
    return outcome


async def apply_to_deal(conn: AsyncConnection, event: Event, position: Position) -> Outcome:
    """Fold one event into its deal (callers hold the projection write lock)."""
    inserted = await conn.scalar(
        insert(deal_events)
        .values(
            event_id=event.event_id,
            offer_id=event.offer_id,
            event_type=event.TOPIC,
            occurred_at=event.occurred_at,
            topic=position.topic,
            partition=position.partition,
            offset=position.offset,
            payload=jsonable(event_to_record(event)),
        )
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(deal_events.c.event_id)
    )
    if inserted is None:
        return Outcome.DUPLICATE_EVENT  # same event re-published (e.g. a replay): already folded in
    current = (
        (await conn.execute(select(offers).where(offers.c.offer_id == event.offer_id).with_for_update()))
        .mappings()
        .first()
    )
    deal = apply_event(row_to_deal(current) if current else None, event)
    row = deal_to_row(deal)
    seq = await conn.scalar(
        insert(deal_changes)
        .values(
            offer_id=deal.offer_id,
            creator_id=deal.creator_id,
            event_id=event.event_id,
            event_type=event.TOPIC,
            status=row["status"],
            deal=deal_json(row),
        )
        .returning(deal_changes.c.seq)
    )
    values: dict[str, Any] = {**row, "change_seq": seq}
    stmt = insert(offers).values(**values, first_seq=seq)
    await conn.execute(
        stmt.on_conflict_do_update(index_elements=["offer_id"], set_={k: stmt.excluded[k] for k in values})
    )
    await conn.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": NOTIFY_CHANNEL, "payload": str(seq)})
    return Outcome.APPLIED
