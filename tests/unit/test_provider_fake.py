"""The provider fake itself: HTTP control and state, provider semantics, and use from another
process (the way a worker under test talks to it)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.providers import customer_transaction_id
from tests.fakes.providers import ProviderFake

REPO = Path(__file__).resolve().parents[2]
STRIPE_AUTH = ("sk_test_any", "")
WISE_HEADERS = {"Authorization": "Bearer wise-token"}
IBAN = "DE89370400440532013000"


@pytest.fixture
async def fake() -> AsyncIterator[ProviderFake]:
    fake = ProviderFake(hang_seconds=30.0)
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        yield client


def stripe_form(payout_id: str, amount: str = "1000") -> dict[str, str]:
    return {
        "amount": amount,
        "currency": "eur",
        "destination": "acct_123",
        "transfer_group": payout_id,
        "metadata[payout_id]": payout_id,
    }


async def stripe_post(http: httpx.AsyncClient, fake: ProviderFake, payout_id: str, **kw: Any) -> httpx.Response:
    return await http.post(
        f"{fake.stripe_url}/v1/transfers",
        data=stripe_form(payout_id, **kw),
        auth=STRIPE_AUTH,
        headers={"Idempotency-Key": f"k-{payout_id}"},
    )


async def wise_create(http: httpx.AsyncClient, fake: ProviderFake, payout_id: str) -> dict[str, Any]:
    recipient = await http.post(
        f"{fake.wise_url}/v1/accounts",
        headers=WISE_HEADERS,
        json={
            "currency": "EUR",
            "type": "iban",
            "profile": 1,
            "accountHolderName": "Ada Lovelace",
            "details": {"legalType": "PRIVATE", "IBAN": IBAN},
        },
    )
    quote = await http.post(
        f"{fake.wise_url}/v3/profiles/1/quotes",
        headers=WISE_HEADERS,
        content=b'{"sourceCurrency":"EUR","targetCurrency":"EUR","targetAmount":10.50}',
    )
    transfer = await http.post(
        f"{fake.wise_url}/v1/transfers",
        headers=WISE_HEADERS,
        json={
            "targetAccount": recipient.json()["id"],
            "quoteUuid": quote.json()["id"],
            "customerTransactionId": customer_transaction_id(payout_id),
            "details": {"reference": "SM1"},
        },
    )
    assert transfer.status_code == 200, transfer.text
    return transfer.json()


async def test_stripe_idempotency_key_replays_and_guards_parameters(
    fake: ProviderFake, http: httpx.AsyncClient
) -> None:
    payout_id = str(uuid.uuid4())
    first = await stripe_post(http, fake, payout_id)
    second = await stripe_post(http, fake, payout_id)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() and second.headers["Idempotent-Replayed"] == "true"
    assert len(fake.transfers["stripe"]) == 1

    clash = await stripe_post(http, fake, payout_id, amount="2000")
    assert clash.status_code == 400 and clash.json()["error"]["type"] == "idempotency_error"
    assert len(fake.transfers["stripe"]) == 1


async def test_stripe_list_answers_from_state(fake: ProviderFake, http: httpx.AsyncClient) -> None:
    mine, other = str(uuid.uuid4()), str(uuid.uuid4())
    await stripe_post(http, fake, other)
    created = (await stripe_post(http, fake, mine)).json()
    listed = await http.get(
        f"{fake.stripe_url}/v1/transfers", params={"transfer_group": mine, "limit": "1"}, auth=STRIPE_AUTH
    )
    assert listed.json()["object"] == "list" and [t["id"] for t in listed.json()["data"]] == [created["id"]]
    nothing = await http.get(f"{fake.stripe_url}/v1/transfers", params={"transfer_group": "none"}, auth=STRIPE_AUTH)
    assert nothing.json()["data"] == []


async def test_stripe_rejects_bad_credentials_and_bad_parameters(fake: ProviderFake, http: httpx.AsyncClient) -> None:
    anonymous = await http.post(f"{fake.stripe_url}/v1/transfers", data=stripe_form(str(uuid.uuid4())))
    assert anonymous.status_code == 401
    invalid = await http.post(
        f"{fake.stripe_url}/v1/transfers", data={**stripe_form("x"), "amount": "-5"}, auth=STRIPE_AUTH
    )
    assert invalid.status_code == 400 and invalid.json()["error"]["type"] == "invalid_request_error"
    assert fake.transfers["stripe"] == []


async def test_control_endpoint_steers_modes_with_times(fake: ProviderFake, http: httpx.AsyncClient) -> None:
    steer = await http.post(f"{fake.url}/_control", json={"provider": "stripe", "mode": "decline", "times": 1})
    assert steer.status_code == 200 and steer.json()["stripe"]["fault"]["mode"] == "decline"

    declined = await stripe_post(http, fake, str(uuid.uuid4()))
    assert declined.status_code == 402 and declined.json()["error"]["code"] == "card_declined"
    accepted = await stripe_post(http, fake, str(uuid.uuid4()))
    assert accepted.status_code == 200  # `times` used up: back to ok

    await http.post(f"{fake.url}/_control", json={"provider": "stripe", "mode": "server_error"})
    assert (await stripe_post(http, fake, str(uuid.uuid4()))).status_code == 500
    assert (await stripe_post(http, fake, str(uuid.uuid4()))).status_code == 500
    await http.post(f"{fake.url}/_control", json={"action": "reset"})
    state = (await http.get(f"{fake.url}/_state")).json()
    assert state["stripe"]["fault"]["mode"] == "ok" and state["stripe"]["transfers"] == []


async def test_control_endpoint_rejects_nonsense(fake: ProviderFake, http: httpx.AsyncClient) -> None:
    for body in (
        {"provider": "paypal", "mode": "ok"},
        {"provider": "stripe", "mode": "explode"},
        {"provider": "wise", "mode": "decline", "step": "nowhere"},
        {"action": "dance"},
    ):
        assert (await http.post(f"{fake.url}/_control", json=body)).status_code == 400


async def test_stripe_server_error_is_replayed_for_the_same_key_unless_told_otherwise(
    fake: ProviderFake, http: httpx.AsyncClient
) -> None:
    payout_id = str(uuid.uuid4())
    fake.set_mode("stripe", "server_error", times=1)
    assert (await stripe_post(http, fake, payout_id)).status_code == 500
    assert (await stripe_post(http, fake, payout_id)).status_code == 500  # as Stripe v1 does

    await http.post(f"{fake.url}/_control", json={"action": "reset"})
    await http.post(f"{fake.url}/_control", json={"replay_5xx": False})
    fake.set_mode("stripe", "server_error", times=1)
    assert (await stripe_post(http, fake, payout_id)).status_code == 500
    assert (await stripe_post(http, fake, payout_id)).status_code == 200


async def test_wise_repeated_customer_transaction_id_is_the_same_transfer(
    fake: ProviderFake, http: httpx.AsyncClient
) -> None:
    payout_id = str(uuid.uuid4())
    first = await wise_create(http, fake, payout_id)
    again = await wise_create(http, fake, payout_id)
    assert first["id"] == again["id"] and first["status"] == "incoming_payment_waiting"
    assert len(fake.transfers["wise"]) == 1

    fund_url = f"{fake.wise_url}/v3/profiles/1/transfers/{first['id']}/payments"
    funded = await http.post(fund_url, headers=WISE_HEADERS, json={"type": "BALANCE"})
    assert funded.json() == {"type": "BALANCE", "status": "COMPLETED", "errorCode": None}
    twice = await http.post(fund_url, headers=WISE_HEADERS, json={"type": "BALANCE"})
    assert twice.status_code == 422 and twice.json()["errors"][0]["code"] == "transfer.invalid-state"

    state = (await http.get(f"{fake.url}/_state", params={"payout_id": payout_id})).json()
    assert state["payout"] == {"payout_id": payout_id, "stripe": 0, "wise": 1, "total": 1}
    assert state["wise"]["executed"] == {customer_transaction_id(payout_id): 1}
    current = await http.get(f"{fake.wise_url}/v1/transfers/{first['id']}", headers=WISE_HEADERS)
    assert current.json()["status"] == "processing"


async def test_wise_validates_like_the_real_api(fake: ProviderFake, http: httpx.AsyncClient) -> None:
    bad_iban = await http.post(
        f"{fake.wise_url}/v1/accounts",
        headers=WISE_HEADERS,
        json={
            "currency": "EUR",
            "type": "iban",
            "profile": 1,
            "accountHolderName": "Ada Lovelace",
            "details": {"legalType": "PRIVATE", "IBAN": "DE00370400440532013000"},
        },
    )
    assert bad_iban.status_code == 422 and bad_iban.json()["errors"][0]["path"] == "IBAN"
    too_precise = await http.post(
        f"{fake.wise_url}/v3/profiles/1/quotes",
        headers=WISE_HEADERS,
        content=b'{"sourceCurrency":"EUR","targetCurrency":"EUR","targetAmount":10.505}',
    )
    assert too_precise.status_code == 422
    no_token = await http.post(f"{fake.wise_url}/v1/accounts", json={})
    assert no_token.status_code == 401


async def test_lost_response_executes_and_stop_does_not_wait_for_it(http: httpx.AsyncClient) -> None:
    fake = ProviderFake(hang_seconds=30.0)
    await fake.start()
    fake.set_mode("stripe", "execute_then_timeout")
    with pytest.raises(httpx.TimeoutException):
        await http.post(f"{fake.stripe_url}/v1/transfers", data=stripe_form("p"), auth=STRIPE_AUTH, timeout=0.3)
    assert len(fake.transfers["stripe"]) == 1
    started = time.monotonic()
    await fake.stop()
    assert time.monotonic() - started < 5.0


async def test_a_client_in_another_process_is_steered_over_http(fake: ProviderFake, http: httpx.AsyncClient) -> None:
    """The worker-process shape: the client lives elsewhere and only HTTP connects them."""
    payout_id = str(uuid.uuid4())
    await http.post(
        f"{fake.url}/_control",
        json={"provider": "stripe", "mode": "execute_then_timeout", "times": 1, "hang_seconds": 1},
    )
    script = f"""
import asyncio, json
from infra.providers import StripeClient, StripeDestination, TransferRequest

async def main():
    req = TransferRequest({payout_id!r}, "offer", 4200, "EUR", StripeDestination("acct_42"))
    async with StripeClient({fake.stripe_url!r}, "sk_test_child", timeout=0.5) as client:
        first = await client.transfer(req)
        found = await client.lookup(req)
        await asyncio.sleep(1.2)  # while the first request runs, the same key answers 409
        again = await client.transfer(req)
    print(json.dumps([str(first.status), str(found.status), str(again.status), found.reference == again.reference]))

asyncio.run(main())
"""
    # Must not block the loop: the fake serves from this very process.
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(child.communicate(), timeout=60)
    assert child.returncode == 0, stderr.decode()
    assert json.loads(stdout.decode().strip().splitlines()[-1]) == ["UNKNOWN", "SUCCEEDED", "SUCCEEDED", True]
    state = (await http.get(f"{fake.url}/_state", params={"payout_id": payout_id})).json()
    assert state["payout"]["total"] == 1
    recorded = (await http.get(f"{fake.url}/_requests")).json()
    assert recorded and all("Authorization" not in r["headers"] for r in recorded)
