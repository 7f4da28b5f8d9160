"""Deals through the API and the projection: creators, offers, statuses and snapshots."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import select

from models.events import OfferCreated, RoyaltyPeriod
from projections.tables import offers

HISTORY = [{"period": f"2025-{m:02d}", "amount_minor": 50_000 * m} for m in range(1, 7)]


async def make_creator(web_client, name: str = "Test Creator") -> str:
    resp = await web_client.post("/creators", json={"display_name": name, "country": "DE"})
    assert resp.status == 201, await resp.text()
    return (await resp.json())["creator_id"]


async def post_offer(web_client, creator: str | None = None, history=HISTORY, currency: str = "EUR") -> str:
    creator = creator or await make_creator(web_client)
    resp = await web_client.post(
        "/offers", json={"creator_id": creator, "currency": currency, "royalty_history": history}
    )
    assert resp.status == 202, await resp.text()
    return (await resp.json())["offer_id"]


async def deal_status(engine, offer_id: str) -> str | None:
    async with engine.connect() as conn:
        return await conn.scalar(select(offers.c.status).where(offers.c.offer_id == offer_id))


def offer_event(offer_id: str | None = None) -> OfferCreated:
    return OfferCreated(
        event_id=str(uuid.uuid4()),
        offer_id=offer_id or str(uuid.uuid4()),
        creator_id=str(uuid.uuid4()),
        occurred_at=datetime.now(UTC).replace(microsecond=0),
        correlation_id="test",
        currency="GBP",
        royalty_history=tuple(RoyaltyPeriod(f"2024-{m:02d}", 10_000) for m in range(1, 13)),
    )


VALUED_OR_LATER = {"valued", "termsheet_issued", "accepted", "payout_requested", "paid", "payout_failed"}


async def _is(awaitable, expected):
    """Status check; "valued" also matches later stages (the term sheet follows at once)."""
    status = await awaitable
    return status in VALUED_OR_LATER if expected == "valued" else status == expected
