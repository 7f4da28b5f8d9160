"""GET /offers/{offer_id}/documents/{kind}: the term sheet or receipt PDF of a deal.

Served through the app (so the same authentication applies) or, with ``?as=url``, as a
short-lived presigned URL to the object store."""

from __future__ import annotations

from aiohttp import web

from infra.documents import DocumentNotFound
from models.errors import NotFound
from web.auth.permissions import CREATOR_SCOPE
from web.commands import visible_deal
from web.contract import DocumentQuery
from web.keys import DOCUMENTS, ENGINE
from web.validation import path_uuid, read_query

KINDS = {"termsheet": ("termsheet_key", "termsheet_sha256"), "receipt": ("receipt_key", "receipt_sha256")}
PRESIGN_SECONDS = 300


async def get_document(request: web.Request) -> web.StreamResponse:
    offer_id = path_uuid(request, "offer_id")
    kind = request.match_info["kind"]
    if kind not in KINDS:
        raise NotFound("documents are 'termsheet' or 'receipt'")
    query = read_query(request, DocumentQuery)
    async with request.app[ENGINE].connect() as conn:
        deal = await visible_deal(conn, offer_id, request.get(CREATOR_SCOPE))
    key_field, hash_field = KINDS[kind]
    key = deal[key_field]
    if key is None:
        raise NotFound(f"offer {offer_id} has no {kind} yet")
    store = request.app[DOCUMENTS]
    if query.as_ == "url":
        url = await store.presigned_url(key, expires_seconds=PRESIGN_SECONDS)
        return web.json_response({"url": url, "expires_in": PRESIGN_SECONDS, "sha256": deal[hash_field]})
    try:
        body = await store.get(key)
    except DocumentNotFound:
        raise NotFound(f"the {kind} of offer {offer_id} is not in the document store") from None
    return web.Response(
        body=body,
        content_type="application/pdf",
        headers={
            "Content-Disposition": f'inline; filename="{kind}-{offer_id}.pdf"',
            "X-Content-SHA256": deal[hash_field] or "",
            "Cache-Control": "private, max-age=300",
        },
    )
