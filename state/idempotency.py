"""API idempotency records: the first answer to an Idempotency-Key is the only answer."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from state.tables import api_idempotency


def request_fingerprint(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


async def lock_key(conn: AsyncConnection, scope: str, key: str) -> None:
    """Serialise concurrent requests with the same key for the rest of the transaction."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"), {"k": f"{scope}\x1f{key}"})


async def stored_response(conn: AsyncConnection, scope: str, key: str) -> tuple[str, int, dict[str, Any]] | None:
    row = (
        await conn.execute(
            select(
                api_idempotency.c.request_hash, api_idempotency.c.response_status, api_idempotency.c.response_body
            ).where(api_idempotency.c.scope == scope, api_idempotency.c.idempotency_key == key)
        )
    ).first()
    return (row[0], row[1], row[2]) if row else None


async def store_response(
    conn: AsyncConnection, scope: str, key: str, request_hash: str, status: int, body: dict[str, Any]
) -> None:
    await conn.execute(
        insert(api_idempotency)
        .values(scope=scope, idempotency_key=key, request_hash=request_hash, response_status=status, response_body=body)
        .on_conflict_do_nothing()
    )


async def forget_response(conn: AsyncConnection, scope: str, key: str) -> None:
    """Take a stored answer back (its event could not be published: the client was told 503)."""
    await conn.execute(
        delete(api_idempotency).where(api_idempotency.c.scope == scope, api_idempotency.c.idempotency_key == key)
    )
