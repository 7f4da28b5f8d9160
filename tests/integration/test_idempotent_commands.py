"""POST /offers and POST /offers/{id}/payout publish at most once per Idempotency-Key.

Against the real stack and real web processes: same-key retries with a 90-character
(SAML-style) subject, a web process killed (the test-only fault hook, os._exit) right after
its commit and before publishing, whose event the relay of the next process publishes, and
a broker refusing the event, whose 503 is not stored. "At most one event" is read off the
topic: distinct event ids for the offer.
"""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.errors import KafkaConnectionError
from sqlalchemy import func, select

from infra.settings import Settings
from models.events import OfferCreated, PayoutRequested
from projections.tables import deal_events
from state.tables import api_idempotency, event_outbox, payouts
from tests.support.kafka import read_all
from tests.support.money import HISTORY, onboard, wait_status
from tests.support.stack import Process, eventually, free_port
from web.auth import ADMIN, mint_token
from web.commands import command_id
from web.idempotent import FAULT_AFTER_COMMIT, seed_of

LONG_SUBJECT = ("samlp|urn:oasis:names:tc:SAML:2.0:nameid-format:persistent|" + "a1b2c3d4" * 4)[:90]
assert len(LONG_SUBJECT) == 90


class Web:
    """One `spacemusic web` process on a port of its own, as a client with a bearer token."""

    def __init__(self, env: dict[str, str], name: str, token: str, **overrides: str) -> None:
        self.port = free_port()
        self.proc = Process(name, {**env, "WEB_PORT": str(self.port), **overrides}, "web")
        self.session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"})

    async def ready(self) -> Web:
        await asyncio.to_thread(self.proc.wait_for_log, '"deal_feed_listening"', 60)
        return self

    async def post(self, path: str, **kwargs):  # type: ignore[no-untyped-def]
        return await self.session.post(f"http://127.0.0.1:{self.port}{path}", **kwargs)

    async def close(self) -> None:
        await self.session.close()
        self.proc.stop()


@pytest.fixture(scope="module")
def idem_env(stack_env):
    # The relay takes over rows unsent for 1 s (instead of 5) so the tests stay short.
    return {**stack_env, "OUTBOX_RELAY_AFTER_SECONDS": "1", "OUTBOX_RELAY_POLL_SECONDS": "0.3"}


@pytest.fixture(scope="module")
def long_token(settings: Settings) -> str:
    return mint_token(settings, LONG_SUBJECT, [ADMIN])


@pytest.fixture(scope="module")
async def web(idem_env, long_token):
    proc = await Web(idem_env, "idem-web", long_token).ready()
    yield proc
    await proc.close()


def offer_body(creator_id: str) -> dict:
    return {"creator_id": creator_id, "currency": "EUR", "royalty_history": HISTORY}


async def event_ids(settings: Settings, topic: str, offer_id: str) -> list[str]:
    """The event ids on ``topic`` for ``offer_id``, one per record (duplicates kept)."""
    ids = []
    for record in await read_all(settings, topic):
        if record.key == offer_id.encode():
            ids.append(dict(record.headers)["event_id"].decode())
    return ids


async def history_count(engine, offer_id: str, topic: str) -> int:
    async with engine.connect() as conn:
        return int(
            await conn.scalar(
                select(func.count())
                .select_from(deal_events)
                .where(deal_events.c.offer_id == offer_id, deal_events.c.event_type == topic)
            )
        )


async def unsent(engine, event_id: str) -> bool | None:
    """True: queued and not sent; False: sent; None: no such row."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(event_outbox.c.sent_at).where(event_outbox.c.event_id == event_id))).first()
    return None if row is None else row.sent_at is None


async def test_same_key_offer_twice_is_one_offer_and_one_event(web, settings, engine, worker) -> None:
    creator_id, _ = await onboard(web)
    key = f"offer-{uuid.uuid4()}"
    first = await web.post("/offers", json=offer_body(creator_id), headers={"Idempotency-Key": key})
    assert first.status == 202, await first.text()
    again = await web.post("/offers", json=offer_body(creator_id), headers={"Idempotency-Key": key})
    assert again.status == 202 and again.headers.get("Idempotent-Replayed") == "true"
    assert await again.json() == await first.json()
    assert again.headers["Location"] == first.headers["Location"]
    offer_id = (await first.json())["offer_id"]

    other = {**offer_body(creator_id), "currency": "USD"}
    reused = await web.post("/offers", json=other, headers={"Idempotency-Key": key})
    assert reused.status == 422 and (await reused.json())["error"] == "idempotency_key_reused"

    await wait_status(engine, offer_id, "termsheet_issued")
    assert await event_ids(settings, OfferCreated.TOPIC, offer_id) == [
        command_id(seed_of(f"offer:{LONG_SUBJECT}", key), "offer.created")
    ]
    assert await history_count(engine, offer_id, OfferCreated.TOPIC) == 1
    async with engine.connect() as conn:
        scopes = (
            (await conn.execute(select(api_idempotency.c.scope).where(api_idempotency.c.idempotency_key == key)))
            .scalars()
            .all()
        )
    assert scopes == [f"offer:{LONG_SUBJECT}"]

    # Without a key: as before, a new offer per request (and through the outbox as well).
    plain = [await web.post("/offers", json=offer_body(creator_id)) for _ in range(2)]
    assert [r.status for r in plain] == [202, 202]
    assert len({(await r.json())["offer_id"] for r in plain}) == 2


async def test_same_key_payout_twice_with_a_long_subject_is_one_event(web, settings, engine, worker) -> None:
    creator_id, recipient_id = await onboard(web)
    offer_id = await _accepted(web, engine, creator_id)
    key = f"pay-{uuid.uuid4()}"
    body = {"recipient_id": recipient_id}
    first = await web.post(f"/offers/{offer_id}/payout", json=body, headers={"Idempotency-Key": key})
    assert first.status == 202, await first.text()
    again = await web.post(f"/offers/{offer_id}/payout", json=body, headers={"Idempotency-Key": key})
    assert again.status == 202 and again.headers.get("Idempotent-Replayed") == "true"
    assert await again.json() == await first.json()
    await wait_status(engine, offer_id, "paid")
    assert len(set(await event_ids(settings, PayoutRequested.TOPIC, offer_id))) == 1
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(payouts).where(payouts.c.offer_id == offer_id)) == 1


async def test_a_process_killed_after_its_commit_publishes_through_the_relay(
    idem_env, web, long_token, settings, engine, worker
) -> None:
    creator_id, recipient_id = await onboard(web)
    scope_key = f"crash-{uuid.uuid4()}"

    # POST /offers: the process exits right after the commit, before publishing.
    crashing = await Web(idem_env, "idem-web-crash-offer", long_token, **{FAULT_AFTER_COMMIT: "1"}).ready()
    try:
        with pytest.raises(aiohttp.ClientError):
            await crashing.post("/offers", json=offer_body(creator_id), headers={"Idempotency-Key": scope_key})
        assert await asyncio.to_thread(crashing.proc.proc.wait, 20) == 17
    finally:
        await crashing.close()
    seed = seed_of(f"offer:{LONG_SUBJECT}", scope_key)
    offer_id, created_id = command_id(seed, "offer"), command_id(seed, "offer.created")
    # The relay of the module's web process (or of the next one) publishes the committed row.
    await eventually(lambda: _sent(engine, created_id), timeout=30, what="the relay publishing offer.created")
    retry = await web.post("/offers", json=offer_body(creator_id), headers={"Idempotency-Key": scope_key})
    assert retry.status == 202 and retry.headers.get("Idempotent-Replayed") == "true"
    assert (await retry.json())["offer_id"] == offer_id
    await wait_status(engine, offer_id, "termsheet_issued")
    assert await event_ids(settings, OfferCreated.TOPIC, offer_id) == [created_id]

    accepted = await web.post(f"/offers/{offer_id}/accept")
    assert accepted.status == 202, await accepted.text()
    await wait_status(engine, offer_id, "accepted")

    # POST /offers/{id}/payout: the same crash, and the client retries with its key.
    crashing = await Web(idem_env, "idem-web-crash-payout", long_token, **{FAULT_AFTER_COMMIT: "1"}).ready()
    body = {"recipient_id": recipient_id}
    try:
        with pytest.raises(aiohttp.ClientError):
            await crashing.post(f"/offers/{offer_id}/payout", json=body, headers={"Idempotency-Key": scope_key})
        assert await asyncio.to_thread(crashing.proc.proc.wait, 20) == 17
    finally:
        await crashing.close()
    requested_id = command_id(seed_of(f"payout:{LONG_SUBJECT}", scope_key), "offer.payout.requested")
    await eventually(lambda: _sent(engine, requested_id), timeout=30, what="the relay publishing the payout")
    retry = await web.post(f"/offers/{offer_id}/payout", json=body, headers={"Idempotency-Key": scope_key})
    assert retry.status == 202 and retry.headers.get("Idempotent-Replayed") == "true"
    await wait_status(engine, offer_id, "paid")
    assert await event_ids(settings, PayoutRequested.TOPIC, offer_id) == [requested_id]


async def test_a_broker_refusal_is_503_not_stored_and_the_retry_succeeds(
    settings, engine, worker, long_token, monkeypatch
) -> None:
    """The broker is shared by every test, so it is cut at the publisher's send (the only
    simulated part): Postgres, the registry and the retry's broker are real."""
    from web.app import create_app
    from web.keys import PUBLISHER

    app = create_app(settings)
    client = TestClient(TestServer(app), headers={"Authorization": f"Bearer {long_token}"})
    await client.start_server()
    try:
        creator_id, _ = await onboard(client)
        key = f"down-{uuid.uuid4()}"

        async def broker_down(*_: object) -> None:
            raise KafkaConnectionError("broker down (test)")

        monkeypatch.setattr(app[PUBLISHER], "send_encoded", broker_down)
        refused = await client.post("/offers", json=offer_body(creator_id), headers={"Idempotency-Key": key})
        assert refused.status == 503, await refused.text()
        seed = seed_of(f"offer:{LONG_SUBJECT}", key)
        async with engine.connect() as conn:
            stored = await conn.scalar(
                select(func.count()).select_from(api_idempotency).where(api_idempotency.c.idempotency_key == key)
            )
        assert stored == 0, "a 503 must not be stored"
        assert await unsent(engine, command_id(seed, "offer.created")) is None, "nor its event queued"

        monkeypatch.undo()
        retried = await client.post("/offers", json=offer_body(creator_id), headers={"Idempotency-Key": key})
        assert retried.status == 202, await retried.text()
        assert retried.headers.get("Idempotent-Replayed") is None
        offer_id = (await retried.json())["offer_id"]
        assert offer_id == command_id(seed, "offer")
        await wait_status(engine, offer_id, "termsheet_issued")
        assert await event_ids(settings, OfferCreated.TOPIC, offer_id) == [command_id(seed, "offer.created")]
    finally:
        await client.close()


async def _sent(engine, event_id: str) -> bool:
    return await unsent(engine, event_id) is False


async def _accepted(web: Web, engine, creator_id: str) -> str:
    created = await web.post("/offers", json=offer_body(creator_id))
    assert created.status == 202, await created.text()
    offer_id = (await created.json())["offer_id"]
    await wait_status(engine, offer_id, "termsheet_issued")
    accepted = await web.post(f"/offers/{offer_id}/accept")
    assert accepted.status == 202, await accepted.text()
    await wait_status(engine, offer_id, "accepted")
    return offer_id
