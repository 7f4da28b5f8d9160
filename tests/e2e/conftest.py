"""Browser fixtures: Debian's Chromium driven by Playwright, the app with the admin page, and
a TCP proxy between the two that can cut the browser's connections (a real network drop)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from infra.settings import Settings
from tests.stack import admin_headers

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


class FlakyProxy:
    """Forwards the browser's TCP connections to the app. ``cut()`` aborts every open
    connection (the SSE stream included) and, while ``down``, new connections are answered
    with a bare 503, so the page sees a dropped network and then a failing server."""

    DOWN_RESPONSE = (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
        b"Connection: close\r\n\r\nproxy: down\n"
    )

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.down = False
        self.refused = 0
        self._server: asyncio.AbstractServer | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def cut(self) -> None:
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._tasks:
            # Aborted transports end every pipe; the handlers then return by themselves.
            await asyncio.wait(list(self._tasks), timeout=5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            if self.down:
                self.refused += 1
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
                    writer.write(self.DOWN_RESPONSE)
                    await writer.drain()
                writer.close()
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.close()
                return
            self._transports.update({writer.transport, up_writer.transport})
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
            self._transports.difference_update({writer.transport, up_writer.transport})
        finally:
            if task is not None:
                self._tasks.discard(task)

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()


@pytest.fixture
async def flaky_proxy(admin_client: TestClient) -> AsyncIterator[FlakyProxy]:
    url = admin_client.make_url("/")
    proxy = FlakyProxy(url.host or "127.0.0.1", url.port or 80)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()
