"""The event outbox: events committed in the same transaction as the answer they belong to.

A command writes its event here (already encoded, see ``infra.kafka.EncodedEvent``) in the
transaction that stores its idempotency record, publishes after the commit and marks the
row sent. A row left unsent (the process died, the broker was away) is sent by the relay
(web/relay.py), oldest first. Sending twice is possible (killed after the broker's ack,
before the mark) and harmless: it is the same message with the same event id, which every
consumer already de-duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from infra.kafka import EncodedEvent
from state.tables import event_outbox

_ADD = insert(event_outbox).on_conflict_do_nothing(index_elements=["event_id"]).returning(event_outbox.c.seq)


@dataclass(frozen=True, slots=True)
class Pending:
    seq: int
    message: EncodedEvent


def _headers_json(message: EncodedEvent) -> list[list[str]]:
    # Header values are ids and topic names the publisher encoded from text.
    return [[name, value.decode()] for name, value in message.headers]


def _message(row: object) -> EncodedEvent:
    return EncodedEvent(
        event_id=str(row.event_id),  # type: ignore[attr-defined]
        topic=row.topic,  # type: ignore[attr-defined]
        key=row.message_key,  # type: ignore[attr-defined]
        value=row.value,  # type: ignore[attr-defined]
        headers=tuple((name, value.encode()) for name, value in row.headers),  # type: ignore[attr-defined]
    )


async def add(conn: AsyncConnection, messages: Sequence[EncodedEvent]) -> list[int]:
    """Queue ``messages`` in the caller's transaction; the sequence numbers of the rows added
    (an event id already queued adds nothing: the same command's event is queued once)."""
    if not messages:
        return []
    rows = [
        {
            "event_id": m.event_id,
            "topic": m.topic,
            "message_key": m.key,
            "value": m.value,
            "headers": _headers_json(m),
        }
        for m in messages
    ]
    # One compiled statement with bound rows (a VALUES list built per call is compiled per call).
    result = await conn.execute(_ADD, rows)
    return [int(seq) for seq in result.scalars()]


async def mark_sent(conn: AsyncConnection, seqs: Sequence[int]) -> None:
    if seqs:
        await conn.execute(
            update(event_outbox)
            .where(event_outbox.c.seq.in_(list(seqs)), event_outbox.c.sent_at.is_(None))
            .values(sent_at=func.now())
        )


async def withdraw(conn: AsyncConnection, seqs: Sequence[int]) -> list[int]:
    """Delete rows that are still unsent (the command is answered 503 and taken back); the
    ones deleted. A row the relay is sending is locked, so this waits for it and then finds
    it sent (and leaves it)."""
    if not seqs:
        return []
    result = await conn.execute(
        delete(event_outbox)
        .where(event_outbox.c.seq.in_(list(seqs)), event_outbox.c.sent_at.is_(None))
        .returning(event_outbox.c.seq)
    )
    return [int(seq) for seq in result.scalars()]


async def claim_due(conn: AsyncConnection, older_than: timedelta, limit: int) -> list[Pending]:
    """The oldest unsent rows queued more than ``older_than`` ago, locked for the caller's
    transaction (rows another relay holds are skipped; the handler that queued a row a moment
    ago is still sending it itself)."""
    rows = (
        await conn.execute(
            select(event_outbox)
            .where(event_outbox.c.sent_at.is_(None), event_outbox.c.created_at < func.now() - older_than)
            .order_by(event_outbox.c.seq)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    ).all()
    return [Pending(int(row.seq), _message(row)) for row in rows]


async def prune_sent(conn: AsyncConnection, older_than: timedelta, limit: int = 5000) -> int:
    """Delete up to ``limit`` sent rows queued more than ``older_than`` ago (oldest first, so
    the primary key's order finds them without a scan of the recent rows)."""
    oldest = (
        select(event_outbox.c.seq)
        .where(event_outbox.c.sent_at.is_not(None), event_outbox.c.created_at < func.now() - older_than)
        .order_by(event_outbox.c.seq)
        .limit(limit)
    )
    result = await conn.execute(delete(event_outbox).where(event_outbox.c.seq.in_(oldest)))
    return int(result.rowcount or 0)


async def unsent_count(conn: AsyncConnection) -> int:
    return int(
        await conn.scalar(select(func.count()).select_from(event_outbox).where(event_outbox.c.sent_at.is_(None))) or 0
    )
