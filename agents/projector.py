"""Projector agent: every lifecycle topic -> Postgres projections, exactly once, a batch
per transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agents.consume import Consumer, Decoded, consume_batches
from infra.metrics import EVENTS_SKIPPED
from projections.projector import LIVE_CONSUMER, Located, Position, project_batch

AGENT = LIVE_CONSUMER


def located(batch: Sequence[Decoded]) -> list[Located]:
    """Pure: the events of a batch with their log positions, in the order read."""
    return [Located(d.event, Position(d.message.topic, d.message.partition, d.message.offset)) for d in batch]


def register(app: Any) -> None:
    @app.agent(app.lifecycle_topics.lifecycle, name=AGENT, concurrency=1)
    async def projector_agent(stream: Any) -> None:
        resources = app.resources

        async def handle(batch: Sequence[Decoded]) -> None:
            async with resources.engine.begin() as conn:
                result = await project_batch(conn, AGENT, located(batch))
            skipped = result.duplicates + result.already_tracked
            if skipped:
                EVENTS_SKIPPED.labels(consumer=AGENT).inc(skipped)

        await consume_batches(stream, Consumer(AGENT, resources, app.settings.topic_namespace), handle)
