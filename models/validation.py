"""Invariants a decoded event must satisfy beyond its Avro shape.

A record can be perfectly valid Avro and still nonsense (an unknown currency, a negative
payout): such a message is dead-lettered rather than folded into a deal.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import fields

from models.errors import InvalidEvent
from models.events import Event, OfferCreated
from models.money import is_known_currency
from models.pricing import month_index

_UUID_FIELDS = ("event_id", "offer_id", "creator_id", "payout_id", "recipient_id")


@functools.cache
def _minor_fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if f.name.endswith("_minor"))


# The form every producer writes; anything else still gets uuid.UUID's full (slower) parse,
# so exactly the same values pass as before.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def validate_event(event: Event) -> Event:
    for name in _UUID_FIELDS:
        value = getattr(event, name, None)
        if value is None or (type(value) is str and _CANONICAL_UUID.fullmatch(value)):
            continue
        try:
            uuid.UUID(str(value))
        except ValueError as exc:
            raise InvalidEvent(f"{name} is not a UUID: {value!r}") from exc
    if event.occurred_at.tzinfo is None:
        raise InvalidEvent("occurred_at must be timezone-aware UTC")
    currency = getattr(event, "currency", None)
    if currency is not None and not is_known_currency(currency):
        raise InvalidEvent(f"unknown currency {currency!r}")
    for name in _minor_fields(type(event)):
        amount = getattr(event, name)
        if amount is not None and amount < 0:
            raise InvalidEvent(f"{name} must not be negative")
    if isinstance(event, OfferCreated):
        for item in event.royalty_history:
            try:
                month_index(item.period)
            except ValueError as exc:
                raise InvalidEvent(str(exc)) from exc
            if item.amount_minor < 0:
                raise InvalidEvent("royalty amounts must not be negative")
    return event
