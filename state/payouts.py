"""Persistence of the payout state machine: one short transaction per recorded phase."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from state.tables import payout_attempts, payouts


async def get_payout(conn: AsyncConnection, payout_id: str, *, lock: bool = False) -> dict[str, Any] | None:
    query = select(payouts).where(payouts.c.payout_id == payout_id)
    row = (await conn.execute(query.with_for_update() if lock else query)).mappings().first()
    return dict(row) if row else None


async def insert_payout(conn: AsyncConnection, **values: Any) -> bool:
    created = await conn.scalar(
        insert(payouts)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["payout_id"])
        .returning(payouts.c.payout_id)
    )
    return created is not None


async def set_phase(conn: AsyncConnection, payout_id: str, phase: str, **fields: Any) -> None:
    await conn.execute(
        update(payouts).where(payouts.c.payout_id == payout_id).values(phase=phase, updated_at=func.now(), **fields)
    )


async def start_attempt(conn: AsyncConnection, payout_id: str, provider: str, operation: str) -> int:
    return int(
        await conn.scalar(
            insert(payout_attempts)
            .values(payout_id=payout_id, provider=provider, operation=operation, status="pending")
            .returning(payout_attempts.c.attempt_id)
        )
    )


async def finish_attempt(
    conn: AsyncConnection, attempt_id: int, status: str, reference: str | None, failure_reason: str | None
) -> None:
    await conn.execute(
        update(payout_attempts)
        .where(payout_attempts.c.attempt_id == attempt_id)
        .values(status=status, reference=reference, failure_reason=failure_reason, finished_at=func.now())
    )


async def poisoned_stripe_keys(conn: AsyncConnection, payout_id: str) -> int:
    """How many Stripe transfer calls ended in a 5xx. Stripe stores a 5xx under its
    idempotency key and replays it for a day, so the key is bumped past each of those.
    A timeout does NOT count: the first request may still be executing, and only the SAME
    key guarantees Stripe cannot run a second transfer."""
    return int(
        await conn.scalar(
            select(func.count())
            .select_from(payout_attempts)
            .where(
                payout_attempts.c.payout_id == payout_id,
                payout_attempts.c.provider == "STRIPE",
                payout_attempts.c.operation == "transfer",
                payout_attempts.c.status == "unknown",
                payout_attempts.c.failure_reason.like("http_5%"),
            )
        )
        or 0
    )


async def attempt_reasons(conn: AsyncConnection, payout_id: str) -> list[str]:
    rows = await conn.execute(
        select(payout_attempts.c.provider, payout_attempts.c.failure_reason)
        .where(payout_attempts.c.payout_id == payout_id, payout_attempts.c.status == "failed")
        .order_by(payout_attempts.c.attempt_id)
    )
    return [f"{provider.lower()}: {reason}" for provider, reason in rows]
