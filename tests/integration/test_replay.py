"""`spacemusic replay` on the real stack: every topic decodes, re-publishing keeps keys and
headers and marks the copy, dry runs write nothing, and bad requests fail clearly."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select

from infra.kafka import ensure_topics
from models.errors import InvalidEvent
from models.events import DEADLETTER_TOPIC, EVENT_BY_TOPIC, LIFECYCLE_EVENTS, OfferAccepted
from projections.tables import deal_changes, deal_events, offers
from tests.support.commands import contents, ok, run_command, start_offer, termsheet_issued
from tests.support.deals import deal_status, offer_event
from tests.support.kafka import end_offsets, read_all
from tests.support.stack import eventually

LIFECYCLE_TOPICS = [cls.TOPIC for cls in LIFECYCLE_EVENTS]


async def test_replay_of_the_deadletter_topic_decodes_dead_letters(
    stack_env, worker, publisher, settings, codec
) -> None:
    key = f"garbage-{uuid.uuid4().hex[:8]}".encode()
    await publisher.send_raw("offer.created", key, b"definitely not avro", [("origin", b"test")])

    async def parked() -> bool:
        records = await read_all(settings, DEADLETTER_TOPIC)
        return sum(1 for r in records if r.key == key) >= 2  # valuation and projector both park it

    await eventually(parked, timeout=60, what="garbage dead-lettered")
    ran = ok(await run_command(stack_env, "replay", "--topic", DEADLETTER_TOPIC))
    mine = [line for line in ran.lines() if line["key"] == key.decode()]
    assert {line["event"]["consumer"] for line in mine} >= {"valuation", "projector"}
    for line in mine:
        assert line["topic"] == DEADLETTER_TOPIC and line["event_type"] == DEADLETTER_TOPIC
        letter = line["event"]
        assert letter["original_topic"] == "offer.created"
        assert letter["original_key"] == key.decode()
        assert letter["original_value"] == "definitely not avro"
        assert letter["error_type"] == "DecodeError"
        assert datetime.fromisoformat(letter["failed_at"]).tzinfo is not None


async def test_replay_to_stdout_decodes_every_event_of_every_topic(
    stack_env, publisher, worker, engine, settings, codec
) -> None:
    offers_posted = [await start_offer(publisher) for _ in range(3)]
    for offer_id in offers_posted:
        await termsheet_issued(engine, offer_id)
    snapshot = {topic: await contents(settings, topic) for topic in LIFECYCLE_TOPICS}
    ran = ok(await run_command(stack_env, "replay"))
    printed = {(line["topic"], line["partition"], line["offset"]): line for line in ran.lines()}
    decoded = undecodable = 0
    for topic, records in snapshot.items():
        cls = EVENT_BY_TOPIC[topic]
        for record in records:
            position = (topic, record.partition, record.offset)
            try:
                event = await codec.decode_event(cls, record.value)
            except (ValueError, InvalidEvent):  # DecodeError is a ValueError
                # Garbage (this file's and other tests') is reported, never printed as an event.
                assert f"undecodable {topic}:{record.partition}:{record.offset} " in ran.stderr
                assert position not in printed
                undecodable += 1
                continue
            line = printed[position]
            assert line["event_type"] == topic
            assert line["event"]["event_id"] == event.event_id
            assert line["key"] == record.key.decode()
            assert line["headers"] == [[k, v.decode()] for k, v in record.headers]
            decoded += 1
    assert decoded >= 9 and undecodable >= 1  # at least 3 offers x 3 events, and the garbage above
    for offer_id in offers_posted:
        types = {line["event_type"] for line in printed.values() if line["key"] == offer_id}
        assert types == {"offer.created", "offer.valuated", "offer.termsheet.generated"}
    assert "replay summary" in ran.stderr


async def test_republish_preserves_keys_and_headers_and_adds_the_replay_marker(
    stack_env, publisher, worker, engine, settings
) -> None:
    offer_id = await start_offer(publisher)
    await termsheet_issued(engine, offer_id)
    scratch = f"replay.scratch.{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [scratch])
    sources = {
        (topic, r.partition, r.offset): r
        for topic in LIFECYCLE_TOPICS
        for r in await contents(settings, topic)
        if r.key == offer_id.encode()
    }
    assert len(sources) == 3
    args = ("--offer-id", offer_id, "--output", "republish", "--target-topic", scratch)

    dry = ok(await run_command(stack_env, "replay", *args))
    assert [line["action"] for line in dry.lines()] == ["would_publish"] * 3
    assert all(line["target_topic"] == scratch for line in dry.lines())
    assert "DRY RUN" in dry.stderr
    assert sum((await end_offsets(settings, scratch)).values()) == 0  # nothing written

    done = ok(await run_command(stack_env, "replay", *args, "--execute"))
    assert [line["action"] for line in done.lines()] == ["published"] * 3
    copies = await contents(settings, scratch)
    assert len(copies) == 3
    for copy in copies:
        assert copy.key == offer_id.encode()
        headers = list(copy.headers)
        marker = [v.decode() for k, v in headers if k == "replayed_from"]
        assert len(marker) == 1
        topic, partition, offset = marker[0].rsplit(":", 2)
        source = sources[(topic, int(partition), int(offset))]
        assert copy.value == source.value
        assert headers[:-1] == list(source.headers)  # originals first, in order, then the marker
        assert headers[-1][0] == "replayed_from"


async def test_project_dry_run_writes_nothing_and_execute_restores_a_lost_deal(
    stack_env, publisher, worker, engine
) -> None:
    offer_id = await start_offer(publisher)
    await termsheet_issued(engine, offer_id)
    async with engine.connect() as conn:
        before = dict((await conn.execute(select(offers).where(offers.c.offer_id == offer_id))).mappings().one())
    async with engine.begin() as conn:  # the projection lost this deal (e.g. a bad manual fix)
        for table in (deal_changes, deal_events, offers):
            await conn.execute(delete(table).where(table.c.offer_id == offer_id))

    dry = ok(await run_command(stack_env, "replay", "--offer-id", offer_id, "--output", "project"))
    assert [line["action"] for line in dry.lines()] == ["would_apply"] * 3
    assert await deal_status(engine, offer_id) is None

    applied = ok(await run_command(stack_env, "replay", "--offer-id", offer_id, "--output", "project", "--execute"))
    assert [line["action"] for line in applied.lines()] == ["applied"] * 3
    async with engine.connect() as conn:
        after = dict((await conn.execute(select(offers).where(offers.c.offer_id == offer_id))).mappings().one())
        history = await conn.scalar(
            select(func.count()).select_from(deal_events).where(deal_events.c.offer_id == offer_id)
        )
    sequence_columns = ("first_seq", "change_seq")
    assert {k: v for k, v in after.items() if k not in sequence_columns} == {
        k: v for k, v in before.items() if k not in sequence_columns
    }
    assert history == 3

    again = ok(await run_command(stack_env, "replay", "--offer-id", offer_id, "--output", "project", "--execute"))
    assert [line["action"] for line in again.lines()] == ["duplicate_event"] * 3  # idempotent by event id


async def test_offer_id_merges_all_topics_in_event_time_order(stack_env, worker, engine, publisher, settings) -> None:
    earlier = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    created = replace(offer_event(), occurred_at=earlier)
    accepted = OfferAccepted(
        event_id=str(uuid.uuid4()),
        offer_id=created.offer_id,
        creator_id=created.creator_id,
        occurred_at=earlier + timedelta(seconds=10),
        correlation_id="test",
        advance_minor=100_000,
        currency="GBP",
        termsheet_sha256="0" * 64,
        accepted_by="test",
    )
    # Published in the opposite order of event time: the log order must not be the answer.
    await publisher.publish(accepted)
    await publisher.publish(created)
    await eventually(lambda: _valued_for(engine, created.offer_id), timeout=60, what="valuation of the offer")
    ran = ok(await run_command(stack_env, "replay", "--offer-id", created.offer_id))
    lines = ran.lines()
    assert all(line["key"] == created.offer_id for line in lines)
    times = [datetime.fromisoformat(line["event"]["occurred_at"]) for line in lines]
    assert times == sorted(times)
    types = [line["event_type"] for line in lines]
    # The valuation is stamped 1 ms after its offer (a pure function of its cause), so it sorts
    # second although it was published last; the acceptance, published first, comes third.
    assert types[:3] == ["offer.created", "offer.valuated", "offer.accepted"]
    assert len({line["topic"] for line in lines}) >= 3


async def _valued_for(engine, offer_id: str) -> bool:
    async with engine.connect() as conn:
        return bool(
            await conn.scalar(
                select(func.count())
                .select_from(deal_events)
                .where(deal_events.c.offer_id == offer_id, deal_events.c.event_type == "offer.valuated")
            )
        )


async def test_unknown_topic_is_a_clear_error(stack_env, settings) -> None:
    ran = await run_command(stack_env, "replay", "--topic", "offer.nope")
    assert ran.returncode == 2
    assert "unknown topic 'offer.nope'" in ran.stderr and "offer.created" in ran.stderr
    missing = f"replay.missing.{uuid.uuid4().hex[:8]}"
    ran = await run_command(
        stack_env, "replay", "--topic", "offer.created", "--output", "republish", "--target-topic", missing
    )
    assert ran.returncode == 1
    assert f"not on the broker at {settings.kafka_bootstrap_servers}: {missing}" in ran.stderr
    assert ran.stdout == ""


async def test_offset_out_of_range_is_a_clear_error(stack_env, worker, settings) -> None:
    ends = await end_offsets(settings, "offer.created")
    partition = max(ends, key=lambda p: ends[p])
    beyond = ends[partition] + 1000
    ran = await run_command(
        stack_env, "replay", "--topic", "offer.created", "--partition", str(partition), "--from-offset", str(beyond)
    )
    assert ran.returncode == 1
    assert f"start offset {beyond} is out of range for offer.created partition {partition}" in ran.stderr
    assert ran.stdout == ""
    ran = await run_command(stack_env, "replay", "--topic", "offer.created", "--partition", "99")
    assert ran.returncode == 1 and "has no partition 99" in ran.stderr
    ran = await run_command(stack_env, "replay", "--from-offset", "5", "--from-time", "2026-01-01")
    assert ran.returncode == 2 and "not both" in ran.stderr
