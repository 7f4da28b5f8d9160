"""What a verified provider webhook means for a payout: a reversal to record, or nothing.

Pure: the web app reads the notice and the payout row, asks :func:`decide`, records the
answer (the webhook's dedup row) and publishes ``offer.payout.reversed`` only for
``PUBLISHED``. Everything else is recorded as ``ignored:<why>`` and answered 200, so the
provider stops retrying an event we understood and chose not to act on; reconciliation
still sees the provider's side of it.

Which events mean "reversed":
- Stripe ``transfer.reversed`` (sent for full and partial reversals; the transfer's
  ``amount_reversed`` is the total reversed so far, so a second partial reversal reports the
  two parts' sum, and that total is what the published event carries);
- Wise ``transfers#state-change`` into ``bounced_back``, ``funds_refunded``,
  ``charged_back`` or ``cancelled``.
Only for a payout that is ``succeeded`` through that provider with that transfer id: an
event for a payout still in flight is the state machine's business (its lookup classifies a
reversed / bounced transfer as a definite failure), and one for a transfer we never recorded
is reconciliation's (``unknown_transfer``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

PUBLISHED: Final = "published"
STRIPE_REVERSED: Final = "transfer.reversed"
WISE_STATE_CHANGE: Final = "transfers#state-change"
WISE_RETURNED_STATES: Final = frozenset({"bounced_back", "funds_refunded", "charged_back", "cancelled"})
# One event per (payout, total reversed so far): a redelivered webhook, or a lost commit's
# republish, for the same total is the same event (the projector drops the copy); a later,
# larger partial reversal is a new event. The ledger's reversing postings are keyed the same
# way (models.ledger.payout_reversal_reference).
_REVERSED_NS: Final = uuid.UUID("6c0b51d2-3f7e-5a8b-9d14-2e6f7a8b9c0d")


@dataclass(frozen=True, slots=True)
class TransferNotice:
    """A verified webhook, reduced to what matters here (no account details)."""

    provider: str  # STRIPE | WISE
    event_id: str  # the dedup key: Stripe evt_..., Wise transfers#state-change:<id>:<state>
    event_type: str
    transfer_id: str | None
    occurred_at: datetime
    payout_id: str | None = None  # Stripe: transfer_group / metadata[payout_id]
    state: str | None = None  # Wise: current_state
    reversed_minor: int | None = None  # Stripe: amount_reversed, already in our minor units
    currency: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: str  # PUBLISHED or "ignored:<why>"
    amount_minor: int | None = None
    reason: str | None = None

    @property
    def publish(self) -> bool:
        return self.outcome == PUBLISHED


def _ignored(why: str) -> Decision:
    return Decision(f"ignored:{why}")


def decide(notice: TransferNotice, payout: Mapping[str, Any] | None) -> Decision:
    if notice.provider == "STRIPE" and notice.event_type != STRIPE_REVERSED:
        return _ignored("event_type")
    if notice.provider == "WISE":
        if notice.event_type != WISE_STATE_CHANGE:
            return _ignored("event_type")
        if notice.state not in WISE_RETURNED_STATES:
            return _ignored("not_a_return")
    if notice.transfer_id is None or payout is None:
        return _ignored("unknown_transfer")
    if payout["provider"] != notice.provider or str(payout["provider_reference"]) != notice.transfer_id:
        return _ignored("unknown_transfer")
    if payout["phase"] != "succeeded":
        return _ignored("not_succeeded")
    paid = int(payout["amount_minor"])
    if notice.provider == "WISE":
        return Decision(PUBLISHED, paid, f"wise_{notice.state}")
    if notice.currency is not None and notice.currency != payout["currency"]:
        return _ignored("currency_mismatch")
    if notice.reversed_minor is None or notice.reversed_minor <= 0:
        return _ignored("nothing_reversed")
    if notice.reversed_minor > paid:
        return _ignored("reversed_more_than_paid")
    full = notice.reversed_minor == paid
    return Decision(
        PUBLISHED,
        notice.reversed_minor,
        "stripe_transfer_reversed" if full else "stripe_transfer_partially_reversed",
    )


def reversal_event_id(payout_id: str, total_minor: int) -> str:
    """The ``offer.payout.reversed`` event id for ``payout_id`` reversed up to ``total_minor``
    (cumulative: Stripe's ``amount_reversed``, Wise's whole payout)."""
    if not isinstance(total_minor, int) or isinstance(total_minor, bool) or total_minor <= 0:
        raise ValueError(f"a reversal's total must be a positive integer: {total_minor!r}")
    return str(uuid.uuid5(_REVERSED_NS, f"{uuid.UUID(payout_id)}:{total_minor}"))
