"""The offer lifecycle as immutable, past-tense events.

Every event carries the same envelope (ids, time, correlation) and is published to its own
topic, keyed by ``offer_id`` so one offer's events stay ordered within a partition. The
topic name doubles as the Avro schema's file name and registry subject stem.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar


class ValuationOutcome(enum.StrEnum):
    VALUED = "VALUED"
    FAILED = "FAILED"


class PayoutStatus(enum.StrEnum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class PayoutProvider(enum.StrEnum):
    STRIPE = "STRIPE"
    WISE = "WISE"
    NONE = "NONE"


@dataclass(frozen=True, kw_only=True, slots=True)
class Event:
    """The envelope every lifecycle event shares."""

    TOPIC: ClassVar[str] = ""

    event_id: str
    offer_id: str
    creator_id: str
    occurred_at: datetime
    correlation_id: str
    causation_id: str | None = None

    @property
    def event_type(self) -> str:
        return self.TOPIC


@dataclass(frozen=True, slots=True)
class RoyaltyPeriod:
    period: str  # calendar month, "YYYY-MM"
    amount_minor: int


@dataclass(frozen=True, kw_only=True, slots=True)
class OfferCreated(Event):
    TOPIC: ClassVar[str] = "offer.created"

    currency: str
    royalty_history: tuple[RoyaltyPeriod, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class OfferValuated(Event):
    TOPIC: ClassVar[str] = "offer.valuated"

    outcome: ValuationOutcome
    currency: str
    model_version: str
    low_minor: int | None = None
    median_minor: int | None = None
    high_minor: int | None = None
    median_monthly_royalty_minor: int | None = None
    months_considered: int = 0
    failure_reason: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class TermsheetGenerated(Event):
    TOPIC: ClassVar[str] = "offer.termsheet.generated"

    document_key: str
    sha256: str
    size_bytes: int
    advance_minor: int
    currency: str


@dataclass(frozen=True, kw_only=True, slots=True)
class OfferAccepted(Event):
    TOPIC: ClassVar[str] = "offer.accepted"

    advance_minor: int
    currency: str
    termsheet_sha256: str
    accepted_by: str


@dataclass(frozen=True, kw_only=True, slots=True)
class PayoutRequested(Event):
    TOPIC: ClassVar[str] = "offer.payout.requested"

    payout_id: str
    recipient_id: str
    amount_minor: int
    currency: str
    requested_by: str
    # An operator's retry of a failed payout names the payout it retries (None: the first).
    retry_of: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class PayoutCompleted(Event):
    TOPIC: ClassVar[str] = "offer.payout.completed"

    payout_id: str
    status: PayoutStatus
    provider: PayoutProvider
    amount_minor: int
    currency: str
    provider_reference: str | None = None
    failure_reason: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class PayoutCancelRequested(Event):
    """An operator asked to cancel a parked payout; the payouts agent decides (it alone may
    ask the provider whether anything moved)."""

    TOPIC: ClassVar[str] = "offer.payout.cancel.requested"

    payout_id: str
    requested_by: str  # the principal's subject


@dataclass(frozen=True, kw_only=True, slots=True)
class PayoutCancelRefused(Event):
    """The payouts agent did not cancel: the provider shows money moved, the payout ended
    meanwhile, or the settle window is still open. (A cancel that succeeds is the
    ``offer.payout.completed`` FAILED naming who cancelled.)"""

    TOPIC: ClassVar[str] = "offer.payout.cancel.refused"

    payout_id: str
    requested_by: str
    reason: str


@dataclass(frozen=True, kw_only=True, slots=True)
class PayoutReversed(Event):
    """A payout counted as paid came back: Stripe reversed the transfer, all or part of it, or
    Wise's transfer bounced / was refunded or cancelled.

    ``amount_minor`` is the TOTAL reversed so far, not this reversal's part: Stripe's
    cumulative ``amount_reversed`` (a second partial reversal reports both parts together),
    for Wise the whole payout. One event per (payout, total)
    (``models.reversal.reversal_event_id``): a redelivery is the same event, a larger total
    a new one. Published by the web app from a verified provider webhook; the payouts agent
    posts the increment over what earlier reversals of the payout already posted."""

    TOPIC: ClassVar[str] = "offer.payout.reversed"

    payout_id: str
    provider: PayoutProvider
    provider_reference: str
    amount_minor: int
    currency: str
    reason: str  # a machine code, e.g. stripe_transfer_reversed, wise_bounced_back
    provider_event_id: str  # the webhook's identity at the provider (dedup key)


@dataclass(frozen=True, kw_only=True, slots=True)
class ReceiptGenerated(Event):
    TOPIC: ClassVar[str] = "offer.receipt.generated"

    payout_id: str
    document_key: str
    sha256: str
    size_bytes: int


@dataclass(frozen=True, kw_only=True, slots=True)
class OfferDeclined(Event):
    TOPIC: ClassVar[str] = "offer.declined"

    declined_by: str  # the principal's subject (the creator's user, or an operator)
    reason: str | None = None  # a short note, at most models.offers.MAX_REASON_CHARS


@dataclass(frozen=True, kw_only=True, slots=True)
class OfferWithdrawn(Event):
    TOPIC: ClassVar[str] = "offer.withdrawn"

    withdrawn_by: str  # the operator's subject
    reason: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class OfferLapsed(Event):
    TOPIC: ClassVar[str] = "offer.lapsed"

    valid_until: datetime  # the instant the offer stood until, as its term sheet printed it


LIFECYCLE_EVENTS: tuple[type[Event], ...] = (
    OfferCreated,
    OfferValuated,
    TermsheetGenerated,
    OfferAccepted,
    PayoutRequested,
    PayoutCompleted,
    PayoutReversed,
    PayoutCancelRequested,
    PayoutCancelRefused,
    ReceiptGenerated,
    OfferDeclined,
    OfferWithdrawn,
    OfferLapsed,
)

EVENT_BY_TOPIC: dict[str, type[Event]] = {cls.TOPIC: cls for cls in LIFECYCLE_EVENTS}

DEADLETTER_TOPIC = "offer.deadletter"


@dataclass(frozen=True, kw_only=True, slots=True)
class DeadLetter:
    """A message a consumer could not decode or validate, parked with its origin."""

    TOPIC: ClassVar[str] = DEADLETTER_TOPIC

    dead_letter_id: str
    consumer: str
    original_topic: str
    original_partition: int
    original_offset: int
    original_key: bytes | None
    original_value: bytes | None
    error_type: str
    error: str
    failed_at: datetime
