"""Valuation agent: ``offer.created`` -> pricing -> ``offer.valuated`` (valued or failed).

The valuation is a pure function of its cause, its time included: a redelivered
``offer.created`` (a worker killed after publishing, before committing) must re-publish the
*same* event, not one with the same id and a later ``occurred_at``. The term sheet prints
that time and its storage key hashes it, so a second, later stamp made a second term sheet
for one offer (the fault soak's duplicate document), and the acceptance window
(valid_until) depended on which of the two a reader saw first."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from agents.consume import Consumer, Decoded, caused_by, consume_batches
from infra.metrics import VALUATIONS
from models.events import OfferCreated, OfferValuated, ValuationOutcome
from models.pricing import Valuation, value_catalog

AGENT = "valuation"
# Pricing takes no time: the valuation is stamped just after the offer it prices, so it is
# the same on every delivery and a deal's history (ordered by time) still lists it second.
# One millisecond, not less: event times travel as Avro timestamp-millis, and a smaller tick
# would vanish on the wire, leaving both events at one instant (history order by event id).
VALUATION_TICK = timedelta(milliseconds=1)


def valued_at(offer: OfferCreated) -> datetime:
    return offer.occurred_at + VALUATION_TICK


def valuate(offer: OfferCreated) -> OfferValuated:
    """Pure: the valuation event for an offer; the same cause always gives the same event."""
    result = value_catalog(offer.royalty_history)
    common = {
        **caused_by(offer, OfferValuated.TOPIC, valued_at(offer)),
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


def valuations(batch: Sequence[Decoded]) -> list[OfferValuated]:
    """Pure: the valuation of every offer in a batch."""
    return [valuate(item.event) for item in batch if isinstance(item.event, OfferCreated)]


def register(app: Any) -> None:
    @app.agent(app.lifecycle_topics.of(OfferCreated), name=AGENT, concurrency=1)
    async def valuation_agent(stream: Any) -> None:
        resources = app.resources

        async def handle(batch: Sequence[Decoded]) -> None:
            valued = valuations(batch)
            await resources.publisher.publish_many(valued)
            for event in valued:
                VALUATIONS.labels(outcome=event.outcome.value).inc()

        await consume_batches(stream, Consumer(AGENT, resources, app.settings.topic_namespace), handle)
