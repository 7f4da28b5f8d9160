"""The admin deals page in a real headless Chromium (Debian's package, driven by Playwright),
against the real stack: dev login, a deal created through the API appearing live and moving
through its statuses, a dropped connection resumed without missing an update, the drawer
with the history and the receipt. Screenshots land in test-artifacts/."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from tests.support.money import HISTORY, accepted_offer, onboard, request_payout, wait_status
from tests.support.proxy import FlakyProxy
from tests.support.stack import ARTIFACTS, eventually

LIFECYCLE = ["created", "valued", "termsheet_issued", "accepted", "payout_requested", "paid"]
EVENT_TYPES = [
    "offer.created",
    "offer.valuated",
    "offer.termsheet.generated",
    "offer.accepted",
    "offer.payout.requested",
    "offer.payout.completed",
    "offer.receipt.generated",
]

# Records every data-status a table row goes through (attribute mutations keep the old value).
RECORD_STATUSES = """() => {
  window.__statusLog = {};
  const body = document.querySelector('#deals-body');
  new MutationObserver((records) => {
    for (const r of records) {
      const id = r.target.dataset && r.target.dataset.offerId;
      if (id) (window.__statusLog[id] ||= []).push(r.oldValue);
    }
  }).observe(body, { subtree: true, attributes: true, attributeFilter: ['data-status'], attributeOldValue: true });
}"""
STATUSES_SEEN = """(id) => {
  const row = document.querySelector(`tr[data-offer-id="${id}"]`);
  return [...(window.__statusLog[id] || []), row ? row.dataset.status : null];
}"""


def _dedupe(values: list[str | None]) -> list[str | None]:
    return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]


async def _new_offer(client: TestClient, creator_id: str, currency: str, history: list[dict] = HISTORY) -> str:
    resp = await client.post(
        "/offers", json={"creator_id": creator_id, "currency": currency, "royalty_history": history}
    )
    assert resp.status == 202, await resp.text()
    return (await resp.json())["offer_id"]


async def test_admin_without_session_goes_to_the_dev_login(admin_client: TestClient, browser) -> None:
    base = str(admin_client.make_url("/")).rstrip("/")
    # A client of its own: no session cookie, no bearer token (the page ignores bearer tokens).
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/admin", allow_redirects=False) as resp:
            assert resp.status == 303
            assert resp.headers["Location"] == "/dev-idp/login"
        async with http.get(f"{base}/admin", allow_redirects=False, cookies={"sm_session": "v1.forged.sig"}) as resp:
            assert resp.status == 303
        async with http.get(f"{base}/admin/static/js/main.js") as resp:
            assert resp.status == 200 and resp.content_type == "text/javascript"
        async with http.get(f"{base}/admin/static/__init__.py") as resp:
            assert resp.status == 404
        async with http.get(f"{base}/admin/me") as resp:
            assert resp.status == 401
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(f"{base}/admin")
        assert page.url == f"{base}/dev-idp/login"
        assert await page.locator("h1").inner_text() == "SpaceMusic — dev login"
    finally:
        await context.close()


# --- the live journey: one browser session, one deal, phase by phase ----------------------------
# The phases share the page and the deal (each builds on the one before), so they run in
# file order; a failed phase leaves a screenshot and the following phases fail too.


@dataclass
class Journey:
    base: str
    context: Any
    page: Any
    proxy: FlakyProxy
    errors: list[str] = field(default_factory=list)
    offer_id: str = ""
    recipient_id: str = ""
    median: int = 0


@pytest.fixture(scope="module")
async def journey(admin_client: TestClient, worker, browser) -> AsyncIterator[Journey]:
    ARTIFACTS.mkdir(exist_ok=True)
    url = admin_client.make_url("/")
    proxy = FlakyProxy(url.host or "127.0.0.1", url.port or 80)
    await proxy.start()
    base = f"http://127.0.0.1:{proxy.port}"
    context = await browser.new_context(viewport={"width": 1366, "height": 768}, locale="en-US", base_url=base)
    page = await context.new_page()
    trip = Journey(base, context, page, proxy)
    page.on("pageerror", lambda exc: trip.errors.append(str(exc)))
    try:
        yield trip
    finally:
        await context.close()
        await proxy.stop()


@pytest.fixture
async def phase(journey: Journey, request: pytest.FixtureRequest) -> AsyncIterator[Journey]:
    yield journey
    # What the page looked like at the end of each phase, for the CI artifacts.
    with contextlib.suppress(Exception):
        await journey.page.screenshot(path=str(ARTIFACTS / f"admin-page-{request.node.name}.png"))


async def test_dev_login_lands_on_the_live_deals_page(phase: Journey) -> None:
    from playwright.async_api import expect

    page, base = phase.page, phase.base
    # Dev login: the form sets the session cookie and redirects to the page.
    await page.goto("/dev-idp/login")
    await page.check("input[name=identity][value=admin]")
    async with page.expect_response(lambda r: r.url == f"{base}/admin") as landed:
        await page.click("button[type=submit]")
    response = await landed.value
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert page.url == f"{base}/admin"
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=15_000)
    await expect(page.locator("#deals-table")).to_have_attribute("data-state", re.compile("^(ready|empty)$"))
    await expect(page.locator("#whoami")).to_have_text("dev|admin")
    await page.evaluate(RECORD_STATUSES)


async def test_new_deals_appear_without_a_reload(phase: Journey, admin_client: TestClient) -> None:
    from playwright.async_api import expect

    page = phase.page
    # A few deals for context, then ours.
    creator_id, phase.recipient_id = await onboard(admin_client)
    other = await admin_client.post("/creators", json={"display_name": "Hiro Tanaka", "country": "JP"})
    assert other.status == 201, await other.text()
    other_creator = (await other.json())["creator_id"]
    jpy_offer = await _new_offer(admin_client, other_creator, "JPY")
    await _new_offer(admin_client, other_creator, "USD")
    # Two months of history are not enough to price: the valuation fails.
    failed_offer = await _new_offer(admin_client, other_creator, "GBP", HISTORY[:2])
    await _new_offer(admin_client, other_creator, "KRW")
    phase.offer_id = offer_id = await _new_offer(admin_client, creator_id, "EUR")
    row = page.locator(f'tr[data-offer-id="{offer_id}"]')
    badge = row.locator(".badge")
    await expect(row).to_be_visible(timeout=45_000)
    await expect(badge).to_have_text("Term sheet issued", timeout=45_000)
    await expect(page.locator("#deals-body tr").first).to_have_attribute("data-offer-id", offer_id)
    deal = await (await admin_client.get(f"/offers/{offer_id}")).json()
    phase.median = median = deal["valuation_median_minor"]
    await expect(row.locator("td").nth(4)).to_have_text(f"€{median // 100:,}.{median % 100:02d}")
    # JPY has no minor digits: the amount shows without decimals.
    jpy_cell = page.locator(f'tr[data-offer-id="{jpy_offer}"] td').nth(4)
    await expect(jpy_cell).to_have_text(re.compile(r"^¥[\d,]+$"), timeout=45_000)
    failed_badge = page.locator(f'tr[data-offer-id="{failed_offer}"] .badge')
    await expect(failed_badge).to_have_text("Valuation failed", timeout=45_000)
    jpy_badge = page.locator(f'tr[data-offer-id="{jpy_offer}"] .badge')
    await expect(jpy_badge).to_have_text("Term sheet issued", timeout=45_000)
    jpy_accept = await admin_client.post(f"/offers/{jpy_offer}/accept")
    assert jpy_accept.status == 202, await jpy_accept.text()
    await expect(jpy_badge).to_have_text("Accepted", timeout=45_000)


async def test_a_dropped_connection_resumes_without_missing_an_update(
    phase: Journey, admin_client: TestClient, engine
) -> None:
    from playwright.async_api import expect

    page, proxy, offer_id = phase.page, phase.proxy, phase.offer_id
    badge = page.locator(f'tr[data-offer-id="{offer_id}"] .badge')
    # Cut the browser's connections and keep the server unreachable: the page says it is
    # reconnecting; the offer is accepted meanwhile and shows up after the reconnection.
    proxy.down = True
    proxy.cut()
    await expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting", timeout=10_000)
    await expect(page.locator("#banner")).to_be_visible()
    await expect(page.locator("#banner-text")).to_contain_text("Reconnecting")
    accepted = await admin_client.post(f"/offers/{offer_id}/accept")
    assert accepted.status == 202, await accepted.text()
    await wait_status(engine, offer_id, "accepted")
    await page.wait_for_timeout(500)  # a negative check: give a leaked update the chance to show
    await expect(badge).to_have_text("Term sheet issued")  # nothing arrived while down
    # The page keeps retrying with a backoff; the server "answers" 503, a hard failure
    # after which EventSource gives up by itself and the page reopens it.
    await eventually(lambda: proxy.refused >= 2, timeout=15, what="two refused reconnections")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "reconnecting")
    proxy.down = False
    await expect(badge).to_have_text("Accepted", timeout=40_000)
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    await expect(page.locator("#banner")).to_be_hidden()


async def test_the_payout_moves_the_row_to_paid_through_every_status_in_order(
    phase: Journey, admin_client: TestClient
) -> None:
    from playwright.async_api import expect

    page, offer_id = phase.page, phase.offer_id
    row = page.locator(f'tr[data-offer-id="{offer_id}"]')
    # The payout, live: payout_requested, then paid through stripe-mock.
    payout = await request_payout(admin_client, offer_id, phase.recipient_id)
    assert payout.status == 202, await payout.text()
    await expect(row.locator(".badge")).to_have_text("Paid", timeout=60_000)
    await expect(row.locator("td").nth(5)).to_have_text(re.compile(r"Stripe\s*succeeded"))
    # Every status the row showed, in lifecycle order (the projector may fold two events
    # of different topics in either order, so a step can in principle be skipped).
    seen = _dedupe(await page.evaluate(STATUSES_SEEN, offer_id))
    assert all(s in LIFECYCLE for s in seen), seen
    assert [LIFECYCLE.index(s) for s in seen] == sorted({LIFECYCLE.index(s) for s in seen}), seen
    assert {"termsheet_issued", "accepted", "paid"} <= set(seen), seen


async def test_the_drawer_shows_details_history_and_documents(phase: Journey) -> None:
    from playwright.async_api import expect

    page, offer_id, median = phase.page, phase.offer_id, phase.median
    await page.locator(f'tr[data-offer-id="{offer_id}"] button.row-open').click()
    drawer = page.locator("#drawer")
    await expect(drawer).to_be_visible()
    await expect(page.locator("#drawer-title")).to_have_text(offer_id)
    await expect(page.locator("#drawer-close")).to_be_focused()
    receipt = drawer.locator('a[data-doc="receipt"]')
    await expect(receipt).to_be_visible(timeout=45_000)
    await expect(receipt).to_have_attribute("target", "_blank")
    await expect(drawer.locator('a[data-doc="termsheet"]')).to_be_visible()
    items = drawer.locator(".timeline-item")
    await expect(items).to_have_count(len(EVENT_TYPES), timeout=20_000)
    assert await items.evaluate_all("(els) => els.map((e) => e.dataset.eventType)") == EVENT_TYPES
    await expect(drawer.locator(".range-median .range-value")).to_have_text(f"€{median // 100:,}.{median % 100:02d}")
    await expect(drawer).to_contain_text("tr_")  # the Stripe transfer reference
    await page.wait_for_timeout(300)  # let the drawer's slide-in settle for the screenshot
    await page.screenshot(path=str(ARTIFACTS / "admin-page-drawer.png"))
    await drawer.locator(".history").scroll_into_view_if_needed()
    await page.screenshot(path=str(ARTIFACTS / "admin-page-drawer-history.png"))


async def test_the_receipt_opens_in_a_new_tab_as_a_pdf(phase: Journey) -> None:
    page, context, base, offer_id = phase.page, phase.context, phase.base, phase.offer_id
    receipt = page.locator('#drawer a[data-doc="receipt"]')
    href = await receipt.get_attribute("href")
    assert href == f"/offers/{offer_id}/documents/receipt"
    async with context.expect_event("response", lambda r: r.url == f"{base}{href}") as pdf_response:
        async with context.expect_page() as new_tab:
            await receipt.click()
    pdf = await pdf_response.value
    assert pdf.status == 200 and pdf.headers["content-type"].startswith("application/pdf")
    await (await new_tab.value).close()
    body = await context.request.get(href)  # the context's session cookie authenticates
    assert body.status == 200 and body.headers["content-type"].startswith("application/pdf")
    assert (await body.body()).startswith(b"%PDF")


async def test_escape_closes_the_drawer_and_the_search_box_filters_rows(phase: Journey) -> None:
    from playwright.async_api import expect

    page = phase.page
    await page.keyboard.press("Escape")
    await expect(page.locator("#drawer")).to_be_hidden()
    await page.fill("#search", phase.offer_id[:8])
    await expect(page.locator("#deals-body tr")).to_have_count(1)
    await page.fill("#search", "")
    await page.locator("#search").blur()
    await page.mouse.move(0, 0)
    await page.wait_for_timeout(2_500)  # let the rows' change highlight fade for the screenshot
    await page.screenshot(path=str(ARTIFACTS / "admin-page.png"))
    assert phase.errors == []


async def test_an_operator_retries_a_failed_payout_from_the_drawer(
    phase: Journey, admin_client: TestClient, engine
) -> None:
    """A payout to a bank-only recipient fails here (no Stripe account, Wise not configured);
    the operator picks the creator's Stripe recipient in the drawer, confirms, and the deal
    is paid."""
    from playwright.async_api import expect

    page = phase.page
    creator_id, bank_only = await onboard(admin_client, stripe=False)
    offer_id = await accepted_offer(admin_client, engine, creator_id)
    assert (await request_payout(admin_client, offer_id, bank_only)).status == 202
    await wait_status(engine, offer_id, "payout_failed")
    added = await admin_client.post(
        f"/creators/{creator_id}/recipients", json={"currency": "EUR", "stripe_account_id": "acct_1E2eRetryTarget"}
    )
    assert added.status == 201, await added.text()
    stripe_recipient = (await added.json())["recipient_id"]

    row = page.locator(f'tr[data-offer-id="{offer_id}"]')
    await expect(row).to_have_attribute("data-status", "payout_failed", timeout=30_000)
    await row.locator("button.row-open").click()
    actions = page.locator('#drawer [data-section="payout-actions"]')
    await expect(actions.locator('[data-action="retry-payout"]')).to_be_visible(timeout=20_000)
    await expect(actions.locator("#retry-recipient option")).to_have_count(2)
    await actions.locator("#retry-recipient").select_option(stripe_recipient)
    await actions.locator('[data-action="retry-payout"]').click()
    await expect(actions.locator(".confirm")).to_contain_text("This may move money")
    await actions.locator('[data-action="confirm"]').click()
    await expect(actions.locator(".action-answer")).to_contain_text("Retry requested", timeout=20_000)
    await expect(row.locator(".badge")).to_have_text("Paid", timeout=60_000)
    await expect(page.locator("#drawer .timeline")).to_contain_text("retry of", timeout=20_000)
    await page.screenshot(path=str(ARTIFACTS / "admin-page-payout-retry.png"))
    await page.keyboard.press("Escape")
    assert phase.errors == []


async def test_an_operator_withdraws_an_offer_from_the_drawer(phase: Journey, admin_client: TestClient, engine) -> None:
    """The drawer shows the offer's valid_until; Withdraw offer asks for confirmation and a
    reason, and the row turns Withdrawn live with who did it and why in the drawer."""
    from playwright.async_api import expect

    page = phase.page
    creator_id, _ = await onboard(admin_client)
    created = await admin_client.post(
        "/offers", json={"creator_id": creator_id, "currency": "EUR", "royalty_history": HISTORY}
    )
    offer_id = (await created.json())["offer_id"]
    await wait_status(engine, offer_id, "termsheet_issued")

    row = page.locator(f'tr[data-offer-id="{offer_id}"]')
    await expect(row).to_have_attribute("data-status", "termsheet_issued", timeout=30_000)
    await row.locator("button.row-open").click()
    drawer = page.locator("#drawer")
    await expect(drawer).to_contain_text("Valid until")
    await expect(drawer).to_contain_text("Lapses in 29 d")
    actions = page.locator('#drawer [data-section="closing-actions"]')
    await expect(actions.locator('[data-action="decline-offer"]')).to_be_visible(timeout=20_000)
    await actions.locator('[data-action="withdraw-offer"]').click()
    await expect(actions.locator(".confirm")).to_contain_text("Withdraw this offer?")
    await actions.locator("#closing-reason").fill("pricing error")
    await actions.locator('[data-action="confirm"]').click()
    await expect(actions.locator(".action-answer")).to_contain_text("Offer withdrawn", timeout=20_000)
    await expect(row.locator(".badge")).to_have_text("Withdrawn", timeout=30_000)
    await expect(drawer).to_contain_text("pricing error", timeout=20_000)
    await expect(page.locator("#drawer .timeline")).to_contain_text("Offer withdrawn", timeout=20_000)
    await expect(actions.locator('[data-action="decline-offer"]')).to_have_count(0)
    await page.screenshot(path=str(ARTIFACTS / "admin-page-offer-withdrawn.png"))
    await page.keyboard.press("Escape")
    assert phase.errors == []


# --- outside dev: no dev IdP, the page's own sign-in ------------------------------------------

PROD_ISSUER = "https://spacemusic-test.eu.auth0.com/"
PROD_JWKS = f"{PROD_ISSUER}.well-known/jwks.json"


async def test_outside_dev_the_page_asks_to_sign_in(settings, browser, tmp_path) -> None:
    """A production-mode app (JWKS mocked): /admin sends the browser to the sign-in page, an
    access token pasted there becomes a session, and the page then shows its error state
    (this miniature app has no /deals nor stream)."""
    import httpx
    import respx
    from aiohttp import web
    from cryptography.hazmat.primitives.asymmetric import rsa
    from playwright.async_api import expect

    from tests.support.tokens import base_claims, public_jwk, sign
    from web.admin import setup_admin
    from web.auth import AUTH, MemoryAuthStore, auth_middleware, setup_auth
    from web.auth.sessions import open_session
    from web.auth.tokens import Principal
    from web.middleware import json_errors, request_context

    prod = settings.replace(env="prod", oidc_issuer=PROD_ISSUER, oidc_jwks_url=PROD_JWKS)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with respx.mock(assert_all_called=False) as mock:
        mock.get(PROD_JWKS).mock(return_value=httpx.Response(200, json={"keys": [public_jwk(key, "prod-1")]}))
        mock.route(host="127.0.0.1").pass_through()
        app = web.Application(middlewares=[request_context, auth_middleware, json_errors])
        setup_auth(app, prod, store=MemoryAuthStore())  # sessions are server-side: this app's own store
        setup_admin(app)
        async with TestClient(TestServer(app), cookie_jar=aiohttp.DummyCookieJar()) as client:
            state = app[AUTH]
            assert state.cookie_name == "__Host-sm_session"

            async def cookie(*permissions: str) -> dict[str, str]:
                session, _ = await open_session(state, Principal("auth0|ops", frozenset(permissions), None, {}))
                return {"Cookie": f"{state.cookie_name}={session}"}

            for path, location in (("/admin", "/admin/login"), ("/admin/", "/admin")):
                resp = await client.get(path, allow_redirects=False)
                assert (resp.status, resp.headers["Location"]) == (303, location), path
            assert (await client.get("/dev-idp/login")).status == 404
            signin = await client.get("/admin/login")
            assert signin.status == 200 and 'id="signin-form"' in await signin.text()
            assert "frame-ancestors 'none'" in signin.headers["Content-Security-Policy"]
            page = await client.get("/admin", headers=await cookie("deals:read"))
            assert page.status == 200 and 'data-view="deals"' in await page.text()
            assert page.headers["Cache-Control"] == "no-store"
            forbidden = await client.get("/admin", headers=await cookie("creators:read"))
            assert forbidden.status == 403 and "may not read deals" in await forbidden.text()
            me = await (await client.get("/admin/me", headers=await cookie("deals:read"))).json()
            assert me["subject"] == "auth0|ops" and me["currency_exponents"]["JPY"] == 0

            # In the browser: sign in with an access token, land on the page, see its error state.
            token = sign(
                base_claims(iss=PROD_ISSUER, aud=prod.oidc_audience, permissions=["deals:read"]), key, "prod-1"
            )
            base = str(client.make_url("/")).rstrip("/")
            context = await browser.new_context(viewport={"width": 1366, "height": 768}, locale="en-US")
            try:
                tab = await context.new_page()
                await tab.goto(f"{base}/admin")
                assert tab.url == f"{base}/admin/login"
                await tab.screenshot(path=str(ARTIFACTS / "admin-signin.png"))
                await tab.fill("#signin-token", "not-a-token")
                await tab.click("#signin-form button[type=submit]")
                await expect(tab.locator("#signin-error")).to_be_visible()
                await tab.fill("#signin-token", token)
                await tab.click("#signin-form button[type=submit]")
                await tab.wait_for_url(f"{base}/admin")
                await expect(tab.locator("#deals-table")).to_have_attribute("data-state", "error", timeout=10_000)
                await expect(tab.locator("#table-state")).to_contain_text("Couldn't load deals")
                await expect(tab.locator("#table-state button")).to_have_text("Retry")
                await expect(tab.locator("#connection")).to_have_attribute("data-state", "reconnecting")
                await tab.screenshot(path=str(ARTIFACTS / "admin-page-error.png"))
            finally:
                await context.close()
