"""The payout store's queries on the real database, at the edges of what the API accepts."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from state import payouts as store

pytestmark = pytest.mark.stack


@pytest.mark.parametrize("older_than", [0.0, 3.300733946673424e-173, 0.25, 10.0**9])
async def test_stuck_takes_any_age_the_api_accepts(engine: AsyncEngine, older_than: float) -> None:
    """GET /payouts?stuck=true&older_than_seconds=3e-173 was a 500: the age was spliced into
    interval text, which Postgres cannot parse in exponent form."""
    async with engine.connect() as conn:
        rows = await store.stuck(conn, older_than)
    assert isinstance(rows, list)
    assert all(row["phase"] not in ("succeeded", "failed") for row in rows)
