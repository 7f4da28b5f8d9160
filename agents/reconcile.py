"""Reconciliation: what the providers say moved, compared with our payouts and the ledger.

``reconcile(engine, stripe, wise, since)`` lists the providers' transfers (Stripe by
``created[gte]``, Wise by profile and ``createdDateStart``), maps them to payouts (Stripe's
``transfer_group`` is the payout id; Wise's ``customerTransactionId`` is derived from it) and
reports every drift:

- ``missing_in_ledger``: money moved at a provider for a payout the ledger has no posting for;
- ``missing_at_provider``: a succeeded payout (and its posting) whose transfer the provider
  does not list;
- ``amount_mismatch`` / ``currency_mismatch``: the provider moved a different amount or
  currency than the payout;
- ``duplicate_transfers``: more than one executed transfer for one payout;
- ``returned_after_paid``: a transfer counted as paid that the provider has since reversed
  (Stripe, also in part) or that bounced back (Wise), with no reversing posting
  (``payout-reversal:<payout_id>:<total>``, one per reversal the provider's webhooks
  reported, each posting the increment); once they are in, the reversal is not drift, unless
  their sum differs from what the provider says came back in all (``amount_mismatch``);
- ``unknown_transfer``: a transfer that names no payout we know.

It never writes. ``spacemusic reconcile`` prints it; the payouts worker runs it on a schedule
(``PAYOUT_RECONCILE_INTERVAL_SECONDS``) and exports ``spacemusic_reconcile_drift``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.logging import get_logger
from infra.metrics import RECONCILE_DRIFT
from infra.providers.stripe import stripe_amount
from infra.providers.wise import customer_transaction_id
from models.ledger import PAYOUT_REVERSAL_PREFIX
from models.money import CURRENCY_EXPONENTS
from state.ledger import ledger_entries, ledger_transactions
from state.tables import payouts

log = get_logger(__name__)

DRIFT_KINDS = (
    "missing_in_ledger",
    "missing_at_provider",
    "amount_mismatch",
    "currency_mismatch",
    "duplicate_transfers",
    "returned_after_paid",
    "unknown_transfer",
)
_WISE_MOVED = frozenset(
    {"processing", "funds_converted", "outgoing_payment_sent", "waiting_recipient_input_to_proceed"}
)
_WISE_RETURNED = frozenset({"bounced_back", "funds_refunded", "charged_back"})


@dataclass(frozen=True, slots=True)
class Drift:
    kind: str
    payout_id: str | None
    provider: str
    reference: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class ProviderTransfer:
    provider: str
    reference: str
    payout_id: str | None
    amount_minor: int | None
    currency: str | None
    moved: bool  # money left our balance and has not come back
    returned: bool  # it left and came back (reversed / bounced)
    # How much came back, in the provider's unit: Stripe's amount_reversed (a partial reversal
    # leaves the transfer "moved" and returns only this part); a returned Wise transfer, all of it.
    returned_amount: int | None = None


@dataclass
class ReconcileReport:
    transfers: int = 0
    payouts: int = 0
    drifts: list[Drift] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.drifts

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(DRIFT_KINDS, 0)
        for drift in self.drifts:
            counts[drift.kind] += 1
        return counts


def _uuid(value: Any) -> str | None:
    try:
        return str(uuid.UUID(str(value))) if value else None
    except ValueError:
        return None


def stripe_transfers(raw: list[dict[str, Any]]) -> list[ProviderTransfer]:
    found = []
    for t in raw:
        payout_id = _uuid(t.get("transfer_group")) or _uuid((t.get("metadata") or {}).get("payout_id"))
        currency = str(t.get("currency") or "").upper() or None
        amount = t.get("amount") if isinstance(t.get("amount"), int) else None
        reversed_ = bool(t.get("reversed")) or (amount is not None and t.get("amount_reversed") == amount)
        back = t.get("amount_reversed") if isinstance(t.get("amount_reversed"), int) else None
        if reversed_ and not back:
            back = amount
        found.append(
            ProviderTransfer(
                "STRIPE", str(t.get("id")), payout_id, amount, currency, not reversed_, reversed_, back or None
            )
        )
    return found


def wise_transfers(raw: list[dict[str, Any]], ctid_to_payout: dict[str, str]) -> list[ProviderTransfer]:
    found = []
    for t in raw:
        status = t.get("status")
        if status not in _WISE_MOVED and status not in _WISE_RETURNED:
            continue  # never funded (or cancelled before funding): nothing moved
        currency = str(t.get("targetCurrency") or "") or None
        amount: int | None = None
        if currency in CURRENCY_EXPONENTS:
            try:
                amount = int(Decimal(str(t.get("targetValue"))).scaleb(CURRENCY_EXPONENTS[currency]))
            except (InvalidOperation, ValueError):
                amount = None
        payout_id = ctid_to_payout.get(str(t.get("customerTransactionId")))
        found.append(
            ProviderTransfer(
                "WISE",
                str(t.get("id")),
                payout_id,
                amount,
                currency,
                status in _WISE_MOVED,
                status in _WISE_RETURNED,
                amount if status in _WISE_RETURNED else None,
            )
        )
    return found


async def reconcile(
    engine: AsyncEngine, stripe: Any | None, wise: Any | None, since: datetime | None = None
) -> ReconcileReport:
    query = select(payouts)
    if since is not None:
        # A payout created a little before `since` may own a transfer created after it.
        query = query.where(payouts.c.created_at >= since - timedelta(days=1))
    async with engine.connect() as conn:
        rows = {str(r["payout_id"]): dict(r) for r in (await conn.execute(query)).mappings()}
        posted = set(
            (
                await conn.execute(
                    select(ledger_transactions.c.reference_id).where(
                        ledger_transactions.c.reference_id.like("payout:%")
                    )
                )
            ).scalars()
        )
        # What the posted reversals gave back (their debits to platform cash), summed per
        # payout over its references payout-reversal:<payout_id>:<total>.
        reversal_payout = func.split_part(ledger_entries.c.reference_id, ":", 2)
        reversed_back = {
            str(pid): int(amount)
            for pid, amount in await conn.execute(
                select(reversal_payout, func.sum(ledger_entries.c.amount_minor))
                .where(
                    ledger_entries.c.reference_id.startswith(PAYOUT_REVERSAL_PREFIX, autoescape=True),
                    ledger_entries.c.direction == "DEBIT",
                )
                .group_by(reversal_payout)
            )
        }
    transfers: list[ProviderTransfer] = []
    if stripe is not None:
        transfers += stripe_transfers(await stripe.list_transfers(since))
    if wise is not None:
        ctids = {customer_transaction_id(pid): pid for pid in rows}
        transfers += wise_transfers(await wise.list_transfers(since), ctids)
    report = ReconcileReport(transfers=len(transfers), payouts=len(rows))
    by_payout: dict[str, list[ProviderTransfer]] = defaultdict(list)
    for t in transfers:
        if t.payout_id is None or (t.payout_id not in rows and t.provider == "WISE"):
            report.drifts.append(Drift("unknown_transfer", t.payout_id, t.provider, t.reference, "names no payout"))
            continue
        by_payout[t.payout_id].append(t)
    for payout_id, found in by_payout.items():
        row = rows.get(payout_id)
        moved = [t for t in found if t.moved]
        if len(moved) > 1:
            refs = ",".join(t.reference for t in moved)
            report.drifts.append(
                Drift("duplicate_transfers", payout_id, moved[0].provider, refs, f"{len(moved)} moved")
            )
        for t in found:
            if row is None:
                report.drifts.append(Drift("unknown_transfer", payout_id, t.provider, t.reference, "no such payout"))
                continue
            if t.moved and f"payout:{payout_id}" not in posted:
                report.drifts.append(
                    Drift("missing_in_ledger", payout_id, t.provider, t.reference, f"phase {row['phase']}")
                )
            if t.currency is not None and t.currency != row["currency"]:
                report.drifts.append(
                    Drift("currency_mismatch", payout_id, t.provider, t.reference, f"{t.currency} != {row['currency']}")
                )
            elif t.amount_minor is not None:
                expected = (
                    stripe_amount(row["amount_minor"], row["currency"])
                    if t.provider == "STRIPE"
                    else row["amount_minor"]
                )
                if t.amount_minor != expected:
                    report.drifts.append(
                        Drift("amount_mismatch", payout_id, t.provider, t.reference, f"{t.amount_minor} != {expected}")
                    )
            if t.returned_amount and row["phase"] == "succeeded" and row["provider_reference"] == t.reference:
                # Money that came back after the payout was counted as paid is drift until its
                # reversing postings (agents/reversals.py) are in the ledger and add up to what
                # the provider says came back (Stripe's amount_reversed is cumulative).
                posted_back = reversed_back.get(payout_id)
                if posted_back is None:
                    report.drifts.append(
                        Drift("returned_after_paid", payout_id, t.provider, t.reference, "reversed/bounced after paid")
                    )
                else:
                    back = stripe_amount(posted_back, row["currency"]) if t.provider == "STRIPE" else posted_back
                    if back != t.returned_amount:
                        report.drifts.append(
                            Drift(
                                "amount_mismatch",
                                payout_id,
                                t.provider,
                                t.reference,
                                f"returned {t.returned_amount} != reversal posted {back}",
                            )
                        )
    listed = {(t.provider, t.reference) for t in transfers}
    for payout_id, row in rows.items():
        if row["phase"] != "succeeded" or (since is not None and row["created_at"] < since):
            continue
        provider = row["provider"]
        if (provider == "STRIPE" and stripe is None) or (provider == "WISE" and wise is None):
            continue
        if (provider, row["provider_reference"]) not in listed:
            report.drifts.append(
                Drift("missing_at_provider", payout_id, provider, row["provider_reference"], "not listed")
            )
    for kind, count in report.counts().items():
        RECONCILE_DRIFT.labels(kind=kind).set(count)
    log.info("reconcile_finished", transfers=report.transfers, payouts=report.payouts, **report.counts())
    return report


async def reconcile_forever(app: Any, interval_seconds: float) -> None:
    """The payouts worker's schedule: reconcile the last two days every ``interval_seconds``."""
    from datetime import UTC

    while True:
        await asyncio.sleep(interval_seconds)
        try:
            since = datetime.now(UTC) - timedelta(days=2)
            await reconcile(app.resources.engine, app.resources.stripe, app.resources.wise, since)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a provider or database outage: the gauge keeps its last value
            log.warning("reconcile_failed", error=type(exc).__name__, detail=str(exc)[:300])
