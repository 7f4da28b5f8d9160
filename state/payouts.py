"""Persistence of the payout state machine: one short transaction per recorded phase.

Every phase change is compare-and-set (``UPDATE ... WHERE phase = <expected>``): a driver
that lost a race finds zero rows and stops (``PhaseConflict``) instead of overwriting what
another recorded. One driver per payout is a Postgres advisory lock held on its own
connection for as long as it drives (``driver_lock``): a crashed worker's connection drops
and its successor can take over at once. Terminal phases are immutable (a trigger, 0005).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Interval, and_, bindparam, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from state.tables import payout_attempts, payouts

# The first key of the two-int advisory lock space: "payout driver".
_LOCK_CLASS = 0x5041594F & 0x7FFFFFFF
TERMINAL_PHASES = ("succeeded", "failed")


class PhaseConflict(RuntimeError):
    """The payout was not in the phase this driver expected: someone else moved it."""


@contextlib.asynccontextmanager
async def driver_lock(engine: AsyncEngine, payout_id: str) -> AsyncIterator[bool]:
    """Try to become the payout's one driver; yields False if another holds it."""
    async with engine.connect() as conn:
        got = bool(
            await conn.scalar(text("SELECT pg_try_advisory_lock(:c, hashtext(:p))"), {"c": _LOCK_CLASS, "p": payout_id})
        )
        await conn.commit()
        try:
            yield got
        finally:
            if got:
                try:
                    await conn.execute(
                        text("SELECT pg_advisory_unlock(:c, hashtext(:p))"), {"c": _LOCK_CLASS, "p": payout_id}
                    )
                    await conn.commit()
                except Exception:
                    await conn.invalidate()  # dropping the session releases the lock
                    raise


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


async def set_phase(conn: AsyncConnection, payout_id: str, expected: str, phase: str, **fields: Any) -> dict[str, Any]:
    """Compare-and-set: move ``expected`` -> ``phase``; raise ``PhaseConflict`` otherwise."""
    row = (
        (
            await conn.execute(
                update(payouts)
                .where(payouts.c.payout_id == payout_id, payouts.c.phase == expected)
                .values(phase=phase, updated_at=func.now(), **fields)
                .returning(payouts)
            )
        )
        .mappings()
        .first()
    )
    if row is None:
        raise PhaseConflict(f"payout {payout_id} is not in phase {expected}")
    return dict(row)


async def mark_published(conn: AsyncConnection, payout_id: str) -> None:
    await conn.execute(
        update(payouts)
        .where(payouts.c.payout_id == payout_id, payouts.c.outcome_published_at.is_(None))
        .values(outcome_published_at=func.now())
    )


async def start_attempt(
    conn: AsyncConnection, payout_id: str, provider: str, operation: str, idempotency_key: str | None = None
) -> int:
    return int(
        await conn.scalar(
            insert(payout_attempts)
            .values(
                payout_id=payout_id,
                provider=provider,
                operation=operation,
                status="pending",
                idempotency_key=idempotency_key,
            )
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


async def last_call_reason(conn: AsyncConnection, payout_id: str, provider: str, key: str | None) -> str | None:
    """The answer to the latest transfer call under this idempotency key (None: none finished)."""
    query = (
        select(payout_attempts.c.failure_reason)
        .where(
            payout_attempts.c.payout_id == payout_id,
            payout_attempts.c.provider == provider,
            payout_attempts.c.operation == "transfer",
            payout_attempts.c.finished_at.is_not(None),
        )
        .order_by(payout_attempts.c.attempt_id.desc())
        .limit(1)
    )
    if key is not None:
        query = query.where(payout_attempts.c.idempotency_key == key)
    return await conn.scalar(query)


async def last_call_started(conn: AsyncConnection, payout_id: str, provider: str) -> datetime | None:
    return await conn.scalar(
        select(func.max(payout_attempts.c.started_at)).where(
            payout_attempts.c.payout_id == payout_id,
            payout_attempts.c.provider == provider,
            payout_attempts.c.operation == "transfer",
        )
    )


async def attempt_reasons(conn: AsyncConnection, payout_id: str) -> list[str]:
    rows = await conn.execute(
        select(payout_attempts.c.provider, payout_attempts.c.failure_reason)
        .where(payout_attempts.c.payout_id == payout_id, payout_attempts.c.status == "failed")
        .order_by(payout_attempts.c.attempt_id)
    )
    return [f"{provider.lower()}: {reason}" for provider, reason in rows]


async def open_payout_for_offer(conn: AsyncConnection, offer_id: str, other_than: str) -> dict[str, Any] | None:
    """Another, unfinished payout of the same offer (per-deal sequencing)."""
    row = (
        (
            await conn.execute(
                select(payouts)
                .where(
                    payouts.c.offer_id == offer_id,
                    payouts.c.payout_id != other_than,
                    payouts.c.phase.not_in(TERMINAL_PHASES),
                )
                .limit(1)
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None


async def payouts_of_offer(conn: AsyncConnection, offer_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(select(payouts).where(payouts.c.offer_id == offer_id).order_by(payouts.c.created_at))
    return [dict(r) for r in rows.mappings()]


async def due_for_resolver(conn: AsyncConnection, limit: int = 50) -> list[str]:
    """Payouts the background resolver should look at now: parked ones whose next check is
    due, unfinished ones nobody drives (the lock tells; orphans of a crashed worker), and
    finished ones whose outcome event was never published."""
    now = func.now()
    rows = await conn.execute(
        select(payouts.c.payout_id)
        .where(
            or_(
                and_(
                    payouts.c.phase == "parked", or_(payouts.c.next_check_at.is_(None), payouts.c.next_check_at <= now)
                ),
                and_(
                    payouts.c.phase.not_in((*TERMINAL_PHASES, "parked")),
                    payouts.c.updated_at < now - text("interval '2 seconds'"),
                ),
                and_(
                    payouts.c.phase.in_(TERMINAL_PHASES),
                    payouts.c.outcome_published_at.is_(None),
                    payouts.c.updated_at < now - text("interval '5 seconds'"),
                ),
            )
        )
        .order_by(payouts.c.updated_at)
        .limit(limit)
    )
    return [r[0] for r in rows]


async def stuck(conn: AsyncConnection, older_than_seconds: float = 0.0) -> list[dict[str, Any]]:
    """Payouts neither paid nor refused (parked or unknown first, oldest first)."""
    rows = await conn.execute(
        select(
            payouts.c.payout_id,
            payouts.c.offer_id,
            payouts.c.phase,
            payouts.c.parked_from,
            payouts.c.amount_minor,
            payouts.c.currency,
            payouts.c.checks,
            payouts.c.next_check_at,
            payouts.c.updated_at,
            payouts.c.created_at,
            func.extract("epoch", func.now() - payouts.c.updated_at).label("age_seconds"),
        )
        .where(
            payouts.c.phase.not_in(TERMINAL_PHASES),
            payouts.c.updated_at <= now_minus(older_than_seconds),
        )
        .order_by(payouts.c.updated_at)
    )
    return [dict(r) for r in rows.mappings()]


def now_minus(seconds: float) -> Any:
    # A bound interval, not SQL text: any float the API accepts (3e-173 included) is a valid
    # timedelta, whereas interval '3e-173 seconds' is a Postgres syntax error.
    return func.now() - bindparam("older_than", timedelta(seconds=seconds), type_=Interval())


async def list_payouts(conn: AsyncConnection, limit: int = 50) -> list[dict[str, Any]]:
    rows = await conn.execute(select(payouts).order_by(payouts.c.updated_at.desc()).limit(limit))
    return [dict(r) for r in rows.mappings()]


def as_of(row: dict[str, Any], field: str) -> datetime | None:
    value = row.get(field)
    return value if isinstance(value, datetime) else None
