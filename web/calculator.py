"""POST /calculator: an instant, non-binding price for a royalty history.

The same pure ``value_catalog`` the valuation agent runs, so a quote matches the offer the
pipeline will make for the same history. Flag ``calculator-v2-range`` decides the answer's
shape: v1 is one advance amount (the median valuation), v2 the low / median / high range.
A history that cannot be priced answers 200 with ``priceable: false`` and the reason: the
request was well-formed, the catalog simply has no price yet (422 is kept for bad input).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from infra.flags import FeatureFlags, FlagContext, flags_from_settings
from infra.logging import get_logger
from models.events import RoyaltyPeriod
from models.pricing import Valuation, value_catalog
from web.auth.permissions import CREATOR_SCOPE, OFFERS_WRITE, PRINCIPAL, requires
from web.errors import ValidationFailed, json_error
from web.keys import SETTINGS
from web.offers import read_json
from web.validation import parse_currency, parse_royalty_history, parse_uuid

log = get_logger(__name__)

FLAGS = web.AppKey("flags", FeatureFlags)
CALCULATOR_V2_FLAG = "calculator-v2-range"
# What everyone gets when the flag source cannot decide (not started, unreachable, flag absent).
CALCULATOR_V2_DEFAULT = False

_FIELDS = frozenset({"royalty_history", "currency", "creator_id"})


@dataclass(frozen=True, slots=True)
class CalculatorRequest:
    currency: str
    royalty_history: tuple[RoyaltyPeriod, ...]
    creator_id: str | None


async def flags_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the flag source from ``app[SETTINGS]``, started off the event loop."""
    flags = flags_from_settings(app[SETTINGS])
    await flags.start()
    app[FLAGS] = flags
    try:
        yield
    finally:
        await flags.close()


def parse_calculator_request(body: Any) -> CalculatorRequest:
    """Validated field by field exactly like POST /offers, except ``creator_id`` is optional."""
    if not isinstance(body, dict):
        raise ValidationFailed([{"field": "body", "problem": "must be a JSON object"}])
    problems: list[dict[str, str]] = []
    currency = parse_currency(body.get("currency"), "currency", problems)
    history = parse_royalty_history(body.get("royalty_history"), problems)
    creator_id = None
    if body.get("creator_id") is not None:
        creator_id = parse_uuid(body["creator_id"], "creator_id", problems)
    for name in sorted(set(body) - _FIELDS):
        problems.append({"field": name, "problem": "is not a known field"})
    if problems:
        raise ValidationFailed(problems)
    assert currency is not None
    return CalculatorRequest(currency=currency, royalty_history=history, creator_id=creator_id)


def flag_context(request: web.Request, creator_id: str | None) -> FlagContext:
    # Read with .get(): the route also works in an app without the auth middleware (tests).
    principal = request.get(PRINCIPAL)
    if principal is None:
        return FlagContext(creator_id=creator_id)
    return FlagContext(
        user_id=principal.subject,
        creator_id=creator_id or principal.creator_id,
        roles=tuple(sorted(principal.permissions)),
    )


@requires(OFFERS_WRITE)
async def calculate_offer(request: web.Request) -> web.Response:
    quote = parse_calculator_request(await read_json(request))
    scope = request.get(CREATOR_SCOPE)
    if scope is not None and quote.creator_id not in (None, scope):
        # A creator-scoped caller acts for itself only; another creator's id would reveal
        # that creator's flag targeting.
        return json_error(
            403,
            "forbidden_creator",
            "you may only price your own catalog",
            [{"field": "creator_id", "problem": "must be your own creator id (or omitted)"}],
        )
    context = flag_context(request, quote.creator_id or scope)
    v2 = await request.app[FLAGS].variation(CALCULATOR_V2_FLAG, context, CALCULATOR_V2_DEFAULT)
    version = "v2" if v2 else "v1"
    result = value_catalog(quote.royalty_history)
    log.info(
        "calculator_quote",
        version=version,
        months=result.months_considered,
        priceable=isinstance(result, Valuation),
    )
    body: dict[str, Any] = {"version": version, "currency": quote.currency}
    if not isinstance(result, Valuation):
        body.update(
            priceable=False,
            reason=result.reason,
            months_considered=result.months_considered,
            model_version=result.model_version,
        )
    elif v2:
        body.update(
            priceable=True,
            low_minor=result.low_minor,
            median_minor=result.median_minor,
            high_minor=result.high_minor,
            median_monthly_royalty_minor=result.median_monthly_royalty_minor,
            months_considered=result.months_considered,
            model_version=result.model_version,
        )
    else:
        body.update(priceable=True, advance_minor=result.median_minor, model_version=result.model_version)
    return web.json_response(body)
