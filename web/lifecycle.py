"""Commands on an existing offer: accept the term sheet, request the payout.

Both read the deals projection to decide whether the command is allowed (409 otherwise)
and then publish an event; they never write an offer's state themselves.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from infra.logging import get_logger
from models.deal import DealStatus
from models.events import OfferAccepted, PayoutRequested
from models.payout import payout_id_for
from projections.queries import get_deal
from state.creators import get_recipient
from state.idempotency import lock_key, request_fingerprint, store_response, stored_response
from web.auth.permissions import PRINCIPAL, visible_to
from web.deals import _offer_id
from web.errors import ValidationFailed, json_error
from web.keys import ENGINE, PUBLISHER
from web.middleware import REQUEST_ID
from web.offers import read_json
from web.validation import parse_uuid

log = get_logger(__name__)

_ACCEPT_NS = uuid.UUID("0d9f3a52-5f0b-5b8e-8d3c-7a4f1a2b9c10")


def _principal_subject(request: web.Request) -> str:
    principal = request.get(PRINCIPAL)
    return principal.subject if principal is not None else "anonymous"


def _correlation(request: web.Request) -> str:
    return request.headers.get("X-Correlation-ID", request[REQUEST_ID])[:128]


async def accept_offer(request: web.Request) -> web.Response:
    offer_id = _offer_id(request)
    async with request.app[ENGINE].connect() as conn:
        deal = await get_deal(conn, offer_id)
    if deal is None or not visible_to(request, deal["creator_id"]):
        return json_error(404, "not_found", f"no offer {offer_id}")
    if deal["accepted_at"] is not None:
        return web.json_response({"offer_id": offer_id, "status": "accepted", "already": True})
    if deal["status"] != DealStatus.TERMSHEET_ISSUED.value:
        return json_error(
            409, "conflict", f"offer is {deal['status']}: only a valued offer with a term sheet can be accepted"
        )
    event = OfferAccepted(
        # One acceptance per offer: concurrent or retried accepts publish the same event id.
        event_id=str(uuid.uuid5(_ACCEPT_NS, offer_id)),
        offer_id=offer_id,
        creator_id=deal["creator_id"],
        occurred_at=datetime.now(UTC),
        correlation_id=_correlation(request),
        advance_minor=deal["valuation_median_minor"],
        currency=deal["currency"],
        termsheet_sha256=deal["termsheet_sha256"],
        accepted_by=_principal_subject(request),
    )
    await request.app[PUBLISHER].publish(event)
    log.info("offer_accepted", offer_id=offer_id)
    return web.json_response({"offer_id": offer_id, "status": "accepted"}, status=202)


async def request_payout(request: web.Request) -> web.Response:
    offer_id = _offer_id(request)
    key = request.headers.get("Idempotency-Key", "")
    if not 1 <= len(key) <= 255:
        raise ValidationFailed([{"field": "Idempotency-Key", "problem": "header is required (1 to 255 characters)"}])
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationFailed([{"field": "body", "problem": "must be a JSON object"}])
    problems: list[dict[str, str]] = []
    recipient_id = parse_uuid(body.get("recipient_id"), "recipient_id", problems)
    problems += [{"field": n, "problem": "is not a known field"} for n in sorted(set(body) - {"recipient_id"})]
    if problems:
        raise ValidationFailed(problems)
    fingerprint = request_fingerprint({"offer_id": offer_id, "recipient_id": recipient_id})
    scope = f"payout:{_principal_subject(request)}"
    async with request.app[ENGINE].begin() as conn:
        await lock_key(conn, scope, key)
        previous = await stored_response(conn, scope, key)
        if previous is not None:
            stored_hash, status, stored_body = previous
            if stored_hash != fingerprint:
                return json_error(
                    422, "idempotency_key_reused", "this Idempotency-Key was used for a different request"
                )
            return web.json_response(stored_body, status=status, headers={"Idempotent-Replayed": "true"})
        status, answer = await _decide_payout(request, conn, offer_id, recipient_id)  # type: ignore[arg-type]
        if status < 500:
            await store_response(conn, scope, key, fingerprint, status, answer)
    return web.json_response(answer, status=status)


async def _decide_payout(
    request: web.Request, conn: Any, offer_id: str, recipient_id: str
) -> tuple[int, dict[str, Any]]:
    deal = await get_deal(conn, offer_id)
    if deal is None or not visible_to(request, deal["creator_id"]):
        return 404, {"error": "not_found", "message": f"no offer {offer_id}"}
    if deal["status"] != DealStatus.ACCEPTED.value:
        return 409, {
            "error": "conflict",
            "message": f"offer is {deal['status']}: only an accepted offer can be paid out",
        }
    recipient = await get_recipient(conn, recipient_id)
    if recipient is None or recipient["creator_id"] != deal["creator_id"]:
        return 422, {
            "error": "validation_failed",
            "message": "unknown recipient for this creator",
            "fields": [{"field": "recipient_id", "problem": "is not a recipient of the offer's creator"}],
        }
    if recipient["currency"] != deal["currency"]:
        return 422, {
            "error": "validation_failed",
            "message": "recipient currency differs from the offer's",
            "fields": [{"field": "recipient_id", "problem": f"recipient takes {recipient['currency']}"}],
        }
    payout_id = payout_id_for(offer_id)
    event = PayoutRequested(
        event_id=str(uuid.uuid4()),
        offer_id=offer_id,
        creator_id=deal["creator_id"],
        occurred_at=datetime.now(UTC),
        correlation_id=_correlation(request),
        payout_id=payout_id,
        recipient_id=recipient_id,
        amount_minor=deal["advance_minor"],
        currency=deal["currency"],
        requested_by=_principal_subject(request),
    )
    await request.app[PUBLISHER].publish(event)
    log.info("payout_requested", offer_id=offer_id, payout_id=payout_id)
    return 202, {"offer_id": offer_id, "payout_id": payout_id, "status": "payout_requested"}
