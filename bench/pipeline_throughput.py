"""Benchmark: the live pipeline's drain rate, against a hand-written peer in the same run.

N realistic ``offer.created`` are pre-produced into two fresh namespaces (each with its own
database). Then, one after the other:

1. **pipeline**: one real ``spacemusic worker --role pipeline`` (Faust: valuation +
   projector) drains namespace A; timed from its first projected offer until every offer
   is projected valued/failed (start-up and group join are not counted).
2. **peer**: a plain aiokafka + asyncpg loop written here drains namespace B doing the same
   work with batching: decode (same registry codec) -> price -> encode -> produce
   ``offer.valuated`` (awaiting the batch's deliveries) -> project both events (history
   rows, fold, deal upserts, tracking) in one transaction per batch.

Events per offer: 3 (consume offer.created, produce offer.valuated, project both).
Prints events/s for both, the CPU the draining process itself used per event (the figure
the machine's load changes least) and both ratios. Not a test: figures depend on the load,
printed alongside. Run: `make bench`, or
`source infra/local/load-env.sh; .venv/bin/python bench/pipeline_throughput.py [--offers N]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

if not __package__:  # run as a script (make bench): the repository root holds the `bench` package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.rebuild_throughput import REPO, SPACEMUSIC, admin_sql, cli, drop_database, machine
from infra.avro import codec_from_settings, event_payload
from infra.gc_tuning import tune_gc
from infra.kafka import all_logical_topics
from infra.settings import Settings
from infra.sql import jsonable
from models.deal import apply_event
from models.events import OfferCreated, OfferValuated, RoyaltyPeriod
from projections.rows import deal_to_row, row_to_deal

EVENTS_PER_OFFER = 3
PEER_BATCH = 500


def offers(n: int, seed: int = 7) -> list[OfferCreated]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        months = rng.randint(2, 36)
        base = rng.randint(5_000, 500_000)
        history = tuple(
            RoyaltyPeriod(f"{2022 + m // 12}-{m % 12 + 1:02d}", max(0, base + rng.randint(-base // 3, base // 3)))
            for m in range(months)
        )
        out.append(
            OfferCreated(
                event_id=str(uuid.UUID(int=rng.getrandbits(128))),
                offer_id=str(uuid.UUID(int=rng.getrandbits(128))),
                creator_id=str(uuid.UUID(int=rng.getrandbits(128))),
                occurred_at=datetime.now(UTC),
                correlation_id=f"bench-{i}",
                currency="EUR",
                royalty_history=history,
            )
        )
    return out


async def produce(settings: Settings, events: list[OfferCreated]) -> None:
    codec = codec_from_settings(settings)
    await codec.register_all()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=20, acks="all")
    await producer.start()
    try:
        pending = []
        for event in events:
            value = await codec.encode_event(event)
            pending.append(await producer.send(settings.topic(event.TOPIC), value=value, key=event.offer_id.encode()))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def progress(dsn: str) -> tuple[int, int]:
    """(offers projected at all, offers projected valued or failed)."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS seen, count(*) FILTER (WHERE status IN ('valued', 'valuation_failed')) AS done "
            "FROM offers"
        )
        return int(row["seen"]), int(row["done"])
    finally:
        await conn.close()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Drain:
    offers_per_second: float
    cpu_ms_per_offer: float  # the draining process's own CPU: what the machine's load does not change


async def wait_drained(dsn: str, n: int, timeout: float, cpu: Callable[[], float]) -> Drain:
    """From the first offer the worker projects (start-up and group join not counted) until
    every offer is valued or failed. Not from the first *valued* one: under a backlog the
    projector writes thousands of created deals before its first valuation comes back, and
    that work belongs to the drain."""
    deadline = time.monotonic() + timeout
    first: tuple[float, float] | None = None
    while time.monotonic() < deadline:
        seen, done = await progress(dsn)
        now = time.monotonic()
        if seen and first is None:
            first = (now, cpu())
        if done >= n and first is not None:
            return Drain(n / max(now - first[0], 1e-6), 1000 * (cpu() - first[1]) / n)
        await asyncio.sleep(0.02)
    raise SystemExit(f"not drained within {timeout:.0f}s ({(await progress(dsn))[1]} of {n})")


async def run_pipeline(env: dict[str, str], settings: Settings, n: int) -> Drain:
    log = (REPO / "test-artifacts").resolve()
    log.mkdir(exist_ok=True)
    with (log / "bench-pipeline-worker.log").open("w") as out:
        proc = await asyncio.create_subprocess_exec(
            SPACEMUSIC,
            "worker",
            "--role",
            "pipeline",
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            return await wait_drained(settings.asyncpg_dsn, n, 1800, lambda: process_cpu_seconds(proc.pid))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)


class Peer:
    """The same decode -> price -> encode -> produce -> project work, hand-written with batching."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.codec = codec_from_settings(settings)

    async def run(self, n: int) -> Drain:
        from agents.valuation import valuate  # the same pure pricing step the agent runs

        s = self.settings
        consumer = AIOKafkaConsumer(
            s.topic(OfferCreated.TOPIC),
            bootstrap_servers=s.kafka_bootstrap_servers,
            group_id=f"peer-{uuid.uuid4().hex[:6]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_poll_records=PEER_BATCH,
        )
        producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap_servers, linger_ms=2, acks="all")
        db = await asyncpg.connect(s.asyncpg_dsn)
        await consumer.start()
        await producer.start()
        done, started, cpu_started = 0, None, 0.0
        try:
            while done < n:
                batches = await consumer.getmany(timeout_ms=500, max_records=PEER_BATCH)
                records = [r for rs in batches.values() for r in rs]
                if not records:
                    continue
                if started is None:
                    started, cpu_started = time.monotonic(), time.process_time()
                created = [await self.codec.decode_event(OfferCreated, r.value) for r in records]
                valued = [valuate(c) for c in created]
                deliveries = [
                    await producer.send(
                        s.topic(v.TOPIC), value=await self.codec.encode_event(v), key=v.offer_id.encode()
                    )
                    for v in valued
                ]
                await asyncio.gather(*deliveries)
                await self.project(db, created, valued, records)
                await consumer.commit()
                done += len(records)
            if started is None:
                return Drain(0.0, 0.0)
            return Drain(n / (time.monotonic() - started), 1000 * (time.process_time() - cpu_started) / n)
        finally:
            await consumer.stop()
            await producer.stop()
            await db.close()

    async def project(self, db: asyncpg.Connection, created: list, valued: list[OfferValuated], records: list) -> None:
        async with db.transaction():
            rows = [
                (
                    e.event_id,
                    e.offer_id,
                    e.TOPIC,
                    e.occurred_at,
                    r.topic,
                    r.partition,
                    r.offset,
                    json.dumps(event_payload(e)),
                )
                for e, r in zip(created, records, strict=True)
            ] + [
                (v.event_id, v.offer_id, v.TOPIC, v.occurred_at, "peer", 0, 0, json.dumps(event_payload(v)))
                for v in valued
            ]
            await db.executemany(
                'INSERT INTO deal_events (event_id, offer_id, event_type, occurred_at, topic, "partition", "offset", payload) '
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb) ON CONFLICT DO NOTHING",
                rows,
            )
            existing = {
                str(r["offer_id"]): row_to_deal({k: (str(v) if isinstance(v, uuid.UUID) else v) for k, v in r.items()})
                for r in await db.fetch(
                    "SELECT * FROM offers WHERE offer_id = ANY($1::uuid[])", [c.offer_id for c in created]
                )
            }
            deals = []
            for c, v in zip(created, valued, strict=True):
                deals.append(deal_to_row(apply_event(apply_event(existing.get(c.offer_id), c), v)))
            columns = [k for k in deals[0] if k != "status"] + ["status"]
            await db.executemany(
                f"INSERT INTO offers ({', '.join(columns)}, first_seq, change_seq) "
                f"VALUES ({', '.join(f'${i + 1}' for i in range(len(columns)))}, 0, 0) "
                "ON CONFLICT (offer_id) DO UPDATE SET status = EXCLUDED.status",
                [[d[c] for c in columns] for d in deals],
            )
            # The change log the SSE stream reads: one row per applied event, as the projector writes.
            await db.executemany(
                "INSERT INTO deal_changes (offer_id, creator_id, event_id, event_type, status, deal) "
                "VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
                [
                    (d["offer_id"], d["creator_id"], e.event_id, e.TOPIC, d["status"], json.dumps(jsonable(d)))
                    for d, pair in zip(deals, zip(created, valued, strict=True), strict=True)
                    for e in pair
                ],
            )
            for tp_offsets in {(r.topic, r.partition): r.offset for r in records}.items():
                (topic, partition), offset = tp_offsets
                await db.execute(
                    'INSERT INTO projection_tracking (consumer, topic, "partition", "offset") VALUES ($1, $2, $3, $4) '
                    'ON CONFLICT (consumer, topic, "partition") DO UPDATE SET "offset" = EXCLUDED."offset"',
                    "peer",
                    topic,
                    partition,
                    offset,
                )


async def namespace(base: Settings, name: str) -> tuple[dict[str, str], Settings]:
    server_dsn = base.asyncpg_dsn.rsplit("/", 1)[0]
    env = {
        **os.environ,
        "DATABASE_URL": f"{server_dsn}/sm_{name}",
        "TOPIC_NAMESPACE": f"{name}.",
        "CONSUMER_GROUP_PREFIX": name,
        "LOG_LEVEL": "WARNING",
        "METRICS_PORT": "0",
    }
    await admin_sql(base.asyncpg_dsn, f'CREATE DATABASE "sm_{name}"')
    cli(env, "migrate")
    cli(env, "schemas", "register")
    cli(env, "topics", "create")
    return env, Settings.from_env(env)


async def cleanup(base: Settings, settings: Settings, name: str) -> None:
    await drop_database(base.asyncpg_dsn, f"sm_{name}")
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        await admin.delete_topics([settings.topic(t) for t in all_logical_topics()])
    finally:
        await admin.close()


def report(who: str, drain: Drain) -> None:
    print(
        f"{who}: {drain.offers_per_second:,.0f} offers/s = {drain.offers_per_second * EVENTS_PER_OFFER:,.0f} events/s; "
        f"its process's CPU {drain.cpu_ms_per_offer / EVENTS_PER_OFFER * 1000:,.0f} µs per event"
    )


async def main(n: int) -> None:
    base = Settings.from_env()
    run = uuid.uuid4().hex[:6]
    envs = []
    try:
        for side in ("a", "b"):
            envs.append((f"pt{run}{side}", *await namespace(base, f"pt{run}{side}")))
        events = offers(n)
        for _, _, settings in envs:
            await produce(settings, events)
        print(machine())
        (_, env_a, settings_a), (_, _, settings_b) = envs
        pipeline = await run_pipeline(env_a, settings_a, n)
        report("pipeline (spacemusic worker --role pipeline)", pipeline)
        # The peer gets the collector settings the worker runs with (infra/gc_tuning.py), so
        # the ratio compares the code, not the garbage collector's defaults.
        tune_gc(settings_b.gc_gen0_threshold)
        peer = await Peer(settings_b).run(n)
        report(f"peer (aiokafka + asyncpg, batches of {PEER_BATCH})", peer)
        print(
            f"ratio pipeline/peer: {pipeline.offers_per_second / peer.offers_per_second:.2f} (events/s), "
            f"{peer.cpu_ms_per_offer / pipeline.cpu_ms_per_offer:.2f} (CPU per event)"
        )
        print(machine())
    finally:
        for name, _, settings in envs:
            await cleanup(base, settings, name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offers", type=int, default=50_000)
    args = parser.parse_args()
    asyncio.run(main(args.offers))
