from __future__ import annotations

import itertools
from datetime import timedelta

from models.deal import DealStatus, apply_event, fold
from models.events import (
    OfferDeclined,
    OfferValuated,
    PayoutCompleted,
    PayoutProvider,
    PayoutStatus,
    ValuationOutcome,
)
from tests.support.events import PAYOUT, T0, env, lifecycle


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


def test_a_late_decline_in_any_arrival_order_leaves_the_paid_deal_paid() -> None:
    # The closing facts (offer.declined/withdrawn/lapsed) keep the fold order-independent too.
    late = OfferDeclined(**env(8), declined_by="creator|1", reason="changed my mind")
    events = [*lifecycle(), late]
    reference = None
    for order in itertools.islice(itertools.permutations(events), 0, 40320, 331):
        deal = None
        for event in order:
            deal = apply_event(deal, event)
        reference = reference or deal
        assert deal == reference
    assert reference.status is DealStatus.PAID and reference.declined_by == "creator|1"
