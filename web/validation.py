"""Request validation for the offers API: explicit, field by field, no coercion.

Money must be an integer count of minor units (no floats, no strings, no booleans, no
negatives); currencies must be ISO 4217 codes we know; ids must be UUIDs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from models.events import RoyaltyPeriod
from models.money import is_known_currency
from models.pricing import month_index
from web.errors import ValidationFailed

MAX_HISTORY_MONTHS = 600
MAX_AMOUNT_MINOR = 10**15


@dataclass(frozen=True)
class OfferRequest:
    creator_id: str
    currency: str
    royalty_history: tuple[RoyaltyPeriod, ...]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_uuid(value: Any, field: str, problems: list[dict[str, str]]) -> str | None:
    if not isinstance(value, str):
        problems.append({"field": field, "problem": "is required and must be a UUID string"})
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        problems.append({"field": field, "problem": "must be a UUID"})
        return None


def parse_currency(value: Any, field: str, problems: list[dict[str, str]]) -> str | None:
    if not isinstance(value, str) or not is_known_currency(value):
        problems.append({"field": field, "problem": "must be a known ISO 4217 currency code, e.g. EUR"})
        return None
    return value


def parse_amount_minor(value: Any, field: str, problems: list[dict[str, str]]) -> int | None:
    if not _is_int(value):
        problems.append({"field": field, "problem": "must be an integer number of minor units (no floats or strings)"})
        return None
    if value < 0:
        problems.append({"field": field, "problem": "must not be negative"})
        return None
    if value > MAX_AMOUNT_MINOR:
        problems.append({"field": field, "problem": f"must be at most {MAX_AMOUNT_MINOR}"})
        return None
    return value


def parse_royalty_history(raw: Any, problems: list[dict[str, str]]) -> tuple[RoyaltyPeriod, ...]:
    """A list of ``{period: "YYYY-MM", amount_minor: int}``, each month at most once.

    Shared by POST /offers and POST /calculator so a history the calculator prices is exactly
    one the offers API accepts. Problems are appended (field names as the client sent them);
    the returned tuple holds only the valid entries and is meaningless if problems were added.
    """
    if not isinstance(raw, list):
        problems.append(
            {"field": "royalty_history", "problem": "is required and must be a list of {period, amount_minor}"}
        )
        return ()
    if len(raw) > MAX_HISTORY_MONTHS:
        problems.append({"field": "royalty_history", "problem": f"must have at most {MAX_HISTORY_MONTHS} entries"})
        return ()
    history: list[RoyaltyPeriod] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        where = f"royalty_history[{i}]"
        if not isinstance(item, dict):
            problems.append({"field": where, "problem": "must be an object {period, amount_minor}"})
            continue
        period = item.get("period")
        if not isinstance(period, str):
            problems.append({"field": f"{where}.period", "problem": "is required and must be a YYYY-MM string"})
            period = None
        else:
            try:
                month_index(period)
            except ValueError:
                problems.append({"field": f"{where}.period", "problem": "must be a calendar month YYYY-MM"})
                period = None
        if period is not None and period in seen:
            problems.append({"field": f"{where}.period", "problem": f"duplicate month {period}"})
        amount = parse_amount_minor(item.get("amount_minor"), f"{where}.amount_minor", problems)
        if period is not None and amount is not None:
            seen.add(period)
            history.append(RoyaltyPeriod(period=period, amount_minor=amount))
    return tuple(history)


def parse_offer_request(body: Any) -> OfferRequest:
    if not isinstance(body, dict):
        raise ValidationFailed([{"field": "body", "problem": "must be a JSON object"}])
    problems: list[dict[str, str]] = []
    creator_id = parse_uuid(body.get("creator_id"), "creator_id", problems)
    currency = parse_currency(body.get("currency"), "currency", problems)
    history = parse_royalty_history(body.get("royalty_history"), problems)
    unknown = sorted(set(body) - {"creator_id", "currency", "royalty_history"})
    for name in unknown:
        problems.append({"field": name, "problem": "is not a known field"})
    if problems:
        raise ValidationFailed(problems)
    assert creator_id is not None and currency is not None
    return OfferRequest(creator_id=creator_id, currency=currency, royalty_history=history)
