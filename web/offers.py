"""POST /offers: validate, publish ``offer.created``, answer 202 with the offer id."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from aiohttp import web

from infra.avro import RegistryUnavailable
from infra.logging import get_logger
from models.events import OfferCreated
from state.creators import creator_exists
from web.auth.permissions import visible_to
from web.errors import ValidationFailed, json_error
from web.keys import ENGINE, PUBLISHER
from web.middleware import REQUEST_ID
from web.validation import parse_offer_request

log = get_logger(__name__)
MAX_BODY_BYTES = 256 * 1024


async def read_json(request: web.Request) -> object:
    if not request.body_exists:
        raise web.HTTPBadRequest(text="request body is empty: send a JSON object")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY_BYTES, actual_size=request.content_length)
    raw = await request.read()
    if not raw.strip():
        raise web.HTTPBadRequest(text="request body is empty: send a JSON object")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(text=f"body is not valid JSON: {exc}") from exc


async def create_offer(request: web.Request) -> web.Response:
    offer = parse_offer_request(await read_json(request))
    if not visible_to(request, offer.creator_id):
        raise ValidationFailed([{"field": "creator_id", "problem": "a creator may only ask for offers of its own"}])
    async with request.app[ENGINE].connect() as conn:
        if not await creator_exists(conn, offer.creator_id):
            raise ValidationFailed(
                [{"field": "creator_id", "problem": "is not a known creator (POST /creators first)"}]
            )
    correlation_id = request.headers.get("X-Correlation-ID", request[REQUEST_ID])[:128]
    event = OfferCreated(
        event_id=str(uuid.uuid4()),
        offer_id=str(uuid.uuid4()),
        creator_id=offer.creator_id,
        occurred_at=datetime.now(UTC),
        correlation_id=correlation_id,
        currency=offer.currency,
        royalty_history=offer.royalty_history,
    )
    try:
        await request.app[PUBLISHER].publish(event)
    except (RegistryUnavailable, OSError, Exception) as exc:  # noqa: BLE001 - broker or registry down
        log.error("offer_publish_failed", error=type(exc).__name__, offer_id=event.offer_id)
        return json_error(503, "unavailable", "could not record the offer right now; retry later")
    log.info("offer_created", offer_id=event.offer_id, months=len(offer.royalty_history))
    return web.json_response(
        {
            "offer_id": event.offer_id,
            "status": "accepted_for_processing",
            "links": {"self": f"/offers/{event.offer_id}"},
        },
        status=202,
        headers={"Location": f"/offers/{event.offer_id}"},
    )
