"""The double-entry ledger's domain: accounts, entries, postings and the posting rules.

A posting is one business fact (a payout succeeded) written as entries that balance per
currency: money never appears or disappears, it only moves between accounts. Amounts are
positive minor units and the direction says which side they sit on, so a sign can never be
lost in a sum. Each posting carries a reference id derived from the fact it records: posting
the same fact twice (a redelivered event) hits a unique constraint instead of doubling money.

Pure: no clock, no uuid generation. The database enforces the same rules again
(see ``migrations/versions/0003_ledger.py``); this module lets callers fail early and
clearly.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from models.errors import DomainError
from models.money import is_known_currency


class InvalidPosting(DomainError):
    """A posting the ledger must not accept (bad amount, account, currency, time...)."""


class UnbalancedPosting(InvalidPosting):
    """Debits and credits differ in at least one currency."""


class Direction(enum.StrEnum):
    DEBIT = "DEBIT"
    CREDIT = "CREDIT"

    @property
    def sign(self) -> int:
        # Debit-positive is the usual convention for asset accounts, and all we need for
        # "does it sum to zero"; liability balances simply show as negative numbers.
        return 1 if self is Direction.DEBIT else -1


class TransactionType(enum.StrEnum):
    PAYOUT = "payout"
    PAYOUT_REVERSAL = "payout_reversal"


# Accounts are plain strings "<kind>" or "<kind>:<qualifier>", so a new provider or creator
# needs no schema change. The same pattern is a CHECK constraint in the database.
ACCOUNT_PATTERN: Final = r"^[a-z][a-z0-9_]*(:[A-Za-z0-9_.-]+)?$"
_ACCOUNT_RE: Final = re.compile(ACCOUNT_PATTERN)

# Asset: advances paid out that we expect to recover from the creator's future royalties.
# One control account; the per-offer breakdown comes from the entries' offer_id.
CREATOR_ADVANCES_RECEIVABLE: Final = "creator_advances_receivable"
# Asset: money we hold at a payment provider (Stripe balance, Wise balance).
PLATFORM_CASH: Final = "platform_cash"
# Liability: money owed to a creator and not yet paid out (for future royalty splits).
CREATOR_PAYABLE: Final = "creator_payable"


def platform_cash(provider: str) -> str:
    """``platform_cash:stripe``: the provider balance a payout is drawn from."""
    name = provider.strip().lower()
    if not name or name == "none":
        raise InvalidPosting(f"no cash account for provider {provider!r}")
    return f"{PLATFORM_CASH}:{name}"


def creator_payable(creator_id: str) -> str:
    return f"{CREATOR_PAYABLE}:{_uuid(creator_id, 'creator_id')}"


def is_valid_account(account: str) -> bool:
    return bool(_ACCOUNT_RE.match(account))


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    account: str
    direction: Direction
    amount_minor: int
    currency: str

    @property
    def signed_minor(self) -> int:
        return self.direction.sign * self.amount_minor


@dataclass(frozen=True, slots=True)
class Posting:
    reference_id: str
    offer_id: str | None
    transaction_type: str
    occurred_at: datetime
    entries: tuple[LedgerEntry, ...]
    description: str = ""


def validate_posting(posting: Posting) -> Posting:
    """Return the posting unchanged, or raise ``InvalidPosting`` / ``UnbalancedPosting``."""
    if not posting.reference_id or posting.reference_id != posting.reference_id.strip():
        raise InvalidPosting(f"reference_id must be a non-empty trimmed string, got {posting.reference_id!r}")
    if not posting.transaction_type:
        raise InvalidPosting("transaction_type must not be empty")
    if posting.offer_id is not None:
        _uuid(posting.offer_id, "offer_id")
    if not isinstance(posting.occurred_at, datetime) or posting.occurred_at.utcoffset() is None:
        # A naive time means "local time of whichever machine": ambiguous forever once stored.
        raise InvalidPosting("occurred_at must be a timezone-aware datetime")
    if not isinstance(posting.entries, tuple):
        raise InvalidPosting("entries must be a tuple")
    if len(posting.entries) < 2:
        raise InvalidPosting(f"a posting needs at least two entries, got {len(posting.entries)}")
    for entry in posting.entries:
        _validate_entry(entry)
    totals: dict[str, int] = defaultdict(int)
    for entry in posting.entries:
        totals[entry.currency] += entry.signed_minor
    unbalanced = {currency: total for currency, total in sorted(totals.items()) if total != 0}
    if unbalanced:
        detail = ", ".join(f"{currency} debits-credits={total}" for currency, total in unbalanced.items())
        raise UnbalancedPosting(f"posting {posting.reference_id} is unbalanced: {detail}")
    return posting


def _validate_entry(entry: LedgerEntry) -> None:
    if not isinstance(entry, LedgerEntry):
        raise InvalidPosting(f"not a ledger entry: {entry!r}")
    if not isinstance(entry.account, str) or not is_valid_account(entry.account):
        raise InvalidPosting(f"invalid account name {entry.account!r}")
    if not isinstance(entry.direction, Direction):
        raise InvalidPosting(f"direction must be DEBIT or CREDIT, got {entry.direction!r}")
    # bool is an int subclass; True must not become one cent.
    if not isinstance(entry.amount_minor, int) or isinstance(entry.amount_minor, bool):
        raise InvalidPosting(f"amount_minor must be an integer, got {type(entry.amount_minor).__name__}")
    if entry.amount_minor <= 0:
        raise InvalidPosting(
            f"amount_minor must be positive (the direction carries the sign), got {entry.amount_minor}"
        )
    if not is_known_currency(entry.currency):
        raise InvalidPosting(f"unknown ISO 4217 currency {entry.currency!r}")


def balances(entries: Iterable[LedgerEntry]) -> dict[tuple[str, str], int]:
    """Debit-positive balance per (account, currency); a balanced set sums to 0 per currency."""
    out: dict[tuple[str, str], int] = defaultdict(int)
    for entry in entries:
        out[(entry.account, entry.currency)] += entry.signed_minor
    return dict(out)


def payout_reference(payout_id: str) -> str:
    """One payout can succeed once, so its id alone makes the posting unique."""
    return f"payout:{_uuid(payout_id, 'payout_id')}"


def payout_posting(
    *,
    payout_id: str,
    offer_id: str,
    creator_id: str,
    amount_minor: int,
    currency: str,
    provider: str,
    provider_reference: str | None,
    occurred_at: datetime,
) -> Posting:
    """A SUCCESSFUL payout: the advance left our provider balance and is now owed back to us.

    Debit ``creator_advances_receivable`` (the asset grows), credit
    ``platform_cash:<provider>`` (the asset shrinks). Failed payouts move no money and
    must not be posted.
    """
    creator = _uuid(creator_id, "creator_id")
    via = f" via {provider.strip().lower()}"
    ref = f" ({provider_reference})" if provider_reference else ""
    posting = Posting(
        reference_id=payout_reference(payout_id),
        offer_id=_uuid(offer_id, "offer_id"),
        transaction_type=TransactionType.PAYOUT.value,
        occurred_at=occurred_at,
        entries=(
            LedgerEntry(CREATOR_ADVANCES_RECEIVABLE, Direction.DEBIT, amount_minor, currency),
            LedgerEntry(platform_cash(provider), Direction.CREDIT, amount_minor, currency),
        ),
        description=f"advance paid to creator {creator}{via}{ref}",
    )
    return validate_posting(posting)


PAYOUT_REVERSAL_PREFIX: Final = "payout-reversal:"


def payout_reversals_prefix(payout_id: str) -> str:
    """What every reversing posting of this payout's reference starts with:
    ``payout-reversal:<payout_id>:`` (the colon ends the id, so no other payout matches)."""
    return f"{PAYOUT_REVERSAL_PREFIX}{_uuid(payout_id, 'payout_id')}:"


def payout_reversal_reference(payout_id: str, total_minor: int) -> str:
    """``payout-reversal:<payout_id>:<total_minor>``: the posting that brings what the payout
    has had reversed up to ``total_minor`` (cumulative, like Stripe's ``amount_reversed``).
    The same total posts once (a redelivered reversal); a later, larger total is a new
    posting of the difference (see :func:`payout_reversal_posting`)."""
    _positive(total_minor, "reversed_total_minor")
    return f"{payout_reversals_prefix(payout_id)}{total_minor}"


def payout_reversal_posting(
    *,
    payout_id: str,
    offer_id: str,
    creator_id: str,
    amount_minor: int,
    reversed_total_minor: int,
    currency: str,
    provider: str,
    provider_reference: str,
    reason: str,
    occurred_at: datetime,
) -> Posting:
    """A paid payout came back (all of it, or a part Stripe reversed): the mirror of
    :func:`payout_posting`. Debit ``platform_cash:<provider>`` (the money is back in our
    provider balance), credit ``creator_advances_receivable`` (the creator no longer owes it).

    ``reversed_total_minor`` is what the provider says has been reversed so far, all reversals
    of the transfer together; ``amount_minor`` is the increment this posting adds: that total
    minus what earlier reversing postings of the payout already posted (the caller sums them,
    ``state.ledger.payout_reversed_minor``). So ``0 < amount_minor <= reversed_total_minor``,
    and the reference names the total (:func:`payout_reversal_reference`). The original
    posting stays: the ledger is append-only, a correction is a new posting."""
    _positive(amount_minor, "amount_minor")
    if amount_minor > _positive(reversed_total_minor, "reversed_total_minor"):
        raise InvalidPosting(f"a reversal's increment {amount_minor} exceeds the total reversed {reversed_total_minor}")
    creator = _uuid(creator_id, "creator_id")
    so_far = "" if amount_minor == reversed_total_minor else f", {reversed_total_minor} reversed in all"
    posting = Posting(
        reference_id=payout_reversal_reference(payout_id, reversed_total_minor),
        offer_id=_uuid(offer_id, "offer_id"),
        transaction_type=TransactionType.PAYOUT_REVERSAL.value,
        occurred_at=occurred_at,
        entries=(
            LedgerEntry(platform_cash(provider), Direction.DEBIT, amount_minor, currency),
            LedgerEntry(CREATOR_ADVANCES_RECEIVABLE, Direction.CREDIT, amount_minor, currency),
        ),
        description=(
            f"reverses {payout_reference(payout_id)} to creator {creator} ({provider_reference}, {reason}{so_far})"
        ),
    )
    return validate_posting(posting)


def _positive(value: int, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise InvalidPosting(f"{name} must be a positive integer (minor units): {value!r}")
    return value


def _uuid(value: str, name: str) -> str:
    """The canonical (lower-case, hyphenated) form, so equal ids give equal references."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError as exc:
        raise InvalidPosting(f"{name} is not a UUID: {value!r}") from exc
