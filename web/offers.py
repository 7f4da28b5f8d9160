"""POST /offers: validate, publish ``offer.created``, answer 202 with the offer id."""

from __future__ import annotations

from aiohttp import web

from web import commands
from web.contract import OfferIn
from web.http import actor_of
from web.keys import ENGINE, PUBLISHER
from web.validation import read_body


async def create_offer(request: web.Request) -> web.Response:
    body = await read_body(request, OfferIn)
    command = commands.CreateOffer(
        actor=actor_of(request),
        creator_id=body.creator_id,
        currency=body.currency,
        royalty_history=body.history(),
    )
    event = await commands.create_offer(command, request.app[ENGINE], request.app[PUBLISHER])
    location = f"/offers/{event.offer_id}"
    return web.json_response(
        {"offer_id": event.offer_id, "status": "accepted_for_processing", "links": {"self": location}},
        status=202,
        headers={"Location": location},
    )
