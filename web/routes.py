"""Every route of the API in one table: path, handler, permission, rate limit, models.

This is the one place a route is declared. :func:`add_routes` registers the table with the
permission and the rate limit each route declares (see web/auth/permissions.py); a route
declared ``public`` joins the auth layer's public allowlist instead. The request models
named here are the ones the handlers validate with, and they describe the route in the
OpenAPI document (web/openapi.py).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from web import calculator, closing, creators, deals, documents, health, lifecycle, offers, payout_ops, stream, webhooks
from web.auth.permissions import (
    ADMIN,
    CREATORS_READ,
    CREATORS_WRITE,
    DEALS_READ,
    METRICS_READ,
    OFFERS_WRITE,
    PAYOUTS_WRITE,
    RateLimit,
    declare_rate_limit,
    rate_limited,
    requires,
)
from web.contract import (
    CalculatorIn,
    CreatorIn,
    DealsQuery,
    DocumentQuery,
    OfferIn,
    PayoutIn,
    PayoutsQuery,
    QueryModel,
    ReasonIn,
    RecipientIn,
    RequestModel,
    RetryPayoutIn,
    StreamQuery,
    StripeWebhookIn,
    WiseWebhookIn,
)
from web.openapi import openapi_document

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve_openapi(_: web.Request) -> web.Response:
    return web.json_response(_document())


@functools.cache
def _document() -> dict[str, Any]:
    return openapi_document(ROUTES)


# Money-moving and bank-detail endpoints are rate limited per caller (per process).
PAYOUTS = declare_rate_limit("payouts", per_minute=10)
RECIPIENTS = declare_rate_limit("recipients", per_minute=10)
# Operators' retry and cancel: their own bucket, so working through a list of parked payouts
# does not use up the payout requests' budget.
PAYOUT_OPS = declare_rate_limit("payout_ops", per_minute=30)
PUBLIC: tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    name: str
    handler: Handler
    # Every one of these is required; PUBLIC (none) means no token at all.
    permissions: tuple[str, ...]
    summary: str
    rate_limit: RateLimit | None = None
    # Also accepts a ?ticket= from POST /auth/sse-ticket (EventSource cannot send headers).
    ticket: bool = False
    body: type[RequestModel] | None = None
    # The body may be left out entirely (the model's defaults apply).
    body_optional: bool = False
    query: type[QueryModel] | None = None
    headers: tuple[str, ...] = field(default=())
    # The success answer, for the OpenAPI document.
    ok: int = 200
    content: str = "application/json"
    # Statuses beyond those the declaration implies (401/403, 400/422, 404, 429).
    errors: tuple[int, ...] = ()

    @property
    def public(self) -> bool:
        return not self.permissions


ROUTES: tuple[Route, ...] = (
    Route("POST", "/creators", "create_creator", creators.create_creator, (CREATORS_WRITE,),
          "Register a creator", body=CreatorIn, ok=201, errors=(409,)),
    Route("GET", "/creators/{creator_id}", "show_creator", creators.show_creator, (CREATORS_READ,),
          "A creator with its (masked) payout recipients"),
    Route("POST", "/creators/{creator_id}/recipients", "add_recipient", creators.add_recipient, (CREATORS_WRITE,),
          "Add a payout recipient (bank details are encrypted, returned masked)",
          rate_limit=RECIPIENTS, body=RecipientIn, ok=201),
    Route("POST", "/offers", "create_offer", offers.create_offer, (OFFERS_WRITE,),
          "Ask for an offer on a royalty history (idempotent per Idempotency-Key when one is sent)", body=OfferIn,
          headers=("Idempotency-Key?", "X-Correlation-ID"), ok=202, errors=(503,)),
    Route("POST", "/calculator", "calculate_offer", calculator.calculate_offer, (OFFERS_WRITE,),
          "An instant, non-binding price for a royalty history", body=CalculatorIn),
    Route("GET", "/offers/events/deals", "deals_stream", stream.deals_stream, (DEALS_READ,),
          "Server-sent events: every deal change", ticket=True, query=StreamQuery, headers=("Last-Event-ID",),
          content="text/event-stream"),
    Route("GET", "/offers/{offer_id}", "get_offer", deals.get_offer, (DEALS_READ,), "One deal"),
    Route("GET", "/offers/{offer_id}/events", "get_offer_history", deals.get_offer_history, (DEALS_READ,),
          "A deal's event history"),
    Route("GET", "/offers/{offer_id}/documents/{kind}", "get_document", documents.get_document, (DEALS_READ,),
          "The term sheet or receipt PDF (or a presigned URL)", query=DocumentQuery,
          content="application/pdf"),
    Route("POST", "/offers/{offer_id}/accept", "accept_offer", lifecycle.accept_offer, (OFFERS_WRITE,),
          "Accept the term sheet", headers=("X-Correlation-ID",), ok=202, errors=(409, 503)),
    Route("POST", "/offers/{offer_id}/decline", "decline_offer", closing.decline_offer, (OFFERS_WRITE,),
          "Decline an open offer (a creator its own; an operator any)", body=ReasonIn,
          body_optional=True, headers=("X-Correlation-ID",), ok=202, errors=(409, 503)),
    Route("POST", "/offers/{offer_id}/withdraw", "withdraw_offer", closing.withdraw_offer, (ADMIN,),
          "Withdraw an open offer (operators only)", body=ReasonIn, body_optional=True,
          headers=("X-Correlation-ID",), ok=202, errors=(409, 503)),
    Route("POST", "/offers/{offer_id}/payout", "request_payout", lifecycle.request_payout, (PAYOUTS_WRITE,),
          "Request the payout (idempotent per Idempotency-Key)", rate_limit=PAYOUTS, body=PayoutIn,
          headers=("Idempotency-Key", "X-Correlation-ID"), ok=202, errors=(409, 503)),
    Route("POST", "/offers/{offer_id}/payout/retry", "retry_payout", payout_ops.retry_payout, (ADMIN,),
          "Operators: retry the deal's failed payout, optionally to another recipient of the creator",
          rate_limit=PAYOUT_OPS, body=RetryPayoutIn, headers=("Idempotency-Key", "X-Correlation-ID"), ok=202,
          errors=(409,)),
    Route("POST", "/payouts/{payout_id}/cancel", "cancel_payout", payout_ops.cancel_payout, (ADMIN,),
          "Operators: ask to cancel a parked payout (the payouts worker cancels it once the provider confirms "
          "nothing moved, or records a refusal)", rate_limit=PAYOUT_OPS,
          headers=("Idempotency-Key", "X-Correlation-ID"), ok=202, errors=(409,)),
    Route("GET", "/payouts", "list_payouts", payout_ops.list_payouts, (ADMIN,),
          "Operators: payouts, or with stuck=true those neither paid nor refused, with their age",
          query=PayoutsQuery),
    Route("GET", "/deals", "get_deals", deals.get_deals, (DEALS_READ,), "Deals, newest first, paginated",
          query=DealsQuery),
    # Public: the provider's signature over the raw body is the authentication (web/webhooks.py).
    Route("POST", "/webhooks/stripe", "stripe_webhook", webhooks.stripe_webhook, PUBLIC,
          "Stripe webhook (signed: Stripe-Signature); transfer.reversed reverses a paid payout",
          body=StripeWebhookIn, headers=("Stripe-Signature",), ok=202, errors=(413, 503)),
    Route("POST", "/webhooks/wise", "wise_webhook", webhooks.wise_webhook, PUBLIC,
          "Wise webhook (signed: X-Signature-SHA256); a paid transfer bounced back reverses the payout",
          body=WiseWebhookIn, headers=("X-Signature-SHA256", "X-Delivery-Id"), ok=202, errors=(413, 503)),
    Route("GET", "/healthz", "healthz", health.healthz, PUBLIC, "Liveness"),
    Route("GET", "/readyz", "readyz", health.readyz, PUBLIC, "Readiness (status only; Postgres and Kafka through the pooled clients)"),
    Route("GET", "/metrics", "metrics", health.metrics, (METRICS_READ,), "Prometheus metrics (business volume: needs metrics:read)", content="text/plain"),
    Route("GET", "/openapi.json", "openapi", serve_openapi, PUBLIC, "This document"),
)  # fmt: skip


def public_paths(routes: tuple[Route, ...] = ROUTES) -> list[str]:
    return [route.path for route in routes if route.public]


def _declared(route: Route) -> Handler:
    handler = route.handler
    if route.public:
        return handler
    if route.rate_limit is not None:
        handler = rate_limited(route.rate_limit.bucket, route.rate_limit.per_minute)(handler)
    return requires(*route.permissions, ticket=route.ticket)(handler)


def add_routes(app: web.Application, routes: tuple[Route, ...] = ROUTES) -> None:
    """Registers the table; pass ``public_paths()`` to ``setup_auth`` for the public ones."""
    for route in routes:
        if route.method == "GET":  # and HEAD, as aiohttp does by default
            app.router.add_get(route.path, _declared(route), name=route.name)
        else:
            app.router.add_route(route.method, route.path, _declared(route), name=route.name)


def route_named(name: str, routes: tuple[Route, ...] = ROUTES) -> Route:
    return next(route for route in routes if route.name == name)
