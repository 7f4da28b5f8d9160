"""Read endpoints over the deals projection."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from infra.db import read_connection
from models.payout import hide_canceller
from projections.queries import deal_history, list_deals
from web.auth.permissions import CREATOR_SCOPE, PRINCIPAL
from web.commands import visible_deal
from web.contract import DealsQuery
from web.keys import ENGINE
from web.validation import path_uuid, read_query


async def get_offer(request: web.Request) -> web.Response:
    offer_id = path_uuid(request, "offer_id")
    async with read_connection(request.app[ENGINE]) as conn:
        deal = await visible_deal(conn, offer_id, request.get(CREATOR_SCOPE))
    if request.get(CREATOR_SCOPE) is not None:
        deal = hide_staff_in_deal(deal, request[PRINCIPAL].subject)
    return web.json_response(deal)


async def get_offer_history(request: web.Request) -> web.Response:
    offer_id = path_uuid(request, "offer_id")
    async with read_connection(request.app[ENGINE]) as conn:
        await visible_deal(conn, offer_id, request.get(CREATOR_SCOPE))
        history = await deal_history(conn, offer_id)
    if request.get(CREATOR_SCOPE) is not None:
        history = hide_staff(history, request[PRINCIPAL].subject)
    return web.json_response({"offer_id": offer_id, "events": history})


# Event fields that name the principal who acted (web/commands.py fills them).
ACTOR_FIELDS = ("accepted_by", "requested_by", "declined_by", "withdrawn_by")
# The deal's own record of who closed it (models/deal.py).
DEAL_ACTOR_FIELDS = ("declined_by", "withdrawn_by")
STAFF = "staff"


def hide_staff_in_deal(deal: dict[str, Any], own_subject: str) -> dict[str, Any]:
    """The deal as a creator sees it: who declined or withdrew reads "staff" unless itself,
    and so does the operator a cancelled payout's failure reason names."""
    reason = deal.get("payout_failure_reason")
    hidden_reason = hide_canceller(reason, own_subject, STAFF)
    if hidden_reason != reason:
        deal = {**deal, "payout_failure_reason": hidden_reason}
    if not any(deal.get(k) not in (None, own_subject) for k in DEAL_ACTOR_FIELDS):
        return deal
    return {k: (STAFF if k in DEAL_ACTOR_FIELDS and v not in (None, own_subject) else v) for k, v in deal.items()}


def hide_staff(history: list[dict[str, Any]], own_subject: str) -> list[dict[str, Any]]:
    """A creator sees who acted only when it was itself; staff subjects read "staff"."""
    shown = []
    for entry in history:
        payload = entry.get("payload")
        if isinstance(payload, dict) and any(k in payload for k in ACTOR_FIELDS):
            payload = {k: (STAFF if k in ACTOR_FIELDS and v != own_subject else v) for k, v in payload.items()}
            entry = {**entry, "payload": payload}
        if isinstance(payload, dict) and isinstance(payload.get("failure_reason"), str):
            reason = hide_canceller(payload["failure_reason"], own_subject, STAFF)
            if reason != payload["failure_reason"]:
                entry = {**entry, "payload": {**payload, "failure_reason": reason}}
        shown.append(entry)
    return shown


async def get_deals(request: web.Request) -> web.Response:
    query = read_query(request, DealsQuery)
    # A creator-scoped caller lists its own deals whatever creator_id it asks for.
    creator_id = request.get(CREATOR_SCOPE) or query.creator_id
    async with read_connection(request.app[ENGINE]) as conn:
        deals, next_cursor = await list_deals(
            conn,
            status=query.status.value if query.status is not None else None,
            creator_id=creator_id,
            before_seq=query.cursor,
            limit=query.limit,
        )
    if request.get(CREATOR_SCOPE) is not None:
        deals = [hide_staff_in_deal(d, request[PRINCIPAL].subject) for d in deals]
    return web.json_response({"deals": deals, "next_cursor": next_cursor})
