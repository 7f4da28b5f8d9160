"""``POST /webhooks/stripe`` and ``POST /webhooks/wise``: provider notices about transfers.

Public routes (no bearer token): the provider's signature over the raw body is the
authentication. Per delivery:

1. the body is read up to ``MAX_WEBHOOK_BYTES`` (413 beyond) and its signature verified
   (``infra.webhooks``): forged, unsigned or stale -> 400, nothing recorded or published;
2. the verified body is reduced to a ``TransferNotice`` and ``models.reversal.decide`` says
   whether it reverses a paid payout;
3. in ONE database transaction: the dedup row (``state.webhooks``, keyed by the provider's
   event id) is inserted -- a row already there means a redelivery: 200 ``duplicate`` --
   then, for a reversal, ``offer.payout.reversed`` is published, and the transaction commits
   only after the broker acknowledged it. A publish failure rolls the row back (503: the
   provider retries); a commit lost after the publish makes the retry publish again, with
   the same deterministic event id (derived from the payout and the total reversed so far,
   ``models.reversal.reversal_event_id``), which the projector and the ledger's unique
   reference absorb.

This module moves no money and writes no ledger entry: the payouts worker posts the
reversal when it consumes the event (agents/reversals.py).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from infra.logging import get_logger
from infra.providers.stripe import from_stripe_amount
from infra.webhooks import MAX_WEBHOOK_BYTES, WebhookRejected, check_fresh, verify_stripe, verify_wise
from models.events import PayoutProvider, PayoutReversed
from models.reversal import WISE_STATE_CHANGE, Decision, TransferNotice, decide, reversal_event_id
from state import webhooks as store
from state.payouts import get_payout
from web.contract import StripeWebhookIn, WiseStateChangeData, WiseWebhookIn
from web.errors import Unavailable, json_error
from web.keys import ENGINE, PUBLISHER, SETTINGS

log = get_logger(__name__)
M = TypeVar("M", bound=BaseModel)

_REJECTED_MESSAGES = {
    "missing_signature": "the signature header is missing",
    "bad_signature": "the signature does not verify",
    "stale": "the delivery is too old (or from the future): replays are refused",
    "not_configured": "this provider's webhooks are not configured here",
}


async def stripe_webhook(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    body = await _body(request)
    try:
        verify_stripe(
            body,
            request.headers.get("Stripe-Signature"),
            settings.stripe_webhook_secret.get_secret_value(),
            settings.webhook_tolerance_seconds,
        )
        event = _parse(StripeWebhookIn, body)
    except WebhookRejected as rejected:
        return _rejected("STRIPE", rejected)
    return await _handle(request, _stripe_notice(event))


async def wise_webhook(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    body = await _body(request)
    try:
        verify_wise(body, request.headers.get("X-Signature-SHA256"), settings.wise_webhook_public_key)
        event = _parse(WiseWebhookIn, body)
        check_fresh(event.sent_at, tolerance=settings.webhook_tolerance_seconds)
        notice = _wise_notice(event)
    except WebhookRejected as rejected:
        return _rejected("WISE", rejected)
    if request.headers.get("X-Test-Notification", "").lower() == "true":
        # Sent when a subscription is created: proves the URL works, names no transfer.
        return web.json_response({"status": "ignored", "outcome": "ignored:test_notification"})
    log.info("webhook_delivery", provider="WISE", delivery_id=request.headers.get("X-Delivery-Id"))
    return await _handle(request, notice)


# --- reading ---------------------------------------------------------------------------


async def _body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_WEBHOOK_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_WEBHOOK_BYTES, actual_size=request.content_length)
    body = await request.content.read(MAX_WEBHOOK_BYTES + 1)
    if len(body) > MAX_WEBHOOK_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_WEBHOOK_BYTES, actual_size=len(body))
    return body


def _parse(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate_json(body)
    except ValidationError:
        # Signed by the provider, yet not the shape we read: say so, never echo it.
        raise WebhookRejected("unreadable_body") from None


def _stripe_notice(event: StripeWebhookIn) -> TransferNotice:
    obj: dict[str, Any] = event.data.object
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    currency = str(obj.get("currency") or "").upper() or None
    reversed_raw = obj.get("amount_reversed")
    reversed_minor = (
        from_stripe_amount(reversed_raw, currency)
        if isinstance(reversed_raw, int) and not isinstance(reversed_raw, bool) and currency
        else None
    )
    is_transfer = obj.get("object") == "transfer" and isinstance(obj.get("id"), str)
    return TransferNotice(
        provider="STRIPE",
        event_id=event.id,
        event_type=event.type,
        transfer_id=str(obj["id"]) if is_transfer else None,
        occurred_at=datetime.fromtimestamp(event.created, UTC),
        payout_id=_uuid_or_none(obj.get("transfer_group")) or _uuid_or_none(metadata.get("payout_id")),
        reversed_minor=reversed_minor,
        currency=currency,
    )


def _wise_notice(event: WiseWebhookIn) -> TransferNotice:
    if event.event_type != WISE_STATE_CHANGE:
        # No event id in Wise's envelope; X-Delivery-Id changes per attempt. The body's own
        # identity (type, subscription, sent_at) is the best key for an event we ignore.
        return TransferNotice(
            provider="WISE",
            event_id=f"{event.event_type}:{event.subscription_id}:{event.sent_at.isoformat()}",
            event_type=event.event_type,
            transfer_id=None,
            occurred_at=event.sent_at,
        )
    try:
        data = WiseStateChangeData.model_validate(event.data)
    except ValidationError:
        raise WebhookRejected("unreadable_body") from None
    transfer_id = str(data.resource.id)
    return TransferNotice(
        provider="WISE",
        # A transfer enters a state once: (transfer, state) identifies the event across
        # Wise's redeliveries, whose X-Delivery-Id differs per attempt.
        event_id=f"{WISE_STATE_CHANGE}:{transfer_id}:{data.current_state}",
        event_type=event.event_type,
        transfer_id=transfer_id,
        occurred_at=data.occurred_at or event.sent_at,
        state=data.current_state,
    )


def _uuid_or_none(value: Any) -> str | None:
    try:
        return str(uuid.UUID(str(value))) if value else None
    except ValueError:
        return None


def _rejected(provider: str, rejected: WebhookRejected) -> web.Response:
    log.warning("webhook_rejected", provider=provider, reason=rejected.reason)
    message = _REJECTED_MESSAGES.get(rejected.reason, "the body is not a webhook event we can read")
    return json_error(400, f"webhook_{rejected.reason}", message)


# --- acting ----------------------------------------------------------------------------


async def _handle(request: web.Request, notice: TransferNotice) -> web.Response:
    engine = request.app[ENGINE]
    async with engine.begin() as conn:
        payout = await _payout_of(conn, notice)
        decision = decide(notice, payout)
        fresh = await store.record(
            conn,
            provider=notice.provider,
            event_id=notice.event_id,
            event_type=notice.event_type,
            outcome=decision.outcome,
            payout_id=str(payout["payout_id"]) if payout else None,
            provider_reference=notice.transfer_id,
        )
        if not fresh:
            log.info("webhook_duplicate", provider=notice.provider, event_id=notice.event_id)
            return web.json_response({"status": "duplicate", "event_id": notice.event_id})
        if decision.publish:
            assert payout is not None
            await _publish(request, _reversed_event(notice, payout, decision))
    log.info(
        "webhook_recorded",
        provider=notice.provider,
        event_id=notice.event_id,
        event_type=notice.event_type,
        outcome=decision.outcome,
        payout_id=str(payout["payout_id"]) if payout else None,
    )
    if decision.publish:
        return web.json_response({"status": "accepted", "event_id": notice.event_id}, status=202)
    return web.json_response({"status": "ignored", "event_id": notice.event_id, "outcome": decision.outcome})


async def _payout_of(conn: Any, notice: TransferNotice) -> dict[str, Any] | None:
    if notice.payout_id is not None:
        payout = await get_payout(conn, notice.payout_id)
        if payout is not None:
            return payout
    if notice.transfer_id is None:
        return None
    return await store.payout_by_reference(conn, notice.provider, notice.transfer_id)


def _reversed_event(notice: TransferNotice, payout: dict[str, Any], decision: Decision) -> PayoutReversed:
    assert decision.amount_minor is not None and decision.reason is not None and notice.transfer_id is not None
    payout_id = str(payout["payout_id"])
    return PayoutReversed(
        event_id=reversal_event_id(payout_id, decision.amount_minor),  # one event per (payout, total)
        offer_id=str(payout["offer_id"]),
        creator_id=str(payout["creator_id"]),
        occurred_at=notice.occurred_at,
        correlation_id=str(payout["correlation_id"]),
        causation_id=None,  # caused by the provider, not by one of our events
        payout_id=payout_id,
        provider=PayoutProvider(notice.provider),
        provider_reference=notice.transfer_id,
        amount_minor=decision.amount_minor,
        currency=str(payout["currency"]),
        reason=decision.reason,
        provider_event_id=notice.event_id,
    )


async def _publish(request: web.Request, event: PayoutReversed) -> None:
    try:
        await request.app[PUBLISHER].publish(event)
    except Exception as exc:  # noqa: BLE001 - broker or registry down: the provider retries
        log.error("webhook_publish_failed", error=type(exc).__name__, payout_id=event.payout_id)
        raise Unavailable("could not record the webhook right now; retry later") from exc
