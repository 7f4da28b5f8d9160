"""The inputs of the documents we issue (term sheet, payout receipt) and their storage keys.

A document's storage key is derived from its inputs alone: the same inputs always give the
same key, so a replayed event finds the document it already produced instead of issuing a
second, different one (docs/ARCHITECTURE.md section 3). Anything that changes what the
document says must therefore be a field here, and nothing else may feed the key.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, fields
from datetime import UTC, datetime

from models.errors import DomainError
from models.money import is_known_currency
from models.pricing import PricingParams

# Ids become S3 key segments: a slash or "..", or a control character, must never get that
# far, so only a conservative alphabet is accepted (UUIDs and provider-style ids fit).
_KEY_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

PAYOUT_PROVIDERS: frozenset[str] = frozenset({"STRIPE", "WISE"})

# Length of the input hash in keys: 64 bits is plenty to tell one offer's documents apart
# while keeping keys readable.
KEY_HASH_CHARS = 16


class InvalidDocument(DomainError):
    """Document inputs that must not be rendered (naive time, unsafe id, inverted range)."""


def _check_key_segment(name: str, value: str) -> None:
    if not isinstance(value, str) or not _KEY_SEGMENT.match(value):
        raise InvalidDocument(f"{name} must be 1-128 characters of [A-Za-z0-9._-], got {value!r}")


def _check_amount(name: str, value: int) -> None:
    # bool is an int subclass; True must not become one cent.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidDocument(f"{name} must be a non-negative integer of minor units, got {value!r}")


def _utc(name: str, value: datetime) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise InvalidDocument(f"{name} must be a timezone-aware datetime, got {value!r}")
    # Normalised so the same instant given in another zone yields the same key and text.
    return value.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class TermsheetData:
    offer_id: str
    creator_id: str
    currency: str
    advance_minor: int  # the median valuation: what we offer to pay
    low_minor: int
    high_minor: int
    median_monthly_royalty_minor: int
    months_considered: int
    model_version: str
    issued_at: datetime
    valid_until: datetime
    # The pricing multiple, shown in the one-sentence explanation of the range. Defaults to
    # the pricing model's so callers that price with default params need not pass it.
    multiple_months: int = PricingParams().multiple_months
    # The creator's display name as registered; the id is printed beside it.
    creator_name: str | None = None

    def __post_init__(self) -> None:
        _check_key_segment("offer_id", self.offer_id)
        if not self.creator_id:
            raise InvalidDocument("creator_id must not be empty")
        if not is_known_currency(self.currency):
            raise InvalidDocument(f"unknown ISO 4217 currency {self.currency!r}")
        for name in ("advance_minor", "low_minor", "high_minor", "median_monthly_royalty_minor"):
            _check_amount(name, getattr(self, name))
        if not self.low_minor <= self.advance_minor <= self.high_minor:
            raise InvalidDocument("the advance must lie within the valuation range (low <= advance <= high)")
        for name in ("months_considered", "multiple_months"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidDocument(f"{name} must be a positive integer, got {value!r}")
        object.__setattr__(self, "issued_at", _utc("issued_at", self.issued_at))
        object.__setattr__(self, "valid_until", _utc("valid_until", self.valid_until))
        if self.valid_until <= self.issued_at:
            raise InvalidDocument("valid_until must be after issued_at")


@dataclass(frozen=True, slots=True)
class ReceiptData:
    offer_id: str
    creator_id: str
    payout_id: str
    amount_minor: int
    currency: str
    provider: str  # "STRIPE" or "WISE" (a PayoutProvider member is accepted too)
    provider_reference: str
    paid_at: datetime
    # Already masked upstream (e.g. "IBAN •••• 3000"): full payout details never reach a
    # document, because a PDF is copied, mailed and kept far beyond our control.
    recipient_label: str
    creator_name: str | None = None

    def __post_init__(self) -> None:
        _check_key_segment("offer_id", self.offer_id)
        _check_key_segment("payout_id", self.payout_id)
        if not self.creator_id:
            raise InvalidDocument("creator_id must not be empty")
        _check_amount("amount_minor", self.amount_minor)
        if not is_known_currency(self.currency):
            raise InvalidDocument(f"unknown ISO 4217 currency {self.currency!r}")
        # str() turns a StrEnum member into its plain value, so the hash never sees an enum.
        provider = str(self.provider)
        if provider not in PAYOUT_PROVIDERS:
            raise InvalidDocument(f"provider must be one of {sorted(PAYOUT_PROVIDERS)}, got {provider!r}")
        object.__setattr__(self, "provider", provider)
        if not self.provider_reference:
            raise InvalidDocument("provider_reference must not be empty")
        if not self.recipient_label:
            raise InvalidDocument("recipient_label must not be empty")
        object.__setattr__(self, "paid_at", _utc("paid_at", self.paid_at))


def _jsonable(value: object) -> object:
    if isinstance(value, datetime):
        # Microseconds kept: two inputs that differ only there are still different inputs.
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return value


def canonical_json(data: TermsheetData | ReceiptData) -> str:
    """One spelling of the inputs: sorted keys, no whitespace, ASCII, UTC times."""
    payload = {f.name: _jsonable(getattr(data, f.name)) for f in fields(data)}
    payload["document"] = "termsheet" if isinstance(data, TermsheetData) else "receipt"
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def fingerprint(data: TermsheetData | ReceiptData) -> str:
    """SHA-256 (hex) of the canonical inputs; printed on the document and used in its key."""
    return hashlib.sha256(canonical_json(data).encode("ascii")).hexdigest()


def termsheet_key(data: TermsheetData) -> str:
    return f"termsheets/{data.offer_id}/{fingerprint(data)[:KEY_HASH_CHARS]}.pdf"


def receipt_key(data: ReceiptData) -> str:
    return f"receipts/{data.offer_id}/{data.payout_id}-{fingerprint(data)[:KEY_HASH_CHARS]}.pdf"
