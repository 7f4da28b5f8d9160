"""Documents agents: a term sheet for every valued offer, a receipt for every successful
payout. Each document lands under a key derived from its inputs and is announced with an
event whose id derives from its cause, so a replay re-announces the same document."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from agents.consume import Consumer, RawMessage, caused_by, from_faust
from infra.documents import produce_receipt, produce_termsheet
from infra.logging import get_logger
from models.documents import ReceiptData, TermsheetData
from models.events import (
    Event,
    OfferValuated,
    PayoutCompleted,
    PayoutStatus,
    ReceiptGenerated,
    TermsheetGenerated,
    ValuationOutcome,
)
from state.creators import get_creator, get_recipient
from state.payouts import get_payout

log = get_logger(__name__)
TERMSHEET_VALIDITY = timedelta(days=30)


def termsheet_data(valued: OfferValuated, creator_name: str | None = None) -> TermsheetData:
    assert valued.median_minor is not None and valued.low_minor is not None and valued.high_minor is not None
    return TermsheetData(
        offer_id=valued.offer_id,
        creator_id=valued.creator_id,
        currency=valued.currency,
        advance_minor=valued.median_minor,
        low_minor=valued.low_minor,
        high_minor=valued.high_minor,
        median_monthly_royalty_minor=valued.median_monthly_royalty_minor or 0,
        months_considered=valued.months_considered,
        model_version=valued.model_version,
        issued_at=valued.occurred_at,
        valid_until=valued.occurred_at + TERMSHEET_VALIDITY,
        creator_name=creator_name,
    )


def recipient_label(masked: dict[str, str], provider: str) -> str:
    if provider == "STRIPE" and "stripe_account" in masked:
        return f"Stripe account {masked['stripe_account']}"
    if "iban" in masked:
        return f"{masked.get('holder_name', '')} · IBAN {masked['iban']}".strip(" ·")
    return "recipient on file"


def register(app) -> None:  # type: ignore[no-untyped-def]
    settings = app.settings

    @app.agent(app.topic(settings.topic(OfferValuated.TOPIC)), name="termsheets", concurrency=1)
    async def termsheets_agent(stream):  # type: ignore[no-untyped-def]
        consumer = Consumer("termsheets", app.resources, settings.topic_namespace)

        async def handle(event: Event, _: RawMessage) -> None:
            assert isinstance(event, OfferValuated)
            if event.outcome is not ValuationOutcome.VALUED:
                return
            async with app.resources.engine.connect() as conn:
                creator = await get_creator(conn, event.creator_id)
            name = creator["display_name"] if creator else None
            stored = await produce_termsheet(app.resources.documents, termsheet_data(event, name))
            await app.resources.publisher.publish(
                TermsheetGenerated(
                    **caused_by(event, TermsheetGenerated.TOPIC, datetime.now(UTC)),
                    document_key=stored.key,
                    sha256=stored.sha256,
                    size_bytes=stored.size_bytes,
                    advance_minor=event.median_minor or 0,
                    currency=event.currency,
                )
            )
            log.info("termsheet_issued", offer_id=event.offer_id, key=stored.key, created=stored.created)

        async for message in stream.events():
            await consumer.process(from_faust(message.message), handle)

    @app.agent(app.topic(settings.topic(PayoutCompleted.TOPIC)), name="receipts", concurrency=1)
    async def receipts_agent(stream):  # type: ignore[no-untyped-def]
        consumer = Consumer("receipts", app.resources, settings.topic_namespace)

        async def handle(event: Event, _: RawMessage) -> None:
            assert isinstance(event, PayoutCompleted)
            if event.status is not PayoutStatus.SUCCEEDED:
                return
            async with app.resources.engine.connect() as conn:
                payout = await get_payout(conn, event.payout_id)
                recipient = await get_recipient(conn, payout["recipient_id"]) if payout else None
                creator = await get_creator(conn, event.creator_id)
            label = recipient_label(recipient["masked"] if recipient else {}, event.provider.value)
            data = ReceiptData(
                offer_id=event.offer_id,
                creator_id=event.creator_id,
                payout_id=event.payout_id,
                amount_minor=event.amount_minor,
                currency=event.currency,
                provider=event.provider.value,
                provider_reference=event.provider_reference or "n/a",
                paid_at=event.occurred_at,
                recipient_label=label,
                creator_name=creator["display_name"] if creator else None,
            )
            stored = await produce_receipt(app.resources.documents, data)
            await app.resources.publisher.publish(
                ReceiptGenerated(
                    **caused_by(event, ReceiptGenerated.TOPIC, datetime.now(UTC)),
                    payout_id=event.payout_id,
                    document_key=stored.key,
                    sha256=stored.sha256,
                    size_bytes=stored.size_bytes,
                )
            )
            log.info("receipt_issued", offer_id=event.offer_id, key=stored.key, created=stored.created)

        async for message in stream.events():
            await consumer.process(from_faust(message.message), handle)
