"""The admin page's routes over HTTP, no browser: /admin/me serves the deal statuses from
DealStatus, and /admin/static serves every file in web/admin/static (with the asset headers)
and nothing outside it, whatever the spelling of the path."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import web.admin as admin
from models.deal import DealStatus

STATIC = Path(admin.__file__).parent / "static"
ESCAPES = [
    "/admin/static/../__init__.py",
    "/admin/static/%2e%2e/__init__.py",
    "/admin/static/%2E%2E/__init__.py",
    "/admin/static/..%2f__init__.py",
    "/admin/static/%2e%2e%2f__init__.py",
    "/admin/static/js/../../__init__.py",
    "/admin/static/js/%2e%2e/%2e%2e/__init__.py",
    "/admin/static/..%5c__init__.py",
    "/admin/static//etc/passwd",
    "/admin/static/%2fetc%2fpasswd",
    "/admin/static/index.html",  # the page itself is served by /admin (with its CSP), not here
    "/admin/static/no-such-file.js",
]


async def _raw_get(client: TestClient, path: str) -> tuple[int, bytes]:
    """GET with the path sent byte for byte (an HTTP client would normalise it first)."""
    url = client.make_url("/")
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {url.host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        response = await reader.read()
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_me_serves_the_deal_statuses_in_lifecycle_order(admin_client: TestClient) -> None:
    me = await (await admin_client.get("/admin/me")).json()
    assert [s["value"] for s in me["statuses"]] == [status.value for status in DealStatus]
    labels = {s["value"]: s["label"] for s in me["statuses"]}
    assert labels["termsheet_issued"] == "Term sheet issued"
    assert labels["valuation_failed"] == "Valuation failed"
    assert all(label and label[0].isupper() for label in labels.values()), labels


async def test_every_static_file_is_served_with_the_asset_headers(admin_client: TestClient) -> None:
    files = sorted(p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*") if p.is_file())
    assert "js/main.js" in files and "app.css" in files
    base = str(admin_client.make_url("/")).rstrip("/")
    async with aiohttp.ClientSession() as http:  # no credential: the assets are public
        for name in files:
            async with http.get(f"{base}/admin/static/{name}") as resp:
                assert resp.status == 200, name
                assert resp.headers["Cache-Control"] == "no-cache", name
                assert resp.headers["X-Content-Type-Options"] == "nosniff", name
                assert resp.headers.get("ETag") and resp.headers.get("Last-Modified"), name
                expected = {".js": "text/javascript", ".css": "text/css"}.get(Path(name).suffix)
                if expected:
                    assert (resp.content_type, resp.charset) == (expected, "utf-8"), name
                assert await resp.read() == (STATIC / name).read_bytes(), name
        async with http.get(f"{base}/admin/static/js/main.js") as first:
            etag = first.headers["ETag"]
        async with http.get(f"{base}/admin/static/js/main.js", headers={"If-None-Match": etag}) as again:
            assert again.status == 304


@pytest.mark.parametrize("path", ESCAPES)
async def test_nothing_outside_static_is_served(admin_client: TestClient, path: str) -> None:
    status, body = await _raw_get(admin_client, path)
    assert status == 404, (path, body[:200])


async def test_folders_are_not_listed(admin_client: TestClient) -> None:
    for path in ("/admin/static", "/admin/static/", "/admin/static/js/"):
        status, body = await _raw_get(admin_client, path)
        assert status in (403, 404) and b"main.js" not in body, (path, status)


async def test_a_symlink_out_of_static_is_not_followed(settings, tmp_path: Path, monkeypatch) -> None:
    from web.auth import auth_middleware, setup_auth
    from web.middleware import json_errors, request_context

    (tmp_path / "secret.txt").write_text("outside")
    static = tmp_path / "static"
    (static / "js").mkdir(parents=True)
    (static / "js" / "inside.js").write_text("export {};\n")
    (static / "js" / "alias.js").symlink_to(static / "js" / "inside.js")
    (static / "leak.txt").symlink_to(tmp_path / "secret.txt")
    monkeypatch.setattr(admin, "STATIC_DIR", static)
    app = web.Application(middlewares=[request_context, auth_middleware, json_errors])
    setup_auth(app, settings)
    admin.setup_admin(app)
    async with TestClient(TestServer(app)) as client:
        inside = await client.get("/admin/static/js/alias.js")
        assert inside.status == 200 and inside.content_type == "text/javascript"
        leak = await client.get("/admin/static/leak.txt")
        assert leak.status == 404 and "outside" not in await leak.text()
