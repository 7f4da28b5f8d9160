"""The batched pipeline keeps at-least-once: a worker killed mid-batch loses nothing.

A backlog of offers is pre-produced, a pipeline worker starts draining it in batches, and
is SIGKILLed once part of the backlog is projected. A second worker takes over. Every
offer ends valued exactly once in the projection, with exactly its two history rows, and
every valuation event (re-published after the kill or not) carries the one id derived
from its cause.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.avro import codec_from_settings
from infra.db import create_engine
from infra.kafka import EventPublisher
from infra.settings import Settings
from models.events import OfferCreated, RoyaltyPeriod
from projections.tables import deal_changes, deal_events, offers
from tests.support.environments import drop_stack_env, prepare_stack_env
from tests.support.kafka import read_all
from tests.support.stack import Process, eventually

BACKLOG = 3000
HISTORY = tuple(RoyaltyPeriod(f"2025-{m:02d}", 10_000 + 100 * m) for m in range(1, 13))


@pytest.fixture(scope="module")
def batch_env(run_id: str) -> AsyncIterator[dict[str, str]]:
    env = prepare_stack_env(f"{run_id}b")
    yield env
    drop_stack_env(env)


@pytest.fixture(scope="module")
async def batch_engine(batch_env: dict[str, str]) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(Settings.from_env(batch_env))
    yield engine
    await engine.dispose()


async def _produce_backlog(settings: Settings) -> list[str]:
    codec = codec_from_settings(settings)
    await codec.register_all()
    publisher = EventPublisher(settings, codec)
    await publisher.start()
    ids: list[str] = []
    try:
        events = []
        for i in range(BACKLOG):
            offer_id = str(uuid.uuid4())
            ids.append(offer_id)
            events.append(
                OfferCreated(
                    event_id=str(uuid.uuid4()),
                    offer_id=offer_id,
                    creator_id=str(uuid.uuid4()),
                    occurred_at=datetime.now(UTC),
                    correlation_id=f"batch-{i}",
                    currency="EUR",
                    royalty_history=HISTORY,
                )
            )
        for start in range(0, len(events), 500):
            await publisher.publish_many(events[start : start + 500])
    finally:
        await publisher.stop()
    return ids


async def _valued(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(offers).where(offers.c.status == "valued")) or 0)


async def test_a_worker_killed_mid_batch_loses_nothing_and_doubles_nothing(
    batch_env: dict[str, str], batch_engine: AsyncEngine
) -> None:
    settings = Settings.from_env(batch_env)
    offer_ids = await _produce_backlog(settings)

    first = Process("batch-worker-1", batch_env, "worker", "--role", "pipeline")
    try:
        await eventually(lambda: _valued(batch_engine), timeout=120, what="the first projected batch")
        assert await _valued(batch_engine) < BACKLOG, "the backlog drained before the kill: raise BACKLOG"
    finally:
        first.stop(signal.SIGKILL)

    second = Process("batch-worker-2", batch_env, "worker", "--role", "pipeline")
    try:

        async def drained() -> bool:
            return await _valued(batch_engine) == BACKLOG

        await eventually(drained, timeout=180, interval=0.5, what="every offer valued after the restart")
        await asyncio.sleep(1)  # anything still in flight would show up as a surplus below
    finally:
        second.stop()

    async with batch_engine.connect() as conn:
        projected = set(map(str, (await conn.scalars(select(offers.c.offer_id))).all()))
        history = Counter(
            (str(o), t) for o, t in (await conn.execute(select(deal_events.c.offer_id, deal_events.c.event_type))).all()
        )
        changes = int(await conn.scalar(select(func.count()).select_from(deal_changes)) or 0)
    assert projected == set(offer_ids)
    assert all(history[(o, "offer.created")] == 1 and history[(o, "offer.valuated")] == 1 for o in offer_ids)
    assert sum(history.values()) == 2 * BACKLOG
    assert changes == 2 * BACKLOG  # one change per applied event, none for a redelivered one

    valuations = await read_all(settings, "offer.valuated")
    ids_by_offer: dict[bytes, set[bytes]] = {}
    for record in valuations:
        event_id = dict(record.headers)["event_id"]
        ids_by_offer.setdefault(record.key, set()).add(event_id)
    assert len(ids_by_offer) == BACKLOG
    assert all(len(ids) == 1 for ids in ids_by_offer.values()), "a re-published valuation got a new id"
