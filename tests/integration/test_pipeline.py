"""The slice on the real stack: idempotent projection, dead letters, bad requests."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select

from infra.avro import record_to_deadletter
from projections.projector import Outcome, Position, project_event
from projections.tables import deal_changes, deal_events, offers, projection_tracking
from tests.support.deals import HISTORY, _is, deal_status, make_creator, offer_event, post_offer
from tests.support.kafka import end_offsets, read_all
from tests.support.stack import eventually


async def snapshot(engine, offer_id: str) -> tuple:
    async with engine.connect() as conn:
        deal = (await conn.execute(select(offers).where(offers.c.offer_id == offer_id))).mappings().one()
        history = await conn.scalar(
            select(func.count()).select_from(deal_events).where(deal_events.c.offer_id == offer_id)
        )
        changes = await conn.scalar(
            select(func.count()).select_from(deal_changes).where(deal_changes.c.offer_id == offer_id)
        )
    return dict(deal), history, changes


async def test_events_delivered_twice_leave_the_projection_unchanged(web_client, worker, engine, publisher) -> None:
    event = offer_event()
    await publisher.publish(event)
    await eventually(lambda: deal_status(engine, event.offer_id), what="offer projected")
    await eventually(lambda: _is(deal_status(engine, event.offer_id), "termsheet_issued"), what="term sheet issued")
    before = await snapshot(engine, event.offer_id)
    await publisher.publish(event)  # the same event again: a new offset, the same event id
    marker = offer_event()
    await publisher.publish(marker)  # once this is projected, the duplicate has been handled too
    await eventually(lambda: _is(deal_status(engine, marker.offer_id), "termsheet_issued"), what="marker processed")
    assert await snapshot(engine, event.offer_id) == before


async def test_redelivery_at_the_same_offset_is_skipped_by_tracking(engine) -> None:
    event = offer_event()
    position = Position("test.redelivery", 0, 7)
    async with engine.begin() as conn:
        assert await project_event(conn, "redelivery-test", event, position) is Outcome.APPLIED
    async with engine.begin() as conn:
        assert await project_event(conn, "redelivery-test", event, position) is Outcome.ALREADY_TRACKED
        stored = await conn.scalar(
            select(projection_tracking.c.offset).where(projection_tracking.c.consumer == "redelivery-test")
        )
    assert stored == 7
    deal, history, changes = await snapshot(engine, event.offer_id)
    assert (history, changes, deal["event_count"]) == (1, 1, 1)


async def test_garbage_goes_to_deadletter_and_processing_continues(
    web_client, worker, engine, publisher, settings, codec
) -> None:
    garbage = [b"not avro at all", b"\x00\x00\x00\x00\x01\xff", b""]
    for i, value in enumerate(garbage):
        await publisher.send_raw("offer.created", f"bad-{i}".encode(), value, [])
    invalid = offer_event()
    record = await codec.encode("offer.created", {**_record(invalid), "currency": "XXX"})  # valid Avro, invalid money
    await publisher.send_raw("offer.created", invalid.offer_id.encode(), record, [])
    good = await post_offer(web_client)
    await eventually(lambda: _is(deal_status(engine, good), "valued"), what="offer after garbage valued")

    async def parked() -> list:
        letters = [
            record_to_deadletter(await codec.decode("offer.deadletter", r.value))
            for r in await read_all(settings, "offer.deadletter")
        ]
        mine = [dl for dl in letters if dl.consumer == "valuation" and dl.original_topic == "offer.created"]
        return mine if len(mine) >= 4 else []

    letters = await eventually(parked, timeout=30, what="dead letters")
    keys = {dl.original_key for dl in letters}
    assert {b"bad-0", b"bad-1", b"bad-2", invalid.offer_id.encode()} <= keys
    by_key = {dl.original_key: dl for dl in letters}
    assert by_key[b"bad-0"].original_value == b"not avro at all"
    assert by_key[b"bad-0"].error_type == "DecodeError"
    assert by_key[invalid.offer_id.encode()].error_type == "InvalidEvent"
    assert all(dl.original_offset >= 0 and dl.original_partition >= 0 for dl in letters)
    assert await deal_status(engine, invalid.offer_id) is None


def _record(event) -> dict:
    from infra.avro import event_to_record

    return event_to_record(event)


BAD_REQUESTS = [
    (None, "body"),
    ("not json", "body"),
    ("[]", "body"),
    ({}, "creator_id"),
    ({"creator_id": "nope", "currency": "EUR", "royalty_history": []}, "creator_id"),
    ({"creator_id": str(uuid.UUID(int=1)), "currency": "ZZZ", "royalty_history": []}, "currency"),
    ({"creator_id": str(uuid.UUID(int=1)), "currency": "EUR"}, "royalty_history"),
    ({"creator_id": str(uuid.UUID(int=1)), "currency": "EUR", "royalty_history": "lots"}, "royalty_history"),
    (
        {
            "creator_id": str(uuid.UUID(int=1)),
            "currency": "EUR",
            "royalty_history": [{"period": "2025-01", "amount_minor": 10.5}],
        },
        "royalty_history[0].amount_minor",
    ),
    (
        {
            "creator_id": str(uuid.UUID(int=1)),
            "currency": "EUR",
            "royalty_history": [{"period": "2025-01", "amount_minor": -1}],
        },
        "royalty_history[0].amount_minor",
    ),
    (
        {
            "creator_id": str(uuid.UUID(int=1)),
            "currency": "EUR",
            "royalty_history": [{"period": "2025-01", "amount_minor": "100"}],
        },
        "royalty_history[0].amount_minor",
    ),
    (
        {
            "creator_id": str(uuid.UUID(int=1)),
            "currency": "EUR",
            "royalty_history": [{"period": "2025-01", "amount_minor": True}],
        },
        "royalty_history[0].amount_minor",
    ),
    (
        {
            "creator_id": str(uuid.UUID(int=1)),
            "currency": "EUR",
            "royalty_history": [{"period": "2025-13", "amount_minor": 1}],
        },
        "royalty_history[0].period",
    ),
    (
        {
            "creator_id": str(uuid.UUID(int=1)),
            "currency": "EUR",
            "royalty_history": [{"period": "2025-01", "amount_minor": 1}, {"period": "2025-01", "amount_minor": 2}],
        },
        "royalty_history[1].period",
    ),
    ({"creator_id": str(uuid.UUID(int=1)), "currency": "EUR", "royalty_history": [], "amount": 5}, "amount"),
]


async def test_bad_requests_get_a_4xx_naming_the_field_and_publish_nothing(web_client, settings) -> None:
    before = await end_offsets(settings, "offer.created")
    unknown_creator = {"creator_id": str(uuid.uuid4()), "currency": "EUR", "royalty_history": HISTORY}
    for body, field in [*BAD_REQUESTS, (unknown_creator, "creator_id")]:
        if body is None:
            resp = await web_client.post("/offers", data=b"", headers={"Content-Type": "application/json"})
        elif isinstance(body, str):
            resp = await web_client.post("/offers", data=body.encode(), headers={"Content-Type": "application/json"})
        else:
            resp = await web_client.post("/offers", json=body)
        assert 400 <= resp.status < 500, (body, resp.status)
        payload = await resp.json()
        named = {f["field"] for f in payload.get("fields", [])} or {"body"}
        assert field in named, (body, payload)
    assert await end_offsets(settings, "offer.created") == before


async def test_deals_listing_filters_and_paginates(web_client, worker, engine) -> None:
    creator = await make_creator(web_client)
    ids = [await post_offer(web_client, creator) for _ in range(5)]
    for offer_id in ids:
        await eventually(lambda o=offer_id: _is(deal_status(engine, o), "valued"), what="valued")
    seen: list[str] = []
    cursor = None
    while True:
        query = f"/deals?creator_id={creator}&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await (await web_client.get(query)).json()
        seen += [d["offer_id"] for d in page["deals"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids) and len(seen) == 5
    async with engine.connect() as conn:
        order = (
            (
                await conn.execute(
                    select(offers.c.offer_id).where(offers.c.creator_id == creator).order_by(offers.c.first_seq.desc())
                )
            )
            .scalars()
            .all()
        )
    assert seen == list(order)  # newest projection first, stable across pages
    await eventually(lambda: _all_termsheets(web_client, creator), what="term sheets issued")
    by_status = await (await web_client.get(f"/deals?status=termsheet_issued&creator_id={creator}")).json()
    assert len(by_status["deals"]) == 5
    assert (await web_client.get("/deals?status=bogus")).status == 422
    assert (await web_client.get(f"/offers/{uuid.uuid4()}")).status == 404
    assert (await web_client.get("/offers/not-a-uuid")).status == 422
    history = await (await web_client.get(f"/offers/{ids[0]}/events")).json()
    assert [e["event_type"] for e in history["events"]] == [
        "offer.created",
        "offer.valuated",
        "offer.termsheet.generated",
    ]


async def _all_termsheets(web_client, creator: str) -> bool:
    page = await (await web_client.get(f"/deals?creator_id={creator}")).json()
    return len(page["deals"]) == 5 and all(d["status"] == "termsheet_issued" for d in page["deals"])


async def test_unpriceable_offer_produces_a_failed_valuation(web_client, worker, engine) -> None:
    offer_id = await post_offer(web_client, history=[{"period": "2025-01", "amount_minor": 0}] * 1)
    await eventually(lambda: _is(deal_status(engine, offer_id), "valuation_failed"), what="failed valuation")
    deal = await (await web_client.get(f"/offers/{offer_id}")).json()
    assert deal["valuation_failure_reason"] == "insufficient_history"
    empty = await post_offer(web_client, history=[])
    await eventually(lambda: _is(deal_status(engine, empty), "valuation_failed"), what="empty history failed")


async def test_health_readiness_and_metrics(web_client) -> None:
    assert (await web_client.get("/healthz")).status == 200
    ready = await web_client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["checks"] == {"postgres": "ok", "kafka": "ok"}
    metrics = await (await web_client.get("/metrics")).text()
    assert "spacemusic_http_requests_total" in metrics
