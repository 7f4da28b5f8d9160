"""StripeClient against the real stripe-mock (Stripe's official mock, validating requests with
Stripe's OpenAPI spec). It proves our request shape and response parsing, not behaviour:
stripe-mock is stateless, so idempotency and lookups by transfer_group are only meaningful
against tests/fakes/providers.py."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from infra.providers import StripeClient, StripeDestination, TransferRequest, TransferStatus
from infra.providers.stripe import classify_transfer_response, idempotency_key

pytestmark = [
    pytest.mark.stack,
    pytest.mark.skipif(
        not os.environ.get("STRIPE_API_BASE"),
        reason="STRIPE_API_BASE is not set: load infra/local/dev.env and start stripe-mock (make stack-up)",
    ),
]


@pytest.fixture
def base_url() -> str:
    return os.environ["STRIPE_API_BASE"]


@pytest.fixture
def api_key() -> str:
    return os.environ.get("STRIPE_API_KEY") or "sk_test_local"


@pytest.fixture
async def stripe(base_url: str, api_key: str) -> AsyncIterator[StripeClient]:
    async with StripeClient(base_url, api_key, timeout=5.0) as client:
        yield client


def request() -> TransferRequest:
    return TransferRequest(
        payout_id=str(uuid.uuid4()),
        offer_id=str(uuid.uuid4()),
        amount_minor=123_45,
        currency="EUR",
        destination=StripeDestination("acct_1PgafTB7WZ01zgkW"),
    )


async def test_our_transfer_request_passes_stripes_openapi_validation(stripe: StripeClient) -> None:
    result = await stripe.transfer(request())
    assert result.status is TransferStatus.SUCCEEDED, result
    assert result.reference is not None and result.reference.startswith("tr_")


async def test_stripe_mock_really_validates_so_the_test_above_means_something(base_url: str, api_key: str) -> None:
    req = request()
    async with httpx.AsyncClient(timeout=5.0) as http:
        response = await http.post(
            f"{base_url}/v1/transfers",
            data={"amount": str(req.amount_minor), "currency": "eur", "destination": "acct_1", "no_such_param": "x"},
            headers={"Idempotency-Key": idempotency_key(req)},
            auth=(api_key, ""),
        )
    assert response.status_code == 400
    result = classify_transfer_response(response)
    assert result.status is TransferStatus.FAILED and result.definite


async def test_lookup_parses_the_list_response(stripe: StripeClient) -> None:
    found = await stripe.lookup(request())
    # stripe-mock ignores the transfer_group filter and returns a canned transfer.
    assert found is not None and found.status is TransferStatus.SUCCEEDED
    assert found.reference is not None and found.reference.startswith("tr_")
