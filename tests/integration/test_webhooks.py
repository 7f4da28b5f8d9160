"""Provider webhooks end to end (issue 9, point 9): a payout succeeds, the provider takes it
back (a Stripe reversal, a Wise transfer that bounces after ``processing``) and says so in a
signed webhook. Real web and worker PROCESSES on their own database and topic namespace,
wired to the provider fake, which signs and sends the webhooks.

Per reversal: one ``offer.payout.reversed``, one reversing ledger transaction, the deal
``payout_reversed`` on GET /offers/{id}, ``ledger check`` clean, ``reconcile`` clean. A Stripe
transfer reversed in two parts (Stripe's ``amount_reversed`` is cumulative): two events, two
reversing transactions adding up to the payout. The same webhook delivered again changes
nothing (200 duplicate), nor does an older total arriving late; a forged or stale one is 400
and neither recorded nor published.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from sqlalchemy import select

from infra.db import create_engine
from infra.providers.stripe import stripe_amount
from infra.settings import Settings
from models.events import PayoutReversed
from models.payout import payout_id_for
from state.ledger import check_ledger, ledger_entries, ledger_transactions
from state.tables import payouts
from state.webhooks import provider_webhooks
from tests.fakes.providers import ProviderFake
from tests.fakes.webhooks import (
    new_wise_key,
    send,
    signed_stripe,
    signed_wise,
    stripe_event_body,
    wise_state_change_body,
)
from tests.support.environments import drop_stack_env, prepare_stack_env
from tests.support.kafka import read_all
from tests.support.money import accepted_offer, onboard, provider_env, request_payout, wait_status
from tests.support.stack import SPACEMUSIC, Process, admin_headers, eventually

STRIPE_KEY = "sk_test_webhooks"
WISE_TOKEN = "wise-test-token-webhooks"
WEBHOOK_SECRET = "whsec_integration_webhooks_secret"


@pytest.fixture(scope="module")
async def fake():
    provider = ProviderFake(stripe_api_key=STRIPE_KEY, wise_token=WISE_TOKEN, stripe_webhook_secret=WEBHOOK_SECRET)
    await provider.start()
    yield provider
    await provider.stop()


@pytest.fixture(scope="module")
def hook_env(fake, run_id):
    env = prepare_stack_env(
        f"{run_id}w",
        **provider_env(
            fake,
            STRIPE_KEY,
            WISE_TOKEN,
            STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
            WISE_WEBHOOK_PUBLIC_KEY=fake.wise_webhook_public_key_pem,
            PAYOUT_PROVIDER_TIMEOUT_SECONDS="2",
        ),
    )
    yield env
    drop_stack_env(env)


class Http:
    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base = base
        self.session = aiohttp.ClientSession(headers=headers)

    async def post(self, path: str, **kwargs):  # type: ignore[no-untyped-def]
        return await self.session.post(self.base + path, **kwargs)

    async def get(self, path: str, **kwargs):  # type: ignore[no-untyped-def]
        return await self.session.get(self.base + path, **kwargs)


@pytest.fixture(scope="module")
async def stack(hook_env, fake):
    worker = Process("webhook-worker", hook_env, "worker")
    web = Process("webhook-web", hook_env, "web")
    try:
        await asyncio.to_thread(worker.wait_for_log, '"partitions_assigned"', 90)
        await asyncio.to_thread(web.wait_for_log, '"deal_feed_listening"', 60)
        settings = Settings.from_env(hook_env)
        base = f"http://127.0.0.1:{hook_env['WEB_PORT']}"
        fake.webhook_url = base
        client = Http(base, admin_headers(settings))
        engine = create_engine(settings)
        yield {
            "client": client,
            "engine": engine,
            "settings": settings,
            "env": hook_env,
            "base": base,
            "worker": worker,
        }
        await client.session.close()
        await engine.dispose()
    finally:
        web.stop()
        worker.stop()


async def paid(stack, fake, *, via_wise: bool = False) -> tuple[str, dict]:
    if "creator" not in stack:
        stack["creator"] = await onboard(stack["client"])
    creator_id, recipient_id = stack["creator"]
    offer_id = await accepted_offer(stack["client"], stack["engine"], creator_id)
    if via_wise:
        fake.set_mode("stripe", "decline", payout_id=payout_id_for(offer_id))
    assert (await request_payout(stack["client"], offer_id, recipient_id)).status == 202
    await wait_status(stack["engine"], offer_id, "paid")
    async with stack["engine"].connect() as conn:
        row = (await conn.execute(select(payouts).where(payouts.c.offer_id == offer_id))).mappings().one()
    assert row["provider"] == ("WISE" if via_wise else "STRIPE")
    return offer_id, dict(row)


async def ledger_refs(engine, offer_id: str) -> list[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(ledger_transactions.c.reference_id)
            .where(ledger_transactions.c.offer_id == offer_id)
            .order_by(ledger_transactions.c.reference_id)
        )
        return list(rows.scalars())


async def reversed_events(settings, payout_id: str) -> int:
    records = await read_all(settings, PayoutReversed.TOPIC)
    return sum(1 for r in records if dict(r.headers).get("event_id") and payout_id.encode() in r.value)


async def webhook_rows(engine, event_id: str) -> list[dict]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(provider_webhooks).where(provider_webhooks.c.event_id == event_id))
        return [dict(r) for r in rows.mappings()]


def reconcile_drifts(env: dict[str, str], since: datetime, payout_id: str) -> list[dict]:
    done = subprocess.run(
        [SPACEMUSIC, "reconcile", "--since", since.isoformat(), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    drifts = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return [d for d in drifts if d.get("payout_id") == payout_id]


async def settled_reversal(stack, offer_id: str, payout: dict, reason: str, since: datetime) -> None:
    """What a reversal must leave behind, once the worker has posted it."""
    engine = stack["engine"]
    await wait_status(engine, offer_id, "payout_reversed")

    async def posted() -> bool:
        return len(await ledger_refs(engine, offer_id)) == 2

    await eventually(posted, timeout=30, what="the reversing posting")
    assert await ledger_refs(engine, offer_id) == [
        f"payout-reversal:{payout['payout_id']}:{payout['amount_minor']}",
        f"payout:{payout['payout_id']}",
    ]
    deal = await (await stack["client"].get(f"/offers/{offer_id}")).json()
    assert deal["status"] == "payout_reversed"
    assert deal["payout_reversal_reason"] == reason
    assert deal["payout_reversed_amount_minor"] == payout["amount_minor"]
    async with engine.connect() as conn:
        report = await check_ledger(conn)
    assert report.ok, report.violations
    assert await asyncio.to_thread(reconcile_drifts, stack["env"], since, payout["payout_id"]) == []


async def test_a_stripe_reversal_reverses_the_payout_once_however_often_it_is_delivered(stack, fake) -> None:
    since = datetime.now(UTC) - timedelta(seconds=5)
    offer_id, payout = await paid(stack, fake)
    delivery = fake.reverse_stripe_transfer(payout["provider_reference"])
    assert await fake.deliver(delivery) == 202
    await settled_reversal(stack, offer_id, payout, "stripe_transfer_reversed", since)
    # Stripe retries (same event id, freshly signed): recorded once, published once, posted once.
    again = signed_stripe(delivery.body, WEBHOOK_SECRET)
    assert await fake.deliver(again) == 200
    await asyncio.sleep(1.0)
    assert len(await ledger_refs(stack["engine"], offer_id)) == 2
    assert await reversed_events(stack["settings"], payout["payout_id"]) == 1
    rows = await webhook_rows(stack["engine"], delivery.event_id)
    assert [(r["provider"], r["outcome"], r["payout_id"]) for r in rows] == [
        ("STRIPE", "published", payout["payout_id"])
    ]


async def reversal_entries(engine, payout_id: str) -> list[tuple[str, str, str, int]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(
                ledger_entries.c.reference_id,
                ledger_entries.c.account,
                ledger_entries.c.direction,
                ledger_entries.c.amount_minor,
            )
            .where(ledger_entries.c.reference_id.startswith(f"payout-reversal:{payout_id}:"))
            .order_by(ledger_entries.c.id)
        )
        return [(r.reference_id, r.account, r.direction, int(r.amount_minor)) for r in rows]


def worker_logged(stack, event: str, payout_id: str) -> int:
    return sum(1 for line in stack["worker"].output().splitlines() if f'"{event}"' in line and payout_id in line)


async def test_a_stripe_transfer_reversed_in_two_parts_posts_each_part_once(stack, fake) -> None:
    since = datetime.now(UTC) - timedelta(seconds=5)
    engine = stack["engine"]
    offer_id, payout = await paid(stack, fake)
    payout_id, amount, currency = payout["payout_id"], payout["amount_minor"], payout["currency"]
    assert currency == "EUR"  # Stripe's unit is our minor unit: amount_reversed reads as is
    third = amount // 3
    assert 0 < third < amount
    prefix = f"payout-reversal:{payout_id}:"

    async def reversal_refs(n: int) -> bool:
        return len(await ledger_refs(engine, offer_id)) == 1 + n

    # A third of the transfer reversed: amount_reversed = third.
    first = fake.reverse_stripe_transfer(payout["provider_reference"], amount=stripe_amount(third, currency))
    assert await fake.deliver(first) == 202
    await eventually(lambda: reversal_refs(1), timeout=30, what="the first reversing posting")
    await wait_status(engine, offer_id, "payout_reversed")
    assert await asyncio.to_thread(reconcile_drifts, stack["env"], since, payout_id) == []
    # The rest: Stripe's amount_reversed is now the whole transfer, and the posting is the rest.
    rest = fake.reverse_stripe_transfer(payout["provider_reference"])
    assert json.loads(rest.body)["data"]["object"]["amount_reversed"] == stripe_amount(amount, currency)
    assert await fake.deliver(rest) == 202
    await eventually(lambda: reversal_refs(2), timeout=30, what="the second reversing posting")
    assert await reversal_entries(engine, payout_id) == [
        (f"{prefix}{third}", "platform_cash:stripe", "DEBIT", third),
        (f"{prefix}{third}", "creator_advances_receivable", "CREDIT", third),
        (f"{prefix}{amount}", "platform_cash:stripe", "DEBIT", amount - third),
        (f"{prefix}{amount}", "creator_advances_receivable", "CREDIT", amount - third),
    ]
    assert await reversed_events(stack["settings"], payout_id) == 2

    async def deal_shows_the_total() -> dict | None:
        deal = await (await stack["client"].get(f"/offers/{offer_id}")).json()
        return deal if deal.get("payout_reversed_amount_minor") == amount else None

    deal = await eventually(deal_shows_the_total, timeout=30, what="the deal's total reversed")
    assert deal["status"] == "payout_reversed"
    assert deal["payout_reversal_reason"] == "stripe_transfer_reversed"
    async with engine.connect() as conn:
        report = await check_ledger(conn)
    assert report.ok, report.violations
    assert await asyncio.to_thread(reconcile_drifts, stack["env"], since, payout_id) == []

    # Stripe retries the first partial (same evt_, freshly signed): 200 duplicate, nothing new.
    assert await fake.deliver(signed_stripe(first.body, WEBHOOK_SECRET)) == 200
    # The older total under another event id (a report arriving late): published under the
    # first partial's event id; the worker finds that total covered and posts nothing.
    already = worker_logged(stack, "payout_reversal_already_posted", payout_id)
    late_event = {**json.loads(first.body), "id": "evt_late" + uuid.uuid4().hex[:16]}
    late = signed_stripe(json.dumps(late_event, separators=(",", ":")).encode(), WEBHOOK_SECRET)
    assert await fake.deliver(late) == 202
    await eventually(
        lambda: worker_logged(stack, "payout_reversal_already_posted", payout_id) > already,
        timeout=30,
        what="the worker skipping the older total",
    )
    assert await reversed_events(stack["settings"], payout_id) == 3  # the late copy, same event id
    assert len(await ledger_refs(engine, offer_id)) == 3
    assert sum(e[3] for e in await reversal_entries(engine, payout_id) if e[2] == "DEBIT") == amount
    deal = await (await stack["client"].get(f"/offers/{offer_id}")).json()
    assert (deal["status"], deal["payout_reversed_amount_minor"]) == ("payout_reversed", amount)
    assert await asyncio.to_thread(reconcile_drifts, stack["env"], since, payout_id) == []


async def test_a_wise_transfer_that_bounces_after_processing_is_reversed(stack, fake) -> None:
    since = datetime.now(UTC) - timedelta(seconds=5)
    offer_id, payout = await paid(stack, fake, via_wise=True)
    transfer = next(t for t in fake.transfers["wise"] if str(t["id"]) == payout["provider_reference"])
    assert transfer["status"] == "processing"
    fake.bounce_wise_transfer_later(payout["provider_reference"], after_seconds=1.0)
    await settled_reversal(stack, offer_id, payout, "wise_bounced_back", since)
    delivery = fake.webhooks[-1]
    assert delivery.provider == "wise" and delivery.answers == [202]
    assert await fake.deliver(delivery) == 200  # Wise's retry: a new X-Delivery-Id, the same event
    assert await reversed_events(stack["settings"], payout["payout_id"]) == 1


async def test_forged_stale_and_unsigned_webhooks_are_refused_and_change_nothing(stack, fake) -> None:
    offer_id, payout = await paid(stack, fake)
    transfer = next(t for t in fake.transfers["stripe"] if t["id"] == payout["provider_reference"])
    body = stripe_event_body({**transfer, "reversed": True, "amount_reversed": transfer["amount"]})
    forged = signed_stripe(body, "whsec_not_the_endpoint_secret")
    stale = signed_stripe(body, WEBHOOK_SECRET, timestamp=int(time.time()) - 600)
    tampered = signed_stripe(body, WEBHOOK_SECRET)
    tampered.body = body.replace(b'"livemode":false', b'"livemode":true')
    unsigned = signed_stripe(body, WEBHOOK_SECRET)
    del unsigned.headers["Stripe-Signature"]
    for delivery, error in (
        (forged, "webhook_bad_signature"),
        (stale, "webhook_stale"),
        (tampered, "webhook_bad_signature"),
        (unsigned, "webhook_missing_signature"),
    ):
        async with aiohttp.ClientSession() as anonymous:
            resp = await anonymous.post(
                stack["base"] + "/webhooks/stripe", data=delivery.body, headers=delivery.headers
            )
            assert resp.status == 400, (error, resp.status)
            assert (await resp.json())["error"] == error
    # Wise: a body signed by any key but the one configured is refused.
    wise_body = wise_state_change_body({"id": 1}, "processing", "bounced_back")
    assert await send(signed_wise(wise_body, new_wise_key()), stack["base"]) == 400
    await asyncio.sleep(1.0)
    assert await webhook_rows(stack["engine"], forged.event_id) == []
    assert await reversed_events(stack["settings"], payout["payout_id"]) == 0
    assert await ledger_refs(stack["engine"], offer_id) == [f"payout:{payout['payout_id']}"]
    # A genuine delivery for it is still accepted afterwards: refusals recorded nothing.
    assert await fake.deliver(signed_stripe(body, WEBHOOK_SECRET)) == 202
    await wait_status(stack["engine"], offer_id, "payout_reversed")
