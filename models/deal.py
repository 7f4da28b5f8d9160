"""A deal's state, folded from its events.

Events of one offer arrive on several topics, and a consumer may see those topics in any
interleaving (catch-up after downtime, rebalances). So the fold records facts, each event
filling its own fields, and the status is *derived* from the facts present: applying the
same events in any order gives the same deal, and the projector applies each event id once (its history table is the guard).
Where one kind of fact may be reported twice, a fixed rule picks one (the latest payout
request, the earliest decline), never the arrival order.

Closing an open offer: the first of accepted / withdrawn / declined (by their times) is
what happened; a lapse counts only when none of them did (the commands refuse them after
``valid_until``, so one recorded beside a lapse happened in time). A payout requested or
paid outranks all of them: money already moving is the deal's truth.
The projector, the rebuild and `spacemusic deal --as-of` all use these functions.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime

from models.events import (
    Event,
    OfferAccepted,
    OfferCreated,
    OfferDeclined,
    OfferLapsed,
    OfferValuated,
    OfferWithdrawn,
    PayoutCompleted,
    PayoutRequested,
    PayoutReversed,
    PayoutStatus,
    ReceiptGenerated,
    TermsheetGenerated,
    ValuationOutcome,
)
from models.offers import valid_until_for


class DealStatus(enum.StrEnum):
    CREATED = "created"
    VALUED = "valued"
    VALUATION_FAILED = "valuation_failed"
    TERMSHEET_ISSUED = "termsheet_issued"
    ACCEPTED = "accepted"
    PAYOUT_REQUESTED = "payout_requested"
    PAID = "paid"
    PAYOUT_FAILED = "payout_failed"
    PAYOUT_REVERSED = "payout_reversed"  # paid, then reversed or bounced at the provider
    DECLINED = "declined"
    WITHDRAWN = "withdrawn"
    LAPSED = "lapsed"


# An offer in one of these may still be accepted, declined or withdrawn.
OPEN_STATUSES = frozenset({DealStatus.CREATED, DealStatus.VALUED, DealStatus.TERMSHEET_ISSUED})


@dataclass(frozen=True, slots=True)
class Deal:
    offer_id: str
    creator_id: str
    currency: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    royalty_months: int | None = None
    royalty_total_minor: int | None = None
    valuation_outcome: str | None = None
    valuation_low_minor: int | None = None
    valuation_median_minor: int | None = None
    valuation_high_minor: int | None = None
    valuation_failure_reason: str | None = None
    valuation_model: str | None = None
    valued_at: datetime | None = None
    termsheet_key: str | None = None
    termsheet_sha256: str | None = None
    accepted_at: datetime | None = None
    advance_minor: int | None = None
    payout_id: str | None = None
    recipient_id: str | None = None
    payout_requested_at: datetime | None = None
    payout_status: str | None = None
    payout_provider: str | None = None
    payout_reference: str | None = None
    paid_amount_minor: int | None = None
    payout_failure_reason: str | None = None
    payout_completed_at: datetime | None = None
    # The provider took a paid payout back (Stripe reversal, Wise bounce): when, how much, why.
    payout_reversed_at: datetime | None = None
    payout_reversed_amount_minor: int | None = None
    payout_reversal_reason: str | None = None
    receipt_key: str | None = None
    receipt_sha256: str | None = None
    # Derived, not reported: the term sheet's date (the valuation's time) plus OFFER_VALIDITY,
    # set once a term sheet exists; exactly what the PDF prints.
    valid_until: datetime | None = None
    declined_at: datetime | None = None
    declined_by: str | None = None
    decline_reason: str | None = None
    withdrawn_at: datetime | None = None
    withdrawn_by: str | None = None
    withdraw_reason: str | None = None
    lapsed_at: datetime | None = None
    event_count: int = 0

    @property
    def status(self) -> DealStatus:
        return derive_status(self)


def derive_status(deal: Deal) -> DealStatus:
    """The furthest lifecycle stage the recorded facts prove."""
    if deal.payout_reversed_at is not None:
        # Only a paid payout can be reversed, so the fact alone proves it (whichever arrived first).
        return DealStatus.PAYOUT_REVERSED
    if deal.payout_status == PayoutStatus.SUCCEEDED.value:
        return DealStatus.PAID
    if deal.payout_status == PayoutStatus.FAILED.value and (
        deal.payout_requested_at is None
        or deal.payout_completed_at is None
        or deal.payout_completed_at >= deal.payout_requested_at
    ):
        return DealStatus.PAYOUT_FAILED
    if deal.payout_requested_at is not None:
        return DealStatus.PAYOUT_REQUESTED
    closed = _first_decision(deal)
    if closed is not None:
        return closed
    if deal.lapsed_at is not None:
        return DealStatus.LAPSED
    if deal.termsheet_key is not None:
        return DealStatus.TERMSHEET_ISSUED
    if deal.valuation_outcome == ValuationOutcome.VALUED.value:
        return DealStatus.VALUED
    if deal.valuation_outcome == ValuationOutcome.FAILED.value:
        return DealStatus.VALUATION_FAILED
    return DealStatus.CREATED


def _first_decision(deal: Deal) -> DealStatus | None:
    """The earliest of acceptance, withdrawal and decline; on a tie in that order."""
    if deal.accepted_at is None and deal.withdrawn_at is None and deal.declined_at is None:
        return None  # most deals, most of the time: every fold asks
    decisions = [
        (at, rank, status)
        for rank, (at, status) in enumerate(
            (
                (deal.accepted_at, DealStatus.ACCEPTED),
                (deal.withdrawn_at, DealStatus.WITHDRAWN),
                (deal.declined_at, DealStatus.DECLINED),
            )
        )
        if at is not None
    ]
    return min(decisions)[2] if decisions else None


def _valid_until(termsheet_key: str | None, valued_at: datetime | None) -> datetime | None:
    if termsheet_key is None or valued_at is None:
        return None
    return valid_until_for(valued_at)


def _earlier(current: tuple[object, ...] | None, candidate: tuple[object, ...]) -> bool:
    """Whether ``candidate`` (time first, then the text fields) sorts before what is recorded."""
    return current is None or candidate < current


def _later(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None or candidate > current else current


def apply_event(deal: Deal | None, event: Event) -> Deal:
    """Fold one event into a deal (None for a deal not seen yet)."""
    base = deal or Deal(offer_id=event.offer_id, creator_id=event.creator_id)
    changes = _facts(base, event)
    changes["updated_at"] = _later(base.updated_at, event.occurred_at)
    changes["event_count"] = base.event_count + 1
    # A function of other facts, recomputed on every event: arrival order cannot change it.
    # Computed from the merged facts so the deal is built once (the fold's hot path).
    changes["valid_until"] = _valid_until(
        changes.get("termsheet_key", base.termsheet_key),  # type: ignore[arg-type]
        changes.get("valued_at", base.valued_at),  # type: ignore[arg-type]
    )
    return replace(base, **changes)


def fold(events: list[Event] | tuple[Event, ...], as_of: datetime | None = None) -> Deal | None:
    """A deal from its events, optionally only those that had happened by ``as_of``."""
    deal: Deal | None = None
    for event in sorted(events, key=lambda e: (e.occurred_at, e.event_id)):
        if as_of is not None and event.occurred_at > as_of:
            continue
        deal = apply_event(deal, event)
    return deal


def _facts(deal: Deal, event: Event) -> dict[str, object]:
    if isinstance(event, OfferCreated):
        return {
            "currency": event.currency,
            "created_at": event.occurred_at,
            "royalty_months": len(event.royalty_history),
            "royalty_total_minor": sum(p.amount_minor for p in event.royalty_history),
        }
    if isinstance(event, OfferValuated):
        return {
            "currency": deal.currency or event.currency,
            "valuation_outcome": event.outcome.value,
            "valuation_low_minor": event.low_minor,
            "valuation_median_minor": event.median_minor,
            "valuation_high_minor": event.high_minor,
            "valuation_failure_reason": event.failure_reason,
            "valuation_model": event.model_version,
            "valued_at": event.occurred_at,
        }
    if isinstance(event, TermsheetGenerated):
        return {"termsheet_key": event.document_key, "termsheet_sha256": event.sha256}
    if isinstance(event, OfferAccepted):
        return {"accepted_at": event.occurred_at, "advance_minor": event.advance_minor}
    if isinstance(event, PayoutRequested):
        if deal.payout_requested_at is not None and deal.payout_requested_at > event.occurred_at:
            return {}
        return {
            "payout_id": event.payout_id,
            "recipient_id": event.recipient_id,
            "payout_requested_at": event.occurred_at,
        }
    if isinstance(event, PayoutCompleted):
        if deal.payout_completed_at is not None and deal.payout_completed_at > event.occurred_at:
            return {}
        if deal.payout_status == PayoutStatus.SUCCEEDED.value:
            return {}  # a success is final; a late failure report cannot undo it
        return {
            "payout_id": event.payout_id,
            "payout_status": event.status.value,
            "payout_provider": event.provider.value,
            "payout_reference": event.provider_reference,
            "paid_amount_minor": event.amount_minor if event.status is PayoutStatus.SUCCEEDED else None,
            "payout_failure_reason": event.failure_reason,
            "payout_completed_at": event.occurred_at,
        }
    if isinstance(event, PayoutReversed):
        # Reported twice (a later, larger partial reversal): the latest one stands. Its amount
        # is cumulative (the total reversed so far), so that is the payout's total reversed.
        recorded = (
            None
            if deal.payout_reversed_at is None
            else (deal.payout_reversed_at, deal.payout_reversed_amount_minor or 0, deal.payout_reversal_reason or "")
        )
        if recorded is not None and recorded >= (event.occurred_at, event.amount_minor, event.reason):
            return {}
        return {
            "payout_reversed_at": event.occurred_at,
            "payout_reversed_amount_minor": event.amount_minor,
            "payout_reversal_reason": event.reason,
        }
    if isinstance(event, ReceiptGenerated):
        return {"receipt_key": event.document_key, "receipt_sha256": event.sha256}
    if isinstance(event, OfferDeclined):
        recorded = (
            None if deal.declined_at is None else (deal.declined_at, deal.declined_by or "", deal.decline_reason or "")
        )
        if not _earlier(recorded, (event.occurred_at, event.declined_by, event.reason or "")):
            return {}
        return {"declined_at": event.occurred_at, "declined_by": event.declined_by, "decline_reason": event.reason}
    if isinstance(event, OfferWithdrawn):
        recorded = (
            None
            if deal.withdrawn_at is None
            else (deal.withdrawn_at, deal.withdrawn_by or "", deal.withdraw_reason or "")
        )
        if not _earlier(recorded, (event.occurred_at, event.withdrawn_by, event.reason or "")):
            return {}
        return {"withdrawn_at": event.occurred_at, "withdrawn_by": event.withdrawn_by, "withdraw_reason": event.reason}
    if isinstance(event, OfferLapsed):
        if deal.lapsed_at is not None and deal.lapsed_at <= event.occurred_at:
            return {}
        return {"lapsed_at": event.occurred_at}
    return {}
