"""Commands on an existing offer: accept the term sheet, request the payout.

Each handler builds a command and calls its handler in :mod:`web.commands`, which checks the
deals projection against the domain's rules (409 / 422 otherwise) and publishes an event;
neither writes an offer's state itself. Payout requests are idempotent per
``Idempotency-Key`` and publish through the outbox (web/idempotent.py): the first answer is
stored and replayed, except a refusal that only reflects the deal's state at that moment.
"""

from __future__ import annotations

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection

from infra.logging import get_logger
from state.idempotency import request_fingerprint
from web import commands
from web.contract import PayoutIn
from web.errors import ValidationFailed, problem
from web.http import actor_of
from web.idempotent import MAX_IDEMPOTENCY_KEY, Outcome, run_command
from web.keys import ENGINE, PUBLISHER
from web.validation import path_uuid, read_body

log = get_logger(__name__)

# Answers not stored under the key (web.idempotent.REEVALUATED): 404 (the projection has not
# seen the offer yet) and 409 (not accepted *yet*: accept answers 202 before the projection
# shows it). Both change as the deal moves on, so replaying them would refuse a correct retry
# with the same key forever (the fault soak lost every offer paid right after its accept this
# way). A retry is evaluated afresh instead; the 202 that finally comes is stored and replayed.


async def accept_offer(request: web.Request) -> web.Response:
    offer_id = path_uuid(request, "offer_id")
    command = commands.AcceptOffer(actor=actor_of(request), offer_id=offer_id)
    if not await commands.accept_offer(command, request.app[ENGINE], request.app[PUBLISHER]):
        return web.json_response({"offer_id": offer_id, "status": "accepted", "already": True})
    return web.json_response({"offer_id": offer_id, "status": "accepted"}, status=202)


def idempotency_key(request: web.Request) -> str:
    key = request.headers.get("Idempotency-Key", "")
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise ValidationFailed([problem("Idempotency-Key", "header is required (1 to 255 characters)")])
    return key


async def request_payout(request: web.Request) -> web.Response:
    offer_id = path_uuid(request, "offer_id")
    key = idempotency_key(request)
    body = await read_body(request, PayoutIn)
    actor = actor_of(request)
    fingerprint = request_fingerprint({"offer_id": offer_id, "recipient_id": body.recipient_id})

    async def decide(conn: AsyncConnection, seed: str | None) -> Outcome:
        command = commands.RequestPayout(actor=actor, offer_id=offer_id, recipient_id=body.recipient_id, seed=seed)
        event = await commands.request_payout(command, conn)
        answer = {"offer_id": event.offer_id, "payout_id": event.payout_id, "status": "payout_requested"}
        return Outcome(202, answer, (event,))

    answer = await run_command(
        request, scope=f"payout:{actor.subject}", key=key, fingerprint=fingerprint, decide=decide
    )
    if answer.status == 202:
        log.info("payout_requested", offer_id=offer_id, payout_id=answer.body["payout_id"], replayed=answer.replayed)
    return answer.response()
