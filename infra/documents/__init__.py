"""Term sheets and receipts: render once, store write-once under an input-derived key.

``produce_termsheet``/``produce_receipt`` are what an agent calls; a replayed event lands
on the same key and gets the already-issued document back without rendering again.

Rendering runs in a pool of recycled worker processes: the ``renderer`` given (a
``RenderPool`` the app owns) or, when none is given, the process-wide default pool sized to
the cores. Concurrent calls render in parallel.
"""

from __future__ import annotations

from typing import Protocol

from infra.documents.pool import RenderPool
from infra.documents.render import PdfRenderer, render_pdf, render_receipt_html, render_termsheet_html
from infra.documents.store import DocumentNotFound, DocumentStore, StoredDocument, is_storage_outage
from models.documents import ReceiptData, TermsheetData, receipt_key, termsheet_key

__all__ = [
    "DocumentNotFound",
    "DocumentSink",
    "DocumentStore",
    "PdfRenderer",
    "RenderPool",
    "StoredDocument",
    "is_storage_outage",
    "produce_receipt",
    "produce_termsheet",
]


class DocumentSink(Protocol):
    """The part of ``DocumentStore`` producing needs (lets tests pass an in-memory fake)."""

    async def stat(self, key: str) -> StoredDocument | None: ...

    async def put_if_absent(self, key: str, body: bytes, content_type: str = "application/pdf") -> StoredDocument: ...

    async def put_new(self, key: str, body: bytes, content_type: str = "application/pdf") -> StoredDocument: ...


async def produce_termsheet(
    store: DocumentSink, data: TermsheetData, renderer: PdfRenderer | None = None
) -> StoredDocument:
    key = termsheet_key(data)
    existing = await store.stat(key)
    if existing is not None:
        return existing  # rendering is the expensive part: skip it on replays
    pdf = await render_pdf(render_termsheet_html(data), data.issued_at, renderer)
    return await store.put_new(key, pdf)  # just seen absent: no second look-up


async def produce_receipt(
    store: DocumentSink, data: ReceiptData, renderer: PdfRenderer | None = None
) -> StoredDocument:
    key = receipt_key(data)
    existing = await store.stat(key)
    if existing is not None:
        return existing
    pdf = await render_pdf(render_receipt_html(data), data.paid_at, renderer)
    return await store.put_new(key, pdf)  # just seen absent: no second look-up
