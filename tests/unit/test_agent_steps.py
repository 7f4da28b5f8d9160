"""The pure step of every agent: event in, the effect it asks for out (no Kafka, no database)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from agents.consume import Decoded, RawMessage, caused_by, derived_event_id
from agents.documents import (
    TERMSHEET_VALIDITY,
    receipt_data,
    receipt_issued,
    recipient_label,
    termsheet_data,
    termsheet_issued,
    wants_receipt,
    wants_termsheet,
)
from agents.projector import located
from agents.valuation import valuate, valuations
from infra.documents import StoredDocument
from models.events import (
    OfferCreated,
    OfferValuated,
    PayoutCompleted,
    PayoutProvider,
    PayoutStatus,
    RoyaltyPeriod,
    ValuationOutcome,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
IDS = {"offer_id": str(uuid.uuid4()), "creator_id": str(uuid.uuid4()), "correlation_id": "corr-1"}


def created(months: int = 12, amount: int = 10_000) -> OfferCreated:
    history = tuple(RoyaltyPeriod(f"2025-{m:02d}", amount) for m in range(1, months + 1))
    return OfferCreated(event_id=str(uuid.uuid4()), occurred_at=T0, currency="EUR", royalty_history=history, **IDS)


def message(offset: int, topic: str = "t.offer.created") -> RawMessage:
    return RawMessage(topic=topic, partition=2, offset=offset, key=b"k", value=b"v")


def test_valuate_prices_a_history_and_derives_its_id_from_the_cause() -> None:
    offer = created()
    valued = valuate(offer)
    assert valued.outcome is ValuationOutcome.VALUED
    assert valued.median_minor == 10_000 * 24 and valued.low_minor == valued.high_minor == 240_000
    assert valued.event_id == derived_event_id(offer.event_id, OfferValuated.TOPIC)
    assert valued.causation_id == offer.event_id and valued.correlation_id == "corr-1"
    assert valuate(offer) == valued  # a redelivery, whenever it comes: the same event


def test_valuate_reports_a_history_it_cannot_price() -> None:
    valued = valuate(created(months=2))
    assert valued.outcome is ValuationOutcome.FAILED
    assert valued.failure_reason == "insufficient_history" and valued.median_minor is None


def test_valuations_of_a_batch_keep_its_order() -> None:
    offers = [created() for _ in range(3)]
    batch = [Decoded(o, message(i)) for i, o in enumerate(offers)]
    assert [v.causation_id for v in valuations(batch)] == [o.event_id for o in offers]


def test_the_projector_locates_each_event_where_it_was_read() -> None:
    offer = created()
    [item] = located([Decoded(offer, message(41))])
    assert item.event is offer
    assert (item.position.topic, item.position.partition, item.position.offset) == ("t.offer.created", 2, 41)


def _valued(outcome: ValuationOutcome = ValuationOutcome.VALUED) -> OfferValuated:
    return valuate(created()) if outcome is ValuationOutcome.VALUED else valuate(created(months=1))


def test_only_a_valued_offer_gets_a_term_sheet_valid_for_thirty_days() -> None:
    valued = _valued()
    assert wants_termsheet(Decoded(valued, message(1)))
    assert not wants_termsheet(Decoded(_valued(ValuationOutcome.FAILED), message(2)))
    data = termsheet_data(valued, "Ada")
    assert data.advance_minor == valued.median_minor and data.creator_name == "Ada"
    assert data.valid_until - data.issued_at == TERMSHEET_VALIDITY


def test_an_issued_document_is_announced_under_an_id_derived_from_its_cause() -> None:
    valued = _valued()
    stored = StoredDocument(key="termsheets/x.pdf", sha256="ab" * 32, size_bytes=10, created=True)
    issued = termsheet_issued(valued, stored, T0)
    assert issued.event_id == caused_by(valued, issued.TOPIC, T0)["event_id"]
    assert (issued.document_key, issued.advance_minor) == ("termsheets/x.pdf", valued.median_minor)


def paid(
    status: PayoutStatus = PayoutStatus.SUCCEEDED, provider: PayoutProvider = PayoutProvider.WISE
) -> PayoutCompleted:
    return PayoutCompleted(
        event_id=str(uuid.uuid4()),
        occurred_at=T0,
        payout_id=str(uuid.uuid4()),
        status=status,
        provider=provider,
        amount_minor=240_000,
        currency="EUR",
        provider_reference="tr_1",
        **IDS,
    )


def test_only_a_successful_payout_gets_a_receipt_naming_the_masked_recipient() -> None:
    assert wants_receipt(Decoded(paid(), message(1)))
    assert not wants_receipt(Decoded(paid(PayoutStatus.FAILED, PayoutProvider.NONE), message(2)))
    data = receipt_data(paid(), {"iban": "•••• 3000", "holder_name": "A. L."}, "Ada")
    assert data.recipient_label == "A. L. · IBAN •••• 3000" and data.creator_name == "Ada"
    stored = StoredDocument(key="receipts/y.pdf", sha256="cd" * 32, size_bytes=10, created=False)
    assert receipt_issued(paid(), stored, T0).document_key == "receipts/y.pdf"


def test_recipient_labels_never_need_the_full_details() -> None:
    assert recipient_label({"stripe_account": "acct_…9xyz"}, "STRIPE") == "Stripe account acct_…9xyz"
    assert recipient_label({}, "WISE") == "recipient on file"
