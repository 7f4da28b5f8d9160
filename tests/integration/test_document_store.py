"""DocumentStore against the real S3-compatible server of the local stack (moto).

Self-contained: one fresh bucket per test session, removed at the end; no database, no
Kafka, none of the stack fixtures of tests/conftest.py.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from infra.documents import produce_receipt, produce_termsheet
from infra.documents.store import DocumentNotFound, DocumentStore, StoredDocument
from infra.settings import Settings
from models.documents import ReceiptData, TermsheetData, receipt_key, termsheet_key

pytestmark = pytest.mark.skipif(
    not os.environ.get("S3_ENDPOINT_URL"),
    reason="S3_ENDPOINT_URL is not set: load infra/local/dev.env and start the local stack (make run)",
)

ISSUED = datetime(2025, 3, 3, 14, 5, 12, tzinfo=UTC)


def _settings(bucket: str) -> Settings:
    # Only the S3 fields matter here; the required ones are placeholders so the test does
    # not depend on Kafka/Postgres variables being set.
    return Settings(
        kafka_bootstrap_servers="unused:9092",
        schema_registry_url="http://unused",
        database_url="postgresql://unused/unused",
        s3_endpoint_url=os.environ["S3_ENDPOINT_URL"],
        s3_bucket=bucket,
    )


async def _empty_and_delete(store: DocumentStore) -> None:
    paginator = store.client.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=store.bucket):
        for item in page.get("Contents", []):
            await store.client.delete_object(Bucket=store.bucket, Key=item["Key"])
    await store.client.delete_bucket(Bucket=store.bucket)


@pytest.fixture(scope="session")
async def doc_store() -> AsyncIterator[DocumentStore]:
    bucket = f"sm-docs-test-{uuid.uuid4().hex[:12]}"
    async with DocumentStore.from_settings(_settings(bucket)) as store:
        await store.ensure_bucket()
        try:
            yield store
        finally:
            await _empty_and_delete(store)


def _key(name: str) -> str:
    return f"tests/{uuid.uuid4().hex}/{name}"


async def test_ensure_bucket_is_idempotent(doc_store: DocumentStore) -> None:
    await doc_store.ensure_bucket()
    await doc_store.ensure_bucket()
    await doc_store.client.head_bucket(Bucket=doc_store.bucket)


async def test_put_if_absent_keeps_the_first_document(doc_store: DocumentStore) -> None:
    key = _key("doc.pdf")
    first = await doc_store.put_if_absent(key, b"%PDF-first")
    second = await doc_store.put_if_absent(key, b"%PDF-second, different")
    assert first == StoredDocument(key, hashlib.sha256(b"%PDF-first").hexdigest(), 10, created=True)
    assert second == StoredDocument(key, first.sha256, first.size_bytes, created=False)
    assert await doc_store.get(key) == b"%PDF-first"


async def test_a_writer_that_lost_the_race_gets_the_winner(
    doc_store: DocumentStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two workers both saw "absent"; the slower one's write must be refused by the store
    # itself (If-None-Match: *), not by our earlier look-up.
    key = _key("raced.pdf")
    winner = await doc_store.put_if_absent(key, b"%PDF-winner")
    real_stat = doc_store.stat
    calls: list[str] = []

    async def stale_then_real(k: str) -> Any:
        calls.append(k)
        return None if len(calls) == 1 else await real_stat(k)

    monkeypatch.setattr(doc_store, "stat", stale_then_real)
    loser = await doc_store.put_if_absent(key, b"%PDF-loser")
    assert len(calls) == 2  # the conditional write failed and the winner was looked up
    assert loser.created is False and loser.sha256 == winner.sha256
    assert await doc_store.get(key) == b"%PDF-winner"


async def test_put_new_is_write_once_too(doc_store: DocumentStore) -> None:
    # produce_* write with put_new right after their own stat: a writer that lost the race
    # in between is refused by the store and handed the winner's document.
    key = _key("new.pdf")
    first = await doc_store.put_new(key, b"%PDF-first")
    second = await doc_store.put_new(key, b"%PDF-second, different")
    assert first.created and not second.created
    assert second.sha256 == first.sha256
    assert await doc_store.get(key) == b"%PDF-first"


async def test_get_round_trips_bytes_and_sha256(doc_store: DocumentStore) -> None:
    key = _key("roundtrip.pdf")
    body = b"%PDF-1.7\n" + os.urandom(4096)
    stored = await doc_store.put_if_absent(key, body)
    fetched = await doc_store.get(key)
    assert fetched == body
    assert hashlib.sha256(fetched).hexdigest() == stored.sha256
    assert await doc_store.stat(key) == StoredDocument(key, stored.sha256, len(body), created=False)
    head = await doc_store.client.head_object(Bucket=doc_store.bucket, Key=key)
    assert head["ContentType"] == "application/pdf"
    assert head["Metadata"]["sha256"] == stored.sha256


async def test_exists_and_missing_keys(doc_store: DocumentStore) -> None:
    key = _key("present.pdf")
    assert await doc_store.exists(key) is False
    assert await doc_store.stat(key) is None
    with pytest.raises(DocumentNotFound):
        await doc_store.get(key)
    await doc_store.put_if_absent(key, b"%PDF-x")
    assert await doc_store.exists(key) is True


async def test_presigned_url_downloads_the_same_bytes(doc_store: DocumentStore) -> None:
    key = _key("shared.pdf")
    body = b"%PDF-1.7\n" + os.urandom(2048)
    await doc_store.put_if_absent(key, body)
    url = await doc_store.presigned_url(key, expires_seconds=60)
    assert "X-Amz-Signature=" in url
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(url)
    assert response.status_code == 200
    assert response.content == body
    assert response.headers["content-type"] == "application/pdf"
    with pytest.raises(ValueError):
        await doc_store.presigned_url(key, expires_seconds=0)


def _termsheet() -> TermsheetData:
    return TermsheetData(
        offer_id=str(uuid.uuid4()),
        creator_id="Luna Ortega",
        currency="EUR",
        advance_minor=2_880_000,
        low_minor=2_160_000,
        high_minor=3_600_000,
        median_monthly_royalty_minor=120_000,
        months_considered=36,
        model_version="median-multiple-v1",
        issued_at=ISSUED,
        valid_until=ISSUED + timedelta(days=30),
    )


async def test_produce_termsheet_is_idempotent(doc_store: DocumentStore) -> None:
    data = _termsheet()
    first = await produce_termsheet(doc_store, data)
    replay = await produce_termsheet(doc_store, data)
    assert first.created and not replay.created
    assert first.key == replay.key == termsheet_key(data)
    assert first.sha256 == replay.sha256
    pdf = await doc_store.get(first.key)
    assert pdf.startswith(b"%PDF-") and hashlib.sha256(pdf).hexdigest() == first.sha256


async def test_produce_receipt_stores_under_the_payout(doc_store: DocumentStore) -> None:
    data = ReceiptData(
        offer_id=str(uuid.uuid4()),
        creator_id="Luna Ortega",
        payout_id=str(uuid.uuid4()),
        amount_minor=2_880_000,
        currency="EUR",
        provider="WISE",
        provider_reference="wise-transfer-42",
        paid_at=ISSUED,
        recipient_label="IBAN •••• 3000",
    )
    stored = await produce_receipt(doc_store, data)
    assert stored.created and stored.key == receipt_key(data)
    assert (await produce_receipt(doc_store, data)).sha256 == stored.sha256
