"""Document keys, HTML content and PDF determinism. No network, no stack."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import html
import json
import os
import re
import struct
import sys
import zlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from infra.documents import produce_receipt, produce_termsheet
from infra.documents.render import render_pdf, render_receipt_html, render_termsheet_html, write_pdf
from models.documents import (
    InvalidDocument,
    canonical_json,
    fingerprint,
    receipt_key,
    termsheet_key,
)
from tests.support.documents import ISSUED, OFFER_ID, PAYOUT_ID, MemoryStore, receipt, termsheet

REPO = Path(__file__).resolve().parents[2]
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>&'


def visible_text(markup: str) -> str:
    """The body as a reader sees it: tags dropped, entities decoded, whitespace collapsed."""
    body = markup.split("<body>", 1)[1]
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", body)).split())


# --- keys ---------------------------------------------------------------------------------


def test_termsheet_key_is_derived_from_inputs() -> None:
    key = termsheet_key(termsheet())
    assert key == termsheet_key(termsheet())
    assert re.fullmatch(rf"termsheets/{OFFER_ID}/[0-9a-f]{{16}}\.pdf", key)
    assert key.endswith(f"/{fingerprint(termsheet())[:16]}.pdf")


def test_receipt_key_is_derived_from_inputs() -> None:
    key = receipt_key(receipt())
    assert key == receipt_key(receipt())
    assert re.fullmatch(rf"receipts/{OFFER_ID}/{PAYOUT_ID}-[0-9a-f]{{16}}\.pdf", key)


@pytest.mark.parametrize(
    "change",
    [
        {"advance_minor": 2_880_001},
        {"high_minor": 3_600_001},
        {"currency": "GBP"},
        {"valid_until": ISSUED + timedelta(days=31)},
        {"creator_id": "Someone Else"},
        {"multiple_months": 12},
    ],
)
def test_any_termsheet_input_changes_the_key(change: dict[str, object]) -> None:
    assert termsheet_key(termsheet(**change)) != termsheet_key(termsheet())


@pytest.mark.parametrize(
    "change",
    [
        {"amount_minor": 2_880_001},
        {"provider": "WISE"},
        {"provider_reference": "tr_other"},
        {"paid_at": ISSUED + timedelta(days=5)},
        {"recipient_label": "IBAN •••• 4000"},
    ],
)
def test_any_receipt_input_changes_the_key(change: dict[str, object]) -> None:
    assert receipt_key(receipt(**change)) != receipt_key(receipt())


def test_same_instant_in_another_zone_gives_the_same_key() -> None:
    cet = timezone(timedelta(hours=1))
    moved = termsheet(issued_at=ISSUED.astimezone(cet), valid_until=(ISSUED + timedelta(days=30)).astimezone(cet))
    assert moved.issued_at.tzinfo is UTC
    assert termsheet_key(moved) == termsheet_key(termsheet())


def test_provider_enum_and_string_hash_alike() -> None:
    from models.events import PayoutProvider

    assert receipt_key(receipt(provider=PayoutProvider.WISE)) == receipt_key(receipt(provider="WISE"))


def test_canonical_json_is_stable_and_explicit() -> None:
    text = canonical_json(receipt())
    parsed = json.loads(text)
    assert parsed["paid_at"] == "2025-03-07T16:05:12Z"
    assert parsed["document"] == "receipt"
    assert list(parsed) == sorted(parsed)
    assert '": ' not in text and '", "' not in text
    assert text.isascii()


@pytest.mark.parametrize(
    "change",
    [
        {"issued_at": datetime(2025, 3, 3, 14, 5)},  # naive
        {"offer_id": "../etc"},
        {"offer_id": "a/b"},
        {"low_minor": 3_000_000},  # above the advance
        {"advance_minor": -1},
        {"currency": "XXX"},
        {"valid_until": ISSUED},
        {"months_considered": 0},
    ],
)
def test_invalid_termsheet_inputs_are_rejected(change: dict[str, object]) -> None:
    with pytest.raises(InvalidDocument):
        termsheet(**change)


@pytest.mark.parametrize(
    "change",
    [
        {"provider": "PAYPAL"},
        {"provider": "NONE"},
        {"payout_id": "x y"},
        {"recipient_label": ""},
        {"amount_minor": True},
    ],
)
def test_invalid_receipt_inputs_are_rejected(change: dict[str, object]) -> None:
    with pytest.raises(InvalidDocument):
        receipt(**change)


def test_data_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        termsheet().advance_minor = 1  # type: ignore[misc]


# --- HTML ---------------------------------------------------------------------------------


def test_termsheet_html_states_the_terms() -> None:
    text = visible_text(render_termsheet_html(termsheet()))
    assert "Term sheet" in text
    assert "EUR 28,800.00" in text
    assert "EUR 21,600.00 – EUR 36,000.00" in text
    # The range explained in one sentence: median monthly royalty x multiple.
    assert "median monthly royalty of EUR 1,200.00 over the last 36 months multiplied by 24" in text
    assert "Recoupment" in text and "future royalties" in text
    assert "2 April 2025, 14:05 UTC" in text  # validity
    assert "Issued 3 March 2025" in text
    assert "For SpaceMusic" in text and "Signature" in text  # acceptance block
    assert "Luna Ortega" in text and OFFER_ID in text
    assert fingerprint(termsheet()) in text


def test_termsheet_amounts_follow_the_currency_exponent() -> None:
    data = termsheet(
        currency="JPY",
        advance_minor=2_400_000,
        low_minor=1_200_000,
        high_minor=3_600_000,
        median_monthly_royalty_minor=100_000,
    )
    text = visible_text(render_termsheet_html(data))
    assert "JPY 2,400,000" in text and "JPY 2,400,000." not in text


def test_receipt_html_shows_the_payment() -> None:
    text = visible_text(render_receipt_html(receipt()))
    assert "Payment receipt" in text
    assert "EUR 28,800.00" in text
    assert "7 March 2025, 16:05 UTC" in text
    assert "Stripe" in text and "tr_1OaBcDeFgHiJkLmN" in text
    assert PAYOUT_ID in text and OFFER_ID in text
    assert "IBAN •••• 3000" in text
    assert fingerprint(receipt()) in text
    assert "Wise" in visible_text(render_receipt_html(receipt(provider="WISE")))


def test_hostile_text_is_escaped() -> None:
    receipt_html = render_receipt_html(receipt(creator_id=HOSTILE, provider_reference=HOSTILE, recipient_label=HOSTILE))
    termsheet_html = render_termsheet_html(termsheet(creator_id=HOSTILE, model_version=HOSTILE))
    for markup in (receipt_html, termsheet_html):
        assert "<script" not in markup
        assert "<img" not in markup
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in markup
        assert HOSTILE in visible_text(markup)  # still shown, as text


def test_html_carries_the_document_timestamp() -> None:
    markup = render_termsheet_html(termsheet())
    assert '<meta name="dcterms.created" content="2025-03-03T14:05:12Z">' in markup


# --- PDF ----------------------------------------------------------------------------------


def _pdf_chunks(pdf: bytes) -> list[bytes]:
    """The file plus every inflated stream (pydyf may put dictionaries in object streams)."""
    chunks = [pdf]
    for match in re.finditer(rb"stream\r?\n(.*?)endstream", pdf, re.S):
        try:
            chunks.append(zlib.decompress(match.group(1)))
        except zlib.error:
            continue
    return chunks


def _info_dates(pdf: bytes) -> set[bytes]:
    """CreationDate/ModDate values, wherever the Info dictionary ended up."""
    return {
        date for chunk in _pdf_chunks(pdf) for date in re.findall(rb"/(?:CreationDate|ModDate) \((D:[^)]*)\)", chunk)
    }


async def test_pdf_is_a_pdf_and_deterministic() -> None:
    html_text = render_termsheet_html(termsheet())
    first = await render_pdf(html_text, ISSUED)
    second = await render_pdf(html_text, ISSUED)
    assert first.startswith(b"%PDF-")
    assert first == second
    assert _info_dates(first) == {b"D:20250303140512Z"}


async def test_pdf_timestamp_comes_from_the_argument_not_the_clock() -> None:
    bare = "<html><head><title>t</title></head><body><p>Hello</p></body></html>"
    early = await render_pdf(bare, ISSUED)
    late = await render_pdf(bare, ISSUED + timedelta(days=1))
    assert early != late
    assert _info_dates(early) == {b"D:20250303140512Z"}
    assert _info_dates(late) == {b"D:20250304140512Z"}


async def test_receipt_pdf_is_deterministic() -> None:
    html_text = render_receipt_html(receipt())
    first = await render_pdf(html_text, receipt().paid_at)
    assert first.startswith(b"%PDF-")
    assert first == await render_pdf(html_text, receipt().paid_at)


def _png_1x1() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0\xff\0\0"))
        + chunk(b"IEND", b"")
    )


async def test_pdf_refuses_external_resources(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A readable local image must not end up in the document: nothing outside the inputs
    # may be fetched (no filesystem, no network), and the render still succeeds.
    # In this process (write_pdf is what the render pool's workers run), so the refusal
    # WeasyPrint logs reaches caplog.
    image = tmp_path / "dot.png"
    image.write_bytes(_png_1x1())
    pdf = write_pdf(f'<html><body><img src="{image.as_uri()}"><p>x</p></body></html>', ISSUED)
    assert pdf.startswith(b"%PDF-")
    assert not any(b"/Image" in chunk for chunk in _pdf_chunks(pdf))
    assert "disallowed protocol" in caplog.text


async def test_render_pdf_rejects_naive_timestamps() -> None:
    with pytest.raises(ValueError):
        await render_pdf("<p>x</p>", datetime(2025, 1, 1))
    with pytest.raises(ValueError):
        write_pdf("<p>x</p>", datetime(2025, 1, 1))


def _reference_pdf(html_text: str, created_at: datetime) -> bytes:
    """The seed's render, kept verbatim: a fresh font configuration and the HTML as it is
    (inline stylesheet parsed by WeasyPrint). The shared-state renderer must match it."""
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    stamp = created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    document = HTML(string=html_text, url_fetcher=URLFetcher(allowed_protocols=())).render()
    document.metadata.created = stamp
    document.metadata.modified = stamp
    identifier = hashlib.sha256(f"{stamp}\n{html_text}".encode()).hexdigest()[:32].encode("ascii")
    pdf = document.write_pdf(pdf_identifier=identifier)
    assert pdf is not None
    return pdf


def test_shared_stylesheet_and_fonts_give_the_seed_bytes() -> None:
    # Content-addressed keys and the determinism guarantee rest on this: reusing the parsed
    # stylesheet and the font configuration across documents (interleaved templates, odd
    # characters, other currencies) changes not one byte of any document.
    documents = [
        (render_termsheet_html(termsheet()), ISSUED),
        (render_receipt_html(receipt()), receipt().paid_at),
        (render_termsheet_html(termsheet(creator_id=HOSTILE, model_version="ünïcødé ✓ 日本")), ISSUED),
        (
            render_termsheet_html(
                termsheet(currency="JPY", advance_minor=2_400_000, low_minor=1_200_000, high_minor=3_600_000)
            ),
            ISSUED,
        ),
        (render_receipt_html(receipt(provider="WISE", creator_id="a" * 40)), receipt().paid_at),
        (render_termsheet_html(termsheet()), ISSUED),  # again, after the others
    ]
    for html_text, created_at in documents:
        assert write_pdf(html_text, created_at) == _reference_pdf(html_text, created_at)


def test_html_without_a_plain_style_block_is_rendered_as_it_is() -> None:
    # Only one plain <style> block is lifted out; anything else takes WeasyPrint's own path.
    for markup in (
        "<html><body><p>no style</p></body></html>",
        "<html><head><style>p { color: red !important }</style></head><body><p>x</p></body></html>",
        "<html><head><style>p{color:red}</style><style>p{color:blue}</style></head><body><p>x</p></body></html>",
        '<html><head><style media="print">p{color:red}</style></head><body><p>x</p></body></html>',
    ):
        assert write_pdf(markup, ISSUED) == _reference_pdf(markup, ISSUED)


_RENDER_IN_CHILD = """
import asyncio, hashlib, sys
sys.path.insert(0, {tests!r})
from tests.support.documents import termsheet
from infra.documents.render import render_pdf, render_termsheet_html
pdf = asyncio.run(render_pdf(render_termsheet_html(termsheet()), termsheet().issued_at))
print("SHA256=" + hashlib.sha256(pdf).hexdigest())
"""


async def test_pdf_bytes_do_not_depend_on_the_process() -> None:
    # Another process with another hash seed and local zone: set iteration order or the
    # local clock leaking into the PDF (font subsetting, metadata) would show up here.
    expected = hashlib.sha256(await render_pdf(render_termsheet_html(termsheet()), ISSUED)).hexdigest()
    env = {**os.environ, "PYTHONHASHSEED": "12345", "TZ": "America/New_York", "PYTHONPATH": str(REPO)}
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _RENDER_IN_CHILD.format(tests=str(REPO)),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(child.communicate(), timeout=120)
    assert child.returncode == 0, stderr.decode()
    assert re.findall(r"SHA256=([0-9a-f]{64})", stdout.decode()) == [expected]


# --- produce_* against an in-memory store -------------------------------------------------


async def test_produce_renders_once_and_replays_return_the_first_document() -> None:
    store = MemoryStore()
    first = await produce_termsheet(store, termsheet())
    again = await produce_termsheet(store, termsheet())
    assert first.created and not again.created
    assert first.key == again.key == termsheet_key(termsheet())
    assert first.sha256 == again.sha256
    assert store.puts == 1  # the replay skipped rendering and uploading

    paid = await produce_receipt(store, receipt())
    assert paid.created and paid.key == receipt_key(receipt())
    assert store.objects[paid.key].startswith(b"%PDF-")
