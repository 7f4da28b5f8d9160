"""HTML (Jinja2) and PDF (WeasyPrint) rendering of term sheets and receipts.

Templates receive display-ready strings only (amounts via ``Money.format()``, dates spelled
out in UTC), so no formatting logic hides in them. PDFs are byte-for-byte deterministic for
the same HTML and timestamp: see ``render_pdf``.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

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


# --- PDF ------------------------------------------------------------------------------------
#
# What a render costs and what can be shared between renders of one process (measured on
# the term sheet, see docs/performance.md): WeasyPrint builds a ``FontConfiguration``
# (fontconfig + Pango font map) for every document unless given one, and parses the inline
# ``<style>`` (base.css, 5 kB) into selectors every time. Both are reused here, per process:
# the stylesheet is lifted out of the HTML, parsed once into a ``CSS`` object and handed to
# WeasyPrint as a user stylesheet. The bytes are the same as rendering the HTML as it is
# (tests compare the two on every template): with no author rules left and no
# ``!important`` in the sheet, user and author origin cascade identically, and the trailer
# ``/ID`` is still derived from the full HTML.

_STYLE = re.compile(r"<style>(?P<css>[^<]*)</style>")
_SHEET_CACHE_SIZE = 8  # two templates today; a small bound keeps odd inputs from growing it


class _ProcessRenderer:
    """Font configuration and parsed stylesheets shared by the renders of one process."""

    def __init__(self) -> None:
        from weasyprint.text.fonts import FontConfiguration
        from weasyprint.urls import URLFetcher

        self.font_config = FontConfiguration()
        # Documents are self-contained (inline CSS, system fonts). Allowing no URL scheme at
        # all means a stray <img src> can reach neither the network nor the filesystem, nor
        # make the bytes depend on anything outside the inputs; WeasyPrint logs the refusal
        # and carries on.
        self.no_fetch = URLFetcher(allowed_protocols=())
        self._sheets: dict[str, Any] = {}

    def _sheet(self, css: str) -> Any:
        sheet = self._sheets.get(css)
        if sheet is None:
            from weasyprint import CSS

            if len(self._sheets) >= _SHEET_CACHE_SIZE:
                self._sheets.pop(next(iter(self._sheets)))
            sheet = CSS(string=css, url_fetcher=self.no_fetch, font_config=self.font_config)
            self._sheets[css] = sheet
        return sheet

    def split(self, html: str) -> tuple[str, list[Any]]:
        """The HTML to lay out and the stylesheets to apply: one plain ``<style>`` block is
        lifted out and parsed once; anything else (several blocks, ``<link>``, attributes,
        ``!important``) is rendered as it is."""
        matches = list(_STYLE.finditer(html))
        if len(matches) != 1 or "<link" in html or "<style " in html or "!important" in html:
            return html, []
        match = matches[0]
        return html[: match.start()] + html[match.end() :], [self._sheet(match.group("css"))]

    def write_pdf(self, html: str, created_at: datetime) -> bytes:
        from weasyprint import HTML

        stamp = _w3c(created_at)
        body, sheets = self.split(html)
        document = HTML(string=body, url_fetcher=self.no_fetch).render(font_config=self.font_config, stylesheets=sheets)
        # CreationDate/ModDate come from the argument whatever the HTML carries or omits: a
        # clock-derived date is the classic source of different bytes for the same document.
        document.metadata.created = stamp
        document.metadata.modified = stamp
        # An explicit trailer /ID derived from the content (the full HTML, stylesheet
        # included), instead of relying on the default (none in WeasyPrint 70, random in
        # some PDF tools): stable, and it still identifies this exact document.
        identifier = hashlib.sha256(f"{stamp}\n{html}".encode()).hexdigest()[:32].encode("ascii")
        pdf = document.write_pdf(pdf_identifier=identifier)
        assert pdf is not None  # write_pdf returns bytes when no target is given
        return pdf


_renderer: _ProcessRenderer | None = None


def write_pdf(html: str, created_at: datetime) -> bytes:
    """Render HTML to PDF bytes in this process (synchronous, CPU-bound: ~90 ms a page).

    The same ``(html, created_at)`` always gives the same bytes. This is what the render
    pool's worker processes run; call ``render_pdf`` from async code.
    """
    global _renderer
    if created_at.tzinfo is None or created_at.utcoffset() is None:
        raise ValueError("created_at must be timezone-aware")
    if _renderer is None:
        # Built on first use, not at import: WeasyPrint's import is slow and pulls in
        # Pango; only processes that actually render should pay for it.
        _renderer = _ProcessRenderer()
    return _renderer.write_pdf(html, created_at)


async def render_pdf(html: str, created_at: datetime, renderer: PdfRenderer | None = None) -> bytes:
    """Render HTML to PDF bytes; the same (html, created_at) always gives the same bytes.

    WeasyPrint is CPU-bound, holds the GIL for most of a render and leaks in a long-lived
    process, so it runs in recycled worker processes (``infra.documents.pool.RenderPool``):
    the given one, or the process-wide default pool, sized to the cores.
    """
    if created_at.tzinfo is None or created_at.utcoffset() is None:
        raise ValueError("created_at must be timezone-aware")
    if renderer is None:
        from infra.documents.pool import default_pool

        renderer = default_pool()
    pdf = await renderer.render(html, created_at)
    log.debug("document_rendered", size_bytes=len(pdf))
    return pdf


class PdfRenderer(Protocol):
    """What ``render_pdf`` needs: ``RenderPool``, or anything that renders the same bytes."""

    async def render(self, html: str, created_at: datetime) -> bytes: ...
