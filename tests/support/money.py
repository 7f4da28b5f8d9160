"""Helpers to drive deals through the money path over HTTP."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from projections.tables import offers
from tests.support.stack import eventually, free_port

IBAN = "DE89370400440532013000"
HOLDER = "Ada Lovelace-Byron"
STRIPE_ACCOUNT = "acct_1SpaceMusicTest42"
HISTORY = [{"period": f"2025-{m:02d}", "amount_minor": 200_000 + 5_000 * m} for m in range(1, 13)]

# The payouts worker's loops, short enough for a test to watch a payout park and resolve.
FAST_RESOLVER = {
    "PAYOUT_INLINE_UNKNOWN_ROUNDS": "1",
    "PAYOUT_RESOLVER_POLL_SECONDS": "0.5",
    "PAYOUT_RESOLVER_MAX_BACKOFF_SECONDS": "2",
}


def provider_env(fake, stripe_key: str, wise_token: str, **overrides: str) -> dict[str, str]:
    """Settings that point a test's worker and web at the provider fake, on ports of their own."""
    return {
        "STRIPE_API_BASE": fake.stripe_url,
        "STRIPE_API_KEY": stripe_key,
        "WISE_API_BASE": fake.wise_url,
        "WISE_TOKEN": wise_token,
        "WISE_PROFILE_ID": "4242",
        "METRICS_PORT": str(free_port()),
        "WEB_PORT": str(free_port()),
        **overrides,
    }


async def onboard(client, *, stripe: bool = True, bank: bool = True, currency: str = "EUR") -> tuple[str, str]:
    created = await client.post("/creators", json={"display_name": "Ada Lovelace", "country": "GB"})
    assert created.status == 201, await created.text()
    creator_id = (await created.json())["creator_id"]
    body: dict = {"currency": currency}
    if stripe:
        body["stripe_account_id"] = STRIPE_ACCOUNT
    if bank:
        body["bank_account"] = {"holder_name": HOLDER, "iban": IBAN, "bic": "COBADEFFXXX"}
    recipient = await client.post(f"/creators/{creator_id}/recipients", json=body)
    assert recipient.status == 201, await recipient.text()
    return creator_id, (await recipient.json())["recipient_id"]


async def status_of(engine, offer_id: str) -> str | None:
    async with engine.connect() as conn:
        return await conn.scalar(select(offers.c.status).where(offers.c.offer_id == offer_id))


async def wait_status(engine, offer_id: str, status: str, timeout: float = 45) -> None:
    async def reached() -> bool:
        return await status_of(engine, offer_id) == status

    await eventually(reached, timeout=timeout, what=f"offer {offer_id} {status}")


async def accepted_offer(client, engine, creator_id: str, currency: str = "EUR") -> str:
    resp = await client.post(
        "/offers", json={"creator_id": creator_id, "currency": currency, "royalty_history": HISTORY}
    )
    assert resp.status == 202, await resp.text()
    offer_id = (await resp.json())["offer_id"]
    await wait_status(engine, offer_id, "termsheet_issued")
    accepted = await client.post(f"/offers/{offer_id}/accept")
    assert accepted.status == 202, await accepted.text()
    await wait_status(engine, offer_id, "accepted")
    return offer_id


async def request_payout(client, offer_id: str, recipient_id: str, key: str | None = None):
    return await client.post(
        f"/offers/{offer_id}/payout",
        json={"recipient_id": recipient_id},
        headers={"Idempotency-Key": key or str(uuid.uuid4())},
    )
