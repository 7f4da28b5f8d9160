"""Commands that publish at most once per Idempotency-Key, through the event outbox.

One Postgres transaction takes the key's lock, replays a stored answer if there is one, and
otherwise runs the command's checks, builds its event (ids derived from scope and key, so a
retry builds the same event), queues the encoded event in ``event_outbox`` and stores the
answer. After the commit the event is published and its row marked sent. A process that
dies in between leaves the row to the relay (web/relay.py); the client's retry gets the
stored answer. See docs/architecture.md ("Idempotent commands and the outbox").

Which answers are stored (and replayed for the key) and which are not:

- 202 and the other successes: stored, with the event queued in the same transaction.
- 422 about the request itself (a recipient of another creator, a currency mismatch, a
  creator outside the caller's scope): stored; the same request cannot succeed later.
- 404, 409 and an unknown creator: NOT stored. They describe a state that moves on (the
  projection has not seen the offer yet, the offer is not accepted yet, the creator is
  created a moment later), so a retry with the same key is evaluated afresh.
- 5xx and 429: never stored (429 never reaches the handler). A 503 after the commit (the
  broker refused the event) takes back both the answer and the queued event, unless the
  relay has sent it meanwhile, in which case the request succeeded after all.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from infra.avro import RegistryUnavailable
from infra.kafka import EncodedEvent
from infra.logging import get_logger
from models.errors import Conflict, NotFound, UnknownCreator
from models.events import Event
from state import outbox
from state.idempotency import forget_response, lock_key, store_response, stored_response
from web.errors import Unavailable, ValidationFailed, error_answer, problem
from web.keys import ENGINE, PUBLISHER, SETTINGS
from web.relay import SENT_MARKS

log = get_logger(__name__)

# Test-only fault hook (honoured only when SPACEMUSIC_ENV is dev or test): the process exits
# right after a command's commit, before publishing, as a crash there would.
FAULT_AFTER_COMMIT = "SPACEMUSIC_FAULT_AFTER_COMMIT"
_FAULT_ENVS = frozenset({"dev", "test"})
MAX_IDEMPOTENCY_KEY = 255
# Refusals that depend on a state that moves on: answered, never stored (see above).
REEVALUATED: tuple[type[Exception], ...] = (NotFound, Conflict, UnknownCreator)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command decided: the answer, and the events that make it true."""

    status: int
    body: dict[str, Any]
    events: tuple[Event, ...] = ()
    final: bool = True  # stored under the key (when there is one)


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]
    replayed: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    def response(self, headers: dict[str, str] | None = None) -> web.Response:
        extra = {**self.headers, **(headers or {})}
        if self.replayed:
            extra["Idempotent-Replayed"] = "true"
        return web.json_response(self.body, status=self.status, headers=extra)


# The key was first used for a different request (never stored: it is about this request).
KEY_REUSED = Answer(
    422, {"error": "idempotency_key_reused", "message": "this Idempotency-Key was used for a different request"}
)

Decide = Callable[[AsyncConnection, str | None], Awaitable[Outcome]]


def optional_idempotency_key(request: web.Request) -> str | None:
    """The Idempotency-Key header where it is optional: None when absent, 422 when malformed."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise ValidationFailed([problem("Idempotency-Key", "1 to 255 characters when given")])
    return key


def seed_of(scope: str, key: str | None) -> str | None:
    """What command ids derive from: the scope (operation and subject) and the key."""
    return None if key is None else f"{scope}\x1f{key}"


async def _decided(decide: Decide, conn: AsyncConnection, seed: str | None) -> Outcome:
    try:
        return await decide(conn, seed)
    except Exception as exc:
        answer = error_answer(exc)
        if answer is None or answer[0] >= 500:
            raise
        return Outcome(answer[0], answer[1], final=not isinstance(exc, REEVALUATED))


async def run_command(request: web.Request, *, scope: str, key: str | None, fingerprint: str, decide: Decide) -> Answer:
    """Carry out a command at most once per ``(scope, key)``; without a key, once per call.

    ``decide(conn, seed)`` runs inside the transaction: it checks, and returns the answer with
    the events to publish, their ids derived from ``seed`` (None without a key)."""
    app = request.app
    publisher = app[PUBLISHER]
    async with _unit_of_work(app[ENGINE], keyed=key is not None) as conn:
        if key is not None:
            await lock_key(conn, scope, key)
            previous = await stored_response(conn, scope, key)
            if previous is not None:
                stored_hash, status, body = previous
                if stored_hash != fingerprint:
                    return KEY_REUSED
                return Answer(status, body, replayed=True)
        outcome = await _decided(decide, conn, seed_of(scope, key))
        try:
            messages = [await publisher.encode(event) for event in outcome.events]
        except RegistryUnavailable as exc:
            raise Unavailable("could not record the request right now; retry later") from exc
        seqs = await outbox.add(conn, messages)
        if key is not None and outcome.final:
            await store_response(conn, scope, key, fingerprint, outcome.status, outcome.body)
    if seqs:
        _fault_after_commit(app)
        await _deliver(request, seqs, messages, scope if outcome.final else None, key)
    return Answer(outcome.status, outcome.body)


async def _deliver(
    request: web.Request, seqs: list[int], messages: list[EncodedEvent], scope: str | None, key: str | None
) -> None:
    app = request.app
    try:
        await app[PUBLISHER].send_encoded(messages)
    except Exception as exc:  # noqa: BLE001 - broker away, timed out, producer closed
        async with app[ENGINE].begin() as conn:
            withdrawn = await outbox.withdraw(conn, seqs)
            if withdrawn and scope is not None and key is not None:
                await forget_response(conn, scope, key)
        if not withdrawn:
            # The relay sent it while we were failing to: the request did succeed.
            log.info("outbox_sent_by_relay", count=len(seqs))
            return
        log.error("command_publish_failed", error=type(exc).__name__, events=[m.topic for m in messages])
        raise Unavailable("could not record the request right now; retry later") from exc
    app[SENT_MARKS].add(seqs)


@contextlib.asynccontextmanager
async def _unit_of_work(engine: AsyncEngine, *, keyed: bool) -> AsyncIterator[AsyncConnection]:
    """With a key: one transaction (the key's lock, the record and the event's row commit
    together). Without: autocommit, as nothing is stored but the event's row, which its one
    INSERT commits on its own (the checks before it only read): no BEGIN and COMMIT round
    trips on the hot path of POST /offers."""
    if keyed:
        async with engine.begin() as conn:
            yield conn
    else:
        async with engine.connect() as conn:
            yield await conn.execution_options(isolation_level="AUTOCOMMIT")


def _fault_after_commit(app: web.Application) -> None:
    if app[SETTINGS].env in _FAULT_ENVS and os.environ.get(FAULT_AFTER_COMMIT) == "1":
        log.warning("fault_after_commit_exit")
        os._exit(17)
