"""Queries and writes for creators and their encrypted payout recipients."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from infra.crypto import key_id_of
from infra.sql import jsonable
from state.tables import creators, payout_recipients

_EXISTS = select(creators.c.creator_id).where(creators.c.creator_id == bindparam("creator_id"))


async def creator_exists(conn: AsyncConnection, creator_id: str) -> bool:
    return await conn.scalar(_EXISTS, {"creator_id": creator_id}) is not None


class KnownCreators:
    """Creator ids this process has seen in the database, so the creator check of every
    POST /offers costs a round trip only the first time (it was ~19 % of the request under load).

    Only ids that exist are remembered, and that cannot go stale: no code path deletes a row
    of ``creators`` (``tests/unit/test_known_creators.py`` fails the build if one appears).
    An unknown id is asked again each time, since it may be created a moment
    later. Bounded: past ``limit`` ids the oldest half is forgotten (asked again on next use).
    """

    def __init__(self, limit: int = 100_000) -> None:
        self._limit = limit
        self._ids: dict[str, None] = {}

    async def exists(self, conn: AsyncConnection, creator_id: str) -> bool:
        if creator_id in self._ids:
            return True
        if not await creator_exists(conn, creator_id):
            return False
        if len(self._ids) >= self._limit:
            for old in list(self._ids)[: self._limit // 2]:
                del self._ids[old]
        self._ids[creator_id] = None
        return True


async def get_creator(conn: AsyncConnection, creator_id: str) -> dict[str, Any] | None:
    row = (await conn.execute(select(creators).where(creators.c.creator_id == creator_id))).mappings().first()
    return jsonable(dict(row)) if row else None


async def insert_creator(conn: AsyncConnection, creator_id: str, display_name: str, country: str | None) -> bool:
    created = await conn.scalar(
        pg_insert(creators)
        .values(creator_id=creator_id, display_name=display_name, country=country)
        .on_conflict_do_nothing(index_elements=["creator_id"])
        .returning(creators.c.creator_id)
    )
    return created is not None


async def insert_recipient(
    conn: AsyncConnection, recipient_id: str, creator_id: str, currency: str, ciphertext: bytes, masked: dict[str, Any]
) -> None:
    await conn.execute(
        insert(payout_recipients).values(
            recipient_id=recipient_id,
            creator_id=creator_id,
            currency=currency,
            details_ciphertext=ciphertext,
            masked=masked,
            # Read from the envelope, so the column can never disagree with what sealed the row.
            key_id=key_id_of(ciphertext),
        )
    )


def _public(row: Any) -> dict[str, Any]:
    return jsonable(
        {
            "recipient_id": row["recipient_id"],
            "creator_id": row["creator_id"],
            "currency": row["currency"],
            "masked": row["masked"],
            "created_at": row["created_at"],
        }
    )


async def list_recipients(conn: AsyncConnection, creator_id: str) -> list[dict[str, Any]]:
    rows = (
        await conn.execute(
            select(payout_recipients)
            .where(payout_recipients.c.creator_id == creator_id)
            .order_by(payout_recipients.c.created_at)
        )
    ).mappings()
    return [_public(r) for r in rows]


async def get_recipient(conn: AsyncConnection, recipient_id: str) -> dict[str, Any] | None:
    """The stored row including the ciphertext (never return it over HTTP)."""
    row = (
        (await conn.execute(select(payout_recipients).where(payout_recipients.c.recipient_id == recipient_id)))
        .mappings()
        .first()
    )
    return dict(row) if row else None
