"""Business rules for commands on a deal: named checks that raise domain errors.

Pure: each check reads the deal (the projection's row as a mapping) and whatever else the
command names, and either returns or raises. The web layer maps the errors to HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from models.deal import DealStatus
from models.errors import (
    ForeignCreator,
    OfferNotAcceptable,
    OfferNotPayable,
    RecipientCurrencyMismatch,
    RecipientNotOfCreator,
)

Row = Mapping[str, Any]


def already_accepted(deal: Row) -> bool:
    """Accepting twice is not an error: the second accept answers what the first did."""
    return deal["accepted_at"] is not None


def can_accept(deal: Row) -> None:
    """Only a valued offer whose term sheet has been issued can be accepted."""
    if deal["status"] != DealStatus.TERMSHEET_ISSUED.value:
        raise OfferNotAcceptable(deal["status"])


def can_pay_out(deal: Row) -> None:
    """Only an accepted offer can be paid out."""
    if deal["status"] != DealStatus.ACCEPTED.value:
        raise OfferNotPayable(deal["status"])


def can_receive_payout(deal: Row, recipient: Row | None) -> None:
    """The recipient must belong to the offer's creator and take the offer's currency."""
    if recipient is None or recipient["creator_id"] != deal["creator_id"]:
        raise RecipientNotOfCreator()
    if recipient["currency"] != deal["currency"]:
        raise RecipientCurrencyMismatch(recipient["currency"])


def visible_to(scope: str | None, creator_id: str | None) -> bool:
    """Whether a caller confined to creator ``scope`` (None: not confined) may see a record
    of ``creator_id``; one it may not see is answered as not found, never as forbidden."""
    return scope is None or scope == creator_id


def can_act_for(scope: str | None, creator_id: str) -> None:
    """A creator-scoped caller may only act for its own creator."""
    if not visible_to(scope, creator_id):
        raise ForeignCreator()
