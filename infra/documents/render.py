"""HTML (Jinja2) and PDF (WeasyPrint) rendering of term sheets and receipts.

Templates receive display-ready strings only (amounts via ``Money.format()``, dates spelled
out in UTC), so no formatting logic hides in them. PDFs are byte-for-byte deterministic for
the same HTML and timestamp: see ``render_pdf``.
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from infra.logging import get_logger
from models.documents import ReceiptData, TermsheetData, fingerprint
from models.money import Money

log = get_logger(__name__)

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

_PROVIDER_NAMES = {"STRIPE": "Stripe", "WISE": "Wise"}

# Autoescape everywhere: ids, references and labels come from outside and end up in HTML.
# StrictUndefined: a misspelt variable must fail the render, not print an empty amount.
_env = Environment(
    loader=FileSystemLoader(TEMPLATE_DIR),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _date(value: datetime) -> str:
    # Spelled out by hand: strftime's %B follows the process locale.
    utc = value.astimezone(UTC)
    return f"{utc.day} {_MONTHS[utc.month - 1]} {utc.year}"


def _datetime(value: datetime) -> str:
    utc = value.astimezone(UTC)
    return f"{_date(utc)}, {utc:%H:%M} UTC"


def _w3c(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _looks_like_an_id(creator_id: str) -> bool:
    # Creators are identified by id until profiles carry names; a 36-character UUID set as
    # a bold name overflows its card, so ids get the monospace treatment instead.
    return " " not in creator_id and len(creator_id) > 20


def termsheet_context(data: TermsheetData) -> dict[str, Any]:
    def money(amount_minor: int) -> str:
        return Money(amount_minor, data.currency).format()

    return {
        "offer_id": data.offer_id,
        "creator_id": data.creator_id,
        "creator_name": data.creator_name,
        "creator_is_id": _looks_like_an_id(data.creator_id),
        "currency": data.currency,
        "advance": money(data.advance_minor),
        "low": money(data.low_minor),
        "high": money(data.high_minor),
        "median_monthly": money(data.median_monthly_royalty_minor),
        "months_considered": data.months_considered,
        "multiple_months": data.multiple_months,
        "model_version": data.model_version,
        "issued_date": _date(data.issued_at),
        "issued_at": _datetime(data.issued_at),
        "valid_until": _datetime(data.valid_until),
        "created_w3c": _w3c(data.issued_at),
        "fingerprint": fingerprint(data),
    }


def receipt_context(data: ReceiptData) -> dict[str, Any]:
    return {
        "offer_id": data.offer_id,
        "creator_id": data.creator_id,
        "creator_name": data.creator_name,
        "creator_is_id": _looks_like_an_id(data.creator_id),
        "payout_id": data.payout_id,
        "amount": Money(data.amount_minor, data.currency).format(),
        "provider": _PROVIDER_NAMES[data.provider],
        "provider_reference": data.provider_reference,
        "paid_date": _date(data.paid_at),
        "paid_at": _datetime(data.paid_at),
        "recipient_label": data.recipient_label,
        "created_w3c": _w3c(data.paid_at),
        "fingerprint": fingerprint(data),
    }


def render_termsheet_html(data: TermsheetData) -> str:
    return _env.get_template("termsheet.html").render(termsheet_context(data))


def render_receipt_html(data: ReceiptData) -> str:
    return _env.get_template("receipt_template.html").render(receipt_context(data))


def _write_pdf(html: str, created_at: datetime) -> bytes:
    # Imported here: WeasyPrint's import is slow and pulls in Pango; only workers that
    # actually render should pay for it.
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    stamp = _w3c(created_at)
    # Documents are self-contained (inline CSS, system fonts). Allowing no URL scheme at all
    # means a stray <img src> can reach neither the network nor the filesystem, nor make the
    # bytes depend on anything outside the inputs; WeasyPrint logs the refusal and carries on.
    no_fetch = URLFetcher(allowed_protocols=())
    document = HTML(string=html, url_fetcher=no_fetch).render()
    # CreationDate/ModDate come from the argument whatever the HTML carries or omits: a
    # clock-derived date is the classic source of different bytes for the same document.
    document.metadata.created = stamp
    document.metadata.modified = stamp
    # An explicit trailer /ID derived from the content, instead of relying on the default
    # (none in WeasyPrint 70, random in some PDF tools): stable, and it still identifies
    # this exact document.
    identifier = hashlib.sha256(f"{stamp}\n{html}".encode()).hexdigest()[:32].encode("ascii")
    pdf = document.write_pdf(pdf_identifier=identifier)
    assert pdf is not None  # write_pdf returns bytes when no target is given
    return pdf


async def render_pdf(html: str, created_at: datetime) -> bytes:
    """Render HTML to PDF bytes; the same (html, created_at) always gives the same bytes.

    WeasyPrint is CPU-bound and synchronous (hundreds of ms per page), so it runs in a
    worker thread to keep the event loop (Kafka heartbeats, HTTP) responsive.
    """
    if created_at.tzinfo is None or created_at.utcoffset() is None:
        raise ValueError("created_at must be timezone-aware")
    pdf = await asyncio.to_thread(_write_pdf, html, created_at)
    log.debug("document_rendered", size_bytes=len(pdf))
    return pdf
