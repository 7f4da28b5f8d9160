"""Browser fixtures: Debian's Chromium driven by Playwright, the app with the admin page, and
a TCP proxy between the two that can cut the browser's connections (a real network drop)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from infra.settings import Settings
from tests.support.proxy import FlakyProxy
from tests.support.stack import admin_headers

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--headless",
]


def _install_chromium() -> None:
    """Tries Debian's package (as `make install` does) when the browser is missing."""
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (install, ["apt-get", "update"], install):
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(command, env=env, capture_output=True, timeout=600, check=False)
        if CHROMIUM.exists():
            return


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not CHROMIUM.exists():
        _install_chromium()
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing and could not be installed (apt-get install chromium)")
    return str(CHROMIUM)


@pytest.fixture(scope="session")
async def browser(chromium_path: str) -> AsyncIterator[object]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


def _has_admin_page(app: object) -> bool:
    return any(resource.canonical == "/admin" for resource in app.router.resources())  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
async def admin_client(settings: Settings, web_client: TestClient) -> AsyncIterator[TestClient]:
    """The session's app when web/app.py already wires the admin page, else one that does."""
    if _has_admin_page(web_client.server.app):
        yield web_client
        return
    from web.admin import setup_admin
    from web.app import create_app

    app = create_app(settings)
    setup_admin(app)
    client = TestClient(TestServer(app), headers=admin_headers(settings))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
async def flaky_proxy(admin_client: TestClient) -> AsyncIterator[FlakyProxy]:
    url = admin_client.make_url("/")
    proxy = FlakyProxy(url.host or "127.0.0.1", url.port or 80)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
