"""The payout as a state machine with recorded phases ("atomic phases").

Each phase is committed (compare-and-set: ``UPDATE ... WHERE phase = <expected>``) before the
next provider call, so a worker that dies anywhere resumes from the recorded phase instead of
deciding again, and a second driver can never overwrite what the first recorded:

  intent -> stripe_pending -> succeeded
                          \\-> stripe_unknown -> (lookup) -> succeeded | stripe_pending (same key) | parked
                          \\-> stripe_failed (a DEFINITE Stripe refusal: nothing moved)
  stripe_failed -> wise_pending -> succeeded | failed (both refused) | wise_unknown -> (lookup) ... | parked
  parked -> (resolver: lookup with backoff) -> succeeded | stripe_failed | failed | *_pending | parked

A *pending* phase means "a provider call may be in flight": found by a successor, it is
treated exactly like an unknown outcome, i.e. reconciled by lookup before anything else.
``parked`` is an unknown outcome handed to the background resolver, so the consumer moves
on; ``parked_from`` names the provider whose answer is awaited. ``succeeded`` and ``failed``
are terminal: the database refuses to change them.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from models.errors import PayoutNotCancellable, PayoutNotRetryable


class PayoutPhase(enum.StrEnum):
    INTENT = "intent"
    STRIPE_PENDING = "stripe_pending"
    STRIPE_UNKNOWN = "stripe_unknown"
    STRIPE_FAILED = "stripe_failed"
    WISE_PENDING = "wise_pending"
    WISE_UNKNOWN = "wise_unknown"
    PARKED = "parked"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


TERMINAL = frozenset({PayoutPhase.SUCCEEDED, PayoutPhase.FAILED})
UNKNOWN = frozenset({PayoutPhase.STRIPE_UNKNOWN, PayoutPhase.WISE_UNKNOWN})
PENDING = frozenset({PayoutPhase.STRIPE_PENDING, PayoutPhase.WISE_PENDING})

# Every phase change the driver may make; anything else is a bug (and refused by a test).
TRANSITIONS: dict[PayoutPhase, frozenset[PayoutPhase]] = {
    PayoutPhase.INTENT: frozenset({PayoutPhase.STRIPE_PENDING, PayoutPhase.STRIPE_FAILED, PayoutPhase.FAILED}),
    PayoutPhase.STRIPE_PENDING: frozenset(
        {
            PayoutPhase.SUCCEEDED,
            PayoutPhase.STRIPE_UNKNOWN,
            PayoutPhase.STRIPE_FAILED,
            PayoutPhase.STRIPE_PENDING,
            PayoutPhase.PARKED,
        }
    ),
    PayoutPhase.STRIPE_UNKNOWN: frozenset(
        {
            PayoutPhase.SUCCEEDED,
            PayoutPhase.STRIPE_UNKNOWN,
            PayoutPhase.STRIPE_FAILED,
            PayoutPhase.STRIPE_PENDING,
            PayoutPhase.PARKED,
        }
    ),
    PayoutPhase.STRIPE_FAILED: frozenset({PayoutPhase.WISE_PENDING, PayoutPhase.FAILED}),
    PayoutPhase.WISE_PENDING: frozenset(
        {
            PayoutPhase.SUCCEEDED,
            PayoutPhase.WISE_UNKNOWN,
            PayoutPhase.FAILED,
            PayoutPhase.WISE_PENDING,
            PayoutPhase.PARKED,
        }
    ),
    PayoutPhase.WISE_UNKNOWN: frozenset(
        {
            PayoutPhase.SUCCEEDED,
            PayoutPhase.WISE_UNKNOWN,
            PayoutPhase.FAILED,
            PayoutPhase.WISE_PENDING,
            PayoutPhase.PARKED,
        }
    ),
    PayoutPhase.PARKED: frozenset(
        {
            PayoutPhase.PARKED,
            PayoutPhase.SUCCEEDED,
            PayoutPhase.STRIPE_FAILED,
            PayoutPhase.FAILED,
            PayoutPhase.STRIPE_PENDING,
            PayoutPhase.WISE_PENDING,
            PayoutPhase.STRIPE_UNKNOWN,
            PayoutPhase.WISE_UNKNOWN,
        }
    ),
    PayoutPhase.SUCCEEDED: frozenset(),
    PayoutPhase.FAILED: frozenset(),
}


def allowed(old: PayoutPhase, new: PayoutPhase) -> bool:
    return new in TRANSITIONS[old]


class ProviderVerdict(enum.StrEnum):
    SUCCEEDED = "succeeded"
    DEFINITE_FAILURE = "definite_failure"
    UNKNOWN = "unknown"
    NOT_FOUND = "not_found"  # a lookup: the provider has no executed transfer (yet)


class Action(enum.StrEnum):
    CALL_STRIPE = "call_stripe"
    LOOKUP_STRIPE = "lookup_stripe"
    CALL_WISE = "call_wise"
    LOOKUP_WISE = "lookup_wise"
    DONE = "done"


def next_action(phase: PayoutPhase, parked_from: str | None = None) -> Action:
    if phase is PayoutPhase.PARKED:
        return Action.LOOKUP_WISE if (parked_from or "").upper() == "WISE" else Action.LOOKUP_STRIPE
    return {
        PayoutPhase.INTENT: Action.CALL_STRIPE,
        PayoutPhase.STRIPE_PENDING: Action.LOOKUP_STRIPE,
        PayoutPhase.STRIPE_UNKNOWN: Action.LOOKUP_STRIPE,
        PayoutPhase.STRIPE_FAILED: Action.CALL_WISE,
        PayoutPhase.WISE_PENDING: Action.LOOKUP_WISE,
        PayoutPhase.WISE_UNKNOWN: Action.LOOKUP_WISE,
        PayoutPhase.SUCCEEDED: Action.DONE,
        PayoutPhase.FAILED: Action.DONE,
    }[phase]


def provider_of(action: Action) -> str:
    return "STRIPE" if action in (Action.CALL_STRIPE, Action.LOOKUP_STRIPE) else "WISE"


def after(action: Action, verdict: ProviderVerdict) -> PayoutPhase | None:
    """The phase a provider answer leads to; None means 'not found by a lookup' (see
    ``after_not_found`` for what that allows)."""
    stripe = provider_of(action) == "STRIPE"
    if verdict is ProviderVerdict.SUCCEEDED:
        return PayoutPhase.SUCCEEDED
    if verdict is ProviderVerdict.DEFINITE_FAILURE:
        return PayoutPhase.STRIPE_FAILED if stripe else PayoutPhase.FAILED
    if verdict is ProviderVerdict.UNKNOWN:
        return PayoutPhase.STRIPE_UNKNOWN if stripe else PayoutPhase.WISE_UNKNOWN
    return None  # NOT_FOUND after a lookup


class NotFoundMove(enum.StrEnum):
    CALL_SAME_KEY = "call_same_key"  # safe: the provider's idempotency answers for the first request
    CALL_FRESH_KEY = "call_fresh_key"  # Stripe only: the old key replays a 5xx and nothing executed
    WAIT = "wait"  # the old key replays a 5xx but the settle window is still open: ask again later


def is_stored_5xx(reason: str | None) -> bool:
    """Stripe stores a 5xx under its idempotency key and replays it (v1, 24 h)."""
    return (reason or "").startswith("http_5")


def after_not_found(
    provider: str, last_reason_under_key: str | None, ambiguous_for_seconds: float | None, settle_seconds: float
) -> NotFoundMove:
    """A lookup found no executed transfer. What may we do?

    - Wise: call again. The same ``customerTransactionId`` lands on the same transfer, and a
      transfer can be funded only once, so this can never pay twice.
    - Stripe, the last answer under the current key was NOT a stored 5xx (timeout, reset,
      409, 429, nothing yet): call again with the SAME key. If the first request executed,
      Stripe returns its stored success; if it is still running, Stripe answers 409.
    - Stripe, the last answer under the key was a 5xx: the same key would only replay it, and
      a 5xx is indeterminate (the transfer may still complete and become visible later). A
      fresh key is used only once the settle window has passed since the ambiguity began and
      the lookup still finds nothing; until then, wait and look again.
    """
    if provider == "WISE" or not is_stored_5xx(last_reason_under_key):
        return NotFoundMove.CALL_SAME_KEY
    if ambiguous_for_seconds is not None and ambiguous_for_seconds >= settle_seconds:
        return NotFoundMove.CALL_FRESH_KEY
    return NotFoundMove.WAIT


_PAYOUT_NS = uuid.UUID("6b1f4c1e-2d0c-5c53-9a6e-5041f0e1d7a1")


def payout_id_for(offer_id: str, retry: int = 0) -> str:
    """The offer's first payout (``retry=0``) and each operator retry after a failure have ids
    every redelivery and replay agrees on."""
    name = f"payout:{offer_id}" if retry == 0 else f"payout:{offer_id}:retry:{retry}"
    return str(uuid.uuid5(_PAYOUT_NS, name))


_RETRY_NS = uuid.UUID("0b6f1f0e-7a55-5a43-8f8e-3b1c2d4e5f60")
# What an operator may cancel: a payout whose outcome is not known. Terminal phases are
# final, and ``intent`` / ``stripe_failed`` have not (yet) sent money anywhere to ask about.
CANCELLABLE = frozenset({PayoutPhase.PARKED, *UNKNOWN, *PENDING})


def retry_target(history: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The payout an operator's retry follows: the deal's last one, provided every payout
    of the deal failed (``history`` oldest first). Raises :class:`PayoutNotRetryable`."""
    if not history:
        raise PayoutNotRetryable("the deal has no payout to retry")
    live = [p for p in history if p["phase"] != PayoutPhase.FAILED]
    if live:
        raise PayoutNotRetryable(
            f"payout {live[0]['payout_id']} is {live[0]['phase']}: only a failed payout can be retried"
        )
    return history[-1]


def retry_event_id(payout_id: str) -> str:
    """The ``offer.payout.requested`` id of a retry: the same retry asked twice (CLI or HTTP,
    any Idempotency-Key) is one event."""
    return str(uuid.uuid5(_RETRY_NS, payout_id))


def can_cancel(phase: str) -> None:
    """Raises :class:`PayoutNotCancellable` unless the payout's outcome is unknown."""
    if PayoutPhase(phase) not in CANCELLABLE:
        what = "already " if PayoutPhase(phase) in TERMINAL else ""
        raise PayoutNotCancellable(f"the payout is {what}{phase}: only a parked or unknown payout can be cancelled")


_CANCELLED_BY = "cancelled by "


def cancelled_reason(by: str, provider: str) -> str:
    """The failure reason of a payout an operator cancelled: names who, and what confirmed it."""
    return f"{_CANCELLED_BY}{by}: {provider.lower()} confirmed nothing moved"[:500]


def hide_canceller(reason: str | None, own_subject: str, shown_as: str) -> str | None:
    """``reason`` with the canceller read as ``shown_as`` unless it was ``own_subject`` (a
    creator sees who acted only when it was itself)."""
    if not reason or not reason.startswith(_CANCELLED_BY) or ": " not in reason:
        return reason
    by, rest = reason[len(_CANCELLED_BY) :].split(": ", 1)
    return reason if by == own_subject else f"{_CANCELLED_BY}{shown_as}: {rest}"
