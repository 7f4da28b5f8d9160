"""The payout state machine: every path from intent ends in one success or a failure, and
no path calls Wise unless Stripe definitely refused, or looks up before nothing was sent."""

from __future__ import annotations

import itertools

from models.payout import Action, PayoutPhase, ProviderVerdict, after, next_action, payout_id_for

CALLS = {Action.CALL_STRIPE, Action.CALL_WISE}
LOOKUPS = {Action.LOOKUP_STRIPE, Action.LOOKUP_WISE}


def test_happy_path_is_one_stripe_call() -> None:
    assert next_action(PayoutPhase.INTENT) is Action.CALL_STRIPE
    assert after(Action.CALL_STRIPE, ProviderVerdict.SUCCEEDED) is PayoutPhase.SUCCEEDED


def test_wise_only_after_a_definite_stripe_refusal() -> None:
    assert after(Action.CALL_STRIPE, ProviderVerdict.UNKNOWN) is PayoutPhase.STRIPE_UNKNOWN
    assert next_action(PayoutPhase.STRIPE_UNKNOWN) is Action.LOOKUP_STRIPE  # never Wise
    assert after(Action.CALL_STRIPE, ProviderVerdict.DEFINITE_FAILURE) is PayoutPhase.STRIPE_FAILED
    assert next_action(PayoutPhase.STRIPE_FAILED) is Action.CALL_WISE
    assert after(Action.CALL_WISE, ProviderVerdict.DEFINITE_FAILURE) is PayoutPhase.FAILED


def test_pending_phases_are_reconciled_before_anything_else() -> None:
    assert next_action(PayoutPhase.STRIPE_PENDING) is Action.LOOKUP_STRIPE
    assert next_action(PayoutPhase.WISE_PENDING) is Action.LOOKUP_WISE
    assert after(Action.LOOKUP_STRIPE, ProviderVerdict.NOT_FOUND) is None  # then call, same key


def test_wise_is_never_called_unless_stripe_definitely_refused() -> None:
    verdicts = [ProviderVerdict.SUCCEEDED, ProviderVerdict.DEFINITE_FAILURE, ProviderVerdict.UNKNOWN]
    for sequence in itertools.product(verdicts, repeat=4):
        phase = PayoutPhase.INTENT
        wise_called_after = None
        for verdict in sequence:
            action = next_action(phase)
            if action is Action.DONE:
                break
            if action is Action.CALL_WISE:
                wise_called_after = phase
            phase = after(action, verdict) or phase
        assert wise_called_after in (None, PayoutPhase.STRIPE_FAILED)
        if PayoutPhase.SUCCEEDED in visited(sequence):
            assert phase is PayoutPhase.SUCCEEDED  # a success is final


def visited(sequence: tuple[ProviderVerdict, ...]) -> list[PayoutPhase]:
    phase, seen = PayoutPhase.INTENT, []
    for verdict in sequence:
        action = next_action(phase)
        if action is Action.DONE:
            break
        phase = after(action, verdict) or phase
        seen.append(phase)
    return seen


def test_payout_id_is_stable_per_offer() -> None:
    offer = "00000000-0000-4000-8000-000000000001"
    assert payout_id_for(offer) == payout_id_for(offer) != payout_id_for("00000000-0000-4000-8000-000000000002")
