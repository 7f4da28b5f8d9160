"""Offers lapse, are declined and withdrawn, on the REAL stack (Kafka, registry, Postgres,
the worker's valuation, documents and projector agents, the web app in process).

An offer "issued long ago" is an ``offer.created`` published with an old ``occurred_at``:
valuation prices it at that time (+1 µs), so the term sheet prints issued/valid_until in
the past, exactly as a real 31-day-old offer would. Nobody waits 30 days.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from agents.lapse import sweep
from models.events import OfferCreated, OfferLapsed, RoyaltyPeriod
from models.offers import OFFER_VALIDITY, lapse_event_id
from projections import rebuild
from projections.tables import deal_events
from tests.support.kafka import read_all
from tests.support.money import HISTORY, wait_status
from tests.support.sse import SseStream
from tests.support.stack import run_cli
from web.auth import ADMIN, DEALS_READ, OFFERS_WRITE, mint_token


async def _creator(web_client, name: str) -> str:
    resp = await web_client.post("/creators", json={"display_name": name})
    assert resp.status == 201, await resp.text()
    return (await resp.json())["creator_id"]


async def _offer(web_client, engine, creator_id: str) -> str:
    created = await web_client.post(
        "/offers", json={"creator_id": creator_id, "currency": "EUR", "royalty_history": HISTORY}
    )
    assert created.status == 202, await created.text()
    offer_id = (await created.json())["offer_id"]
    await wait_status(engine, offer_id, "termsheet_issued")
    return offer_id


def _as(settings, subject: str, permissions: list[str], creator_id: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(settings, subject, permissions, creator_id=creator_id)}"}


async def _lapse_rows(engine, offer_id: str) -> int:
    async with engine.connect() as conn:
        return await conn.scalar(
            select(func.count())
            .select_from(deal_events)
            .where(deal_events.c.offer_id == offer_id, deal_events.c.event_type == OfferLapsed.TOPIC)
        )


async def test_an_old_offer_refuses_accept_and_lapses_once_live(
    web_client, worker, engine, publisher, settings, stack_env
) -> None:
    creator_id = await _creator(web_client, "Old Offer Creator")
    issued = datetime.now(UTC).replace(microsecond=0) - OFFER_VALIDITY - timedelta(days=1)
    old = OfferCreated(
        event_id=str(uuid.uuid4()),
        offer_id=str(uuid.uuid4()),
        creator_id=creator_id,
        occurred_at=issued,
        correlation_id="test-offer-lapse",
        currency="EUR",
        royalty_history=tuple(RoyaltyPeriod(p["period"], p["amount_minor"]) for p in HISTORY),
    )
    offer_id = old.offer_id
    async with web_client.session.get(web_client.make_url("/offers/events/deals")) as resp:
        assert resp.status == 200
        stream = SseStream(resp)
        await stream.next()  # ready
        await publisher.publish(old)
        await wait_status(engine, offer_id, "termsheet_issued")
        deal = await (await web_client.get(f"/offers/{offer_id}")).json()
        # What the term sheet printed: the valuation's time (the offer's + 1 µs) plus the validity.
        valid_until = datetime.fromisoformat(deal["valid_until"])
        assert issued + OFFER_VALIDITY <= valid_until < issued + OFFER_VALIDITY + timedelta(seconds=1)

        # The sweeper has not run for it yet, and acceptance is refused all the same.
        refused = await web_client.post(f"/offers/{offer_id}/accept")
        assert refused.status == 409, await refused.text()
        assert (await refused.json())["error"] == "offer_lapsed"

        listed = run_cli(stack_env, "offers", "lapse", "--dry-run", "--json")
        assert offer_id in {json.loads(line)["offer_id"] for line in listed.stdout.splitlines()}
        now = datetime.now(UTC)
        dry = await sweep(engine, None, now, dry_run=True)
        assert offer_id in {e.offer_id for e in dry.lapsed}
        first = await sweep(engine, publisher, now)
        ours = [e for e in first.lapsed if e.offer_id == offer_id]
        assert [e.event_id for e in ours] == [lapse_event_id(offer_id)]

        change = await stream.next_deal(
            lambda c: c["deal"]["offer_id"] == offer_id and c["deal"]["status"] == "lapsed", timeout=30
        )
        assert change["event_type"] == OfferLapsed.TOPIC and change["deal"]["lapsed_at"]
    assert (await (await web_client.get(f"/offers/{offer_id}")).json())["status"] == "lapsed"

    # A second sweep finds nothing to lapse for it; the log holds one lapse event id only
    # (the worker's own schedule may have published the same one: applied once).
    again = await sweep(engine, publisher, datetime.now(UTC))
    assert offer_id not in {e.offer_id for e in again.lapsed}
    assert await _lapse_rows(engine, offer_id) == 1
    records = [r for r in await read_all(settings, OfferLapsed.TOPIC) if r.key == offer_id.encode()]
    assert records and {dict(r.headers)["event_id"].decode() for r in records} == {lapse_event_id(offer_id)}
    refused = await web_client.post(f"/offers/{offer_id}/accept")
    assert refused.status == 409 and (await refused.json())["error"] == "offer_lapsed"
    declined = await web_client.post(f"/offers/{offer_id}/decline")
    assert declined.status == 409 and (await declined.json())["error"] == "offer_lapsed"


async def test_decline_by_its_creator_and_withdraw_by_an_operator(web_client, worker, engine, settings) -> None:
    alice, bob = await _creator(web_client, "Alice Decliner"), await _creator(web_client, "Bob Bystander")
    as_alice = _as(settings, "auth0|alice-decl", [DEALS_READ, OFFERS_WRITE], creator_id=alice)
    as_bob = _as(settings, "auth0|bob-decl", [DEALS_READ, OFFERS_WRITE], creator_id=bob)
    first, second = await _offer(web_client, engine, alice), await _offer(web_client, engine, alice)

    # Another creator cannot even learn the offer exists; its own creator may decline it.
    assert (await web_client.post(f"/offers/{first}/decline", headers=as_bob)).status == 404
    too_long = await web_client.post(f"/offers/{first}/decline", headers=as_alice, json={"reason": "x" * 501})
    assert too_long.status == 422, await too_long.text()
    declined = await web_client.post(f"/offers/{first}/decline", headers=as_alice, json={"reason": "too low"})
    assert declined.status == 202, await declined.text()
    await wait_status(engine, first, "declined")
    again = await web_client.post(f"/offers/{first}/decline", headers=as_alice)
    assert again.status == 200 and (await again.json())["already"] is True
    deal = await (await web_client.get(f"/offers/{first}", headers=as_alice)).json()
    assert (deal["declined_by"], deal["decline_reason"]) == ("auth0|alice-decl", "too low")
    accept = await web_client.post(f"/offers/{first}/accept", headers=as_alice)
    assert accept.status == 409 and (await accept.json())["error"] == "conflict"
    assert (await web_client.post(f"/offers/{first}/withdraw")).status == 409  # no longer open

    # Withdrawal is for operators only; an admin's is recorded under its subject, which the
    # creator reads as "staff".
    assert (await web_client.post(f"/offers/{second}/withdraw", headers=as_alice)).status == 403
    admin = _as(settings, "test|ops-withdraw", [ADMIN])
    withdrawn = await web_client.post(f"/offers/{second}/withdraw", headers=admin, json={"reason": "pricing error"})
    assert withdrawn.status == 202, await withdrawn.text()
    await wait_status(engine, second, "withdrawn")
    assert (await (await web_client.get(f"/offers/{second}", headers=admin)).json())[
        "withdrawn_by"
    ] == "test|ops-withdraw"
    mine = await (await web_client.get(f"/offers/{second}", headers=as_alice)).json()
    assert (mine["status"], mine["withdrawn_by"], mine["withdraw_reason"]) == ("withdrawn", "staff", "pricing error")
    assert (await web_client.post(f"/offers/{second}/accept", headers=as_alice)).status == 409
    history = await (await web_client.get(f"/offers/{second}/events", headers=as_alice)).json()
    assert [e["payload"]["withdrawn_by"] for e in history["events"] if e["event_type"] == "offer.withdrawn"] == [
        "staff"
    ]
    # The log rebuilds exactly what the live projector made of the closing events (the new
    # columns included): verify-only compares row by row inside one snapshot, no lock.
    verify = await rebuild.rebuild_projections(settings, rebuild.RebuildOptions(swap=False, workers=1))
    assert verify.identical and not verify.swapped
