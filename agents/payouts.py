"""Payouts agent (concurrency 1): ``offer.payout.requested`` -> provider transfer(s) ->
ledger -> ``offer.payout.completed``, plus the background resolver for parked payouts and
operators' ``offer.payout.cancel.requested`` (cancelled, or ``offer.payout.cancel.refused``).

The decisions live in ``models.payout`` (pure); this module only performs them:

- **One driver.** A payout is driven only by whoever holds its advisory lock
  (``state.payouts.driver_lock``); a second worker (the ``all`` role beside ``--role
  payouts``, or a rebalance) that receives the same request finds the lock taken and moves
  on. Every phase change is compare-and-set, and terminal phases are immutable in the
  database, so even a driver without the lock could not overwrite a recorded outcome.
- **Ambiguity is resolved, never guessed.** An unknown answer is followed by a lookup;
  "not found" leads to the same request under the same idempotency key, and to a fresh
  Stripe key only once the settle window has passed (``models.payout.after_not_found``).
- **Unknown never blocks.** After a couple of lookups the payout is parked (its own phase)
  and the handler returns, so the partition moves on; the resolver keeps asking with
  backoff (``infra.retry.PROVIDER_AMBIGUITY``'s schedule), adopts payouts a crashed worker
  left half-way, and publishes outcomes a crash left unpublished. A later payout of the
  same deal waits behind an unfinished one (per-deal sequencing); other deals flow.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncEngine

from agents.consume import Consumer, RawMessage, caused_by, from_faust
from infra.crypto import RecipientDetailsUnreadable, RecipientVault
from infra.kafka import EventPublisher
from infra.logging import get_logger
from infra.metrics import APP_ERRORS, PAYOUT_DURATION, STRIPE_TRANSFERS, WISE_TRANSFERS
from infra.providers.base import (
    PayoutProvider,
    StripeDestination,
    TransferRequest,
    TransferResult,
    TransferStatus,
    WiseDestination,
)
from infra.providers.stripe import idempotency_key as stripe_idempotency_key
from infra.providers.wise import customer_transaction_id
from infra.retry import PROVIDER_AMBIGUITY, RetryPolicy
from models.errors import PayoutNotRetryable
from models.events import (
    Event,
    PayoutCancelRefused,
    PayoutCancelRequested,
    PayoutCompleted,
    PayoutRequested,
    PayoutStatus,
)
from models.events import PayoutProvider as ProviderName
from models.ledger import payout_posting
from models.payout import (
    PENDING,
    TERMINAL,
    UNKNOWN,
    Action,
    NotFoundMove,
    PayoutPhase,
    ProviderVerdict,
    after,
    after_not_found,
    cancelled_reason,
    next_action,
    payout_id_for,
    provider_of,
    retry_event_id,
    retry_target,
)
from projections.queries import offer_pricing
from state import payouts as store
from state.creators import get_recipient
from state.ledger import post
from state.provider_objects import SqlProviderObjects
from state.tables import payouts as payouts_table

AGENT = "payouts"
log = get_logger(__name__)
_COMPLETED_NS = uuid.UUID("a3c1e7d4-8b52-5f0e-9c61-2d7b4e8f0a13")
_LEDGER_NS = uuid.UUID("4e2a9b71-0c3d-5e8f-a1b2-c3d4e5f60718")
# The handler's own short pauses between lookups before it parks a payout.
INLINE_AMBIGUITY = RetryPolicy("provider_ambiguity_inline", 0.5, 2.0)
CANCELLED = "cancelled"
CANCEL_BUSY = "not cancelled: a worker is driving this payout right now; try again"
# An operator's cancel from the API waits out at most this much of Stripe's settle window
# inside the (concurrency 1) agent; a longer wait is refused with the time to ask again.
CANCEL_MAX_WAIT_SECONDS = 30.0
# ...and the parked payout's lookups stay held back this long past the window, so the
# resolver's next call (a fresh key) does not reopen it just as the operator asks again.
CANCEL_HOLD_GRACE_SECONDS = 300.0
CANCEL_LOCK_ATTEMPTS = 20
CANCEL_LOCK_PAUSE_SECONDS = 0.5


def verdict_of(result: TransferResult | None) -> ProviderVerdict:
    if result is None:
        return ProviderVerdict.NOT_FOUND
    if result.status is TransferStatus.SUCCEEDED:
        return ProviderVerdict.SUCCEEDED
    if result.status is TransferStatus.FAILED and result.definite:
        return ProviderVerdict.DEFINITE_FAILURE
    return ProviderVerdict.UNKNOWN


def ledger_transaction_id(payout_id: str) -> str:
    return str(uuid.uuid5(_LEDGER_NS, payout_id))


class PayoutRunner:
    def __init__(
        self,
        engine: AsyncEngine,
        publisher: EventPublisher,
        vault: RecipientVault,
        stripe: PayoutProvider | None,
        wise: PayoutProvider | None,
        *,
        settle_seconds: float = 900.0,
        inline_unknown_rounds: int = 2,
        resolve_policy: RetryPolicy = PROVIDER_AMBIGUITY,
        resolver_poll_seconds: float = 1.0,
        driver: str | None = None,
        checkpoint: Callable[[str, str], None] | None = None,
    ) -> None:
        self._engine = engine
        self._publisher = publisher
        self._vault = vault
        self._providers = {"STRIPE": stripe, "WISE": wise}
        self._settle = settle_seconds
        self._inline_rounds = inline_unknown_rounds
        self._resolve_policy = resolve_policy
        self._poll = resolver_poll_seconds
        self.driver = driver or f"payouts-{uuid.uuid4().hex[:12]}"
        # Called after every committed phase ("after:<phase>") and every provider answer
        # ("after_call:<PROVIDER>"); the crash tests raise from it to die at that boundary.
        self._checkpoint = checkpoint or (lambda _where, _payout_id: None)
        objects = getattr(wise, "objects", None)
        if wise is not None and objects is not None and not isinstance(objects, SqlProviderObjects):
            # Wise objects are created once and found again by any worker: keep them in Postgres.
            wise.objects = SqlProviderObjects(engine, "WISE")  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ the consumer side

    async def handle(self, requested: PayoutRequested) -> None:
        started = time.monotonic()
        async with store.driver_lock(self._engine, requested.payout_id) as mine:
            if not mine:
                # Another worker drives this payout right now; it publishes the outcome.
                log.info("payout_driven_elsewhere", payout_id=requested.payout_id)
                return
            async with self._engine.begin() as conn:
                row = await store.get_payout(conn, requested.payout_id)
                if row is None:
                    refusal = await self._refusal(conn, requested)
                    await store.insert_payout(
                        conn,
                        payout_id=requested.payout_id,
                        offer_id=requested.offer_id,
                        creator_id=requested.creator_id,
                        recipient_id=requested.recipient_id,
                        amount_minor=requested.amount_minor,
                        currency=requested.currency,
                        phase=PayoutPhase.FAILED if refusal else PayoutPhase.INTENT,
                        provider=ProviderName.NONE.value if refusal else None,
                        failure_reason=refusal,
                        requested_event_id=requested.event_id,
                        correlation_id=requested.correlation_id,
                        completed_at=datetime.now(UTC) if refusal else None,
                        driver=self.driver,
                        retry_of=requested.retry_of,
                    )
                    if refusal:
                        APP_ERRORS.labels(component=AGENT, reason=refusal).inc()
                        log.warning("payout_refused", payout_id=requested.payout_id, reason=refusal)
                    created = True
                else:
                    created = False
            if created:
                self._checkpoint(f"after:{PayoutPhase.FAILED if refusal else PayoutPhase.INTENT}", requested.payout_id)
            final = await self._drive_safely(requested.payout_id, self._inline_rounds)
        if final is not None and PayoutPhase(final["phase"]) in TERMINAL:
            await self._publish_outcome(final)
            PAYOUT_DURATION.labels(outcome=final["phase"]).observe(time.monotonic() - started)

    async def _refusal(self, conn: Any, requested: PayoutRequested) -> str | None:
        offer = await offer_pricing(conn, requested.offer_id)
        if offer is None:
            return "offer_not_found"
        if offer["valuation_median_minor"] is None:
            return "no_median_price"
        expected = offer["advance_minor"] or offer["valuation_median_minor"]
        if requested.amount_minor != expected or requested.currency != offer["currency"]:
            return "amount_mismatch"
        recipient = await get_recipient(conn, requested.recipient_id)
        if recipient is None or recipient["creator_id"] != offer["creator_id"]:
            return "recipient_not_found"
        others = [p for p in await store.payouts_of_offer(conn, requested.offer_id) if p["phase"] != "failed"]
        if others:  # only a failed payout may be retried: never two live payouts for one deal
            return "offer_has_a_live_payout"
        return None

    # ------------------------------------------------------------------ operators

    async def cancel(self, payout_id: str, by: str, *, max_wait: float | None = None) -> str:
        """Cancel a parked (or unknown) payout, only once the provider confirms that nothing
        moved: its lookup finds no executed transfer and, for Stripe, the settle window has
        passed. Records who did it and publishes the failed outcome. Returns what happened.

        ``max_wait`` bounds how long it waits out the settle window (None: as long as it
        takes, the CLI); beyond it the cancel is refused and a parked payout's next lookup is
        held back past the window, so asking again then finds a quiet window."""
        async with store.driver_lock(self._engine, payout_id) as mine:
            if not mine:
                return CANCEL_BUSY
            async with self._engine.connect() as conn:
                row = await store.get_payout(conn, payout_id)
                recipient = await get_recipient(conn, row["recipient_id"]) if row else None
            if row is None:
                return "not cancelled: no such payout"
            phase = PayoutPhase(row["phase"])
            if phase in TERMINAL:
                return f"not cancelled: the payout is already {phase.value}"
            if phase not in (PayoutPhase.PARKED, *UNKNOWN, *PENDING):
                return f"not cancelled: the payout is {phase.value}, not parked"
            provider = row["parked_from"] or ("STRIPE" if phase.value.startswith("stripe") else "WISE")
            request = self._request(row, recipient, provider)
            if not isinstance(request, str):
                if provider == "STRIPE":
                    # Holding the lock, nobody calls Stripe for this payout any more; a request
                    # we sent may still execute until the settle window after it has passed.
                    async with self._engine.connect() as conn:
                        last_call = await store.last_call_started(conn, payout_id, provider)
                    if last_call is not None:
                        left = self._settle - (datetime.now(UTC) - last_call).total_seconds()
                        if left > 0 and max_wait is not None and left > max_wait:
                            await self._hold_resolver(row, left + CANCEL_HOLD_GRACE_SECONDS)
                            return (
                                f"not cancelled: a Stripe request may still execute for another {math.ceil(left)} s"
                                " (the settle window); ask again after that"
                            )
                        if left > 0:
                            log.info(
                                "payout_cancel_waits_for_settle_window", payout_id=payout_id, seconds=round(left, 1)
                            )
                            await asyncio.sleep(left)
                found = await self._provider(provider).lookup(request)
                if found is not None:
                    answer = found.failure_reason or found.reference
                    return f"not cancelled: {provider} answers {found.status.value} ({answer})"
            async with self._engine.begin() as conn:
                final = await store.set_phase(
                    conn,
                    payout_id,
                    phase.value,
                    PayoutPhase.FAILED.value,
                    provider=ProviderName.NONE.value,
                    failure_reason=cancelled_reason(by, provider),
                    completed_at=datetime.now(UTC),
                    driver=f"operator:{by}",
                    next_check_at=None,
                )
        log.warning("payout_cancelled", payout_id=payout_id, by=by, provider=provider)
        await self._publish_outcome(final)
        return CANCELLED

    async def cancel_when_free(self, payout_id: str, by: str, *, max_wait: float | None = None) -> str:
        """:meth:`cancel`, asked again for a while when a worker holds the payout: the
        resolver holds its lock only for a provider lookup, so "busy" is a moment, not an
        answer for an operator (the API's cancel and ``payouts cancel`` both go through here)."""
        outcome = CANCEL_BUSY
        for _ in range(CANCEL_LOCK_ATTEMPTS):
            outcome = await self.cancel(payout_id, by, max_wait=max_wait)
            if outcome != CANCEL_BUSY:
                break
            await asyncio.sleep(CANCEL_LOCK_PAUSE_SECONDS)
        return outcome

    async def handle_cancel(self, requested: PayoutCancelRequested) -> str:
        """An operator's cancel request from the API: :meth:`cancel`, bounded so the money
        agent is not held for a whole settle window, and a refusal published as
        ``offer.payout.cancel.refused`` (a cancel publishes the FAILED outcome itself).
        A redelivered request is harmless: the refusal's id derives from the request's, and
        a payout this very operator already cancelled is not refused again."""
        outcome = await self.cancel_when_free(
            requested.payout_id, requested.requested_by, max_wait=CANCEL_MAX_WAIT_SECONDS
        )
        if outcome == CANCELLED:
            return outcome
        async with self._engine.connect() as conn:
            row = await store.get_payout(conn, requested.payout_id)
        if (
            row is not None
            and row["phase"] == PayoutPhase.FAILED
            and row["driver"] == f"operator:{requested.requested_by}"
        ):
            return CANCELLED  # a redelivery of a request that was carried out
        refused = PayoutCancelRefused(
            **caused_by(requested, PayoutCancelRefused.TOPIC, datetime.now(UTC)),
            payout_id=requested.payout_id,
            requested_by=requested.requested_by,
            reason=outcome.removeprefix("not cancelled: ")[:500],
        )
        await self._publisher.publish(refused)
        log.warning("payout_cancel_refused", payout_id=requested.payout_id, reason=refused.reason)
        return outcome

    async def _hold_resolver(self, row: dict[str, Any], seconds: float) -> None:
        if row["phase"] != PayoutPhase.PARKED:
            return  # only a parked payout waits for a next check; others are orphans, driven at once
        async with self._engine.begin() as conn:
            await store.set_phase(
                conn,
                row["payout_id"],
                PayoutPhase.PARKED.value,
                PayoutPhase.PARKED.value,
                next_check_at=datetime.now(UTC) + timedelta(seconds=seconds),
            )

    # ------------------------------------------------------------------ the resolver

    async def resolve_forever(self) -> None:
        """Background task of the payouts worker: resolve what is due, then sleep a little."""
        log.info("payout_resolver_started", driver=self.driver)
        while True:
            try:
                await self.resolve_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a database blink: log it, try again next round
                log.warning("payout_resolver_failed", error=type(exc).__name__, detail=str(exc)[:300])
            await asyncio.sleep(self._poll)

    async def resolve_due(self) -> int:
        """One pass: every parked payout whose check is due, every orphan, every unpublished
        outcome. Returns how many payouts it drove."""
        async with self._engine.connect() as conn:
            due = await store.due_for_resolver(conn)
        driven = 0
        for payout_id in due:
            async with store.driver_lock(self._engine, payout_id) as mine:
                if not mine:
                    continue
                final = await self._drive_safely(payout_id, 0)
            if final is None:
                continue
            driven += 1
            if PayoutPhase(final["phase"]) in TERMINAL:
                await self._publish_outcome(final)
        return driven

    # ------------------------------------------------------------------ driving

    async def _drive_safely(self, payout_id: str, rounds_budget: int) -> dict[str, Any] | None:
        try:
            return await self._drive(payout_id, rounds_budget)
        except store.PhaseConflict as conflict:
            # Somebody else recorded a phase first; what they recorded stands.
            log.warning("payout_phase_conflict", payout_id=payout_id, detail=str(conflict))
            async with self._engine.connect() as conn:
                return await store.get_payout(conn, payout_id)

    async def _drive(self, payout_id: str, rounds_budget: int) -> dict[str, Any]:
        rounds = 0
        while True:
            async with self._engine.connect() as conn:
                row = await store.get_payout(conn, payout_id)
                assert row is not None
                recipient = await get_recipient(conn, row["recipient_id"])
                phase = PayoutPhase(row["phase"])
                if phase is PayoutPhase.INTENT and await store.open_payout_for_offer(conn, row["offer_id"], payout_id):
                    log.info("payout_waits_for_earlier_payout", payout_id=payout_id, offer_id=row["offer_id"])
                    return row  # per-deal sequencing: the resolver starts it once the other ends
            action = next_action(phase, row["parked_from"])
            if action is Action.DONE:
                return row
            provider_name = provider_of(action)
            request = self._request(row, recipient, provider_name)
            if isinstance(request, str):  # no destination for this provider: a definite refusal
                call = Action.CALL_STRIPE if provider_name == "STRIPE" else Action.CALL_WISE
                await self._record(row, provider_name, "transfer", TransferResult.refused(provider_name, request), call)
                continue
            if action in (Action.LOOKUP_STRIPE, Action.LOOKUP_WISE):
                found = await self._provider(provider_name).lookup(request)
                if verdict_of(found) is ProviderVerdict.NOT_FOUND:
                    move = await self._not_found_move(row, provider_name, request)
                    if move is NotFoundMove.WAIT:
                        new_phase = await self._record(
                            row,
                            provider_name,
                            "lookup",
                            TransferResult.unknown(provider_name, "not_found_within_settle_window"),
                            action,
                        )
                    else:
                        new_phase = await self._call(
                            row, provider_name, request, fresh_key=move is NotFoundMove.CALL_FRESH_KEY
                        )
                else:
                    new_phase = await self._record(row, provider_name, "lookup", found, action)
            else:
                new_phase = await self._call(row, provider_name, request)
            if new_phase in UNKNOWN:
                rounds += 1
                if rounds > rounds_budget:
                    return await self._park(payout_id, new_phase, provider_name)
                await asyncio.sleep(INLINE_AMBIGUITY.wait_seconds(rounds))

    async def _not_found_move(self, row: dict[str, Any], provider: str, request: TransferRequest) -> NotFoundMove:
        key = self._key(row, provider, request)
        async with self._engine.connect() as conn:
            last = await store.last_call_reason(conn, row["payout_id"], provider, key)
        since = row["ambiguous_since"]
        ambiguous_for = (datetime.now(UTC) - since).total_seconds() if since is not None else None
        move = after_not_found(provider, last, ambiguous_for, self._settle)
        log.info(
            "payout_not_found_move",
            payout_id=row["payout_id"],
            provider=provider,
            last_reason=last,
            ambiguous_for=round(ambiguous_for, 1) if ambiguous_for is not None else None,
            move=move.value,
        )
        return move

    async def _park(self, payout_id: str, phase: PayoutPhase, provider: str) -> dict[str, Any]:
        async with self._engine.begin() as conn:
            row = await store.get_payout(conn, payout_id)
            assert row is not None
            checks = int(row["checks"]) + 1
            delay = self._resolve_policy.wait_seconds(checks)
            parked = await store.set_phase(
                conn,
                payout_id,
                phase.value,
                PayoutPhase.PARKED.value,
                parked_from=provider,
                parked_at=row["parked_at"] or datetime.now(UTC),
                checks=checks,
                next_check_at=datetime.now(UTC) + timedelta(seconds=delay),
                driver=self.driver,
            )
        self._checkpoint("after:parked", payout_id)
        log.warning(
            "payout_parked", payout_id=payout_id, provider=provider, checks=checks, next_check_in=round(delay, 2)
        )
        return parked

    def _provider(self, name: str) -> PayoutProvider:
        provider = self._providers[name]
        assert provider is not None
        return provider

    def _key(self, row: dict[str, Any], provider: str, request: TransferRequest) -> str:
        if provider == "STRIPE":
            return stripe_idempotency_key(dataclasses.replace(request, attempt=int(row["stripe_key_attempt"])))
        return customer_transaction_id(row["payout_id"])

    def _request(self, row: dict[str, Any], recipient: dict[str, Any] | None, provider: str) -> TransferRequest | str:
        if self._providers[provider] is None:
            return f"{provider.lower()}_not_configured"
        if recipient is None:
            return "recipient_not_found"
        try:
            # Bound to this row: details copied in from another recipient's row do not open.
            details = self._vault.open(
                recipient["details_ciphertext"],
                recipient_id=str(recipient["recipient_id"]),
                creator_id=str(recipient["creator_id"]),
            )
        except RecipientDetailsUnreadable as exc:
            log.error("recipient_details_unreadable", payout_id=row["payout_id"], reason=str(exc))
            if PayoutPhase(row["phase"]) in (PayoutPhase.INTENT, PayoutPhase.STRIPE_FAILED):
                # The pending phase is committed before a call goes out, so this provider
                # was never asked: refusing is definite. Anywhere else a transfer may be in
                # flight, and only an operator decides (docs/runbooks/rotate-recipient-key.md).
                return "recipient_unreadable"
            raise
        if provider == "STRIPE":
            if "stripe_account_id" not in details:
                return "no_stripe_account"
            destination: StripeDestination | WiseDestination = StripeDestination(details["stripe_account_id"])
        else:
            bank = details.get("bank_account")
            if not bank:
                return "no_bank_account"
            destination = WiseDestination(holder_name=bank["holder_name"], iban=bank["iban"], bic=bank.get("bic"))
        return TransferRequest(
            payout_id=row["payout_id"],
            offer_id=row["offer_id"],
            amount_minor=row["amount_minor"],
            currency=row["currency"],
            destination=destination,
            attempt=int(row["stripe_key_attempt"]) if provider == "STRIPE" else 0,
            recipient_ref=str(row["recipient_id"]),
        )

    async def _call(
        self, row: dict[str, Any], provider: str, request: TransferRequest, *, fresh_key: bool = False
    ) -> PayoutPhase:
        action = Action.CALL_STRIPE if provider == "STRIPE" else Action.CALL_WISE
        pending = PayoutPhase.STRIPE_PENDING if provider == "STRIPE" else PayoutPhase.WISE_PENDING
        fields: dict[str, Any] = {"driver": self.driver, "next_check_at": None}
        if fresh_key:
            # The settle window proved nothing executed under the old key, which only replays
            # its 5xx: the next key is committed BEFORE the call goes out.
            fields.update(stripe_key_attempt=int(row["stripe_key_attempt"]) + 1, ambiguous_since=None)
            request = dataclasses.replace(request, attempt=int(row["stripe_key_attempt"]) + 1)
        async with self._engine.begin() as conn:
            moved = await store.set_phase(conn, row["payout_id"], row["phase"], pending.value, **fields)
            key = self._key(moved, provider, request)
            attempt_id = await store.start_attempt(conn, row["payout_id"], provider, "transfer", key)
        self._checkpoint(f"after:{pending}", row["payout_id"])
        if fresh_key:
            log.warning("payout_fresh_stripe_key", payout_id=row["payout_id"], attempt=request.attempt)
        result = await self._provider(provider).transfer(request)
        (STRIPE_TRANSFERS if provider == "STRIPE" else WISE_TRANSFERS).labels(outcome=verdict_of(result).value).inc()
        self._checkpoint(f"after_call:{provider}", row["payout_id"])
        return await self._record(moved, provider, "transfer", result, action, attempt_id=attempt_id)

    async def _record(
        self,
        row: dict[str, Any],
        provider: str,
        operation: str,
        result: TransferResult | None,
        action: Action,
        attempt_id: int | None = None,
    ) -> PayoutPhase:
        verdict = verdict_of(result)
        phase = after(action, verdict)
        assert phase is not None and result is not None
        status = {ProviderVerdict.SUCCEEDED: "succeeded", ProviderVerdict.DEFINITE_FAILURE: "failed"}.get(
            verdict, "unknown"
        )
        async with self._engine.begin() as conn:
            if attempt_id is None:
                attempt_id = await store.start_attempt(conn, row["payout_id"], provider, operation)
            await store.finish_attempt(conn, attempt_id, status, result.reference, result.failure_reason)
            fields: dict[str, Any] = {"driver": self.driver, "next_check_at": None}
            if phase is PayoutPhase.SUCCEEDED:
                now = datetime.now(UTC)
                fields.update(provider=provider, provider_reference=result.reference, completed_at=now)
                await store.set_phase(conn, row["payout_id"], row["phase"], phase.value, **fields)
                posting = payout_posting(
                    payout_id=row["payout_id"],
                    offer_id=row["offer_id"],
                    creator_id=row["creator_id"],
                    amount_minor=row["amount_minor"],
                    currency=row["currency"],
                    provider=provider,
                    provider_reference=result.reference,
                    occurred_at=now,
                )
                await post(conn, posting, ledger_transaction_id(row["payout_id"]))
            else:
                if phase is PayoutPhase.FAILED:
                    reasons = await store.attempt_reasons(conn, row["payout_id"])
                    fields.update(
                        provider=ProviderName.NONE.value,
                        failure_reason="; ".join(reasons)[:500],
                        completed_at=datetime.now(UTC),
                    )
                elif phase in UNKNOWN and provider == "STRIPE":
                    fields["ambiguous_since"] = func.coalesce(payouts_table.c.ambiguous_since, func.now())
                await store.set_phase(conn, row["payout_id"], row["phase"], phase.value, **fields)
        self._checkpoint(f"after:{phase}", row["payout_id"])
        log.info(
            "payout_phase",
            payout_id=row["payout_id"],
            provider=provider,
            operation=operation,
            verdict=verdict.value,
            phase=phase.value,
            reason=result.failure_reason,
        )
        return phase

    async def _publish_outcome(self, row: dict[str, Any]) -> None:
        succeeded = row["phase"] == PayoutPhase.SUCCEEDED
        event = PayoutCompleted(
            event_id=str(uuid.uuid5(_COMPLETED_NS, row["payout_id"])),
            offer_id=row["offer_id"],
            creator_id=row["creator_id"],
            occurred_at=row["completed_at"] or datetime.now(UTC),
            correlation_id=row["correlation_id"],
            causation_id=row["requested_event_id"],
            payout_id=row["payout_id"],
            status=PayoutStatus.SUCCEEDED if succeeded else PayoutStatus.FAILED,
            provider=ProviderName(row["provider"] or "NONE"),
            amount_minor=row["amount_minor"],
            currency=row["currency"],
            provider_reference=row["provider_reference"],
            failure_reason=None if succeeded else row["failure_reason"],
        )
        await self._publisher.publish(event)  # deterministic id: a second publish is a no-op downstream
        async with self._engine.begin() as conn:
            await store.mark_published(conn, row["payout_id"])


async def retry_request(conn: Any, offer_id: str, recipient_id: str | None, by: str, now: datetime) -> PayoutRequested:
    """The ``offer.payout.requested`` an operator's retry publishes: a new payout, linked to
    the failed one it retries (``retry_of``), optionally to another recipient of the same
    creator. Raises ``ValueError`` when the deal has no failed payout to retry."""
    history = await store.payouts_of_offer(conn, offer_id)
    try:
        last = retry_target(history)
    except PayoutNotRetryable as exc:
        raise ValueError(str(exc)) from exc
    offer = await offer_pricing(conn, offer_id)
    if offer is None:
        raise ValueError("no such deal")
    recipient_id = recipient_id or last["recipient_id"]
    recipient = await get_recipient(conn, recipient_id)
    if recipient is None or recipient["creator_id"] != offer["creator_id"]:
        raise ValueError("the recipient is not one of this creator's")
    payout_id = payout_id_for(offer_id, len(history))
    return PayoutRequested(
        event_id=retry_event_id(payout_id),  # the same retry twice is one event
        offer_id=offer_id,
        creator_id=str(offer["creator_id"]),
        occurred_at=now,
        correlation_id=last["correlation_id"],
        causation_id=str(last["requested_event_id"]),
        payout_id=payout_id,
        recipient_id=str(recipient_id),
        amount_minor=int(offer["advance_minor"] or offer["valuation_median_minor"]),
        currency=str(offer["currency"]),
        requested_by=f"operator:{by}",
        retry_of=str(last["payout_id"]),
    )


def runner_from_app(app: Any) -> PayoutRunner:
    resources = app.resources
    settings = app.settings
    return PayoutRunner(
        resources.engine,
        resources.publisher,
        resources.vault,
        resources.stripe,
        resources.wise,
        settle_seconds=settings.payout_settle_seconds,
        inline_unknown_rounds=settings.payout_inline_unknown_rounds,
        resolve_policy=dataclasses.replace(
            PROVIDER_AMBIGUITY, max_seconds=settings.payout_resolver_max_backoff_seconds
        ),
        resolver_poll_seconds=settings.payout_resolver_poll_seconds,
    )


def register(app) -> None:  # type: ignore[no-untyped-def]
    from agents import reversals  # the reversing postings run in the payouts worker too

    reversals.register(app)
    # One agent for payout requests and operators' cancel requests: both touch money state,
    # so they share the one stream and its concurrency of 1.
    topic = app.topic(app.settings.topic(PayoutRequested.TOPIC), app.settings.topic(PayoutCancelRequested.TOPIC))

    @app.agent(topic, name=AGENT, concurrency=1)  # moves money: never two in flight
    async def payouts_agent(stream):  # type: ignore[no-untyped-def]
        consumer = Consumer(AGENT, app.resources, app.settings.topic_namespace)
        runner = runner_from_app(app)
        background = [asyncio.ensure_future(runner.resolve_forever())]
        if app.settings.payout_reconcile_interval_seconds > 0:
            from agents.reconcile import reconcile_forever

            background.append(
                asyncio.ensure_future(reconcile_forever(app, app.settings.payout_reconcile_interval_seconds))
            )

        async def handle(event: Event, _: RawMessage) -> None:
            if isinstance(event, PayoutCancelRequested):
                await runner.handle_cancel(event)
                return
            assert isinstance(event, PayoutRequested)
            await runner.handle(event)

        try:
            async for message in stream.events():
                await consumer.process(from_faust(message.message), handle)
        finally:
            for task in background:
                task.cancel()
            for task in background:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
