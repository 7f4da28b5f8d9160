"""Read endpoints over the deals projection."""

from __future__ import annotations

import uuid

from aiohttp import web

from models.deal import DealStatus
from projections.queries import deal_history, get_deal, list_deals
from web.auth.permissions import CREATOR_SCOPE, visible_to
from web.errors import ValidationFailed
from web.keys import ENGINE

MAX_PAGE = 200


def _offer_id(request: web.Request) -> str:
    raw = request.match_info["offer_id"]
    try:
        return str(uuid.UUID(raw))
    except ValueError as exc:
        raise ValidationFailed([{"field": "offer_id", "problem": "must be a UUID"}]) from exc


async def get_offer(request: web.Request) -> web.Response:
    offer_id = _offer_id(request)
    async with request.app[ENGINE].connect() as conn:
        deal = await get_deal(conn, offer_id)
    if deal is None or not visible_to(request, deal["creator_id"]):
        return web.json_response({"error": "not_found", "message": f"no offer {offer_id}"}, status=404)
    return web.json_response(deal)


async def get_offer_history(request: web.Request) -> web.Response:
    offer_id = _offer_id(request)
    async with request.app[ENGINE].connect() as conn:
        deal = await get_deal(conn, offer_id)
        if deal is None or not visible_to(request, deal["creator_id"]):
            return web.json_response({"error": "not_found", "message": f"no offer {offer_id}"}, status=404)
        history = await deal_history(conn, offer_id)
    return web.json_response({"offer_id": offer_id, "events": history})


async def get_deals(request: web.Request) -> web.Response:
    problems: list[dict[str, str]] = []
    status = request.query.get("status")
    if status is not None and status not in {s.value for s in DealStatus}:
        problems.append({"field": "status", "problem": f"must be one of {', '.join(s.value for s in DealStatus)}"})
    creator_id = request.query.get("creator_id")
    if creator_id is not None:
        try:
            creator_id = str(uuid.UUID(creator_id))
        except ValueError:
            problems.append({"field": "creator_id", "problem": "must be a UUID"})
    limit, cursor = 50, None
    try:
        limit = int(request.query.get("limit", "50"))
        if not 1 <= limit <= MAX_PAGE:
            raise ValueError
    except ValueError:
        problems.append({"field": "limit", "problem": f"must be an integer from 1 to {MAX_PAGE}"})
    if "cursor" in request.query:
        try:
            cursor = int(request.query["cursor"])
        except ValueError:
            problems.append({"field": "cursor", "problem": "must be the next_cursor of a previous page"})
    if problems:
        raise ValidationFailed(problems)
    scope = request.get(CREATOR_SCOPE)
    if scope is not None:
        creator_id = scope
    async with request.app[ENGINE].connect() as conn:
        deals, next_cursor = await list_deals(
            conn, status=status, creator_id=creator_id, before_seq=cursor, limit=limit
        )
    return web.json_response({"deals": deals, "next_cursor": next_cursor})
