"""Valuation agent: ``offer.created`` -> pricing -> ``offer.valuated`` (valued or failed)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from agents.consume import Consumer, Decoded, caused_by, consume_batches
from infra.metrics import VALUATIONS
from models.events import OfferCreated, OfferValuated, ValuationOutcome
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


def valuations(batch: Sequence[Decoded], now: datetime) -> list[OfferValuated]:
    """Pure: the valuation of every offer in a batch."""
    return [valuate(item.event, now) for item in batch if isinstance(item.event, OfferCreated)]


def register(app: Any) -> None:
    @app.agent(app.lifecycle_topics.of(OfferCreated), name=AGENT, concurrency=1)
    async def valuation_agent(stream: Any) -> None:
        resources = app.resources

        async def handle(batch: Sequence[Decoded]) -> None:
            valued = valuations(batch, datetime.now(UTC))
            await resources.publisher.publish_many(valued)
            for event in valued:
                VALUATIONS.labels(outcome=event.outcome.value).inc()

        await consume_batches(stream, Consumer(AGENT, resources, app.settings.topic_namespace), handle)
