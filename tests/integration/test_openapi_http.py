"""GET /openapi.json on the real app: public, and it documents every API route it serves."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
# Browser pages (HTML, redirects) are not part of the JSON API.
UNDOCUMENTED = ("/admin", "/dev-idp", "/auth/oidc")


async def test_openapi_json_is_public_and_matches_the_committed_document(web_client) -> None:
    async with aiohttp.ClientSession() as anonymous:
        response = await anonymous.get(web_client.make_url("/openapi.json"))
        assert response.status == 200
        assert await response.json() == json.loads(COMMITTED.read_text())


async def test_every_api_route_of_the_app_is_documented(web_client) -> None:
    paths = json.loads(COMMITTED.read_text())["paths"]
    for route in web_client.app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if route.method == "HEAD" or path is None or path.startswith(UNDOCUMENTED):
            continue
        assert route.method.lower() in paths.get(path, {}), (route.method, path)
