"""Recovery without an operator, the stuck-agent case: a documents worker whose agent cannot
get a term sheet out (S3 away) still beats and still has a broker, but its partition piles up
lag; /readyz must say "no progress" then, and 200 again once S3 is back and the backlog is
done, with the document produced once. Private stack (it takes S3 away).

Why S3 stalls the partition: the term sheet agent holds its batch (nothing is acknowledged,
so nothing is committed) while botocore retries the connection (5 attempts, ~15-25 s), then
the consume loop retries the event on its own 3 more times before dead-lettering it, about
a minute and a half in all. The outage here is ended as soon as /readyz has said so, about
10 s in, well inside that window, so the message is never dead-lettered and the test checks
that too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime

import aioboto3
from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.avro import codec_from_settings
from infra.kafka import EventPublisher
from infra.settings import Settings
from models.events import DEADLETTER_TOPIC, OfferValuated, TermsheetGenerated, ValuationOutcome
from tests.faults.stack import PrivateStack
from tests.support.stack import Process, free_port, run_cli

STALL_READY_SECONDS = 5
PROBE_EVERY = 0.5


def _probe(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 (local test URL)
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


async def _until(url: str, want: int, timeout: float, contains: str = "") -> tuple[int, str]:
    """Probe until /readyz answers ``want`` (with ``contains`` in its body); the last answer
    is raised with the assertion otherwise."""
    deadline = time.monotonic() + timeout
    last = (0, "")
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(_probe, url)
        if last[0] == want and contains in last[1]:
            return last
        await asyncio.sleep(PROBE_EVERY)
    raise AssertionError(f"/readyz never answered {want} {contains!r} within {timeout}s; last {last}")


def _valued() -> OfferValuated:
    return OfferValuated(
        event_id=str(uuid.uuid4()),
        offer_id=str(uuid.uuid4()),
        creator_id=str(uuid.uuid4()),  # unknown creator: the term sheet just has no name
        occurred_at=datetime.now(UTC).replace(microsecond=0),
        correlation_id="progress-watchdog",
        outcome=ValuationOutcome.VALUED,
        currency="EUR",
        model_version="test",
        low_minor=90_000,
        median_minor=100_000,
        high_minor=110_000,
        median_monthly_royalty_minor=10_000,
        months_considered=12,
    )


async def _messages(settings: Settings, logical_topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        tps = [TopicPartition(settings.topic(logical_topic), p) for p in range(settings.topic_partitions)]
        ends, starts = await consumer.end_offsets(tps), await consumer.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        with contextlib.suppress(asyncio.CancelledError):  # aiokafka's group-less stop may re-raise
            await consumer.stop()


async def _termsheets(settings: Settings, offer_id: str) -> int:
    async with aioboto3.Session().client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name="eu-west-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    ) as s3:
        page = await s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix=f"termsheets/{offer_id}/")
        return int(page.get("KeyCount", 0))


async def test_readyz_says_no_progress_while_s3_is_away_and_recovers(private_stack: PrivateStack) -> None:
    name = f"pw{uuid.uuid4().hex[:6]}"
    port = free_port()
    env = {
        **private_stack.env,
        "TOPIC_NAMESPACE": f"{name}.",
        "CONSUMER_GROUP_PREFIX": name,
        "METRICS_PORT": str(port),
        "WORKER_LAG_INTERVAL_SECONDS": "1",
        "WORKER_STALL_READY_SECONDS": str(STALL_READY_SECONDS),
    }
    settings = Settings.from_env(env)
    await asyncio.to_thread(run_cli, env, "topics", "create")
    await asyncio.to_thread(run_cli, env, "schemas", "register")
    url = f"http://127.0.0.1:{port}/readyz"
    worker = Process(f"faults-{name}-documents", env, "worker", "--role", "documents")
    s3_away = False
    try:
        await _until(url, 200, 120)
        publisher = EventPublisher(settings, codec_from_settings(settings))
        await publisher.start()
        valued = _valued()
        try:
            await asyncio.to_thread(private_stack.s3_down)
            s3_away = True
            await publisher.publish(valued)
        finally:
            await publisher.stop()
        stalled_topic = settings.topic("offer.valuated")
        _, why = await _until(url, 503, 45, contains=f"no progress on {stalled_topic}[")
        assert why.rstrip().endswith("with 1 waiting"), why
        await asyncio.to_thread(private_stack.s3_up)
        s3_away = False
        await _until(url, 200, 90)
        assert await _termsheets(settings, valued.offer_id) == 1
        assert await _messages(settings, TermsheetGenerated.TOPIC) == 1, "the term sheet was announced twice"
        assert await _messages(settings, DEADLETTER_TOPIC) == 0, "the event was dead-lettered"
        log = worker.output()
        assert log.count('"partition_stalled"') == 1, "one line per episode, not per probe"
        assert log.count('"partition_progressing"') == 1
        assert '"worker_wedged"' not in log
        assert worker.proc.poll() is None, "the worker died"
    finally:
        if s3_away:
            await asyncio.to_thread(private_stack.s3_up)
        worker.stop()
