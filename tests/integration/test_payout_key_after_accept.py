"""A payout retried with the same Idempotency-Key succeeds once the deal allows it.

Accept answers 202 before the deals projection shows the offer as accepted, so a client
that asks for the payout right after gets 409 "not accepted yet". That refusal must not be
stored under the key: the fault soak's client retried with the same key (as it should) and
got the stored 409 replayed for ten minutes, and every such offer was lost.
"""

from __future__ import annotations

from tests.support.money import HISTORY, onboard, request_payout, wait_status


async def test_a_refusal_of_the_deals_state_is_not_replayed_to_a_retry(web_client, worker, engine) -> None:
    creator_id, recipient_id = await onboard(web_client)
    created = await web_client.post(
        "/offers", json={"creator_id": creator_id, "currency": "EUR", "royalty_history": HISTORY}
    )
    assert created.status == 202, await created.text()
    offer_id = (await created.json())["offer_id"]
    await wait_status(engine, offer_id, "termsheet_issued")

    early = await request_payout(web_client, offer_id, recipient_id, key="pay-after-accept")
    assert early.status == 409, await early.text()

    accepted = await web_client.post(f"/offers/{offer_id}/accept")
    assert accepted.status == 202, await accepted.text()
    await wait_status(engine, offer_id, "accepted")

    retried = await request_payout(web_client, offer_id, recipient_id, key="pay-after-accept")
    assert retried.status == 202, await retried.text()
    assert retried.headers.get("Idempotent-Replayed") is None
    replay = await request_payout(web_client, offer_id, recipient_id, key="pay-after-accept")
    assert replay.status == 202 and replay.headers.get("Idempotent-Replayed") == "true"
    assert await replay.json() == await retried.json()
    await wait_status(engine, offer_id, "paid")
