"""Reversals agent (concurrency 1, in the payouts worker): ``offer.payout.reversed`` -> the
reversing ledger posting.

Why here and not in the web handler's transaction: the web app records the webhook and
publishes what it means, and moves no money (it must not write the ledger, and it has no
business knowing the posting rules); the payouts worker is the one writer of payout
postings.

An event's ``amount_minor`` is the TOTAL reversed so far (Stripe's cumulative
``amount_reversed``; Wise: the whole payout), and a transfer can be reversed in several
parts, each its own webhook and event (``models.reversal.reversal_event_id(payout, total)``).
Each event posts the increment: its total minus what this payout's earlier reversals
already posted, under the reference ``payout-reversal:<payout_id>:<total>``. Exactly-once
effects with at-least-once delivery, in ONE database transaction per event:

- the payout row is locked (SELECT ... FOR UPDATE) before the sum is read, so two events of
  the same payout (two workers during a rebalance, a replay racing a live delivery) run one
  after the other, and the second sums what the first posted (READ COMMITTED: each
  statement sees what committed before it began);
- totals are monotonic: a total at or below what is already posted (a redelivery, the same
  reversal published twice after a lost commit, or an older total arriving late) posts
  nothing; a larger one posts only the difference, so the postings add up to the latest
  total however the events interleave;
- the reference is unique per total, and ``state.ledger.post`` inserts with ON CONFLICT DO
  NOTHING on it, as a last guard; the database checks balance at COMMIT.

The Kafka offset is committed only after the posting is durable (agents/consume.py), so a
crash in between re-runs the event, which then finds its total posted: a no-op.

The payout row itself stays ``succeeded`` (terminal rows are immutable, migration 0005; the
lock writes nothing): the reversal is a later fact about it, kept in the ledger, the event
log and the deal.
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
from state.ledger import payout_reversed_minor, post

AGENT = "payout-reversals"
log = get_logger(__name__)
_REVERSAL_LEDGER_NS = uuid.UUID("9f3e2d1c-4b5a-5c6d-8e7f-0a1b2c3d4e5f")


def reversal_transaction_id(payout_id: str, total_minor: int) -> str:
    """The ledger transaction id of the posting that brings ``payout_id``'s reversals to
    ``total_minor`` (one per reference ``payout-reversal:<payout_id>:<total_minor>``)."""
    return str(uuid.uuid5(_REVERSAL_LEDGER_NS, f"{uuid.UUID(payout_id)}:{int(total_minor)}"))


async def post_reversal(engine: Any, event: PayoutReversed) -> bool:
    """Post what this reversal adds for a succeeded payout; False when nothing was posted
    (its total is already posted, or the event does not fit the payout: logged and counted,
    never a crash)."""
    total = event.amount_minor
    async with engine.begin() as conn:
        payout = await store.get_payout(conn, event.payout_id, lock=True)
        problem = _mismatch(payout, event)
        if problem is not None:
            APP_ERRORS.labels(component=AGENT, reason=problem).inc()
            log.warning("payout_reversal_refused", payout_id=event.payout_id, reason=problem)
            return False
        assert payout is not None
        already = await payout_reversed_minor(conn, event.payout_id)
        posted = False
        if total > already:
            posting = payout_reversal_posting(
                payout_id=event.payout_id,
                offer_id=str(payout["offer_id"]),
                creator_id=str(payout["creator_id"]),
                amount_minor=total - already,
                reversed_total_minor=total,
                currency=event.currency,
                provider=event.provider.value,
                provider_reference=event.provider_reference,
                reason=event.reason,
                occurred_at=event.occurred_at,
            )
            posted = await post(conn, posting, reversal_transaction_id(event.payout_id, total))
    log.info(
        "payout_reversal_posted" if posted else "payout_reversal_already_posted",
        payout_id=event.payout_id,
        provider=event.provider.value,
        reversed_total_minor=total,
        posted_minor=total - already if posted else 0,
        already_posted_minor=already,
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
