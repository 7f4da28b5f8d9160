"""Verified provider webhooks, one row per provider event (migration 0008).

The row is the dedup guard: the web app inserts it in the same transaction in which it
publishes what the event means, and commits only after the publish was acknowledged. A
redelivery (the provider retries until it gets a 2xx, and may send twice anyway) finds the
row and is answered "duplicate" without publishing again; two concurrent deliveries of one
event serialise on the primary key, and the second one finds the first's row. Only ids and
machine codes are stored, never the payload (it can carry account details).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import CheckConstraint, Column, Index, PrimaryKeyConstraint, String, Table, Text, func, select
from sqlalchemy.dialects.postgresql import UUID, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from infra.sql import TS, metadata
from state.tables import payouts

provider_webhooks = Table(
    "provider_webhooks",
    metadata,
    Column("provider", String(10), nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("outcome", Text, nullable=False),  # published | ignored:<why>
    Column("payout_id", UUID(as_uuid=False)),
    Column("provider_reference", Text),
    Column("received_at", TS, nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("provider", "event_id", name="pk_provider_webhooks"),
    CheckConstraint("event_id <> ''", name="ck_provider_webhooks_event_id_not_empty"),
    Index("ix_provider_webhooks_payout_id", "payout_id"),
)


async def record(
    conn: AsyncConnection,
    *,
    provider: str,
    event_id: str,
    event_type: str,
    outcome: str,
    payout_id: str | None,
    provider_reference: str | None,
) -> bool:
    """Insert the event's row inside the caller's transaction; False if it was seen before."""
    inserted = await conn.scalar(
        insert(provider_webhooks)
        .values(
            provider=provider,
            event_id=event_id,
            event_type=event_type[:200],
            outcome=outcome,
            payout_id=payout_id,
            provider_reference=provider_reference,
        )
        .on_conflict_do_nothing(index_elements=["provider", "event_id"])
        .returning(provider_webhooks.c.event_id)
    )
    return inserted is not None


async def seen(conn: AsyncConnection, provider: str, event_id: str) -> bool:
    found = await conn.scalar(
        select(provider_webhooks.c.event_id).where(
            provider_webhooks.c.provider == provider, provider_webhooks.c.event_id == event_id
        )
    )
    return found is not None


async def payout_by_reference(conn: AsyncConnection, provider: str, reference: str) -> dict[str, Any] | None:
    """The payout a provider transfer id was recorded for (a succeeded payout's reference)."""
    row = (
        (
            await conn.execute(
                select(payouts)
                .where(payouts.c.provider == provider, payouts.c.provider_reference == reference)
                .order_by(payouts.c.created_at.desc())
                .limit(1)
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


async def outcomes_of(conn: AsyncConnection, payout_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(provider_webhooks)
        .where(provider_webhooks.c.payout_id == payout_id)
        .order_by(provider_webhooks.c.received_at)
    )
    return [dict(r) for r in rows.mappings()]
