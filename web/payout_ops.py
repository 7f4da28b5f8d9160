"""Operators' payout commands over HTTP (admin only): retry a failed payout, cancel a
parked one, list the stuck ones.

- ``POST /offers/{offer_id}/payout/retry`` publishes the same ``offer.payout.requested``
  (with ``retry_of``) as ``spacemusic payouts retry``: a new payout linked to the failed one,
  optionally to another recipient of the creator in the deal's currency.
- ``POST /payouts/{payout_id}/cancel`` only *asks*: it publishes
  ``offer.payout.cancel.requested`` and answers 202. Whether anything moved is for the
  payouts agent to find out (the web never talks to providers); it publishes the cancelled
  outcome (``offer.payout.completed`` FAILED naming who cancelled) or
  ``offer.payout.cancel.refused`` with the reason, both in the deal's history.

Both are idempotent per ``Idempotency-Key`` and publish through the event outbox, like
``POST /offers/{id}/payout`` (web/idempotent.py): the answer is stored and replayed, so the
same key twice is one event; a 404 or 409 (a payout still parked, not failed yet) is
evaluated afresh. Who acted is the principal's subject, recorded in the events.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection

from infra.db import read_connection
from infra.logging import get_logger
from infra.sql import jsonable
from models import rules
from models.errors import PayoutNotFound
from models.events import PayoutCancelRequested, PayoutRequested
from models.payout import can_cancel, payout_id_for, retry_event_id, retry_target
from state import payouts as store
from state.creators import get_recipient
from state.idempotency import request_fingerprint
from web.commands import Actor, command_id, visible_deal
from web.contract import PayoutsQuery, RetryPayoutIn
from web.http import actor_of
from web.idempotent import Outcome, run_command
from web.keys import ENGINE
from web.lifecycle import idempotency_key
from web.validation import path_uuid, read_body, read_query

log = get_logger(__name__)


async def retry_payout(request: web.Request) -> web.Response:
    offer_id = path_uuid(request, "offer_id")
    key = idempotency_key(request)
    body = await read_body(request, RetryPayoutIn)
    actor = actor_of(request)
    fingerprint = request_fingerprint({"offer_id": offer_id, "recipient_id": body.recipient_id})

    async def decide(conn: AsyncConnection, _seed: str | None) -> Outcome:
        # The event id derives from the new payout's id, not the key: the same retry asked
        # with two keys (or from the CLI) is still one event.
        event = await _retry_event(conn, actor, offer_id, body.recipient_id)
        answer = {
            "offer_id": offer_id,
            "payout_id": event.payout_id,
            "retry_of": event.retry_of,
            "recipient_id": event.recipient_id,
            "requested_by": event.requested_by,
            "status": "payout_requested",
        }
        return Outcome(202, answer, (event,))

    answer = await run_command(
        request, scope=f"payout-retry:{actor.subject}", key=key, fingerprint=fingerprint, decide=decide
    )
    if answer.status == 202:
        log.info(
            "payout_retry_requested", offer_id=offer_id, payout_id=answer.body["payout_id"], replayed=answer.replayed
        )
    return answer.response()


async def _retry_event(conn: AsyncConnection, actor: Actor, offer_id: str, recipient_id: str | None) -> PayoutRequested:
    deal = await visible_deal(conn, offer_id, actor.scope)
    history = await store.payouts_of_offer(conn, offer_id)
    last = retry_target(history)  # 409 unless every payout of the deal failed
    recipient_id = recipient_id or str(last["recipient_id"])
    rules.can_receive_payout(deal, await get_recipient(conn, recipient_id))  # same creator, same currency
    payout_id = payout_id_for(offer_id, len(history))
    return PayoutRequested(
        event_id=retry_event_id(payout_id),  # the same retry asked twice is one event
        offer_id=offer_id,
        creator_id=deal["creator_id"],
        occurred_at=datetime.now(UTC),
        correlation_id=actor.correlation_id,
        causation_id=str(last["requested_event_id"]),
        payout_id=payout_id,
        recipient_id=recipient_id,
        # What the payouts agent checks the request against (it refuses anything else).
        amount_minor=int(deal["advance_minor"] or deal["valuation_median_minor"]),
        currency=deal["currency"],
        requested_by=actor.subject,
        retry_of=str(last["payout_id"]),
    )


async def cancel_payout(request: web.Request) -> web.Response:
    payout_id = path_uuid(request, "payout_id")
    key = idempotency_key(request)
    actor = actor_of(request)
    fingerprint = request_fingerprint({"payout_id": payout_id})

    async def decide(conn: AsyncConnection, seed: str | None) -> Outcome:
        row = await store.get_payout(conn, payout_id)
        if row is None:
            raise PayoutNotFound(payout_id)
        can_cancel(row["phase"])  # 409 for a finished payout: nothing to ask the provider
        event = PayoutCancelRequested(
            event_id=command_id(seed, PayoutCancelRequested.TOPIC),
            offer_id=str(row["offer_id"]),
            creator_id=str(row["creator_id"]),
            occurred_at=datetime.now(UTC),
            correlation_id=actor.correlation_id,
            causation_id=str(row["requested_event_id"]),
            payout_id=payout_id,
            requested_by=actor.subject,
        )
        answer = {
            "payout_id": payout_id,
            "offer_id": event.offer_id,
            "cancel_request_id": event.event_id,
            "requested_by": actor.subject,
            "status": "cancel_requested",
        }
        return Outcome(202, answer, (event,))

    answer = await run_command(
        request, scope=f"payout-cancel:{actor.subject}", key=key, fingerprint=fingerprint, decide=decide
    )
    if answer.status == 202:
        log.warning("payout_cancel_requested", payout_id=payout_id, replayed=answer.replayed)
    return answer.response()


async def list_payouts(request: web.Request) -> web.Response:
    query = read_query(request, PayoutsQuery)
    async with read_connection(request.app[ENGINE]) as conn:
        if query.stuck:
            rows = await store.stuck(conn, query.older_than_seconds)
        else:
            rows = await store.list_payouts(conn, query.limit)
    shown = [{k: _json(v) for k, v in row.items() if k in SHOWN} for row in rows[: query.limit]]
    return web.json_response({"payouts": shown, "stuck": query.stuck})


def _json(value: Any) -> Any:
    if isinstance(value, Decimal):  # age_seconds: extract(epoch ...) is numeric
        return round(float(value), 1)
    if isinstance(value, uuid.UUID):
        return str(value)
    return jsonable(value)


# What an operator needs to see of a payout; never the driver's internals or key attempts.
SHOWN = frozenset(
    {
        "payout_id",
        "offer_id",
        "creator_id",
        "recipient_id",
        "phase",
        "parked_from",
        "amount_minor",
        "currency",
        "provider",
        "failure_reason",
        "retry_of",
        "checks",
        "next_check_at",
        "created_at",
        "updated_at",
        "completed_at",
        "age_seconds",
    }
)
