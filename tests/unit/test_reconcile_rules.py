"""Reconciliation's reading of provider transfers: what counts as money that moved."""

from __future__ import annotations

import uuid

from agents.reconcile import DRIFT_KINDS, ReconcileReport, stripe_transfers, wise_transfers
from infra.providers.wise import customer_transaction_id


def test_stripe_transfers_map_to_payouts_and_reversals_are_returned_money() -> None:
    payout_id = str(uuid.uuid4())
    found = stripe_transfers(
        [
            {"id": "tr_1", "transfer_group": payout_id, "amount": 500, "currency": "eur", "reversed": False},
            {"id": "tr_2", "transfer_group": payout_id, "amount": 500, "currency": "eur", "reversed": True},
            {"id": "tr_3", "metadata": {"payout_id": payout_id.upper()}, "amount": 1, "currency": "usd"},
            {"id": "tr_4", "transfer_group": "not-a-uuid", "amount": 1, "currency": "eur"},
        ]
    )
    assert [(t.reference, t.payout_id, t.moved, t.returned) for t in found] == [
        ("tr_1", payout_id, True, False),
        ("tr_2", payout_id, False, True),
        ("tr_3", payout_id, True, False),
        ("tr_4", None, True, False),
    ]
    assert found[2].currency == "USD"


def test_wise_transfers_count_only_funded_or_returned_and_amounts_are_exact() -> None:
    payout_id = str(uuid.uuid4())
    ctids = {customer_transaction_id(payout_id): payout_id}
    ctid = customer_transaction_id(payout_id)
    raw = [
        {"id": 1, "status": "incoming_payment_waiting", "customerTransactionId": ctid},
        {"id": 2, "status": "cancelled", "customerTransactionId": ctid},
        {"id": 3, "status": "processing", "customerTransactionId": ctid, "targetValue": "1234.56", "targetCurrency": "EUR"},
        {"id": 4, "status": "bounced_back", "customerTransactionId": ctid, "targetValue": 7, "targetCurrency": "JPY"},
        {"id": 5, "status": "outgoing_payment_sent", "customerTransactionId": str(uuid.uuid4())},
    ]  # fmt: skip
    found = wise_transfers(raw, ctids)
    assert [(t.reference, t.payout_id, t.moved, t.returned, t.amount_minor) for t in found] == [
        ("3", payout_id, True, False, 123456),
        ("4", payout_id, False, True, 7),
        ("5", None, True, False, None),
    ]


def test_a_clean_report_counts_every_kind_as_zero() -> None:
    report = ReconcileReport(transfers=2, payouts=2)
    assert report.ok and report.counts() == dict.fromkeys(DRIFT_KINDS, 0)
