from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from models.deal import DealStatus, apply_event, fold
from models.events import (
    OfferAccepted,
    OfferCreated,
    OfferValuated,
    PayoutCompleted,
    PayoutProvider,
    PayoutRequested,
    PayoutStatus,
    ReceiptGenerated,
    RoyaltyPeriod,
    TermsheetGenerated,
    ValuationOutcome,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OFFER = "00000000-0000-4000-8000-000000000001"
CREATOR = "00000000-0000-4000-8000-000000000002"
PAYOUT = "00000000-0000-4000-8000-000000000003"


def env(n: int) -> dict:
    return {
        "event_id": f"00000000-0000-4000-8000-0000000001{n:02d}",
        "offer_id": OFFER,
        "creator_id": CREATOR,
        "occurred_at": T0 + timedelta(minutes=n),
        "correlation_id": "c",
    }


def lifecycle() -> list:
    return [
        OfferCreated(**env(1), currency="EUR", royalty_history=(RoyaltyPeriod("2025-01", 100),)),
        OfferValuated(
            **env(2),
            outcome=ValuationOutcome.VALUED,
            currency="EUR",
            model_version="m",
            low_minor=1,
            median_minor=2,
            high_minor=3,
        ),
        TermsheetGenerated(**env(3), document_key="k", sha256="s", size_bytes=1, advance_minor=2, currency="EUR"),
        OfferAccepted(**env(4), advance_minor=2, currency="EUR", termsheet_sha256="s", accepted_by="u"),
        PayoutRequested(
            **env(5), payout_id=PAYOUT, recipient_id=CREATOR, amount_minor=2, currency="EUR", requested_by="u"
        ),
        PayoutCompleted(
            **env(6),
            payout_id=PAYOUT,
            status=PayoutStatus.SUCCEEDED,
            provider=PayoutProvider.STRIPE,
            amount_minor=2,
            currency="EUR",
            provider_reference="tr_1",
        ),
        ReceiptGenerated(**env(7), payout_id=PAYOUT, document_key="r", sha256="h", size_bytes=1),
    ]


def test_statuses_along_the_lifecycle() -> None:
    expected = ["created", "valued", "termsheet_issued", "accepted", "payout_requested", "paid", "paid"]
    deal = None
    for event, status in zip(lifecycle(), expected, strict=True):
        deal = apply_event(deal, event)
        assert deal.status.value == status
    assert deal.receipt_key == "r" and deal.paid_amount_minor == 2 and deal.payout_reference == "tr_1"


def test_any_arrival_order_gives_the_same_deal() -> None:
    events = lifecycle()
    reference = None
    for order in itertools.islice(itertools.permutations(events), 0, 5040, 97):
        deal = None
        for event in order:
            deal = apply_event(deal, event)
        snapshot = deal
        reference = reference or snapshot
        assert snapshot == reference
        assert deal.status is DealStatus.PAID


def test_failed_valuation_and_payout_failure() -> None:
    failed = OfferValuated(
        **env(2), outcome=ValuationOutcome.FAILED, currency="EUR", model_version="m", failure_reason="zero_royalties"
    )
    assert apply_event(None, failed).status is DealStatus.VALUATION_FAILED
    events = lifecycle()[:5] + [
        PayoutCompleted(
            **env(6),
            payout_id=PAYOUT,
            status=PayoutStatus.FAILED,
            provider=PayoutProvider.NONE,
            amount_minor=2,
            currency="EUR",
            failure_reason="both_failed",
        )
    ]
    assert fold(events).status is DealStatus.PAYOUT_FAILED


def test_as_of_folds_only_what_had_happened() -> None:
    events = lifecycle()
    assert fold(events, as_of=T0 + timedelta(minutes=3, seconds=30)).status is DealStatus.TERMSHEET_ISSUED
    assert fold(events, as_of=T0) is None
