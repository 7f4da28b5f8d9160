"""Lifecycle events for pure tests: one whole deal's events at fixed times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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
