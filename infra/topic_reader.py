"""Reading topics directly, outside any consumer group: replay, dead-letter inspection and
`spacemusic deal` use this to look at the log without moving anyone's committed offsets.

A read is planned before it starts: every selected partition gets a start (an offset, the
first offset at a time, or the beginning) and an exclusive end (an offset, the first offset
after a time, or the high-water mark taken *when the plan is made*). Freezing the end at
planning time is what makes a read terminate on a topic that keeps growing, and gives the
progress bar its total. Problems an operator can fix (a topic that does not exist, a
partition or offset outside the log) are raised as ``TopicReadError`` with a message that
says what is valid instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from infra.avro import DecodeError, RegistryCodec, record_to_deadletter
from infra.settings import Settings
from models.events import DEADLETTER_TOPIC, EVENT_BY_TOPIC, DeadLetter, Event

Headers = tuple[tuple[str, bytes], ...]


class TopicReadError(RuntimeError):
    """A read that cannot be done as asked; the message says why and what would work."""


class UnknownTopic(TopicReadError):
    pass


class UnknownPartition(TopicReadError):
    pass


class OffsetOutOfRange(TopicReadError):
    pass


class ReadStalled(TopicReadError):
    pass


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One Kafka record as read, with its *logical* topic name."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: Headers

    @property
    def timestamp(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)

    @property
    def position(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    def header(self, name: str) -> bytes | None:
        """The last value of a header (a replayed record may carry several markers)."""
        found = None
        for key, value in self.headers:
            if key == name:
                found = value
        return found


@dataclass(frozen=True, slots=True)
class ReadSpec:
    """What to read. Offsets are per partition and inclusive at both ends; times too."""

    topics: tuple[str, ...]
    partitions: tuple[int, ...] = ()
    from_offset: int | None = None
    from_time: datetime | None = None
    to_offset: int | None = None
    to_time: datetime | None = None

    def __post_init__(self) -> None:
        if not self.topics:
            raise ValueError("no topic to read")
        if self.from_offset is not None and self.from_time is not None:
            raise ValueError("give a start offset or a start time, not both")
        if self.to_offset is not None and self.to_time is not None:
            raise ValueError("give an end offset or an end time, not both")
        if self.from_offset is not None and self.to_offset is not None and self.to_offset < self.from_offset:
            raise ValueError(f"end offset {self.to_offset} is before start offset {self.from_offset}")
        if self.from_time is not None and self.to_time is not None and self.to_time < self.from_time:
            raise ValueError(f"end time {self.to_time.isoformat()} is before start time {self.from_time.isoformat()}")
        for name in ("from_offset", "to_offset"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name.replace('_', ' ')} must not be negative")


@dataclass(frozen=True, slots=True)
class PartitionRange:
    topic: str  # logical
    partition: int
    start: int
    end: int  # exclusive
    low: int  # log start offset when planned
    high: int  # high-water mark when planned

    @property
    def count(self) -> int:
        return max(0, self.end - self.start)


@dataclass(frozen=True, slots=True)
class ReadPlan:
    ranges: tuple[PartitionRange, ...]

    @property
    def total(self) -> int:
        return sum(r.count for r in self.ranges)

    def for_topic(self, topic: str) -> tuple[PartitionRange, ...]:
        return tuple(r for r in self.ranges if r.topic == topic)


def _headers(raw: Any) -> Headers:
    # aiokafka hands over (str, bytes) pairs already; only a None value needs replacing.
    if not raw:
        return ()
    return tuple(raw) if all(v is not None for _, v in raw) else tuple((k, v or b"") for k, v in raw)


def to_millis(moment: datetime) -> int:
    """Kafka timestamps are epoch milliseconds; a naive datetime is taken as UTC."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return int(aware.timestamp() * 1000)


class TopicReader:
    """Assign-and-seek reads of logical topics; use as ``async with TopicReader(settings)``."""

    def __init__(
        self,
        settings: Settings,
        idle_timeout: float = 30.0,
        client_id: str = "spacemusic-reader",
        **consumer_options: Any,
    ) -> None:
        """``consumer_options`` go to the aiokafka consumer (bulk readers raise the fetch sizes)."""
        self._settings = settings
        self._idle_timeout = idle_timeout
        self._client_id = client_id
        self._consumer_options = consumer_options
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None

    async def __aenter__(self) -> TopicReader:
        servers = self._settings.kafka_bootstrap_servers
        # No group: nothing is committed, so reading never disturbs the agents' positions.
        # "earliest": if retention removes the start between planning and reading, read on
        # from what is left rather than silently jumping to the end.
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=servers,
            client_id=self._client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **self._consumer_options,
        )
        self._admin = AIOKafkaAdminClient(bootstrap_servers=servers, client_id=f"{self._client_id}-admin")
        await self._consumer.start()
        await self._admin.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()

    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("use TopicReader as an async context manager")
        return self._consumer

    def logical(self, physical: str) -> str:
        return physical.removeprefix(self._settings.topic_namespace)

    async def partitions(self, topics: Iterable[str]) -> dict[str, list[int]]:
        """Partition ids of each logical topic; UnknownTopic for any that does not exist."""
        assert self._admin is not None, "use TopicReader as an async context manager"
        wanted = list(dict.fromkeys(topics))
        # list_topics first: a metadata request naming a missing topic can auto-create it on
        # brokers that allow that, and a typo must not create a topic.
        existing = set(await self._admin.list_topics())
        missing = [t for t in wanted if self._settings.topic(t) not in existing]
        if missing:
            names = ", ".join(
                t if self._settings.topic(t) == t else f"{t} ({self._settings.topic(t)})" for t in missing
            )
            raise UnknownTopic(
                f"topic(s) not on the broker at {self._settings.kafka_bootstrap_servers}: {names}; "
                "`spacemusic topics list` shows what exists, `spacemusic topics create` creates the lifecycle topics"
            )
        described = await self._admin.describe_topics([self._settings.topic(t) for t in wanted])
        found = {self.logical(d["topic"]): sorted(p["partition"] for p in d["partitions"]) for d in described}
        return {t: found.get(t, []) for t in wanted}

    async def high_water_marks(self, topic: str) -> dict[int, int]:
        """Next offset of every partition of a logical topic (what a write would move)."""
        parts = (await self.partitions([topic]))[topic]
        ends = await self.consumer.end_offsets([TopicPartition(self._settings.topic(topic), p) for p in parts])
        return {tp.partition: offset for tp, offset in ends.items()}

    async def plan(self, spec: ReadSpec) -> ReadPlan:
        by_topic = await self.partitions(spec.topics)
        tps: list[TopicPartition] = []
        for topic, available in by_topic.items():
            chosen = list(spec.partitions) or available
            unknown = sorted(set(chosen) - set(available))
            if unknown:
                raise UnknownPartition(
                    f"topic {topic} has no partition {', '.join(map(str, unknown))}; "
                    f"its partitions are {', '.join(map(str, available))}"
                )
            tps += [TopicPartition(self._settings.topic(topic), p) for p in chosen]
        lows = await self.consumer.beginning_offsets(tps)
        highs = await self.consumer.end_offsets(tps)
        starts = await self._starts(spec, tps, lows, highs)
        ends = await self._ends(spec, tps, lows, highs)
        return ReadPlan(
            tuple(
                PartitionRange(
                    topic=self.logical(tp.topic),
                    partition=tp.partition,
                    start=starts[tp],
                    end=max(ends[tp], starts[tp]),
                    low=lows[tp],
                    high=highs[tp],
                )
                for tp in tps
            )
        )

    def _check_offset(
        self, spec: ReadSpec, what: str, offset: int, tp: TopicPartition, low: int, high: int, last_ok: int
    ) -> None:
        if low <= offset <= last_ok:
            return
        where = f"{self.logical(tp.topic)} partition {tp.partition}"
        valid = f"valid offsets are {low}..{high - 1}" if high > low else f"it holds no messages (next offset {high})"
        # One offset applied to every partition is the usual way to hit this by accident.
        hint = "" if spec.partitions else "; offsets are per partition, so restrict the read to one partition"
        raise OffsetOutOfRange(f"{what} {offset} is out of range for {where}: {valid}{hint}")

    async def _starts(
        self,
        spec: ReadSpec,
        tps: Sequence[TopicPartition],
        lows: dict[TopicPartition, int],
        highs: dict[TopicPartition, int],
    ) -> dict[TopicPartition, int]:
        if spec.from_offset is not None:
            for tp in tps:
                # The high-water mark itself is a valid start ("from now"): the frozen end
                # makes that an empty read, which is the honest answer.
                self._check_offset(spec, "start offset", spec.from_offset, tp, lows[tp], highs[tp], highs[tp])
            return {tp: spec.from_offset for tp in tps}
        if spec.from_time is not None:
            return await self._offsets_at(tps, to_millis(spec.from_time), highs)
        return dict(lows)

    async def _ends(
        self,
        spec: ReadSpec,
        tps: Sequence[TopicPartition],
        lows: dict[TopicPartition, int],
        highs: dict[TopicPartition, int],
    ) -> dict[TopicPartition, int]:
        if spec.to_offset is not None:
            for tp in tps:
                self._check_offset(spec, "end offset", spec.to_offset, tp, lows[tp], highs[tp], highs[tp] - 1)
            return {tp: spec.to_offset + 1 for tp in tps}
        if spec.to_time is not None:
            # First offset strictly after the end time = exclusive end of an inclusive range.
            return await self._offsets_at(tps, to_millis(spec.to_time) + 1, highs)
        return dict(highs)

    async def _offsets_at(
        self, tps: Sequence[TopicPartition], millis: int, highs: dict[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        if not tps:
            return {}
        found = await self.consumer.offsets_for_times({tp: millis for tp in tps})
        # None: no message at or after that time, so the position is the end of the log.
        return {tp: (found[tp].offset if found.get(tp) is not None else highs[tp]) for tp in tps}

    async def read(self, plan: ReadPlan) -> AsyncIterator[RawRecord]:
        """Every record of the plan, in offset order within each partition."""
        async for batch in self.read_batches(plan):
            for record in batch:
                yield record

    async def read_batches(self, plan: ReadPlan, max_records: int = 1000) -> AsyncIterator[list[RawRecord]]:
        """The records of the plan as they are fetched, up to ``max_records`` at a time, in
        offset order within each partition (bulk readers work a batch at a time)."""
        consumer = self.consumer
        active = {TopicPartition(self._settings.topic(r.topic), r.partition): r for r in plan.ranges if r.count > 0}
        if not active:
            return
        consumer.assign(list(active))
        for tp, r in active.items():
            consumer.seek(tp, r.start)
        loop = asyncio.get_running_loop()
        last_progress = loop.time()
        while active:
            fetched = await consumer.getmany(*active, timeout_ms=1000, max_records=max_records)
            batch: list[RawRecord] = []
            for tp, messages in fetched.items():
                r = active.get(tp)
                if r is None:
                    continue
                for m in messages:
                    if m.offset >= r.end:
                        break
                    batch.append(
                        RawRecord(
                            topic=r.topic,
                            partition=m.partition,
                            offset=m.offset,
                            key=m.key,
                            value=m.value,
                            timestamp_ms=m.timestamp,
                            headers=_headers(m.headers),
                        )
                    )
            if batch:
                last_progress = loop.time()
                yield batch
            for tp in list(active):
                # Position, not the last offset seen: offsets can have gaps (transaction
                # markers), so "the next fetch is at or past the end" is the finishing test.
                if await consumer.position(tp) >= active[tp].end:
                    del active[tp]
                    consumer.pause(tp)
            if active and loop.time() - last_progress > self._idle_timeout:
                stuck = ", ".join(f"{self.logical(tp.topic)}:{tp.partition}" for tp in active)
                raise ReadStalled(f"no progress for {self._idle_timeout:.0f}s reading {stuck}")


async def decode_record(codec: RegistryCodec, record: RawRecord) -> Event | DeadLetter:
    """The domain object a record holds, through the registry.

    Raises DecodeError (or InvalidEvent) for a message that is not a valid one, and
    RegistryUnavailable when the registry cannot be asked, which is worth retrying.
    """
    if record.topic == DEADLETTER_TOPIC:
        raw = await codec.decode(DEADLETTER_TOPIC, record.value)
        try:
            return record_to_deadletter(raw)
        except (TypeError, ValueError, KeyError) as exc:
            raise DecodeError(f"not a dead-letter record: {exc}") from exc
    cls = EVENT_BY_TOPIC.get(record.topic)
    if cls is None:
        raise DecodeError(f"no event type for topic {record.topic}")
    return await codec.decode_event(cls, record.value)
