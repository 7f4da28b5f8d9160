"""Reading topics directly in tests (no consumer group: assign, seek, read to the end)."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from infra.settings import Settings


async def end_offsets(settings: Settings, logical_topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        topic = settings.topic(logical_topic)
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        ends = await consumer.end_offsets(partitions)
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


async def read_all(settings: Settings, logical_topic: str) -> list[ConsumerRecord]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        topic = settings.topic(logical_topic)
        partitions = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        # An explicit seek: aiokafka's seek_to_beginning can lose a race with the reset
        # that assign() starts in the background and leave the position at the end.
        for tp, begin in (await consumer.beginning_offsets(partitions)).items():
            consumer.seek(tp, begin)
        records: list[ConsumerRecord] = []
        remaining = {tp for tp, end in ends.items() if end > 0}
        deadline = asyncio.get_running_loop().time() + 30
        while remaining and asyncio.get_running_loop().time() < deadline:
            # An empty poll is not the end: keep going until every partition reached its end.
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, messages in batch.items():
                records.extend(messages)
                if messages and messages[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        return records
    finally:
        await consumer.stop()
