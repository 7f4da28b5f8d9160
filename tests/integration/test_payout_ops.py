"""Operators retry and cancel payouts over HTTP, as the admin page does, on the real stack:
its own worker and web PROCESSES (own database and topic namespace) wired to the stateful
provider fake, so a payout can fail, park, or move money while its answer is lost."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import datetime

import aiohttp
import pytest
from sqlalchemy import func, select

from infra.db import create_engine
from infra.settings import Settings
from models.events import PayoutCancelRequested
from models.payout import payout_id_for
from state.ledger import ledger_transactions
from state.tables import payouts
from tests.fakes.providers import ProviderFake
from tests.support.environments import drop_stack_env, prepare_stack_env
from tests.support.kafka import read_all
from tests.support.money import (
    FAST_RESOLVER,
    STRIPE_ACCOUNT,
    accepted_offer,
    onboard,
    provider_env,
    request_payout,
    wait_status,
)
from tests.support.stack import Process, admin_headers, eventually
from web.auth import DEALS_READ, PAYOUTS_WRITE, mint_token

STRIPE_KEY = "sk_test_fake_provider"
WISE_TOKEN = "wise-test-token-not-real"
# Short, so a cancel waits out the settle window inside the test's time (the agent waits up
# to 30 s of it; longer windows are refused with the time to ask again).
SETTLE_SECONDS = 3.0
ADMIN_SUBJECT = "test|admin"  # admin_headers' subject


class Http:
    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base = base
        self.session = aiohttp.ClientSession(headers=headers)

    async def post(self, path: str, **kwargs):  # type: ignore[no-untyped-def]
        return await self.session.post(self.base + path, **kwargs)

    async def get(self, path: str, **kwargs):  # type: ignore[no-untyped-def]
        return await self.session.get(self.base + path, **kwargs)


@pytest.fixture(scope="module")
async def fake():
    provider = ProviderFake(hang_seconds=4, stripe_api_key=STRIPE_KEY, wise_token=WISE_TOKEN)
    await provider.start()
    yield provider
    await provider.stop()


@pytest.fixture(scope="module")
def ops_env(fake, run_id):
    env = prepare_stack_env(
        f"{run_id}o",
        **provider_env(
            fake,
            STRIPE_KEY,
            WISE_TOKEN,
            PAYOUT_PROVIDER_TIMEOUT_SECONDS="2",
            PAYOUT_SETTLE_SECONDS=str(SETTLE_SECONDS),
            **FAST_RESOLVER,
        ),
    )
    yield env
    drop_stack_env(env)


@pytest.fixture(scope="module")
async def ops(ops_env):
    worker = Process("payout-ops-worker", ops_env, "worker")
    web = Process("payout-ops-web", ops_env, "web")
    await asyncio.to_thread(worker.wait_for_log, '"partitions_assigned"', 90)
    await asyncio.to_thread(web.wait_for_log, '"deal_feed_listening"', 60)
    settings = Settings.from_env(ops_env)
    base = f"http://127.0.0.1:{ops_env['WEB_PORT']}"
    admin = Http(base, admin_headers(settings))
    # May request payouts and read deals, but is no operator.
    limited = Http(
        base, {"Authorization": f"Bearer {mint_token(settings, 'test|cashier', [PAYOUTS_WRITE, DEALS_READ])}"}
    )
    engine = create_engine(settings)
    creator_id, recipient_id = await onboard(admin)
    yield {
        "admin": admin,
        "limited": limited,
        "engine": engine,
        "settings": settings,
        "creator_id": creator_id,
        "recipient_id": recipient_id,
    }
    await admin.session.close()
    await limited.session.close()
    await engine.dispose()
    web.stop()
    worker.stop()


@pytest.fixture(autouse=True)
def reset_fake(fake):
    fake.reset()
    yield


async def payout_row(engine, payout_id: str) -> dict | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(payouts).where(payouts.c.payout_id == payout_id))).mappings().first()
        return dict(row) if row else None


async def ledger_count(engine, offer_id: str) -> int:
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                select(func.count()).select_from(ledger_transactions).where(ledger_transactions.c.offer_id == offer_id)
            )
        )


async def history(ops, offer_id: str) -> list[dict]:
    resp = await ops["admin"].get(f"/offers/{offer_id}/events")
    assert resp.status == 200, await resp.text()
    return (await resp.json())["events"]


async def wait_phase(ops, payout_id: str, phase: str, timeout: float = 30) -> dict:
    async def reached() -> dict | None:
        row = await payout_row(ops["engine"], payout_id)
        return row if row is not None and row["phase"] == phase else None

    return await eventually(reached, timeout=timeout, what=f"payout {payout_id} {phase}")  # type: ignore[return-value]


async def publish(settings, *events) -> None:
    from infra.avro import codec_from_settings
    from infra.kafka import EventPublisher

    publisher = EventPublisher(settings, codec_from_settings(settings))
    await publisher.start()
    try:
        for event in events:
            await publisher.publish(event)
    finally:
        await publisher.stop()


def key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


async def parked_offer(ops, fake) -> tuple[str, str]:
    """A deal whose first payout is parked: Stripe answers 5xx, nothing ever shows up."""
    offer_id = await accepted_offer(ops["admin"], ops["engine"], ops["creator_id"])
    first = payout_id_for(offer_id)
    fake.set_mode("stripe", "server_error", payout_id=first)  # sticky, only for this payout
    assert (await request_payout(ops["admin"], offer_id, ops["recipient_id"])).status == 202
    await wait_phase(ops, first, "parked")
    return offer_id, first


async def test_a_failed_payout_is_retried_to_another_recipient_and_pays_once(ops, fake) -> None:
    offer_id = await accepted_offer(ops["admin"], ops["engine"], ops["creator_id"])
    first, second = payout_id_for(offer_id), payout_id_for(offer_id, 1)
    fake.set_mode("stripe", "decline", payout_id=first)
    fake.set_mode("wise", "decline", step="transfer", payout_id=first)
    await request_payout(ops["admin"], offer_id, ops["recipient_id"])
    await wait_status(ops["engine"], offer_id, "payout_failed")

    other = await ops["admin"].post(
        f"/creators/{ops['creator_id']}/recipients", json={"currency": "EUR", "stripe_account_id": "acct_1RetryTarget9"}
    )
    assert other.status == 201, await other.text()
    new_recipient = (await other.json())["recipient_id"]
    _, foreign = await onboard(ops["admin"], bank=False)  # another creator's recipient
    refused = await ops["admin"].post(f"/offers/{offer_id}/payout/retry", json={"recipient_id": foreign}, headers=key())
    assert refused.status == 422 and (await refused.json())["fields"][0]["field"] == "recipient_id"
    assert (await ops["limited"].post(f"/offers/{offer_id}/payout/retry", json={}, headers=key())).status == 403

    same = key()
    answers = [
        await ops["admin"].post(f"/offers/{offer_id}/payout/retry", json={"recipient_id": new_recipient}, headers=same)
        for _ in range(2)
    ]
    assert [a.status for a in answers] == [202, 202]
    body = await answers[0].json()
    assert body == await answers[1].json() and answers[1].headers.get("Idempotent-Replayed") == "true"
    assert body["payout_id"] == second and body["retry_of"] == first and body["requested_by"] == ADMIN_SUBJECT

    await wait_status(ops["engine"], offer_id, "paid")
    assert fake.executed_count(first) == 0 and fake.executed_count(second) == 1
    assert [t["destination"] for t in fake.transfers["stripe"] if t["transfer_group"] == second] == [
        "acct_1RetryTarget9"
    ]
    assert await ledger_count(ops["engine"], offer_id) == 1
    row = await payout_row(ops["engine"], second)
    assert row["retry_of"] == first and str(row["recipient_id"]) == new_recipient
    requested = [r for r in await read_all(ops["settings"], "offer.payout.requested") if r.key.decode() == offer_id]
    assert len(requested) == 2  # the first payout and ONE retry: the same key twice is one event
    retry = [e for e in await history(ops, offer_id) if e["payload"].get("retry_of") == first]
    assert [e["payload"]["requested_by"] for e in retry] == [ADMIN_SUBJECT]

    again = await ops["admin"].post(f"/offers/{offer_id}/payout/retry", json={}, headers=key())
    assert again.status == 409 and (await again.json())["error"] == "payout_not_retryable"  # paid


async def test_a_parked_payout_is_cancelled_over_http_with_the_canceller_recorded(ops, fake) -> None:
    offer_id, first = await parked_offer(ops, fake)
    listed = await ops["admin"].get("/payouts?stuck=true")
    assert listed.status == 200
    stuck = {p["payout_id"]: p for p in (await listed.json())["payouts"]}
    assert stuck[first]["phase"] == "parked" and stuck[first]["age_seconds"] >= 0
    assert (await ops["limited"].get("/payouts?stuck=true")).status == 403
    assert (await ops["limited"].post(f"/payouts/{first}/cancel", headers=key())).status == 403
    retry_too_early = await ops["admin"].post(f"/offers/{offer_id}/payout/retry", json={}, headers=key())
    assert retry_too_early.status == 409

    same = key()
    answers = [await ops["admin"].post(f"/payouts/{first}/cancel", headers=same) for _ in range(2)]
    assert [a.status for a in answers] == [202, 202], await answers[0].text()
    assert answers[1].headers.get("Idempotent-Replayed") == "true"

    await wait_status(ops["engine"], offer_id, "payout_failed", timeout=30)
    row = await payout_row(ops["engine"], first)
    assert row["phase"] == "failed" and row["failure_reason"].startswith(f"cancelled by {ADMIN_SUBJECT}: ")
    assert row["driver"] == f"operator:{ADMIN_SUBJECT}"
    assert fake.executed_count(first) == 0 and await ledger_count(ops["engine"], offer_id) == 0

    async def cancel_in_history() -> list[dict] | None:
        events = await history(ops, offer_id)
        completed = [e for e in events if e["event_type"] == "offer.payout.completed"]
        return events if completed else None

    events = await eventually(cancel_in_history, timeout=20, what="the cancelled outcome in the history")
    asked = [e for e in events if e["event_type"] == "offer.payout.cancel.requested"]
    assert [e["payload"]["requested_by"] for e in asked] == [ADMIN_SUBJECT]  # one event for one key
    assert not [e for e in events if e["event_type"] == "offer.payout.cancel.refused"]
    (completed,) = [e for e in events if e["event_type"] == "offer.payout.completed"]
    assert completed["payload"]["status"] == "FAILED" and ADMIN_SUBJECT in completed["payload"]["failure_reason"]
    gone = await ops["admin"].get("/payouts?stuck=true")
    assert first not in {p["payout_id"] for p in (await gone.json())["payouts"]}
    late = await ops["admin"].post(f"/payouts/{first}/cancel", headers=key())
    assert late.status == 409 and (await late.json())["error"] == "payout_not_cancellable"

    # At-least-once: the same request delivered again is harmless (no refusal, no second
    # outcome); a later request by someone else for the finished payout is refused. Both go
    # to the deal's partition, so once the second's refusal shows, the first was handled.
    redelivered = PayoutCancelRequested(
        **{k: v for k, v in asked[0]["payload"].items() if k != "occurred_at"},
        occurred_at=datetime.fromisoformat(asked[0]["payload"]["occurred_at"]),
    )
    other = dataclasses.replace(redelivered, event_id=str(uuid.uuid4()), requested_by="test|other-operator")
    await publish(ops["settings"], redelivered, other)

    async def refusals() -> list[dict] | None:
        found = [e for e in await history(ops, offer_id) if e["event_type"] == "offer.payout.cancel.refused"]
        return found or None

    (refused,) = await eventually(refusals, timeout=20, what="the late request's refusal")
    assert refused["payload"]["requested_by"] == "test|other-operator"
    assert "already failed" in refused["payload"]["reason"]
    assert len([e for e in await history(ops, offer_id) if e["event_type"] == "offer.payout.completed"]) == 1


async def test_a_cancel_while_the_provider_shows_the_money_moved_is_refused(ops, fake) -> None:
    offer_id = await accepted_offer(ops["admin"], ops["engine"], ops["creator_id"])
    first = payout_id_for(offer_id)
    # Stripe executes the transfer and answers 500; its lookups fail too, so the payout parks
    # while the money has in fact moved.
    fake.add_payout_fault("stripe", first, "execute_then_500", step="transfer", times=1)
    fake.set_mode("stripe", "server_error", step="lookup", payout_id=first)
    await request_payout(ops["admin"], offer_id, ops["recipient_id"])
    await wait_phase(ops, first, "parked")
    assert fake.executed_count(first) == 1

    asked = await ops["admin"].post(f"/payouts/{first}/cancel", headers=key())
    assert asked.status == 202, await asked.text()
    await asyncio.sleep(0.3)
    fake.set_mode("stripe", "ok")  # the transfer shows up in lookups (the cancel is waiting out the window)

    async def refused() -> dict | None:
        found = [e for e in await history(ops, offer_id) if e["event_type"] == "offer.payout.cancel.refused"]
        return found[0] if found else None

    refusal = await eventually(refused, timeout=30, what="the refusal in the deal's history")
    assert refusal["payload"]["requested_by"] == ADMIN_SUBJECT
    assert "succeeded" in refusal["payload"]["reason"].lower(), refusal  # "answers SUCCEEDED" or "already succeeded"
    await wait_status(ops["engine"], offer_id, "paid")
    assert (await payout_row(ops["engine"], first))["phase"] == "succeeded"
    assert fake.executed_count(first) == 1 and await ledger_count(ops["engine"], offer_id) == 1
    assert [t["destination"] for t in fake.transfers["stripe"] if t["transfer_group"] == first] == [STRIPE_ACCOUNT]
