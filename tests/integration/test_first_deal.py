"""The first live deal: POST /offers -> valuation -> projection -> SSE and GET."""

from __future__ import annotations

from tests.support.deals import make_creator
from tests.support.sse import SseStream

HISTORY = [{"period": f"2025-{m:02d}", "amount_minor": 100_000 + m * 1_000} for m in range(1, 13)]


async def test_offer_is_valued_and_streamed(web_client, worker) -> None:
    async with web_client.session.get(web_client.make_url("/offers/events/deals")) as resp:
        assert resp.status == 200
        stream = SseStream(resp)
        ready = await stream.next()
        assert ready.event == "ready"
        creator = await make_creator(web_client)
        created = await web_client.post(
            "/offers", json={"creator_id": creator, "currency": "EUR", "royalty_history": HISTORY}
        )
        assert created.status == 202
        offer_id = (await created.json())["offer_id"]
        change = await stream.next_deal(lambda c: c["deal"]["offer_id"] == offer_id and c["deal"]["status"] == "valued")
    deal = change["deal"]
    assert deal["creator_id"] == creator
    assert deal["valuation_median_minor"] == 24 * 106_500
    got = await web_client.get(f"/offers/{offer_id}")
    assert got.status == 200
    body = await got.json()
    assert (
        body["status"] == "valued"
        and body["valuation_low_minor"] < body["valuation_median_minor"] < body["valuation_high_minor"]
    )
