"""Consumer lag as a Prometheus gauge: how far a consumer group is behind each partition.

KEDA scales the worker Deployments on Kafka lag itself, but alerts and dashboards need the
same number in Prometheus, per group, topic and partition. Each worker exports the lag of
its own consumer group; with several replicas every one exports the same series (the
alert rules take ``max by (group, topic, partition)``).

Lag = log end offset - committed offset. A partition the group has never committed counts
from the log start (its whole backlog), which is what ``auto_offset_reset=earliest`` will
read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from infra.logging import get_logger
from infra.metrics import CONSUMER_LAG, CONSUMER_LAG_SCRAPE_ERRORS
from infra.retry import QUICK, retry

log = get_logger(__name__)


def compute_lag(
    committed: dict[TopicPartition, int], beginning: dict[TopicPartition, int], end: dict[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """Lag per partition; never negative (a commit can race ahead of a stale end offset)."""
    lag = {}
    for tp, end_offset in end.items():
        position = committed.get(tp, -1)
        if position < 0:
            position = beginning.get(tp, 0)
        lag[tp] = max(0, end_offset - position)
    return lag


@dataclass(frozen=True, slots=True)
class LagMeasurement:
    """One collection: per partition the group's committed offset (-1: never committed) and
    its lag, and when it was taken (``time.monotonic()``). The committed offsets are what a
    progress check needs: lag alone cannot tell a stuck consumer from a busy one."""

    committed: dict[TopicPartition, int]
    lag: dict[TopicPartition, int]
    measured_at: float


class ConsumerLagExporter:
    """Periodically sets ``spacemusic_consumer_lag`` for one group over the given topics.

    ``collect()`` returns the lag; the whole measurement (committed offsets too) is kept in
    ``last`` and handed to the ``on_measurement`` callback ``run()`` may be given."""

    def __init__(self, bootstrap_servers: str, group: str, topics: Iterable[str], interval: float = 15.0) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.group = group
        self.topics = sorted(set(topics))
        self.interval = interval
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self.last: LagMeasurement | None = None

    async def start(self) -> None:
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id=f"{self.group}-lag")
        await self._admin.start()
        # No group_id: this consumer only asks for offsets and never joins the group.
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap_servers, enable_auto_commit=False)
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()
        self._consumer = self._admin = None

    async def collect(self) -> dict[TopicPartition, int]:
        """One measurement; sets the gauge and returns it."""
        if self._admin is None or self._consumer is None:
            await self.start()
        assert self._admin is not None and self._consumer is not None
        partitions = []
        for topic in self.topics:
            for p in self._consumer.partitions_for_topic(topic) or await self._partitions(topic):
                partitions.append(TopicPartition(topic, p))
        admin = self._admin
        # A broker that just started has no group coordinator for a while (the offsets topic
        # is still being created): a retriable answer, not a reason to report nothing.
        offsets = await retry(
            QUICK,
            lambda: admin.list_consumer_group_offsets(self.group, partitions=partitions),
            what="consumer_group_offsets",
            retry_on=lambda exc: isinstance(exc, KafkaError) and exc.retriable,
            group=self.group,
        )
        committed = {tp: meta.offset for tp, meta in offsets.items()}
        beginning = await self._consumer.beginning_offsets(partitions)
        end = await self._consumer.end_offsets(partitions)
        lag = compute_lag(committed, beginning, end)
        for tp, value in lag.items():
            CONSUMER_LAG.labels(group=self.group, topic=tp.topic, partition=str(tp.partition)).set(value)
        self.last = LagMeasurement({tp: committed.get(tp, -1) for tp in lag}, lag, time.monotonic())
        return lag

    async def _partitions(self, topic: str) -> set[int]:
        assert self._consumer is not None
        await self._consumer._client.force_metadata_update()  # metadata is fetched lazily
        return self._consumer.partitions_for_topic(topic) or set()

    async def run(self, on_measurement: Callable[[LagMeasurement], None] | None = None) -> None:
        """Collect every ``interval`` seconds until cancelled; a failure is logged and retried
        (and ``on_measurement`` is not called: a failed collection measured nothing)."""
        try:
            while True:
                try:
                    await self.collect()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the broker may be briefly away; the worker must not die of it
                    CONSUMER_LAG_SCRAPE_ERRORS.inc()
                    log.warning("consumer_lag_failed", group=self.group, error=f"{type(exc).__name__}: {exc}")
                    with contextlib.suppress(Exception):
                        await self.stop()
                else:
                    if on_measurement is not None and self.last is not None:
                        try:
                            on_measurement(self.last)
                        except Exception as exc:  # a bug there must not stop the lag gauge too
                            log.error(
                                "consumer_lag_observer_failed", group=self.group, error=f"{type(exc).__name__}: {exc}"
                            )
                await asyncio.sleep(self.interval)
        finally:
            await self.stop()
