"""Commands on an existing offer: accept the term sheet, request the payout.

Each handler builds a command and calls its handler in :mod:`web.commands`, which checks the
deals projection against the domain's rules (409 / 422 otherwise) and publishes an event;
neither writes an offer's state itself. Payout requests are idempotent per
``Idempotency-Key``: the first answer (success or refusal) is stored and replayed, except
a refusal that only reflects the deal's state at that moment (see ``REEVALUATED``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from state.idempotency import lock_key, request_fingerprint, store_response, stored_response
from web import commands
from web.contract import PayoutIn
from web.errors import ValidationFailed, error_answer, json_error, problem
from web.http import actor_of
from web.keys import ENGINE, PUBLISHER
from web.validation import path_uuid, read_body

MAX_IDEMPOTENCY_KEY = 255
# Answers not stored under the key: 404 (the projection has not seen the offer yet) and 409
# (not accepted *yet*: accept answers 202 before the projection shows it). Both change as the
# deal moves on, so replaying them would refuse a correct retry with the same key forever
# (the fault soak lost every offer paid right after its accept this way). A retry is
# evaluated afresh instead; the 202 that finally comes is stored and replayed, and the
# deterministic payout id still makes two successes one payout.
REEVALUATED = frozenset({404, 409})


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
    command = commands.RequestPayout(actor=actor, offer_id=offer_id, recipient_id=body.recipient_id)
    fingerprint = request_fingerprint({"offer_id": offer_id, "recipient_id": body.recipient_id})
    scope = f"payout:{actor.subject}"
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
        status, answer = await _pay_out(command, conn, request.app[PUBLISHER])
        if status < 500 and status not in REEVALUATED:
            await store_response(conn, scope, key, fingerprint, status, answer)
    return web.json_response(answer, status=status)


async def _pay_out(command: commands.RequestPayout, conn: Any, publisher: Any) -> tuple[int, dict[str, Any]]:
    """The answer to store under the key: a refusal is an answer too, and is replayed."""
    try:
        event = await commands.request_payout(command, conn, publisher)
    except Exception as exc:
        answer = error_answer(exc)
        if answer is None:
            raise
        return answer
    return 202, {"offer_id": event.offer_id, "payout_id": event.payout_id, "status": "payout_requested"}
