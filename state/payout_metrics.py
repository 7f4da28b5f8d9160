"""Parked payouts: the money that is neither paid nor refused and waits for reconciliation.

A payout in an ``*_unknown`` phase had a provider call whose outcome we could not learn
(timeout, 5xx); ``parked`` is the phase for payouts an operator must look at. Either way a
creator is waiting, so the payouts worker exports how many there are and how old the
oldest is, and the alert rules page on both (infra/deploy/prometheus/).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.metrics import PAYOUTS_PARKED, PAYOUTS_PARKED_OLDEST_AGE
from state.tables import payouts

# Phases that mean "stuck until something reconciles it". `parked` is listed before the
# check constraint admits it so that this query needs no change when it lands.
PARKED_PHASES: tuple[str, ...] = ("stripe_unknown", "wise_unknown", "parked")


@dataclass(frozen=True)
class ParkedPayouts:
    by_phase: dict[str, int]
    oldest_age_seconds: float


async def parked_payouts(engine: AsyncEngine) -> ParkedPayouts:
    """Counts per parked phase (every phase present, zero if none) and the oldest's age."""
    age = func.extract("epoch", func.now() - func.min(payouts.c.updated_at))
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(payouts.c.phase, func.count(), age)
                .where(payouts.c.phase.in_(PARKED_PHASES))
                .group_by(payouts.c.phase)
            )
        ).all()
    by_phase = dict.fromkeys(PARKED_PHASES, 0)
    oldest = 0.0
    for phase, count, phase_age in rows:
        by_phase[phase] = int(count)
        oldest = max(oldest, float(phase_age or 0.0))
    return ParkedPayouts(by_phase, oldest)


def export(parked: ParkedPayouts) -> None:
    for phase, count in parked.by_phase.items():
        PAYOUTS_PARKED.labels(phase=phase).set(count)
    PAYOUTS_PARKED_OLDEST_AGE.set(parked.oldest_age_seconds)
