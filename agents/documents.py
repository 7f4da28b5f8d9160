"""Documents agents: a term sheet for every valued offer, a receipt for every successful
payout. Each document lands under a key derived from its inputs and is announced with an
event whose id derives from its cause, so a replay re-announces the same document."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from agents.consume import Consumer, Decoded, caused_by, consume_batches
from infra.documents import StoredDocument, produce_receipt, produce_termsheet
from infra.logging import event_log_context, get_logger
from models.documents import ReceiptData, TermsheetData
from models.events import (
    OfferValuated,
    PayoutCompleted,
    PayoutStatus,
    ReceiptGenerated,
    TermsheetGenerated,
    ValuationOutcome,
)
from models.offers import OFFER_VALIDITY, valid_until_for
from state.creators import get_creator, get_recipient
from state.payouts import get_payout

log = get_logger(__name__)
# What the term sheet prints as valid_until is what acceptance enforces: one constant.
TERMSHEET_VALIDITY = OFFER_VALIDITY
# Documents render in a process pool: a few in flight keep it busy without hoarding memory.
DOCUMENTS_IN_FLIGHT = 4
DOCUMENT_BATCH = 16

T = TypeVar("T")
R = TypeVar("R")


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
        valid_until=valid_until_for(valued.occurred_at),
        creator_name=creator_name,
    )


def recipient_label(masked: dict[str, str], provider: str) -> str:
    if provider == "STRIPE" and "stripe_account" in masked:
        return f"Stripe account {masked['stripe_account']}"
    if "iban" in masked:
        return f"{masked.get('holder_name', '')} · IBAN {masked['iban']}".strip(" ·")
    return "recipient on file"


def receipt_data(paid: PayoutCompleted, masked: dict[str, str], creator_name: str | None) -> ReceiptData:
    return ReceiptData(
        offer_id=paid.offer_id,
        creator_id=paid.creator_id,
        payout_id=paid.payout_id,
        amount_minor=paid.amount_minor,
        currency=paid.currency,
        provider=paid.provider.value,
        provider_reference=paid.provider_reference or "n/a",
        paid_at=paid.occurred_at,
        recipient_label=recipient_label(masked, paid.provider.value),
        creator_name=creator_name,
    )


def termsheet_issued(valued: OfferValuated, stored: StoredDocument, now: datetime) -> TermsheetGenerated:
    return TermsheetGenerated(
        **caused_by(valued, TermsheetGenerated.TOPIC, now),
        document_key=stored.key,
        sha256=stored.sha256,
        size_bytes=stored.size_bytes,
        advance_minor=valued.median_minor or 0,
        currency=valued.currency,
    )


def receipt_issued(paid: PayoutCompleted, stored: StoredDocument, now: datetime) -> ReceiptGenerated:
    return ReceiptGenerated(
        **caused_by(paid, ReceiptGenerated.TOPIC, now),
        payout_id=paid.payout_id,
        document_key=stored.key,
        sha256=stored.sha256,
        size_bytes=stored.size_bytes,
    )


def wants_termsheet(item: Decoded) -> bool:
    return isinstance(item.event, OfferValuated) and item.event.outcome is ValuationOutcome.VALUED


def wants_receipt(item: Decoded) -> bool:
    return isinstance(item.event, PayoutCompleted) and item.event.status is PayoutStatus.SUCCEEDED


async def _bounded(items: Sequence[T], work: Callable[[T], Awaitable[R]]) -> list[R]:
    gate = asyncio.Semaphore(DOCUMENTS_IN_FLIGHT)

    async def one(item: T) -> R:
        async with gate:
            return await work(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


def register(app: Any) -> None:
    register_termsheets(app)
    register_receipts(app)


def register_termsheets(app: Any) -> None:
    @app.agent(app.lifecycle_topics.of(OfferValuated), name="termsheets", concurrency=1)
    async def termsheets_agent(stream: Any) -> None:
        resources = app.resources

        async def issue(valued: OfferValuated) -> TermsheetGenerated:
            with event_log_context(valued):
                async with resources.engine.connect() as conn:
                    creator = await get_creator(conn, valued.creator_id)
                data = termsheet_data(valued, creator["display_name"] if creator else None)
                stored = await produce_termsheet(resources.documents, data)
                log.info("termsheet_issued", offer_id=valued.offer_id, key=stored.key, created=stored.created)
                return termsheet_issued(valued, stored, datetime.now(UTC))

        async def handle(batch: Sequence[Decoded]) -> None:
            wanted = [item.event for item in batch if wants_termsheet(item)]
            await resources.publisher.publish_many(await _bounded(wanted, issue))

        consumer = Consumer("termsheets", resources, app.settings.topic_namespace)
        await consume_batches(stream, consumer, handle, max_batch=DOCUMENT_BATCH)


def register_receipts(app: Any) -> None:
    @app.agent(app.lifecycle_topics.of(PayoutCompleted), name="receipts", concurrency=1)
    async def receipts_agent(stream: Any) -> None:
        resources = app.resources

        async def issue(paid: PayoutCompleted) -> ReceiptGenerated:
            with event_log_context(paid):
                async with resources.engine.connect() as conn:
                    payout = await get_payout(conn, paid.payout_id)
                    recipient = await get_recipient(conn, payout["recipient_id"]) if payout else None
                    creator = await get_creator(conn, paid.creator_id)
                masked = recipient["masked"] if recipient else {}
                data = receipt_data(paid, masked, creator["display_name"] if creator else None)
                stored = await produce_receipt(resources.documents, data)
                log.info("receipt_issued", offer_id=paid.offer_id, key=stored.key, created=stored.created)
                return receipt_issued(paid, stored, datetime.now(UTC))

        async def handle(batch: Sequence[Decoded]) -> None:
            wanted = [item.event for item in batch if wants_receipt(item)]
            await resources.publisher.publish_many(await _bounded(wanted, issue))

        consumer = Consumer("receipts", resources, app.settings.topic_namespace)
        await consume_batches(stream, consumer, handle, max_batch=DOCUMENT_BATCH)
