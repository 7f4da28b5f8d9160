"""Offers lapse as events: ``offer.lapsed`` for every term-sheet-issued offer past its
valid_until that nobody accepted, declined or withdrew.

Acceptance already refuses after valid_until on its own (models/rules.py); the event makes
the lapse a fact in the log, so the deal reads ``lapsed`` everywhere (projection, SSE, the
admin page, a rebuild) instead of a status inferred from the clock. Each offer's lapse has
one event id (models.offers.lapse_event_id): sweeps that overlap, run twice, or run on two
workers publish the same event, which the projector applies once. An advisory lock keeps
concurrent sweepers from doing the work twice anyway. ``now`` is a parameter, so tests
sweep "in 31 days" instead of waiting for them.

Run by the pipeline worker every ``OFFER_LAPSE_INTERVAL_SECONDS`` and by
``spacemusic offers lapse [--dry-run]``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.kafka import EventPublisher
from infra.logging import get_logger
from models.events import OfferLapsed
from models.offers import lapse_event_id
from projections.queries import lapse_due

log = get_logger(__name__)

# The advisory lock of the sweep (one at a time across every worker and CLI run): "LAPS".
_LOCK_CLASS = 0x4C415053
SWEEP_PAGE = 500


@dataclass
class SweepResult:
    lapsed: list[OfferLapsed] = field(default_factory=list)
    skipped_locked: bool = False  # another sweep held the lock; nothing was done


def lapse_event(row: dict[str, Any], now: datetime) -> OfferLapsed:
    return OfferLapsed(
        event_id=lapse_event_id(row["offer_id"]),
        offer_id=row["offer_id"],
        creator_id=row["creator_id"],
        occurred_at=now,
        correlation_id=f"offer-lapse:{row['offer_id']}",
        valid_until=row["valid_until"],
    )


async def sweep(
    engine: AsyncEngine, publisher: EventPublisher | None, now: datetime, *, dry_run: bool = False
) -> SweepResult:
    """Publishes ``offer.lapsed`` for each offer due (``dry_run``/no publisher: only lists them)."""
    result = SweepResult()
    async with engine.begin() as conn:
        locked = await conn.scalar(text("SELECT pg_try_advisory_xact_lock(:c, 0)"), {"c": _LOCK_CLASS})
        if not locked:
            result.skipped_locked = True
            return result
        after: tuple[datetime, str] | None = None
        while True:
            rows = await lapse_due(conn, now, after=after, limit=SWEEP_PAGE)
            events = [lapse_event(row, now) for row in rows]
            if events and not dry_run and publisher is not None:
                await publisher.publish_many(events)
            result.lapsed.extend(events)
            if len(rows) < SWEEP_PAGE:
                break
            after = (rows[-1]["valid_until"], rows[-1]["offer_id"])
    if result.lapsed:
        log.info("offers_lapsed", count=len(result.lapsed), dry_run=dry_run or publisher is None)
    return result


def register(app: Any) -> None:
    """The schedule, on the pipeline worker (it runs the projector the sweep reads)."""
    interval = app.settings.offer_lapse_interval_seconds
    if interval <= 0:
        return

    @app.timer(interval=interval)
    async def _lapse_offers() -> None:
        try:
            resources = app.resources
        except RuntimeError:  # resources are built when the app starts
            return
        try:
            await sweep(resources.engine, resources.publisher, datetime.now(UTC))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an outage: the next tick sweeps again, nothing is lost
            log.warning("offer_lapse_failed", error=type(exc).__name__, detail=str(exc)[:300])
