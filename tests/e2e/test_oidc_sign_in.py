"""The admin page signs in through a REAL OpenID Connect provider (issue 11, points 1 and 2):
the local stack's `oidc-provider` (infra/local/oidc/server.mjs, the certified Node package),
authorization code + PKCE through Authlib, state and nonce checked, the access token verified
against the provider's JWKS like every API call. Then: the deals page is live, sign-out ends
the server-side session, and an SSE stream opened with that session is closed.

Needs Node and `infra/local/oidc/node_modules` (`infra/local/stack.sh install` runs npm); the
module skips and says why when either is missing.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from infra.settings import REPO_ROOT, Settings
from tests.support.sse import SseStream
from tests.support.stack import ARTIFACTS, free_port

OIDC_DIR = REPO_ROOT / "infra" / "local" / "oidc"
CLIENT_ID = "spacemusic-admin-e2e"
CLIENT_SECRET = "e2e-client-secret-" + uuid.uuid4().hex


def _ensure_installed() -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed (infra/local/stack.sh install)")
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        script = REPO_ROOT / "infra" / "local" / "oidc" / "install.sh"
        result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=300, check=False)
        if result.returncode != 0:
            pytest.skip(f"oidc-provider could not be installed: {result.stderr[-500:]}")


@pytest.fixture(scope="module")
def ports() -> dict[str, int]:
    return {"provider": free_port(), "app": free_port()}


@pytest.fixture(scope="module")
def provider(ports: dict[str, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _ensure_installed()
    issuer = f"http://127.0.0.1:{ports['provider']}"
    ARTIFACTS.mkdir(exist_ok=True)
    log = (ARTIFACTS / "oidc-provider.log").open("w")
    env = {
        **os.environ,
        "OIDC_PROVIDER_PORT": str(ports["provider"]),
        "OIDC_PROVIDER_ISSUER": issuer,
        "OIDC_CLIENT_ID": CLIENT_ID,
        "OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "OIDC_REDIRECT_URIS": f"http://127.0.0.1:{ports['app']}/auth/oidc/callback",
        "OIDC_PROVIDER_KEYS": str(tmp_path_factory.mktemp("oidc") / "jwks.json"),
        "OIDC_ACCESS_TOKEN_TTL": "600",
    }
    proc = subprocess.Popen(["node", "server.mjs"], cwd=OIDC_DIR, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "oidc_provider_listening" not in (ARTIFACTS / "oidc-provider.log").read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("oidc-provider did not start:\n" + (ARTIFACTS / "oidc-provider.log").read_text()[-2000:])
            time.sleep(0.2)
        yield issuer
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
async def oidc_app(settings: Settings, provider: str, ports: dict[str, int]) -> AsyncIterator[TestClient]:
    from web.app import create_app

    configured = settings.replace(
        oidc_issuer=provider,
        oidc_jwks_url=f"{provider}/jwks",
        oidc_client_id=CLIENT_ID,
        oidc_client_secret=CLIENT_SECRET,
        oidc_scopes="openid profile deals:read",
        session_check_seconds=0.5,
    )
    app = create_app(configured)
    client = TestClient(TestServer(app, host="127.0.0.1", port=ports["app"]), cookie_jar=aiohttp.DummyCookieJar())
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def sign_in(page, base: str, login: str) -> None:  # type: ignore[no-untyped-def]
    """Through the provider's own login form (any password)."""
    await page.goto(f"{base}/admin")
    await page.wait_for_selector("input[name=login]", timeout=15_000)
    assert not page.url.startswith(base), "the sign-in happens at the provider"
    await page.fill("input[name=login]", login)
    await page.fill("input[name=password]", "any-password")
    await page.click("button[type=submit]")
    # oidc-provider's dev interactions may ask to confirm the grant once
    for _ in range(2):
        await page.wait_for_load_state()
        if page.url.startswith(base):
            return
        confirm = page.locator("button[type=submit]")
        if await confirm.count() == 0:
            return
        await confirm.first.click()


async def landed(page, url: str) -> None:  # type: ignore[no-untyped-def]
    try:
        await page.wait_for_url(url, timeout=20_000)
    except Exception as exc:
        body = (await page.text_content("body") or "")[:600]
        raise AssertionError(f"expected {url}, the browser is at {page.url}: {body}") from exc


async def test_sign_in_through_the_oidc_provider_then_sign_out_ends_session_and_stream(
    browser, oidc_app: TestClient, provider: str
) -> None:
    from playwright.async_api import expect

    base = str(oidc_app.make_url("")).rstrip("/")
    context = await browser.new_context(base_url=base, viewport={"width": 1366, "height": 768})
    page = await context.new_page()
    try:
        # /admin without a session goes to the provider, with PKCE, state and nonce.
        first = await oidc_app.get("/admin", allow_redirects=False)
        assert first.status == 303 and first.headers["Location"] == "/auth/oidc/login"
        start = await oidc_app.get("/auth/oidc/login", allow_redirects=False)
        location = start.headers["Location"]
        assert location.startswith(f"{provider}/auth?")
        for param in ("code_challenge=", "code_challenge_method=S256", "state=", "nonce=", f"client_id={CLIENT_ID}"):
            assert param in location, param

        await sign_in(page, base, "admin")
        await landed(page, f"{base}/admin")
        await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=15_000)
        await expect(page.locator("#whoami")).to_have_text("admin")
        await page.screenshot(path=str(Path("test-artifacts") / "admin-oidc-signed-in.png"))

        cookies = {c["name"]: c for c in await context.cookies()}
        session = cookies["sm_session"]
        assert session["httpOnly"] and session["sameSite"] == "Strict"
        assert 0 < session["expires"] - time.time() <= 600 + 5  # bound to the access token's exp
        header = {"Cookie": f"sm_session={session['value']}"}
        me = await oidc_app.get("/admin/me", headers=header)
        assert me.status == 200 and (await me.json())["subject"] == "admin"

        # An SSE stream with the same session, outside the browser...
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/offers/events/deals", headers=header) as stream_resp:
                assert stream_resp.status == 200
                stream = SseStream(stream_resp)
                assert (await stream.next()).event == "ready"
                # ...is closed when the page signs out.
                await page.click("[data-action=sign-out]")
                started = time.monotonic()
                with pytest.raises((ConnectionError, aiohttp.ClientPayloadError, TimeoutError)):
                    async with asyncio.timeout(5):
                        while True:
                            await stream.next(timeout=5)
                assert time.monotonic() - started < 5
        after = await oidc_app.get("/admin/me", headers=header)
        assert after.status == 401 and (await after.json())["error"] == "invalid_session"
        assert (await oidc_app.get("/deals", headers=header)).status == 401
        replay = await oidc_app.get("/admin", headers=header, allow_redirects=False)
        assert replay.status == 303
    finally:
        await context.close()


async def test_a_creator_signs_in_scoped_and_a_creator_without_id_is_refused(browser, oidc_app: TestClient) -> None:
    base = str(oidc_app.make_url("")).rstrip("/")
    creator = str(uuid.uuid4())
    context = await browser.new_context(base_url=base)
    page = await context.new_page()
    try:
        await sign_in(page, base, f"creator:{creator}")
        await landed(page, f"{base}/admin")
        cookie = {c["name"]: c for c in await context.cookies()}["sm_session"]["value"]
        me = await (await oidc_app.get("/admin/me", headers={"Cookie": f"sm_session={cookie}"})).json()
        assert me["creator_scope"] == creator
    finally:
        await context.close()
    context = await browser.new_context(base_url=base)
    page = await context.new_page()
    try:
        await sign_in(page, base, "creator")
        await page.wait_for_url(re.compile(r".*/auth/oidc/callback.*"), timeout=20_000)
        body = await page.text_content("body")
        assert body is not None and "creator_without_id" in body
        assert "sm_session" not in {c["name"] for c in await context.cookies()}
    finally:
        await context.close()


async def test_the_callback_refuses_a_forged_state_and_a_missing_flow(oidc_app: TestClient) -> None:
    start = await oidc_app.get("/auth/oidc/login", allow_redirects=False)
    flow = start.cookies["sm_oidc_flow"].value
    forged = await oidc_app.get(
        "/auth/oidc/callback",
        params={"code": "x", "state": "not-the-state"},
        headers={"Cookie": f"sm_oidc_flow={flow}"},
    )
    assert forged.status == 400 and (await forged.json())["error"] == "invalid_state"
    missing = await oidc_app.get("/auth/oidc/callback", params={"code": "x", "state": "y"})
    assert missing.status == 400 and (await missing.json())["error"] == "invalid_state"
    tampered = await oidc_app.get(
        "/auth/oidc/callback", params={"code": "x", "state": "y"}, headers={"Cookie": f"sm_oidc_flow={flow[:-3]}AAA"}
    )
    assert tampered.status == 400
