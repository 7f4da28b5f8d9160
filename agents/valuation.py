"""Valuation agent: ``offer.created`` -> pricing -> ``offer.valuated`` (valued or failed)."""

from __future__ import annotations

from datetime import UTC, datetime

from agents.consume import Consumer, RawMessage, caused_by, from_faust
from infra.metrics import VALUATIONS
from models.events import Event, OfferCreated, OfferValuated, ValuationOutcome
from models.pricing import Valuation, value_catalog

AGENT = "valuation"


def valuate(offer: OfferCreated, now: datetime) -> OfferValuated:
    """Pure: the valuation event for an offer (the same cause always gives the same id)."""
    result = value_catalog(offer.royalty_history)
    common = {
        **caused_by(offer, OfferValuated.TOPIC, now),
        "currency": offer.currency,
        "model_version": result.model_version,
        "months_considered": result.months_considered,
    }
    if isinstance(result, Valuation):
        return OfferValuated(
            **common,
            outcome=ValuationOutcome.VALUED,
            low_minor=result.low_minor,
            median_minor=result.median_minor,
            high_minor=result.high_minor,
            median_monthly_royalty_minor=result.median_monthly_royalty_minor,
        )
    return OfferValuated(**common, outcome=ValuationOutcome.FAILED, failure_reason=result.reason)


def register(app) -> None:  # type: ignore[no-untyped-def]
    topic = app.topic(app.settings.topic(OfferCreated.TOPIC))

    @app.agent(topic, name=AGENT, concurrency=1)
    async def valuation_agent(stream):  # type: ignore[no-untyped-def]
        consumer = Consumer(AGENT, app.resources, app.settings.topic_namespace)

        async def handle(event: Event, _: RawMessage) -> None:
            assert isinstance(event, OfferCreated)
            valuated = valuate(event, datetime.now(UTC))
            await app.resources.publisher.publish(valuated)
            VALUATIONS.labels(outcome=valuated.outcome.value).inc()

        async for message in stream.events():
            await consumer.process(from_faust(message.message), handle)
