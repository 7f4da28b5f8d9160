"""Commands the HTTP API accepts, and the handlers that carry them out.

An HTTP handler parses the request into a request model, builds one of these commands and
calls its handler; the handler reads what it needs, applies the domain's checks
(``models.rules``, which raise domain errors) and publishes the event. It never writes an
offer's state itself. The ``json_errors`` middleware maps the errors to HTTP answers.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from infra.kafka import EventPublisher
from infra.logging import get_logger
from models import rules
from models.errors import CreatorExists, CreatorNotFound, OfferNotFound, UnknownCreator
from models.events import (
    OfferAccepted,
    OfferCreated,
    OfferDeclined,
    OfferWithdrawn,
    PayoutRequested,
    RoyaltyPeriod,
)
from models.offers import decline_event_id, withdraw_event_id
from models.payout import payout_id_for
from projections.queries import get_deal
from state.creators import KnownCreators, get_creator, get_recipient, insert_creator, insert_recipient
from web.errors import Unavailable

log = get_logger(__name__)

_ACCEPT_NS = uuid.UUID("0d9f3a52-5f0b-5b8e-8d3c-7a4f1a2b9c10")
_COMMAND_NS = uuid.UUID("6a0c2a8e-3f1d-5b7a-9e42-1c5d8b7f0e31")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who sends a command: the principal's subject, the creator it is confined to (None:
    every creator) and the correlation id the resulting events carry."""

    subject: str
    scope: str | None
    correlation_id: str


@dataclass(frozen=True, slots=True)
class CreateOffer:
    actor: Actor
    creator_id: str
    currency: str
    royalty_history: tuple[RoyaltyPeriod, ...]
    # The idempotency scope and key ("<scope>\x1f<key>"): the offer and event ids derive from
    # it, so a retried command queues the same event. None: fresh ids.
    seed: str | None = None


@dataclass(frozen=True, slots=True)
class AcceptOffer:
    actor: Actor
    offer_id: str


@dataclass(frozen=True, slots=True)
class CloseOffer:
    """Decline or withdraw: who, which offer, and an optional short reason (never logged)."""

    actor: Actor
    offer_id: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class RequestPayout:
    actor: Actor
    offer_id: str
    recipient_id: str
    seed: str | None = None  # as for CreateOffer: the event id derives from it


@dataclass(frozen=True, slots=True)
class CreateCreator:
    creator_id: str
    display_name: str
    country: str | None


@dataclass(frozen=True, slots=True)
class AddRecipient:
    creator_id: str
    recipient_id: str
    currency: str
    ciphertext: bytes
    masked: dict[str, str]


async def visible_deal(conn: AsyncConnection, offer_id: str, scope: str | None) -> dict[str, Any]:
    """The deal, or :class:`OfferNotFound` when it is absent or hidden from ``scope``."""
    deal = await get_deal(conn, offer_id)
    if deal is None or not rules.visible_to(scope, deal["creator_id"]):
        raise OfferNotFound(offer_id)
    return deal


def command_id(seed: str | None, what: str) -> str:
    """A fresh id, or (with a seed) the same id for every retry of the same command."""
    return str(uuid.uuid4()) if seed is None else str(uuid.uuid5(_COMMAND_NS, f"{what}\x1f{seed}"))


async def create_offer(cmd: CreateOffer, conn: AsyncConnection, known: KnownCreators) -> OfferCreated:
    """The ``offer.created`` event, checked; the caller queues it (web/idempotent.py) in the
    transaction of ``conn``."""
    rules.can_act_for(cmd.actor.scope, cmd.creator_id)
    if not await known.exists(conn, cmd.creator_id):
        raise UnknownCreator()
    return OfferCreated(
        event_id=command_id(cmd.seed, "offer.created"),
        offer_id=command_id(cmd.seed, "offer"),
        creator_id=cmd.creator_id,
        occurred_at=datetime.now(UTC),
        correlation_id=cmd.actor.correlation_id,
        currency=cmd.currency,
        royalty_history=cmd.royalty_history,
    )


def _accepted(cmd: AcceptOffer, deal: dict[str, Any], now: datetime) -> OfferAccepted:
    return OfferAccepted(
        # One acceptance per offer: concurrent or retried accepts publish the same event id.
        event_id=str(uuid.uuid5(_ACCEPT_NS, cmd.offer_id)),
        offer_id=cmd.offer_id,
        creator_id=deal["creator_id"],
        occurred_at=now,
        correlation_id=cmd.actor.correlation_id,
        advance_minor=deal["valuation_median_minor"],
        currency=deal["currency"],
        termsheet_sha256=deal["termsheet_sha256"],
        accepted_by=cmd.actor.subject,
    )


async def accept_offer(cmd: AcceptOffer, engine: AsyncEngine, publisher: EventPublisher) -> bool:
    """Publishes ``offer.accepted``; False when the offer was already accepted (a no-op)."""
    return await _decide(cmd, engine, publisher, _ACCEPT)


async def _publish_decision(publisher: EventPublisher, event: OfferAccepted | OfferDeclined | OfferWithdrawn) -> None:
    """A broker or registry outage is 503 (retry later: the retry publishes the same event id)."""
    try:
        await publisher.publish(event)
    except Exception as exc:  # noqa: BLE001 - broker or registry down
        log.error("offer_decision_publish_failed", error=type(exc).__name__, offer_id=event.offer_id, kind=event.TOPIC)
        raise Unavailable("could not record this right now; retry later") from exc


def _declined(cmd: CloseOffer, deal: dict[str, Any], now: datetime) -> OfferDeclined:
    return OfferDeclined(
        # One decline per offer: a retry (or a second decliner) publishes the same event id.
        event_id=decline_event_id(cmd.offer_id),
        offer_id=cmd.offer_id,
        creator_id=deal["creator_id"],
        occurred_at=now,
        correlation_id=cmd.actor.correlation_id,
        declined_by=cmd.actor.subject,
        reason=cmd.reason,
    )


def _withdrawn(cmd: CloseOffer, deal: dict[str, Any], now: datetime) -> OfferWithdrawn:
    return OfferWithdrawn(
        event_id=withdraw_event_id(cmd.offer_id),
        offer_id=cmd.offer_id,
        creator_id=deal["creator_id"],
        occurred_at=now,
        correlation_id=cmd.actor.correlation_id,
        withdrawn_by=cmd.actor.subject,
        reason=cmd.reason,
    )


@dataclass(frozen=True, slots=True)
class _Decision:
    """What tells an acceptance, a decline and a withdrawal apart: the rules that apply and
    the event that records the decision."""

    already: Callable[[dict[str, Any]], bool]
    allowed: Callable[[dict[str, Any], datetime], None]
    event: Callable[[Any, dict[str, Any], datetime], OfferAccepted | OfferDeclined | OfferWithdrawn]
    logged_as: str


_ACCEPT = _Decision(rules.already_accepted, rules.can_accept, _accepted, "offer_accepted")
_DECLINE = _Decision(rules.already_declined, rules.can_decline, _declined, "offer_declined")
_WITHDRAW = _Decision(rules.already_withdrawn, rules.can_withdraw, _withdrawn, "offer_withdrawn")


async def _decide(
    cmd: AcceptOffer | CloseOffer, engine: AsyncEngine, publisher: EventPublisher, decision: _Decision
) -> bool:
    """Publish the decision's event unless it was already taken (then False: a no-op)."""
    async with engine.connect() as conn:
        deal = await visible_deal(conn, cmd.offer_id, cmd.actor.scope)
    if decision.already(deal):
        return False
    now = datetime.now(UTC)
    decision.allowed(deal, now)
    await _publish_decision(publisher, decision.event(cmd, deal, now))
    log.info(decision.logged_as, offer_id=cmd.offer_id)
    return True


async def decline_offer(cmd: CloseOffer, engine: AsyncEngine, publisher: EventPublisher) -> bool:
    """Publishes ``offer.declined``; False when the offer was already declined (a no-op)."""
    return await _decide(cmd, engine, publisher, _DECLINE)


async def withdraw_offer(cmd: CloseOffer, engine: AsyncEngine, publisher: EventPublisher) -> bool:
    """Publishes ``offer.withdrawn`` (operators only: the route requires admin); False when
    the offer was already withdrawn (a no-op)."""
    return await _decide(cmd, engine, publisher, _WITHDRAW)


async def request_payout(cmd: RequestPayout, conn: AsyncConnection) -> PayoutRequested:
    """The ``offer.payout.requested`` event, checked inside the caller's transaction (which
    holds the idempotency key's lock and queues the event, web/idempotent.py)."""
    deal = await visible_deal(conn, cmd.offer_id, cmd.actor.scope)
    rules.can_pay_out(deal)
    rules.can_receive_payout(deal, await get_recipient(conn, cmd.recipient_id))
    return PayoutRequested(
        event_id=command_id(cmd.seed, "offer.payout.requested"),
        offer_id=cmd.offer_id,
        creator_id=deal["creator_id"],
        occurred_at=datetime.now(UTC),
        correlation_id=cmd.actor.correlation_id,
        payout_id=payout_id_for(cmd.offer_id),
        recipient_id=cmd.recipient_id,
        amount_minor=deal["advance_minor"],
        currency=deal["currency"],
        requested_by=cmd.actor.subject,
    )


async def create_creator(cmd: CreateCreator, engine: AsyncEngine) -> dict[str, Any]:
    async with engine.begin() as conn:
        created = await insert_creator(conn, cmd.creator_id, cmd.display_name, cmd.country)
        creator = await get_creator(conn, cmd.creator_id)
    if not created or creator is None:
        raise CreatorExists(cmd.creator_id)
    return creator


async def add_recipient(cmd: AddRecipient, engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        if await get_creator(conn, cmd.creator_id) is None:
            raise CreatorNotFound(cmd.creator_id)
        await insert_recipient(conn, cmd.recipient_id, cmd.creator_id, cmd.currency, cmd.ciphertext, cmd.masked)
    log.info("recipient_added", creator_id=cmd.creator_id, recipient_id=cmd.recipient_id, kinds=sorted(cmd.masked))
