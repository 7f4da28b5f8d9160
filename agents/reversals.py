"""Reversals agent (concurrency 1, in the payouts worker): ``offer.payout.reversed`` -> the
reversing ledger posting.

Why here and not in the web handler's transaction: the web app records the webhook and
publishes what it means, and moves no money (it must not write the ledger, and it has no
business knowing the posting rules); the payouts worker is the one writer of payout
postings. Exactly-once effects with at-least-once delivery come from the posting's unique
reference ``payout-reversal:<payout_id>``: a redelivered event, the same reversal published
twice (a webhook retried after a lost commit) or two workers racing all end in ONE ledger
transaction, because ``state.ledger.post`` inserts with ON CONFLICT DO NOTHING on that
reference and the database checks balance at COMMIT. The Kafka offset is committed only
after the posting is durable (agents/consume.py), so a crash in between re-posts, which is
a no-op.

The payout row itself stays ``succeeded`` (terminal rows are immutable, migration 0005):
the reversal is a later fact about it, kept in the ledger, the event log and the deal.
"""

from __future__ import annotations

import uuid
from typing import Any

from agents.consume import Consumer, RawMessage, from_faust
from infra.logging import get_logger
from infra.metrics import APP_ERRORS
from models.events import Event, PayoutReversed
from models.ledger import payout_reversal_posting
from state import payouts as store
from state.ledger import post

AGENT = "payout-reversals"
log = get_logger(__name__)
_REVERSAL_LEDGER_NS = uuid.UUID("9f3e2d1c-4b5a-5c6d-8e7f-0a1b2c3d4e5f")


def reversal_transaction_id(payout_id: str) -> str:
    return str(uuid.uuid5(_REVERSAL_LEDGER_NS, str(uuid.UUID(payout_id))))


async def post_reversal(engine: Any, event: PayoutReversed) -> bool:
    """Post the reversing entry for a succeeded payout; False when nothing was posted (already
    posted, or the event does not fit the payout: logged and counted, never a crash)."""
    async with engine.begin() as conn:
        payout = await store.get_payout(conn, event.payout_id)
        problem = _mismatch(payout, event)
        if problem is not None:
            APP_ERRORS.labels(component=AGENT, reason=problem).inc()
            log.warning("payout_reversal_refused", payout_id=event.payout_id, reason=problem)
            return False
        assert payout is not None
        posting = payout_reversal_posting(
            payout_id=event.payout_id,
            offer_id=str(payout["offer_id"]),
            creator_id=str(payout["creator_id"]),
            amount_minor=event.amount_minor,
            currency=event.currency,
            provider=event.provider.value,
            provider_reference=event.provider_reference,
            reason=event.reason,
            occurred_at=event.occurred_at,
        )
        posted = await post(conn, posting, reversal_transaction_id(event.payout_id))
    log.info(
        "payout_reversal_posted" if posted else "payout_reversal_already_posted",
        payout_id=event.payout_id,
        provider=event.provider.value,
        amount_minor=event.amount_minor,
        currency=event.currency,
        reason=event.reason,
    )
    return posted


def _mismatch(payout: dict[str, Any] | None, event: PayoutReversed) -> str | None:
    """The web app checked these already; the ledger writer checks again before money moves
    in the books (an event can also come from a replay or an operator's re-drive)."""
    if payout is None:
        return "reversal_unknown_payout"
    if payout["phase"] != "succeeded":
        return "reversal_of_unpaid_payout"
    if payout["provider"] != event.provider.value or str(payout["provider_reference"]) != event.provider_reference:
        return "reversal_other_transfer"
    if payout["currency"] != event.currency:
        return "reversal_currency_mismatch"
    if not 0 < event.amount_minor <= int(payout["amount_minor"]):
        return "reversal_amount_out_of_range"
    return None


def register(app: Any) -> None:
    topic = app.topic(app.settings.topic(PayoutReversed.TOPIC))

    @app.agent(topic, name=AGENT, concurrency=1)  # writes the ledger: one at a time
    async def reversals_agent(stream: Any) -> None:
        consumer = Consumer(AGENT, app.resources, app.settings.topic_namespace)

        async def handle(event: Event, _: RawMessage) -> None:
            assert isinstance(event, PayoutReversed)
            await post_reversal(app.resources.engine, event)

        async for message in stream.events():
            await consumer.process(from_faust(message.message), handle)
