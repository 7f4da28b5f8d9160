"""Benchmark: `rebuild-projections` throughput (events/s) and the time of a --verify-only.

Self-contained on the local stack: its own database and topic namespace (dropped and
deleted at the end). It publishes a realistic lifecycle mix (>= 100,000 events, a few
duplicates and undecodable messages among them), then times

1. a forced rebuild into the empty live tables (read phase events/s, then the whole run),
2. a --verify-only on the same data (the live tables now hold what the rebuild produced).

Producing is not what is measured. Run: `make bench`, or
`set -a; . infra/local/dev.env; set +a; .venv/bin/python bench/rebuild_throughput.py [--events N] [--workers N]`
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from infra.avro import codec_from_settings
from infra.kafka import all_logical_topics
from infra.settings import Settings
from models.events import (
    Event,
    OfferAccepted,
    OfferCreated,
    OfferValuated,
    PayoutCompleted,
    PayoutProvider,
    PayoutRequested,
    PayoutStatus,
    ReceiptGenerated,
    RoyaltyPeriod,
    TermsheetGenerated,
    ValuationOutcome,
)
from projections.rebuild import RebuildOptions, rebuild_projections

REPO = Path(__file__).resolve().parents[1]
SPACEMUSIC = str(REPO / ".venv" / "bin" / "spacemusic")
T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
SETTLE_SECONDS = 5


def lifecycle(i: int, rng: random.Random) -> list[Event]:
    """One offer's events; the mix of how far offers get is roughly what production sees."""
    offer, creator = str(uuid.UUID(int=rng.getrandbits(128))), str(uuid.UUID(int=rng.getrandbits(128)))
    t = T0 + timedelta(seconds=i)
    env = {"offer_id": offer, "creator_id": creator, "correlation_id": f"bench-{i}"}
    months = rng.randint(6, 24)
    base = rng.randint(20_000, 400_000)
    history = tuple(
        RoyaltyPeriod(f"{2023 + m // 12}-{m % 12 + 1:02d}", base + rng.randint(-5000, 5000)) for m in range(months)
    )
    created = OfferCreated(event_id=str(uuid.uuid4()), occurred_at=t, currency="EUR", royalty_history=history, **env)
    events: list[Event] = [created]
    stage = i % 10
    if stage == 0:
        events.append(
            OfferValuated(
                event_id=str(uuid.uuid4()),
                occurred_at=t + timedelta(seconds=1),
                causation_id=created.event_id,
                outcome=ValuationOutcome.FAILED,
                currency="EUR",
                model_version="v1",
                failure_reason="insufficient_history",
                **env,
            )
        )
        return events
    median = base * 24
    events.append(
        OfferValuated(
            event_id=str(uuid.uuid4()),
            occurred_at=t + timedelta(seconds=1),
            causation_id=created.event_id,
            outcome=ValuationOutcome.VALUED,
            currency="EUR",
            model_version="v1",
            low_minor=median * 8 // 10,
            median_minor=median,
            high_minor=median * 12 // 10,
            median_monthly_royalty_minor=base,
            months_considered=months,
            **env,
        )
    )
    sha = f"{rng.getrandbits(256):064x}"
    events.append(
        TermsheetGenerated(
            event_id=str(uuid.uuid4()),
            occurred_at=t + timedelta(seconds=2),
            document_key=f"termsheets/{offer}/{sha[:16]}.pdf",
            sha256=sha,
            size_bytes=31_000,
            advance_minor=median,
            currency="EUR",
            **env,
        )
    )
    if stage in (1, 2):
        return events
    events.append(
        OfferAccepted(
            event_id=str(uuid.uuid4()),
            occurred_at=t + timedelta(minutes=5),
            advance_minor=median,
            currency="EUR",
            termsheet_sha256=sha,
            accepted_by="creator",
            **env,
        )
    )
    if stage == 3:
        return events
    payout_id = str(uuid.uuid5(uuid.NAMESPACE_URL, offer))
    events.append(
        PayoutRequested(
            event_id=str(uuid.uuid4()),
            occurred_at=t + timedelta(minutes=6),
            payout_id=payout_id,
            recipient_id=str(uuid.uuid4()),
            amount_minor=median,
            currency="EUR",
            requested_by="admin",
            **env,
        )
    )
    if stage == 4:
        return events
    ok = stage != 5
    events.append(
        PayoutCompleted(
            event_id=str(uuid.uuid4()),
            occurred_at=t + timedelta(minutes=7),
            payout_id=payout_id,
            status=PayoutStatus.SUCCEEDED if ok else PayoutStatus.FAILED,
            provider=PayoutProvider.STRIPE if ok else PayoutProvider.NONE,
            amount_minor=median,
            currency="EUR",
            provider_reference=f"tr_{i}" if ok else None,
            failure_reason=None if ok else "stripe: declined",
            **env,
        )
    )
    if ok:
        events.append(
            ReceiptGenerated(
                event_id=str(uuid.uuid4()),
                occurred_at=t + timedelta(minutes=8),
                payout_id=payout_id,
                document_key=f"receipts/{payout_id}.pdf",
                sha256=f"{rng.getrandbits(256):064x}",
                size_bytes=28_000,
                **env,
            )
        )
    return events


async def produce(settings: Settings, target: int) -> int:
    codec = codec_from_settings(settings)
    await codec.register_all()
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=50, max_batch_size=1024 * 1024, acks=1
    )
    await producer.start()
    rng = random.Random(42)
    sent, i, pending = 0, 0, []
    try:
        while sent < target:
            events = lifecycle(i, rng)
            i += 1
            if i % 200 == 0:
                events.append(events[-1])  # a redelivered duplicate: same event id, new offset
            for event in events:
                value = await codec.encode_event(event)
                pending.append(
                    await producer.send(settings.topic(event.TOPIC), value=value, key=event.offer_id.encode())
                )
                sent += 1
            if i % 5000 == 0:  # an undecodable message now and then: counted and skipped
                pending.append(await producer.send(settings.topic("offer.created"), value=b"garbage", key=b"x"))
                sent += 1
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


def cpu_seconds() -> float:
    """CPU used by this process and its reaped children (the reader processes)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def machine() -> str:
    """How busy the box is: wall-clock figures mean little if other work shares the CPUs."""
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    line = f"machine: {os.cpu_count()} CPUs, load average {load}"
    pressure = Path("/proc/pressure/cpu")
    if pressure.exists():
        avg60 = pressure.read_text().split()[2].removeprefix("avg60=")
        line += f"; CPU pressure {avg60}% (share of the last 60 s in which some task waited for a CPU)"
    return line


def cli(env: dict[str, str], *args: str) -> None:
    subprocess.run([SPACEMUSIC, *args], env=env, check=True, capture_output=True, timeout=300)


async def admin_sql(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def drop_database(dsn: str, database: str) -> None:
    # An autovacuum worker (started by the big writes) may still be connected; FORCE may not
    # terminate it for this role, and it finishes within seconds.
    for attempt in range(30):
        try:
            await admin_sql(dsn, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            return
        except (asyncpg.InsufficientPrivilegeError, asyncpg.ObjectInUseError):
            if attempt == 29:
                raise
            await asyncio.sleep(1)


async def main(events: int, workers: int | None) -> None:
    name = f"bench{uuid.uuid4().hex[:8]}"
    base = Settings.from_env()
    server_dsn = base.asyncpg_dsn.rsplit("/", 1)[0]
    database_url = f"{server_dsn}/sm_{name}"
    env = {**os.environ, "DATABASE_URL": database_url, "TOPIC_NAMESPACE": f"{name}.", "LOG_LEVEL": "WARNING"}
    settings = Settings.from_env(env)
    await admin_sql(base.asyncpg_dsn, f'CREATE DATABASE "sm_{name}"')
    try:
        cli(env, "migrate")
        cli(env, "schemas", "register")
        cli(env, "topics", "create")
        print(machine())
        t = time.perf_counter()
        sent = await produce(settings, events)
        print(f"produced: {sent} messages in {time.perf_counter() - t:.1f} s (setup, not measured)")
        await asyncio.sleep(SETTLE_SECONDS)  # let the broker finish flushing what was just produced

        cpu = cpu_seconds()
        report = await rebuild_projections(
            settings, RebuildOptions(swap=True, force=True, workers=workers, live_wait_seconds=0)
        )
        cpu = cpu_seconds() - cpu
        read = report.read
        print(
            f"rebuild: {read.events_read} events in {report.timings['read']:.2f} s = "
            f"{report.events_per_second:,.0f} events/s (read phase, {report.workers} workers; "
            f"{read.events_applied} applied, {read.duplicates} duplicates, {read.skipped} undecodable skipped, "
            f"{read.offers} offers)"
        )
        print(
            f"rebuild total (read + index + compare + swap into empty live tables): {report.timings['total']:.2f} s"
            f" = {read.events_read / report.timings['total']:,.0f} events/s end to end; "
            f"lock held {report.timings['locked']:.2f} s to write {report.changed_offers} offers"
        )
        print(
            f"rebuild CPU: {cpu:.2f} s in the rebuild's own processes (Kafka and Postgres not counted) = "
            f"{read.events_read / cpu:,.0f} events per CPU-second"
        )
        t = time.perf_counter()
        verify = await rebuild_projections(settings, RebuildOptions(swap=False, workers=workers, live_wait_seconds=0))
        wall = time.perf_counter() - t
        print(
            f"verify-only: {verify.read.events_read} events in {wall:.2f} s wall "
            f"(read {verify.timings['read']:.2f} s, compare {verify.timings['compare']:.2f} s, "
            f"no lock); identical={verify.identical}"
        )
        if not verify.identical:
            raise SystemExit("verify-only after a forced rebuild found differences")
    finally:
        await drop_database(base.asyncpg_dsn, f"sm_{name}")
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            await admin.delete_topics([settings.topic(t) for t in all_logical_topics()])
        finally:
            await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=None, help="reader processes (default: one per CPU)")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.workers))
