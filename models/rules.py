"""Business rules for commands on a deal: named checks that raise domain errors.

Pure: each check reads the deal (the projection's row as a mapping) and whatever else the
command names, and either returns or raises. The web layer maps the errors to HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from models.deal import OPEN_STATUSES, DealStatus
from models.errors import (
    ForeignCreator,
    OfferClosed,
    OfferLapsed,
    OfferNotAcceptable,
    OfferNotPayable,
    RecipientCurrencyMismatch,
    RecipientNotOfCreator,
)
from models.offers import has_lapsed

Row = Mapping[str, Any]


def already_accepted(deal: Row) -> bool:
    """Accepting twice is not an error: the second accept answers what the first did."""
    # An acceptance that lost to an earlier decline or withdrawal is not one to answer with.
    return deal["accepted_at"] is not None and deal["status"] not in (DealStatus.DECLINED, DealStatus.WITHDRAWN)


def _not_lapsed(deal: Row, now: datetime) -> None:
    """A lapsed offer, or one past ``valid_until`` the sweeper has not reached yet, is refused
    the same way: the sweeper's lag must not extend the offer."""
    if deal["status"] == DealStatus.LAPSED or (
        deal["status"] == DealStatus.TERMSHEET_ISSUED and has_lapsed(_instant(deal.get("valid_until")), now)
    ):
        raise OfferLapsed(deal.get("valid_until"))


def can_accept(deal: Row, now: datetime) -> None:
    """Only a valued offer whose term sheet has been issued, and only until its valid_until."""
    _not_lapsed(deal, now)
    if deal["status"] != DealStatus.TERMSHEET_ISSUED.value:
        raise OfferNotAcceptable(deal["status"])


def already_declined(deal: Row) -> bool:
    return deal["status"] == DealStatus.DECLINED


def already_withdrawn(deal: Row) -> bool:
    return deal["status"] == DealStatus.WITHDRAWN


def can_decline(deal: Row, now: datetime) -> None:
    """An open offer (not accepted, declined, withdrawn or lapsed) can be declined."""
    _not_lapsed(deal, now)
    if deal["status"] not in OPEN_STATUSES:
        raise OfferClosed(deal["status"], "declined")


def can_withdraw(deal: Row, now: datetime) -> None:
    """An open offer can be withdrawn; once accepted the creator holds us to it."""
    _not_lapsed(deal, now)
    if deal["status"] not in OPEN_STATUSES:
        raise OfferClosed(deal["status"], "withdrawn")


def _instant(value: object) -> datetime | None:
    """valid_until as a datetime: a projection row holds one, its JSON form an ISO string."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


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
