"""The metrics the deployment needs, measured against the real stack: consumer lag from
Kafka's offsets, parked payouts from the payouts table. A database and topic namespace of
their own: the rows and messages here must not show up in other tests' counts."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.consumer_lag import ConsumerLagExporter, LagMeasurement, compute_lag
from infra.db import create_engine
from infra.metrics import CONSUMER_LAG, PAYOUTS_PARKED, PAYOUTS_PARKED_OLDEST_AGE
from infra.settings import Settings
from state.payout_metrics import PARKED_PHASES, export, parked_payouts
from state.tables import payouts
from tests.support.environments import drop_stack_env, prepare_stack_env


@pytest.fixture(scope="module")
def settings() -> Iterator[Settings]:
    env = prepare_stack_env(f"dm{uuid.uuid4().hex[:8]}")
    try:
        yield Settings.from_env(env)
    finally:
        drop_stack_env(env)


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings)
    yield engine
    await engine.dispose()


def test_compute_lag() -> None:
    a, b, c = TopicPartition("t", 0), TopicPartition("t", 1), TopicPartition("t", 2)
    # committed 3 of 10; never committed (from the log start 4); committed past a stale end.
    assert compute_lag({a: 3, b: -1, c: 9}, {a: 0, b: 4, c: 0}, {a: 10, b: 10, c: 8}) == {a: 7, b: 6, c: 0}


async def test_consumer_lag_follows_commits(settings: Settings) -> None:
    topic = settings.topic("offer.created")
    group = settings.consumer_group(f"lagtest-{uuid.uuid4().hex[:6]}")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for i in range(6):
            await producer.send_and_wait(topic, f"m{i}".encode(), partition=i % 3)
    finally:
        await producer.stop()
    exporter = ConsumerLagExporter(settings.kafka_bootstrap_servers, group, [topic])
    try:
        before = await exporter.collect()
        assert before == {TopicPartition(topic, p): 2 for p in range(3)}
        # The committed offsets come with it (the worker's progress watchdog reads them).
        assert exporter.last is not None and exporter.last.lag == before
        assert exporter.last.committed == {TopicPartition(topic, p): -1 for p in range(3)}
        # The group commits the end of partition 0: its lag drops to 0, the others stay.
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap_servers, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            p0 = TopicPartition(topic, 0)
            consumer.assign([p0])  # commit needs an assignment; no group join
            end = (await consumer.end_offsets([p0]))[p0]
            await consumer.commit({p0: end})
        finally:
            await consumer.stop()
        after = await exporter.collect()
        assert after[p0] == 0
        assert exporter.last.committed[p0] == end and exporter.last.committed[TopicPartition(topic, 1)] == -1
        assert {tp: v for tp, v in after.items() if tp != p0} == {tp: v for tp, v in before.items() if tp != p0}
        sample = CONSUMER_LAG.labels(group=group, topic=topic, partition="1")._value.get()
        assert sample == after[TopicPartition(topic, 1)]
    finally:
        await exporter.stop()


async def test_consumer_lag_run_hands_each_measurement_over(settings: Settings) -> None:
    topic = settings.topic("offer.valuated")
    group = settings.consumer_group(f"lagrun-{uuid.uuid4().hex[:6]}")
    exporter = ConsumerLagExporter(settings.kafka_bootstrap_servers, group, [topic], interval=0.2)
    seen: list[LagMeasurement] = []
    three = asyncio.Event()

    def observe(measurement: LagMeasurement) -> None:
        seen.append(measurement)
        if len(seen) >= 3:
            three.set()
        if len(seen) == 1:
            raise RuntimeError("an observer bug")  # logged; the exporter carries on

    task = asyncio.create_task(exporter.run(observe))
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(three.wait(), 30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(seen) >= 3, seen
    assert set(seen[-1].committed) == set(seen[-1].lag) == {TopicPartition(topic, p) for p in range(3)}
    assert seen[0].measured_at < seen[1].measured_at < seen[2].measured_at


async def test_parked_payouts_counts_unknown_phases_and_the_oldest(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    rows = [
        ("stripe_unknown", now - timedelta(minutes=90)),
        ("stripe_unknown", now - timedelta(minutes=5)),
        ("wise_unknown", now - timedelta(minutes=20)),
        ("succeeded", now - timedelta(days=3)),  # old but done: not parked
    ]
    ids = [str(uuid.uuid4()) for _ in rows]
    async with engine.begin() as conn:
        for payout_id, (phase, updated_at) in zip(ids, rows, strict=True):
            await conn.execute(
                insert(payouts).values(
                    payout_id=payout_id,
                    offer_id=str(uuid.uuid4()),
                    creator_id=str(uuid.uuid4()),
                    recipient_id=str(uuid.uuid4()),
                    amount_minor=1000,
                    currency="EUR",
                    phase=phase,
                    requested_event_id=str(uuid.uuid4()),
                    correlation_id="deploy-metrics-test",
                    updated_at=updated_at,
                )
            )
    try:
        parked = await parked_payouts(engine)
        assert parked.by_phase == {"stripe_unknown": 2, "wise_unknown": 1, "parked": 0}
        assert set(parked.by_phase) == set(PARKED_PHASES)
        assert 90 * 60 - 5 < parked.oldest_age_seconds < 90 * 60 + 60
        export(parked)
        assert PAYOUTS_PARKED.labels(phase="stripe_unknown")._value.get() == parked.by_phase["stripe_unknown"]
        assert PAYOUTS_PARKED_OLDEST_AGE._value.get() == parked.oldest_age_seconds
    finally:
        async with engine.begin() as conn:
            await conn.execute(delete(payouts).where(payouts.c.payout_id.in_(ids)))
