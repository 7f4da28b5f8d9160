"""Dead letters on the real stack: listed with their cause, re-driven once after the cause
is fixed, never re-driven twice, and dry runs publish nothing."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from prometheus_client import REGISTRY
from sqlalchemy import func, select

from agents.consume import Consumer, RawMessage
from models.events import DEADLETTER_TOPIC
from projections.tables import deal_events
from tests.support.commands import contents, ok, run_command
from tests.support.deals import _is, deal_status, offer_event
from tests.support.kafka import end_offsets, read_all
from tests.support.stack import eventually


async def park(settings, publisher, consumer: str, message: RawMessage, error_type: str, error: str) -> None:
    """What the consume harness does when a handler keeps failing: the real code path."""
    harness = Consumer(consumer, SimpleNamespace(publisher=publisher), settings.topic_namespace)
    await harness.dead_letter(message, error_type, error)


def lost_message(settings, key: bytes, value: bytes) -> RawMessage:
    # An offset far beyond anything the test topics reach: the dead letter's id is derived
    # from its origin, so each test needs an origin of its own.
    return RawMessage(
        topic=settings.topic("offer.created"),
        partition=0,
        offset=10**9 + random.randrange(10**8),
        key=key,
        value=value,
    )


async def letters(stack_env, *args: str) -> list[dict]:
    return ok(await run_command(stack_env, "deadletters", "list", "--json", "--limit", "100000", *args)).lines()


async def history(engine, offer_id: str) -> dict[str, int]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(deal_events.c.event_type, func.count())
            .where(deal_events.c.offer_id == offer_id)
            .group_by(deal_events.c.event_type)
        )
        return {event_type: count for event_type, count in rows.all()}


def dead_letter_count(topic: str, reason: str) -> float:
    return REGISTRY.get_sample_value("spacemusic_dead_letters_total", {"topic": topic, "reason": reason}) or 0.0


async def test_a_dead_letter_redriven_after_the_fix_is_processed_once(
    stack_env, worker, engine, publisher, codec, settings
) -> None:
    # The valuation handler hit a (since fixed) bug on a perfectly good offer.created, gave up
    # after its retries and parked the message: the offer was never valued.
    event = offer_event()
    value = await codec.encode_event(event)
    before = dead_letter_count("offer.created", "HandlerError")
    await park(
        settings,
        publisher,
        "valuation",
        lost_message(settings, event.offer_id.encode(), value),
        "HandlerError:ZeroDivisionError",
        "division by zero (pricing bug, fixed in the next deploy)",
    )
    assert dead_letter_count("offer.created", "HandlerError") == before + 1  # the metric, by topic and reason

    listed = [dl for dl in await letters(stack_env, "--consumer", "valuation") if dl["key"] == event.offer_id]
    assert len(listed) == 1
    letter = listed[0]
    assert letter["original_topic"] == "offer.created" and letter["original_partition"] == 0
    assert letter["error_type"] == "HandlerError:ZeroDivisionError"
    assert "pricing bug" in letter["error"]
    assert letter["redriven"] is None
    letter_id = letter["dead_letter_id"]
    table = ok(await run_command(stack_env, "deadletters", "list", "--consumer", "valuation"))
    assert "HandlerError" in table.stdout and "by topic and reason" in table.stdout

    ends = await end_offsets(settings, "offer.created")
    dry = ok(await run_command(stack_env, "deadletters", "redrive", "--id", letter_id, "--json"))
    assert [(d["dead_letter_id"], d["action"]) for d in dry.lines()] == [(letter_id, "would_redrive")]
    assert "DRY RUN" in dry.stderr
    assert await end_offsets(settings, "offer.created") == ends  # a dry run publishes nothing
    assert await deal_status(engine, event.offer_id) is None

    done = ok(await run_command(stack_env, "deadletters", "redrive", "--id", letter_id, "--execute", "--json"))
    assert [d["action"] for d in done.lines()] == ["redriven"]
    await eventually(lambda: _is(deal_status(engine, event.offer_id), "termsheet_issued"), timeout=60, what="valued")

    again = ok(await run_command(stack_env, "deadletters", "redrive", "--id", letter_id, "--execute", "--json"))
    (decision,) = again.lines()
    assert decision["action"] == "skip" and "already re-driven" in decision["reason"]

    copies = [
        r
        for r in await contents(settings, "offer.created")
        if dict(r.headers).get("redriven_from") == letter_id.encode()
    ]
    assert len(copies) == 1  # the second run published nothing
    (copy,) = copies
    assert copy.key == event.offer_id.encode() and copy.value == value
    assert all(dl["key"] != event.offer_id for dl in await letters(stack_env, "--consumer", "valuation", "--pending"))
    (relisted,) = [dl for dl in await letters(stack_env, "--consumer", "valuation") if dl["key"] == event.offer_id]
    assert relisted["redriven"] == f"offer.created:{copy.partition}:{copy.offset}"
    assert await history(engine, event.offer_id) == {
        "offer.created": 1,
        "offer.valuated": 1,
        "offer.termsheet.generated": 1,
    }


async def test_one_message_parked_by_two_consumers_is_redriven_once(
    stack_env, worker, engine, publisher, codec, settings
) -> None:
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    event = offer_event()
    value = await codec.encode_event(event)
    message = lost_message(settings, event.offer_id.encode(), value)
    for consumer in ("valuation", "projector"):
        await park(settings, publisher, consumer, message, "HandlerError:OperationalError", "database restarting")

    ran = ok(
        await run_command(
            stack_env,
            "deadletters",
            "redrive",
            "--all",
            "--topic",
            "offer.created",
            "--since",
            since,
            "--execute",
            "--json",
        )
    )
    mine = [d for d in ran.lines() if d["original"] == f"offer.created:0:{message.offset}"]
    assert sorted(d["action"] for d in mine) == ["redriven", "skip"]
    (skipped,) = [d for d in mine if d["action"] == "skip"]
    assert "same original message" in skipped["reason"]
    await eventually(lambda: _is(deal_status(engine, event.offer_id), "termsheet_issued"), timeout=60, what="valued")
    copies = [
        r for r in await contents(settings, "offer.created") if dict(r.headers).get("redriven_original") is not None
    ]
    assert sum(1 for r in copies if r.key == event.offer_id.encode()) == 1
    assert await history(engine, event.offer_id) == {
        "offer.created": 1,
        "offer.valuated": 1,
        "offer.termsheet.generated": 1,
    }
    listed = [dl for dl in await letters(stack_env, "--topic", "offer.created") if dl["key"] == event.offer_id]
    assert len(listed) == 2 and all(dl["redriven"] for dl in listed)  # one re-drive covers both


async def test_a_message_that_still_fails_is_not_redriven(stack_env, worker, publisher, settings) -> None:
    key = f"still-broken-{uuid.uuid4().hex[:8]}".encode()
    await publisher.send_raw("offer.created", key, b"still not avro", [])

    async def parked() -> list[dict]:
        if sum(1 for r in await read_all(settings, DEADLETTER_TOPIC) if r.key == key) < 2:
            return []
        return [dl for dl in await letters(stack_env) if dl["key"] == key.decode()]

    broken = await eventually(parked, timeout=60, what="the broken message parked")
    ids = [arg for dl in broken for arg in ("--id", dl["dead_letter_id"])]
    ends = await end_offsets(settings, "offer.created")
    ran = ok(await run_command(stack_env, "deadletters", "redrive", *ids, "--execute", "--json"))
    assert {d["action"] for d in ran.lines()} == {"skip"}
    assert all("still fails: DecodeError" in d["reason"] for d in ran.lines())
    assert await end_offsets(settings, "offer.created") == ends


async def test_redrive_needs_a_selection_and_known_ids(stack_env) -> None:
    ran = await run_command(stack_env, "deadletters", "redrive")
    assert ran.returncode == 2 and "--id" in ran.stderr and "--all" in ran.stderr
    unknown = str(uuid.uuid4())
    ran = await run_command(stack_env, "deadletters", "redrive", "--id", unknown, "--execute")
    assert ran.returncode == 1 and f"no dead letter with id {unknown}" in ran.stderr
