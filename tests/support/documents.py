"""Term sheet and receipt inputs and an in-memory document store for the document tests."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

from infra.documents.store import StoredDocument
from models.documents import (
    ReceiptData,
    TermsheetData,
)

ISSUED = datetime(2025, 3, 3, 14, 5, 12, tzinfo=UTC)


OFFER_ID = "5f0c7a52-8d1e-4b7a-9a55-1c2d3e4f5a6b"


PAYOUT_ID = "9b2e4c1d-3f5a-4e6b-8c7d-0a1b2c3d4e5f"


def termsheet(**overrides: object) -> TermsheetData:
    values: dict[str, object] = {
        "offer_id": OFFER_ID,
        "creator_id": "Luna Ortega",
        "currency": "EUR",
        "advance_minor": 2_880_000,
        "low_minor": 2_160_000,
        "high_minor": 3_600_000,
        "median_monthly_royalty_minor": 120_000,
        "months_considered": 36,
        "model_version": "median-multiple-v1",
        "issued_at": ISSUED,
        "valid_until": ISSUED + timedelta(days=30),
    }
    values.update(overrides)
    return TermsheetData(**values)  # type: ignore[arg-type]


def receipt(**overrides: object) -> ReceiptData:
    values: dict[str, object] = {
        "offer_id": OFFER_ID,
        "creator_id": "Luna Ortega",
        "payout_id": PAYOUT_ID,
        "amount_minor": 2_880_000,
        "currency": "EUR",
        "provider": "STRIPE",
        "provider_reference": "tr_1OaBcDeFgHiJkLmN",
        "paid_at": ISSUED + timedelta(days=4, hours=2),
        "recipient_label": "IBAN •••• 3000",
    }
    values.update(overrides)
    return ReceiptData(**values)  # type: ignore[arg-type]


class MemoryStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts = 0

    async def stat(self, key: str) -> StoredDocument | None:
        body = self.objects.get(key)
        if body is None:
            return None
        return StoredDocument(key, hashlib.sha256(body).hexdigest(), len(body), created=False)

    async def put_if_absent(self, key: str, body: bytes, content_type: str = "application/pdf") -> StoredDocument:
        return await self.put_new(key, body, content_type)

    async def put_new(self, key: str, body: bytes, content_type: str = "application/pdf") -> StoredDocument:
        self.puts += 1
        if key in self.objects:
            existing = await self.stat(key)
            assert existing is not None
            return existing
        self.objects[key] = body
        return StoredDocument(key, hashlib.sha256(body).hexdigest(), len(body), created=True)
