"""The request models, the domain's command checks, the error mapping and the rate limit:
pure, no HTTP server needed."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from models import rules
from models.errors import (
    ForeignCreator,
    OfferNotAcceptable,
    OfferNotFound,
    OfferNotPayable,
    RecipientCurrencyMismatch,
    RecipientNotOfCreator,
)
from web.auth.permissions import RateLimit, declare_rate_limit
from web.contract import CreatorIn, DealsQuery, OfferIn, RecipientIn, RequestModel
from web.errors import ValidationFailed, error_answer
from web.validation import _validated, field_name, problems_of

CREATOR = "3F2504E0-4F89-11D3-9A0C-0305E82C3301"
IBAN = "DE89370400440532013000"


def fields(model: type[RequestModel], raw: str) -> dict[str, str]:
    try:
        _validated(model, lambda: model.model_validate_json(raw))
    except ValidationFailed as exc:
        return {f["field"]: f["problem"] for f in exc.fields}
    return {}


def offer(amount: str = "100", period: str = '"2024-01"', extra: str = "") -> str:
    history = f'[{{"period": {period}, "amount_minor": {amount}}}]'
    return f'{{"creator_id": "{CREATOR}", "currency": "EUR", "royalty_history": {history}{extra}}}'


def test_an_offer_parses_with_its_creator_id_canonicalised() -> None:
    parsed = OfferIn.model_validate_json(offer())
    assert parsed.creator_id == CREATOR.lower()
    assert [(p.period, p.amount_minor) for p in parsed.history()] == [("2024-01", 100)]


@pytest.mark.parametrize("amount", ["1.5", "1.0", '"100"', "true", "-1", str(10**15 + 1), "null"])
def test_money_is_an_integer_count_of_minor_units(amount: str) -> None:
    assert "royalty_history[0].amount_minor" in fields(OfferIn, offer(amount))


def test_unknown_fields_are_refused_and_named() -> None:
    assert fields(OfferIn, offer(extra=', "amount": 5')) == {"amount": "is not a known field"}
    bank = json.dumps({"holder_name": "A B", "iban": IBAN, "swift": "x"})
    assert "bank_account.swift" in fields(RecipientIn, f'{{"currency": "EUR", "bank_account": {bank}}}')


def test_a_month_given_twice_names_the_second() -> None:
    raw = (
        f'{{"creator_id": "{CREATOR}", "currency": "EUR", "royalty_history": '
        '[{"period": "2024-01", "amount_minor": 1}, {"period": "2024-01", "amount_minor": 2}]}'
    )
    assert fields(OfferIn, raw) == {"royalty_history[1].period": "duplicate month 2024-01"}


def test_a_body_that_is_not_an_object_is_the_body_at_fault() -> None:
    assert fields(OfferIn, "[1, 2]") == {"body": "must be a JSON object"}


def test_field_names_read_like_the_request() -> None:
    assert field_name(("royalty_history", 3, "period")) == "royalty_history[3].period"
    assert field_name(()) == "body"


def test_recipient_needs_an_account_and_a_creator_a_name() -> None:
    assert set(fields(RecipientIn, '{"currency": "EUR"}')) == {"stripe_account_id"}
    assert set(fields(CreatorIn, '{"display_name": "  ", "country": "D1"}')) == {"display_name", "country"}
    assert CreatorIn.model_validate_json('{"display_name": " Al ", "country": "de"}').country == "DE"


def test_queries_are_parsed_from_text_with_our_wording() -> None:
    query = DealsQuery.model_validate({"limit": "5", "cursor": "12", "status": "paid"})
    assert (query.limit, query.cursor, query.status) == (5, 12, "paid")
    with pytest.raises(ValidationError) as caught:
        DealsQuery.model_validate({"limit": "0", "cursor": "x"})
    assert {p["field"]: p["problem"] for p in problems_of(caught.value, DealsQuery)} == {
        "limit": "must be an integer from 1 to 200",
        "cursor": "must be the next_cursor of a previous page",
    }


DEAL = {"creator_id": "c1", "currency": "EUR", "status": "termsheet_issued", "accepted_at": None}


def test_command_checks_raise_domain_errors() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    rules.can_accept(DEAL, now)
    with pytest.raises(OfferNotAcceptable):
        rules.can_accept({**DEAL, "status": "valued"}, now)
    with pytest.raises(OfferNotPayable):
        rules.can_pay_out(DEAL)
    rules.can_pay_out({**DEAL, "status": "accepted"})
    with pytest.raises(RecipientNotOfCreator):
        rules.can_receive_payout(DEAL, None)
    with pytest.raises(RecipientCurrencyMismatch):
        rules.can_receive_payout(DEAL, {"creator_id": "c1", "currency": "GBP"})
    rules.can_receive_payout(DEAL, {"creator_id": "c1", "currency": "EUR"})
    assert rules.visible_to(None, "c1") and rules.visible_to("c1", "c1") and not rules.visible_to("c2", "c1")
    with pytest.raises(ForeignCreator):
        rules.can_act_for("c2", "c1")


def test_domain_errors_map_to_the_json_error_shape() -> None:
    assert error_answer(OfferNotFound("o1")) == (404, {"error": "not_found", "message": "no offer o1"})
    status, body = error_answer(OfferNotPayable("valued"))  # type: ignore[misc]
    assert status == 409 and body["error"] == "conflict"
    status, body = error_answer(RecipientCurrencyMismatch("GBP"))  # type: ignore[misc]
    assert status == 422 and body["fields"] == [{"field": "recipient_id", "problem": "recipient takes GBP"}]
    assert error_answer(ValueError("boom")) is None


async def test_rate_limit_counts_per_caller_and_says_when_to_retry() -> None:
    limit = RateLimit(f"test-{uuid.uuid4().hex}", per_minute=3)
    assert [await limit.acquire("alice") for _ in range(3)] == [None, None, None]
    retry_after = await limit.acquire("alice")
    assert retry_after is not None and 1 <= retry_after <= 60
    assert await limit.acquire("bob") is None
    bucket = f"test-{uuid.uuid4().hex}"
    declare_rate_limit(bucket, 5)
    with pytest.raises(ValueError):
        declare_rate_limit(bucket, 6)
