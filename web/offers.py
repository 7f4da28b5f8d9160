"""POST /offers: validate, queue ``offer.created`` through the outbox, answer 202 with the offer id.

An ``Idempotency-Key`` is optional here (clients that never sent one keep working): with
one, a retry gets the same offer id and answer and the offer is created once (web/idempotent.py).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection

from infra.logging import get_logger
from state.idempotency import request_fingerprint
from web import commands
from web.contract import OfferIn
from web.http import actor_of
from web.idempotent import Outcome, optional_idempotency_key, run_command
from web.keys import KNOWN_CREATORS
from web.validation import read_body

log = get_logger(__name__)


async def create_offer(request: web.Request) -> web.Response:
    key = optional_idempotency_key(request)
    body = await read_body(request, OfferIn)
    actor = actor_of(request)
    history = body.history()

    async def decide(conn: AsyncConnection, seed: str | None) -> Outcome:
        command = commands.CreateOffer(
            actor=actor, creator_id=body.creator_id, currency=body.currency, royalty_history=history, seed=seed
        )
        event = await commands.create_offer(command, conn, request.app[KNOWN_CREATORS])
        answer: dict[str, Any] = {
            "offer_id": event.offer_id,
            "status": "accepted_for_processing",
            "links": {"self": f"/offers/{event.offer_id}"},
        }
        return Outcome(202, answer, (event,))

    # Only a keyed request is compared with its first use (the hot path without a key skips it).
    fingerprint = (
        ""
        if key is None
        else request_fingerprint(
            {
                "creator_id": body.creator_id,
                "currency": body.currency,
                "royalty_history": [[p.period, p.amount_minor] for p in history],
            }
        )
    )
    answer = await run_command(request, scope=f"offer:{actor.subject}", key=key, fingerprint=fingerprint, decide=decide)
    if answer.status != 202:
        return answer.response()
    log.info("offer_created", offer_id=answer.body["offer_id"], months=len(history), replayed=answer.replayed)
    return answer.response({"Location": answer.body["links"]["self"]})
