"""The pure rules behind operators' retry and cancel, and their events in the deal's fold."""

from __future__ import annotations

import io
import itertools

import fastavro
import pytest

from infra.avro import SchemaCatalog, event_to_record, record_to_event
from infra.settings import REPO_ROOT
from models.deal import DealStatus, apply_event, fold
from models.errors import PayoutNotCancellable, PayoutNotRetryable
from models.events import PayoutCancelRefused, PayoutCancelRequested, PayoutCompleted, PayoutProvider, PayoutStatus
from models.payout import CANCELLABLE, PayoutPhase, can_cancel, payout_id_for, retry_event_id, retry_target
from tests.support.events import PAYOUT, env, lifecycle


def _payout(phase: str, n: int = 0) -> dict:
    return {"payout_id": payout_id_for("o", n), "phase": phase, "recipient_id": "r"}


def test_only_a_deal_whose_every_payout_failed_can_be_retried() -> None:
    with pytest.raises(PayoutNotRetryable, match="no payout"):
        retry_target([])
    with pytest.raises(PayoutNotRetryable, match="is parked: only a failed payout"):
        retry_target([_payout("failed"), _payout("parked", 1)])
    with pytest.raises(PayoutNotRetryable, match="succeeded"):
        retry_target([_payout("succeeded")])
    history = [_payout("failed"), _payout("failed", 1)]
    assert retry_target(history) is history[-1]  # a retry follows the latest attempt


def test_the_same_retry_is_one_event_whoever_asks() -> None:
    assert retry_event_id(payout_id_for("o", 1)) == retry_event_id(payout_id_for("o", 1))
    assert retry_event_id(payout_id_for("o", 1)) != retry_event_id(payout_id_for("o", 2))


@pytest.mark.parametrize("phase", list(PayoutPhase))
def test_only_a_payout_of_unknown_outcome_can_be_cancelled(phase: PayoutPhase) -> None:
    if phase in (PayoutPhase.PARKED, PayoutPhase.STRIPE_UNKNOWN, PayoutPhase.WISE_UNKNOWN) or phase.endswith(
        "_pending"
    ):
        assert phase in CANCELLABLE
        can_cancel(phase.value)
    else:
        with pytest.raises(PayoutNotCancellable, match=phase.value):
            can_cancel(phase.value)


def _cancel_events() -> list:
    return [
        PayoutCancelRequested(**env(8), payout_id=PAYOUT, requested_by="auth0|ops"),
        PayoutCancelRefused(
            **env(9), payout_id=PAYOUT, requested_by="auth0|ops", reason="STRIPE answers succeeded (tr_1)"
        ),
    ]


def test_cancel_requests_and_refusals_roundtrip_through_their_schemas() -> None:
    catalog = SchemaCatalog.load(REPO_ROOT / "schema")
    for event in _cancel_events():
        schema = catalog.parsed(event.TOPIC)
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema, event_to_record(event))
        buf.seek(0)
        assert record_to_event(type(event), fastavro.schemaless_reader(buf, schema, schema)) == event


def test_cancel_facts_leave_the_fold_order_independent_and_the_status_to_the_outcome() -> None:
    events = lifecycle()[:5] + _cancel_events()  # requested, then an operator asked to cancel: refused
    reference = fold(events)
    assert reference is not None and reference.status is DealStatus.PAYOUT_REQUESTED
    for order in itertools.islice(itertools.permutations(events), 0, 40320, 331):
        deal = None
        for event in order:
            deal = apply_event(deal, event)
        assert deal == reference
    cancelled = PayoutCompleted(
        **env(10),
        payout_id=PAYOUT,
        status=PayoutStatus.FAILED,
        provider=PayoutProvider.NONE,
        amount_minor=2,
        currency="EUR",
        failure_reason="cancelled by auth0|ops: stripe confirmed nothing moved",
    )
    assert fold([*events, cancelled]).status is DealStatus.PAYOUT_FAILED
