"""WiseClient against respx: every step's request, the idempotency id, and classification."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st
from structlog.testing import capture_logs

from infra.providers import (
    PayoutProvider,
    TransferRequest,
    TransferStatus,
    WiseClient,
    WiseDestination,
    customer_transaction_id,
)
from infra.providers.wise import CUSTOMER_TRANSACTION_NAMESPACE, dumps_exact, major_units, payment_reference
from models.money import CURRENCY_EXPONENTS
from tests.fakes.providers import ProviderFake

BASE = "https://wise.test"
TOKEN = "wise-secret-token-do-not-log-77"
PROFILE = 12345
HOLDER = "Ada Lovelace"
IBAN = "DE89370400440532013000"
BIC = "COBADEFFXXX"
QUOTE_ID = "11111111-2222-4333-8444-555555555555"
RECIPIENT_ID = 701
TRANSFER_ID = 9001
PAYOUT_ID = "3f0b9c1e-8a2d-4a7e-9b61-2c5d8e7f1a90"

RECIPIENT_URL = f"{BASE}/v1/accounts"
QUOTE_URL = f"{BASE}/v3/profiles/{PROFILE}/quotes"
TRANSFER_URL = f"{BASE}/v1/transfers"
FUND_URL = f"{BASE}/v3/profiles/{PROFILE}/transfers/{TRANSFER_ID}/payments"
STATUS_URL = f"{BASE}/v1/transfers/{TRANSFER_ID}"


def request(amount_minor: int = 123_456, currency: str = "EUR", payout_id: str = PAYOUT_ID) -> TransferRequest:
    return TransferRequest(
        payout_id=payout_id,
        offer_id="offer-1",
        amount_minor=amount_minor,
        currency=currency,
        destination=WiseDestination(holder_name=HOLDER, iban=IBAN, bic=BIC),
    )


def transfer_body(status: str = "incoming_payment_waiting") -> dict[str, Any]:
    return {
        "id": TRANSFER_ID,
        "targetAccount": RECIPIENT_ID,
        "quoteUuid": QUOTE_ID,
        "status": status,
        "customerTransactionId": customer_transaction_id(PAYOUT_ID),
    }


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        router.post(RECIPIENT_URL, name="recipient").respond(200, json={"id": RECIPIENT_ID, "type": "iban"})
        router.post(QUOTE_URL, name="quote").respond(200, json={"id": QUOTE_ID, "rate": 1})
        router.post(TRANSFER_URL, name="transfer").respond(200, json=transfer_body())
        router.post(FUND_URL, name="fund").respond(
            200, json={"type": "BALANCE", "status": "COMPLETED", "errorCode": None}
        )
        router.get(STATUS_URL, name="status").respond(200, json=transfer_body("processing"))
        yield router


@pytest.fixture
async def wise() -> AsyncIterator[WiseClient]:
    client = WiseClient(BASE, TOKEN, str(PROFILE), timeout=1.0, rate_limit_backoff_seconds=0.0)
    yield client
    await client.aclose()


def body_of(route: respx.Route, call: int = -1) -> Any:
    return json.loads(route.calls[call].request.content, parse_float=Decimal)


async def test_happy_path_runs_recipient_quote_transfer_fund(api: respx.MockRouter, wise: WiseClient) -> None:
    result = await wise.transfer(request())

    assert result.status is TransferStatus.SUCCEEDED and result.definite
    assert (result.provider, result.reference) == ("WISE", str(TRANSFER_ID))
    for name in ("recipient", "quote", "transfer", "fund"):
        sent = api.routes[name].calls.last.request
        assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
        assert sent.headers["Content-Type"] == "application/json"
    assert not api.routes["status"].called

    assert body_of(api.routes["recipient"]) == {
        "currency": "EUR",
        "type": "iban",
        "profile": PROFILE,
        "accountHolderName": HOLDER,
        "details": {"legalType": "PRIVATE", "IBAN": IBAN, "BIC": BIC},
    }
    assert body_of(api.routes["quote"]) == {
        "sourceCurrency": "EUR",
        "targetCurrency": "EUR",
        "targetAmount": Decimal("1234.56"),
        "targetAccount": RECIPIENT_ID,
        "payOut": "BANK_TRANSFER",
        "preferredPayIn": "BALANCE",
    }
    # An exact JSON number, not a string and not a float artefact.
    assert b'"targetAmount":1234.56,' in api.routes["quote"].calls.last.request.content
    assert body_of(api.routes["transfer"]) == {
        "targetAccount": RECIPIENT_ID,
        "quoteUuid": QUOTE_ID,
        "customerTransactionId": customer_transaction_id(PAYOUT_ID),
        "details": {"reference": "SM3F0B9C1E"},
    }
    assert body_of(api.routes["fund"]) == {"type": "BALANCE"}


async def test_source_currency_can_differ(api: respx.MockRouter) -> None:
    async with WiseClient(BASE, TOKEN, PROFILE, timeout=1.0, source_currency="GBP") as client:
        await client.transfer(request(currency="EUR"))
    quote = body_of(api.routes["quote"])
    assert (quote["sourceCurrency"], quote["targetCurrency"]) == ("GBP", "EUR")


async def test_zero_decimal_currencies_send_whole_units(api: respx.MockRouter, wise: WiseClient) -> None:
    await wise.transfer(request(amount_minor=5_000, currency="JPY"))
    assert b'"targetAmount":5000,' in api.routes["quote"].calls.last.request.content


@pytest.mark.parametrize(
    ("minor", "currency", "expected"),
    [
        (1, "EUR", "0.01"),
        (100, "EUR", "1.00"),
        (123456, "EUR", "1234.56"),
        (7, "JPY", "7"),
        (10**17 + 1, "USD", "1000000000000000.01"),
    ],
)
def test_major_units_is_exact(minor: int, currency: str, expected: str) -> None:
    assert format(major_units(minor, currency), "f") == expected


@given(st.integers(min_value=1, max_value=10**18), st.sampled_from(sorted(CURRENCY_EXPONENTS)))
def test_major_units_round_trips_through_json(minor: int, currency: str) -> None:
    wire = dumps_exact({"targetAmount": major_units(minor, currency)})
    parsed = json.loads(wire, parse_float=Decimal)["targetAmount"]
    assert Decimal(parsed).scaleb(CURRENCY_EXPONENTS[currency]) == minor


def test_customer_transaction_id_is_a_stable_uuid5_of_the_payout() -> None:
    ctid = customer_transaction_id(PAYOUT_ID)
    assert uuid.UUID(ctid).version == 5
    assert ctid == str(uuid.uuid5(CUSTOMER_TRANSACTION_NAMESPACE, PAYOUT_ID))
    # Pinned: if this changes, every in-flight payout would get a new Wise identity.
    assert ctid == "931676ab-15d4-5d6c-ad59-d136895704d2"
    assert customer_transaction_id(PAYOUT_ID.upper()) == ctid
    assert customer_transaction_id(str(uuid.uuid4())) != ctid
    assert payment_reference(PAYOUT_ID) == "SM3F0B9C1E"


async def test_every_attempt_sends_the_same_customer_transaction_id(api: respx.MockRouter, wise: WiseClient) -> None:
    api.routes["transfer"].mock(side_effect=[_timeout, httpx.Response(200, json=transfer_body())])
    assert (await wise.transfer(request())).failure_reason == "transfer_timeout"
    await wise.transfer(request())
    sent = {body_of(api.routes["transfer"], i)["customerTransactionId"] for i in range(2)}
    assert sent == {customer_transaction_id(PAYOUT_ID)}


async def test_wise_objects_are_created_once_and_reused(api: respx.MockRouter, wise: WiseClient) -> None:
    """One recipient per recipient and currency, one quote while it is valid, one transfer per
    payout: a second attempt reads the stored transfer instead of creating anything."""
    api.routes["fund"].mock(
        side_effect=[_timeout] + [httpx.Response(200, json={"type": "BALANCE", "status": "COMPLETED"})] * 2
    )
    api.routes["status"].respond(200, json=transfer_body())  # the lost funding never landed
    assert (await wise.transfer(request())).failure_reason == "fund_timeout"
    assert (await wise.transfer(request())).succeeded
    assert [api.routes[n].call_count for n in ("recipient", "quote", "transfer", "fund")] == [1, 1, 1, 2]
    other = request(payout_id=str(uuid.uuid4()))
    assert (await wise.transfer(other)).succeeded
    assert api.routes["recipient"].call_count == 1  # same destination and currency: reused
    assert api.routes["quote"].call_count == 2  # quotes are per payout


async def test_an_expired_quote_is_refreshed_before_the_transfer(api: respx.MockRouter, wise: WiseClient) -> None:
    api.routes["quote"].respond(200, json={"id": QUOTE_ID, "expirationTime": "2020-01-01T00:00:00Z"})
    api.routes["transfer"].mock(side_effect=[_timeout, httpx.Response(200, json=transfer_body())])
    await wise.transfer(request())
    await wise.transfer(request())
    assert api.routes["quote"].call_count == 2


async def test_an_already_funded_transfer_is_not_funded_again(api: respx.MockRouter, wise: WiseClient) -> None:
    api.routes["transfer"].respond(200, json=transfer_body("processing"))
    result = await wise.transfer(request())
    assert result.status is TransferStatus.SUCCEEDED and result.reference == str(TRANSFER_ID)
    assert not api.routes["fund"].called


async def test_a_cancelled_transfer_is_a_definite_failure(api: respx.MockRouter, wise: WiseClient) -> None:
    api.routes["transfer"].respond(200, json=transfer_body("cancelled"))
    result = await wise.transfer(request())
    assert result.status is TransferStatus.FAILED and result.definite
    assert result.failure_reason == "wise_status_cancelled" and not api.routes["fund"].called


async def test_funding_rejected_is_a_definite_failure(api: respx.MockRouter, wise: WiseClient) -> None:
    api.routes["fund"].respond(
        200, json={"type": "BALANCE", "status": "REJECTED", "errorCode": "transfer.insufficient_funds"}
    )
    result = await wise.transfer(request())
    assert result.status is TransferStatus.FAILED and result.definite
    assert (result.failure_reason, result.reference) == ("transfer.insufficient_funds", str(TRANSFER_ID))


async def test_funding_twice_resolves_through_the_transfer_status(api: respx.MockRouter, wise: WiseClient) -> None:
    api.routes["fund"].respond(422, json={"errors": [{"code": "transfer.invalid-state", "message": "x"}]})
    result = await wise.transfer(request())
    assert result.status is TransferStatus.SUCCEEDED and api.routes["status"].called

    api.routes["status"].respond(503)
    result = await wise.transfer(request(payout_id=str(uuid.uuid4())))
    assert result.status is TransferStatus.UNKNOWN and result.reference == str(TRANSFER_ID)


def _timeout(request: httpx.Request) -> httpx.Response:
    raise httpx.ReadTimeout("lost", request=request)


@pytest.mark.parametrize(
    ("step", "response", "expected", "definite", "reason"),
    [
        ("recipient", httpx.Response(422, json={"errors": [{"code": "NOT_VALID", "path": "IBAN"}]}), TransferStatus.FAILED, True, "NOT_VALID"),
        ("recipient", httpx.Response(401, json={"error": "invalid_token", "error_description": "x"}), TransferStatus.FAILED, True, "wise_auth"),
        ("quote", httpx.Response(400, json={"errors": [{"code": "error.route.not.supported"}]}), TransferStatus.FAILED, True, "error.route.not.supported"),
        ("quote", httpx.Response(500, text="oops"), TransferStatus.UNKNOWN, False, "quote_http_500"),
        ("transfer", _timeout, TransferStatus.UNKNOWN, False, "transfer_timeout"),
        ("transfer", httpx.Response(409, json={}), TransferStatus.UNKNOWN, False, "transfer_conflict"),
        ("transfer", httpx.Response(200, text="<html>"), TransferStatus.UNKNOWN, False, "transfer_unreadable_body"),
        ("fund", httpx.Response(422, json={"errors": [{"code": "transfer.insufficient_funds"}]}), TransferStatus.FAILED, True, "transfer.insufficient_funds"),
        ("fund", httpx.Response(403, json={"errors": [{"code": "sca.required"}]}), TransferStatus.FAILED, True, "sca.required"),
        ("fund", httpx.Response(502, text=""), TransferStatus.UNKNOWN, False, "fund_http_502"),
        ("fund", _timeout, TransferStatus.UNKNOWN, False, "fund_timeout"),
        ("fund", httpx.ConnectError("reset"), TransferStatus.UNKNOWN, False, "fund_transport_error:ConnectError"),
        ("fund", httpx.Response(200, json={"type": "BALANCE"}), TransferStatus.UNKNOWN, False, "unreadable_funding_body"),
    ],
)  # fmt: skip
async def test_classification_per_step(
    api: respx.MockRouter,
    wise: WiseClient,
    step: str,
    response: Any,
    expected: TransferStatus,
    definite: bool,
    reason: str,
) -> None:
    route = api.routes[step]
    if isinstance(response, httpx.Response):
        route.mock(return_value=response)
    else:
        route.mock(side_effect=response)
    result = await wise.transfer(request())
    assert (result.status, result.definite, result.failure_reason) == (expected, definite, reason)
    if step == "fund":
        assert result.reference == str(TRANSFER_ID)
    later_steps = ["recipient", "quote", "transfer", "fund"][
        ["recipient", "quote", "transfer", "fund"].index(step) + 1 :
    ]
    assert not any(api.routes[s].called for s in later_steps)


async def test_rate_limit_is_retried_then_reported_unknown(api: respx.MockRouter, wise: WiseClient) -> None:
    api.routes["quote"].side_effect = [
        httpx.Response(429, headers={"Retry-After": "0"}),
        httpx.Response(200, json={"id": QUOTE_ID}),
    ]
    assert (await wise.transfer(request())).succeeded

    api.routes["quote"].side_effect = None
    api.routes["quote"].respond(429)
    result = await wise.transfer(request(payout_id=str(uuid.uuid4())))
    assert result.status is TransferStatus.UNKNOWN and result.failure_reason == "quote_rate_limited"
    assert api.routes["quote"].call_count == 2 + 3


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("processing", TransferStatus.SUCCEEDED),
        ("outgoing_payment_sent", TransferStatus.SUCCEEDED),
        ("funds_refunded", TransferStatus.FAILED),
        ("incoming_payment_initiated", TransferStatus.UNKNOWN),
    ],
)
async def test_lookup_reads_the_stored_transfer_and_creates_nothing(
    api: respx.MockRouter, wise: WiseClient, status: str, expected: TransferStatus
) -> None:
    api.routes["fund"].mock(side_effect=_timeout)
    await wise.transfer(request())  # the transfer id is stored before funding
    created = [api.routes[n].call_count for n in ("recipient", "quote", "transfer")]
    api.routes["status"].respond(200, json=transfer_body(status))
    found = await wise.lookup(request())
    assert found is not None and found.status is expected and found.reference == str(TRANSFER_ID)
    assert [api.routes[n].call_count for n in ("recipient", "quote", "transfer")] == created
    assert api.routes["fund"].call_count == 1  # a lookup never moves money


async def test_lookup_without_a_stored_transfer_is_not_found_and_sends_nothing(
    api: respx.MockRouter, wise: WiseClient
) -> None:
    assert await wise.lookup(request()) is None
    assert not any(route.called for route in api.routes)


async def test_lookup_of_an_unfunded_transfer_is_not_found(api: respx.MockRouter, wise: WiseClient) -> None:
    api.routes["fund"].respond(500)
    await wise.transfer(request())
    api.routes["status"].respond(200, json=transfer_body())
    assert await wise.lookup(request()) is None
    assert api.routes["fund"].call_count == 1


async def test_a_failed_lookup_is_unknown_never_not_found(api: respx.MockRouter, wise: WiseClient) -> None:
    api.routes["fund"].respond(500)
    await wise.transfer(request())
    api.routes["status"].mock(side_effect=_timeout)
    found = await wise.lookup(request())
    assert found is not None and found.status is TransferStatus.UNKNOWN
    assert found.failure_reason == "lookup_status_timeout"

    api.routes["status"].mock(side_effect=None, return_value=httpx.Response(404, json={"errors": [{"code": "x"}]}))
    found = await wise.lookup(request())
    assert found is not None and found.status is TransferStatus.UNKNOWN  # a refusal here proves nothing


async def test_no_token_iban_bic_or_holder_name_in_logs(
    api: respx.MockRouter, wise: WiseClient, caplog: pytest.LogCaptureFixture
) -> None:
    secrets = (TOKEN, IBAN, HOLDER, BIC)
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")  # the app's logging setup quiets httpx
    with capture_logs() as events:
        await wise.transfer(request())
        api.routes["recipient"].respond(422, json={"errors": [{"code": "NOT_VALID", "message": f"bad {IBAN}"}]})
        await wise.transfer(request())
        api.routes["recipient"].mock(side_effect=_timeout)
        await wise.lookup(request())
    names = {e["event"] for e in events}
    assert {"provider_transfer_started", "provider_transfer_finished", "provider_lookup_finished"} <= names
    captured = repr(events) + caplog.text
    assert caplog.text  # httpx's own request lines were captured too
    for secret in secrets:
        assert secret not in captured
        assert secret not in repr(request())
    assert TOKEN not in repr(wise)


def test_the_client_fulfils_the_provider_protocol() -> None:
    assert isinstance(WiseClient(BASE, TOKEN, PROFILE, timeout=1.0), PayoutProvider)


def test_bad_configuration_fails_fast() -> None:
    with pytest.raises(ValueError):
        WiseClient(BASE, "", PROFILE, timeout=1.0)
    with pytest.raises(ValueError):
        WiseClient(BASE, TOKEN, "not-a-number", timeout=1.0)


# --- the same client against the stateful fake: the reconciliation paths end to end ----------


@pytest.fixture
async def fake() -> AsyncIterator[ProviderFake]:
    fake = ProviderFake(hang_seconds=2.0, wise_token=TOKEN)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def wise_on_fake(fake: ProviderFake) -> AsyncIterator[WiseClient]:
    client = WiseClient(fake.wise_url, TOKEN, PROFILE, timeout=0.5, rate_limit_backoff_seconds=0.0)
    yield client
    await client.aclose()


async def test_fake_lost_funding_response_is_reconciled_without_paying_twice(
    fake: ProviderFake, wise_on_fake: WiseClient
) -> None:
    payout_id = str(uuid.uuid4())
    fake.set_mode("wise", "execute_then_timeout", times=1)
    lost = await wise_on_fake.transfer(request(payout_id=payout_id))
    assert lost.status is TransferStatus.UNKNOWN and lost.failure_reason == "fund_timeout"
    assert fake.executed_count(payout_id) == 1

    found = await wise_on_fake.lookup(request(payout_id=payout_id))
    assert found is not None and found.status is TransferStatus.SUCCEEDED and found.reference == lost.reference
    again = await wise_on_fake.transfer(request(payout_id=payout_id))
    assert again.status is TransferStatus.SUCCEEDED and again.reference == lost.reference
    assert fake.executed_count(payout_id) == 1 and len(fake.transfers["wise"]) == 1


async def test_fake_server_error_before_funding_then_retry_funds_the_same_transfer(
    fake: ProviderFake, wise_on_fake: WiseClient
) -> None:
    payout_id = str(uuid.uuid4())
    fake.set_mode("wise", "server_error", times=1)
    failed = await wise_on_fake.transfer(request(payout_id=payout_id))
    assert failed.status is TransferStatus.UNKNOWN and fake.executed_count(payout_id) == 0

    assert await wise_on_fake.lookup(request(payout_id=payout_id)) is None  # created, never funded
    retried = await wise_on_fake.transfer(request(payout_id=payout_id))
    assert retried.status is TransferStatus.SUCCEEDED and retried.reference == failed.reference
    assert fake.executed_count(payout_id) == 1 and len(fake.transfers["wise"]) == 1


@pytest.mark.parametrize(
    ("mode", "reason"), [("decline", "transfer.insufficient_funds"), ("reject", "transfer.insufficient_funds")]
)
async def test_fake_declines_are_definite(fake: ProviderFake, wise_on_fake: WiseClient, mode: str, reason: str) -> None:
    payout_id = str(uuid.uuid4())
    fake.set_mode("wise", mode)
    result = await wise_on_fake.transfer(request(payout_id=payout_id))
    assert result.status is TransferStatus.FAILED and result.definite and result.failure_reason == reason
    assert fake.executed_count(payout_id) == 0


async def test_fake_invalid_iban_is_a_definite_failure(fake: ProviderFake, wise_on_fake: WiseClient) -> None:
    req = TransferRequest(str(uuid.uuid4()), "o", 100, "EUR", WiseDestination(HOLDER, "DE00370400440532013000"))
    result = await wise_on_fake.transfer(req)
    assert result.status is TransferStatus.FAILED and result.definite and result.failure_reason == "NOT_VALID"
