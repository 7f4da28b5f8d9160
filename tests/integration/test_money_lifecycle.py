"""The full lifecycle through HTTP on the real stack, paid through stripe-mock (Stripe's
own mock server validates every request against Stripe's OpenAPI spec)."""

from __future__ import annotations

import hashlib

from sqlalchemy import func, select

from infra.documents import DocumentStore
from state.ledger import check_ledger, ledger_entries
from tests.support.money import HOLDER, IBAN, STRIPE_ACCOUNT, accepted_offer, onboard, request_payout, wait_status
from tests.support.sse import SseStream

EXPECTED = ["created", "valued", "termsheet_issued", "accepted", "payout_requested", "paid"]


async def test_creator_to_receipt_end_to_end(web_client, worker, engine, settings) -> None:
    async with web_client.session.get(web_client.make_url("/offers/events/deals")) as resp:
        stream = SseStream(resp)
        await stream.next()
        creator_id, recipient_id = await onboard(web_client)
        offer_id = await accepted_offer(web_client, engine, creator_id)
        payout = await request_payout(web_client, offer_id, recipient_id)
        assert payout.status == 202, await payout.text()
        await wait_status(engine, offer_id, "paid")

        async def receipt_ready() -> bool:
            deal = await (await web_client.get(f"/offers/{offer_id}")).json()
            return deal["receipt_key"] is not None

        from tests.support.stack import eventually

        await eventually(receipt_ready, timeout=45, what="receipt")
        seen: list[str] = []
        while "paid" not in seen or len(seen) < 7:
            change = await stream.next_deal(lambda c: c["deal"]["offer_id"] == offer_id)
            seen.append(change["deal"]["status"])
            if change["event_type"] == "offer.receipt.generated":
                break
    assert [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]] == EXPECTED
    deal = await (await web_client.get(f"/offers/{offer_id}")).json()
    assert deal["payout_provider"] == "STRIPE" and deal["payout_reference"].startswith("tr_")
    assert deal["paid_amount_minor"] == deal["valuation_median_minor"] == deal["advance_minor"]

    # Both documents are in S3 under input-derived keys, with the announced hashes.
    async with DocumentStore.from_settings(settings) as store:
        for kind in ("termsheet", "receipt"):
            body = await store.get(deal[f"{kind}_key"])
            assert body.startswith(b"%PDF")
            assert hashlib.sha256(body).hexdigest() == deal[f"{kind}_sha256"]
    for kind in ("termsheet", "receipt"):
        pdf = await web_client.get(f"/offers/{offer_id}/documents/{kind}")
        assert pdf.status == 200 and pdf.content_type == "application/pdf"
        assert hashlib.sha256(await pdf.read()).hexdigest() == deal[f"{kind}_sha256"]
        link = await (await web_client.get(f"/offers/{offer_id}/documents/{kind}?as=url")).json()
        assert link["url"].startswith("http") and link["expires_in"] == 300

    # Exactly one balanced ledger transaction for the payout, and the whole ledger checks out.
    async with engine.connect() as conn:
        entries = (
            (await conn.execute(select(ledger_entries).where(ledger_entries.c.offer_id == offer_id))).mappings().all()
        )
        report = await check_ledger(conn)
    assert len(entries) == 2 and {e["direction"] for e in entries} == {"DEBIT", "CREDIT"}
    assert all(e["amount_minor"] == deal["paid_amount_minor"] for e in entries)
    assert report.ok, report.violations

    # Recipient details are returned masked only.
    creator = await (await web_client.get(f"/creators/{creator_id}")).json()
    text = str(creator)
    assert IBAN not in text and HOLDER not in text and STRIPE_ACCOUNT not in text
    assert creator["recipients"][0]["masked"]["iban"].endswith(IBAN[-4:])


async def test_accept_and_payout_refuse_wrong_states(web_client, worker, engine) -> None:
    creator_id, recipient_id = await onboard(web_client)
    resp = await web_client.post(
        "/offers",
        json={
            "creator_id": creator_id,
            "currency": "EUR",
            "royalty_history": [{"period": "2025-01", "amount_minor": 0}],
        },
    )
    unpriced = (await resp.json())["offer_id"]
    await wait_status(engine, unpriced, "valuation_failed")
    assert (await web_client.post(f"/offers/{unpriced}/accept")).status == 409
    assert (await request_payout(web_client, unpriced, recipient_id)).status == 409

    offer_id = await accepted_offer(web_client, engine, creator_id)
    again = await web_client.post(f"/offers/{offer_id}/accept")
    assert again.status == 200 and (await again.json())["already"] is True
    missing_key = await web_client.post(f"/offers/{offer_id}/payout", json={"recipient_id": recipient_id})
    assert missing_key.status == 422
    _, other_recipient = await onboard(web_client)
    assert (await request_payout(web_client, offer_id, other_recipient)).status == 422

    first = await request_payout(web_client, offer_id, recipient_id, key="pay-once")
    replay = await request_payout(web_client, offer_id, recipient_id, key="pay-once")
    assert first.status == replay.status == 202
    assert await first.json() == await replay.json()
    assert replay.headers.get("Idempotent-Replayed") == "true"
    reused = await web_client.post(
        f"/offers/{offer_id}/payout", json={"recipient_id": other_recipient}, headers={"Idempotency-Key": "pay-once"}
    )
    assert reused.status == 422
    await wait_status(engine, offer_id, "paid")
    assert (await request_payout(web_client, offer_id, recipient_id)).status == 409
    async with engine.connect() as conn:
        postings = await conn.scalar(
            select(func.count()).select_from(ledger_entries).where(ledger_entries.c.offer_id == offer_id)
        )
    assert postings == 2


async def test_recipient_validation(web_client) -> None:
    creator_id, _ = await onboard(web_client)
    bad = [
        ({"currency": "EUR"}, "stripe_account_id"),
        ({"currency": "EUR", "stripe_account_id": "not-an-account"}, "stripe_account_id"),
        (
            {"currency": "EUR", "bank_account": {"holder_name": "A B", "iban": "DE89370400440532013001"}},
            "bank_account.iban",
        ),
        ({"currency": "EUR", "bank_account": {"iban": IBAN}}, "bank_account.holder_name"),
        ({"currency": "EURO", "stripe_account_id": STRIPE_ACCOUNT}, "currency"),
    ]
    for body, field in bad:
        resp = await web_client.post(f"/creators/{creator_id}/recipients", json=body)
        assert resp.status == 422, body
        assert field in {f["field"] for f in (await resp.json())["fields"]}
    assert (
        await web_client.post(
            "/creators/00000000-0000-4000-8000-000000000000/recipients",
            json={"currency": "EUR", "stripe_account_id": STRIPE_ACCOUNT},
        )
    ).status == 404
