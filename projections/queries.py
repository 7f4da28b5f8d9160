"""Read-side queries for the web layer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, literal_column, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from models.deal import DealStatus
from projections.rows import deal_json, jsonable
from projections.tables import deal_changes, deal_events, offers


async def get_deal(conn: AsyncConnection, offer_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(select(offers).where(offers.c.offer_id == offer_id))).mappings().first()
    return deal_json(row) if row else None


async def list_deals(
    conn: AsyncConnection,
    *,
    status: str | None = None,
    creator_id: str | None = None,
    before_seq: int | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], int | None]:
    """Newest first, keyset-paginated on the stable ``first_seq``; returns the next cursor."""
    query = select(offers).order_by(offers.c.first_seq.desc()).limit(limit + 1)
    if status:
        query = query.where(offers.c.status == status)
    if creator_id:
        query = query.where(offers.c.creator_id == creator_id)
    if before_seq is not None:
        query = query.where(offers.c.first_seq < before_seq)
    rows = (await conn.execute(query)).mappings().all()
    page = rows[:limit]
    next_cursor = page[-1]["first_seq"] if len(rows) > limit else None
    return [deal_json(r) for r in page], next_cursor


async def deal_history(conn: AsyncConnection, offer_id: str) -> list[dict[str, Any]]:
    rows = (
        (
            await conn.execute(
                select(
                    deal_events.c.event_id, deal_events.c.event_type, deal_events.c.occurred_at, deal_events.c.payload
                )
                .where(deal_events.c.offer_id == offer_id)
                .order_by(deal_events.c.occurred_at, deal_events.c.event_id)
            )
        )
        .mappings()
        .all()
    )
    return [jsonable(dict(r)) for r in rows]


async def changes_after(
    conn: AsyncConnection, after_seq: int, limit: int = 500, creator_id: str | None = None
) -> list[dict[str, Any]]:
    query = select(deal_changes).where(deal_changes.c.seq > after_seq).order_by(deal_changes.c.seq).limit(limit)
    if creator_id:
        query = query.where(deal_changes.c.creator_id == creator_id)
    rows = (await conn.execute(query)).mappings().all()
    return [
        {"seq": r["seq"], "event_type": r["event_type"], "deal": {**r["deal"], "change_seq": r["seq"]}} for r in rows
    ]


async def latest_change_seq(conn: AsyncConnection) -> int:
    return int(await conn.scalar(select(func.coalesce(func.max(deal_changes.c.seq), 0))) or 0)


async def offer_pricing(conn: AsyncConnection, offer_id: str) -> dict[str, Any] | None:
    row = (
        (
            await conn.execute(
                select(
                    offers.c.offer_id,
                    offers.c.creator_id,
                    offers.c.currency,
                    offers.c.valuation_median_minor,
                    offers.c.advance_minor,
                ).where(offers.c.offer_id == offer_id)
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


async def lapse_due(
    conn: AsyncConnection, now: datetime, *, after: tuple[datetime, str] | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    """Term-sheet-issued deals (none accepted, declined or withdrawn: the status says so)
    whose valid_until has passed, oldest first; ``after`` is the last (valid_until, offer_id)
    of the previous page (the partial index ix_offers_open_valid_until serves this)."""
    query = (
        select(offers.c.offer_id, offers.c.creator_id, offers.c.valid_until)
        # A literal, not a bound parameter, so the planner can match the partial index.
        .where(offers.c.status == literal_column(f"'{DealStatus.TERMSHEET_ISSUED.value}'"), offers.c.valid_until < now)
        .order_by(offers.c.valid_until, offers.c.offer_id)
        .limit(limit)
    )
    if after is not None:
        query = query.where(tuple_(offers.c.valid_until, offers.c.offer_id) > tuple_(*after))
    return [dict(r) for r in (await conn.execute(query)).mappings().all()]
