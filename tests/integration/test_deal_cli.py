"""`spacemusic deal <offer_id> --as-of`: the deal at a moment, folded from its events, the
same from the log and from the projector's history, and equal to the projection now."""

from __future__ import annotations

import uuid
from datetime import UTC, timedelta

from sqlalchemy import select

from projections.rows import deal_json
from projections.tables import deal_events, offers
from tests.support.commands import ok, run_command, start_offer, termsheet_issued


async def _deal(stack_env, offer_id: str, *args: str) -> dict:
    (document,) = ok(await run_command(stack_env, "deal", offer_id, "--json", *args)).lines()
    return document


async def test_deal_as_of_folds_the_events_up_to_that_moment(stack_env, worker, engine, publisher) -> None:
    offer_id = await start_offer(publisher)
    await termsheet_issued(engine, offer_id)
    async with engine.connect() as conn:
        row = dict((await conn.execute(select(offers).where(offers.c.offer_id == offer_id))).mappings().one())
        times = dict(
            (
                await conn.execute(
                    select(deal_events.c.event_type, deal_events.c.occurred_at).where(
                        deal_events.c.offer_id == offer_id
                    )
                )
            ).all()
        )
    created, valued, termsheet = (
        times["offer.created"],
        times["offer.valuated"],
        times["offer.termsheet.generated"],
    )

    for source in ("kafka", "db"):
        now = await _deal(stack_env, offer_id, "--source", source)
        projected = deal_json({k: v for k, v in row.items() if k not in ("first_seq", "change_seq")})
        assert now["deal"] == projected, source  # the fold agrees with the live projection
        assert [e["event_type"] for e in now["events"]] == [
            "offer.created",
            "offer.valuated",
            "offer.termsheet.generated",
        ]

        at_creation = await _deal(stack_env, offer_id, "--source", source, "--as-of", created.isoformat())
        assert at_creation["status"] == "created" and at_creation["deal"]["event_count"] == 1
        assert [e["applied"] for e in at_creation["events"]] == [True, False, False]

        naive = valued.astimezone(UTC).replace(tzinfo=None).isoformat()
        at_valuation = await _deal(stack_env, offer_id, "--source", source, "--as-of", naive)  # naive = UTC
        expected = "valued" if termsheet > valued else "termsheet_issued"
        assert at_valuation["status"] == expected
        assert at_valuation["deal"]["valuation_median_minor"] == row["valuation_median_minor"]

        before = await _deal(
            stack_env, offer_id, "--source", source, "--as-of", (created - timedelta(seconds=1)).isoformat()
        )
        assert before["deal"] is None and before["status"] is None


async def test_deal_prints_a_readable_state_and_timeline(stack_env, worker, engine, publisher) -> None:
    offer_id = await start_offer(publisher)
    await termsheet_issued(engine, offer_id)
    ran = ok(await run_command(stack_env, "deal", offer_id))
    assert "termsheet_issued" in ran.stdout
    for event_type in ("offer.created", "offer.valuated", "offer.termsheet.generated"):
        assert event_type in ran.stdout


async def test_unknown_offer_and_bad_input_are_clear_errors(stack_env) -> None:
    unknown = str(uuid.uuid4())
    ran = await run_command(stack_env, "deal", unknown)
    assert ran.returncode == 1 and f"no events for offer {unknown}" in ran.stderr
    ran = await run_command(stack_env, "deal", unknown, "--source", "db")
    assert ran.returncode == 1 and "no events" in ran.stderr
    ran = await run_command(stack_env, "deal", "not-an-offer")
    assert ran.returncode == 2 and "not a UUID" in ran.stderr
    ran = await run_command(stack_env, "deal", unknown, "--as-of", "yesterday")
    assert ran.returncode == 2 and "ISO-8601" in ran.stderr
