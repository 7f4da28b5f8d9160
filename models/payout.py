"""The payout as a state machine with recorded phases ("atomic phases").

Each phase is committed before the next provider call, so a worker that dies anywhere
resumes from the recorded phase instead of deciding again:

  intent -> stripe_pending -> succeeded
                          \\-> stripe_unknown -> (lookup) -> succeeded | stripe_pending (retry)
                          \\-> stripe_failed (a DEFINITE Stripe refusal: nothing moved)
  stripe_failed -> wise_pending -> succeeded | failed (both refused) | wise_unknown -> (lookup) ...

A *pending* phase means "a provider call may be in flight": found at start-up, it is
treated exactly like an unknown outcome, i.e. reconciled by lookup before anything else.
Phases that are not pending (intent, stripe_failed) lead straight to the next call.
"""

from __future__ import annotations

import enum
import uuid


class PayoutPhase(enum.StrEnum):
    INTENT = "intent"
    STRIPE_PENDING = "stripe_pending"
    STRIPE_UNKNOWN = "stripe_unknown"
    STRIPE_FAILED = "stripe_failed"
    WISE_PENDING = "wise_pending"
    WISE_UNKNOWN = "wise_unknown"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


TERMINAL = frozenset({PayoutPhase.SUCCEEDED, PayoutPhase.FAILED})


class ProviderVerdict(enum.StrEnum):
    SUCCEEDED = "succeeded"
    DEFINITE_FAILURE = "definite_failure"
    UNKNOWN = "unknown"
    NOT_FOUND = "not_found"  # a lookup: the provider has no record, so it never executed


class Action(enum.StrEnum):
    CALL_STRIPE = "call_stripe"
    LOOKUP_STRIPE = "lookup_stripe"
    CALL_WISE = "call_wise"
    LOOKUP_WISE = "lookup_wise"
    DONE = "done"


def next_action(phase: PayoutPhase) -> Action:
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


def after(action: Action, verdict: ProviderVerdict) -> PayoutPhase | None:
    """The phase a provider answer leads to; None means 'call the provider now' (a lookup
    proved the transfer never happened, so calling with the same idempotency key is safe)."""
    stripe = action in (Action.CALL_STRIPE, Action.LOOKUP_STRIPE)
    if verdict is ProviderVerdict.SUCCEEDED:
        return PayoutPhase.SUCCEEDED
    if verdict is ProviderVerdict.DEFINITE_FAILURE:
        return PayoutPhase.STRIPE_FAILED if stripe else PayoutPhase.FAILED
    if verdict is ProviderVerdict.UNKNOWN:
        return PayoutPhase.STRIPE_UNKNOWN if stripe else PayoutPhase.WISE_UNKNOWN
    return None  # NOT_FOUND after a lookup


_PAYOUT_NS = uuid.UUID("6b1f4c1e-2d0c-5c53-9a6e-5041f0e1d7a1")


def payout_id_for(offer_id: str) -> str:
    """One payout per offer, with an id every retry and replay agrees on."""
    return str(uuid.uuid5(_PAYOUT_NS, f"payout:{offer_id}"))
