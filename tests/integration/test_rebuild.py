"""`rebuild-projections` on the real stack.

This module runs its own worker process and web app against its OWN database and topic
namespace: a rebuild compares the whole projection with the whole event log, and other
modules legitimately leave rows no event supports (test_pipeline projects an event straight
into the tables to test tracking), which a rebuild rightly reports as differences.

The data is a realistic run: a few hundred offers through the HTTP API and the real
worker (valuation, term sheets, acceptance, payouts through stripe-mock, receipts), plus
undecodable messages and a redelivered duplicate.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from agents.projector import AGENT as PROJECTOR_AGENT
from bootstrap.commands.rebuild import rebuild_projections as rebuild_command
from infra.avro import codec_from_settings
from infra.db import create_engine
from infra.kafka import EventPublisher, all_logical_topics
from infra.settings import Settings
from models.events import (
    PayoutRequested,
)
from models.payout import payout_id_for
from projections import rebuild
from projections.tables import deal_changes, deal_events, offers
from state.tables import payout_attempts, payouts
from tests.support.environments import drop_stack_env, prepare_stack_env
from tests.support.kafka import end_offsets
from tests.support.money import onboard
from tests.support.sse import SseStream
from tests.support.stack import Process, eventually

# Every valued offer costs a term sheet PDF (rendered one at a time by the worker): the
# mix keeps the run within about a minute.
OFFERS = 250  # through POST /offers
FAILING = 130  # of them with an unpriceable history: valuation fails, no term sheet
ACCEPTED = 50
PAID_OVER_HTTP = 5  # POST /offers/{id}/payout is rate limited per caller
PAID_BY_EVENT = 25  # the rest of the payouts: the same event the endpoint publishes
PAID = PAID_OVER_HTTP + PAID_BY_EVENT
HISTORY = [{"period": f"2025-{m:02d}", "amount_minor": 150_000 + 3_000 * m} for m in range(1, 13)]


# ---------------------------------------------------------------- no stack needed


def test_the_rebuild_hands_over_to_the_projector_by_its_name() -> None:
    assert rebuild.LIVE_CONSUMER == PROJECTOR_AGENT


def test_help_explains_the_phases_and_the_lock() -> None:
    result = CliRunner().invoke(rebuild_command, ["--help"])
    assert result.exit_code == 0
    for words in ("read", "catch-up", "reconcile", "projection write lock", "--verify-only", "--force"):
        assert words in result.output
    clash = CliRunner().invoke(rebuild_command, ["--verify-only", "--force"])
    assert clash.exit_code == 2 and "exclude" in clash.output


# ---------------------------------------------------------------- own stack


@pytest.fixture(scope="module")
def rb_env(run_id: str) -> Iterator[dict[str, str]]:
    env = prepare_stack_env(f"{run_id}rb")
    yield env
    drop_stack_env(env)


@pytest.fixture(scope="module")
def rb_settings(rb_env: dict[str, str]) -> Settings:
    return Settings.from_env(rb_env)


@pytest.fixture(scope="module")
def rb_worker(rb_env: dict[str, str]) -> Iterator[Process]:
    proc = Process("rebuild-worker", rb_env, "worker")
    try:
        proc.wait_for_log('"partitions_assigned"', timeout=90)
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
async def rb_engine(rb_settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(rb_settings)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def rb_client(rb_settings: Settings) -> AsyncIterator[TestClient]:
    from web.app import create_app
    from web.auth import ADMIN, mint_token

    # An operator of its own: rate limits are per subject and per process.
    token = mint_token(rb_settings, f"test|rebuild-{uuid.uuid4().hex[:8]}", [ADMIN])
    client = TestClient(TestServer(create_app(rb_settings)), headers={"Authorization": f"Bearer {token}"})
    await client.start_server()
    yield client
    await client.close()


@pytest.fixture(scope="module")
async def rb_publisher(rb_settings: Settings) -> AsyncIterator[EventPublisher]:
    codec = codec_from_settings(rb_settings)
    await codec.register_all()
    publisher = EventPublisher(rb_settings, codec)
    await publisher.start()
    yield publisher
    await publisher.stop()


@dataclass
class Run:
    offers: list[str]
    paid: list[str]
    creators: dict[str, str] = field(default_factory=dict)  # creator -> recipient


async def _statuses(engine: AsyncEngine, ids: list[str]) -> dict[str, str]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(offers.c.offer_id, offers.c.status).where(offers.c.offer_id.in_(ids)))
        return dict(rows.all())


async def _all_reach(engine: AsyncEngine, ids: list[str], wanted: set[str], timeout: float, what: str) -> None:
    async def done() -> bool:
        statuses = await _statuses(engine, ids)
        return len(statuses) == len(ids) and set(statuses.values()) <= wanted

    await eventually(done, timeout=timeout, interval=0.5, what=what)


async def _post_offer(client: TestClient, creator: str, history: list) -> str:
    resp = await client.post("/offers", json={"creator_id": creator, "currency": "EUR", "royalty_history": history})
    assert resp.status == 202, await resp.text()
    return (await resp.json())["offer_id"]


async def _gather_limited(coros: list, limit: int = 16) -> list:
    gate = asyncio.Semaphore(limit)

    async def one(coro):  # type: ignore[no-untyped-def]
        async with gate:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


@pytest.fixture(scope="module")
async def realistic_run(
    rb_worker: Process, rb_client: TestClient, rb_engine: AsyncEngine, rb_publisher: EventPublisher
) -> Run:
    """A few hundred offers through the whole lifecycle, settled (nothing in flight)."""
    creators = dict([await onboard(rb_client) for _ in range(3)])
    owners = list(creators)
    unpriceable: list[list] = [[], [{"period": "2025-01", "amount_minor": 0}]]
    plan = [(owners[i % len(owners)], unpriceable[i % 2] if i < FAILING else HISTORY) for i in range(OFFERS)]
    ids = await _gather_limited([_post_offer(rb_client, c, h) for c, h in plan])
    owner_of = {offer_id: creator for offer_id, (creator, _) in zip(ids, plan, strict=True)}
    # Noise the live projector dead-letters and a rebuild must skip, and a redelivery.
    for i, garbage in enumerate([b"not avro", b"\x00\x00\x00\x00\x01\xff", b""]):
        await rb_publisher.send_raw("offer.accepted", f"junk-{i}".encode(), garbage, [])
    await _all_reach(
        rb_engine, ids, {"termsheet_issued", "valuation_failed"}, timeout=120, what="all offers valued, term sheets out"
    )
    accepted = ids[FAILING : FAILING + ACCEPTED]
    for offer_id in accepted:  # sequentially: cheap, and the endpoint reads the projection
        resp = await rb_client.post(f"/offers/{offer_id}/accept")
        assert resp.status == 202, await resp.text()
    await _all_reach(rb_engine, accepted, {"accepted"}, timeout=60, what="offers accepted")
    paying = accepted[:PAID]
    for offer_id in paying[:PAID_OVER_HTTP]:
        resp = await rb_client.post(
            f"/offers/{offer_id}/payout",
            json={"recipient_id": creators[owner_of[offer_id]]},
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        assert resp.status == 202, await resp.text()
    async with rb_engine.connect() as conn:
        advances = dict(
            (await conn.execute(select(offers.c.offer_id, offers.c.advance_minor).where(offers.c.offer_id.in_(paying))))
            .tuples()
            .all()
        )
    for offer_id in paying[PAID_OVER_HTTP:]:
        requested = PayoutRequested(
            event_id=str(uuid.uuid4()),
            offer_id=offer_id,
            creator_id=owner_of[offer_id],
            occurred_at=datetime.now(UTC),
            correlation_id="rebuild-test",
            payout_id=payout_id_for(offer_id),
            recipient_id=creators[owner_of[offer_id]],
            amount_minor=advances[offer_id],
            currency="EUR",
            requested_by="test|admin",
        )
        await rb_publisher.publish(requested)
        if offer_id == paying[-1]:
            await rb_publisher.publish(requested)  # redelivered: same event id, another offset
    await _all_reach(rb_engine, paying, {"paid"}, timeout=120, what="payouts paid")

    async def receipts() -> bool:
        async with rb_engine.connect() as conn:
            n = await conn.scalar(
                select(func.count()).where(offers.c.offer_id.in_(paying), offers.c.receipt_key.is_not(None))
            )
        return n == len(paying)

    await eventually(receipts, timeout=60, interval=0.5, what="receipts")
    await _quiescent(rb_engine)
    return Run(offers=ids, paid=paying, creators=creators)


async def _quiescent(engine: AsyncEngine, settle: float = 1.5) -> None:
    """Nothing projected for ``settle`` seconds: the pipeline has drained."""

    async def head() -> int:
        async with engine.connect() as conn:
            return int(await conn.scalar(select(func.coalesce(func.max(deal_changes.c.seq), 0))) or 0)

    last = await head()
    while True:
        await asyncio.sleep(settle)
        now = await head()
        if now == last:
            return
        last = now


async def _topic_ends(settings: Settings) -> dict[str, dict[int, int]]:
    return {t: await end_offsets(settings, t) for t in all_logical_topics()}


async def _money_rows(engine: AsyncEngine) -> tuple[int, int]:
    async with engine.connect() as conn:
        return (
            int(await conn.scalar(select(func.count()).select_from(payouts)) or 0),
            int(await conn.scalar(select(func.count()).select_from(payout_attempts)) or 0),
        )


async def _live_hashes(settings: Settings) -> dict[str, tuple[int, str]]:
    conn = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        return await rebuild.canonical_hashes(conn)
    finally:
        await conn.close()


async def test_verify_only_after_a_realistic_run_is_identical_and_has_no_side_effects(
    realistic_run: Run, rb_settings: Settings, rb_engine: AsyncEngine
) -> None:
    ends_before, money_before = await _topic_ends(rb_settings), await _money_rows(rb_engine)
    live_before = await _live_hashes(rb_settings)

    report = await rebuild.rebuild_projections(rb_settings, rebuild.RebuildOptions(swap=False, workers=2))

    assert report.identical, [(t.table, t.missing[:3], t.extra[:3], t.samples[:3]) for t in report.tables]
    by_table = {t.table: t for t in report.tables}
    assert by_table["offers"].shadow_rows == OFFERS
    assert by_table["offers"].live_hash == by_table["offers"].shadow_hash == live_before["offers"][1]
    assert by_table["deal_events"].live_hash == by_table["deal_events"].shadow_hash == live_before["deal_events"][1]
    # created and valuated, term sheets, acceptances, payouts requested/completed/receipts
    valued = OFFERS - FAILING
    assert report.read.events_applied == 2 * OFFERS + valued + ACCEPTED + 3 * PAID
    # The redelivered payout request, and what the agents re-announce for it (same ids).
    assert report.read.skipped == 3 and report.read.duplicates >= 1
    assert {s.topic for s in report.read.skipped_samples} == {rb_settings.topic("offer.accepted")}
    assert not report.swapped and not report.live_behind
    # Reads Kafka, writes nothing anywhere but its own (dropped) shadow tables.
    assert await _topic_ends(rb_settings) == ends_before
    assert await _money_rows(rb_engine) == money_before
    async with rb_engine.connect() as conn:
        leftovers = await conn.scalar(text("SELECT count(*) FROM pg_tables WHERE tablename LIKE '%\\_rebuild'"))
    assert leftovers == 0


async def test_verify_and_swap_while_offers_keep_arriving_are_identical_without_gap_or_double_apply(
    realistic_run: Run, rb_settings: Settings, rb_engine: AsyncEngine, rb_client: TestClient
) -> None:
    creator = next(iter(realistic_run.creators))
    posted: list[str] = []
    stop = asyncio.Event()

    async def keep_posting() -> None:
        while not stop.is_set():
            posted.append(await _post_offer(rb_client, creator, HISTORY))
            await asyncio.sleep(0.2)

    poster = asyncio.create_task(keep_posting())
    try:
        await asyncio.sleep(0.5)
        # Verify: catches up inside its snapshot, no lock. Swap: catches up under the lock.
        verify = await rebuild.rebuild_projections(rb_settings, rebuild.RebuildOptions(swap=False, workers=2))
        report = await rebuild.rebuild_projections(rb_settings, rebuild.RebuildOptions(swap=True, workers=2))
    finally:
        stop.set()
        await poster
    assert verify.identical and not verify.swapped
    assert report.identical and report.swapped and report.changed_offers == 0 and not report.handed_over
    assert verify.catch_up_events > 0 and report.catch_up_events > 0  # both had to follow the live projector
    assert len(posted) > 10
    # The live projector carries on from its own positions: everything posted during the
    # rebuild gets projected exactly once (and a rebuild of the settled result agrees).
    await _all_reach(rb_engine, posted, {"termsheet_issued"}, timeout=90, what="offers posted during the rebuild")
    await _quiescent(rb_engine)
    async with rb_engine.connect() as conn:
        counts = (
            await conn.execute(
                select(offers.c.event_count, func.count(deal_events.c.event_id))
                .join(deal_events, deal_events.c.offer_id == offers.c.offer_id)
                .where(offers.c.offer_id.in_(posted))
                .group_by(offers.c.offer_id, offers.c.event_count)
            )
        ).all()
    assert len(counts) == len(posted) and all(folded == rows == 3 for folded, rows in counts)
    again = await rebuild.rebuild_projections(rb_settings, rebuild.RebuildOptions(swap=False))
    assert again.identical


@dataclass
class Readers:
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)


async def _read_forever(client: TestClient, ids: list[str], stop: asyncio.Event, seen: Readers, seed: int) -> None:
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        kind = rng.choice(("deals", "offer", "history"))
        offer_id = rng.choice(ids)
        path = {"deals": "/deals?limit=200", "offer": f"/offers/{offer_id}", "history": f"/offers/{offer_id}/events"}[
            kind
        ]
        started = loop.time()
        try:
            resp = await client.get(path)
            body = await resp.json()
        except Exception as exc:  # noqa: BLE001 - every failure is what this test looks for
            seen.errors.append(f"{path}: {type(exc).__name__}: {exc}")
            continue
        seen.spans.append((started, loop.time()))
        seen.requests += 1
        if resp.status != 200:
            seen.errors.append(f"{path}: {resp.status} {body}")
        elif (kind == "deals" and not body["deals"]) or (kind == "history" and not body["events"]):
            seen.empty.append(path)
        elif kind == "offer" and body["offer_id"] != offer_id:
            seen.empty.append(path)


async def test_readers_during_a_forced_swap_never_see_an_error_or_an_empty_result(
    realistic_run: Run, rb_settings: Settings, rb_engine: AsyncEngine, rb_client: TestClient
) -> None:
    await _quiescent(rb_engine)
    ids = realistic_run.offers
    corrupted, dropped = ids[::2], ids[1::7]
    bogus = str(uuid.uuid4())
    async with rb_engine.begin() as conn:  # damage to repair: changed, missing and extra rows
        await conn.execute(offers.update().where(offers.c.offer_id.in_(corrupted)).values(valuation_model="corrupted"))
        await conn.execute(deal_events.delete().where(deal_events.c.offer_id.in_(dropped)))
        await conn.execute(
            offers.insert().values(
                offer_id=bogus, creator_id=str(uuid.uuid4()), status="created", event_count=1, first_seq=0, change_seq=0
            )
        )
    loop = asyncio.get_running_loop()
    window: dict[str, float] = {}

    def phase(name: str) -> None:
        window.setdefault(name, loop.time())

    seen, stop = Readers(), asyncio.Event()
    intact = [i for i in ids if i not in set(dropped)]  # their history is empty until the swap, on purpose
    readers = [asyncio.create_task(_read_forever(rb_client, intact, stop, seen, seed)) for seed in range(4)]
    try:
        await asyncio.sleep(0.3)
        report = await rebuild.rebuild_projections(
            rb_settings, rebuild.RebuildOptions(swap=True, force=True, workers=2), phase=phase
        )
        swap_done = loop.time()
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await asyncio.gather(*readers)

    assert report.swapped
    by_table = {t.table: t for t in report.tables}
    assert set(by_table["offers"].differing) == set(corrupted)
    assert by_table["offers"].extra == (bogus,)
    assert len(by_table["deal_events"].missing) > len(dropped)
    assert seen.errors == [] and seen.empty == []
    swap_start = window["lock, compare, swap"]
    during = [s for s in seen.spans if s[0] < swap_done and s[1] > swap_start]
    assert during, "no reader request overlapped the locked swap"
    assert seen.requests > 50
    after = await rebuild.rebuild_projections(rb_settings, rebuild.RebuildOptions(swap=False))
    assert after.identical
    assert (await rb_client.get(f"/offers/{bogus}")).status == 404


def _cli(env: dict[str, str], *args: str):  # type: ignore[no-untyped-def]
    return CliRunner(env=env).invoke(rebuild_command, list(args), catch_exceptions=False)


async def test_a_corrupted_row_is_reported_then_repaired_by_force_and_streamed(
    realistic_run: Run, rb_env: dict[str, str], rb_engine: AsyncEngine, rb_client: TestClient
) -> None:
    await _quiescent(rb_engine)
    victim = realistic_run.offers[-1]  # a term sheet issued, never accepted
    async with rb_engine.begin() as conn:
        await conn.execute(offers.update().where(offers.c.offer_id == victim).values(status="paid"))

    # The command runs its own event loop (asyncio.run), so it runs in a thread here.
    verify = await asyncio.to_thread(_cli, rb_env, "--verify-only", "--workers", "1")
    assert verify.exit_code == 1, verify.output
    assert victim in verify.output and "status" in verify.output and "differing rows" in verify.output
    async with rb_engine.connect() as conn:
        assert await conn.scalar(select(offers.c.status).where(offers.c.offer_id == victim)) == "paid"

    plain = await asyncio.to_thread(_cli, rb_env)  # a swap refuses when there are differences
    assert plain.exit_code == 1 and "--force" in plain.output

    async with rb_client.session.get(rb_client.make_url("/offers/events/deals")) as resp:
        stream = SseStream(resp)
        assert (await stream.next()).event == "ready"
        started = time.monotonic()
        forced = await asyncio.to_thread(_cli, rb_env, "--force")
        assert forced.exit_code == 0, forced.output
        assert "forced swap" in forced.output
        change = await stream.next_deal(lambda c: c["deal"]["offer_id"] == victim, timeout=30)
    assert change["event_type"] == rebuild.CORRECTION_EVENT_TYPE
    assert change["deal"]["status"] == "termsheet_issued"
    assert time.monotonic() - started < 60
    async with rb_engine.connect() as conn:
        assert await conn.scalar(select(offers.c.status).where(offers.c.offer_id == victim)) == "termsheet_issued"
    final = await asyncio.to_thread(_cli, rb_env, "--verify-only")
    assert final.exit_code == 0 and "identical" in final.output
