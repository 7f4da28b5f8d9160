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


def test_terminal_phases_have_no_way_out_and_every_step_is_a_listed_transition() -> None:
    from models.payout import TERMINAL, TRANSITIONS, allowed

    for phase in TERMINAL:
        assert TRANSITIONS[phase] == frozenset()
    verdicts = list(ProviderVerdict)
    for sequence in itertools.product(verdicts, repeat=4):
        phase = PayoutPhase.INTENT
        for verdict in sequence:
            action = next_action(phase)
            if action is Action.DONE:
                break
            pending = PayoutPhase.STRIPE_PENDING if action.value.endswith("stripe") else PayoutPhase.WISE_PENDING
            if action in CALLS:  # a call is recorded as pending before it goes out
                assert allowed(phase, pending), (phase, pending)
                phase = pending
            new = after(action, verdict)
            if new is None:  # not found by a lookup: a call follows, through its pending phase
                new = pending
            assert allowed(phase, new), (phase, new)
            phase = new


def test_a_parked_payout_is_looked_up_at_the_provider_it_waits_for() -> None:
    assert next_action(PayoutPhase.PARKED, "STRIPE") is Action.LOOKUP_STRIPE
    assert next_action(PayoutPhase.PARKED, "WISE") is Action.LOOKUP_WISE
    # Never a call, never the other provider: a parked outcome is only ever looked up.
    assert next_action(PayoutPhase.PARKED, None) is Action.LOOKUP_STRIPE


def test_not_found_after_a_stripe_5xx_waits_for_the_settle_window_before_a_fresh_key() -> None:
    from models.payout import NotFoundMove, after_not_found

    assert after_not_found("STRIPE", "http_500", 1.0, 60.0) is NotFoundMove.WAIT
    assert after_not_found("STRIPE", "http_502", None, 60.0) is NotFoundMove.WAIT
    assert after_not_found("STRIPE", "http_500", 61.0, 60.0) is NotFoundMove.CALL_FRESH_KEY
    # Timeouts, resets, 409 and 429 are not stored under the key: the same key is safe and
    # is the guard against the first request still running.
    for reason in ("timeout", "transport_error:ReadError", "idempotency_conflict", "rate_limited", None):
        assert after_not_found("STRIPE", reason, 10_000.0, 60.0) is NotFoundMove.CALL_SAME_KEY
    # Wise: the same customerTransactionId is the same transfer, funded at most once.
    assert after_not_found("WISE", "fund_http_500", 0.0, 60.0) is NotFoundMove.CALL_SAME_KEY
