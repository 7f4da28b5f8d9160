"""Creators do not see staff subjects in a deal's history (issue 11, point 4)."""

from __future__ import annotations

from models.payout import cancelled_reason, hide_canceller
from web.deals import STAFF, hide_staff, hide_staff_in_deal


def test_staff_subjects_are_hidden_and_the_creators_own_kept() -> None:
    history = [
        {"event_type": "offer.created", "payload": {"offer_id": "o"}},
        {"event_type": "offer.accepted", "payload": {"accepted_by": "auth0|ops-jane", "advance_minor": 1}},
        {"event_type": "offer.payout.requested", "payload": {"requested_by": "auth0|creator-me"}},
    ]
    shown = hide_staff(history, "auth0|creator-me")
    assert shown[0] == history[0]
    assert shown[1]["payload"] == {"accepted_by": STAFF, "advance_minor": 1}
    assert shown[2]["payload"]["requested_by"] == "auth0|creator-me"
    assert history[1]["payload"]["accepted_by"] == "auth0|ops-jane"  # the input is not changed


def test_the_operator_who_cancelled_a_payout_reads_as_staff() -> None:
    reason = cancelled_reason("auth0|ops-jane", "STRIPE")
    assert reason == "cancelled by auth0|ops-jane: stripe confirmed nothing moved"
    history = [{"event_type": "offer.payout.completed", "payload": {"status": "FAILED", "failure_reason": reason}}]
    assert hide_staff(history, "auth0|creator-me")[0]["payload"]["failure_reason"] == (
        "cancelled by staff: stripe confirmed nothing moved"
    )
    deal = {"offer_id": "o", "payout_failure_reason": reason, "declined_by": None}
    assert hide_staff_in_deal(deal, "auth0|creator-me")["payout_failure_reason"].startswith("cancelled by staff: ")
    assert hide_staff_in_deal(deal, "auth0|ops-jane") == deal  # itself: shown as is
    assert hide_canceller("stripe: insufficient_funds", "x", STAFF) == "stripe: insufficient_funds"
    assert hide_canceller(None, "x", STAFF) is None
