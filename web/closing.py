"""Closing an open offer by hand: the creator (or an operator) declines it, an operator
withdraws it. Like accept, each publishes one event with a deterministic id (a retry
publishes the same one) and answers 202, or 200 with ``already`` when it had happened;
409 when the offer is no longer open (``offer_lapsed`` once past its valid_until).
"""

from __future__ import annotations

from aiohttp import web

from web import commands
from web.contract import ReasonIn
from web.http import actor_of
from web.keys import ENGINE, PUBLISHER
from web.validation import path_uuid, read_optional_body


async def _command(request: web.Request) -> commands.CloseOffer:
    offer_id = path_uuid(request, "offer_id")
    body = await read_optional_body(request, ReasonIn)
    return commands.CloseOffer(actor=actor_of(request), offer_id=offer_id, reason=body.reason)


def _answer(offer_id: str, status: str, published: bool) -> web.Response:
    if not published:
        return web.json_response({"offer_id": offer_id, "status": status, "already": True})
    return web.json_response({"offer_id": offer_id, "status": status}, status=202)


async def decline_offer(request: web.Request) -> web.Response:
    command = await _command(request)
    published = await commands.decline_offer(command, request.app[ENGINE], request.app[PUBLISHER])
    return _answer(command.offer_id, "declined", published)


async def withdraw_offer(request: web.Request) -> web.Response:
    command = await _command(request)
    published = await commands.withdraw_offer(command, request.app[ENGINE], request.app[PUBLISHER])
    return _answer(command.offer_id, "withdrawn", published)
