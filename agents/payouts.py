"""Payouts agent (concurrency 1): ``offer.payout.requested`` -> provider transfer(s) ->
ledger -> ``offer.payout.completed``.

The decisions live in ``models.payout`` (pure); this module only performs them, recording
each phase in Postgres before the next provider call. A redelivered request, or a worker
restarted after being killed at any point, resumes from the recorded phase: a transfer
that may have happened is looked up before anything else is tried, Wise is only tried
after a definite Stripe refusal, and the database admits at most one successful attempt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from agents.consume import Consumer, RawMessage, from_faust
from infra.crypto import RecipientVault
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
from models.events import Event, PayoutCompleted, PayoutRequested, PayoutStatus
from models.events import PayoutProvider as ProviderName
from models.ledger import payout_posting
from models.payout import Action, PayoutPhase, ProviderVerdict, after, next_action
from projections.queries import offer_pricing
from state import payouts as store
from state.creators import get_recipient
from state.ledger import post

AGENT = "payouts"
log = get_logger(__name__)
_COMPLETED_NS = uuid.UUID("a3c1e7d4-8b52-5f0e-9c61-2d7b4e8f0a13")
_LEDGER_NS = uuid.UUID("4e2a9b71-0c3d-5e8f-a1b2-c3d4e5f60718")


class ProviderOutcomeUnknown(ConnectionError):
    """A provider could not tell us whether money moved; retried later, never guessed."""


def verdict_of(result: TransferResult | None) -> ProviderVerdict:
    if result is None:
        return ProviderVerdict.NOT_FOUND
    if result.status is TransferStatus.SUCCEEDED:
        return ProviderVerdict.SUCCEEDED
    if result.status is TransferStatus.FAILED and result.definite:
        return ProviderVerdict.DEFINITE_FAILURE
    return ProviderVerdict.UNKNOWN


class PayoutRunner:
    def __init__(
        self,
        engine: AsyncEngine,
        publisher: EventPublisher,
        vault: RecipientVault,
        stripe: PayoutProvider | None,
        wise: PayoutProvider | None,
        *,
        max_unknown_rounds: int = 4,
        unknown_backoff_seconds: float = 1.0,
    ) -> None:
        self._engine = engine
        self._publisher = publisher
        self._vault = vault
        self._providers = {"STRIPE": stripe, "WISE": wise}
        self._max_unknown_rounds = max_unknown_rounds
        self._backoff = unknown_backoff_seconds

    async def handle(self, requested: PayoutRequested) -> None:
        started = time.monotonic()
        async with self._engine.begin() as conn:
            row = await store.get_payout(conn, requested.payout_id, lock=True)
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
                )
                if refusal:
                    APP_ERRORS.labels(component=AGENT, reason=refusal).inc()
                    log.warning("payout_refused", payout_id=requested.payout_id, reason=refusal)
        final = await self._drive(requested.payout_id)
        await self._publish_outcome(final, requested)
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
        return None

    async def _drive(self, payout_id: str) -> dict[str, Any]:
        unknown_rounds = 0
        while True:
            async with self._engine.connect() as conn:
                row = await store.get_payout(conn, payout_id)
                assert row is not None
                recipient = await get_recipient(conn, row["recipient_id"])
            action = next_action(PayoutPhase(row["phase"]))
            if action is Action.DONE:
                return row
            provider_name = "STRIPE" if action in (Action.CALL_STRIPE, Action.LOOKUP_STRIPE) else "WISE"
            request = self._request(row, recipient, provider_name)
            if isinstance(request, str):  # no destination for this provider: a definite refusal
                await self._record(
                    row, provider_name, "transfer", TransferResult.refused(provider_name, request), action
                )
                continue
            if action in (Action.LOOKUP_STRIPE, Action.LOOKUP_WISE):
                found = await self._provider(provider_name).lookup(request)
                if verdict_of(found) is ProviderVerdict.NOT_FOUND:
                    phase = await self._call(row, provider_name, request)
                else:
                    phase = await self._record(row, provider_name, "lookup", found, action)
            else:
                phase = await self._call(row, provider_name, request)
            if phase in (PayoutPhase.STRIPE_UNKNOWN, PayoutPhase.WISE_UNKNOWN):
                unknown_rounds += 1
                if unknown_rounds > self._max_unknown_rounds:
                    raise ProviderOutcomeUnknown(f"{provider_name} outcome unknown for payout {payout_id}")
                await asyncio.sleep(self._backoff * unknown_rounds)

    def _provider(self, name: str) -> PayoutProvider:
        provider = self._providers[name]
        assert provider is not None
        return provider

    def _request(self, row: dict[str, Any], recipient: dict[str, Any] | None, provider: str) -> TransferRequest | str:
        if self._providers[provider] is None:
            return f"{provider.lower()}_not_configured"
        if recipient is None:
            return "recipient_not_found"
        details = self._vault.open(recipient["details_ciphertext"])
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
        )

    async def _call(self, row: dict[str, Any], provider: str, request: TransferRequest) -> PayoutPhase:
        action = Action.CALL_STRIPE if provider == "STRIPE" else Action.CALL_WISE
        async with self._engine.begin() as conn:
            attempt = await store.poisoned_stripe_keys(conn, row["payout_id"]) if provider == "STRIPE" else 0
            pending = PayoutPhase.STRIPE_PENDING if provider == "STRIPE" else PayoutPhase.WISE_PENDING
            await store.set_phase(conn, row["payout_id"], pending)
            attempt_id = await store.start_attempt(conn, row["payout_id"], provider, "transfer")
        if attempt:
            request = dataclasses.replace(request, attempt=attempt)
        result = await self._provider(provider).transfer(request)
        (STRIPE_TRANSFERS if provider == "STRIPE" else WISE_TRANSFERS).labels(outcome=verdict_of(result).value).inc()
        return await self._record(row, provider, "transfer", result, action, attempt_id=attempt_id)

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
            fields: dict[str, Any] = {}
            if phase is PayoutPhase.SUCCEEDED:
                now = datetime.now(UTC)
                fields = {"provider": provider, "provider_reference": result.reference, "completed_at": now}
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
                await post(conn, posting, str(uuid.uuid5(_LEDGER_NS, row["payout_id"])))
            elif phase is PayoutPhase.FAILED:
                reasons = await store.attempt_reasons(conn, row["payout_id"])
                fields = {
                    "provider": ProviderName.NONE.value,
                    "failure_reason": "; ".join(reasons)[:500],
                    "completed_at": datetime.now(UTC),
                }
            await store.set_phase(conn, row["payout_id"], phase, **fields)
        log.info(
            "payout_phase",
            payout_id=row["payout_id"],
            provider=provider,
            operation=operation,
            verdict=verdict.value,
            phase=phase.value,
        )
        return phase

    async def _publish_outcome(self, row: dict[str, Any], requested: PayoutRequested) -> None:
        succeeded = row["phase"] == PayoutPhase.SUCCEEDED
        event = PayoutCompleted(
            event_id=str(uuid.uuid5(_COMPLETED_NS, row["payout_id"])),
            offer_id=row["offer_id"],
            creator_id=row["creator_id"],
            occurred_at=row["completed_at"] or datetime.now(UTC),
            correlation_id=row["correlation_id"],
            causation_id=requested.event_id,
            payout_id=row["payout_id"],
            status=PayoutStatus.SUCCEEDED if succeeded else PayoutStatus.FAILED,
            provider=ProviderName(row["provider"] or "NONE"),
            amount_minor=row["amount_minor"],
            currency=row["currency"],
            provider_reference=row["provider_reference"],
            failure_reason=None if succeeded else row["failure_reason"],
        )
        await self._publisher.publish(event)


def register(app) -> None:  # type: ignore[no-untyped-def]
    topic = app.topic(app.settings.topic(PayoutRequested.TOPIC))

    @app.agent(topic, name=AGENT, concurrency=1)  # moves money: never two in flight
    async def payouts_agent(stream):  # type: ignore[no-untyped-def]
        resources = app.resources
        consumer = Consumer(AGENT, resources, app.settings.topic_namespace)
        runner = PayoutRunner(resources.engine, resources.publisher, resources.vault, resources.stripe, resources.wise)

        async def handle(event: Event, _: RawMessage) -> None:
            assert isinstance(event, PayoutRequested)
            await runner.handle(event)

        async for message in stream.events():
            await consumer.process(from_faust(message.message), handle)
