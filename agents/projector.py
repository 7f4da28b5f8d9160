"""Projector agent: every lifecycle topic -> Postgres projections, exactly once."""

from __future__ import annotations

from agents.consume import Consumer, RawMessage, from_faust
from infra.metrics import EVENTS_SKIPPED
from models.events import LIFECYCLE_EVENTS, Event
from projections.projector import Outcome, Position, project_event

AGENT = "projector"


def register(app) -> None:  # type: ignore[no-untyped-def]
    topics = app.topic(*[app.settings.topic(cls.TOPIC) for cls in LIFECYCLE_EVENTS])

    @app.agent(topics, name=AGENT, concurrency=1)
    async def projector_agent(stream):  # type: ignore[no-untyped-def]
        consumer = Consumer(AGENT, app.resources, app.settings.topic_namespace)

        async def handle(event: Event, message: RawMessage) -> None:
            position = Position(message.topic, message.partition, message.offset)
            async with app.resources.engine.begin() as conn:
                outcome = await project_event(conn, AGENT, event, position)
            if outcome is not Outcome.APPLIED:
                EVENTS_SKIPPED.labels(consumer=AGENT).inc()

        async for message in stream.events():
            await consumer.process(from_faust(message.message), handle)
