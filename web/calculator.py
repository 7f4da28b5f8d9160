"""POST /calculator: an instant, non-binding price for a royalty history.

The same pure ``value_catalog`` the valuation agent runs, so a quote matches the offer the
pipeline will make for the same history. Flag ``calculator-v2-range`` decides the answer's
shape: v1 is one advance amount (the median valuation), v2 the low / median / high range.
A history that cannot be priced answers 200 with ``priceable: false`` and the reason: the
request was well-formed, the catalog simply has no price yet (422 is kept for bad input).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from infra.flags import FeatureFlags, FlagContext, flags_from_settings
from infra.logging import get_logger
from models.pricing import Valuation, ValuationFailure, value_catalog
from web.auth.permissions import CREATOR_SCOPE, PRINCIPAL
from web.contract import CalculatorIn
from web.errors import json_error, problem
from web.keys import SETTINGS
from web.validation import read_body

log = get_logger(__name__)

FLAGS = web.AppKey("flags", FeatureFlags)
CALCULATOR_V2_FLAG = "calculator-v2-range"
# What everyone gets when the flag source cannot decide (not started, unreachable, flag absent).
CALCULATOR_V2_DEFAULT = False


async def flags_ctx(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the flag source from ``app[SETTINGS]``, started off the event loop."""
    flags = flags_from_settings(app[SETTINGS])
    await flags.start()
    app[FLAGS] = flags
    try:
        yield
    finally:
        await flags.close()


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


async def calculate_offer(request: web.Request) -> web.Response:
    quote = await read_body(request, CalculatorIn)
    scope = request.get(CREATOR_SCOPE)
    if scope is not None and quote.creator_id not in (None, scope):
        # A creator-scoped caller acts for itself only; another creator's id would reveal
        # that creator's flag targeting.
        return json_error(
            403,
            "forbidden_creator",
            "you may only price your own catalog",
            [problem("creator_id", "must be your own creator id (or omitted)")],
        )
    context = flag_context(request, quote.creator_id or scope)
    v2 = await request.app[FLAGS].variation(CALCULATOR_V2_FLAG, context, CALCULATOR_V2_DEFAULT)
    result = value_catalog(quote.history())
    log.info(
        "calculator_quote",
        version="v2" if v2 else "v1",
        months=result.months_considered,
        priceable=isinstance(result, Valuation),
    )
    return web.json_response(quote_body(result, quote.currency, v2=v2))


def quote_body(result: Valuation | ValuationFailure, currency: str, *, v2: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"version": "v2" if v2 else "v1", "currency": currency}
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
    return body
