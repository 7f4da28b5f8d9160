"""StripeClient against the stateful provider fake (real HTTP, Stripe's idempotency semantics)."""

from __future__ import annotations

import asyncio
import base64
import socket
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from structlog.testing import capture_logs

from infra.providers import (
    PayoutProvider,
    StripeClient,
    StripeDestination,
    TransferRequest,
    TransferStatus,
    WiseDestination,
)
from infra.providers.stripe import classify_transfer_response, idempotency_key, needs_fresh_key, stripe_amount
from tests.fakes.providers import ProviderFake

API_KEY = "sk_test_fake_key_do_not_log_4242"
ACCOUNT = "acct_1TestConnected"


@pytest.fixture
async def fake() -> AsyncIterator[ProviderFake]:
    fake = ProviderFake(hang_seconds=2.0, stripe_api_key=API_KEY)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def stripe(fake: ProviderFake) -> AsyncIterator[StripeClient]:
    client = StripeClient(fake.stripe_url, API_KEY, timeout=0.5, rate_limit_backoff_seconds=0.0)
    yield client
    await client.aclose()


def request(payout_id: str | None = None, amount_minor: int = 125_000, attempt: int = 0) -> TransferRequest:
    return TransferRequest(
        payout_id=payout_id or str(uuid.uuid4()),
        offer_id=str(uuid.uuid4()),
        amount_minor=amount_minor,
        currency="EUR",
        destination=StripeDestination(ACCOUNT),
        attempt=attempt,
    )


async def test_transfer_sends_the_documented_form_headers_and_auth(fake: ProviderFake, stripe: StripeClient) -> None:
    req = request()
    result = await stripe.transfer(req)

    assert result.status is TransferStatus.SUCCEEDED and result.definite and result.provider == "STRIPE"
    assert result.reference == fake.transfers["stripe"][0]["id"] and result.reference.startswith("tr_")
    sent = fake.requests[0]
    assert sent.method == "POST" and sent.path == "/v1/transfers"
    assert sent.body == {
        "amount": ["125000"],
        "currency": ["eur"],
        "destination": [ACCOUNT],
        "transfer_group": [req.payout_id],
        "metadata[payout_id]": [req.payout_id],
        "metadata[offer_id]": [req.offer_id],
        "description": [f"SpaceMusic payout {req.payout_id}"],
    }
    assert sent.headers["Idempotency-Key"] == f"spacemusic-payout-{req.payout_id}"
    assert sent.headers["Authorization"] == "Basic " + base64.b64encode(f"{API_KEY}:".encode()).decode()


async def test_two_calls_with_the_same_payout_make_one_transfer(fake: ProviderFake, stripe: StripeClient) -> None:
    req = request()
    first = await stripe.transfer(req)
    second = await stripe.transfer(req)

    assert first == second and first.status is TransferStatus.SUCCEEDED
    assert len(fake.transfers["stripe"]) == 1
    assert fake.executed_count(req.payout_id) == 1


async def test_decline_is_a_definite_failure_and_moves_nothing(fake: ProviderFake, stripe: StripeClient) -> None:
    fake.set_mode("stripe", "decline")
    req = request()
    result = await stripe.transfer(req)

    assert result.status is TransferStatus.FAILED and result.definite and result.may_fall_back
    assert result.failure_reason == "card_declined"
    assert fake.executed_count(req.payout_id) == 0


async def test_server_error_is_unknown_and_lookup_then_proves_nothing_moved(
    fake: ProviderFake, stripe: StripeClient
) -> None:
    fake.set_mode("stripe", "server_error", times=1)
    req = request()
    result = await stripe.transfer(req)

    assert result.status is TransferStatus.UNKNOWN and not result.definite and not result.may_fall_back
    assert await stripe.lookup(req) is None
    # Stripe replays a stored 500 for the same key: a retry stays UNKNOWN and moves nothing...
    again = await stripe.transfer(req)
    assert again.status is TransferStatus.UNKNOWN
    assert fake.executed_count(req.payout_id) == 0
    # ...so after "500 + lookup finds nothing" the caller bumps the attempt (a fresh key).
    assert needs_fresh_key(result) and needs_fresh_key(again)
    fresh = await stripe.transfer(request(req.payout_id, attempt=1))
    assert fresh.status is TransferStatus.SUCCEEDED
    assert fake.requests[-1].headers["Idempotency-Key"] == f"spacemusic-payout-{req.payout_id}-r1"
    assert fake.executed_count(req.payout_id) == 1


async def test_lost_response_is_unknown_and_lookup_finds_the_executed_transfer(
    fake: ProviderFake, stripe: StripeClient
) -> None:
    fake.set_mode("stripe", "execute_then_timeout", times=1)
    req = request()
    result = await stripe.transfer(req)

    assert result.status is TransferStatus.UNKNOWN and result.failure_reason == "timeout" and not result.definite
    assert not needs_fresh_key(result)  # the same key is the guard against a still in-flight request
    executed = fake.transfers["stripe"]
    assert len(executed) == 1

    found = await stripe.lookup(req)
    assert found is not None and found.status is TransferStatus.SUCCEEDED and found.reference == executed[0]["id"]
    assert fake.requests[-1].query == {"transfer_group": req.payout_id, "limit": "1"}
    # While the first request is still being processed, the same key answers 409 (unknown).
    in_flight = await stripe.transfer(req)
    assert in_flight.status is TransferStatus.UNKNOWN and in_flight.failure_reason == "idempotency_conflict"
    await asyncio.sleep(2.2)  # the fake's first request finishes
    # Retrying with the same key is safe: Stripe answers with the stored success.
    retried = await stripe.transfer(req)
    assert retried.status is TransferStatus.SUCCEEDED and retried.reference == executed[0]["id"]
    assert fake.executed_count(req.payout_id) == 1


async def test_execute_then_500_is_unknown_and_lookup_finds_it(fake: ProviderFake, stripe: StripeClient) -> None:
    fake.set_mode("stripe", "execute_then_500")
    req = request()
    assert (await stripe.transfer(req)).status is TransferStatus.UNKNOWN
    found = await stripe.lookup(req)
    assert found is not None and found.status is TransferStatus.SUCCEEDED


async def test_a_bad_api_key_is_a_definite_config_failure(fake: ProviderFake) -> None:
    async with StripeClient(fake.stripe_url, "sk_test_wrong", timeout=0.5) as client:
        result = await client.transfer(request())
    assert result.status is TransferStatus.FAILED and result.definite and result.failure_reason == "stripe_auth"
    assert fake.transfers["stripe"] == []


async def test_same_key_with_different_parameters_is_unknown_not_a_refusal(
    fake: ProviderFake, stripe: StripeClient
) -> None:
    payout_id = str(uuid.uuid4())
    assert (await stripe.transfer(request(payout_id, amount_minor=100))).succeeded
    clash = await stripe.transfer(request(payout_id, amount_minor=200))
    # A 400 idempotency_error means an earlier request under this key exists: never fall back.
    assert clash.status is TransferStatus.UNKNOWN and clash.failure_reason == "idempotency_error"
    assert fake.executed_count(payout_id) == 1


async def test_rate_limit_is_retried_then_reported_unknown(fake: ProviderFake, stripe: StripeClient) -> None:
    fake.set_mode("stripe", "rate_limited", times=1)
    assert (await stripe.transfer(request())).succeeded

    fake.set_mode("stripe", "rate_limited")
    req = request()
    result = await stripe.transfer(req)
    assert result.status is TransferStatus.UNKNOWN and result.failure_reason == "rate_limited"
    assert sum(1 for r in fake.requests if r.body and r.body["transfer_group"] == [req.payout_id]) == 3


async def test_lookup_of_a_reversed_transfer_is_a_definite_failure(fake: ProviderFake, stripe: StripeClient) -> None:
    req = request()
    done = await stripe.transfer(req)
    assert done.reference is not None
    fake.reverse_stripe_transfer(done.reference)
    found = await stripe.lookup(req)
    assert found is not None and found.status is TransferStatus.FAILED and found.definite
    assert found.failure_reason == "reversed" and found.reference == done.reference


async def test_a_failed_lookup_is_unknown_never_not_found(fake: ProviderFake, stripe: StripeClient) -> None:
    req = request()
    await stripe.transfer(req)
    fake.set_mode("stripe", "server_error", step="lookup", times=1)
    result = await stripe.lookup(req)
    assert result is not None and result.status is TransferStatus.UNKNOWN

    fake.set_mode("stripe", "execute_then_timeout", step="lookup", times=1)
    result = await stripe.lookup(req)
    assert result is not None and result.status is TransferStatus.UNKNOWN and result.failure_reason == "lookup_timeout"


async def test_connection_refused_is_unknown() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with StripeClient(f"http://127.0.0.1:{port}", API_KEY, timeout=0.5) as client:
        result = await client.transfer(request())
    assert result.status is TransferStatus.UNKNOWN and result.failure_reason.startswith("transport_error")


@pytest.mark.parametrize(
    ("status", "body", "expected", "definite", "reason"),
    [
        (200, {"id": "tr_1"}, TransferStatus.SUCCEEDED, True, None),
        (200, "not json", TransferStatus.UNKNOWN, False, "unreadable_success_body"),
        (400, {"error": {"type": "invalid_request_error", "code": "balance_insufficient"}}, TransferStatus.FAILED, True, "balance_insufficient"),
        (402, {"error": {"type": "card_error", "code": "card_declined"}}, TransferStatus.FAILED, True, "card_declined"),
        (403, {"error": {"type": "invalid_request_error"}}, TransferStatus.FAILED, True, "invalid_request_error"),
        (404, {"error": {"type": "invalid_request_error", "code": "resource_missing"}}, TransferStatus.FAILED, True, "resource_missing"),
        (400, "<html>bad gateway</html>", TransferStatus.UNKNOWN, False, "http_400"),
        (400, {"error": {"type": "idempotency_error"}}, TransferStatus.UNKNOWN, False, "idempotency_error"),
        (401, {"error": {"type": "invalid_request_error"}}, TransferStatus.FAILED, True, "stripe_auth"),
        (409, {"error": {"type": "invalid_request_error", "code": "idempotency_key_in_use"}}, TransferStatus.UNKNOWN, False, "idempotency_conflict"),
        (429, {"error": {"type": "invalid_request_error", "code": "rate_limit"}}, TransferStatus.UNKNOWN, False, "rate_limited"),
        (500, {"error": {"type": "api_error"}}, TransferStatus.UNKNOWN, False, "http_500"),
        (503, "", TransferStatus.UNKNOWN, False, "http_503"),
    ],
)  # fmt: skip
def test_classification_table(
    status: int, body: object, expected: TransferStatus, definite: bool, reason: str | None
) -> None:
    response = httpx.Response(status, json=body) if isinstance(body, dict) else httpx.Response(status, text=str(body))
    result = classify_transfer_response(response)
    assert (result.status, result.definite, result.failure_reason) == (expected, definite, reason)


async def test_the_api_key_never_reaches_the_logs(fake: ProviderFake, stripe: StripeClient) -> None:
    with capture_logs() as events:
        await stripe.transfer(request())
        fake.set_mode("stripe", "decline")
        await stripe.transfer(request())
        await stripe.lookup(request())
    assert {e["event"] for e in events} >= {"provider_transfer_started", "provider_transfer_finished"}
    assert API_KEY not in repr(events)
    assert API_KEY not in repr(stripe)


async def test_a_wise_destination_is_a_caller_bug() -> None:
    req = TransferRequest(
        str(uuid.uuid4()), "offer", 100, "EUR", WiseDestination("Ada Lovelace", "DE89370400440532013000")
    )
    async with StripeClient("http://127.0.0.1:9", API_KEY, timeout=0.1) as client:
        with pytest.raises(TypeError):
            await client.transfer(req)


async def test_isk_is_sent_in_stripes_two_decimal_unit(fake: ProviderFake, stripe: StripeClient) -> None:
    # 5 000 krónur: ISO (and our minor units) say exponent 0, Stripe's API still says 2.
    req = TransferRequest(str(uuid.uuid4()), "offer", 5_000, "ISK", StripeDestination(ACCOUNT))
    assert (await stripe.transfer(req)).succeeded
    assert fake.requests[-1].body["amount"] == ["500000"] and fake.requests[-1].body["currency"] == ["isk"]
    assert (stripe_amount(1234, "EUR"), stripe_amount(500, "JPY")) == (1234, 500)


def test_the_client_fulfils_the_provider_protocol() -> None:
    assert isinstance(StripeClient("http://x", API_KEY, timeout=1.0), PayoutProvider)


def test_idempotency_key_is_deterministic_and_normalised() -> None:
    payout_id = str(uuid.uuid4())
    assert idempotency_key(request(payout_id.upper())) == idempotency_key(request(payout_id))
    assert idempotency_key(request(payout_id)) == f"spacemusic-payout-{payout_id}"
    assert idempotency_key(request(payout_id, attempt=2)) == f"spacemusic-payout-{payout_id}-r2"
