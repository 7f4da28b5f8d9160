"""GET /offers/{offer_id}/documents/{kind}: the term sheet or receipt PDF of a deal.

Served through the app (so the same authentication applies) or, with ``?as=url``, as a
short-lived presigned URL to the object store."""

from __future__ import annotations

from aiohttp import web

from infra.documents import DocumentNotFound
from projections.queries import get_deal
from web.auth.permissions import visible_to
from web.deals import _offer_id
from web.errors import json_error
from web.keys import DOCUMENTS, ENGINE

KINDS = {"termsheet": ("termsheet_key", "termsheet_sha256"), "receipt": ("receipt_key", "receipt_sha256")}
PRESIGN_SECONDS = 300


async def get_document(request: web.Request) -> web.StreamResponse:
    offer_id = _offer_id(request)
    kind = request.match_info["kind"]
    if kind not in KINDS:
        return json_error(404, "not_found", "documents are 'termsheet' or 'receipt'")
    async with request.app[ENGINE].connect() as conn:
        deal = await get_deal(conn, offer_id)
    if deal is None or not visible_to(request, deal["creator_id"]):
        return json_error(404, "not_found", f"no offer {offer_id}")
    key_field, hash_field = KINDS[kind]
    key = deal[key_field]
    if key is None:
        return json_error(404, "not_found", f"offer {offer_id} has no {kind} yet")
    store = request.app[DOCUMENTS]
    if request.query.get("as") == "url":
        url = await store.presigned_url(key, expires_seconds=PRESIGN_SECONDS)
        return web.json_response({"url": url, "expires_in": PRESIGN_SECONDS, "sha256": deal[hash_field]})
    try:
        body = await store.get(key)
    except DocumentNotFound:
        return json_error(404, "not_found", f"the {kind} of offer {offer_id} is not in the document store")
    return web.Response(
        body=body,
        content_type="application/pdf",
        headers={
            "Content-Disposition": f'inline; filename="{kind}-{offer_id}.pdf"',
            "X-Content-SHA256": deal[hash_field] or "",
            "Cache-Control": "private, max-age=300",
        },
    )
