"""One term sheet per offer however often its ``offer.created`` is delivered.

The fault soak found two term sheets for one offer: a pipeline worker killed after it had
published the valuation but before it committed its offset valued the redelivered offer
again, stamped with the wall clock of the second delivery; the term sheet prints that time
and its write-once key hashes it, so the second delivery stored a second document.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

from agents.consume import Decoded, RawMessage
from agents.documents import termsheet_data
from agents.valuation import valuations
from models.documents import termsheet_key
from models.events import OfferCreated, RoyaltyPeriod


def _offer() -> OfferCreated:
    history = tuple(RoyaltyPeriod(f"2025-{m:02d}", 10_000) for m in range(1, 13))
    return OfferCreated(
        event_id=str(uuid.uuid4()),
        offer_id=str(uuid.uuid4()),
        creator_id=str(uuid.uuid4()),
        correlation_id="corr-redelivery",
        occurred_at=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        currency="EUR",
        royalty_history=history,
    )


def _delivery(offer: OfferCreated, offset: int) -> list[Decoded]:
    return [Decoded(offer, RawMessage(topic="t.offer.created", partition=0, offset=offset, key=b"k", value=b"v"))]


def test_a_redelivered_offer_is_valued_into_the_same_event_and_the_same_term_sheet() -> None:
    offer = _offer()
    [first] = valuations(_delivery(offer, 7))
    time.sleep(0.002)  # the redelivery comes later (after a rebalance: seconds or minutes)
    [again] = valuations(_delivery(offer, 7))
    assert again == first
    assert termsheet_key(termsheet_data(again)) == termsheet_key(termsheet_data(first))
    assert first.occurred_at > offer.occurred_at  # still after its cause in a deal's history
