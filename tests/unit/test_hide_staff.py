"""Creators do not see staff subjects in a deal's history (issue 11, point 4)."""

from __future__ import annotations

from web.deals import STAFF, hide_staff


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
