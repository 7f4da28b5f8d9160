"""Provider webhook signatures (issue 9, point 9): good, forged, wrong secret / key, stale,
replayed; what a verified notice means for a payout; the reversal posting and the deal fold."""

from __future__ import annotations

import io
import itertools
import json
import time
from datetime import UTC, datetime, timedelta

import fastavro
import pytest

from infra.avro import SchemaCatalog, event_to_record, record_to_event
from infra.providers.stripe import from_stripe_amount
from infra.settings import REPO_ROOT
from infra.webhooks import WebhookRejected, check_fresh, verify_stripe, verify_wise
from models.deal import DealStatus, apply_event, fold
from models.events import PayoutProvider, PayoutReversed
from models.ledger import (
    InvalidPosting,
    balances,
    payout_posting,
    payout_reversal_posting,
    payout_reversal_reference,
    payout_reversals_prefix,
)
from models.reversal import PUBLISHED, TransferNotice, decide, reversal_event_id
from tests.fakes.webhooks import (
    new_wise_key,
    public_pem,
    signed_stripe,
    signed_wise,
    stripe_event_body,
    stripe_signature,
    wise_signature,
    wise_state_change_body,
)
from tests.support.events import CREATOR, OFFER, PAYOUT, env, lifecycle
from web.contract import StripeWebhookIn, WiseWebhookIn
from web.webhooks import _reversed_event, _stripe_notice, _wise_notice

SECRET = "whsec_unit_test_secret"
TRANSFER = {
    "id": "tr_123",
    "object": "transfer",
    "amount": 5000,
    "amount_reversed": 5000,
    "currency": "eur",
    "reversed": True,
    "transfer_group": PAYOUT,
    "metadata": {"payout_id": PAYOUT},
}
WISE_KEY = new_wise_key()
WISE_PEM = public_pem(WISE_KEY)


def rejected(call, *args, **kwargs) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(WebhookRejected) as caught:
        call(*args, **kwargs)
    return caught.value.reason


# --- Stripe ------------------------------------------------------------------------------


def test_a_stripe_delivery_signed_with_the_secret_verifies() -> None:
    body = stripe_event_body(TRANSFER)
    verify_stripe(body, stripe_signature(body, SECRET), SECRET)


def test_a_forged_stripe_body_is_refused() -> None:
    body = stripe_event_body(TRANSFER)
    header = stripe_signature(body, SECRET)
    forged = body.replace(b'"amount_reversed":5000', b'"amount_reversed":4000')
    assert forged != body
    assert rejected(verify_stripe, forged, header, SECRET) == "bad_signature"


def test_a_stripe_signature_under_another_secret_is_refused() -> None:
    body = stripe_event_body(TRANSFER)
    assert rejected(verify_stripe, body, stripe_signature(body, "whsec_someone_else"), SECRET) == "bad_signature"


def test_a_stale_stripe_signature_is_refused_even_when_genuine() -> None:
    body = stripe_event_body(TRANSFER)
    old = int(time.time()) - 301
    assert rejected(verify_stripe, body, stripe_signature(body, SECRET, timestamp=old), SECRET, 300) == "stale"
    verify_stripe(body, stripe_signature(body, SECRET, timestamp=int(time.time()) - 60), SECRET, 300)


@pytest.mark.parametrize("header", [None, "", "t=1", "v1=abc", "garbage"])
def test_missing_or_malformed_stripe_headers_are_refused(header: str | None) -> None:
    assert rejected(verify_stripe, stripe_event_body(TRANSFER), header, SECRET) in (
        "missing_signature",
        "bad_signature",
    )


def test_stripe_webhooks_are_refused_when_no_secret_is_configured() -> None:
    body = stripe_event_body(TRANSFER)
    assert rejected(verify_stripe, body, stripe_signature(body, SECRET), "") == "not_configured"


# --- Wise --------------------------------------------------------------------------------


def test_a_wise_delivery_signed_with_the_private_key_verifies() -> None:
    body = wise_state_change_body({"id": 50000001}, "processing", "bounced_back")
    verify_wise(body, wise_signature(body, WISE_KEY), WISE_PEM)
    # The same key on one env-file line (\n escapes) verifies too.
    verify_wise(body, wise_signature(body, WISE_KEY), WISE_PEM.strip().replace("\n", "\\n"))


def test_a_forged_wise_body_is_refused() -> None:
    body = wise_state_change_body({"id": 50000001}, "processing", "bounced_back")
    signature = wise_signature(body, WISE_KEY)
    assert rejected(verify_wise, body.replace(b"50000001", b"50000002"), signature, WISE_PEM) == "bad_signature"


def test_a_wise_body_signed_by_another_key_is_refused() -> None:
    body = wise_state_change_body({"id": 50000001}, "processing", "bounced_back")
    assert rejected(verify_wise, body, wise_signature(body, new_wise_key()), WISE_PEM) == "bad_signature"


@pytest.mark.parametrize("header", [None, "", "not base64!", "AAAA"])
def test_missing_or_malformed_wise_signatures_are_refused(header: str | None) -> None:
    body = wise_state_change_body({"id": 1}, "processing", "bounced_back")
    assert rejected(verify_wise, body, header, WISE_PEM) in ("missing_signature", "bad_signature")


def test_wise_staleness_is_judged_by_the_signed_sent_at() -> None:
    now = datetime.now(UTC)
    check_fresh(now - timedelta(seconds=299), now, 300)
    assert rejected(check_fresh, now - timedelta(seconds=301), now, 300) == "stale"
    assert rejected(check_fresh, now + timedelta(seconds=301), now, 300) == "stale"
    assert rejected(check_fresh, datetime(2026, 1, 1), now, 300) == "stale"  # naive: no instant at all


def test_a_wise_redelivery_has_a_new_delivery_id_but_the_same_event_id() -> None:
    """X-Delivery-Id is per attempt (Wise's docs), so dedup keys on (transfer, state)."""
    body = wise_state_change_body({"id": 50000001}, "processing", "bounced_back")
    first, again = signed_wise(body, WISE_KEY), signed_wise(body, WISE_KEY)
    assert first.headers["X-Delivery-Id"] != again.headers["X-Delivery-Id"]
    notice = _wise_notice(WiseWebhookIn.model_validate_json(body))
    later = wise_state_change_body({"id": 50000001}, "processing", "bounced_back", sent_at=datetime.now(UTC))
    assert _wise_notice(WiseWebhookIn.model_validate_json(later)).event_id == notice.event_id
    assert notice.event_id == first.event_id == "transfers#state-change:50000001:bounced_back"
    assert notice.transfer_id == "50000001" and notice.state == "bounced_back"


def test_a_stripe_notice_names_the_payout_and_the_amount_in_our_units() -> None:
    delivery = signed_stripe(
        stripe_event_body({**TRANSFER, "currency": "isk", "amount": 500, "amount_reversed": 300}), SECRET
    )
    notice = _stripe_notice(StripeWebhookIn.model_validate_json(delivery.body))
    assert notice.event_id == json.loads(delivery.body)["id"] and notice.event_id.startswith("evt_")
    assert (notice.payout_id, notice.transfer_id, notice.currency) == (PAYOUT, "tr_123", "ISK")
    assert notice.reversed_minor == 3  # Stripe keeps ISK two-decimal: 300 = 3 kr.
    assert from_stripe_amount(150, "ISK") is None and from_stripe_amount(150, "EUR") == 150


# --- what a notice means ------------------------------------------------------------------

PAID = {
    "payout_id": PAYOUT,
    "phase": "succeeded",
    "provider": "STRIPE",
    "provider_reference": "tr_123",
    "amount_minor": 5000,
    "currency": "EUR",
}


def stripe_notice(**changes: object) -> TransferNotice:
    values = {
        "provider": "STRIPE",
        "event_id": "evt_1",
        "event_type": "transfer.reversed",
        "transfer_id": "tr_123",
        "occurred_at": datetime.now(UTC),
        "payout_id": PAYOUT,
        "reversed_minor": 5000,
        "currency": "EUR",
    }
    values.update(changes)
    return TransferNotice(**values)  # type: ignore[arg-type]


def test_a_full_and_a_partial_stripe_reversal_of_a_paid_payout_are_published() -> None:
    full = decide(stripe_notice(), PAID)
    assert (full.outcome, full.amount_minor, full.reason) == (PUBLISHED, 5000, "stripe_transfer_reversed")
    part = decide(stripe_notice(reversed_minor=1200), PAID)
    assert (part.amount_minor, part.reason) == (1200, "stripe_transfer_partially_reversed")


def test_a_wise_return_of_a_paid_payout_is_published_for_the_whole_amount() -> None:
    paid = {**PAID, "provider": "WISE", "provider_reference": "50000001"}
    for state in ("bounced_back", "funds_refunded", "cancelled", "charged_back"):
        notice = TransferNotice(
            "WISE", f"x:{state}", "transfers#state-change", "50000001", datetime.now(UTC), state=state
        )
        decision = decide(notice, paid)
        assert (decision.outcome, decision.amount_minor, decision.reason) == (PUBLISHED, 5000, f"wise_{state}")
    moving = TransferNotice("WISE", "x", "transfers#state-change", "50000001", datetime.now(UTC), state="processing")
    assert decide(moving, paid).outcome == "ignored:not_a_return"


@pytest.mark.parametrize(
    ("notice", "payout", "outcome"),
    [
        (stripe_notice(event_type="transfer.created"), PAID, "ignored:event_type"),
        (stripe_notice(), None, "ignored:unknown_transfer"),
        (stripe_notice(transfer_id="tr_other"), PAID, "ignored:unknown_transfer"),
        (stripe_notice(), {**PAID, "provider": "WISE"}, "ignored:unknown_transfer"),
        (stripe_notice(), {**PAID, "phase": "stripe_unknown"}, "ignored:not_succeeded"),
        (stripe_notice(currency="USD"), PAID, "ignored:currency_mismatch"),
        (stripe_notice(reversed_minor=0), PAID, "ignored:nothing_reversed"),
        (stripe_notice(reversed_minor=None), PAID, "ignored:nothing_reversed"),
        (stripe_notice(reversed_minor=5001), PAID, "ignored:reversed_more_than_paid"),
    ],
)
def test_events_that_reverse_no_paid_payout_are_recorded_and_ignored(notice, payout, outcome) -> None:  # type: ignore[no-untyped-def]
    decision = decide(notice, payout)
    assert decision.outcome == outcome and not decision.publish


def test_one_reversal_event_id_per_payout_and_total_reversed() -> None:
    # A redelivered webhook for the same total is the same event (the projector drops it)...
    assert reversal_event_id(PAYOUT, 1200) == reversal_event_id(PAYOUT.upper(), 1200)
    # ...a later, larger partial reversal of the same payout is a new one, as is another payout.
    assert reversal_event_id(PAYOUT, 1200) != reversal_event_id(PAYOUT, 5000)
    assert reversal_event_id(PAYOUT, 1200) != reversal_event_id(CREATOR, 1200)
    for total in (0, -1, True, 1.5):
        with pytest.raises(ValueError):
            reversal_event_id(PAYOUT, total)  # type: ignore[arg-type]


def test_the_published_event_is_keyed_by_the_total_reversed_so_far() -> None:
    first = decide(stripe_notice(reversed_minor=1200), PAID)
    rest = decide(stripe_notice(reversed_minor=5000), PAID)
    assert (first.amount_minor, first.reason) == (1200, "stripe_transfer_partially_reversed")
    assert (rest.amount_minor, rest.reason) == (5000, "stripe_transfer_reversed")
    payout = {**PAID, "offer_id": OFFER, "creator_id": CREATOR, "correlation_id": OFFER}
    events = [_reversed_event(stripe_notice(reversed_minor=d.amount_minor), payout, d) for d in (first, rest, first)]
    assert [e.amount_minor for e in events] == [1200, 5000, 1200]
    assert [e.event_id for e in events] == [
        reversal_event_id(PAYOUT, 1200),
        reversal_event_id(PAYOUT, 5000),
        reversal_event_id(PAYOUT, 1200),
    ]


# --- the event, the posting, the deal ------------------------------------------------------


def reversed_event(n: int = 8, amount: int = 2) -> PayoutReversed:
    return PayoutReversed(
        **env(n),
        payout_id=PAYOUT,
        provider=PayoutProvider.STRIPE,
        provider_reference="tr_1",
        amount_minor=amount,
        currency="EUR",
        reason="stripe_transfer_reversed",
        provider_event_id="evt_1",
    )


def test_the_reversed_event_round_trips_through_its_schema() -> None:
    event = reversed_event()
    schema = SchemaCatalog.load(REPO_ROOT / "schema").parsed(event.TOPIC)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, event_to_record(event))
    buf.seek(0)
    assert record_to_event(PayoutReversed, fastavro.schemaless_reader(buf, schema, schema)) == event


COMMON = {"payout_id": PAYOUT, "offer_id": OFFER, "creator_id": CREATOR, "currency": "EUR", "provider": "STRIPE"}


def reversal(amount: int, total: int, reason: str = "stripe_transfer_reversed"):  # type: ignore[no-untyped-def]
    return payout_reversal_posting(
        **COMMON,
        amount_minor=amount,
        reversed_total_minor=total,
        provider_reference="tr_1",
        reason=reason,
        occurred_at=datetime.now(UTC),
    )


def test_the_reversal_mirrors_the_payout_posting_and_nets_it_to_zero() -> None:
    now = datetime.now(UTC)
    paid = payout_posting(**COMMON, amount_minor=5000, provider_reference="tr_1", occurred_at=now)
    back = reversal(5000, 5000)
    assert back.reference_id == payout_reversal_reference(PAYOUT, 5000) == f"payout-reversal:{PAYOUT}:5000"
    assert back.reference_id.startswith(payout_reversals_prefix(PAYOUT)) and back.reference_id != paid.reference_id
    assert back.transaction_type == "payout_reversal"
    assert all(v == 0 for v in balances(paid.entries + back.entries).values())
    part = reversal(1200, 1200, "stripe_transfer_partially_reversed")
    assert balances(paid.entries + part.entries)[("creator_advances_receivable", "EUR")] == 3800


def test_a_second_partial_reversal_posts_the_increment_under_the_new_total() -> None:
    paid = payout_posting(**COMMON, amount_minor=5000, provider_reference="tr_1", occurred_at=datetime.now(UTC))
    first = reversal(1200, 1200, "stripe_transfer_partially_reversed")
    rest = reversal(5000 - 1200, 5000)  # Stripe's amount_reversed is 5000 now: 3800 more
    assert [first.reference_id, rest.reference_id] == [
        f"payout-reversal:{PAYOUT}:1200",
        f"payout-reversal:{PAYOUT}:5000",
    ]
    assert [e.amount_minor for e in rest.entries] == [3800, 3800]
    assert all(v == 0 for v in balances(paid.entries + first.entries + rest.entries).values())
    # The same total is the same reference (posts once), whatever it is worth as an increment.
    assert reversal(5000, 5000).reference_id == rest.reference_id
    assert payout_reversal_reference(PAYOUT.upper(), 1200) == first.reference_id
    # The prefix names only this payout: another's references never match it.
    assert not payout_reversal_reference(CREATOR, 1200).startswith(payout_reversals_prefix(PAYOUT))


@pytest.mark.parametrize(
    ("amount", "total"),
    [(0, 5000), (-1, 5000), (5001, 5000), (1200, 0), (1200, -5), (True, 5000), (1200, 1200.0)],
)
def test_a_reversal_increment_that_is_not_positive_or_exceeds_the_total_is_refused(amount, total) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidPosting):
        reversal(amount, total)


def test_a_reversal_reference_needs_a_positive_total_and_a_payout_uuid() -> None:
    for total in (0, -1, True):
        with pytest.raises(InvalidPosting):
            payout_reversal_reference(PAYOUT, total)
    with pytest.raises(InvalidPosting):
        payout_reversal_reference("not-a-uuid", 1200)


def test_a_reversal_makes_the_deal_payout_reversed_in_any_arrival_order() -> None:
    events = [*lifecycle(), reversed_event()]
    reference = fold(events)
    assert reference is not None and reference.status is DealStatus.PAYOUT_REVERSED
    assert (reference.payout_reversed_amount_minor, reference.payout_reversal_reason) == (2, "stripe_transfer_reversed")
    assert reference.paid_amount_minor == 2  # what was paid stays on record
    for order in itertools.islice(itertools.permutations(events), 0, 40320, 331):
        deal = None
        for event in order:
            deal = apply_event(deal, event)
        assert deal == reference


def test_reported_twice_the_latest_reversal_stands_whatever_the_order() -> None:
    early, late = reversed_event(8, amount=1), reversed_event(9, amount=2)
    one = fold([*lifecycle(), early, late])
    two = apply_event(apply_event(fold(lifecycle()), late), early)
    assert one is not None and one.payout_reversed_amount_minor == 2
    assert (two.payout_reversed_amount_minor, two.payout_reversed_at) == (2, late.occurred_at)


def test_a_malformed_wise_key_is_refused_at_start_up_and_never_answers_500() -> None:
    from infra.settings import Settings, SettingsError

    base = {
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
        "SCHEMA_REGISTRY_URL": "http://127.0.0.1:8081",
        "DATABASE_URL": "postgresql://u:p@127.0.0.1/db",
        "SPACEMUSIC_ENV": "dev",
    }
    assert Settings.from_env({**base, "WISE_WEBHOOK_PUBLIC_KEY": WISE_PEM}).wise_webhook_public_key == WISE_PEM
    with pytest.raises(SettingsError, match="WISE_WEBHOOK_PUBLIC_KEY"):
        Settings.from_env(
            {**base, "WISE_WEBHOOK_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"}
        )
    body = wise_state_change_body({"id": 1}, "processing", "bounced_back")
    assert rejected(verify_wise, body, wise_signature(body, WISE_KEY), "not a key") == "not_configured"
